"""The dispatchctl client against a real agent."""

import json

import ddtest
from ddtest import run, wait_for


def ctl(*args, env=None, input=None):
    return run([ddtest.DISPATCHCTL] + list(args), timeout=15, env=env, input=input)


def test_emit_prints_event_and_jobs(dispatchd, handler, record_dir):
    rec = handler("record.py")
    agent = dispatchd({
        "a": {"on": "order.paid", "exec": rec, "env": "RECORD_DIR=%s" % record_dir},
        "b": {"on": "order.*", "exec": rec, "env": "RECORD_DIR=%s" % record_dir},
    })
    p = ctl("-s", agent.sock, "emit", "order.paid", "k=v", "n:=5", "obj:={\"x\":[1,2]}",
            "--id", "X")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    lines = p.stdout.splitlines()
    assert lines[0].startswith("event "), lines
    event_id = lines[0].split()[1]
    jobs = {}
    for l in lines[1:]:
        word, jid, h = l.split()
        assert word == "job"
        jobs[h] = jid
    assert sorted(jobs) == ["a", "b"], lines
    for h, jid in jobs.items():
        r = agent.wait_final(jid)[-1]
        assert r["outcome"] == "done" and r["event_id"] == event_id
        p_rec = record_dir / ("%s.%s.1.json" % (h, jid))
        wait_for(p_rec.exists, what=p_rec.name)
        stdin = json.loads(ddtest.read_json_file(str(p_rec))["stdin"])
        assert stdin["data"] == {"k": "v", "n": 5, "obj": {"x": [1, 2]}}

    # same --id again: same jobs, --json prints the raw reply
    p2 = ctl("-s", agent.sock, "--json", "emit", "order.paid", "k=v", "--id", "X")
    assert p2.returncode == 0, p2
    rep = json.loads(p2.stdout)
    assert rep["ok"] is True and rep.get("duplicate") is True
    assert {j["handler"]: j["id"] for j in rep["jobs"]} == jobs


def test_emit_data_options(dispatchd, handler, record_dir):
    agent = dispatchd({"a": {"on": "e", "exec": handler("record.py"),
                             "env": "RECORD_DIR=%s" % record_dir}})
    p = ctl("-s", agent.sock, "emit", "e", "--data", '{"from":"arg"}')
    assert p.returncode == 0, p
    p2 = ctl("-s", agent.sock, "emit", "e", "--data", "-", input='{"from":"stdin"}')
    assert p2.returncode == 0, p2
    p3 = ctl("-s", agent.sock, "emit", "e", "--delay", "0.2")
    assert p3.returncode == 0, p3
    datas = []
    for out in (p.stdout, p2.stdout, p3.stdout):
        jid = out.splitlines()[1].split()[1]
        agent.wait_final(jid)
        path = record_dir / ("a.%s.1.json" % jid)
        wait_for(path.exists, what=path.name)
        datas.append(json.loads(ddtest.read_json_file(str(path))["stdin"])["data"])
    assert datas == [{"from": "arg"}, {"from": "stdin"}, {}]


def test_emit_delay_takes_a_duration(dispatchd, handler):
    """--delay takes seconds or a duration as the config writes them."""
    agent = dispatchd({"a": {"on": "e", "exec": handler("exit.sh")}})
    now = agent.redis.client().time()
    now_ms = now[0] * 1000 + now[1] // 1000
    for arg, secs in (("1h", 3600), ("90s", 90), ("2.5", 2.5)):
        p = ctl("-s", agent.sock, "emit", "e", "--delay", arg)
        assert p.returncode == 0, (arg, p)
        jid = p.stdout.splitlines()[1].split()[1]
        due = int(agent.redis.client().hget(agent.key("job:" + jid), "due_ms"))
        assert abs(due - now_ms - secs * 1000) < 5000, (arg, due - now_ms)


def test_ping_and_socket_sources(dispatchd, handler):
    agent = dispatchd({"a": {"on": "e", "exec": handler("exit.sh")}})
    p = ctl("-s", agent.sock, "ping")
    assert p.returncode == 0, p
    p = ctl("-c", agent.conf, "ping")
    assert p.returncode == 0, ("socket from -c config", p)
    p = ctl("ping", env=ddtest.agent_environ({"DISPATCHD_SOCKET": str(agent.sock)}))
    assert p.returncode == 0, ("DISPATCHD_SOCKET", p)


def test_unreachable_agent_exit_69(workdir):
    for args in (["ping"], ["emit", "order.paid", "k=v"]):
        p = ctl("-s", workdir / "no-agent.sock", *args)
        assert p.returncode == 69, (args, p.returncode, p.stderr)
        assert p.stderr


def test_usage_errors_exit_64(workdir):
    sock = str(workdir / "no-agent.sock")
    for args in ([], ["frobnicate"], ["emit"], ["emit", "e", "novalue"],
                 ["emit", "e", "--data", "{bad json"], ["emit", "e", "n:={bad"],
                 ["emit", "e", "--delay", "soon"], ["emit", "e", "--delay", "-5"],
                 ["purge"], ["--no-such-option", "ping"]):
        p = ctl("-s", sock, *args)
        assert p.returncode == 64, (args, p.returncode, p.stdout, p.stderr)
        assert p.stderr, args


def test_error_reply_exit_1(dispatchd, handler, redis_server):
    agent = dispatchd({"a": {"on": "e", "exec": handler("exit.sh")}})
    redis_server.stop()
    p = ctl("-s", agent.sock, "emit", "e")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "unavailable" in p.stderr.lower() or "redis" in p.stderr.lower(), p.stderr


def test_error_reply_too_large_exit_1(dispatchd, handler):
    agent = dispatchd({"a": {"on": "e", "exec": handler("exit.sh")}},
                      agent_opts={"max_message": "1k"})
    p = ctl("-s", agent.sock, "emit", "e", "big=" + "a" * 3000)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "too_large" in p.stderr or "max_message" in p.stderr, p.stderr
    assert ctl("-s", agent.sock, "ping").returncode == 0
    # far past the socket's buffers: the agent answers and closes while
    # dispatchctl still writes; it must still say why, not die of SIGPIPE
    data = json.dumps({"big": "a" * (3 << 20)})
    for args in (("emit", "e", "--data", "-"), ("--json", "emit", "e", "--data", "-")):
        p = ctl("-s", agent.sock, *args, input=data)
        assert p.returncode == 1, (args, p.returncode, p.stderr)
        assert "too_large" in p.stderr + p.stdout, (args, p.stdout, p.stderr)


def test_emit_unrouted_event(dispatchd, handler):
    agent = dispatchd({"a": {"on": "e", "exec": handler("exit.sh")}})
    p = ctl("-s", agent.sock, "emit", "nobody.listens")
    assert p.returncode == 0, p
    assert p.stdout.splitlines()[0].startswith("event "), p.stdout
    assert not [l for l in p.stdout.splitlines() if l.startswith("job ")], p.stdout
