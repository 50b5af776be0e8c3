"""tests/bench/peers.py: benchmark 8, the same shell-handler workload
through other job runners, for tests/bench/run --peers.

Each peer runs N jobs of the sh handler (reads its stdin to /dev/null,
exits 0) with two workers and the job JSON as the job's payload:

  python-rq    a job function that runs the handler with subprocess.run,
               the JSON on stdin; two `rq worker --burst` processes (rq
               forks a work horse per job, as it does by default)
  Sidekiq      a job class that runs the handler with Open3.capture2 (like
               system, but with the JSON on stdin); one process, -c 2
  beanstalkd   bsworker.c, a minimal worker of ours: reserve, fork/exec the
               handler with the body on a stdin pipe, read stdout, reap,
               delete; two of them
  webhook      adnanh/webhook, a hook that runs the handler and waits for it
               (include-command-output-in-response); two HTTP clients with
               keep-alive POST the JSON (webhook does not give it to the
               command's stdin, so the handler reads an empty stdin)

All of them use our private Redis (rq, Sidekiq: its Unix socket) or a
private beanstalkd / webhook on a Unix socket or a loopback port.  The
rate is N over the time from the first job starting (or the workers
being released) to the last finishing.  The row's value is dispatchd's
rate for the same workload in the same invocation (N jobs, sh handler,
workers = 2), its baseline the peer's; ratio > 1 means dispatchd is ahead.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time

PACKAGES = {
    "python-rq": ("python3-rq", "/usr/bin/rq"),
    "Sidekiq": ("ruby-sidekiq", "/usr/bin/sidekiq"),
    "beanstalkd": ("beanstalkd", "/usr/bin/beanstalkd"),
    "webhook": ("webhook", "/usr/bin/webhook"),
}


def install(log):
    """Install the peers that Debian has and that are missing."""
    missing = [pkg for pkg, binary in PACKAGES.values()
               if not os.access(binary, os.X_OK)]
    if not missing or not shutil.which("apt-get"):
        return
    avail = []
    for pkg in missing:
        out = subprocess.run(["apt-cache", "policy", pkg],
                             capture_output=True, text=True).stdout
        if "Candidate:" in out and "Candidate: (none)" not in out:
            avail.append(pkg)
    if not avail:
        return
    log("peers: apt-get install %s" % " ".join(avail))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y",
                        "--no-install-recommends"] + avail, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        log("peers: apt-get failed: %s" % r.stderr.strip()[-300:])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def job_json(env):
    with open(env.job_json) as f:
        return f.read()


# -- python-rq ---------------------------------------------------------------

RQ_JOB = '''import subprocess


def run(handler, payload):
    subprocess.run([handler], input=payload.encode(), stdout=subprocess.PIPE,
                   check=True)
'''


def peer_rq(env, run, n, handler):
    from redis import Redis
    from rq import Queue
    from rq.job import Job
    d = env.path("rq")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "benchjobs.py"), "w") as f:
        f.write(RQ_JOB)
    import sys
    sys.path.insert(0, d)
    import benchjobs
    conn = Redis(unix_socket_path=env.redis_sock, db=1)
    q = Queue("bench", connection=conn)
    payload = job_json(env)
    ids = [q.enqueue(benchjobs.run, handler, payload, result_ttl=3600).id
           for i in range(n)]
    penv = dict(os.environ, PYTHONPATH=d)
    url = "unix://%s?db=1" % env.redis_sock
    workers = [run.PROCS.start("rq worker", [
        "/usr/bin/python3", "/usr/bin/rq", "worker", "--burst", "-q",
        "--url", url, "bench"], env=penv, cwd=d,
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "w%d.log" % i),
                                               "w")) for i in range(2)]
    for w in workers:
        w.wait(timeout=60 + n)
        run.PROCS.stop(w)
    jobs = Job.fetch_many(ids, connection=conn)
    done = [j for j in jobs if j is not None and j.get_status() == "finished"]
    if len(done) != n:
        raise run.BenchError("python-rq: %d of %d jobs finished" % (
            len(done), n))
    t0 = min(j.started_at for j in done)
    t1 = max(j.ended_at for j in done)
    return n / (t1 - t0).total_seconds()


# -- Sidekiq -------------------------------------------------------------------

SIDEKIQ_JOB = '''require "sidekiq"
require "open3"

REDIS = { path: ENV.fetch("BENCH_REDIS_SOCK"), db: 2 }
Sidekiq.configure_server { |c| c.redis = REDIS }
Sidekiq.configure_client { |c| c.redis = REDIS }

class BenchJob
  include Sidekiq::Worker
  sidekiq_options retry: false, queue: "bench"

  def perform(handler, payload)
    now = Process.clock_gettime(Process::CLOCK_REALTIME)
    Sidekiq.redis { |c| c.setnx("bench:t0", now.to_s) }
    _out, status = Open3.capture2(handler, stdin_data: payload)
    raise "handler failed" unless status.success?
    now = Process.clock_gettime(Process::CLOCK_REALTIME)
    Sidekiq.redis { |c| c.rpush("bench:done", now.to_s) }
  end
end
'''

SIDEKIQ_PUSH = '''require_relative "job"
n, handler, payload = ARGV[0].to_i, ARGV[1], File.read(ARGV[2])
Sidekiq::Client.push_bulk("class" => BenchJob,
                          "args" => Array.new(n) { [handler, payload] })
'''


def peer_sidekiq(env, run, n, handler):
    from redis import Redis
    d = env.path("sidekiq")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "job.rb"), "w") as f:
        f.write(SIDEKIQ_JOB)
    with open(os.path.join(d, "push.rb"), "w") as f:
        f.write(SIDEKIQ_PUSH)
    r = Redis(unix_socket_path=env.redis_sock, db=2)
    penv = dict(os.environ, BENCH_REDIS_SOCK=env.redis_sock)
    subprocess.run(["ruby", os.path.join(d, "push.rb"), str(n), handler,
                    env.job_json], env=penv, cwd=d, check=True)
    p = run.PROCS.start("sidekiq", [
        "/usr/bin/sidekiq", "-r", os.path.join(d, "job.rb"), "-c", "2",
        "-q", "bench", "-t", "5"], env=penv, cwd=d,
        stdout=open(os.path.join(d, "sidekiq.log"), "w"),
        stderr=subprocess.STDOUT)

    def finished():
        if p.poll() is not None:
            raise run.BenchError("sidekiq exited %d; see %s" % (
                p.returncode, os.path.join(d, "sidekiq.log")))
        return r.llen("bench:done") >= n
    # Sidekiq keeps no per-job times that we can read at once (its counters
    # are flushed with the heartbeat), so the job records the first start
    # and each end in Redis: two small commands per job, next to a fork
    run.wait_for(finished, 120 + n, "sidekiq jobs", step=0.02)
    t0 = float(r.get("bench:t0"))
    t1 = max(float(x) for x in r.lrange("bench:done", 0, -1))
    run.PROCS.stop(p, timeout=30)
    return n / max(1e-3, t1 - t0)


# -- beanstalkd ------------------------------------------------------------------

def peer_beanstalkd(env, run, n, handler):
    d = env.path("beanstalkd")
    os.makedirs(d, exist_ok=True)
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o",
                    os.path.join(d, "bsworker"),
                    os.path.join(run.BENCH, "bsworker.c")], check=True)
    sock = os.path.join(d, "beanstalkd.sock")
    b = run.PROCS.start("beanstalkd", ["/usr/bin/beanstalkd", "-l",
                                       "unix:" + sock],
                        stdout=subprocess.DEVNULL,
                        stderr=open(os.path.join(d, "log"), "w"))
    run.wait_for(lambda: os.path.exists(sock), 10, "beanstalkd")
    payload = job_json(env).encode()
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock)
    put = b"put 0 0 600 %d\r\n%s\r\n" % (len(payload), payload)
    # 100 at a time: beanstalkd stops reading while its replies wait
    for i in range(0, n, 100):
        k = min(100, n - i)
        c.sendall(put * k)
        buf = b""
        while buf.count(b"\r\n") < k:
            buf += c.recv(65536)
        if buf.count(b"INSERTED") != k:
            raise run.BenchError("beanstalkd: put failed: %r" % buf[:100])
    t0 = time.monotonic()
    ws = [run.PROCS.start("bsworker", [os.path.join(d, "bsworker"),
                                       "unix:" + sock, handler])
          for i in range(2)]
    for w in ws:
        if w.wait(timeout=60 + n) != 0:
            raise run.BenchError("bsworker exited %d" % w.returncode)
        run.PROCS.stop(w)
    t1 = time.monotonic()
    c.sendall(b"stats\r\n")
    time.sleep(0.1)
    stats = c.recv(65536).decode()
    c.close()
    run.PROCS.stop(b)
    deleted = [ln for ln in stats.splitlines()
               if ln.startswith("cmd-delete:")]
    if not deleted or int(deleted[0].split()[1]) != n:
        raise run.BenchError("beanstalkd: %s" % deleted)
    return n / (t1 - t0)


# -- webhook ---------------------------------------------------------------------

def peer_webhook(env, run, n, handler):
    d = env.path("webhook")
    os.makedirs(d, exist_ok=True)
    hooks = os.path.join(d, "hooks.json")
    with open(hooks, "w") as f:
        json.dump([{"id": "bench", "execute-command": handler,
                    "include-command-output-in-response": True}], f)
    port = free_port()
    p = run.PROCS.start("webhook", ["/usr/bin/webhook", "-hooks", hooks,
                                    "-ip", "127.0.0.1", "-port", str(port)],
                        stdout=subprocess.DEVNULL,
                        stderr=open(os.path.join(d, "log"), "w"))

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False
    run.wait_for(up, 10, "webhook")
    body = job_json(env).encode()
    errors = []

    def client(k):
        h = http.client.HTTPConnection("127.0.0.1", port)
        try:
            for i in range(k):
                h.request("POST", "/hooks/bench", body,
                          {"Content-Type": "application/json"})
                resp = h.getresponse()
                resp.read()
                if resp.status != 200:
                    errors.append(resp.status)
                    return
        except OSError as e:
            errors.append(e)
        finally:
            h.close()
    t0 = time.monotonic()
    ts = [threading.Thread(target=client, args=(k,))
          for k in (n // 2, n - n // 2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t1 = time.monotonic()
    run.PROCS.stop(p)
    if errors:
        raise run.BenchError("webhook: %r" % errors[:3])
    return n / (t1 - t0)


PEERS = [
    ("python-rq", peer_rq),
    ("Sidekiq", peer_sidekiq),
    ("beanstalkd", peer_beanstalkd),
    ("webhook", peer_webhook),
]


def run(env, n, handler):
    import importlib
    runmod = importlib.import_module("__main__")
    log = runmod.log
    install(log)
    log("peers: dispatchd, %d jobs of the sh handler" % n)
    ours = runmod.bench_throughput_rate(env, "peer", handler, n)
    rows = []
    for name, fn in PEERS:
        pkg, binary = PACKAGES[name]
        label = "peer %s, sh handler (jobs/s)" % name
        if not os.access(binary, os.X_OK):
            rows.append(runmod.row(label, "not installed (%s)" % pkg))
            continue
        log("peers: %s, %d jobs" % (name, n))
        try:
            rate = fn(env, runmod, n, handler)
        except Exception as e:      # one peer's trouble stops only its row
            log("peers: %s failed: %s" % (name, e))
            rows.append(runmod.row(label, "failed: %s" % str(e)[:80]))
            continue
        rows.append(runmod.row(label, ours, rate, ours / max(rate, 1e-9),
                               "> 1",
                               ours > rate))
    return rows
