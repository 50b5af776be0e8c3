"""Heterogeneous hosts (issue 5): a handler that only some agents serve.

Agent A serves `sms` only, agent B serves `mail` only.  Each publishes its
routes to {ns}:routes:<name>; each fans out with the union of the live
agents' routes; a job runs only where its handler is; status lists the
agents per handler and flags differing exec lines; the route of a dead
agent stays for route_grace, its jobs waiting visibly.
"""

import json
import signal
import time

import pytest

from hatest import (rec_handler, read_records, require_config, wait_for, stays, handler)

OPTS = {"lease": "2s"}


def routes_feature(env):
    require_config({"route_grace": "1h"}, env.dir / "probe", "routes (route_grace)")


def handler_status(agent, name):
    for h in agent.status().get("handlers", []):
        if h.get("name") == name:
            return h
    return None


def wait_served(agent, name, agents, timeout=10):
    """Wait until `agent`'s status says handler `name` is served by `agents`."""
    def ok():
        h = handler_status(agent, name)
        return h if h is not None and sorted(h.get("agents") or []) == sorted(agents) else None
    try:
        return wait_for(ok, timeout, interval=0.1,
                        what="%s's status to list %s as served by %s" % (agent.name, name, agents))
    except AssertionError:
        raise AssertionError("%s: status of %s is %r" % (agent.name, name,
                                                        handler_status(agent, name)))


def two_agents(env, a_extra=None, b_extra=None, b_opts=None):
    env.start_redis()
    routes_feature(env)
    rec = env.dir / "rec"
    rec.mkdir()
    ha = {"sms": rec_handler(rec, "sms.*", "A", attempts=3)}
    ha.update(a_extra or {})
    hb = {"mail": rec_handler(rec, "mail.*", "B", attempts=3)}
    hb.update(b_extra or {})
    a = env.agent(ha, name="A", opts=OPTS)
    b = env.agent(hb, name="B", opts=dict(OPTS, **(b_opts or {})))
    return a, b, rec


def test_routes_cross_agents(env):
    """Events for `sms` emitted at B run on A, `mail` emitted at A on B; the
    routes hashes hold the documented JSON; status lists who serves what."""
    a, b, rec = two_agents(env)
    r = env.rc()
    spec = json.loads(r.hget(env.key("routes:A"), "sms"))
    print("routes:A sms =", spec)
    assert spec["on"] == ["sms.*"] and spec["exec"].startswith(handler("rec.sh"))
    assert spec["attempts"] == 3
    for k in ("timeout_ms", "backoff_ms", "backoff_cap_ms", "delay_ms"):
        assert k in spec, "routes:A sms lacks %s: %r" % (k, spec)
    assert r.hkeys(env.key("routes:B")) == [b"mail"]

    for ag in (a, b):
        wait_served(ag, "sms", ["A"])
        wait_served(ag, "mail", ["B"])

    sms, mail = [], []
    for i in range(10):
        rep = b.emit("sms.send", {"i": i})
        assert [j["handler"] for j in rep["jobs"]] == ["sms"], rep
        sms.append(rep["jobs"][0]["id"])
        rep = a.emit("mail.send", {"i": i})
        assert [j["handler"] for j in rep["jobs"]] == ["mail"], rep
        mail.append(rep["jobs"][0]["id"])
    fin = env.wait_final(sms + mail, 20)
    for j in sms:
        assert fin[j]["outcome"] == "done" and fin[j]["agent"] == "A", fin[j]
    for j in mail:
        assert fin[j]["outcome"] == "done" and fin[j]["agent"] == "B", fin[j]
    runs = {l[0]: l[2] for l in read_records(rec)}
    assert all(runs[j] == "A" for j in sms) and all(runs[j] == "B" for j in mail)
    # an event neither serves is still unrouted
    assert b.emit("nothing.here")["jobs"] == []
    for ag in (a, b):
        for name in ("sms", "mail"):
            h = handler_status(ag, name)
            assert h.get("exec_mismatch") is False, h
    text = b.ctl("status")
    assert text.returncode == 0
    print(text.stdout)
    env.check(sms + mail)


