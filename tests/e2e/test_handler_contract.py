"""Handler contract: stdin job JSON, argv, environment, cwd, process state,
and the results-stream entry of a successful run (spec: "Handler contract")."""

import json
import time

from harness import ddtest
from harness.ddtest import wait_for

EXPECTED_ENV_KEYS = {
    "PATH", "HOME", "LANG",
    "DISPATCH_JOB_ID", "DISPATCH_EVENT", "DISPATCH_EVENT_ID", "DISPATCH_HANDLER",
    "DISPATCH_ATTEMPT", "DISPATCH_MAX_ATTEMPTS",
}


def wait_record(record_dir, handler, job, attempt=1, timeout=10.0):
    p = record_dir / ("%s.%s.%s.json" % (handler, job, attempt))
    wait_for(p.exists, timeout, what="handler record %s" % p.name)
    return ddtest.read_json_file(str(p))


def test_emit_runs_handler_with_contract(dispatchd, handler, record_dir, workdir):
    wd = workdir / "wd"
    wd.mkdir()
    agent = dispatchd({
        "rec": {
            "on": "order.paid",
            "exec": '%s plain "two words" last' % handler("record.py"),
            "attempts": 3,
            "timeout": "30s",
            "workdir": str(wd),
            "env": ["RECORD_DIR=%s" % record_dir, "EXTRA=a=b"],
        },
    })
    data = {"order": 42, "items": [1, 2.5, "three"], "who": "Zoë \u2603",
            "nested": {"ok": True, "none": None}}
    t0 = time.time()
    rep = agent.emit("order.paid", data)
    t1 = time.time()
    assert rep["ok"] is True
    assert isinstance(rep["event_id"], str) and rep["event_id"]
    assert len(rep["jobs"]) == 1
    job = rep["jobs"][0]
    assert job["handler"] == "rec"
    jid = job["id"]

    rec = wait_record(record_dir, "rec", jid)

    # stdin: the job JSON, all fields
    stdin = json.loads(rec["stdin"])
    assert set(stdin) >= {"id", "event", "event_id", "handler", "data", "attempt",
                          "max_attempts", "emitted_at", "deadline"}, stdin
    assert stdin["id"] == jid
    assert stdin["event"] == "order.paid"
    assert stdin["event_id"] == rep["event_id"]
    assert stdin["handler"] == "rec"
    assert stdin["data"] == data
    assert stdin["attempt"] == 1
    assert stdin["max_attempts"] == 3
    assert isinstance(stdin["emitted_at"], (int, float))
    assert isinstance(stdin["deadline"], (int, float))
    assert t0 - 1.0 <= stdin["emitted_at"] <= t1 + 1.0, (t0, stdin["emitted_at"], t1)
    # deadline = when the 30s timeout expires for this attempt
    assert stdin["emitted_at"] + 29 <= stdin["deadline"] <= rec["start"] + 31, stdin

    # argv from exec, no shell; quoted word stays one argument
    assert rec["argv"] == [handler("record.py"), "plain", "two words", "last"]

    # env: exactly the documented set plus env= lines
    env = rec["env"]
    assert set(env) == EXPECTED_ENV_KEYS | {"RECORD_DIR", "EXTRA"}, sorted(env)
    assert ddtest.SECRET_NAME not in env
    assert ddtest.SECRET_VALUE not in json.dumps(env)
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["LANG"] == "C.UTF-8"
    assert env["HOME"]
    assert env["DISPATCH_JOB_ID"] == jid
    assert env["DISPATCH_EVENT"] == "order.paid"
    assert env["DISPATCH_EVENT_ID"] == rep["event_id"]
    assert env["DISPATCH_HANDLER"] == "rec"
    assert env["DISPATCH_ATTEMPT"] == "1"
    assert env["DISPATCH_MAX_ATTEMPTS"] == "3"
    assert env["RECORD_DIR"] == str(record_dir)
    assert env["EXTRA"] == "a=b"

    # cwd = workdir
    assert rec["cwd"] == str(wd)

    # results stream
    res = agent.wait_results(jid, 1)
    assert len(res) == 1, res
    r = res[0]
    assert r["outcome"] == "done"
    assert r["exit"] == "0"
    assert r["signal"] == ""
    assert r["timed_out"] == "0"
    assert r["event"] == "order.paid"
    assert r["event_id"] == rep["event_id"]
    assert r["handler"] == "rec"
    assert r["attempt"] == "1"
    assert r["stdout"] == "out:%s\n" % jid
    assert r["stderr"] == "err:rec\n"
    assert r["truncated"] == "0"
    assert int(r["output_bytes"]) >= len(r["stdout"])
    assert r["agent"] == "dt-agent"
    assert r["host"]
    assert r["error"] == ""
    started = int(r["started_ms"]) / 1000.0
    assert t0 - 1 <= started <= time.time() + 1
    assert 0 <= int(r["duration_ms"]) < 10000


