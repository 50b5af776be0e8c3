"""A cgroup per job (agent/cgroup.c, agent/jobcg.c, agent/limits.c): on the
real kernel, with the real agent, real handlers and a real redis-server.

What is checked: nothing a job starts outlives it (setsid escapees at the
handler's exit, at its timeout, at a cancel from another agent, after a
kill -9 of the agent and its restart, after thousands of jobs and a
reload); SIGTERM-proof children are gone by timeout + kill_grace; a fork
bomb is held at tasks_max; a memory hog is OOM-killed inside its cgroup,
said so and retried; the figures in the results (memory_peak,
cpu_user_us) match what the handler did; leftovers = wait; cgroup = off;
the status op's mode; the config errors.

A test that needs cgroups skips, saying why, where the kernel lacks them
(not root, no writable cgroup2 hierarchy, no controller for a limit).
Handlers are written into each test's own tmp dir; every process they
leave is found by a unique mark in its command line (a `sleep` argument,
or the script's own path) and, if the agent failed to end it, ended here by
its PID.  Each agent has a name of its own, so only its own
dispatchd.<name> subtrees are looked at (other agents may run on this host
at the same time).
"""

import glob
import os
import random
import secrets
import signal
import textwrap
import time
from pathlib import Path

import pytest

import admin_util as au
from harness import ddtest
from harness.ddtest import pid_alive, run, stays, wait_for

CANCEL_TEXT = "cancelled by an administrator while running"
OOM_TEXT = "killed by the kernel: out of memory"
MiB = 1024 * 1024


# ------------------------------------------------------------ the kernel ----

