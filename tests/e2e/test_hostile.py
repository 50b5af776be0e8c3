"""Hostile or odd input and handlers: clear errors, the agent never goes down."""

import json
import os
import socket
import threading
import time

import pytest

from harness import ddtest
from harness.ddtest import pid_alive, wait_for


@pytest.fixture
def agent(dispatchd, handler, record_dir):
    return dispatchd({"rec": {"on": "h.*", "exec": handler("record.py"),
                              "env": "RECORD_DIR=%s" % record_dir}})


def job_stdin(record_dir, jid):
    p = record_dir / ("rec.%s.1.json" % jid)
    wait_for(p.exists, what=p.name)
    return json.loads(ddtest.read_json_file(str(p))["stdin"])


def test_deeply_nested_data(agent):
    deep = '{"event":"h.deep","data":' + "[" * 50000 + "]" * 50000 + "}"
    rep = agent.request(deep)
    assert rep.get("ok") is False and rep.get("code") == "invalid", rep
    deep_ok = '{"event":"h.deep","data":' + "[" * 30 + "]" * 30 + "}"
    assert agent.request(deep_ok)["ok"] is True
    assert agent.ping()["ok"]


def test_nul_and_odd_strings(agent, record_dir):
    rep = agent.request('{"event":"h.nul","data":{"s":"a\\u0000b"}}')
    assert rep.get("ok") is True or rep.get("code") == "invalid", rep
    rep = agent.request({"event": "h.uni", "data": {"s": "\u2603 \U0001f600 \\ \" \n"}})
    assert rep["ok"] is True
    assert agent.ping()["ok"]


@pytest.mark.parametrize("data", [[1, 2, {"a": None}], "just a string", 42, None, True, {}])
def test_any_json_data(agent, record_dir, data):
    rep = agent.request({"event": "h.any", "data": data})
    assert rep["ok"] is True, rep
    jid = rep["jobs"][0]["id"]
    assert job_stdin(record_dir, jid)["data"] == data


def test_data_defaults_to_empty_object(agent, record_dir):
    jid = agent.request({"event": "h.nodata"})["jobs"][0]["id"]
    assert job_stdin(record_dir, jid)["data"] == {}


@pytest.mark.parametrize("idem", ["{braces}:colon", "\u00fcn\u00efc\u00f8d\u00e9", "x" * 200,
                                  "with space", "x" * 500])
def test_odd_idempotency_keys(agent, idem):
    """The spec does not limit ids; the agent may refuse some (it documents
    1-200 characters without blanks) but then with a clean "invalid"."""
    first = agent.request({"event": "h.id", "id": idem})
    if not first.get("ok"):
        assert first.get("code") == "invalid" and first.get("error"), first
        assert agent.ping()["ok"]
        return
    again = agent.request({"event": "h.id", "id": idem})
    assert again.get("duplicate") is True and again["jobs"] == first["jobs"]
    other = agent.request({"event": "h.id", "id": idem[:-1] + "2"})
    assert other["ok"] and not other.get("duplicate")


def test_past_at_and_zero_delay_run_now(agent):
    for extra in ({"at": time.time() - 3600}, {"delay": 0}, {"at": 0}):
        t = time.time()
        rep = agent.request(dict({"event": "h.now"}, **extra))
        assert rep["ok"] is True, (extra, rep)
        r = agent.wait_final(rep["jobs"][0]["id"])[-1]
        assert int(r["started_ms"]) / 1000.0 - t < 0.5, extra


