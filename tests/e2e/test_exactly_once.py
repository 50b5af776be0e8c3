"""Each run is recorded once and every handler process is the agent's to
answer for (issue 9.4): a finish whose reply was lost is sent again
without a second results entry; `dispatchctl run` children are waited
for by a drain and found by a restart; signals reach only the process
they were meant for."""

import json
import os
import select
import signal
import socket
import threading
import time

import pytest

import admin_util as au
from harness import ddtest
from harness.ddtest import pid_alive, stays, wait_for


class ReplyEater:
    """A TCP proxy in front of the private Redis that, once armed, passes
    on the next command containing `marker`, waits for Redis to answer it,
    and then closes the agent's connection without passing the answer on:
    the command ran, and the agent cannot know."""

    def __init__(self, unix_path, marker):
        self.unix_path = str(unix_path)
        self.marker = marker
        self.armed = threading.Event()
        self.eaten = threading.Event()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            r, _, _ = select.select([self.lsock], [], [], 0.1)
            if not r:
                continue
            c, _ = self.lsock.accept()
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.unix_path)
            t = threading.Thread(target=self._pump, args=(c, u), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, c, u):
        try:
            while not self.stopping:
                r, _, _ = select.select([c, u], [], [], 0.1)
                if c in r:
                    data = c.recv(65536)
                    if not data:
                        return
                    u.sendall(data)
                    if self.armed.is_set() and self.marker in data:
                        self.armed.clear()
                        # let Redis run it and answer, then cut the agent off
                        select.select([u], [], [], 5)
                        u.recv(65536)
                        self.eaten.set()
                        return
                if u in r:
                    data = u.recv(65536)
                    if not data:
                        return
                    c.sendall(data)
        except OSError:
            pass
        finally:
            c.close()
            u.close()

    def close(self):
        self.stopping = True
        for t in self.threads:
            t.join(2)
        self.lsock.close()


@pytest.fixture
def eater(redis_server):
    # the finish is the only script whose arguments name "output_bytes"
    p = ReplyEater(redis_server.sock, b"output_bytes")
    yield p
    p.close()


def test_finish_sent_again_is_recorded_once(dispatchd, workdir, eater):
    """The finish runs in Redis, its answer is lost with the connection;
    the agent sends it again on the new one: one results entry, outcome
    done, and nothing marked stale."""
    release = workdir / "go"
    d = au.script_dir(workdir)
    block = au.write_script(d, "wait.sh", "#!/bin/sh\ncat >/dev/null\n"
                            "while [ ! -e \"$1\" ]; do sleep 0.02; done\necho ran\n")
    agent = dispatchd({"w": {"on": "e", "exec": "%s %s" % (block, release)}},
                      agent_opts={"redis": "127.0.0.1:%d" % eater.port})
    jid = agent.emit("e")["jobs"][0]["id"]
    r = agent.redis.client()
    wait_for(lambda: r.hget(agent.key("job:%s" % jid), "state") == b"running", 10,
             what="the job to run")
    eater.armed.set()
    release.touch()
    wait_for(eater.eaten.is_set, 10, what="the finish to be passed on and its reply eaten")
    wait_for(lambda: agent.ping().get("redis") is True, 15, what="the agent back on Redis")
    # the agent has sent it again once its finish queue is empty
    wait_for(lambda: agent.ping()["jobs_finished"] >= 1, 15, what="the finish acknowledged")
    res = agent.job_results(jid)
    assert [x["outcome"] for x in res] == ["done"], res
    assert "stale" not in agent.stderr()
    assert stays(lambda: len(agent.job_results(jid)) == 1, 1.0)


def test_fin_marker_expires(dispatchd, redis_server):
    """The marker that makes a resend harmless is short-lived: two leases."""
    agent = dispatchd({"t": {"on": "e", "exec": "/bin/true"}}, agent_opts={"lease": "2s"})
    jid = agent.emit("e")["jobs"][0]["id"]
    agent.wait_final(jid)
    r = redis_server.client()
    v = r.get(agent.key("fin:%s" % jid))
    assert v is not None and v.split()[:3] == [b"1", b"dt-agent", b"done"], v
    assert 0 < r.pttl(agent.key("fin:%s" % jid)) <= 4000


