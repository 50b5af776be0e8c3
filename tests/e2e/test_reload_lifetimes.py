"""What a reload frees must not be used after it (issue 9.1).

SIGHUP swaps the configuration and frees the old one.  Whatever a module
kept from it (the agent's name for the Redis client name, the subscribed
channels, a running job's handler and output cap) must be its own copy or
a held reference.  These tests reload, then make the agent use what it
kept: a Redis restart (reconnect, rename, resubscribe), jobs that were
running across the reload, and values that changed.  They matter most on
the ASan+UBSan build, where a use after free kills the agent."""

import json
import os
import socket
import time
import urllib.request

import admin_util as au
from harness import ddtest
from harness.ddtest import stays, wait_for
from test_reload import BLOCK_SH, emit_job, hup, rewrite, running

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_names(r):
    return sorted(c.get("name", "") for c in r.client_list())


def wait_redis_up(agent):
    wait_for(lambda: agent.alive() and agent.ping().get("redis") is True, 20,
             interval=0.05, what="the agent to be back on Redis")


def test_reload_then_redis_restart(dispatchd, handler, workdir, redis_server):
    """The reported crash: reload a few times, then restart Redis.  The
    agent reconnects under its own name, subscribes to its channels again,
    and works: socket emits, pub/sub events and the metrics listener."""
    port = free_port()
    opts = {"subscribe": "dt.in", "spool": str(workdir / "spool"),
            "metrics_listen": "127.0.0.1:%d" % port}
    hs = {"t": {"on": "e.*", "exec": "/bin/true"}}
    agent = dispatchd(hs, agent_opts=opts)
    for i in range(3):
        # changed values each time, and a restart-only key that is kept
        rewrite(agent, dict(hs, **{"h%d" % i: {"on": "n%d" % i, "exec": "/bin/true"}}),
                {"workers": 2 + i, "log_level": "info" if i % 2 else "debug",
                 "name": "renamed-%d" % i, "subscribe": "other.%d" % i})
        hup(agent)
    assert "changes only with a restart; keeping 'dt-agent'" in agent.stderr()

    redis_server.stop()
    wait_for(lambda: agent.ping().get("redis") is False, 10, what="the agent to see Redis gone")
    redis_server.start()
    wait_redis_up(agent)

    r = redis_server.client()
    wait_for(lambda: "dispatchd:dt-agent:cmd" in client_names(r) and
             "dispatchd:dt-agent:sub" in client_names(r), 10,
             what="the connections named after the agent (have %r)" % client_names(r))
    wait_for(lambda: dict(r.pubsub_numsub("dt.in")).get(b"dt.in", 0) >= 1, 10,
             what="the agent subscribed to dt.in again")
    assert dict(r.pubsub_numsub("other.2")).get(b"other.2", 0) == 0

    jid = emit_job(agent, "e.socket")
    assert agent.wait_final(jid)[-1]["outcome"] == "done"
    r.publish("dt.in", json.dumps({"event": "e.pubsub", "id": "p-1"}))
    res = wait_for(lambda: [x for x in agent.results() if x["event"] == "e.pubsub"], 10,
                   what="the pub/sub event's result")
    assert res[0]["outcome"] == "done"
    jid = emit_job(agent, "n2")           # the handler of the last reload
    assert agent.wait_final(jid)[-1]["outcome"] == "done"
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read()
    assert b"dispatchd_workers 4" in body, body[:400]
    assert agent.alive()


def test_reload_twice_between_reconnects(dispatchd, redis_server):
    """Reload, reconnect, reload, reconnect: each reconnect uses only what
    the configuration in force (or the module itself) owns."""
    hs = {"t": {"on": "e", "exec": "/bin/true"}}
    agent = dispatchd(hs)
    for i in range(2):
        rewrite(agent, hs, {"workers": 3 + i})
        hup(agent)
        redis_server.stop()
        wait_for(lambda: agent.ping().get("redis") is False, 10, what="Redis gone")
        redis_server.start()
        wait_redis_up(agent)
        jid = emit_job(agent, "e")
        assert agent.wait_final(jid)[-1]["outcome"] == "done"


