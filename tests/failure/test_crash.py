"""Failure matrix #1-#4: agents and handlers killed."""

import os
import random
import signal
import time

import pytest

from conftest import (handler, read_lines, pgid_members, pid_alive, wait_for, stays,
                      short)

BACKOFF = "100ms..200ms"


def rec_handler(rec, s1, s2=0, **kw):
    h = {"on": "job.*", "exec": "%s %s %s %s" % (handler("rec.sh"), rec, s1, s2),
         "backoff": BACKOFF, "timeout": "60s"}
    h.update(kw)
    return {"rec": h}


def runs(rec, jid):
    return [l for l in read_lines(rec) if l[0] == jid and l[3] != "end"]


# ---------------------------------------------------------------- #1 ----

@pytest.mark.parametrize("how", ["restart_same_name", "other_agent_recovers"])
def test_01_kill9_agent_mid_job(env, how):
    """#1 kill -9 the agent while its handler runs.  Restarted under the same
    name (same socket dir): the old handler group is killed and the job is
    reclaimed at start; or another agent recovers it after the lease.  Either
    way: failures+1, it runs again, one done."""
    env.start_redis()
    rec = env.dir / "rec"
    hs = rec_handler(rec, 30, 0)
    a = env.agent(hs, name="a")
    other = env.agent(hs, name="b", start=False)
    jid = a.emit("job.x")["jobs"][0]["id"]
    wait_for(lambda: runs(rec, jid), 10, what="the job to start")
    pgid = int(runs(rec, jid)[0][2])
    assert pgid_members(pgid), "handler group not running"
    a.kill9()
    t0 = time.monotonic()
    if how == "restart_same_name":
        a.start()
        # the previous life's handler group is gone (state file), at once
        wait_for(lambda: not pgid_members(pgid), 3,
                 what="old handler group %d to be killed" % pgid)
    else:
        other.start()
        # the direct child dies with its agent (PR_SET_PDEATHSIG); a
        # grandchild in the group (rec.sh's sleep) is only reachable by a
        # restart of the same name or by systemd: note it, then clean up
        wait_for(lambda: not pid_alive(pgid), 3, what="handler %d to die with its agent" % pgid)
        left = pgid_members(pgid)
        if left:
            print("NOTE: without a restart of agent a (or systemd), the handler's "
                  "grandchild(ren) %s outlive the crash (documented: needs KillMode or cgroups)"
                  % left)
            env.extra_pids.extend(left)
    fin = env.wait_final([jid], 15)[jid]
    took = time.monotonic() - t0
    res = env.job_results(jid)
    print("results:", short(res), "re-ran after %.2fs" % took)
    assert fin["outcome"] == "done" and fin["attempt"] == "2", short(res)
    assert [(r["attempt"], r["outcome"], r["error"]) for r in res] == \
        [("1", "retry", "lease expired"), ("2", "done", "")], short(res)
    assert len(runs(rec, jid)) == 2
    if how == "restart_same_name":
        assert "reclaimed 1 jobs" in a.stderr(), a.stderr()[-3000:]
        assert took < 4, "reclaim at start should be quick, took %.1fs" % took
    env.check([jid])


# ---------------------------------------------------------------- #2 ----

