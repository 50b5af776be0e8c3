"""Redis goes away and comes back on the same socket path."""

import json
import signal
import time

import pytest

from harness.ddtest import pid_alive, stays, wait_for


@pytest.mark.redis_args("--appendonly", "yes", "--appendfsync", "always")
def test_redis_restart(dispatchd, handler, redis_server, record_dir):
    agent = dispatchd({"st": {"on": "job.*", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}})

    # acknowledged before the outage: 3 run now, 3 wait in the delayed set
    before_now = [agent.emit("job.now", {"i": i})["jobs"][0]["id"] for i in range(3)]
    before_later = [agent.emit("job.later", {"i": i}, delay=2)["jobs"][0]["id"]
                    for i in range(3)]
    for jid in before_now:
        assert agent.wait_final(jid)[-1]["outcome"] == "done"

    redis_server.stop()
    # every emit answers unavailable quickly, and on the same connection
    times = []
    with agent.connect() as c:
        for i in range(5):
            t = time.monotonic()
            rep = c.request({"event": "job.during", "data": {"i": i}})
            times.append(time.monotonic() - t)
            assert rep.get("ok") is False and rep.get("code") == "unavailable", rep
            assert rep.get("error")
        ping = c.request({"op": "ping"})
    print("unavailable reply times (ms):", [round(x * 1000, 1) for x in times])
    assert max(times) < 1.0
    assert ping["ok"] is True and ping["redis"] is False, ping
    assert agent.alive()

    t_restart = time.monotonic()
    redis_server.start()

    def emit_ok():
        rep = agent.request({"event": "job.after"})
        return rep if rep.get("ok") else None

    after = wait_for(emit_ok, 15, interval=0.1, what="emit to work again after Redis restart")
    print("emit ok again %.2fs after Redis restart" % (time.monotonic() - t_restart))
    assert agent.ping()["redis"] is True
    after_id = after["jobs"][0]["id"]

    for jid in before_later + [after_id]:
        assert agent.wait_final(jid, timeout=15)[-1]["outcome"] == "done", jid
    for jid in before_now:  # their results survived the restart (AOF)
        assert [r["outcome"] for r in agent.job_results(jid)] == ["done"]

    expected = sorted(before_now + before_later + [after_id])
    # nothing from the "unavailable" emits was enqueued
    assert stays(lambda: sorted(r["job"] for r in agent.results()) == expected, 0.5), \
        agent.results()
    assert all(r["outcome"] == "done" for r in agent.results())
    assert sorted(p.name.split(".")[0] for p in record_dir.iterdir()
                  if not p.name.startswith(".")) == expected


def test_agent_starts_while_redis_down(dispatchd, handler, redis_server):
    """Redis is not up yet when the agent starts (boot ordering): the agent
    keeps running, never acks an emit it cannot store, and works once Redis
    appears."""
    redis_server.stop()
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}}, start=False)
    agent.spawn()

    def try_emit():
        assert agent.alive(), "agent exited while Redis was down:\n" + agent.stderr()
        try:
            return agent.request({"event": "x"}, timeout=2)
        except OSError:
            return {"ok": None, "code": "no socket yet"}

    seen = set()

    def check_down():
        rep = try_emit()
        assert rep.get("ok") is not True, "emit acked while Redis is down: %r" % rep
        seen.add(rep.get("code"))
        return True

    assert stays(check_down, 1.0, interval=0.1)
    print("replies while Redis down:", seen)
    assert seen <= {"unavailable", "no socket yet"}, seen
    redis_server.start()
    rep = wait_for(lambda: (lambda r: r if r.get("ok") else None)(try_emit()), 15,
                   interval=0.1, what="emit ok once Redis is up")
    assert agent.wait_final(rep["jobs"][0]["id"])[-1]["outcome"] == "done"


@pytest.mark.redis_args("--appendonly", "yes", "--appendfsync", "always")
def test_redis_crash_while_job_runs(dispatchd, handler, redis_server, record_dir):
    """Redis is SIGKILLed while a handler runs and comes back after the
    handler finished: the outcome is recorded once, and pub/sub ingress is
    resubscribed."""
    agent = dispatchd({"slow": {"on": "x", "exec": "%s 1 %s" % (handler("sleep.sh"), record_dir)}},
                      agent_opts={"lease": "5s"})
    jid = agent.emit("x")["jobs"][0]["id"]
    started = record_dir / ("%s.started" % jid)
    wait_for(lambda: started.exists() and started.stat().st_size > 0, what="job to start")
    redis_server.stop(sig=signal.SIGKILL)
    # the handler finishes (after 1 s) while Redis is down; then Redis returns
    pid = int(started.read_text().split()[0])
    wait_for(lambda: not pid_alive(pid), 5, what="handler to finish")
    time.sleep(0.3)  # deliberately keep Redis down a little after the finish
    redis_server.start()
    res = agent.wait_final(jid, timeout=15)
    print("results:", [(r["outcome"], r["attempt"], r["error"]) for r in res])
    print("handler runs (pids):", started.read_text().split())
    assert [r["outcome"] for r in res] == ["done"], res
    assert len(started.read_text().split()) == 1, "handler ran again"
    assert stays(lambda: len(agent.job_results(jid)) == 1, 0.5)
    # pub/sub ingress came back too
    r = agent.redis.client()
    channel = agent.key("events")
    wait_for(lambda: dict(r.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1, 10,
             what="agent to resubscribe to %s" % channel)
    r.publish(channel, json.dumps({"event": "x", "id": "after-crash"}))
    wait_for(lambda: len(agent.results()) == 2, 10, what="published job after Redis crash")


def test_redis_hang_then_resume(dispatchd, handler, redis_server, record_dir):
    """Redis stops answering (SIGSTOP, like a blackholed network) during an
    emit: the emit fails within the agent's command watchdog with the
    event_id to resend; after SIGCONT the resend with that id gives the one
    job, and that job really runs (done), even with attempts = 1."""
    agent = dispatchd({"st": {"on": "x", "attempts": 1,
                              "exec": "%s %s" % (handler("stamp.sh"), record_dir)}},
                      agent_opts={"lease": "2s"})
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        t = time.monotonic()
        rep = agent.request({"event": "x", "data": {"n": 1}}, timeout=30)
        took = time.monotonic() - t
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    print("emit during hang: %.1fs %r" % (took, rep))
    assert rep.get("ok") is False and rep.get("code") == "unavailable", rep
    assert took < 15
    eid = rep.get("event_id")
    assert eid, "no event_id to resend with"

    def resend():
        r = agent.request({"event": "x", "data": {"n": 1}, "id": eid})
        return r if r.get("ok") else None

    rep2 = wait_for(resend, 15, interval=0.1, what="resend to be accepted")
    assert rep2["event_id"] == eid and len(rep2["jobs"]) == 1, rep2
    jid = rep2["jobs"][0]["id"]
    res = agent.wait_final(jid, timeout=20)
    print("results:", [(r["outcome"], r["attempt"], r["error"]) for r in res])
    assert res[-1]["outcome"] == "done", res
    assert (record_dir / ("%s.%s" % (jid, res[-1]["attempt"]))).exists()
