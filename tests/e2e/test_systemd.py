"""systemd integration without systemd: sd_notify datagrams to a socket the
test binds ($NOTIFY_SOCKET), the watchdog, and socket activation
($LISTEN_FDS/$LISTEN_PID with the listening socket at fd 3)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import admin_util as au
from harness import ddtest
from harness.ddtest import stays, wait_for


@pytest.fixture
def notify(workdir):
    ns = au.NotifySocket(workdir / "notify.sock")
    yield ns
    ns.close()


def test_ready_reload_stopping(dispatchd, notify):
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
                      env={"NOTIFY_SOCKET": notify.path}, start=False)
    agent.spawn()
    i_ready = notify.wait("READY=1")
    # READY=1 means the socket answers and Redis is connected
    rep = agent.ping()
    assert rep["ok"] is True and rep["redis"] is True, rep
    assert notify.assignments().count("READY=1") == 1
    assert "RELOADING=1" not in notify.assignments()

    os.kill(agent.pid, signal.SIGHUP)
    i_rel = notify.wait("RELOADING=1", after=i_ready + 1)
    i_ready2 = notify.wait("READY=1", after=i_rel + 1)
    au.log_has(agent, r"reload: .*%s" % agent.conf.name)
    assert agent.ping()["ok"] is True

    # a failed reload still says READY=1 again (old config in force)
    with open(str(agent.conf), "a") as f:
        f.write("\n[handler b]\nbogus = 1\n")
    os.kill(agent.pid, signal.SIGHUP)
    i_rel2 = notify.wait("RELOADING=1", after=i_ready2 + 1)
    i_ready3 = notify.wait("READY=1", after=i_rel2 + 1)
    assert agent.ping()["ok"] is True

    os.kill(agent.pid, signal.SIGTERM)
    notify.wait("STOPPING=1", after=i_ready3 + 1)
    assert agent.proc.wait(10) == 0
    msgs = notify.assignments()
    statuses = [m for m in msgs if m.startswith("STATUS=")]
    assert all(len(s) > len("STATUS=") for s in statuses), statuses
    assert "WATCHDOG=1" not in msgs, "no watchdog without WATCHDOG_USEC"


def test_status_line_mentions_jobs(dispatchd, notify):
    dispatchd({"a": {"on": "e", "exec": "/bin/true"}}, env={"NOTIFY_SOCKET": notify.path})
    notify.wait("READY=1")
    st = wait_for(lambda: [m for m in notify.assignments() if m.startswith("STATUS=")],
                  8, what="a STATUS= line")
    assert re.search(r"\d", st[-1]), st


def test_not_ready_before_redis(dispatchd, notify, redis_server):
    """READY=1 waits for Redis (at least for the first seconds)."""
    redis_server.stop()
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
                      env={"NOTIFY_SOCKET": notify.path}, start=False)
    agent.spawn()
    wait_for(lambda: agent.sock.exists(), 10, what="the socket")
    assert stays(lambda: "READY=1" not in notify.assignments() and agent.alive(), 1.5), \
        notify.assignments()
    redis_server.start()
    notify.wait("READY=1", timeout=10)
    assert agent.ping()["redis"] is True


def test_watchdog(dispatchd, notify):
    dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
              env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "500000"})
    notify.wait("READY=1")
    t0 = time.monotonic()
    base = notify.assignments().count("WATCHDOG=1")
    wait_for(lambda: notify.assignments().count("WATCHDOG=1") >= base + 4, 5,
             what="4 more WATCHDOG=1 (every 0.25 s)")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.5, ("watchdog too slow for WATCHDOG_USEC=500000", elapsed)


def test_watchdog_for_another_pid_is_ignored(dispatchd, notify):
    dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
              env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000",
                   "WATCHDOG_PID": "1"})
    notify.wait("READY=1")
    assert stays(lambda: "WATCHDOG=1" not in notify.assignments(), 0.8), notify.assignments()


def test_handlers_do_not_inherit_notify_env(dispatchd, notify, workdir):
    d = au.script_dir(workdir)
    prog = au.write_script(d, "env.sh", "#!/bin/sh\ncat >/dev/null\nenv\n")
    agent = dispatchd({"a": {"on": "e", "exec": prog}},
                      env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "10000000"})
    jid = agent.emit("e")["jobs"][0]["id"]
    out = agent.wait_final(jid)[-1]["stdout"]
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID"):
        assert name not in out, out


# ------------------------------------------------------- socket activation ----

WRAPPER = r"""
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)          # inheritable
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.execv("/bin/sh", ["/bin/sh", "-c", 'LISTEN_PID=${FORCE_LISTEN_PID:-$$} exec "$0" -c "$1"',
                     sys.argv[2], sys.argv[3]])
