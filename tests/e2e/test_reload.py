"""SIGHUP reloads the configuration: a valid change is swapped in (new
handlers get events, removed handlers' queues are no longer fetched,
running jobs keep the settings they started with); an invalid one is
refused with file:line and the old one stays; keys that need a restart are
kept, with a warning."""

import os
import re
import shutil
import signal

import pytest

import admin_util as au
from harness import ddtest
from harness.ddtest import stays, wait_for

BLOCK_SH = """#!/bin/sh
cat >/dev/null
while [ ! -e "$1" ]; do sleep 0.02; done
exit 0
"""


@pytest.fixture
def release(workdir, dispatchd):
    path = workdir / "release"
    yield path
    path.touch()


def agent_section(agent):
    text = agent.conf.read_text()
    return text.split("\n[handler ", 1)[0].split("\n[access]", 1)[0].rstrip("\n") + "\n"


def rewrite(agent, handlers, agent_changes=None, tail=""):
    """Write a new config: the same [agent] section (with agent_changes
    applied), the given handlers, then tail.  Returns the text."""
    sect = agent_section(agent)
    for k, v in (agent_changes or {}).items():
        new, n = re.subn(r"(?m)^%s = .*$" % re.escape(k), "%s = %s" % (k, v), sect)
        sect = new if n else sect + "%s = %s\n" % (k, v)
    body = ddtest.render_config({}, handlers).split("\n", 1)[1]
    text = sect + body + tail
    tmp = agent.conf.with_name(agent.conf.name + ".tmp")
    tmp.write_text(text)
    os.rename(str(tmp), str(agent.conf))
    return text


def hup(agent, ok=True):
    """SIGHUP; wait for the reload's log line; return it."""
    before = len(re.findall(r"(?m)^<\d>reload: ", agent.stderr()))
    os.kill(agent.pid, signal.SIGHUP)
    wait_for(lambda: len(re.findall(r"(?m)^<\d>reload: ", agent.stderr())) > before, 10,
             what="a reload log line")
    lines = [l for l in agent.stderr().splitlines() if re.match(r"^<\d>reload: ", l)]
    return lines[-1]


def emit_job(agent, event, **kw):
    rep = agent.emit(event, **kw)
    assert len(rep["jobs"]) == 1, rep
    return rep["jobs"][0]["id"]


def running(agent, jid):
    return agent.redis.client().hget(agent.key("job:%s" % jid), "state") == b"running"


def test_valid_reload(dispatchd, workdir, release):
    d = au.script_dir(workdir)
    block = au.write_script(d, "block.sh", BLOCK_SH)
    v1 = {
        "slow": {"on": "e.slow", "exec": "%s %s" % (block, release), "timeout": "1500ms",
                 "attempts": 1},
        "old": {"on": "e.old", "exec": "/bin/true"},
    }
    agent = dispatchd(v1)
    j_old_timeout = emit_job(agent, "e.slow")
    wait_for(lambda: running(agent, j_old_timeout), 5, what="the first slow job to run")
    waiting = emit_job(agent, "e.old", delay=1.0)  # due after the reload

    v2 = {
        "slow": {"on": "e.slow", "exec": "%s %s" % (block, release), "timeout": "1h",
                 "attempts": 1},
        "new": {"on": "e.new, e.old2", "exec": "/bin/true"},
    }
    rewrite(agent, v2)
    line = hup(agent)
    assert re.match(r"^<6>reload: %s: 2 handlers" % re.escape(str(agent.conf)), line), line

    # the new handler gets events
    jid = emit_job(agent, "e.new")
    assert agent.wait_final(jid)[-1]["outcome"] == "done"
    # the removed handler matches nothing any more
    rep = agent.emit("e.old")
    assert rep["jobs"] == [], rep
    # ... and its queue is not fetched: the waiting job becomes ready and stays
    r = agent.redis.client()
    wait_for(lambda: r.llen(agent.key("ready:old")) == 1, 5,
             what="the removed handler's job to be promoted to its ready list")
    assert stays(lambda: r.llen(agent.key("ready:old")) == 1 and
                 not agent.job_results(waiting), 1.0), agent.job_results(waiting)

    # the job running across the reload keeps its 1.5 s timeout
    res = agent.wait_final(j_old_timeout, timeout=8)[-1]
    assert res["timed_out"] == "1", res
    assert 1000 <= int(res["duration_ms"]) < 5000, res

    # a job started after the reload has the new timeout (1 h)
    j_new = emit_job(agent, "e.slow")
    wait_for(lambda: running(agent, j_new), 5, what="the second slow job to run")
    assert stays(lambda: running(agent, j_new), 2.0), agent.job_results(j_new)
    release.touch()
    res = agent.wait_final(j_new)[-1]
    assert res["outcome"] == "done" and res["timed_out"] == "0", res

    p = au.ctl_ok("-s", agent.sock, "--json", "handlers")
    import json
    assert [h["name"] for h in json.loads(p.stdout)["handlers"]] == ["slow", "new"]