def test_pipelined_burst(dispatchd):
    agent = dispatchd({"fast": {"on": "h.*", "exec": "/bin/true"}})
    n = 300
    with agent.connect(timeout=20) as c:
        reps = c.requests([{"event": "h.burst", "data": {"i": i}} for i in range(n)])
    assert all(r["ok"] is True for r in reps)
    jobs = [r["jobs"][0]["id"] for r in reps]
    assert len(set(jobs)) == n
    wait_for(lambda: len([r for r in agent.results() if r["outcome"] == "done"]) >= n, 60,
             interval=0.2, what="%d done results" % n)
    assert sorted(r["job"] for r in agent.results()) == sorted(jobs)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_client_that_never_reads(agent):
    """A client streams requests but never reads the replies: other clients
    are still served promptly and the agent's memory stays bounded (it must
    stop reading from, or drop, a client whose replies pile up).  The hog
    offers 8 MB of pings; it stops early once the agent has not taken any
    more for 1 s (backpressure) or dropped it."""
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hog.connect(str(agent.sock))
    hog.settimeout(0.1)
    line = b'{"op":"ping"}\n' * 10000
    target = 8 * 1000 * 1000
    sent = [0]
    why = ["target reached"]
    stop = threading.Event()

    def feed():
        last_progress = time.monotonic()
        while not stop.is_set() and sent[0] < target:
            try:
                sent[0] += hog.send(line)
                last_progress = time.monotonic()
            except socket.timeout:
                if time.monotonic() - last_progress > 1.0:
                    why[0] = "agent stopped reading (backpressure)"
                    return
            except OSError as e:
                why[0] = "agent dropped the client (%s)" % e
                return

    rss0 = rss_kb(agent.proc.pid)
    th = threading.Thread(target=feed)
    th.start()
    latencies = []
    try:
        end = time.monotonic() + 15
        while th.is_alive() and time.monotonic() < end:
            t = time.monotonic()
            assert agent.ping()["ok"] is True
            latencies.append(time.monotonic() - t)
            time.sleep(0.1)
        grown = rss_kb(agent.proc.pid) - rss0
    finally:
        stop.set()
        th.join()
        hog.close()
    print("hog sent %.1f MB (%s); agent RSS grew %d kB; max ping latency %.0f ms"
          % (sent[0] / 1e6, why[0], grown, max(latencies + [0]) * 1000))
    # a sanitizer build keeps freed memory in quarantine: RSS says little there
    limit = 512 if os.environ.get("DISPATCHD_SANITIZED") else 32
    assert grown < limit * 1024, "agent RSS grew by %d MB for %.1f MB of unread requests" \
        % (grown // 1024, sent[0] / 1e6)
    assert max(latencies + [0]) < 0.5
    assert agent.ping()["ok"] is True


def test_handler_leaves_child_holding_pipes(dispatchd, handler, workdir):
    """The handler exits 0 but a background child keeps stdout open: the job
    still ends by the timeout at the latest and the child does not survive."""
    pidfile = workdir / "child"
    agent = dispatchd({"lc": {"on": "x", "exec": "%s %s" % (handler("leave_child.sh"), pidfile),
                              "timeout": "1s", "attempts": 1}},
                      agent_opts={"kill_grace": "200ms"})
    t = time.monotonic()
    jid = agent.emit("x")["jobs"][0]["id"]
    r = agent.wait_final(jid, timeout=10)[-1]
    took = time.monotonic() - t
    wait_for(pidfile.exists, what="child pid")
    child = int(pidfile.read_text())
    print("leave_child: %.2fs, result %r" % (took, {k: r[k] for k in
          ("outcome", "exit", "signal", "timed_out", "duration_ms", "stdout")}))
    assert took < 1 + 0.2 + 1.5
    assert r["stdout"].startswith("leader done")
    wait_for(lambda: not pid_alive(child), 3, what="background child %d to be gone" % child)
    assert agent.ping()["ok"]


@pytest.mark.parametrize("extra", [
    {"delay": 1e300}, {"delay": -1}, {"delay": 1e-9}, {"delay": 9007199254740993},
    {"at": -1}, {"at": 1e20}, {"delay": 0.5, "at": 1}, {"delay": True}, {"delay": None},
], ids=lambda e: json.dumps(e))
def test_odd_delays_do_not_hurt(agent, extra):
    rep = agent.request(dict({"event": "h.odd"}, **extra))
    assert rep.get("ok") is True or rep.get("code") == "invalid", rep
    assert agent.ping()["ok"] is True


def test_truncation_keeps_utf8_valid(dispatchd):
    """Cutting stdout at output_max must not split a multibyte character."""
    agent = dispatchd({"euro": {"on": "x", "exec": "/usr/bin/python3 -c "
                                "\"import sys; sys.stdout.write('\\u20ac' * 30000)\""}},
                      agent_opts={"output_max": "64k"})
    jid = agent.emit("x")["jobs"][0]["id"]
    r = agent.wait_final(jid)[-1]
    assert r["outcome"] == "done", r
    raw = r["_raw"][b"stdout"]
    text = raw.decode("utf-8")   # raises if the cut split a character
    assert len(raw) <= 65536
    assert len(raw) >= 65536 - 3
    assert set(text) == {"\u20ac"}, set(text)
    assert r["truncated"] == "1"
    assert int(r["output_bytes"]) == 90000
