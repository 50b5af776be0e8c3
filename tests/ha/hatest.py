"""Helpers for the dispatchd scale-out / high-availability tests (issue 5).

Reuses the shared harness (tests/harness): ddtest (socket client, config
rendering, polling), restartable (an agent killed and started again) and
invariants (the checker over Redis).  Added here: Redis servers on loopback TCP ports (plain, replica,
cluster node), redis-sentinel, agents that can be killed and restarted under
the same name, capability probes, CPU accounting, and an Env that ends, by
PID, everything a test started.
"""

import json
import os
import random
import socket
import subprocess
import threading
import collections
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis as redislib

from harness import ddtest
from harness import invariants
from harness.restartable import RestartableAgent
from harness.ddtest import Client, wait_for, render_config, agent_environ, read_results, stays  # noqa: F401

HERE = Path(__file__).resolve().parent

HANDLERS = HERE / "handlers"
DISPATCHD = ddtest.DISPATCHD
DISPATCHCTL = ddtest.DISPATCHCTL
REDIS_SERVER = ddtest.REDIS_SERVER


def handler(name):
    p = HANDLERS / name
    assert os.access(str(p), os.X_OK), "%s is not executable" % p
    return str(p)


def find_sentinel():
    for cand in ("/usr/bin/redis-sentinel", "/usr/local/bin/redis-sentinel"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def find_redis_cli():
    for cand in ("/usr/bin/redis-cli", "/usr/local/bin/redis-cli"):
        if os.access(cand, os.X_OK):
            return cand
    return None


# ------------------------------------------------------------ probes ----

def config_accepts(agent_opts, tmpdir, handlers=None):
    """True if `dispatchd -t` accepts an [agent] section with agent_opts (a
    key the build does not know is a config error, exit 78)."""
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    conf = tmpdir / ("probe-%d.conf" % random.randrange(1 << 30))
    opts = {"name": "probe", "namespace": "probe", "socket": str(tmpdir / "probe.sock")}
    opts.update(agent_opts)
    conf.write_text(render_config(opts, handlers or {"p": {"on": "p", "exec": "/bin/true"}}))
    r = subprocess.run([str(DISPATCHD), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=20, env=agent_environ())
    conf.unlink()
    return r.returncode == 0, (r.stdout + r.stderr).strip()


_BINARY = None


def binary_mentions(*needles):
    """True if the dispatchd binary contains any of the byte strings (a cheap
    probe for features with no config key of their own)."""
    global _BINARY
    if _BINARY is None:
        _BINARY = DISPATCHD.read_bytes().lower()
    return any(n.lower().encode() in _BINARY for n in needles)


def require_config(agent_opts, tmpdir, what):
    ok, msg = config_accepts(agent_opts, tmpdir)
    if not ok:
        pytest.skip("%s: feature not in this build (dispatchd -t: %s)" % (what, msg[-200:]))


# ------------------------------------------------------------- ports ----

def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


_used_ports = set()


def free_port(bus=False):
    """A free loopback port (and port+10000 free too when bus: cluster)."""
    for _ in range(500):
        p = random.randrange(20000, 40000)
        if p in _used_ports or not port_free(p):
            continue
        if bus and not port_free(p + 10000):
            continue
        _used_ports.add(p)
        return p
    raise AssertionError("no free port found")


# ----------------------------------------------------------------- redis ----

class Redis(ddtest.RedisProc):
    """redis-server in dir: on a unix socket (port None) or on 127.0.0.1:port."""

    def __init__(self, dir, port=None, extra=(), cluster=False):
        super().__init__(dir)
        self.port = port
        self.extra = list(extra)
        self.cluster = cluster

    @property
    def addr(self):
        """The agent's `redis =` value for this server."""
        return "127.0.0.1:%d" % self.port if self.port else "unix:%s" % self.sock

    def start(self, timeout=15.0):
        args = ["--dir", str(self.dir), "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--logfile", str(self.logpath),
                "--enable-debug-command", "yes"]
        if self.port:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        else:
            args += ["--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm", "700"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     str(self.dir / "nodes.conf"), "--cluster-node-timeout", "3000"]
        return self.spawn(args + self.extra, timeout)


class Sentinel:
    """redis-sentinel on 127.0.0.1:port monitoring one master."""

    def __init__(self, dir, port, master_port, name="mymaster", quorum=2):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.conf = self.dir / "sentinel.conf"
        self.logpath = self.dir / "sentinel.log"
        self.conf.write_text("\n".join([
            "port %d" % port,
            "bind 127.0.0.1",
            "daemonize no",
            "dir %s" % self.dir,
            "logfile %s" % self.logpath,
            "sentinel monitor %s 127.0.0.1 %d %d" % (name, master_port, quorum),
            "sentinel down-after-milliseconds %s 3000" % name,
            "sentinel failover-timeout %s 10000" % name,
            "sentinel parallel-syncs %s 1" % name,
        ]) + "\n")
        self.proc = None

    def start(self, timeout=15.0):
        self.proc = subprocess.Popen([find_sentinel(), str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid

        def up():
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("redis-sentinel exited %s:\n%s" % (rc, self.log()))
            try:
                return self.client(1).ping()
            except Exception:
                return False
        wait_for(up, timeout, interval=0.05, what="redis-sentinel to answer PING")
        return self

    def client(self, timeout=5):
        return redislib.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self):
        try:
            return self.logpath.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


# ----------------------------------------------------------------- agent ----

class Agent(RestartableAgent):
    """The many-agent tests' agent: restartable, with dispatchctl at hand."""

    START_TIMEOUT = 20.0

    def __init__(self, env, dir, handlers, opts, name, redis_addr, ns):
        super().__init__(env, dir, handlers, opts, name, redis_addr, ns,
                         {"workers": 2, "lease": "3s", "drain_timeout": "3s",
                          "kill_grace": "500ms", "log_level": "info"})

    def ctl(self, *args, timeout=20.0):
        """dispatchctl -s SOCK ARGS; returns CompletedProcess (text)."""
        return subprocess.run([str(DISPATCHCTL), "-s", str(self.sock)] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=timeout,
                              env=agent_environ(), stdin=subprocess.DEVNULL)

    def status(self):
        r = self.ctl("--json", "status")
        assert r.returncode == 0, "dispatchctl status at %s: exit %d %s" % (
            self.name, r.returncode, r.stderr)
        return json.loads(r.stdout)

    def cpu(self):
        """(own cpu seconds, reaped children's cpu seconds) of the agent."""
        return proc_cpu(self.pid)


# ------------------------------------------------------------------ cpu ----

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """(utime+stime, cutime+cstime) in seconds; (0, 0) if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # fields after the comm: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
    return ((int(st[11]) + int(st[12])) / CLK, (int(st[13]) + int(st[14])) / CLK)


def system_cpu():
    """(busy, total) jiffies summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


# ------------------------------------------------------------- the env ----

class Env:
    def __init__(self, workdir, request):
        self.dir = Path(workdir)
        self.request = request
        self.redises = []
        self.sentinels = []
        self.agents = []
        self.procs = []
        self.redis = None       # where the agents' keys live (checker, results)
        self.ns = "ha"

    def start_redis(self, port=None, extra=(), cluster=False):
        r = Redis(self.dir / ("redis%d" % len(self.redises)), port=port, extra=extra,
                  cluster=cluster)
        self.redises.append(r)
        r.start()
        if self.redis is None:
            self.redis = r
        return r

    def start_sentinel(self, master_port, name="mymaster"):
        s = Sentinel(self.dir / ("sentinel%d" % len(self.sentinels)), free_port(),
                     master_port, name)
        self.sentinels.append(s)
        s.start()
        return s

    def agent(self, handlers, opts=None, name="a", start=True, redis_addr=None):
        a = Agent(self, self.dir / ("ag-%s" % name), handlers, opts, name,
                  redis_addr or self.redis.addr, self.ns)
        self.agents.append(a)
        if start:
            a.start()
        return a

    def rc(self):
        return self.redis.client()

    def key(self, suffix):
        return "{%s}:%s" % (self.ns, suffix)

    def results(self, client=None):
        return read_results(client or self.rc(), self.ns)

    def check(self, job_ids=None, client=None, **kw):
        return invariants.check(client or self.rc(), self.ns, job_ids,
                                name=self.request.node.name, **kw)

    def wait_final(self, jids, timeout=30.0, client=None):
        """Wait until every job has a done/dead result; return them by job."""
        jids = set(jids)

        def final():
            by = {}
            for r in self.results(client):
                if r["job"] in jids and r["outcome"] in ("done", "dead"):
                    by[r["job"]] = r
            return by if len(by) == len(jids) else None
        try:
            return wait_for(final, timeout, interval=0.1, what="%d jobs to finish" % len(jids))
        except AssertionError:
            fin = {r["job"] for r in self.results(client) if r["outcome"] in ("done", "dead")}
            missing = sorted(jids - fin)
            raise AssertionError("timed out after %.0fs: %d of %d jobs have no done/dead "
                                 "result, e.g. %s" % (timeout, len(missing), len(jids),
                                                      missing[:5]))

    def popen(self, args, **kw):
        p = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def teardown(self):
        problems = []
        for a in self.agents:
            if a.alive():
                rc = a.stop()
                if rc == "hung":
                    problems.append("agent %s hung after SIGTERM" % a.name)
                elif rc != 0:
                    problems.append("agent %s exited %r on SIGTERM" % (a.name, rc))
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for s in self.sentinels:
            s.stop()
        for r in self.redises:
            r.stop()
        return problems


# --------------------------------------------------------------- helpers ----

def read_records(dir):
    """Lines of handlers/rec.sh from every file in dir: list of
    (job, attempt, agent, event_id, event)."""
    out = []
    d = Path(dir)
    if not d.exists():
        return out
    for f in sorted(d.iterdir()):
        for line in f.read_text().splitlines():
            parts = line.split()
            if parts:
                out.append(tuple(parts + [""] * (5 - len(parts))))
    return out


def rec_handler(dir, on, agent_name, **kw):
    """A [handler] dict running handlers/rec.sh DIR, with DD_AGENT set by an env
    line (the exec line stays identical on every agent)."""
    h = {"on": on, "exec": "%s %s" % (handler("rec.sh"), dir),
         "env": "DD_AGENT=%s" % agent_name, "backoff": "100ms..300ms"}
    h.update(kw)
    return h


def count_by(items, key):
    c = defaultdict(int)
    for it in items:
        c[key(it)] += 1
    return c


def append_figure(filename, line):
    with open(str(HERE / filename), "a") as f:
        f.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), line))


