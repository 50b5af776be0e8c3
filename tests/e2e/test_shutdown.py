"""SIGTERM: stop fetching, let running jobs finish, exit 0."""

import signal
import time

from harness.ddtest import wait_for


def test_sigterm_drains_running_job(dispatchd, handler, record_dir):
    agent = dispatchd({"slow": {"on": "x", "exec": "%s 1 %s" % (handler("sleep.sh"), record_dir)}})
    jid = agent.emit("x")["jobs"][0]["id"]
    started = record_dir / ("%s.started" % jid)
    wait_for(lambda: started.exists() and started.stat().st_size > 0, what="job to start")
    t = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    rc = agent.proc.wait(10)
    took = time.monotonic() - t
    assert rc == 0, agent.stderr()
    print("drain took %.2fs" % took)
    assert 0.5 <= took <= 5, took
    r = agent.job_results(jid)
    assert [x["outcome"] for x in r] == ["done"], r
    assert r[0]["stdout"] == "slept 1\n"


def test_sigterm_idle_exits_quickly(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}})
    t = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    rc = agent.proc.wait(10)
    assert rc == 0, agent.stderr()
    assert time.monotonic() - t < 2


def test_no_fetch_after_sigterm(dispatchd, handler, record_dir):
    """Jobs still queued when SIGTERM arrives stay in Redis for later."""
    agent = dispatchd({"slow": {"on": "x", "concurrency": 1,
                                "exec": "%s 1 %s" % (handler("sleep.sh"), record_dir)}})
    first = agent.emit("x")["jobs"][0]["id"]
    st = record_dir / ("%s.started" % first)
    wait_for(lambda: st.exists() and st.stat().st_size > 0, what="first job to start")
    queued = [agent.emit("x")["jobs"][0]["id"] for _ in range(3)]
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(10) == 0, agent.stderr()
    assert [x["outcome"] for x in agent.job_results(first)] == ["done"]
    for jid in queued:
        assert agent.job_results(jid) == [], "queued job ran during drain"
    r = agent.redis.client()
    assert r.llen(agent.key("ready:slow")) == 3


BLOCK_SH = """#!/bin/sh
# block.sh FILE: wait until FILE exists, then exit 0
while [ ! -e "$1" ]; do sleep 0.02; done
"""


def test_fetch_answered_after_sigterm_is_put_back(dispatchd, handler, workdir):
    """A fetch already sent when SIGTERM arrives is answered during the
    drain: its job is put back (released, uncounted), not started."""
    import admin_util as au
    block = au.write_script(au.script_dir(workdir), "block.sh", BLOCK_SH)
    gate = workdir / "go"
    agent = dispatchd({"h": {"on": "x", "exec": "%s %s" % (block, gate)}},
                      agent_opts={"workers": 1})
    first = agent.emit("x")["jobs"][0]["id"]
    r = agent.redis.client()
    wait_for(lambda: r.zcard(agent.key("leases")) == 1, 5, what="the first job running")
    second = agent.emit("x")["jobs"][0]["id"]
    # Redis stalls; the first job ends, so its finish and the fetch of the
    # second wait in Redis while the agent is told to stop
    r.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    gate.touch()
    wait_for(lambda: "%s event x handler h attempt 1: done" % first in agent.stderr(), 5,
             what="the first job to end")
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(10) == 0, agent.stderr()
    assert [x["outcome"] for x in agent.job_results(first)] == ["done"]
    res = agent.job_results(second)
    assert [x["outcome"] for x in res] == ["released"], res
    assert r.hget(agent.key("job:" + second), "state") == b"ready"
    assert r.hget(agent.key("job:" + second), "failures") == b"0"