OUTPUT_SH = r"""#!/bin/sh
cat >/dev/null
echo "MARK=$MARK"
# 1 + 1000 * 2 bytes: a cap at an even count cuts a character in two
printf 'x'
i=0; while [ $i -lt 1000 ]; do printf '\303\251'; i=$((i+1)); done
echo
while [ ! -e "$1" ]; do sleep 0.02; done
exit 0
"""


@pytest.mark.redis_args("--appendonly", "yes", "--appendfsync", "always")
def test_reload_during_running_jobs(dispatchd, workdir, redis_server):
    """Jobs running across a reload finish with the settings they started
    with (their handler's environment, the output cap their capture used)
    and are recorded; after a Redis restart in the middle they still are."""
    d = au.script_dir(workdir)
    script = au.write_script(d, "out.sh", OUTPUT_SH)
    release = workdir / "release"

    def conf(mark):
        return {"slow": {"on": "e", "exec": "%s %s" % (script, release), "attempts": 1,
                         "env": "MARK=%s" % mark}}

    agent = dispatchd(conf("old"), agent_opts={"output_max": 1000})
    old = [emit_job(agent, "e") for _ in range(2)]
    for jid in old:
        wait_for(lambda: running(agent, jid), 10, what="job %s running" % jid)
    rewrite(agent, conf("new"), {"output_max": 8000})
    hup(agent)
    rewrite(agent, {"other": {"on": "x", "exec": "/bin/true"}}, {"output_max": 8000})
    hup(agent)                            # the handler is gone from the config now
    redis_server.stop()
    redis_server.start()
    wait_redis_up(agent)
    release.touch()
    for jid in old:
        res = agent.wait_final(jid, timeout=20)[-1]
        assert res["outcome"] == "done", res
        out = res["stdout"]
        assert out.startswith("MARK=old\n"), out[:40]
        assert len(res["_raw"][b"stdout"]) <= 1000, len(res["_raw"][b"stdout"])
        # cut at the old cap on a character boundary, not mended with U+FFFD
        assert "\ufffd" not in out, out[-10:]
        assert res["truncated"] == "1", res

    rewrite(agent, conf("new"), {"output_max": 8000})
    hup(agent)
    jid = emit_job(agent, "e")
    res = agent.wait_final(jid)[-1]
    assert res["stdout"].startswith("MARK=new\n") and res["truncated"] == "0", res
    assert res["stdout"].rstrip("\n").endswith("\u00e9" * 1000)


def test_reload_changes_spool_max(dispatchd, workdir, redis_server):
    """spool_max is not restart-only: a reload that raises it lets the
    spool take events it refused before, and nothing spooled is lost."""
    spool = workdir / "spool"
    agent = dispatchd({"t": {"on": "e", "exec": "/bin/true"}},
                      agent_opts={"spool": str(spool), "spool_max": "4k"})
    redis_server.stop()
    wait_for(lambda: agent.ping().get("redis") is False, 10, what="Redis gone")
    data = {"pad": "x" * 900}
    answers = [agent.request({"op": "emit", "event": "e", "data": data}) for _ in range(8)]
    spooled = [a for a in answers if a.get("spooled")]
    refused = [a for a in answers if a.get("ok") is not True]
    assert spooled and refused, answers
    assert refused[0]["code"] == "unavailable" and "spool is full" in refused[0]["error"], refused[0]

    rewrite(agent, {"t": {"on": "e", "exec": "/bin/true"}}, {"spool_max": "64k"})
    hup(agent)
    more = [agent.request({"op": "emit", "event": "e", "data": data}) for _ in range(8)]
    assert all(a.get("spooled") for a in more), more

    redis_server.start()
    total = len(spooled) + len(more)
    wait_for(lambda: agent.ping().get("spool_waiting") == 0 and
             len([x for x in agent.results() if x["outcome"] == "done"]) == total, 20,
             what="every spooled event to run once")
    assert not list(spool.glob("*.event")), list(spool.iterdir())
