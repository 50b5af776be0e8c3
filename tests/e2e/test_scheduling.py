"""Delayed jobs, retries with backoff, and what exit codes mean."""

import json
import time

import pytest

from harness.ddtest import stays, wait_for


def test_delay_starts_on_time(dispatchd, handler, record_dir):
    agent = dispatchd({"st": {"on": "later", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}})
    delays = [1, 1.5, 0.7]
    sent = []
    for d in delays:
        t_send = time.time()
        rep = agent.emit("later", {"d": d}, delay=d)
        t_reply = time.time()
        sent.append((d, t_send, t_reply, rep["jobs"][0]["id"]))
    figures = []
    for d, t_send, t_reply, jid in sent:
        # not started before its time
        r = agent.wait_final(jid, timeout=10)[-1]
        assert r["outcome"] == "done", r
        started = int(r["started_ms"]) / 1000.0
        stamp_path = record_dir / ("%s.1" % jid)
        wait_for(stamp_path.exists, what="stamp")
        stamp = int(stamp_path.read_text()) / 1e9
        early = (t_send + d) - started       # > 0 means it started too early
        late = started - (t_reply + d)        # > 0 means it started late
        figures.append("delay=%.1fs: started_ms-due=%+.1f..%+.1fms, handler stamp-due=%+.1fms"
                       % (d, (started - t_reply - d) * 1000, (started - t_send - d) * 1000,
                          (stamp - t_send - d) * 1000))
        assert early <= 0.005, "started %.1f ms before due" % (early * 1000)
        assert late <= 0.050, "started %.1f ms after due" % (late * 1000)
    print("\n".join(figures))


def test_at_starts_on_time(dispatchd, handler, record_dir):
    agent = dispatchd({"st": {"on": "later", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}})
    at = time.time() + 1.2
    jid = agent.emit("later", at=at)["jobs"][0]["id"]
    r = agent.wait_final(jid)[-1]
    started = int(r["started_ms"]) / 1000.0
    print("at: started - at = %+.1f ms" % ((started - at) * 1000))
    assert -0.005 <= started - at <= 0.050


def test_handler_delay_setting(dispatchd, handler, record_dir):
    agent = dispatchd({"st": {"on": "later", "delay": "500ms",
                              "exec": "%s %s" % (handler("stamp.sh"), record_dir)}})
    t_send = time.time()
    jid = agent.emit("later")["jobs"][0]["id"]
    r = agent.wait_final(jid)[-1]
    started = int(r["started_ms"]) / 1000.0
    print("handler delay=500ms: started - send = %.1f ms" % ((started - t_send) * 1000))
    assert 0.495 <= started - t_send <= 0.6


def test_retry_with_backoff_then_dead(dispatchd, handler):
    agent = dispatchd({"fail": {"on": "x", "exec": "%s 1" % handler("exit.sh"),
                                "attempts": 3, "backoff": "100ms..200ms"}})
    jid = agent.emit("x", {"k": "v"})["jobs"][0]["id"]
    res = agent.wait_final(jid, timeout=10)
    assert [r["outcome"] for r in res] == ["retry", "retry", "dead"], res
    assert [r["attempt"] for r in res] == ["1", "2", "3"]
    assert all(r["exit"] == "1" and r["signal"] == "" and r["timed_out"] == "0" for r in res)
    # the handler saw the attempt number (exit.sh echoes its stdin)
    assert [json.loads(r["stdout"])["attempt"] for r in res] == [1, 2, 3]
    assert all(json.loads(r["stdout"])["max_attempts"] == 3 for r in res)
    gaps = []
    for a, b in zip(res, res[1:]):
        end_a = int(a["started_ms"]) + int(a["duration_ms"])
        gaps.append(int(b["started_ms"]) - end_a)
    print("backoff gaps (ms):", gaps)
    # attempt 1 waits 100-150ms, attempt 2 100-200ms: the jitter (x0.5..x1.5)
    # never leaves the bounds; the upper ends allow for scheduling slack
    assert 95 <= gaps[0] <= 150 + 100, gaps
    assert 95 <= gaps[1] <= 200 + 100, gaps
    # the dead job is in the dead set
    assert agent.redis.client().zscore(agent.key("dead"), jid) is not None
    assert stays(lambda: len(agent.job_results(jid)) == 3, 0.5)