"""


class ActivatedAgent:
    """dispatchd started the way systemd's socket activation does it."""

    def __init__(self, agent, listen_path, force_pid=None):
        self.agent = agent
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(str(listen_path))
        self.lsock.listen(16)
        self.ino = os.stat(str(listen_path)).st_ino
        env = dict(agent.env)
        if force_pid is not None:
            env["FORCE_LISTEN_PID"] = str(force_pid)
        self.err = open(str(agent.stderr_path), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, str(self.lsock.fileno()), str(ddtest.DISPATCHD),
             str(agent.conf)], pass_fds=(self.lsock.fileno(),), env=env,
            stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err, cwd=str(agent.dir))

    def stop(self):
        if self.proc.poll() is None or not self.err.closed:
            au.terminate(self.proc, timeout=15)
        if not self.err.closed:
            self.err.close()
            self.lsock.close()
        return self.proc.returncode


@pytest.fixture
def activated(request):
    started = []

    def start(*a, **kw):
        x = ActivatedAgent(*a, **kw)
        started.append(x)
        return x
    yield start
    rcs = [x.stop() for x in started]
    assert all(rc == 0 for rc in rcs), rcs


def ping_at(path, timeout=10):
    def ok():
        try:
            return ddtest.request(path, {"op": "ping"}, timeout=2)
        except OSError:
            return None
    return wait_for(ok, timeout, what="ping on %s" % path)


def test_socket_activation(dispatchd, activated, workdir):
    d = au.script_dir(workdir)
    probe = au.write_script(d, "fds.py", "#!/usr/bin/python3\nimport os,sys,json\n"
                            "sys.stdin.read()\nprint(json.dumps(sorted(int(x) for x in "
                            "os.listdir('/proc/self/fd'))))\n")
    listen_path = workdir / "act.sock"
    agent = dispatchd({"a": {"on": "e", "exec": probe}},
                      agent_opts={"socket": str(listen_path)}, start=False)
    x = activated(agent, listen_path)
    rep = ping_at(listen_path)
    assert rep["ok"] is True, rep
    wait_for(lambda: ddtest.request(listen_path, {"op": "ping"})["redis"], 10, what="redis up")
    # the very socket we bound, not a new one at the same path
    assert os.stat(str(listen_path)).st_ino == x.ino
    au.log_has(agent, r"socket passed by systemd")
    # fd 3 is close-on-exec: handlers do not get the listening socket
    rep = ddtest.request(listen_path, {"op": "emit", "event": "e"})
    assert rep["ok"] is True, rep
    r = agent.wait_final(rep["jobs"][0]["id"])[-1]
    fds = json.loads(r["stdout"])
    assert fds[:3] == [0, 1, 2] and len(fds) <= 4, fds
    # dispatchctl reaches it through the path
    p = au.ctl_ok("-s", listen_path, "status")
    assert "HANDLER" in p.stdout
    # the service manager owns the socket file: it stays after the agent exits
    assert x.stop() == 0
    assert listen_path.exists() and os.stat(str(listen_path)).st_ino == x.ino


def test_socket_activation_for_another_pid_is_ignored(dispatchd, activated, workdir):
    """LISTEN_PID not ours: the agent binds its own socket from the config."""
    listen_path = workdir / "act.sock"
    own = workdir / "own.sock"
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
                      agent_opts={"socket": str(own)}, start=False)
    activated(agent, listen_path, force_pid=1)
    rep = ping_at(own)
    assert rep["ok"] is True
    assert "socket passed by systemd" not in agent.stderr()

