"""Config settings that change how the running agent behaves."""

import json

import pytest

from harness.ddtest import stays, wait_for


@pytest.mark.parametrize("form", ["unix:%s", "%s"])
def test_redis_address_forms(dispatchd, handler, redis_server, form):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}},
                      agent_opts={"redis": form % redis_server.sock})
    jid = agent.emit("x")["jobs"][0]["id"]
    assert agent.wait_final(jid)[-1]["outcome"] == "done"


def test_subscribe_empty_turns_pubsub_off(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}},
                      agent_opts={"subscribe": ""})
    r = agent.redis.client()
    channel = agent.key("events")
    assert dict(r.pubsub_numsub(channel)).get(channel.encode(), 0) == 0
    r.publish(channel, json.dumps({"event": "x"}))
    assert stays(lambda: agent.results() == [], 0.5)


def test_custom_subscribe_channel(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}},
                      agent_opts={"subscribe": "my-events"})
    r = agent.redis.client()
    wait_for(lambda: dict(r.pubsub_numsub("my-events")).get(b"my-events", 0) >= 1,
             what="subscription to my-events")
    r.publish("my-events", json.dumps({"event": "x"}))
    wait_for(lambda: [x for x in agent.results() if x["outcome"] == "done"],
             what="job from my-events")


def test_agent_registered_in_redis(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}}, name="reg-agent")
    r = agent.redis.client()
    wait_for(lambda: r.zscore(agent.key("agents"), "reg-agent") is not None,
             what="agent in {ns}:agents")
    wait_for(lambda: r.exists(agent.key("agent:reg-agent")), what="agent heartbeat key")


def test_glob_star_and_handler_name_chars(dispatchd, handler, record_dir):
    rec = handler("record.py")
    env = "RECORD_DIR=%s" % record_dir
    agent = dispatchd({
        "all.of-them_1": {"on": "*", "exec": rec, "env": env},
        "q": {"on": "a?c", "exec": rec, "env": env},
    })
    rep = agent.emit("abc")
    assert sorted(j["handler"] for j in rep["jobs"]) == ["all.of-them_1", "q"]
    rep = agent.emit("some:thing-else_1.2")
    assert [j["handler"] for j in rep["jobs"]] == ["all.of-them_1"]
    for j in rep["jobs"]:
        assert agent.wait_final(j["id"])[-1]["outcome"] == "done"


def test_results_stream_trimmed(dispatchd, handler):
    """results_max bounds the stream (XADD MAXLEN ~: approximately)."""
    agent = dispatchd({"h": {"on": "x", "exec": "/bin/true"}},
                      agent_opts={"results_max": 10})
    n = 400
    with agent.connect(timeout=20) as c:
        reps = c.requests([{"event": "x"} for _ in range(n)])
    assert all(r["ok"] for r in reps)
    r = agent.redis.client()
    wait_for(lambda: agent.ping().get("jobs_finished", 0) >= n
             or not r.keys(agent.key("job:*")), 60, interval=0.2,
             what="all %d jobs to finish" % n)
    xlen = r.xlen(agent.key("results"))
    print("results stream length after %d results with results_max=10: %d" % (n, xlen))
    assert xlen <= 10 + 100 + 10, xlen   # ~ trims whole nodes of <= 100 entries


def test_log_lines_have_priority_prefix(dispatchd, handler, workdir):
    """Every stderr line starts with a syslog priority like <6>."""
    import re
    prog = workdir / "gone.sh"
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh") + " 3",
                             "attempts": 1},
                       "g": {"on": "y", "exec": str(prog), "attempts": 1}},
                      start=False)
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    agent.start()
    prog.unlink()
    r = agent.redis.client()
    r.publish(agent.key("events"), "garbage")
    agent.request("not json")
    for ev in ("x", "y"):
        jid = agent.emit(ev)["jobs"][0]["id"]
        agent.wait_final(jid)
    assert agent.stop() == 0
    lines = agent.stderr().splitlines()
    assert lines
    bad = [l for l in lines if not re.match(r"^<[0-7]>", l)]
    assert not bad, bad
