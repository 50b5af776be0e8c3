"""The [access] section: who may emit which events and who may use the
admin ops, decided by the peer's kernel credentials (SO_PEERCRED).  The
unprivileged peer is the real dispatchctl run under
`setpriv --reuid=nobody --regid=nogroup --clear-groups`."""

import json
import shutil

import pytest

import admin_util as au
from admin_util import ctl

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed")


@pytest.fixture
def release(workdir, dispatchd):
    path = workdir / "release"
    yield path
    path.touch()


def start_agent(dispatchd, workdir, handlers, access_lines=None, agent_opts=None):
    """An agent with socket_mode 0666 whose socket nobody can reach; the
    [access] lines (list of "key = value") are appended to its config."""
    opts = {"socket_mode": "0666"}
    opts.update(agent_opts or {})
    agent = dispatchd(handlers, agent_opts=opts, start=False)
    if access_lines is not None:
        with open(str(agent.conf), "a") as f:
            f.write("\n[access]\n" + "".join(l + "\n" for l in access_lines))
    au.open_up(agent.dir)
    agent.start()
    return agent


def as_nobody(agent, *args, **kw):
    p = ctl("-s", agent.sock, "--json", *args, as_nobody=True, **kw)
    rep = json.loads(p.stdout) if p.stdout.strip() else None
    return p, rep


def as_root(agent, *args):
    p = ctl("-s", agent.sock, "--json", *args)
    rep = json.loads(p.stdout) if p.stdout.strip() else None
    return p, rep


def assert_denied(p, rep, what):
    assert p.returncode == 1, (what, p.returncode, p.stdout, p.stderr)
    assert rep is not None and rep.get("ok") is False and rep.get("code") == "denied", (what, rep)