def test_exec_word_splitting(dispatchd, handler, record_dir):
    """exec = is split into words with double quotes, single quotes and backslash."""
    agent = dispatchd({
        "rec": {
            "on": "split",
            "exec": '%s "a b" \'c "d"\' e\\ f "g\\"h" \'\' end' % handler("record.py"),
            "env": "RECORD_DIR=%s" % record_dir,
        },
    })
    jid = agent.emit("split")["jobs"][0]["id"]
    rec = wait_record(record_dir, "rec", jid)
    assert rec["argv"][1:] == ["a b", 'c "d"', "e f", 'g"h', "", "end"]
    assert agent.wait_final(jid)[-1]["outcome"] == "done"


def test_default_workdir_and_no_shell(dispatchd, handler, record_dir):
    """Without workdir the handler runs in /; shell metacharacters in exec are
    plain arguments (no shell ever).  (";" is not tested: in the INI an
    inline " ;" starts a comment.)"""
    agent = dispatchd({
        "rec": {
            "on": "x",
            "exec": "%s $HOME && `id` | >out $(id) *" % handler("record.py"),
            "env": "RECORD_DIR=%s" % record_dir,
        },
    })
    jid = agent.emit("x")["jobs"][0]["id"]
    rec = wait_record(record_dir, "rec", jid)
    assert rec["cwd"] == "/"
    assert rec["argv"][1:] == ["$HOME", "&&", "`id`", "|", ">out", "$(id)", "*"]


def test_handler_process_state(dispatchd, handler, record_dir):
    """New session and process group; only fds 0, 1, 2 open (no agent socket or
    Redis connection leaks into handlers)."""
    agent = dispatchd({
        "rec": {"on": "x", "exec": handler("record.py"),
                "env": "RECORD_DIR=%s" % record_dir},
    })
    jid = agent.emit("x")["jobs"][0]["id"]
    rec = wait_record(record_dir, "rec", jid)
    assert rec["sid"] == rec["pid"], "handler is not a session leader"
    assert rec["pgid"] == rec["pid"], "handler is not a process group leader"
    extra = {fd: target for fd, target in rec["fds"].items() if fd not in ("0", "1", "2")}
    assert not extra, "fds leaked into the handler: %r" % extra


def test_handler_signal_state(dispatchd, handler):
    """Handlers start with no blocked and no ignored signals (e.g. the agent's
    SIG_IGN for SIGPIPE must be reset before exec)."""
    agent = dispatchd({"sig": {"on": "x", "exec": handler("sigstate.sh")}})
    jid = agent.emit("x")["jobs"][0]["id"]
    r = agent.wait_final(jid)[-1]
    assert r["outcome"] == "done", r
    lines = dict(l.split(":\t") for l in r["stdout"].strip().splitlines())
    assert int(lines["SigBlk"], 16) == 0, r["stdout"]
    assert int(lines["SigIgn"], 16) == 0, r["stdout"]


def test_handler_not_reading_stdin(dispatchd, handler):
    """A handler that never reads a big stdin (larger than a pipe buffer) and
    exits, or sleeps first: job done, agent never blocks meanwhile."""
    agent = dispatchd({
        "quick": {"on": "big", "exec": handler("nostdin.sh")},
        "slow": {"on": "big", "exec": "%s 1" % handler("nostdin.sh")},
    })
    data = {"blob": "y" * (512 * 1024)}
    rep = agent.emit("big", data)
    jobs = {j["handler"]: j["id"] for j in rep["jobs"]}
    assert set(jobs) == {"quick", "slow"}
    # while "slow" sits on a full stdin pipe, the agent still answers at once
    for _ in range(5):
        t = time.monotonic()
        assert agent.ping()["ok"] is True
        assert time.monotonic() - t < 0.5
    for h, jid in jobs.items():
        r = agent.wait_final(jid)[-1]
        assert r["outcome"] == "done", (h, r)
        assert r["exit"] == "0"
        assert r["stdout"] == "did not read stdin\n"
    assert agent.ping()["ok"] is True


def test_ping_reply(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}})
    rep = agent.ping()
    assert rep["ok"] is True
    assert rep["agent"] == "dt-agent"
    assert rep["version"] == "0.1.0"
    assert rep["redis"] is True
