"""The dispatchctl client against a real agent."""

import json
import subprocess

import pytest

from harness import ddtest
from harness.ddtest import run, wait_for


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
                 ["emit", "e", "--delay", "inf"], ["emit", "e", "--delay", "nan"],
                 ["emit", "e", "--delay", "1e999"],
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


# ------------------------------------------------- where options may go ----
#
# The global options (-s/--socket, -c/--config, --json) may come before or
# after the command, among its own options; "--" ends the options.

def each_order(agent, cmd, args, split):
    """Run CMD ARGS four ways: the global options first, last, around and
    among the arguments (before args[split]), and as -c CONFIG after the
    command.  args: a list, or a function giving a fresh list per call.
    Returns the parsed --json replies; each must be ok."""
    s = str(agent.sock)
    lines = [
        lambda a: ["-s", s, "--json", cmd] + a,
        lambda a: [cmd] + a + ["--json", "-s", s],
        lambda a: ["--json", cmd] + a[:split] + ["--socket=" + s] + a[split:],
        lambda a: [cmd] + a[:split] + ["-c", str(agent.conf), "--json"] + a[split:],
    ]
    reps = []
    for line in lines:
        argv = line(args() if callable(args) else list(args))
        p = ctl(*argv)
        assert p.returncode == 0, (argv, p.returncode, p.stdout, p.stderr)
        rep = json.loads(p.stdout)
        assert rep["ok"] is True, (argv, rep)
        reps.append(rep)
    return reps


@pytest.fixture
def order_agent(dispatchd, handler):
    return dispatchd({
        "a": {"on": "e", "exec": handler("exit.sh")},
        "bad": {"on": "e.bad", "exec": handler("exit.sh") + " 3", "attempts": 1},
    })


def delayed_job(agent):
    """A job that waits an hour: something for job, cancel and retry."""
    return agent.emit("e", delay=3600)["jobs"][0]["id"]


def test_global_options_anywhere_read_commands(order_agent):
    agent = order_agent
    for rep in each_order(agent, "ping", [], 0):
        assert rep["agent"] == agent.name, rep
    reps = each_order(agent, "status", [], 0)
    assert all(sorted(h["name"] for h in r["handlers"]) == ["a", "bad"] for r in reps), reps
    reps = each_order(agent, "handlers", [], 0)
    assert all([h["name"] for h in r["handlers"]] == [h["name"] for h in reps[0]["handlers"]]
               for r in reps), reps
    for rep in each_order(agent, "metrics", [], 0):
        assert "dispatchd_" in rep["text"], rep

    jid = delayed_job(agent)
    for rep in each_order(agent, "job", [jid], 0):
        assert rep["job"]["id"] == jid and rep["job"]["state"] == "delayed", rep
    for rep in each_order(agent, "job", [jid], 1):
        assert rep["job"]["id"] == jid, rep

    # command options on both sides of the global ones
    other = delayed_job(agent)
    for rep in each_order(agent, "jobs", ["--state", "delayed", "--handler", "a",
                                          "--limit", "1"], 2):
        assert len(rep["jobs"]) == 1 and rep["jobs"][0]["id"] in (jid, other), rep
    for rep in each_order(agent, "jobs", ["--handler", "bad", "--state", "delayed"], 4):
        assert rep["jobs"] == [], rep

    done = agent.emit("e")["jobs"][0]["id"]
    agent.wait_final(done)
    for rep in each_order(agent, "results", ["--handler", "a", "-n", "1"], 2):
        assert [r["job"] for r in rep["results"]] == [done], rep
    for rep in each_order(agent, "results", ["--event", "e.none", "--limit", "3"], 2):
        assert rep["results"] == [], rep