class Producer(threading.Thread):
    """Emits s.ev events with ids at a steady pace; an emit that is not
    acknowledged is sent again with the same id (as a careful producer
    would) until acknowledged or 30 s have passed."""

    def __init__(self, agent, prefix, interval=0.02, event="s.ev"):
        super().__init__(daemon=True)
        self.event = event
        self.agent = agent
        self.prefix = prefix
        self.interval = interval
        self.stop = threading.Event()
        self.acked = collections.OrderedDict()   # event id -> (reply, time acked)
        self.refused = collections.Counter()
        self.gave_up = []
        self.first_refusal = None
        self.last_refusal = None

    def run(self):
        c = None
        k = 0
        while not self.stop.is_set():
            eid = "%s-%d" % (self.prefix, k)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if c is None:
                        c = Client(self.agent.sock, 5)
                    rep = c.request({"event": self.event, "id": eid, "data": {"k": k}})
                except (OSError, AssertionError) as e:
                    if c is not None:
                        c.close()
                    c = None
                    rep = {"ok": False, "code": "connection", "error": str(e)}
                if rep.get("ok") is True:
                    self.acked[eid] = (rep, time.time())
                    break
                self.refused[rep.get("code")] += 1
                now = time.time()
                self.first_refusal = self.first_refusal or now
                self.last_refusal = now
                if time.monotonic() > deadline:
                    self.gave_up.append(eid)
                    break
                time.sleep(0.05)
            k += 1
            time.sleep(self.interval)
        if c is not None:
            c.close()
