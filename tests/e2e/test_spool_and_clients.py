"""Newer agent features from the README and the example config: the on-disk
spool for events while Redis is down, max_clients and client_timeout."""

import socket
import time

import pytest

from harness.ddtest import Client, stays, wait_for


def spool_files(d):
    return [p for p in d.rglob("*") if p.is_file()]


def test_spool_while_redis_down(dispatchd, handler, redis_server, workdir, record_dir):
    spool = workdir / "spool"
    agent = dispatchd({"st": {"on": "s.*", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}},
                      agent_opts={"spool": str(spool)})
    redis_server.stop()
    reps = []
    for i in range(3):
        rep = agent.request({"event": "s.x", "data": {"i": i}, "id": "sp-%d" % i})
        assert rep.get("ok") is True and rep.get("spooled") is True, rep
        reps.append(rep)
    assert spool_files(spool), "nothing on disk in the spool"
    redis_server.start()
    eids = {r["event_id"] for r in reps}
    assert len(eids) == 3
    wait_for(lambda: {r["event_id"] for r in agent.results() if r["outcome"] == "done"} >= eids,
             15, interval=0.1, what="the spooled events to run")
    assert stays(lambda: len(agent.results()) == 3, 0.5), agent.results()
    wait_for(lambda: not spool_files(spool), 5, what="the spool to empty")
    # the ids were kept: a repeat is a duplicate of the spooled event
    again = agent.request({"event": "s.x", "id": "sp-0"})
    assert again.get("duplicate") is True and again["event_id"] == reps[0]["event_id"], again


def test_spool_survives_agent_crash(dispatchd, handler, redis_server, workdir, record_dir):
    spool = workdir / "spool"
    agent = dispatchd({"st": {"on": "s.*", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}},
                      agent_opts={"spool": str(spool)})
    redis_server.stop()
    rep = agent.request({"event": "s.crash", "data": {"k": 1}})
    assert rep.get("ok") is True and rep.get("spooled") is True, rep
    agent.kill9()
    redis_server.start()
    agent.restart()
    wait_for(lambda: [r for r in agent.results()
                      if r["event_id"] == rep["event_id"] and r["outcome"] == "done"],
             15, interval=0.1, what="the spooled event to run after the restart")
    assert stays(lambda: len(agent.results()) == 1, 0.5), agent.results()


def test_spool_full_refuses(dispatchd, handler, redis_server, workdir, record_dir):
    spool = workdir / "spool"
    agent = dispatchd({"st": {"on": "s.*", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}},
                      agent_opts={"spool": str(spool), "spool_max": 4096})
    redis_server.stop()
    accepted = []
    refused = None
    for i in range(40):
        rep = agent.request({"event": "s.full", "data": {"pad": "p" * 500, "i": i}})
        if rep.get("ok"):
            assert rep.get("spooled") is True
            accepted.append(rep["event_id"])
        else:
            refused = rep
            break
    print("spool_max=4096: %d accepted, then %r" % (len(accepted), refused))
    assert refused is not None, "40 events of 500+ bytes all fitted in a 4 KiB spool"
    assert refused.get("code") == "unavailable", refused
    assert 1 <= len(accepted) <= 8
    redis_server.start()
    wait_for(lambda: {r["event_id"] for r in agent.results() if r["outcome"] == "done"}
             >= set(accepted), 15, interval=0.1, what="the accepted events to run")


def test_client_timeout_closes_idle_clients(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}},
                      agent_opts={"client_timeout": "1s"})
    idle = Client(agent.sock)
    partial = Client(agent.sock)
    partial.send_raw(b'{"op":"pi')
    busy = Client(agent.sock)
    t = time.monotonic()
    # the busy client keeps talking and stays connected
    while time.monotonic() - t < 2.0:
        assert busy.request({"op": "ping"})["ok"] is True
        time.sleep(0.2)
    assert idle.at_eof(timeout=2.0), "idle client still connected after 3 s"
    assert partial.at_eof(timeout=2.0), "client with a partial line still connected"
    assert busy.request({"op": "ping"})["ok"] is True
    for c in (idle, partial, busy):
        c.close()


def test_max_clients(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}},
                      agent_opts={"max_clients": 3})
    conns = [Client(agent.sock) for _ in range(3)]
    for c in conns:
        assert c.request({"op": "ping"})["ok"] is True
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.settimeout(5)
    extra.connect(str(agent.sock))
    data = b""
    try:
        while True:
            chunk = extra.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pytest.fail("the 4th client was neither refused nor closed within 5 s")
    except ConnectionResetError:
        pass
    print("4th client got: %r" % data)
    if data:
        assert b'"ok":false' in data.replace(b" ", b"") and b"unavailable" in data, data
    extra.close()
    for c in conns:
        assert c.request({"op": "ping"})["ok"] is True
        c.close()
    # slots free again
    wait_for(lambda: agent.ping()["ok"], 5, what="ping after clients left")


def agent_fds(agent):
    import os
    return len(os.listdir("/proc/%d/fd" % agent.pid))