def test_running_job_keeps_old_longer_timeout(dispatchd, workdir, release):
    """The other way round: a running job is not cut short by a shorter
    timeout in the new configuration."""
    d = au.script_dir(workdir)
    block = au.write_script(d, "block.sh", BLOCK_SH)
    agent = dispatchd({"slow": {"on": "e", "exec": "%s %s" % (block, release),
                                "timeout": "1h", "attempts": 1}})
    jid = emit_job(agent, "e")
    wait_for(lambda: running(agent, jid), 5, what="job running")
    rewrite(agent, {"slow": {"on": "e", "exec": "%s %s" % (block, release),
                             "timeout": "300ms", "attempts": 1}})
    hup(agent)
    assert stays(lambda: running(agent, jid), 1.5), agent.job_results(jid)
    release.touch()
    res = agent.wait_final(jid)[-1]
    assert res["outcome"] == "done" and res["timed_out"] == "0", res


def test_invalid_reload_keeps_old_config(dispatchd, workdir):
    agent = dispatchd({"a": {"on": "e.a", "exec": "/bin/true"}})
    good_text = agent.conf.read_text()
    text = rewrite(agent, {"a": {"on": "e.a", "exec": "/bin/true"},
                           "b": {"on": "e.b", "exec": "/bin/true", "timeout": "whenever"}})
    bad_line = text.splitlines().index("timeout = whenever") + 1
    line = hup(agent)
    assert re.match(r"^<3>reload: %s:%d: .*keeping the configuration in force"
                    % (re.escape(str(agent.conf)), bad_line), line), line
    assert agent.alive()
    assert agent.emit("e.b")["jobs"] == [], "the bad config was not applied"
    jid = emit_job(agent, "e.a")
    assert agent.wait_final(jid)[-1]["outcome"] == "done"

    # a program that someone else could replace is refused on reload too
    wd = au.script_dir(workdir, "wwbin")
    os.chmod(str(wd), 0o777)
    prog = au.write_script(wd, "p.sh", "#!/bin/sh\nexit 0\n")
    text = rewrite(agent, {"a": {"on": "e.a", "exec": "/bin/true"},
                           "c": {"on": "e.c", "exec": prog}})
    exec_line = text.splitlines().index("exec = %s" % prog) + 1
    line = hup(agent)
    assert re.match(r"^<3>reload: %s:%d: .*exec" % (re.escape(str(agent.conf)), exec_line),
                    line), line
    assert agent.emit("e.c")["jobs"] == []

    # a missing file is an error too, not a crash
    shutil.move(str(agent.conf), str(agent.conf) + ".away")
    line = hup(agent)
    assert line.startswith("<3>reload: ") and "keeping" in line, line
    shutil.move(str(agent.conf) + ".away", str(agent.conf))
    assert agent.ping()["ok"] is True

    # and a good one after all that is taken
    agent.conf.write_text(good_text.replace("on = e.a", "on = e.a, e.z"))
    line = hup(agent)
    assert line.startswith("<6>reload: "), line
    assert len(agent.emit("e.z")["jobs"]) == 1