def test_02_kill9_all_agents_halfway(env):
    """#2 GitLab reliability test: 3 agents, 300 jobs, kill -9 all of them at
    ~150 done, respawn: all done; reruns only for jobs in flight at the kill."""
    env.start_redis()
    rec = env.dir / "rec"
    hs = {"w": {"on": "w", "exec": "%s %s" % (handler("append.sh"), rec),
                "backoff": BACKOFF, "attempts": 5}}
    agents = [env.agent(hs, name="n%d" % i, opts={"workers": 4}) for i in range(3)]
    M = 300
    reps = agents[0].emit_many([{"event": "w", "data": {"i": i}} for i in range(M)])
    jids = [r["jobs"][0]["id"] for r in reps]

    def ndone():
        return sum(1 for r in env.results() if r["outcome"] == "done")
    wait_for(lambda: ndone() >= M // 2, 30, what="half the jobs done")
    for a in agents:
        a.kill9()
    at_kill = ndone()
    for a in agents:
        a.start()
    env.wait_final(jids, 40)
    rep = env.check(jids)
    print("done at the kill: %d; reruns: %d %s" % (at_kill, rep.reruns, rep.rerun_jobs))
    assert rep.done == M
    # every rerun is explained by a lease recovery of a job in flight
    for jid in rep.rerun_jobs:
        errs = [r["error"] for r in rep.by_job[jid] if r["outcome"] == "retry"]
        assert errs and all(e == "lease expired" for e in errs), short(rep.by_job[jid])
    assert len(rep.rerun_jobs) <= 3 * 4, "more reruns than slots in flight"


# ---------------------------------------------------------------- #3 ----

def test_03_poison_pill_kills_its_agent(env):
    """#3 a handler that does kill -9 $PPID (its agent).  Restarted each time
    (same name, same socket dir, as systemd would), the job runs exactly
    attempts=3 times and ends dead with error "lease expired"."""
    env.start_redis()
    rec = env.dir / "rec"
    hs = {"pill": {"on": "pill", "exec": "%s %s" % (handler("poison.sh"), rec),
                   "attempts": 3, "backoff": BACKOFF}}
    a = env.agent(hs, name="victim")
    jid = a.emit("pill")["jobs"][0]["id"]
    deaths = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fin = [r for r in env.job_results(jid) if r["outcome"] in ("done", "dead")]
        if fin:
            break
        if not a.alive():
            rc = a.proc.returncode
            assert rc == -9, "agent exited %r, not by the pill:\n%s" % (rc, a.stderr()[-3000:])
            deaths += 1
            a.start()
        time.sleep(0.05)
    res = env.job_results(jid)
    lines = [l for l in read_lines(rec) if l[0] == jid]
    print("agent deaths: %d; runs: %s; results: %s" % (deaths, lines, short(res)))
    assert [(r["attempt"], r["outcome"], r["error"]) for r in res] == [
        ("1", "retry", "lease expired"), ("2", "retry", "lease expired"),
        ("3", "dead", "lease expired")], short(res)
    assert [l[1] for l in lines] == ["1", "2", "3"], lines
    assert deaths == 3
    # and it does not run a 4th time
    assert stays(lambda: a.alive() and len(read_lines(rec)) == 3, 2.5)
    assert env.rc().hget("{ft}:job:%s" % jid, "last_error") == b"lease expired"
    env.check([jid], expect_attempts={jid: 3})


# ---------------------------------------------------------------- #4 ----

def test_04_handler_killed_externally(env):
    """#4 kill -9 -<pgid> of a running handler: result signal=9, retry,
    then done; no leaked lease."""
    env.start_redis()
    rec = env.dir / "rec"
    a = env.agent(rec_handler(rec, 30, 0), name="a")
    jids = [a.emit("job.x")["jobs"][0]["id"] for _ in range(3)]
    wait_for(lambda: all(runs(rec, j) for j in jids), 10, what="jobs to start")
    for j in jids:
        os.kill(-int(runs(rec, j)[0][2]), signal.SIGKILL)
    env.wait_final(jids, 15)
    for j in jids:
        res = env.job_results(j)
        assert [(r["attempt"], r["outcome"], r["signal"], r["exit"]) for r in res] == \
            [("1", "retry", "9", ""), ("2", "done", "", "0")], short(res)
    assert env.rc().zcard("{ft}:leases") == 0
    env.check(jids)


# ------------------------------------------------- #1, crash at start ----

from test_redis_faults import KnownBug  # noqa: E402


def test_01c_restart_after_crash_during_start(env):
    """#1 variant: the agent is killed -9 twice in a row, the second time
    during its start (state file written, claim not yet answered: Redis
    refuses writes for a moment with CLIENT PAUSE WRITE).  The restart of
    the same name must still be accepted and reclaim the first life's job."""
    env.start_redis()
    rec = env.dir / "rec"
    a = env.agent(rec_handler(rec, 30, 0), name="a", opts={"lease": "10s"})
    jid = a.emit("job.x")["jobs"][0]["id"]
    wait_for(lambda: runs(rec, jid), 10, what="the job to start")
    a.kill9()
    c = env.rc()
    c.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
    a.spawn()
    state = a.dir / "dispatchd-a.state"
    wait_for(lambda: ("%d:" % a.pid) in state.read_text(), 5, what="life 2 to write its state")
    time.sleep(0.3)
    a.kill9()                        # before its claim was answered
    c.execute_command("CLIENT", "UNPAUSE")
    t0 = time.monotonic()
    refused = []
    while time.monotonic() - t0 < 25:          # restart as systemd would
        a.spawn()
        rc = a.wait_exit(1.5)
        if rc is None:
            break
        refused.append(rc)
        time.sleep(0.5)
    accepted_after = time.monotonic() - t0
    if refused:
        err = [l for l in a.stderr().splitlines() if "another agent" in l]
        env.wait_final([jid], 30)      # once the old heartbeat expired
        env.check([jid])
        raise KnownBug("F5: restart after a crash during start refused %d times (exit %s) for "
                       "%.1fs (lease 10s): %s" % (len(refused), sorted(set(refused)),
                                                   accepted_after, err[-1:]))
    env.wait_final([jid], 15)
    env.check([jid])
