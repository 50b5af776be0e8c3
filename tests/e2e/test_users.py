"""Handlers run as another user, with a clean process state: uid/gid/groups,
no inherited fds, no ignored or blocked signals, the documented
environment only, rlimits, payloads never seen by a shell, and the
ownership check on handler programs when the agent runs as root."""

import json
import os
import pwd
import re
from pathlib import Path

import pytest

import admin_util as au
from harness import ddtest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")

PROBE_SH = """#!/bin/sh
# identity and signal state; grep is exec'd so it shows what sh inherited
cat >/dev/null
echo "id_u=$(id -u)"
echo "id_g=$(id -g)"
echo "id_G=$(id -G)"
echo "ulimit_n=$(ulimit -n)"
exec grep -E '^(Uid|Gid|Groups|SigIgn|SigBlk):' /proc/self/status
"""

PROBE_PY = """#!/usr/bin/python3
# fds, exact environment, argv, stdin, rlimits -> JSON on stdout
import json, os, resource, sys
stdin = sys.stdin.buffer.read()
listing = sorted(int(x) for x in os.listdir("/proc/self/fd"))
links = {}
for fd in listing:
    try:
        links[fd] = os.readlink("/proc/self/fd/%d" % fd)
    except OSError as e:
        links[fd] = "ERR:%s" % e.errno
with open("/proc/self/environ", "rb") as f:
    environ = [e.decode() for e in f.read().split(b"\\0") if e]
out = {
    "fds": listing, "links": links, "environ": environ, "argv": sys.argv,
    "stdin_len": len(stdin), "uid": os.getuid(), "gid": os.getgid(),
    "euid": os.geteuid(), "egid": os.getegid(), "groups": os.getgroups(),
    "cwd": os.getcwd(),
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
    "as": resource.getrlimit(resource.RLIMIT_AS),
    "cpu": resource.getrlimit(resource.RLIMIT_CPU),
}
if os.environ.get("SAVE_STDIN"):
    with open(os.environ["SAVE_STDIN"], "wb") as f:
        f.write(stdin)
print(json.dumps(out))
"""


@pytest.fixture
def bindir(workdir):
    return au.script_dir(workdir)


def stdout_of(agent, event, data=None, **kw):
    rep = agent.emit(event, data, **kw)
    assert len(rep["jobs"]) == 1, rep
    r = agent.wait_final(rep["jobs"][0]["id"])[-1]
    assert r["outcome"] == "done", r
    return r["stdout"], rep["jobs"][0]["id"]


def test_nobody_identity_and_signal_state(dispatchd, bindir):
    probe = au.write_script(bindir, "probe.sh", PROBE_SH)
    agent = dispatchd({"h": {"on": "e", "exec": probe, "user": "nobody"}})
    out, _ = stdout_of(agent, "e")
    kv = dict(l.split("=", 1) for l in out.splitlines() if "=" in l and ":" not in l.split("=")[0])
    assert kv["id_u"] == "65534" and kv["id_g"] == "65534", out
    assert kv["id_G"].split() == ["65534"], out
    st = dict(l.split(":", 1) for l in out.splitlines() if ":" in l)
    assert st["Uid"].split() == ["65534"] * 4, out
    assert st["Gid"].split() == ["65534"] * 4, out
    assert st["Groups"].split() == ["65534"], out
    assert int(st["SigIgn"].strip(), 16) == 0, out
    assert int(st["SigBlk"].strip(), 16) == 0, out


def test_user_and_group_keys(dispatchd, bindir):
    """group = overrides the user's primary group; [agent] user is the default."""
    probe = au.write_script(bindir, "probe.sh", PROBE_SH)
    agent = dispatchd({
        "g": {"on": "g", "exec": probe, "user": "nobody", "group": "daemon"},
        "d": {"on": "d", "exec": probe},
    }, agent_opts={"user": "nobody"})
    daemon_gid = str(__import__("grp").getgrnam("daemon").gr_gid)
    out, _ = stdout_of(agent, "g")
    assert "id_u=65534" in out and "id_g=%s" % daemon_gid in out, out
    out, _ = stdout_of(agent, "d")
    assert "id_u=65534" in out and "id_g=65534" in out, out