@pytest.mark.parametrize("code", [75, 1, 63, 79])
def test_exit_code_retried(dispatchd, handler, code):
    agent = dispatchd({"h": {"on": "x", "exec": "%s %d" % (handler("exit.sh"), code),
                             "attempts": 2, "backoff": "100ms..100ms"}})
    jid = agent.emit("x")["jobs"][0]["id"]
    res = agent.wait_final(jid)
    assert [r["outcome"] for r in res] == ["retry", "dead"], res
    assert all(r["exit"] == str(code) for r in res)
    assert res[0]["error"] == ""


@pytest.mark.parametrize("code", [65, 64, 78])
def test_exit_code_dead_at_once(dispatchd, handler, code):
    agent = dispatchd({"h": {"on": "x", "exec": "%s %d" % (handler("exit.sh"), code),
                             "attempts": 5, "backoff": "100ms..100ms"}})
    jid = agent.emit("x")["jobs"][0]["id"]
    res = agent.wait_final(jid)
    assert [r["outcome"] for r in res] == ["dead"], res
    assert res[0]["exit"] == str(code) and res[0]["attempt"] == "1"
    assert stays(lambda: len(agent.job_results(jid)) == 1, 0.5), agent.job_results(jid)


def test_killed_by_signal_retried(dispatchd):
    agent = dispatchd({"h": {"on": "x", "exec": "/bin/sh -c 'kill -9 $$'",
                             "attempts": 2, "backoff": "100ms..100ms"}})
    jid = agent.emit("x")["jobs"][0]["id"]
    res = agent.wait_final(jid)
    assert [r["outcome"] for r in res] == ["retry", "dead"], res
    assert all(r["exit"] == "" and r["signal"] == "9" and r["timed_out"] == "0" for r in res)


def test_sooner_delay_rearms_timer(dispatchd, handler, record_dir):
    """A job due sooner than the one the promote timer waits for starts on time."""
    agent = dispatchd({"st": {"on": "later", "exec": "%s %s" % (handler("stamp.sh"), record_dir)}})
    agent.emit("later", delay=5)
    time.sleep(0.05)  # let the agent arm its timer for the 5 s job
    t_send = time.time()
    jid = agent.emit("later", delay=0.3)["jobs"][0]["id"]
    r = agent.wait_final(jid)[-1]
    late = int(r["started_ms"]) / 1000.0 - (t_send + 0.3)
    print("sooner job started %+.1f ms after due" % (late * 1000))
    assert -0.005 <= late <= 0.050


def test_concurrency_and_workers_limits(dispatchd, handler, record_dir):
    agent = dispatchd({
        "one": {"on": "c.one", "concurrency": 1, "exec": "%s 0.3" % handler("sleep.sh")},
        "any": {"on": "c.any", "exec": "%s 0.3" % handler("sleep.sh")},
    }, agent_opts={"workers": 2})
    ones = [agent.emit("c.one")["jobs"][0]["id"] for _ in range(3)]
    spans = []
    for jid in ones:
        r = agent.wait_final(jid)[-1]
        spans.append((int(r["started_ms"]), int(r["started_ms"]) + int(r["duration_ms"])))
    spans.sort()
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s2 >= e1 - 5, "concurrency=1 jobs overlapped: %r" % spans
    anys = [agent.emit("c.any")["jobs"][0]["id"] for _ in range(4)]
    spans = []
    for jid in anys:
        r = agent.wait_final(jid)[-1]
        spans.append((int(r["started_ms"]), int(r["started_ms"]) + int(r["duration_ms"])))
    for s, _ in spans:
        running = sum(1 for s2, e2 in spans if s2 <= s < e2 - 5)
        assert running <= 2, "more than workers=2 jobs at once: %r" % spans