def test_socket_change_needs_restart(dispatchd, workdir):
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}})
    other = workdir / "other.sock"
    rewrite(agent, {"a": {"on": "e, e2", "exec": "/bin/true"}},
            agent_changes={"socket": str(other), "namespace": "elsewhere"})
    line = hup(agent)
    assert line.startswith("<6>reload: "), line
    log = agent.stderr()
    assert re.search(r"(?m)^<4>reload: .*socket.*restart", log), log
    assert re.search(r"(?m)^<4>reload: .*namespace.*restart", log), log
    assert not other.exists()
    assert agent.sock.exists() and agent.ping()["ok"] is True
    # the rest of the change is in force, in the old namespace
    jid = emit_job(agent, "e2")
    assert agent.wait_final(jid)[-1]["outcome"] == "done"
    assert not agent.redis.client().keys("{elsewhere}:*")


def test_reload_access_rules(dispatchd, workdir):
    """[access] changes take effect on reload."""
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
                      agent_opts={"socket_mode": "0666"}, start=False)
    au.open_up(agent.dir)
    agent.start()
    p = au.ctl("-s", agent.sock, "emit", "e", as_nobody=True)
    assert p.returncode == 1 and "denied" in p.stderr, (p.returncode, p.stderr)
    rewrite(agent, {"a": {"on": "e", "exec": "/bin/true"}},
            tail="\n[access]\nemit = nobody:e\n")
    assert hup(agent).startswith("<6>reload: ")
    p = au.ctl("-s", agent.sock, "emit", "e", as_nobody=True)
    assert p.returncode == 0, (p.returncode, p.stderr)


def test_socket_group_change_needs_restart(dispatchd, workdir):
    """socket_group names who may emit as well as the socket's group; a
    reload cannot regroup the socket, so it keeps both, with a warning:
    nogroup's members stay denied until a restart."""
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
                      agent_opts={"socket_mode": "0666"}, start=False)
    au.open_up(agent.dir)
    agent.start()
    rewrite(agent, {"a": {"on": "e", "exec": "/bin/true"}},
            agent_changes={"socket_group": "nogroup"})
    assert hup(agent).startswith("<6>reload: ")
    assert re.search(r"(?m)^<4>reload: .*socket_group.*restart", agent.stderr())
    p = au.ctl("-s", agent.sock, "emit", "e", as_nobody=True)
    assert p.returncode == 1 and "denied" in p.stderr, (p.returncode, p.stderr)


def test_reload_removing_a_running_handler(dispatchd, workdir, release):
    """A handler removed while its job runs: the job finishes and is
    recorded, the agent lives on, metrics still parse."""
    d = au.script_dir(workdir)
    block = au.write_script(d, "block.sh", BLOCK_SH)
    agent = dispatchd({"gone": {"on": "e.gone", "exec": "%s %s" % (block, release)},
                       "stay": {"on": "e.stay", "exec": "/bin/true"}})
    jid = emit_job(agent, "e.gone")
    wait_for(lambda: running(agent, jid), 5, what="job running")
    rewrite(agent, {"stay": {"on": "e.stay", "exec": "/bin/true"}})
    assert hup(agent).startswith("<6>reload: ")
    release.touch()
    res = agent.wait_final(jid)[-1]
    assert res["outcome"] == "done" and res["handler"] == "gone", res
    assert agent.alive() and agent.ping()["ok"] is True
    fams = au.parse_prometheus(au.ctl_ok("-s", agent.sock, "metrics").stdout)
    assert au.sample(fams, "dispatchd_running_jobs") == 0
    p = au.ctl_ok("-s", agent.sock, "status")
    assert "stay" in p.stdout
    j2 = emit_job(agent, "e.stay")
    assert agent.wait_final(j2)[-1]["outcome"] == "done"