def test_no_fds_env_exact_rlimits(dispatchd, bindir, workdir):
    probe = au.write_script(bindir, "probe.py", PROBE_PY)
    agent = dispatchd({"h": {
        "on": "e.*", "exec": probe, "user": "nobody", "workdir": str(bindir),
        "env": ["EXTRA_ONE=1", "EXTRA_TWO=two words"],
        "limit_nofile": 16, "limit_cpu": "7s", "limit_as": "1g", "limit_nproc": 500,
    }})
    out, jid = stdout_of(agent, "e.x", {"a": 1})
    got = json.loads(out)
    assert got["uid"] == got["euid"] == 65534 and got["gid"] == got["egid"] == 65534, got
    assert got["groups"] == [65534], got

    # fds: 0, 1, 2 and the one os.listdir used (gone by the time of readlink)
    extra = [fd for fd in got["fds"] if fd > 2]
    assert got["fds"][:3] == [0, 1, 2], got["links"]
    assert len(extra) <= 1, ("inherited fds", got["links"])
    for fd in extra:
        link = got["links"][str(fd)]
        assert link.startswith("ERR:") or \
            re.match(r"^/proc/\d+/fd$", link), ("inherited fd", got["links"])

    env = dict(e.split("=", 1) for e in got["environ"])
    assert len(env) == len(got["environ"]), got["environ"]
    want = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": pwd.getpwnam("nobody").pw_dir,
        "LANG": "C.UTF-8",
        "DISPATCH_JOB_ID": jid,
        "DISPATCH_EVENT": "e.x",
        "DISPATCH_HANDLER": "h",
        "DISPATCH_ATTEMPT": "1",
        "DISPATCH_MAX_ATTEMPTS": "5",
        "EXTRA_ONE": "1",
        "EXTRA_TWO": "two words",
    }
    assert set(env) == set(want) | {"DISPATCH_EVENT_ID"}, sorted(env)
    for k, v in want.items():
        assert env[k] == v, (k, env[k], v)
    assert env["DISPATCH_EVENT_ID"] == agent.job_results(jid)[-1]["event_id"]
    assert ddtest.SECRET_NAME not in env

    assert got["cwd"] == str(bindir)
    assert tuple(got["nofile"]) == (16, 16), got["nofile"]
    assert got["cpu"][0] == 7, got["cpu"]
    assert got["as"][0] == 1 << 30, got["as"]
    assert got["nproc"][0] == 500, got["nproc"]


def test_limit_nofile_seen_by_shell(dispatchd, bindir):
    probe = au.write_script(bindir, "probe.sh", PROBE_SH)
    agent = dispatchd({"h": {"on": "e", "exec": probe, "user": "nobody", "limit_nofile": 16}})
    out, _ = stdout_of(agent, "e")
    assert "ulimit_n=16" in out.splitlines(), out


def test_dispatchctl_run_uses_the_same_identity(dispatchd, bindir):
    """run HANDLER runs as the handler's user too."""
    probe = au.write_script(bindir, "probe.sh", PROBE_SH)
    agent = dispatchd({"h": {"on": "e", "exec": probe, "user": "nobody"}})
    p, rep = au.ctl_json(agent.sock, "run", "h")
    assert p.returncode == 0 and rep["outcome"] == "done", rep
    assert "id_u=65534" in rep["stdout"] and "id_g=65534" in rep["stdout"], rep
    assert re.search(r"^SigIgn:\s*0+$", rep["stdout"], re.M), rep["stdout"]


