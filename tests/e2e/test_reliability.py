"""Several agents on one Redis; crashes, leases and drain: nothing acked is
lost and a job is not run twice while its lease is alive."""

import re
import signal
import time

from harness.ddtest import pid_alive, stays, wait_for


def started_pids(path):
    try:
        return [int(x) for x in path.read_text().split()]
    except (FileNotFoundError, ValueError):
        return []


def test_two_agents_split_the_work(dispatchd, handler, record_dir):
    h = {"st": {"on": "w.*", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}}
    a = dispatchd(h, name="agent-a")
    b = dispatchd(h, name="agent-b")
    jobs = []
    for i in range(30):
        target = a if i % 2 else b
        jobs.append(target.emit("w.x", {"i": i})["jobs"][0]["id"])
    for jid in jobs:
        a.wait_final(jid, timeout=15)
    assert stays(lambda: len(a.results()) == 30, 0.3), len(a.results())
    res = a.results()
    assert sorted(r["job"] for r in res) == sorted(jobs)
    assert all(r["outcome"] == "done" and r["attempt"] == "1" for r in res)
    by = {}
    for r in res:
        by[r["agent"]] = by.get(r["agent"], 0) + 1
    print("jobs per agent:", by)
    assert set(by) <= {"agent-a", "agent-b"}
    # each job ran exactly once
    assert sorted(p.name for p in record_dir.iterdir() if not p.name.startswith(".")) \
        == sorted("%s.1" % j for j in jobs)


def test_crashed_agent_job_recovered(dispatchd, handler, record_dir):
    """kill -9 the agent while its handler runs: after the lease expires,
    another agent runs the job again."""
    h = {"slow": {"on": "x", "exec": "%s 1 %s" % (handler("sleep.sh"), record_dir),
                  "backoff": "100ms..100ms"}}
    opts = {"lease": "1s"}
    a = dispatchd(h, agent_opts=opts, name="agent-a")
    jid = a.emit("x")["jobs"][0]["id"]
    started = record_dir / ("%s.started" % jid)
    wait_for(lambda: started_pids(started), what="job to start on agent-a")
    a.kill9()
    t = time.monotonic()
    b = dispatchd(h, agent_opts=opts, name="agent-b")
    res = b.wait_final(jid, timeout=15)
    took = time.monotonic() - t
    print("recovered after %.2fs; results: %r" % (took, [
        {k: v for k, v in r.items() if k != "_raw"} for r in res]))
    final = res[-1]
    assert final["outcome"] == "done" and final["agent"] == "agent-b", res
    assert int(final["attempt"]) >= 2
    assert len(started_pids(started)) == 2
    assert took < 5, "lease 1s, backoff 100ms, but recovery took %.1fs" % took


def test_lease_renewed_for_long_job(dispatchd, handler, record_dir):
    """A job running longer than the lease is not taken over by another
    agent while its agent is alive and heartbeating."""
    h = {"slow": {"on": "x", "exec": "%s 2.5 %s" % (handler("sleep.sh"), record_dir)}}
    opts = {"lease": "1s"}
    a = dispatchd(h, agent_opts=opts, name="agent-a")
    b = dispatchd(h, agent_opts=opts, name="agent-b")
    jid = a.emit("x")["jobs"][0]["id"]
    res = a.wait_final(jid, timeout=15)
    assert [r["outcome"] for r in res] == ["done"], res
    assert len(started_pids(record_dir / ("%s.started" % jid))) == 1
    assert stays(lambda: len(a.job_results(jid)) == 1, 0.5)
    assert b.ping()["ok"]