def test_global_options_anywhere_emit(order_agent):
    agent = order_agent
    reps = each_order(agent, "emit", ["e", "k=v", "--delay", "1h", "n:=5"], 2)
    reps += each_order(agent, "emit", ["--data", '{"k":"v"}', "e", "--delay", "3600",
                                       "n:=5"], 3)
    r = agent.redis.client()
    for rep in reps:
        jid = rep["jobs"][0]["id"]
        job = {k.decode(): v.decode() for k, v in r.hgetall(agent.key("job:" + jid)).items()}
        assert json.loads(job["data"]) == {"k": "v", "n": 5}, job
        assert job["state"] == "delayed", job
    # --id honoured in every order: the same event each time
    reps = each_order(agent, "emit", ["e", "--id", "once", "x=1"], 1)
    assert len({rep["event_id"] for rep in reps}) == 1, reps
    assert [rep.get("duplicate", False) for rep in reps] == [False, True, True, True], reps


def test_global_options_anywhere_changes(order_agent):
    agent = order_agent
    for rep in each_order(agent, "cancel", lambda: [delayed_job(agent)], 0):
        assert rep["count"] == 1, rep
    for rep in each_order(agent, "retry", lambda: [delayed_job(agent)], 1):
        assert rep["count"] == 1, rep

    dead = []
    for _ in range(8):
        jid = agent.emit("e.bad")["jobs"][0]["id"]
        assert agent.wait_final(jid)[-1]["outcome"] == "dead"
        dead.append(jid)
    # --handler is honoured wherever the global options are: nothing of a's
    for rep in each_order(agent, "retry", ["--dead", "--handler", "a"], 1):
        assert rep["count"] == 0, rep
    for rep in each_order(agent, "purge", ["--handler", "a", "--dead", "--older-than",
                                           "1s"], 2):
        assert rep["count"] == 0, rep
    for rep in each_order(agent, "retry", ["--dead", "--handler", "bad", "--limit", "1"], 3):
        assert rep["count"] == 1, rep

    def dead_now():
        p = ctl("-s", agent.sock, "jobs", "--json", "--state", "dead")
        return [j["id"] for j in json.loads(p.stdout)["jobs"]]
    # the four retried jobs run and die again (attempts = 1)
    wait_for(lambda: sorted(dead_now()) == sorted(dead), what="8 dead jobs again")
    for rep in each_order(agent, "purge", ["--limit", "1", "--dead", "--handler", "bad"], 2):
        assert rep["count"] == 1, rep
    assert len(dead_now()) == 4


def test_global_options_anywhere_run_and_check(order_agent):
    agent = order_agent
    for rep in each_order(agent, "run", ["a", "--data", '{"x":1}', "--event", "my.ev"], 3):
        assert rep["outcome"] == "done", rep
        job = json.loads(rep["stdout"])
        assert job["data"] == {"x": 1} and job["event"] == "my.ev", job
    for rep in each_order(agent, "run", ["--event", "my.ev", "a"], 2):
        assert json.loads(rep["stdout"])["event"] == "my.ev", rep
    for rep in each_order(agent, "pause", ["a", "--for", "1h"], 1):
        assert rep["paused"] is True and rep["until_ms"] > 0, rep
    for rep in each_order(agent, "resume", ["a"], 1):
        assert rep["paused"] is False, rep

    # check reads no socket: -c CONFIG (or FILE) before or after it
    conf = str(agent.conf)
    for argv in (["-c", conf, "check"], ["check", "-c", conf], ["--config=" + conf, "check"],
                 ["check", conf, "--json"], ["--json", "check", conf]):
        p = ctl(*argv)
        assert p.returncode == 0, (argv, p.returncode, p.stdout, p.stderr)
        assert "%s: configuration OK" % conf in p.stdout, (argv, p.stdout)