def test_shell_metacharacters_never_reach_a_shell(dispatchd, bindir, workdir):
    probe = au.write_script(bindir, "probe.py", PROBE_PY)
    outdir = workdir / "out"
    outdir.mkdir()
    os.chown(str(outdir), au.NOBODY_UID, au.NOBODY_GID)
    au.open_up(outdir)
    saved = outdir / "stdin.bin"
    pwned = workdir / "PWNED"          # nobody may not write here: root-owned 0755
    pwned2 = outdir / "PWNED"          # ... but may write here
    evil = []
    for target in (pwned, pwned2):
        evil += ["$(touch %s)" % target, "`touch %s`" % target, "; touch %s" % target,
                 "| touch %s" % target, "&& touch %s" % target, "\ntouch %s\n" % target,
                 "'; touch %s; '" % target, '"; touch %s; "' % target, "${IFS}touch${IFS}%s" % target]
    meta = "".join(evil) + " \\ * ? [a-z] ~ # ! % < > >> 2>&1 {a,b} \t \r \x01 \u00e9 \U0001F600"
    data = {"meta": meta, "list": evil, "big": ("A$(x)`y`;|\n\"'" * 80000)[:1 << 20]}
    args_conf = "'$(touch %s)' 'a;b|c' \"`touch %s`\" \"two words\"" % (pwned2, pwned2)
    agent = dispatchd({"h": {"on": "e", "exec": "%s %s" % (probe, args_conf),
                             "user": "nobody", "workdir": str(outdir),
                             "env": "SAVE_STDIN=%s" % saved}},
                      agent_opts={"max_message": "4m"})
    rep = agent.request({"op": "emit", "event": "e", "data": data}, timeout=20)
    assert rep.get("ok") is True, {k: v for k, v in rep.items() if k != "data"}
    jid = rep["jobs"][0]["id"]
    r = agent.wait_final(jid, timeout=20)[-1]
    assert r["outcome"] == "done", (r["outcome"], r["stderr"][-2000:])
    got = json.loads(r["stdout"])
    assert got["argv"] == [probe, "$(touch %s)" % pwned2, "a;b|c", "`touch %s`" % pwned2,
                           "two words"], got["argv"]
    raw = saved.read_bytes()
    assert got["stdin_len"] == len(raw)
    job = json.loads(raw.decode("utf-8"))
    assert job["data"] == data, "the handler got different bytes"
    assert job["id"] == jid and job["event"] == "e"
    assert not pwned.exists() and not pwned2.exists(), "a shell ran the payload"
    assert sorted(os.listdir(str(outdir))) == ["stdin.bin"], os.listdir(str(outdir))

    # and through dispatchctl run as well
    p = au.ctl("-s", agent.sock, "--json", "run", "h", "--data", json.dumps({"meta": meta}))
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert json.loads(saved.read_bytes())["data"] == {"meta": meta}
    assert not pwned.exists() and not pwned2.exists(), "a shell ran the payload"


# ------------------------------------------- ownership check under root ----

def check_config(workdir, redis_server, prog, extra=""):
    conf = workdir / ("check-%d.conf" % len(list(workdir.glob("check-*.conf"))))
    text = ("[agent]\nredis = unix:%s\nsocket = %s\n\n[handler h]\non = x\n%sexec = %s\n"
            % (redis_server.sock, workdir / "s.sock", extra, prog))
    conf.write_text(text)
    exec_line = text.splitlines().index("exec = %s" % prog) + 1
    p = ddtest.run([ddtest.DISPATCHD, "-t", "-c", conf])
    return p, conf, exec_line


def assert_refused(p, conf, line, what):
    assert p.returncode == 78, (what, p.returncode, p.stdout, p.stderr)
    assert re.search(r"^%s:%d: .*exec" % (re.escape(str(conf)), line), p.stderr, re.M), \
        (what, p.stderr)


def test_root_agent_refuses_replaceable_programs(workdir, redis_server):
    base = Path(workdir)
    au.open_up(base)

    ok_dir = base / "okdir"
    ok_dir.mkdir(mode=0o755)
    os.chmod(str(ok_dir), 0o755)
    good = au.write_script(ok_dir, "good.sh", "#!/bin/sh\nexit 0\n", 0o755)
    p, conf, line = check_config(workdir, redis_server, good)
    assert p.returncode == 0, (p.returncode, p.stderr)
    p, conf, line = check_config(workdir, redis_server, good, "user = nobody\n")
    assert p.returncode == 0, (p.returncode, p.stderr)

    # the program itself is world-writable
    ww = au.write_script(ok_dir, "ww.sh", "#!/bin/sh\nexit 0\n", 0o757)
    os.chmod(ww, 0o757)
    p, conf, line = check_config(workdir, redis_server, ww)
    assert_refused(p, conf, line, "world-writable program")
    p2 = au.ctl("check", conf)
    assert p2.returncode == 78 and p2.stderr.strip() == p.stderr.strip(), (p2.returncode, p2.stderr)

    # a world-writable, non-sticky directory above it
    wwdir = base / "wwdir"
    wwdir.mkdir()
    os.chmod(str(wwdir), 0o777)
    inside = au.write_script(wwdir, "prog.sh", "#!/bin/sh\nexit 0\n", 0o755)
    p, conf, line = check_config(workdir, redis_server, inside)
    assert_refused(p, conf, line, "world-writable directory")
    # ... two levels up
    sub = wwdir / "sub"
    sub.mkdir(mode=0o755)
    os.chmod(str(sub), 0o755)
    deep = au.write_script(sub, "prog.sh", "#!/bin/sh\nexit 0\n", 0o755)
    p, conf, line = check_config(workdir, redis_server, deep)
    assert_refused(p, conf, line, "world-writable grandparent directory")

    # the same directory with the sticky bit protects root's file
    os.chmod(str(wwdir), 0o1777)
    p, conf, line = check_config(workdir, redis_server, inside)
    assert p.returncode == 0, ("sticky dir", p.returncode, p.stderr)

    # owned by another user than root or the handler's user
    other = au.write_script(ok_dir, "nobodys.sh", "#!/bin/sh\nexit 0\n", 0o755)
    os.chown(other, au.NOBODY_UID, au.NOBODY_GID)
    p, conf, line = check_config(workdir, redis_server, other, "user = daemon\n")
    assert_refused(p, conf, line, "owned by nobody, runs as daemon")
    p, conf, line = check_config(workdir, redis_server, other, "user = nobody\n")
    assert p.returncode == 0, ("owned by the handler's user", p.returncode, p.stderr)

    # a symlink is judged by its target
    link = ok_dir / "link.sh"
    os.symlink(ww, str(link))
    p, conf, line = check_config(workdir, redis_server, str(link))
    assert_refused(p, conf, line, "symlink to a world-writable program")