def _mounts():
    """(cgroup2 mount point or None, {v1 controller: mount point})."""
    v2, v1 = None, {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, sfields = pre.split(), post.split()
            if len(fields) < 5 or len(sfields) < 3 or fields[3] != "/":
                continue
            if sfields[0] == "cgroup2" and v2 is None:
                v2 = fields[4]
            elif sfields[0] == "cgroup":
                for opt in sfields[2].split(","):
                    v1.setdefault(opt, fields[4])
    return v2, v1


CG2, CG1 = _mounts()
V1_KINDS = ("memory", "pids", "cpu", "blkio")


def own_cgroups(pid="self"):
    """{"v2": path, controller: path} of a process, from /proc/PID/cgroup."""
    out = {}
    with open("/proc/%s/cgroup" % pid) as f:
        for line in f:
            _, ctls, path = line.rstrip("\n").split(":", 2)
            if ctls == "":
                out["v2"] = path
            for c in ctls.split(","):
                out[c] = path
    return out


def _join(mount, own, name=""):
    return os.path.join(mount, own.lstrip("/"), name) if name else \
        os.path.join(mount, own.lstrip("/"))


def cgroups_missing():
    """Why this host cannot give jobs cgroups, or None if it can."""
    if os.geteuid() != 0:
        return "needs root: the agent makes cgroups under /sys/fs/cgroup"
    if CG2 is None:
        return "no cgroup2 hierarchy is mounted"
    own = own_cgroups().get("v2")
    if own is None:
        return "this process is in no cgroup2 cgroup"
    d = _join(CG2, own)
    if not os.access(d, os.W_OK):
        return "the cgroup2 directory %s is not writable" % d
    return None


def controller_missing(ctl):
    """Why no limit of controller ctl (memory, pids, cpu) can be enforced
    here, through v2 or v1, or None if one can."""
    why = cgroups_missing()
    if why:
        return why
    own = own_cgroups()
    # the agent's subtree is beside it, in our cgroup, which must give its
    # children the controller: a cgroup2 cgroup with processes (ours has
    # this one) can do that only if it is the root
    try:
        with open(os.path.join(_join(CG2, own["v2"]), "cgroup.controllers")) as f:
            if ctl in f.read().split() and own["v2"] == "/":
                return None
    except OSError:
        pass
    if ctl in CG1 and ctl in own and os.access(_join(CG1[ctl], own[ctl]), os.W_OK):
        return None
    return "the kernel gives no %s controller here (neither cgroup2 nor v1)" % ctl


@pytest.fixture
def need_cgroups():
    why = cgroups_missing()
    if why:
        pytest.skip(why)


def need(ctl):
    why = controller_missing(ctl)
    if why:
        pytest.skip(why)


def subtrees(name):
    """The existing dispatchd.<name> subtree dirs of agent name in every
    hierarchy: beside the agent's own cgroup, which (it being our child, not
    moved in v1, started from our cgroup in v2) is ours.  The name may have
    a suffix (dispatchd.NAME.HASH)."""
    if CG2 is None:
        return []
    own = own_cgroups()
    found = []
    for hier, mount in [("v2", CG2)] + [(c, CG1[c]) for c in V1_KINDS if c in CG1]:
        if hier not in own:
            continue
        base = _join(mount, own[hier])
        for pat in ("dispatchd.%s" % name, "dispatchd.%s.*" % name):
            found += [p for p in glob.glob(os.path.join(base, pat)) if os.path.isdir(p)]
    return sorted(set(found))


def job_cgroups(name):
    """Every job-* cgroup in the subtrees of agent name."""
    out = []
    for t in subtrees(name):
        out += [os.path.join(t, d) for d in os.listdir(t)
                if d.startswith("job-") and os.path.isdir(os.path.join(t, d))]
    return out


def agent_subtree(agent):
    """The agent's v2 subtree, from the cgroup it moved itself into."""
    def moved():
        v2 = own_cgroups(agent.pid).get("v2", "")
        return v2 if v2.endswith("/agent") else None
    v2 = wait_for(moved, 5, what="agent %s to enter its agent leaf" % agent.name)
    base = os.path.dirname(v2)
    assert os.path.basename(base).startswith("dispatchd.%s" % agent.name), v2
    return _join(CG2, base)


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


# ---------------------------------------------------- processes we started ----

class Procs:
    """The processes the handlers of a test start, found by a mark in their
    command line: a unique `sleep` argument (sleep_arg) or a script's path
    (watch).  At the end every one still alive is killed by its PID and the
    subtrees of the test's agents checked and cleared."""

    def __init__(self):
        self.needles = {}
        self.names = []

    def sleep_arg(self, seconds=300):
        """A `sleep` argument no other process has: seconds.NNNNNN."""
        while True:
            arg = "%d.%06d" % (seconds, random.randrange(1, 10 ** 6))
            if arg not in self.needles:
                break
        self.needles[arg] = b"sleep\0" + arg.encode() + b"\0"
        return arg

    def watch(self, path):
        """Processes whose command line holds path (a script of the test)."""
        self.needles[str(path)] = str(path).encode() + b"\0"
        return str(path)

    def pids(self, *marks):
        """PIDs alive with one of marks (default: every mark) in argv."""
        needles = [self.needles[m] for m in (marks or self.needles)]
        me = os.getpid()
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == me:
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if any(n in cmd for n in needles) and pid_alive(int(d)):
                out.append(int(d))
        return out

    def gone(self, *marks, timeout=1.0):
        """Wait until no process with marks is alive; fail with who is."""
        try:
            return wait_for(lambda: not self.pids(*marks), timeout, interval=0.02,
                            what="the job's processes to be gone")
        except AssertionError:
            raise AssertionError("still alive %.1fs later: %s" % (timeout, self.describe(*marks)))

    def describe(self, *marks):
        out = []
        for pid in self.pids(*marks):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                cg = open("/proc/%d/cgroup" % pid).read().replace("\n", " ")
            except OSError:
                continue
            out.append("%d (%s) in %s" % (pid, cmd.strip(), cg))
        return "; ".join(out) or "none"

    def kill_all(self):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pids = self.pids() if self.needles else []
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)