def test_routes_exec_mismatch(env):
    """Both define `mail`, with different exec lines: status flags it (on
    either agent), a warning is logged, and one mail event still makes one
    mail job."""
    a, b, rec = two_agents(env, a_extra={"mail": {"on": "mail.*", "exec": "/bin/true"}})
    for ag in (a, b):
        h = wait_served(ag, "mail", ["A", "B"])
        assert h.get("exec_mismatch") is True, h
        assert handler_status(ag, "sms").get("exec_mismatch") is False
    text = b.ctl("status")
    print(text.stdout)

    def warned():
        for ag in (a, b):
            for line in ag.stderr().splitlines():
                if line.startswith("<4>") and "mail" in line and "exec" in line:
                    return line
        return None
    print("warning:", wait_for(warned, 5, interval=0.1, what="an exec mismatch warning"))
    jids = []
    for ag in (a, b):
        rep = ag.emit("mail.x")
        assert [j["handler"] for j in rep["jobs"]] == ["mail"], rep
        jids.append(rep["jobs"][0]["id"])
    fin = env.wait_final(jids, 20)
    assert all(f["outcome"] == "done" for f in fin.values())
    env.check(jids)


def test_routes_dead_agent_jobs_wait(env):
    """A is killed -9: an `sms` event emitted at B is still accepted with
    its job (route_grace, default 1h); the job waits in ready:sms, visible
    in status; it runs on A when A comes back."""
    a, b, rec = two_agents(env)
    wait_served(b, "sms", ["A"])
    a.kill9()
    r = env.rc()
    wait_for(lambda: not r.exists(env.key("agent:A")), 10, interval=0.1,
             what="A's heartbeat key to expire")
    time.sleep(1.0)     # B's heartbeats refresh its routes cache meanwhile
    rep = b.emit("sms.late", {"after": "death"})
    assert [j["handler"] for j in rep["jobs"]] == ["sms"], \
        "the route of a dead agent was dropped within route_grace: %r" % rep
    jid = rep["jobs"][0]["id"]
    assert stays(lambda: jid.encode() in r.lrange(env.key("ready:sms"), 0, -1), 2.0), \
        "job %s did not wait in ready:sms" % jid
    h = handler_status(b, "sms")
    print("status sms while A is dead:", h)
    assert h is not None and h["ready"] >= 1, h
    st = b.status()
    ag = {x["name"]: x for x in st["agents"]}
    assert ag.get("A", {}).get("alive") is not True, st["agents"]
    text = b.ctl("status")
    assert "sms" in text.stdout
    assert not [x for x in env.results() if x["job"] == jid]

    a.start()
    fin = env.wait_final([jid], 20)
    assert fin[jid]["outcome"] == "done" and fin[jid]["agent"] == "A", fin[jid]
    env.check([jid])


def test_routes_grace_expired(env):
    """With route_grace = 2s at B, the routes of an agent silent for longer
    no longer count: an `sms` event emitted at B then has no job (unrouted);
    once A is back, it is routed again."""
    a, b, rec = two_agents(env, b_opts={"route_grace": "2s"})
    wait_served(b, "sms", ["A"])
    a.kill9()

    probes = []

    def unrouted():
        jobs = b.emit("sms.probe")["jobs"]
        probes.extend(j["id"] for j in jobs)
        return jobs == []
    # nothing expected before the grace is over; poll until it is
    t0 = time.monotonic()
    wait_for(unrouted, 15, interval=0.3, what="A's routes to stop counting at B")
    waited = time.monotonic() - t0
    print("routes of dead A dropped at B after %.1fs" % waited)
    assert waited >= 1.0, "routes dropped well before route_grace (%.1fs)" % waited
    a.start()
    wait_served(b, "sms", ["A"])
    rep = b.emit("sms.back")
    assert [j["handler"] for j in rep["jobs"]] == ["sms"], rep
    jid = rep["jobs"][0]["id"]
    # the probe jobs created before the grace ran out run on A too
    fin = env.wait_final([jid] + probes, 20)
    assert all(f["agent"] == "A" and f["outcome"] == "done" for f in fin.values()), fin
    env.check([jid] + probes)


def test_routes_follow_reload(env):
    """A reloads (SIGHUP) with `fax` added and `sms` removed: its routes
    hash follows, B routes `fax` events to A and no longer creates `sms`
    jobs."""
    a, b, rec = two_agents(env)
    wait_served(b, "sms", ["A"])
    a.handlers = {"fax": rec_handler(rec, "fax.*", "A")}
    a.write_config()
    a.proc.send_signal(signal.SIGHUP)
    r = env.rc()
    wait_for(lambda: r.hkeys(env.key("routes:A")) == [b"fax"], 10, interval=0.1,
             what="routes:A to hold only fax after the reload (now %r)"
             % r.hkeys(env.key("routes:A")))
    wait_served(b, "fax", ["A"])

    def sms_gone():
        h = handler_status(b, "sms")
        return h is None or not h.get("agents")
    wait_for(sms_gone, 10, interval=0.1, what="B to forget A's sms route")
    rep = b.emit("fax.send")
    assert [j["handler"] for j in rep["jobs"]] == ["fax"], rep
    fin = env.wait_final([rep["jobs"][0]["id"]], 20)
    assert list(fin.values())[0]["agent"] == "A"
    assert b.emit("sms.send")["jobs"] == [], "sms still routed after A dropped it"
    env.check([rep["jobs"][0]["id"]])