def test_setpriv_really_drops_to_nobody():
    p = au.subprocess.run(au.SETPRIV_NOBODY + ["id"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    assert "uid=65534" in p.stdout and "gid=65534" in p.stdout, p.stdout
    assert "groups=65534" in p.stdout or "groups=" not in p.stdout, p.stdout


def test_defaults_nobody_cannot_emit_root_can(dispatchd, workdir):
    agent = start_agent(dispatchd, workdir, {"a": {"on": "e.*", "exec": "/bin/true"}})
    results_before = len(agent.results())
    p, rep = as_nobody(agent, "emit", "e.x", "k=v")
    assert_denied(p, rep, "default emit by nobody")
    # the table form says so on stderr
    p2 = ctl("-s", agent.sock, "emit", "e.x", as_nobody=True)
    assert p2.returncode == 1 and "denied" in p2.stderr, (p2.returncode, p2.stderr)
    au.log_has(agent, r"denied: uid 65534 ")
    assert agent.ping()["emitted"] == 0
    assert au.ctl_json(agent.sock, "jobs", "--state", "ready")[1]["jobs"] == []

    p, rep = as_root(agent, "emit", "e.x", "k=v")
    assert p.returncode == 0 and rep["ok"] is True and len(rep["jobs"]) == 1, (p, rep)
    agent.wait_final(rep["jobs"][0]["id"])
    assert len(agent.results()) == results_before + 1

    # read-only ops stay open to anyone who can connect
    for args in (["ping"], ["status"], ["jobs"], ["results", "-n", "1"], ["handlers"],
                 ["metrics"]):
        p, rep = as_nobody(agent, *args)
        assert p.returncode == 0 and rep["ok"] is True, (args, p.returncode, p.stderr, rep)

    # admin ops are root's only by default
    jid = agent.emit("e.later", delay=300)["jobs"][0]["id"]
    for args in (["cancel", jid], ["retry", jid], ["retry", "--dead"], ["purge", "--dead"],
                 ["run", "a"], ["pause", "a"], ["resume", "a"]):
        p, rep = as_nobody(agent, *args)
        assert_denied(p, rep, args)
    p, rep = as_root(agent, "cancel", jid)
    assert p.returncode == 0 and rep["count"] == 1, rep


def test_socket_group_member_may_emit_by_default(dispatchd, workdir):
    """socket_group = nogroup: members of the socket's group may emit."""
    agent = start_agent(dispatchd, workdir, {"a": {"on": "e", "exec": "/bin/true"}},
                        agent_opts={"socket_group": "nogroup", "socket_mode": "0660"})
    st = au.os.stat(str(agent.sock))
    assert st.st_gid == au.NOBODY_GID, "socket group owner"
    p, rep = as_nobody(agent, "emit", "e")
    assert p.returncode == 0 and rep["ok"] is True, (p.returncode, p.stderr, rep)
    # still no admin
    p, rep = as_nobody(agent, "purge", "--dead")
    assert_denied(p, rep, "purge by a socket-group member")


@pytest.mark.parametrize("principal", ["nobody", "65534", "@nogroup", "@65534"])
def test_emit_rule_user_uid_group_with_glob(dispatchd, workdir, principal):
    agent = start_agent(dispatchd, workdir,
                        {"a": {"on": "*", "exec": "/bin/true"}},
                        ["emit = root", "emit = %s:allowed.*" % principal])
    p, rep = as_nobody(agent, "emit", "allowed.one")
    assert p.returncode == 0 and rep["ok"] is True and len(rep["jobs"]) == 1, \
        (principal, p.returncode, p.stderr, rep)
    agent.wait_final(rep["jobs"][0]["id"])
    for ev in ("other.one", "allowedx", "xallowed.one"):
        p, rep = as_nobody(agent, "emit", ev)
        assert_denied(p, rep, (principal, ev))
    au.log_has(agent, r"denied: uid 65534 ")
    # root is listed explicitly
    p, rep = as_root(agent, "emit", "other.one")
    assert p.returncode == 0 and rep["ok"] is True, rep


def test_emit_lines_replace_the_default(dispatchd, workdir):
    """With emit lines, only what they list may emit; an unlisted root is
    refused too, and a principal without a glob may emit anything."""
    agent = start_agent(dispatchd, workdir, {"a": {"on": "*", "exec": "/bin/true"}},
                        ["emit = nobody"])
    p, rep = as_nobody(agent, "emit", "anything.at.all")
    assert p.returncode == 0 and rep["ok"] is True, (p.stderr, rep)
    p, rep = as_root(agent, "emit", "anything.at.all")
    assert_denied(p, rep, "root not listed")
    au.log_has(agent, r"denied: uid 0 ")


def test_admin_rules(dispatchd, workdir, release):
    agent = start_agent(dispatchd, workdir, {
        "a": {"on": "e.*", "exec": "/bin/true"},
        "bad": {"on": "bad", "exec": "/bin/false", "attempts": 1},
    }, ["emit = nobody, root", "admin = root"])
    later = agent.emit("e.later", delay=300)["jobs"][0]["id"]
    dead = agent.emit("bad")["jobs"][0]["id"]
    agent.wait_final(dead)
    n_results = len(agent.results())
    for args in (["cancel", later], ["retry", dead], ["retry", "--dead"],
                 ["purge", "--dead"], ["run", "a", "--data", "{}"]):
        p, rep = as_nobody(agent, *args)
        assert_denied(p, rep, args)
    assert len(agent.results()) == n_results, "a denied op changed nothing"
    assert [j["id"] for j in au.ctl_json(agent.sock, "jobs", "--state", "delayed")[1]["jobs"]] == [later]
    au.log_has(agent, r"denied: uid 65534 ")
    # nobody may still emit
    p, rep = as_nobody(agent, "emit", "e.x")
    assert p.returncode == 0, rep
    # root may do all of it
    for args in (["cancel", later], ["retry", dead], ["purge", "--dead"], ["run", "a"]):
        p, rep = as_root(agent, *args)
        assert p.returncode == 0 and rep["ok"] is True, (args, p.returncode, p.stderr, rep)


def test_admin_granted_to_nobody(dispatchd, workdir):
    agent = start_agent(dispatchd, workdir, {"a": {"on": "e", "exec": "/bin/true"}},
                        ["admin = nobody"])
    jid = agent.emit("e", delay=300)["jobs"][0]["id"]
    p, rep = as_nobody(agent, "cancel", jid)
    assert p.returncode == 0 and rep["count"] == 1, (p.stderr, rep)
    p, rep = as_nobody(agent, "run", "a")
    assert p.returncode == 0 and rep["outcome"] == "done", (p.stderr, rep)
    # admin lines replace the default: root is not listed
    p, rep = as_root(agent, "purge", "--dead")
    assert_denied(p, rep, "root not in admin")


def test_bad_access_lines_are_config_errors(workdir, redis_server):
    base = ("[agent]\nredis = unix:%s\nsocket = %s\n\n[handler a]\non = x\nexec = /bin/true\n\n"
            "[access]\n" % (redis_server.sock, workdir / "s.sock"))
    for line in ("emit = no-such-user-xyz", "emit = @no-such-group-xyz", "admin = root:glob.*",
                 "emit = nobody:", "frobnicate = root"):
        conf = workdir / "c.conf"
        conf.write_text(base + line + "\n")
        p = au.subprocess.run([str(au.ddtest.DISPATCHD), "-t", "-c", str(conf)],
                              capture_output=True, text=True, timeout=10)
        assert p.returncode == 78, (line, p.returncode, p.stdout, p.stderr)
        assert "%s:10:" % conf in p.stderr, (line, p.stderr)


def test_denied_counted_in_metrics(dispatchd, workdir):
    agent = start_agent(dispatchd, workdir, {"a": {"on": "e", "exec": "/bin/true"}})
    p, rep = as_nobody(agent, "emit", "e")
    assert_denied(p, rep, "emit")
    fams = au.parse_prometheus(au.ctl_ok("-s", agent.sock, "metrics").stdout)
    assert au.sample(fams, "dispatchd_socket_rejected_total") >= 1


def test_supplementary_group_rule(dispatchd, workdir):
    """@group rules see supplementary groups (SO_PEERGROUPS)."""
    agent = start_agent(dispatchd, workdir, {"a": {"on": "*", "exec": "/bin/true"}},
                        ["emit = @daemon:grp.*"])
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--groups=daemon",
            str(au.ddtest.DISPATCHCTL), "-s", str(agent.sock), "--json", "emit", "grp.x"]
    p = au.subprocess.run(argv, capture_output=True, text=True, timeout=15,
                          env=au.ddtest.agent_environ())
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    # without the supplementary group: denied
    p, rep = as_nobody(agent, "emit", "grp.x")
    assert_denied(p, rep, "no supplementary group")


RAW_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
reqs = [json.loads(a) for a in sys.argv[2:]]
s.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in reqs))
buf = b""
while buf.count(b"\n") < len(reqs):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
print(json.dumps([json.loads(l) for l in buf.split(b"\n") if l]))
"""


def test_no_way_around_emit_rules(dispatchd, workdir):
    """Raw socket as nobody: emit with op omitted, pipelined after a
    permitted one, or with an id/delay is judged the same way."""
    agent = start_agent(dispatchd, workdir, {"a": {"on": "*", "exec": "/bin/true"}},
                        ["emit = nobody:ok.*"])
    reqs = [{"op": "emit", "event": "ok.1"}, {"event": "bad.1"},
            {"op": "emit", "event": "bad.2", "id": "k1", "delay": 1},
            {"event": "ok.2"}, {"op": "ping"}, {"op": "emit", "event": "bad.3", "at": 1}]
    argv = au.SETPRIV_NOBODY + ["/usr/bin/python3", "-c", RAW_CLIENT, str(agent.sock)] + \
        [json.dumps(r) for r in reqs]
    p = au.subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    reps = json.loads(p.stdout)
    assert len(reps) == len(reqs), reps
    assert [r.get("ok") for r in reps] == [True, False, False, True, True, False], reps
    assert [r.get("code") for r in reps if not r["ok"]] == ["denied"] * 3, reps
    assert agent.ping()["emitted"] == 2
    r = agent.redis.client()
    assert not r.exists(agent.key("seen:k1")), "a denied id must not be remembered"
