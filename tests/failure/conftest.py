"""Fixtures for the dispatchd failure-matrix tests (tests/README.md, "The
failure suite and its invariants").

Built on the shared harness (tests/harness: ddtest, restartable,
invariants): a private redis-server on a unix socket in a short tmp dir, the
real dispatchd binary ($DISPATCHD_BUILD/agent/dispatchd, default build/ in
the source tree), the socket client, polling with deadlines.  Added here: Redis that can be stopped,
crashed and restarted with its AOF, agents that can be killed and restarted
under the same name and socket dir (as systemd would), LD_PRELOADed
libfaketime, a socat TCP proxy, tmpfs mounts, and a teardown that ends, by
PID, everything the test started.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import ddtest
from harness import invariants
from harness.ddtest import Client, wait_for, read_results, render_config, agent_environ  # noqa: F401
from harness.restartable import RestartableAgent

HERE = Path(__file__).resolve().parent
HANDLERS = HERE / "handlers"
DISPATCHD = ddtest.DISPATCHD
DISPATCHCTL = ddtest.DISPATCHCTL
NS = "ft"
FAKETIME_LIB = None
for cand in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
             "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"):
    if os.path.exists(cand):
        FAKETIME_LIB = cand


def handler(name):
    p = HANDLERS / name
    assert os.access(str(p), os.X_OK), "%s is not executable" % p
    return str(p)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed or (call.when == "call" and hasattr(rep, "wasxfail")):
        env = getattr(item, "_ft_env", None)
        if env is not None:
            for a in env.agents:
                rep.sections.append(("dispatchd %s stderr (%s)" % (a.name, a.stderr_path),
                                     a.stderr()[-12000:]))
            for s in env.redises:
                rep.sections.append(("redis-server log", s.log()))


# ----------------------------------------------------------------- redis ----

class Redis(ddtest.RedisProc):
    """redis-server on a unix socket in dir; stop/crash/restart keep the dir."""

    def __init__(self, dir, aof=False, fsync="always", extra=()):
        dir = Path(dir)
        super().__init__(dir, dir.parent / (dir.name + ".log"))
        self.aof = aof
        self.fsync = fsync
        self.extra = list(extra)
        self.pids = []

    def start(self, timeout=15.0, wait=True):
        self.spawn(["--port", "0", "--unixsocket", str(self.sock),
                    "--unixsocketperm", "700", "--dir", str(self.dir), "--save", "",
                    "--appendonly", "yes" if self.aof else "no",
                    "--appendfsync", self.fsync, "--daemonize", "no",
                    "--enable-debug-command", "yes",
                    "--logfile", str(self.logpath)] + self.extra, timeout, wait)
        self.pids.append(self.pid)
        return self

    def crash(self):
        self.stop(sig=signal.SIGKILL)


# ----------------------------------------------------------------- agent ----

class Agent(RestartableAgent):
    """The failure matrix's agent: short leases, so scenarios run fast."""

    def __init__(self, env, dir, handlers, opts, name, preload=None):
        super().__init__(env, dir, handlers, opts, name,
                         "unix:%s" % env.redis.sock, NS,
                         {"workers": 4, "lease": "1s", "drain_timeout": "2s",
                          "kill_grace": "200ms", "log_level": "debug"},
                         preload)


# ------------------------------------------------------------- the env ----

class Env:
    def __init__(self, workdir, request):
        self.dir = workdir
        self.request = request
        self.redises = []
        self.agents = []
        self.procs = []          # other processes we started (socat, ...)
        self.extra_pids = []     # processes our handlers left behind
        self.mounts = []
        self.redis = None

    # redis
    def start_redis(self, **kw):
        r = Redis(self.dir / ("redis%d" % len(self.redises)), **kw)
        self.redises.append(r)
        r.start()
        if self.redis is None:
            self.redis = r
        return r

    def rc(self):
        return self.redis.client()

    # agents
    def agent(self, handlers, opts=None, name="a", start=True, preload=None):
        a = Agent(self, self.dir / ("ag-%s" % name), handlers, opts, name, preload)
        self.agents.append(a)
        if start:
            a.start()
        return a

    def results(self):
        return read_results(self.rc(), NS)

    def job_results(self, jid):
        return [r for r in self.results() if r.get("job") == jid]

    def wait_final(self, jids, timeout=20.0):
        """Wait until every job has a done/dead result; return results by job."""
        jids = set(jids)

        def final():
            by = {}
            for r in self.results():
                if r["job"] in jids and r["outcome"] in ("done", "dead"):
                    by[r["job"]] = r
            return by if len(by) == len(jids) else None
        try:
            return wait_for(final, timeout, interval=0.05, what="%d jobs to finish" % len(jids))
        except AssertionError:
            fin = {r["job"] for r in self.results() if r["outcome"] in ("done", "dead")}
            missing = sorted(jids - fin)
            raise AssertionError("timed out after %.0fs: %d of %d jobs have no done/dead "
                                 "result, e.g. %s" % (timeout, len(missing), len(jids),
                                                      missing[:5]))

    def check(self, job_ids=None, **kw):
        return invariants.check(self.rc(), NS, job_ids, name=self.request.node.name, **kw)

    def popen(self, args, **kw):
        p = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def mount_tmpfs(self, path, size):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.strip())
        self.mounts.append(path)
        return path

    def teardown(self):
        problems = []
        for a in self.agents:
            if a.proc is not None and a.proc.poll() is None:
                rc = a.stop()
                if rc == "hung":
                    problems.append("agent %s hung after SIGTERM" % a.name)
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait(10)
        for pid in self.extra_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for r in self.redises:
            r.stop()
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        return problems


@pytest.fixture
def env(request):
    if ddtest.REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    for b in (DISPATCHD, DISPATCHCTL):
        if not os.access(str(b), os.X_OK):
            pytest.fail("%s not built (set DISPATCHD_BUILD)" % b, pytrace=False)
    d = Path(tempfile.mkdtemp(prefix="ddf-", dir="/tmp"))
    e = Env(d, request)
    request.node._ft_env = e
    yield e
    problems = e.teardown()
    if not os.environ.get("DISPATCHD_TEST_KEEP"):
        shutil.rmtree(str(d), ignore_errors=True)
    assert not problems, problems


# --------------------------------------------------------------- helpers ----

def read_lines(path):
    try:
        return [l.split() for l in Path(path).read_text().splitlines() if l.strip()]
    except FileNotFoundError:
        return []


def pgid_members(pgid):
    """Live (non-zombie) processes whose process group is pgid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        rest = st.rsplit(")", 1)[1].split()
        if rest[0] in ("Z", "X"):
            continue
        if int(rest[2]) == pgid:
            out.append(int(d))
    return out


def pid_alive(pid):
    return ddtest.pid_alive(pid)


def children_of(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stays(pred, duration, interval=0.05):
    return ddtest.stays(pred, duration, interval)


def short(results):
    return [(r.get("agent"), r.get("attempt"), r.get("outcome"), r.get("error"),
             r.get("signal"), r.get("exit")) for r in results]
