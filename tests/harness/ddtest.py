"""The core of the test harness, shared by tests/e2e, tests/failure and
tests/ha (and tests/e2e/test_scripts.py): where the binaries are, a private
redis-server, the real dispatchd with a generated config, the socket client,
reading the results stream, polling with deadlines and PID checks.

Everything here drives real processes: a private redis-server on a unix
socket and the real dispatchd binary.  No mocks.  Waiting is always done by
polling with a deadline (wait_for), never by a bare sleep; processes are
stopped by PID, never by name.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis as redislib

HERE = Path(__file__).resolve().parent      # tests/harness
TESTS = HERE.parent                          # tests
TOP = TESTS.parent                           # the source tree
HANDLERS = TESTS / "e2e" / "handlers"        # the e2e suite's handler scripts
# the build dir holding agent/dispatchd and agent/dispatchctl
BUILD = Path(os.environ.get("DISPATCHD_BUILD", str(TOP / "build")))
DISPATCHD = BUILD / "agent" / "dispatchd"
DISPATCHCTL = BUILD / "agent" / "dispatchctl"


def _find_redis_server():
    """$DISPATCHD_REDIS_SERVER if set (empty or not executable: none), else
    redis-server from PATH or the usual places."""
    env = os.environ.get("DISPATCHD_REDIS_SERVER")
    if env is not None:
        return env if env and os.access(env, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    for cand in ("/usr/bin/redis-server", "/usr/sbin/redis-server",
                 "/usr/local/bin/redis-server"):
        if os.access(cand, os.X_OK):
            return cand
    return None


REDIS_SERVER = _find_redis_server()

# Environment every test gives the agent.  DISPATCHD_TEST_SECRET must never
# reach a handler (the handler environment is a fixed minimal set).
SECRET_NAME = "DISPATCHD_TEST_SECRET"
SECRET_VALUE = "s3cret-must-not-leak"


def agent_environ(extra=None):
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root" if os.geteuid() == 0 else os.environ.get("HOME", "/"),
        "TZ": "UTC",
        SECRET_NAME: SECRET_VALUE,
    }
    # keep sanitizer settings for an --enable-sanitizers build
    for k, v in os.environ.items():
        if k.startswith(("ASAN_", "UBSAN_", "LSAN_", "MSAN_", "TSAN_")):
            env[k] = v
    if extra:
        env.update(extra)
    return env


def wait_for(pred, timeout=10.0, interval=0.01, what="condition"):
    """Poll pred() until it returns something truthy; return that value.

    Raises AssertionError naming `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------- socket ----

class Client:
    """One connection to the agent's unix socket (newline-delimited JSON)."""

    def __init__(self, path, timeout=5.0):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send(self, obj):
        line = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        if isinstance(line, str):
            line = line.encode()
        if not line.endswith(b"\n"):
            line += b"\n"
        self.send_raw(line)

    def recv_line(self):
        """Next line without its newline, or None at EOF."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    rest, self.buf = self.buf, b""
                    return rest
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def recv(self):
        line = self.recv_line()
        assert line is not None, "agent closed the connection instead of replying"
        try:
            return json.loads(line)
        except ValueError:
            raise AssertionError("reply is not JSON: %r" % line[:500])

    def request(self, obj):
        self.send(obj)
        return self.recv()

    def requests(self, objs):
        """Pipeline: write all requests at once, then read one reply each."""
        data = b""
        for o in objs:
            line = o if isinstance(o, (bytes, str)) else json.dumps(o)
            if isinstance(line, str):
                line = line.encode()
            data += line + b"\n"
        self.send_raw(data)
        return [self.recv() for _ in objs]

    def at_eof(self, timeout=2.0):
        """True when the peer closed the connection (within timeout)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def request(path, obj, timeout=5.0):
    with Client(path, timeout) as c:
        return c.request(obj)


def requests(path, objs, timeout=5.0):
    with Client(path, timeout) as c:
        return c.requests(objs)


# ----------------------------------------------------------------- redis ----

class RedisProc:
    """A private redis-server process and its log; subclasses give the
    arguments (how it listens, persistence) to spawn().  Stopped by PID."""

    port = None                 # TCP port, else the unix socket self.sock
    client_timeout = 10

    def __init__(self, dir, logpath=None):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = self.dir / "redis.sock"
        self.logpath = logpath or self.dir / "redis.log"
        self.proc = None

    def spawn(self, args, timeout=15.0, wait=True):
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen([REDIS_SERVER] + args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        if wait:
            self.wait_up(timeout)
        return self

    def wait_up(self, timeout=15.0):
        def up():
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("redis-server exited %s:\n%s" % (rc, self.log()))
            try:
                return self.client(timeout=1).ping()
            except (redislib.RedisError, OSError):
                return False
        wait_for(up, timeout, interval=0.02, what="redis-server to answer PING")

    def client(self, timeout=None):
        t = self.client_timeout if timeout is None else timeout
        if self.port:
            return redislib.Redis(host="127.0.0.1", port=self.port, socket_timeout=t)
        return redislib.Redis(unix_socket_path=str(self.sock), socket_timeout=t)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.logpath.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """SIGTERM by PID (redis fsyncs its AOF on shutdown), SIGKILL if
        stuck; sig=SIGKILL simulates a crash.  A paused server is woken
        first, or it could not act on the signal."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class RedisServer(RedisProc):
    """A private redis-server listening only on a unix socket in `dir`."""

    client_timeout = 5

    def __init__(self, dir, extra_args=()):
        super().__init__(dir)
        self.extra_args = list(extra_args)

    def start(self, timeout=10.0):
        self.spawn(["--port", "0", "--unixsocket", str(self.sock),
                    "--unixsocketperm", "700", "--dir", str(self.dir),
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--logfile", str(self.logpath)] + self.extra_args, timeout)


# ----------------------------------------------------------------- agent ----

def _ini_value(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def render_config(agent_opts, handlers):
    """INI text.  handlers: {name: {key: value or [values]}} (lists repeat)."""
    lines = ["[agent]"]
    for k, v in agent_opts.items():
        if v is None:
            continue
        lines.append("%s = %s" % (k, _ini_value(v)))
    for name, opts in handlers.items():
        lines.append("")
        lines.append("[handler %s]" % name)
        for k, v in opts.items():
            if v is None:
                continue
            for item in (v if isinstance(v, (list, tuple)) else [v]):
                lines.append("%s = %s" % (k, _ini_value(item)))
    return "\n".join(lines) + "\n"


class Agent:
    """The real dispatchd binary, in the foreground, with a private config."""

    def __init__(self, dir, redis, handlers, agent_opts=None, name="dt-agent",
                 ns="dt", env=None):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.redis = redis
        self.name = name
        self.ns = ns
        self.sock = self.dir / "agent.sock"
        self.conf = self.dir / "dispatchd.conf"
        self.stderr_path = self.dir / "stderr.log"
        self.stdout_path = self.dir / "stdout.log"
        opts = {
            "name": name,
            "redis": "unix:%s" % redis.sock,
            "namespace": ns,
            "socket": str(self.sock),
            "workers": 4,
            "lease": "5s",
            "drain_timeout": "5s",
            "kill_grace": "1s",
            "log_level": "debug",
        }
        opts.update(agent_opts or {})
        self.conf.write_text(render_config(opts, handlers))
        self.env = agent_environ(env)
        self.proc = None
        self.returncode = None
        self.expect_rc = 0     # what the fixture's teardown expects

    # -- process control
    def spawn(self):
        """Start the process without waiting for it to be ready."""
        self._err = open(self.stderr_path, "ab")
        self._out = open(self.stdout_path, "ab")
        # DISPATCHD_WRAPPER runs the agent under a tool, e.g. valgrind
        wrapper = shlex.split(os.environ.get("DISPATCHD_WRAPPER", ""))
        self.proc = subprocess.Popen(wrapper + [str(DISPATCHD), "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=self.env, cwd=str(self.dir))
        self.pid = self.proc.pid
        return self

    def start(self, timeout=10.0):
        self.spawn()

        def ready():
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("dispatchd exited %s before answering ping:\n%s"
                                     % (rc, self.stderr()))
            try:
                rep = request(self.sock, {"op": "ping"}, timeout=2.0)
            except (OSError, AssertionError):
                return False
            return rep.get("ok") is True and rep.get("redis", True) is not False

        wait_for(ready, timeout, what="dispatchd to answer ping with redis up")
        return self

    def kill9(self):
        """Simulate a crash: SIGKILL by PID; teardown then expects -9."""
        self.proc.kill()
        self.proc.wait(10)
        self.expect_rc = -9

    def restart(self, timeout=10.0):
        """Start again with the same config and dirs (after stop or kill9)."""
        if self.proc is not None:
            self.stop()
        self.proc = None
        self.returncode = None
        self.expect_rc = 0
        return self.start(timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM by PID, wait, SIGKILL if needed.  Returns the exit status
        (negative = killed by that signal, 'SIGKILL-needed' if it hung)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = "hung after SIGTERM for %ss, SIGKILLed" % timeout
        if self.returncode is None:
            self.returncode = self.proc.returncode
        self.proc = None
        for f in (self._err, self._out):
            f.close()
        return self.returncode

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- socket
    def request(self, obj, timeout=5.0):
        return request(self.sock, obj, timeout)

    def ping(self):
        return self.request({"op": "ping"})

    def emit(self, event, data=None, **kw):
        msg = {"op": "emit", "event": event}
        if data is not None:
            msg["data"] = data
        msg.update(kw)
        rep = self.request(msg)
        assert rep.get("ok") is True, "emit %r failed: %r" % (msg, rep)
        return rep

    def connect(self, timeout=5.0):
        return Client(self.sock, timeout)

    # -- redis side
    def key(self, suffix):
        return "{%s}:%s" % (self.ns, suffix)

    def results(self):
        return read_results(self.redis.client(), self.ns)

    def job_results(self, job_id):
        return [r for r in self.results() if r.get("job") == job_id]

    def wait_results(self, job_id, n=1, timeout=10.0):
        """Wait until at least n result entries exist for job_id; return them."""
        def enough():
            rs = self.job_results(job_id)
            return rs if len(rs) >= n else None
        return wait_for(enough, timeout,
                        what="%d result(s) for job %s (have %r)"
                        % (n, job_id, self.job_results(job_id)))

    def wait_final(self, job_id, timeout=10.0):
        """Wait for the done/dead result of a job; return all its results."""
        def final():
            rs = self.job_results(job_id)
            return rs if rs and rs[-1].get("outcome") in ("done", "dead") else None
        return wait_for(final, timeout, what="final result for job %s" % job_id)


def _dec(b):
    return b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else b


def read_results(client, ns):
    """XRANGE {ns}:results - + as a list of str dicts (plus '_id')."""
    out = []
    for eid, fields in client.xrange("{%s}:results" % ns, "-", "+"):
        d = {_dec(k): _dec(v) for k, v in fields.items()}
        d["_id"] = _dec(eid)
        d["_raw"] = fields
        out.append(d)
    return out


def run(args, timeout=20.0, env=None, input=None):
    """Run a command to completion; returns CompletedProcess with str output."""
    return subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL if input is None else None,
                          input=input, capture_output=True, timeout=timeout,
                          env=env if env is not None else agent_environ(), text=True)


def pid_alive(pid):
    """True if pid exists and is not a zombie (zombies of orphans may linger
    when PID 1 in a container does not reap)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def read_json_file(path):
    with open(path) as f:
        return json.load(f)


def stays(pred, duration, interval=0.02):
    """True if pred() stays truthy for the whole duration (for negative
    checks: "no further result appears")."""
    end = time.monotonic() + duration
    while time.monotonic() < end:
        if not pred():
            return False
        time.sleep(interval)
    return bool(pred())


RESULT_FIELDS = ("job", "event", "event_id", "handler", "attempt", "outcome", "exit",
                 "signal", "timed_out", "started_ms", "duration_ms", "stdout", "stderr",
                 "output_bytes", "truncated", "agent", "host", "error")
# "cancelled": written by the cancel op (doc/PROTOCOL.md)
OUTCOMES = ("done", "retry", "dead", "stale", "released", "cancelled")


def result_problems(entries):
    """Spec checks every results-stream entry must pass."""
    problems = []
    for e in entries:
        missing = [f for f in RESULT_FIELDS if f not in e]
        if missing:
            problems.append("%s lacks %s" % (e["_id"], missing))
            continue
        if e["outcome"] not in OUTCOMES:
            problems.append("%s: outcome %r" % (e["_id"], e["outcome"]))
        if e["timed_out"] not in ("0", "1") or e["truncated"] not in ("0", "1"):
            problems.append("%s: timed_out %r truncated %r" % (e["_id"], e["timed_out"],
                                                              e["truncated"]))
        if e["exit"] != "" and e["signal"] != "":
            problems.append("%s: both exit %r and signal %r" % (e["_id"], e["exit"],
                                                               e["signal"]))
        for f in ("stdout", "stderr", "error"):
            try:
                e["_raw"][f.encode()].decode("utf-8")
            except UnicodeDecodeError:
                problems.append("%s: %s is not valid UTF-8" % (e["_id"], f))
    return problems
