"""A real dispatchd that can be killed and started again with the same name,
config and directory, as systemd would: the agent of the failure matrix
(tests/failure) and of the many-agent tests (tests/ha), which give it their
own defaults by subclassing."""

import os
import signal
import subprocess
from pathlib import Path

from harness import ddtest
from harness.ddtest import Client, agent_environ, render_config, wait_for


class RestartableAgent:
    START_TIMEOUT = 15.0

    def __init__(self, env, dir, handlers, opts, name, redis_addr, ns,
                 defaults, preload=None):
        self.env_ = env
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ns = ns
        self.sock = self.dir / "agent.sock"
        self.conf = self.dir / "dispatchd.conf"
        self.stderr_path = self.dir / "stderr.log"
        self.proc = None
        self.pids = []
        self.lives = 0
        o = {"name": name, "redis": redis_addr, "namespace": ns,
             "socket": str(self.sock)}
        o.update(defaults)
        o.update(opts or {})
        self.opts = o
        self.handlers = handlers
        self.write_config()
        self.environ = agent_environ(dict(preload) if preload else {})

    def write_config(self, handlers=None, opts=None, text=None):
        if text is None:
            text = render_config(opts or self.opts,
                                 handlers if handlers is not None else self.handlers)
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(text)
        os.rename(str(tmp), str(self.conf))

    def spawn(self):
        assert not self.alive()
        err = open(str(self.stderr_path), "ab")
        err.write(("--- life %d ---\n" % self.lives).encode())
        err.flush()
        self.proc = subprocess.Popen([str(ddtest.DISPATCHD), "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     env=self.environ, cwd=str(self.dir))
        err.close()
        self.pid = self.proc.pid
        self.pids.append(self.pid)
        self.lives += 1
        return self

    def start(self, timeout=None, need_redis=True):
        self.spawn()
        self.wait_ready(timeout, need_redis)
        return self

    def wait_ready(self, timeout=None, need_redis=True):
        def ready():
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("dispatchd %s exited %s before answering ping:\n%s"
                                     % (self.name, rc, self.stderr()[-4000:]))
            try:
                rep = ddtest.request(self.sock, {"op": "ping"}, timeout=2.0)
            except (OSError, AssertionError):
                return False
            return rep.get("ok") is True and (rep.get("redis") is True or not need_redis)
        wait_for(ready, timeout or self.START_TIMEOUT, interval=0.02,
                 what="dispatchd %s to answer ping" % self.name)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        assert self.alive(), "agent %s is not running" % self.name
        os.kill(self.proc.pid, sig)

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        return self.proc.returncode

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15.0):
        """SIGTERM by PID; SIGKILL if it hangs.  Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "hung"
        return self.proc.returncode

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def request(self, obj, timeout=5.0):
        return ddtest.request(self.sock, obj, timeout)

    def ping(self, timeout=5.0):
        return self.request({"op": "ping"}, timeout)

    def emit(self, event, data=None, **kw):
        msg = {"op": "emit", "event": event}
        if data is not None:
            msg["data"] = data
        msg.update(kw)
        rep = self.request(msg)
        assert rep.get("ok") is True, "emit %r at %s failed: %r" % (msg, self.name, rep)
        return rep

    def emit_many(self, msgs, batch=250, timeout=60.0):
        out = []
        with Client(self.sock, timeout) as c:
            for i in range(0, len(msgs), batch):
                out.extend(c.requests(msgs[i:i + batch]))
        return out
