"""Timeouts kill the whole process group; output is capped but drained."""

import time

from harness.ddtest import pid_alive, wait_for


def read_pids(path):
    wait_for(path.exists, what="pid file %s" % path)
    return [int(x) for x in path.read_text().split()]


def test_timeout_kills_process_group(dispatchd, handler, workdir):
    pidfile = workdir / "pids"
    agent = dispatchd({"slow": {"on": "x", "exec": "%s %s" % (handler("grandchild.sh"), pidfile),
                                "timeout": "500ms", "attempts": 1}},
                      agent_opts={"kill_grace": "200ms"})
    jid = agent.emit("x")["jobs"][0]["id"]
    pids = read_pids(pidfile)
    assert all(pid_alive(p) for p in pids)
    res = agent.wait_final(jid)
    assert len(res) == 1, res
    r = res[0]
    assert r["timed_out"] == "1", r
    assert r["outcome"] == "dead"   # attempts = 1
    assert r["exit"] == "" and r["signal"] == "15", r
    assert 450 <= int(r["duration_ms"]) <= 1500, r["duration_ms"]
    assert r["stdout"] == "waiting\n"   # output before the kill is kept
    wait_for(lambda: not any(pid_alive(p) for p in pids), 3,
             what="handler %d and grandchild %d to be gone" % tuple(pids))
    assert agent.ping()["ok"]


def test_timeout_sigkill_after_grace(dispatchd, handler, workdir):
    """Everything ignores SIGTERM: SIGKILL follows after kill_grace."""
    pidfile = workdir / "pids"
    agent = dispatchd({"slow": {"on": "x", "exec": "%s %s" % (handler("stubborn.sh"), pidfile),
                                "timeout": "500ms", "attempts": 1}},
                      agent_opts={"kill_grace": "200ms"})
    jid = agent.emit("x")["jobs"][0]["id"]
    pids = read_pids(pidfile)
    r = agent.wait_final(jid)[-1]
    assert r["timed_out"] == "1" and r["signal"] == "9", r
    d = int(r["duration_ms"])
    print("stubborn: duration_ms=%d (timeout 500 + grace 200)" % d)
    assert 650 <= d <= 1700, d
    wait_for(lambda: not any(pid_alive(p) for p in pids), 3,
             what="stubborn handler and grandchild to be gone")


def test_timeout_kills_orphaned_group_member(dispatchd, handler, workdir):
    """The handler dies on SIGTERM but a grandchild ignoring SIGTERM lives on
    (holding the output pipes): the group still gets SIGKILL after kill_grace."""
    pidfile = workdir / "pids"
    agent = dispatchd({"slow": {"on": "x", "exec": "%s %s" % (handler("orphan.sh"), pidfile),
                                "timeout": "500ms", "attempts": 1}},
                      agent_opts={"kill_grace": "200ms"})
    jid = agent.emit("x")["jobs"][0]["id"]
    pids = read_pids(pidfile)
    r = agent.wait_final(jid, timeout=5)[-1]
    assert r["timed_out"] == "1", r
    assert int(r["duration_ms"]) <= 2000, r
    wait_for(lambda: not any(pid_alive(p) for p in pids), 3,
             what="grandchild %d to be gone" % pids[1])


def test_output_capped_and_drained(dispatchd, handler):
    agent = dispatchd({"flood": {"on": "x", "exec": handler("flood.py"), "timeout": "30s"}},
                      agent_opts={"output_max": "64k"})
    t = time.monotonic()
    jid = agent.emit("x")["jobs"][0]["id"]
    r = agent.wait_final(jid, timeout=20)[-1]
    elapsed = time.monotonic() - t
    assert r["outcome"] == "done" and r["exit"] == "0", {k: v for k, v in r.items() if k not in ("stdout", "stderr", "_raw")}
    stdout = r["_raw"][b"stdout"]
    stderr = r["_raw"][b"stderr"]
    assert len(stdout) == 64 * 1024, len(stdout)
    assert stdout == b"x" * 65536
    assert len(stderr) == 64 * 1024, len(stderr)
    assert r["truncated"] == "1"
    assert int(r["output_bytes"]) >= 10 * 1024 * 1024, r["output_bytes"]
    print("10 MiB flood: duration_ms=%s, emit->result %.2fs, output_bytes=%s"
          % (r["duration_ms"], elapsed, r["output_bytes"]))
    assert int(r["duration_ms"]) < 5000
    assert agent.ping()["ok"]


def test_output_stored_as_valid_utf8(dispatchd, handler):
    agent = dispatchd({"bad": {"on": "x", "exec": handler("badutf8.sh")}})
    jid = agent.emit("x")["jobs"][0]["id"]
    r = agent.wait_final(jid)[-1]
    assert r["outcome"] == "done"
    out = r["_raw"][b"stdout"].decode("utf-8")     # raises if not valid UTF-8
    err = r["_raw"][b"stderr"].decode("utf-8")
    assert out.startswith("ok ") and out.rstrip("\n").endswith("end"), repr(out)
    assert "bytes" in out
    assert err.startswith("bad "), repr(err)