def test_global_options_after_the_command_in_table_output(order_agent):
    """Without --json too: the same table whichever side -s is on."""
    agent = order_agent
    s = str(agent.sock)
    first = ctl("-s", s, "handlers")
    assert first.returncode == 0 and "[handler a]" in first.stdout, first
    for argv in (["handlers", "-s", s], ["handlers", "--socket", s]):
        p = ctl(*argv)
        assert (p.returncode, p.stdout) == (0, first.stdout), (argv, p)
    # POSIXLY_CORRECT does not stop the options after the command
    p = ctl("status", "--json", "-s", s,
            env=ddtest.agent_environ({"POSIXLY_CORRECT": "1"}))
    assert p.returncode == 0 and json.loads(p.stdout)["ok"] is True, p
    for argv in (["status", "--help"], ["jobs", "--state", "dead", "-h"]):
        p = ctl(*argv)
        assert p.returncode == 0 and p.stdout.startswith("usage:"), (argv, p)
    p = ctl("ping", "-V")
    assert p.returncode == 0 and p.stdout.startswith("dispatchctl "), p


def test_double_dash_keeps_data_that_looks_like_an_option(dispatchd, handler, workdir):
    agent = dispatchd({"any": {"on": "*", "exec": handler("exit.sh")}})
    s = str(agent.sock)

    def job_of(p):
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
        jid = json.loads(p.stdout)["jobs"][0]["id"]
        rep = json.loads(ctl("-s", s, "--json", "job", jid).stdout)
        return rep["job"]

    # KEY=VALUE whose key begins with '-', even as a global option's name
    job = job_of(ctl("-s", s, "emit", "e", "--delay", "1h", "k=v", "--json", "--",
                     "--json=1", "-s=x", "--not-an-option=2", "-n:=3"))
    assert job["data"] == {"k": "v", "--json": "1", "-s": "x", "--not-an-option": "2",
                           "-n": 3}, job
    # an event name that begins with '-'
    job = job_of(ctl("--json", "emit", "--delay", "1h", "-s", s, "--", "--not-an-option",
                     "x=y"))
    assert job["event"] == "--not-an-option", job
    # a handler name and a config file name that begin with '-'
    p = ctl("-s", s, "run", "--", "-x")
    assert p.returncode == 1 and "not_found" in p.stderr, (p.returncode, p.stderr)
    (workdir / "-x.conf").write_text(agent.conf.read_text())
    p = subprocess.run([str(ddtest.DISPATCHCTL), "check", "--", "-x.conf"], cwd=str(workdir),
                       capture_output=True, text=True, timeout=15, env=ddtest.agent_environ())
    assert p.returncode == 0 and "-x.conf: configuration OK" in p.stdout, p
    # "--" also ends the global options: -s after it is an argument
    p = ctl("-s", s, "ping", "--", "--json")
    assert p.returncode == 64 and "unexpected '--json'" in p.stderr, p


def test_bad_option_placement_exit_64(workdir):
    """A clear message and 64, before anything is sent (the socket does not
    exist, so getting past the parser would be 69)."""
    sock = str(workdir / "no-agent.sock")
    # these end in an option that wants a value: "-s SOCK" after them
    # would be that value
    for args, says in (
            (["jobs", "--limit"], "--limit needs a value"),
            (["emit", "e", "--data"], "--data needs a value"),
            (["status", "-s"], "-s needs a value"),
            (["-c"], "-c needs a value")):
        p = ctl("-s", sock, *args)
        assert p.returncode == 64, (args, p.returncode, p.stdout, p.stderr)
        assert says in p.stderr and "usage: dispatchctl" in p.stderr, (args, p.stderr)
    for args, says in (
            (["--state", "dead", "jobs"], "after the command"),
            (["--dead", "retry"], "after the command"),
            (["-n", "5", "results"], "after the command"),
            (["status", "--state", "dead"], "status takes no --state"),
            (["ping", "--handler", "h"], "ping takes no --handler"),
            (["emit", "e", "--limit", "3"], "emit takes no --limit"),
            (["results", "--follow", "--dead"], "results takes no --dead"),
            (["cancel", "--dead"], "cancel takes no --dead"),
            (["status", "--json=yes"], "--json takes no value"),
            (["jobs", "-state", "dead"], "two dashes"),
            (["retry", "-handler", "h", "--dead"], "two dashes"),
            (["status", "-json"], "two dashes"),
            (["retry", "--d"], "ambiguous"),
            (["status", "--frob"], "unknown option '--frob'"),
            (["emit", "e", "-x=1"], '"--"'),
            (["emit", "-weird.event"], '"--"'),
            (["run", "-dash"], '"--"'),
            (["emit", "e", "--data", "{}", "--data", "{}"], "given twice"),
            (["job", "a", "b"], "unexpected 'b'"),
            (["run"], "missing HANDLER"),
            (["--json"], "usage:"),
            (["--json", "--", "frob"], "unknown command 'frob'")):
        for argv in (["-s", sock] + args, args + ["-s", sock]):
            if argv[-2:] == ["-s", sock] and "--" in args:
                continue        # -s after "--" would be an argument
            p = ctl(*argv)
            assert p.returncode == 64, (argv, p.returncode, p.stdout, p.stderr)
            assert says in p.stderr, (argv, says, p.stderr)
            assert "usage: dispatchctl" in p.stderr, (argv, p.stderr)
    # after "--", an option's name is an argument, and not KEY=VALUE
    p = ctl("-s", sock, "emit", "e", "--", "--data", "{}")
    assert p.returncode == 64 and "unexpected '--data'" in p.stderr, p