def test_routes_remote_settings_apply(env):
    """A job created at B for a handler only A serves takes A's settings
    from the route: attempts (dead after 2 failing attempts), backoff, and
    the handler's delay."""
    a, b, rec = two_agents(env, a_extra={
        "flaky": {"on": "flaky", "exec": "/bin/false", "attempts": 2, "backoff": "100ms..200ms"},
        "later": {"on": "later", "exec": "/bin/true", "delay": "1500ms"}})
    wait_served(b, "flaky", ["A"])
    wait_served(b, "later", ["A"])
    jf = b.emit("flaky")["jobs"][0]["id"]
    t0 = time.time() * 1000
    jl = b.emit("later")["jobs"][0]["id"]
    fin = env.wait_final([jf, jl], 20)
    fl = [x for x in env.results() if x["job"] == jf]
    assert [x["outcome"] for x in fl] == ["retry", "dead"], [(x["attempt"], x["outcome"]) for x in fl]
    assert all(x["agent"] == "A" for x in fl)
    assert int(fin[jl]["started_ms"]) >= t0 + 1400, "A's handler delay not applied at B"
    env.check([jf, jl])


def wait_log(agent, text, after=0, timeout=20):
    """Wait for a line containing text in the agent's log past offset
    after; return (monotonic time seen, the log's length then)."""
    def seen():
        log = agent.stderr()
        return len(log) if text in log[after:] else None
    n = wait_for(seen, timeout, interval=0.002, what="%r in %s's log" % (text, agent.name))
    return time.monotonic(), n


def emit_after(agent, t0, delay, event):
    """Emit at agent `delay` seconds after t0 (the moment under test)."""
    left = t0 + delay - time.monotonic()
    if left > 0:
        time.sleep(left)
    return agent.emit(event)


def slow_heartbeat_env(env):
    """Redis, a record dir and agent options whose heartbeat is 10 s apart."""
    env.start_redis()
    routes_feature(env)
    rec = env.dir / "rec"
    rec.mkdir()
    return rec, dict(OPTS, lease="30s")


def test_new_agent_known_at_once(env):
    """An agent that has just said it is ready is known to the others: an
    event for a handler only it serves, emitted at another agent 100 ms
    after the ready line, creates its job (the heartbeat, 10 s apart with
    this lease, would be far too late)."""
    rec, slow = slow_heartbeat_env(env)
    a = env.agent({"sms": rec_handler(rec, "sms.*", "A")}, name="A", opts=slow)
    c = env.agent({"only_c": rec_handler(rec, "c.*", "C")}, name="C", opts=slow,
                  start=False)
    c.spawn()
    t_ready, _ = wait_log(c, "ready: Redis connected")
    rep = emit_after(a, t_ready, 0.1, "c.hello")
    assert [j["handler"] for j in rep["jobs"]] == ["only_c"], rep
    fin = env.wait_final([rep["jobs"][0]["id"]], 20)
    assert list(fin.values())[0]["agent"] == "C"


def test_reload_known_at_once(env):
    """After a reload adds a handler, the other agents route to it within
    milliseconds of the reload line, not at their next heartbeat."""
    rec, slow = slow_heartbeat_env(env)
    a = env.agent({"sms": rec_handler(rec, "sms.*", "A")}, name="A", opts=slow)
    b = env.agent({"mail": rec_handler(rec, "mail.*", "B")}, name="B", opts=slow)
    wait_served(b, "sms", ["A"])
    a.handlers = {"sms": rec_handler(rec, "sms.*", "A"),
                  "fax": rec_handler(rec, "fax.*", "A")}
    a.write_config()
    mark = len(a.stderr())
    a.signal(signal.SIGHUP)
    t_reload, _ = wait_log(a, "reload: ", after=mark)
    rep = emit_after(b, t_reload, 0.1, "fax.send")
    assert [j["handler"] for j in rep["jobs"]] == ["fax"], rep
    fin = env.wait_final([rep["jobs"][0]["id"]], 20)
    assert list(fin.values())[0]["agent"] == "A"