def test_root_agent_refuses_at_startup(dispatchd, workdir):
    """Not only -t: the agent itself will not start with such a handler."""
    d = au.script_dir(workdir, "wwbin")
    prog = au.write_script(d, "p.sh", "#!/bin/sh\nexit 0\n", 0o757)
    os.chmod(prog, 0o757)
    agent = dispatchd({"h": {"on": "e", "exec": prog}}, start=False)
    agent.spawn()
    rc = agent.proc.wait(10)
    agent.expect_rc = 78
    assert rc == 78, (rc, agent.stderr())
    assert re.search(r"%s:\d+: .*exec" % re.escape(str(agent.conf)), agent.stderr()), agent.stderr()


def test_root_agent_warns_when_handlers_run_as_root_implicitly(dispatchd, bindir):
    """Unset, user means the agent's own user (documented in
    dispatchd.conf(5)); a root agent says loudly that its handlers run as
    root, and which."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    probe = au.write_script(bindir, "probe.sh", PROBE_SH)
    agent = dispatchd({"h": {"on": "e", "exec": probe}})
    out, _ = stdout_of(agent, "e")
    assert "id_u=0" in out.splitlines(), out
    assert re.search(r"<4>.*handler h runs as root.*user", agent.stderr()), agent.stderr()


def test_explicit_user_root_runs_as_root(dispatchd, bindir):
    probe = au.write_script(bindir, "probe.sh", PROBE_SH)
    agent = dispatchd({"h": {"on": "e", "exec": probe, "user": "root"}})
    out, _ = stdout_of(agent, "e")
    assert "id_u=0" in out.splitlines(), out


SLEEPER_SH = """#!/bin/sh
# write our pid, then wait: exec keeps the pid, so it is the handler's
echo $$ > "$1"
exec sleep 60
"""


def test_handler_of_another_user_dies_with_its_agent(dispatchd, bindir, workdir):
    """The parent-death signal survives the switch to the handler's user
    (a change of ids clears it, so it is set after): the handler of a
    killed agent does not run on beside the job's next attempt."""
    sleeper = au.write_script(bindir, "sleeper.sh", SLEEPER_SH)
    outdir = workdir / "out"
    outdir.mkdir()
    os.chmod(str(outdir), 0o777)
    pidfile = outdir / "pid"
    agent = dispatchd({"h": {"on": "e", "exec": "%s %s" % (sleeper, pidfile),
                             "user": "nobody"}})
    agent.emit("e")
    pid = int(ddtest.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(),
                              10, what="the handler's pid"))
    with open("/proc/%d/status" % pid) as f:
        assert re.search(r"(?m)^Uid:\s+%d\b" % pwd.getpwnam("nobody").pw_uid, f.read())
    agent.kill9()
    ddtest.wait_for(lambda: not ddtest.pid_alive(pid), 5,
                    what="handler %d to die with its agent" % pid)