def test_drain_timeout_kills_and_requeues(dispatchd, handler, workdir):
    """SIGTERM with a job running past drain_timeout: the agent still exits 0
    promptly, the handler does not outlive it, and the job is not lost."""
    marker = workdir / "marker"
    h = {"slow": {"on": "x", "exec": "%s %s 30" % (handler("once.sh"), marker)}}
    opts = {"lease": "1s", "drain_timeout": "500ms", "kill_grace": "200ms"}
    a = dispatchd(h, agent_opts=opts, name="agent-a")
    jid = a.emit("x")["jobs"][0]["id"]
    wait_for(lambda: marker.exists() and marker.read_text().strip(), what="first run")
    pid = int(marker.read_text())
    t = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    rc = a.proc.wait(15)
    took = time.monotonic() - t
    print("exit %s after %.2fs; results %r" % (rc, took, [(r["outcome"], r["attempt"])
                                                       for r in a.job_results(jid)]))
    assert rc == 0, a.stderr()
    assert took < 3, took
    wait_for(lambda: not pid_alive(pid), 3, what="handler %d to be gone" % pid)
    b = dispatchd(h, agent_opts=opts, name="agent-b")
    res = b.wait_final(jid, timeout=15)
    assert res[-1]["outcome"] == "done" and res[-1]["agent"] == "agent-b", res
    assert res[-1]["stdout"] == "second run\n"


def test_restart_with_same_name_reclaims_at_once(dispatchd, handler, record_dir, workdir):
    """kill -9 the agent while a job runs and start it again with the same
    name and config: it takes back its previous life's jobs at once instead of
    waiting for their leases (lease 10 s here) to expire."""
    h = {"slow": {"on": "x", "exec": "%s 1 %s" % (handler("sleep.sh"), record_dir),
                  "backoff": "100ms..100ms"}}
    opts = {"lease": "10s"}
    a = dispatchd(h, agent_opts=opts, name="same")
    jid = a.emit("x")["jobs"][0]["id"]
    started = record_dir / ("%s.started" % jid)
    wait_for(lambda: started_pids(started), what="job to start")
    a.kill9()
    t = time.monotonic()
    a.restart()
    res = a.wait_final(jid, timeout=30)
    took = time.monotonic() - t
    print("after restart: done in %.2fs; %r" % (took, [(r["outcome"], r["attempt"], r["error"])
                                                    for r in res]))
    assert res[-1]["outcome"] == "done"
    assert took < 4, "took %.1fs (lease 10s, handler backoff 100ms, run 1s)" % took


def test_second_agent_with_same_name_refused(dispatchd, handler):
    """Two live agents must not share a name (their leases and running sets
    would collide): the second one refuses to start."""
    h = {"h": {"on": "x", "exec": handler("exit.sh")}}
    dispatchd(h, name="twin")
    b = dispatchd(h, name="twin", start=False)
    b.spawn()
    rc = b.proc.wait(15)
    b.expect_rc = rc
    print("second agent: exit %s; %s" % (rc, b.stderr()[-500:]))
    assert rc != 0
    assert "twin" in b.stderr()


def test_twin_in_the_same_runtime_dir_touches_nothing(dispatchd, handler):
    """A second agent of the same name whose socket is in the live one's
    directory (say a hand-run `dispatchd -c test.conf` on a packaged host)
    is refused by the name's lock before it reads the live agent's state
    file: the live agent's handler keeps running and its job ends done."""
    h = {"h": {"on": "x", "exec": "%s 2" % handler("sleep.sh")}}
    a = dispatchd(h, name="twin")
    jid = a.emit("x")["jobs"][0]["id"]
    wait_for(lambda: a.redis.client().zcard(a.key("leases")) == 1, 10,
             what="the job running")
    b = dispatchd(h, name="twin", start=False,
                  agent_opts={"socket": str(a.dir / "twin2.sock")})
    b.spawn()
    rc = b.proc.wait(15)
    b.expect_rc = rc
    err = b.stderr()
    print("second agent: exit %s; %s" % (rc, err[-500:]))
    assert rc == 69
    assert "another agent named 'twin' runs on this host (pid %d" % a.proc.pid in err
    assert "ready" not in err and not (a.dir / "twin2.sock").exists()
    # the live agent's token stays; the twin never wrote its own
    state = (a.dir / "dispatchd-twin.state").read_text()
    assert re.search(r"(?m)^token [^:]+:%d:" % a.proc.pid, state), state
    assert ":%d:" % b.proc.pid not in state, state
    res = a.wait_final(jid, 10)
    assert [r["outcome"] for r in res] == ["done"], res