def pgid_members(pgid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(st[2]) == pgid and st[0] != "Z":
                out.append(int(d))
    return out


# a handler that leaves a child in its process group, and says who is who
FAMILY_SH = r"""#!/bin/sh
cat >/dev/null
sleep 300 </dev/null >/dev/null 2>&1 &
echo "$$ $!" >"$1.tmp" && mv "$1.tmp" "$1"
while [ ! -e "$2" ]; do sleep 0.02; done
"""


def start_run(agent, handler):
    """dispatchctl run HANDLER in the background; returns the Popen."""
    import subprocess
    return subprocess.Popen([str(ddtest.DISPATCHCTL), "-s", str(agent.sock), "--json", "run",
                             handler], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=ddtest.agent_environ())


def family(workdir, agent_opts=None):
    d = au.script_dir(workdir)
    script = au.write_script(d, "family.sh", FAMILY_SH)
    pids, release = workdir / "pids", workdir / "release"
    return {"fam": {"on": "never", "exec": "%s %s %s" % (script, pids, release),
                    "timeout": "1h"}}, pids, release


def read_pids(path):
    wait_for(path.exists, 10, what="the handler to write its pids")
    return [int(x) for x in path.read_text().split()]


def test_drain_waits_for_run(dispatchd, workdir):
    """SIGTERM while a `dispatchctl run` is under way: the agent waits for
    it as for a job, the run gets its answer, then the agent exits 0."""
    hs, pids, release = family(workdir)
    agent = dispatchd(hs)
    p = start_run(agent, "fam")
    leader, _ = read_pids(pids)
    assert agent.ping()["running"] == 1
    agent.proc.send_signal(signal.SIGTERM)
    assert stays(agent.alive, 1.0), "the agent exited with a run under way"
    release.touch()
    out, err = p.communicate(timeout=15)
    assert json.loads(out)["outcome"] == "done", (out, err)
    assert agent.proc.wait(15) == 0


def test_drain_timeout_stops_run(dispatchd, workdir):
    """A run still going at drain_timeout is stopped like a job, and says so."""
    hs, pids, release = family(workdir)
    agent = dispatchd(hs, agent_opts={"drain_timeout": "500ms", "kill_grace": "200ms"})
    p = start_run(agent, "fam")
    leader, child = read_pids(pids)
    agent.proc.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=15)
    rep = json.loads(out)
    assert rep["outcome"] == "stopped", rep
    assert agent.proc.wait(15) == 0
    assert not pgid_members(leader), "the run's group outlived the drain"


def test_restart_finds_run(dispatchd, workdir):
    """A run is in the state file; after a crash, the restarted agent kills
    what the run left in its process group."""
    hs, pids, release = family(workdir)
    agent = dispatchd(hs)
    p = start_run(agent, "fam")
    leader, child = read_pids(pids)
    state = (agent.dir / "dispatchd-dt-agent.state").read_text()
    assert str(leader) in state.split(), state
    agent.kill9()
    p.communicate(timeout=15)
    wait_for(lambda: not pid_alive(leader), 5, what="the run's leader to die with its agent")
    assert pid_alive(child), "nothing was left for the restart to find"
    agent.restart()
    wait_for(lambda: not pid_alive(child), 5, what="the restart to kill the run's child")


def pidfds_of(pid):
    """The pids that pid's pidfds name, from /proc/PID/fdinfo."""
    out = []
    for fd in os.listdir("/proc/%d/fdinfo" % pid):
        try:
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                for line in f:
                    if line.startswith("Pid:"):
                        out.append(int(line.split()[1]))
        except OSError:
            pass
    return out


def test_group_signalled_through_pidfd(dispatchd, workdir):
    """The agent holds a pidfd of each running handler (its group is
    signalled through it) and lets it go when the run is over; a handler
    that outlives its timeout is still ended with its whole group."""
    hs, pids, release = family(workdir)
    hs["fam"].update(timeout="1s", on="e", attempts=1)
    agent = dispatchd(hs, agent_opts={"kill_grace": "200ms"})
    jid = agent.emit("e")["jobs"][0]["id"]
    leader, child = read_pids(pids)
    assert leader in pidfds_of(agent.pid), pidfds_of(agent.pid)
    res = agent.wait_final(jid, 15)
    wait_for(lambda: not pgid_members(leader), 5, what="the whole group to be ended")
    assert res[-1]["timed_out"] == "1", res
    assert leader not in pidfds_of(agent.pid)