@pytest.fixture
def procs():
    """Set up before the agents (cg_dispatchd asks for it first), so torn
    down after they stopped: what is left is killed, and the agents, which
    remove their subtrees at a clean exit, must have left none (anything
    left is removed here, after the failure is noted)."""
    p = Procs()
    yield p
    p.kill_all()
    left = []
    for name in p.names:
        for t in subtrees(name):
            left.append(t)
            for d in sorted(glob.glob(os.path.join(t, "*/")), reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            try:
                os.rmdir(t)
            except OSError:
                pass
    assert not left, "subtrees left by agents that exited: %s" % left


@pytest.fixture
def cg_dispatchd(procs, dispatchd):
    """dispatchd, each agent with a name of its own (dispatchd.<name> is
    its subtree), remembered for procs' teardown."""
    def start(handlers, agent_opts=None, name=None, **kw):
        name = name or "cgt-" + secrets.token_hex(4)
        procs.names.append(name)
        return dispatchd(handlers, agent_opts=agent_opts, name=name, **kw)
    return start


def script(workdir, name, body, shell="/bin/sh"):
    """An executable handler script in the test's dir."""
    p = Path(workdir) / name
    p.write_text("#!%s\n%s" % (shell, textwrap.dedent(body).lstrip("\n")))
    p.chmod(0o755)
    return str(p)


def job_of(agent, event):
    return agent.emit(event)["jobs"][0]["id"]


# ------------------------------------------------------------------ tests ----

def test_escapee_killed_at_handler_exit_and_at_timeout(need_cgroups, cg_dispatchd,
                                                       workdir, procs):
    esc1, esc2, main2 = procs.sleep_arg(), procs.sleep_arg(), procs.sleep_arg()
    exits = script(workdir, "exits.sh", """
        setsid sleep %s </dev/null >/dev/null 2>&1 &
        echo $!
        exit 0
        """ % esc1)
    overruns = script(workdir, "overruns.sh", """
        setsid sleep %s </dev/null >/dev/null 2>&1 &
        echo $!
        exec sleep %s
        """ % (esc2, main2))
    agent = cg_dispatchd({"exits": {"on": "exits", "exec": exits},
                          "overruns": {"on": "overruns", "exec": overruns,
                                       "timeout": "1s", "attempts": 1}})
    agent_subtree(agent)
    j1, j2 = job_of(agent, "exits"), job_of(agent, "overruns")

    (r1,) = agent.wait_results(j1, timeout=5)
    procs.gone(esc1, timeout=1.0)
    assert (r1["outcome"], r1["exit"], r1["leftovers"]) == ("done", "0", "1"), r1
    assert not pid_alive(int(r1["stdout"])), r1
    assert int(r1["cpu_user_us"]) >= 0 and int(r1["cpu_system_us"]) >= 0, r1

    (r2,) = agent.wait_results(j2, timeout=8)
    procs.gone(esc2, main2, timeout=1.0)
    assert (r2["outcome"], r2["timed_out"]) == ("dead", "1"), r2
    assert not pid_alive(int(r2["stdout"])), r2
    assert job_cgroups(agent.name) == []


def test_children_ignoring_sigterm_gone_by_timeout_plus_grace(need_cgroups, cg_dispatchd,
                                                              workdir, procs):
    kid = procs.sleep_arg()
    started = Path(workdir) / "started"
    stubborn = script(workdir, "stubborn50.sh", """
        trap '' TERM
        i=0
        while [ $i -lt 50 ]; do
            sleep %s </dev/null >/dev/null 2>&1 &
            i=$((i + 1))
        done
        : > %s
        exec sleep %s
        """ % (kid, started, kid))
    agent = cg_dispatchd({"stubborn": {"on": "x", "exec": stubborn, "timeout": "1s",
                                       "attempts": 1}},
                         agent_opts={"kill_grace": "1s"})
    jid = job_of(agent, "x")
    wait_for(started.exists, 3, what="50 children started")
    # all 51 (the handler became a sleep too) alive and ignoring SIGTERM
    wait_for(lambda: len(procs.pids(kid)) >= 51, 1.0, what="51 sleeps")
    (r,) = agent.wait_results(jid, timeout=6)
    # timeout 1 s + kill_grace 1 s + 1 s from the job's start
    deadline = int(r["started_ms"]) / 1000.0 + 1 + 1 + 1
    while procs.pids(kid) and time.time() < deadline:
        time.sleep(0.02)
    assert not procs.pids(kid), "alive at start + 3 s: %s" % procs.describe(kid)
    assert (r["outcome"], r["timed_out"], r["signal"]) == ("dead", "1", "9"), r
    assert job_cgroups(agent.name) == []


def test_fork_bomb_held_at_tasks_max(need_cgroups, cg_dispatchd, workdir, procs):
    need("pids")
    bomb = procs.watch(script(workdir, "bomb.pl", """
        # every process forks for ever; a failed fork is tried again at once
        while (1) { fork; }
        """, shell="/usr/bin/perl"))
    h = {"on": "x", "exec": bomb, "timeout": "2s", "attempts": 1, "tasks_max": 20}
    if controller_missing("cpu") is None:
        h["cpu_max"] = "50%"        # spare the other work on this host
    agent = cg_dispatchd({"bomb": h})
    jid = job_of(agent, "x")
    most, slowest, t0 = 0, 0.0, time.monotonic()
    while not agent.job_results(jid):
        assert time.monotonic() - t0 < 10, "the bomb's job did not end"
        most = max(most, len(procs.pids(bomb)))
        t = time.monotonic()
        assert agent.ping()["ok"] is True
        slowest = max(slowest, time.monotonic() - t)
    (r,) = agent.job_results(jid)
    assert (r["outcome"], r["timed_out"]) == ("dead", "1"), r
    assert 10 <= most <= 20, "saw %d bomb processes at once" % most
    assert 10 <= int(r["tasks_peak"]) <= 20, r
    assert slowest < 0.5, "a ping took %.3fs during the bomb" % slowest
    procs.gone(bomb, timeout=1.0)
    assert job_cgroups(agent.name) == []


def test_memory_hog_oom_killed_in_its_cgroup_and_retried(need_cgroups, cg_dispatchd,
                                                         workdir, procs):
    need("memory")
    hog = procs.watch(script(workdir, "hog.py", """
        hog = b"\\1" * (200 << 20)      # 200 MB, every page written
        print("survived", len(hog))
        """, shell="/usr/bin/python3"))
    agent = cg_dispatchd({"hog": {"on": "x", "exec": hog, "memory_max": "50m",
                                  "attempts": 2, "backoff": "100ms..100ms"}})
    rss0 = vm_rss_kb(agent.pid)
    jid = job_of(agent, "x")
    rs = agent.wait_results(jid, 2, timeout=15)
    rss1 = vm_rss_kb(agent.pid)
    assert [r["outcome"] for r in rs] == ["retry", "dead"], rs
    for r in rs:
        assert (r["signal"], r["exit"]) == ("9", ""), r
        assert r["error"].startswith(OOM_TEXT), r
        assert int(r["oom_kills"]) >= 1, r
        assert int(r["memory_peak"]) <= 50 * MiB + 4096, r
        assert "survived" not in r["stdout"], r
    assert rss1 - rss0 < 8 * 1024, "agent VmRSS %d kB -> %d kB" % (rss0, rss1)
    assert agent.alive()
    procs.gone(hog, timeout=1.0)
    assert job_cgroups(agent.name) == []


def test_cancel_from_another_agent_takes_the_escapee_too(need_cgroups, cg_dispatchd,
                                                         workdir, record_dir, procs):
    esc, main = procs.sleep_arg(), procs.sleep_arg()
    h = script(workdir, "cancelme.sh", """
        setsid sleep %s </dev/null >/dev/null 2>&1 &
        echo $! > %s/$DISPATCH_JOB_ID.esc
        sleep %s
        """ % (esc, record_dir, main))
    a = cg_dispatchd({"slow": {"on": "x", "exec": h}})
    b = cg_dispatchd({"other": {"on": "y", "exec": "/bin/true"}})
    jid = job_of(a, "x")
    wait_for(lambda: procs.pids(esc) and procs.pids(main), 5, what="handler and escapee")
    escapee = int(wait_for(lambda: (record_dir / (jid + ".esc")).read_text().strip()
                           if (record_dir / (jid + ".esc")).exists() else None, 5))
    assert pid_alive(escapee) and len(job_cgroups(a.name)) >= 1

    p = au.ctl("-s", b.sock, "cancel", jid)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "it is running on agent %s" % a.name in p.stdout, p.stdout

    def cancelled():
        rs = a.job_results(jid)
        return rs if rs and rs[-1]["outcome"] == "cancelled" else None
    (r,) = wait_for(cancelled, 5, what="the cancelled result")
    assert (r["agent"], r["error"]) == (a.name, CANCEL_TEXT), r
    procs.gone(esc, main, timeout=1.0)
    assert not pid_alive(escapee)
    assert job_cgroups(a.name) == []


USAGE_C = r"""
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* usage MB MS: write MB megabytes, burn MS ms of user CPU, say what it took */
int
main(int argc, char **argv)
{
	size_t		 mb = strtoul(argv[1], NULL, 10);
	long		 ms = strtol(argv[2], NULL, 10), i;
	volatile long	 x = 0;
	struct rusage	 ru;
	char		*p;

	if (mb > 0) {
		if ((p = malloc(mb << 20)) == NULL)
			return 1;
		memset(p, 1, mb << 20);
	}
	for (;;) {
		getrusage(RUSAGE_SELF, &ru);
		if (ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec >= ms * 1000L)
			break;
		for (i = 0; i < 200000; i++)
			x += i;
	}
	printf("%ld %ld %ld\n", ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec,
	    ru.ru_stime.tv_sec * 1000000L + ru.ru_stime.tv_usec, ru.ru_maxrss);
	return 0;
}
"""


def test_peak_memory_and_cpu_time_match_the_handler(need_cgroups, cg_dispatchd, workdir,
                                                    procs):
    need("memory")
    src = Path(workdir) / "usage.c"
    src.write_text(USAGE_C)
    prog = str(Path(workdir) / "usage")
    cc = run([os.environ.get("CC", "cc"), "-O0", "-o", prog, src], timeout=60)
    assert cc.returncode == 0, cc.stderr
    procs.watch(prog)
    agent = cg_dispatchd({
        "mem100": {"on": "mem100", "exec": "%s 100 0" % prog, "memory_max": "500m"},
        "mem0": {"on": "mem0", "exec": "%s 0 0" % prog, "memory_max": "500m"},
        "burn": {"on": "burn", "exec": "%s 0 500" % prog},
    })
    j100, j0, jburn = (job_of(agent, e) for e in ("mem100", "mem0", "burn"))
    (r100,) = agent.wait_results(j100, timeout=10)
    (r0,) = agent.wait_results(j0, timeout=10)
    (rb,) = agent.wait_results(jburn, timeout=20)
    for r in (r100, r0, rb):
        assert r["outcome"] == "done", r

    want = 100 * MiB
    peak100, peak0 = int(r100["memory_peak"]), int(r0["memory_peak"])
    assert abs(peak100 - want) <= want // 10, (peak100, peak0)
    assert abs((peak100 - peak0) - want) <= want // 10, (peak100, peak0)
    assert peak0 < 10 * MiB, peak0

    self_user = int(rb["stdout"].split()[0])       # getrusage in the handler
    user = int(rb["cpu_user_us"])
    assert 500000 <= self_user < 600000, rb["stdout"]
    assert abs(user - 500000) <= 50000, (user, self_user)
    assert abs(user - self_user) <= self_user // 10, (user, self_user)
    assert int(rb["cpu_system_us"]) < 100000, rb


def test_restart_after_kill9_sweeps_job_cgroups_and_escapees(need_cgroups, cg_dispatchd,
                                                             workdir, record_dir, procs):
    esc, main = procs.sleep_arg(), procs.sleep_arg()
    h = script(workdir, "once.sh", """
        # the first run leaves an escapee and runs on; a rerun is done at once
        [ -e %(rec)s/$DISPATCH_JOB_ID.ran ] && exit 0
        : > %(rec)s/$DISPATCH_JOB_ID.ran
        setsid sleep %(esc)s </dev/null >/dev/null 2>&1 &
        exec sleep %(main)s
        """ % {"rec": record_dir, "esc": esc, "main": main})
    agent = cg_dispatchd({"k": {"on": "x", "exec": h, "backoff": "100ms..100ms"}})
    tree = agent_subtree(agent)
    jids = [job_of(agent, "x") for _ in range(3)]
    wait_for(lambda: len(procs.pids(esc)) == 3 and len(procs.pids(main)) == 3 and
             len(job_cgroups(agent.name)) >= 3, 5, what="3 jobs with escapees running")

    agent.kill9()
    # the handlers die with the agent (parent-death signal); the escapees
    # and the job cgroups are what a previous life leaves
    procs.gone(main, timeout=2.0)
    assert len(procs.pids(esc)) == 3, procs.describe(esc)
    assert len([j for j in job_cgroups(agent.name) if j.startswith(tree)]) == 3

    agent.restart()
    assert agent_subtree(agent) == tree
    procs.gone(esc, main, timeout=3.0)
    wait_for(lambda: job_cgroups(agent.name) == [], 3,
             what="no job cgroup (have %r)" % job_cgroups(agent.name))
    for jid in jids:
        rs = agent.wait_final(jid, timeout=10)
        assert rs[-1]["outcome"] == "done", rs
    wait_for(lambda: job_cgroups(agent.name) == [], 2, what="no job cgroup after reruns")


def test_no_job_cgroup_left_after_thousands_of_jobs_and_a_reload(need_cgroups,
                                                                 cg_dispatchd, workdir,
                                                                 procs):
    esc = procs.sleep_arg()
    leaves = script(workdir, "leaves.sh", """
        setsid sleep %s </dev/null >/dev/null 2>&1 &
        exit 0
        """ % esc)
    agent = cg_dispatchd({"t": {"on": "t", "exec": "/bin/true"},
                          "e": {"on": "e", "exec": leaves}},
                         agent_opts={"workers": 8})
    trees = subtrees(agent.name)

    def batch(n):
        with agent.connect(timeout=30) as c:
            reps = c.requests([{"op": "emit", "event": "t"}] * n +
                              [{"op": "emit", "event": "e"}] * 3)
        assert all(r.get("ok") for r in reps), [r for r in reps if not r.get("ok")][:3]
        return [r["jobs"][0]["id"] for r in reps]

    # the reloaded t has a memory limit where the host can enforce one
    text = agent.conf.read_text()
    limited = controller_missing("memory") is None
    if limited:
        text = text.replace("[handler t]\n", "[handler t]\nmemory_max = 100m\n")
    agent.conf.write_text(text + "\n")
    first = batch(1000)
    os.kill(agent.pid, signal.SIGHUP)       # while they run
    assert len(agent.results()) < len(first), "all done before the reload"
    au.log_has(agent, r"reload: .*: 2 handlers")
    second = batch(1000)
    want = len(first) + len(second)
    wait_for(lambda: len(agent.results()) >= want, 45, interval=0.2,
             what="%d results (have %d)" % (want, len(agent.results())))
    rs = agent.results()
    bad = [{k: v for k, v in r.items() if k != "_raw"} for r in rs if r["outcome"] != "done"]
    assert not bad, "%d not done, e.g. %r" % (len(bad), bad[:3])
    if limited:
        after = set(second)
        assert all(int(r.get("memory_peak", "0")) > 0 for r in rs
                   if r["job"] in after and r["handler"] == "t"), "reload not in force"
    wait_for(lambda: job_cgroups(agent.name) == [], 3,
             what="no job cgroup (have %d)" % len(job_cgroups(agent.name)))
    procs.gone(esc, timeout=2.0)
    # and a clean exit removes the subtrees themselves
    assert agent.stop() == 0
    assert trees and not any(os.path.exists(t) for t in trees), subtrees(agent.name)


def test_leftovers_wait_lets_the_child_finish_kill_does_not(need_cgroups, cg_dispatchd,
                                                            workdir, record_dir, procs):
    late = procs.sleep_arg(1)
    h = script(workdir, "late.sh", """
        setsid sh -c 'sleep %s; : > "$1"' sh %s/$DISPATCH_JOB_ID.late \\
            </dev/null >/dev/null 2>&1 &
        exit 0
        """ % (late, record_dir))
    procs.watch(h)
    agent = cg_dispatchd({"waits": {"on": "w", "exec": h, "leftovers": "wait",
                                    "timeout": "10s"},
                          "kills": {"on": "k", "exec": h}})
    jw, jk = job_of(agent, "w"), job_of(agent, "k")
    # the result, when it appears, comes after the file
    rw = wait_for(lambda: agent.job_results(jw), 6, interval=0.005, what="wait's result")
    assert (record_dir / (jw + ".late")).exists(), rw
    (rw,) = rw
    assert (rw["outcome"], rw["exit"], rw["leftovers"]) == ("done", "0", "1"), rw
    assert int(rw["duration_ms"]) >= 1000, rw

    (rk,) = agent.wait_results(jk, timeout=5)
    assert (rk["outcome"], rk["exit"], rk["leftovers"]) == ("done", "0", "1"), rk
    assert int(rk["duration_ms"]) < 1000, rk
    procs.gone(late, timeout=1.0)
    assert stays(lambda: not (record_dir / (jk + ".late")).exists(), 1.5)
    assert job_cgroups(agent.name) == []


def conf_text(workdir, agent_extra="", handler_extra="", name=None):
    """A config for dispatchd -t; returns (path, lines)."""
    text = ("[agent]\n"
            "name = %s\n"
            "redis = unix:%s/redis.sock\n"
            "socket = %s/agent.sock\n"
            "%s"
            "\n"
            "[handler h]\n"
            "on = x\n"
            "exec = /bin/true\n"
            "%s") % (name or "cgt-" + secrets.token_hex(4), workdir, workdir,
                     agent_extra, handler_extra)
    path = Path(workdir) / "check.conf"
    path.write_text(text)
    return path, text.splitlines()


def line_of(lines, needle):
    hits = [i + 1 for i, l in enumerate(lines) if l == needle]
    assert len(hits) == 1, (needle, lines)
    return hits[0]


def test_cgroup_off_refuses_limits_and_runs_process_groups(cg_dispatchd, workdir, procs):
    # a handler's limit, and an [agent] default one, cannot be enforced
    for agent_extra, handler_extra, key_line in (
            ("cgroup = off\n", "memory_max = 64m\n", "memory_max = 64m"),
            ("cgroup = off\ntasks_max = 10\n", "", "tasks_max = 10")):
        path, lines = conf_text(workdir, agent_extra, handler_extra)
        p = run([ddtest.DISPATCHD, "-t", "-c", path])
        want = "%s:%d: [handler h] %s: cannot be enforced" % (
            path, line_of(lines, key_line), key_line.split()[0])
        assert p.returncode == 78 and want in p.stderr, (want, p.returncode, p.stderr)
    path, _ = conf_text(workdir, "cgroup = off\n")
    p = run([ddtest.DISPATCHD, "-t", "-c", path])
    assert p.returncode == 0, (p.returncode, p.stderr)

    # no limits: jobs run as before, each in a process group of its own
    h = script(workdir, "where.sh", """
        echo "$$ $(cut -d' ' -f5,6 /proc/$$/stat)"
        grep '^0::' /proc/self/cgroup || echo 0::none
        """)
    agent = cg_dispatchd({"where": {"on": "x", "exec": h}}, agent_opts={"cgroup": "off"})
    (r,) = agent.wait_results(job_of(agent, "x"), timeout=5)
    assert (r["outcome"], r["exit"]) == ("done", "0"), r
    ids, cg = r["stdout"].splitlines()
    pid, pgrp, sid = ids.split()
    assert pid == pgrp == sid, r["stdout"]
    mine = own_cgroups().get("v2")
    if mine is not None:
        assert cg == "0::" + mine, (cg, mine)
        assert own_cgroups(agent.pid)["v2"] == mine     # the agent did not move
    assert "cpu_user_us" not in r and "leftovers" not in r, r
    assert subtrees(agent.name) == []


def memory_is_v1_only():
    """True where memory limits go through the v1 memory controller."""
    own = own_cgroups()
    try:
        with open(os.path.join(_join(CG2, own["v2"]), "cgroup.controllers")) as f:
            if "memory" in f.read().split() and own["v2"] == "/":
                return False
    except (OSError, KeyError, TypeError):
        pass
    return controller_missing("memory") is None


def test_swap_limit_on_v1_needs_memory_max(need_cgroups, cg_dispatchd, workdir, procs):
    need("memory")
    if not memory_is_v1_only():
        pytest.skip("memory limits go through cgroup2 here: swap is a limit of its own")
    # v1 limits memory and swap together: swap alone cannot be said
    path, lines = conf_text(workdir, "", "memory_swap_max = 0\n")
    p = run([ddtest.DISPATCHD, "-t", "-c", path])
    want = "%s:%d: [handler h] memory_swap_max: needs memory_max" % (
        path, line_of(lines, "memory_swap_max = 0"))
    assert p.returncode == 78 and want in p.stderr, (want, p.returncode, p.stderr)
    # with it, both are written and the job runs
    agent = cg_dispatchd({"h": {"on": "x", "exec": "/bin/true", "memory_max": "64m",
                                "memory_swap_max": "0"}})
    (r,) = agent.wait_results(job_of(agent, "x"), timeout=5)
    assert (r["outcome"], r["exit"], r["error"]) == ("done", "0", ""), r
    assert 0 < int(r["memory_peak"]) < 64 * MiB, r
    assert job_cgroups(agent.name) == []


def test_status_shows_the_cgroup_mode(cg_dispatchd, workdir, procs):
    off = cg_dispatchd({"h": {"on": "x", "exec": "/bin/true"}}, agent_opts={"cgroup": "off"})
    auto = cg_dispatchd({"h": {"on": "x", "exec": "/bin/true"}})
    for agent in (off, auto):
        rep = agent.request({"op": "status"})
        assert isinstance(rep.get("cgroup"), str), rep
        p = au.ctl_ok("-s", agent.sock, "status")
        assert "cgroups: %s" % rep["cgroup"] in p.stdout.splitlines(), p.stdout
        if agent is off:
            assert rep["cgroup"].startswith("off (cgroup = off)"), rep["cgroup"]
        elif cgroups_missing() is None:
            assert rep["cgroup"].startswith(agent_subtree(auto)), rep["cgroup"]
            if controller_missing("memory") is None:
                assert "memory_max" in rep["cgroup"], rep["cgroup"]
        else:
            assert rep["cgroup"].startswith("off: "), rep["cgroup"]


BAD_VALUES = [
    ("handler", "memory_max = lots"),
    ("handler", "cpu_max = 0%"),
    ("handler", "tasks_max = 0"),
    ("handler", "leftovers = maybe"),
    ("agent", "cgroup = yes"),
    ("agent", "memory_max = lots"),
    ("handler", "io_weight = 10001"),
    ("handler", "memory_swap_max = lots"),
]


@pytest.mark.parametrize("section,line", BAD_VALUES,
                         ids=["%s-%s" % (s, l.split()[0]) for s, l in BAD_VALUES])
def test_bad_limit_values_refused_with_file_line_and_key(workdir, section, line):
    extra = line + "\n"
    path, lines = conf_text(workdir, extra if section == "agent" else "",
                            extra if section == "handler" else "")
    p = run([ddtest.DISPATCHD, "-t", "-c", path])
    key, value = line.split(" = ")
    where = "%s:%d: [%s] %s: '%s' is not" % (
        path, line_of(lines, line), "handler h" if section == "handler" else "agent",
        key, value)
    assert p.returncode == 78 and where in p.stderr, (where, p.returncode, p.stderr)