# the commands the tests above run in every order
ORDER_TESTED = {"emit", "ping", "status", "jobs", "job", "cancel", "retry", "purge",
                "results", "handlers", "check", "run", "metrics", "pause", "resume"}


def test_every_command_is_tested_in_every_order():
    p = ctl("--help")
    assert p.returncode == 0, p
    listed = p.stdout.split("commands:\n")[1].split("\n\n")[0]
    names = {l.split()[0] for l in listed.splitlines() if l.startswith("  ") and
             not l.startswith("   ")}
    assert names == ORDER_TESTED, names ^ ORDER_TESTED


COMPLETION = ddtest.TOP / "packaging" / "completion" / "dispatchctl"


def complete(words, cword=None, path=None):
    """What the bash completion offers for words (cursor on words[cword],
    default the last), in plain bash without the bash-completion package."""
    cword = len(words) - 1 if cword is None else cword
    script = (". %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_dispatchctl\nprintf '%%s\\n' "
              "\"${COMPREPLY[@]}\"\n" % (COMPLETION, " ".join("'%s'" % w for w in words),
                                          cword))
    env = ddtest.agent_environ()
    if path:
        env["PATH"] = "%s:%s" % (path, env["PATH"])
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                       text=True, timeout=15, env=env)
    assert p.returncode == 0, p
    return set(p.stdout.split())


def test_bash_completion_offers_global_options_after_the_command(dispatchd, handler):
    agent = dispatchd({"invoice": {"on": "e", "exec": handler("exit.sh")},
                       "sms": {"on": "e", "exec": handler("exit.sh")}})
    s = str(agent.sock)
    assert {"status", "emit"} <= complete(["dispatchctl", ""])
    assert complete(["dispatchctl", "--j"]) == {"--json"}
    assert complete(["dispatchctl", "status", "--j"]) == {"--json"}
    assert complete(["dispatchctl", "jobs", "--state", "dead", "--"]) >= \
        {"--handler", "--limit", "--json", "--socket", "--config"}
    assert complete(["dispatchctl", "results", "-n", "5", "-"]) >= {"-s", "-c", "--follow"}
    assert complete(["dispatchctl", "jobs", "--json", "--state", "d"]) == {"dead", "delayed"}
    assert complete(["dispatchctl", "emit", "e", "--", "--"]) == set()
    # handler names from the agent that -s names, wherever -s is
    bindir = ddtest.DISPATCHCTL.parent
    assert complete(["dispatchctl", "pause", "x", "--"]) >= {"--for", "--json"}
    for words, cword in ((["dispatchctl", "run", "-s", s, ""], None),
                         (["dispatchctl", "pause", "-s", s, ""], None),
                         (["dispatchctl", "--json", "-s", s, "run", ""], None),
                         (["dispatchctl", "jobs", "--handler", "", "-s", s], 3)):
        assert complete(words, cword, path=bindir) == {"invoice", "sms"}, words