def test_client_that_never_reads_is_dropped(dispatchd, handler):
    """A client that pipelines requests and never reads its answers is
    timed out; if it does not read that last answer either, it is dropped
    a client_timeout later, so it cannot hold a descriptor and a slot for
    ever."""
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}},
                      agent_opts={"client_timeout": "1s"})
    base = agent_fds(agent)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(agent.sock))
    s.setblocking(False)
    line = b'{"op":"ping"}\n'
    sent = 0
    t = time.monotonic()
    while time.monotonic() - t < 3:       # until the agent stops reading us
        try:
            sent += s.send(line * 1000)
        except BlockingIOError:
            break
    wait_for(lambda: "dropping it" in agent.stderr(), 10, interval=0.1,
             what="the agent to drop a client that never reads")
    wait_for(lambda: agent_fds(agent) <= base, 5, what="its descriptor to be closed")
    s.close()
    assert agent.ping()["ok"] is True


def test_out_of_descriptors_pauses_accept(dispatchd, handler):
    """With the agent's descriptors used up, accept fails; the agent pauses
    accepting instead of spinning on the readable socket, and serves again
    once descriptors are free."""
    import subprocess
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}})
    n = agent_fds(agent)
    subprocess.run(["prlimit", "--pid", str(agent.pid), "--nofile=%d:%d" % (n, 4096)],
                   check=True)
    waiting = []
    for _ in range(3):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(agent.sock))            # queued: the agent cannot accept
        waiting.append(c)
    wait_for(lambda: "pausing 100 ms" in agent.stderr(), 5, interval=0.05,
             what="accept to fail and pause")

    def cpu():
        with open("/proc/%d/stat" % agent.pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
    import os
    c0, t0 = cpu(), time.monotonic()
    wait_for(lambda: time.monotonic() - t0 >= 1.0, 2, what="a second to pass")
    used = cpu() - c0
    print("agent CPU while out of descriptors: %.2f s in 1 s" % used)
    assert used < 0.5, used
    subprocess.run(["prlimit", "--pid", str(agent.pid), "--nofile=4096:4096"], check=True)
    for c in waiting:
        c.close()
    wait_for(lambda: agent.ping().get("ok") is True, 5, what="the agent to serve again")


def test_unreadable_spool_files_are_set_aside_never_deleted(dispatchd, handler, workdir,
                                                          record_dir):
    """At replay, a spooled file that is not an event, or cannot be read,
    is moved aside as .bad; when even that fails it stays where it is. The
    good events around them are queued, in order."""
    spool = workdir / "spool"
    spool.mkdir()
    now = int(time.time() * 1000)
    (spool / ("%013d-000001.event" % now)).write_text(
        '%d {"event":"s.x","data":{"n":1},"id":"good-1"}\n' % now)
    junk = spool / ("%013d-000002.event" % now)
    junk.write_text("this is not a spool line\n")
    (spool / ("%013d-000003.event" % now)).mkdir()        # read fails: EISDIR
    stuck = spool / ("%013d-000004.event" % now)
    stuck.write_text("neither is this\n")
    blocker = spool / (stuck.name + ".bad")                # rename onto it fails
    blocker.mkdir()
    (blocker / "keep").write_text("x")
    (spool / ("%013d-000005.event" % now)).write_text(
        '%d {"event":"s.x","data":{"n":2},"id":"good-2"}\n' % now)
    agent = dispatchd({"st": {"on": "s.*", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}},
                      agent_opts={"spool": str(spool)})
    wait_for(lambda: len([r for r in agent.results() if r.get("outcome") == "done"]) == 2,
             10, what="the two good spooled events to run")
    assert sorted(r["event_id"] for r in agent.results()) == ["good-1", "good-2"]
    assert (spool / (junk.name + ".bad")).read_text() == "this is not a spool line\n"
    assert (spool / ("%013d-000003.event.bad" % now)).is_dir()
    assert stuck.read_text() == "neither is this\n", "a file that could not be moved was deleted"
    log = agent.stderr()
    assert "left in place" in log and "moved to" in log, log


def test_start_failures_put_jobs_back_uncounted(dispatchd, handler):
    """When the agent cannot start a handler (out of descriptors), the job
    is not failed: it goes back, uncounted, and fetching pauses; once
    descriptors are free it runs and is done."""
    import os
    import subprocess
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh"), "attempts": 2}})
    n = agent_fds(agent)
    # room for the emit's connection, not for a handler's pipes
    subprocess.run(["prlimit", "--pid", str(agent.pid), "--nofile=%d:%d" % (n + 1, 4096)],
                   check=True)
    jid = agent.emit("x")["jobs"][0]["id"]
    wait_for(lambda: "putting it back" in agent.stderr(), 5, interval=0.05,
             what="a failed start")
    c0 = len(agent.job_results(jid))
    wait_for(lambda: len(agent.job_results(jid)) >= c0 + 1, 5, what="another try")
    subprocess.run(["prlimit", "--pid", str(agent.pid), "--nofile=4096:4096"], check=True)
    res = agent.wait_final(jid, 10)
    outcomes = [r["outcome"] for r in res]
    print("outcomes:", outcomes)
    assert outcomes[-1] == "done" and set(outcomes[:-1]) == {"released"}, outcomes
    assert "Too many open files" in res[0]["error"], res[0]
    # paused between tries: about one a second, not a storm
    assert len(outcomes) <= 10, outcomes
