"""dispatchctl cancel of a RUNNING job (README "Looking after jobs",
doc/PROTOCOL.md "cancel", doc/ARCHITECTURE.md "Cancelling a running job").

The admin script marks the job and publishes "c <jid>" on the notify
channel; the agent holding its lease stops the handler (SIGTERM, SIGKILL
after kill_grace) and its finish records the run `cancelled`: no retry, the
job deleted.  Without the hint, the heartbeat's extend reports the mark; with
the agent dead, lease recovery records it.  Real redis-server, real agents,
the real dispatchctl; every wait polls with a deadline.
"""

import os
import signal
from pathlib import Path

import pytest

import admin_util as au
from admin_util import ctl, ctl_json
from harness import invariants, scripts
from harness.ddtest import pid_alive, stays, wait_for

CANCEL_TEXT = "cancelled by an administrator while running"
FORGOTTEN = "no such job: it finished, was cancelled or never existed"


@pytest.fixture
def pids():
    """Handler pids a test saw; any still alive at the end (the agent should
    have ended them all) are ended here, by PID, and only if still `sleep`."""
    seen = []
    yield seen
    for pid in seen:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if not f.read().startswith(b"sleep\0"):
                    continue
            os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def slow(handler, record_dir, **kw):
    """A handler that becomes `sleep 300` after writing its pid."""
    h = {"on": "x", "exec": "%s %s" % (handler("pidsleep.sh"), record_dir)}
    h.update(kw)
    return h


def started(agent, record_dir, pids):
    """Emit x and wait until its handler runs; (job id, handler pid)."""
    jid = agent.emit("x")["jobs"][0]["id"]
    path = Path(record_dir) / (jid + ".pid")
    wait_for(path.exists, 10, what="handler of %s to start" % jid)
    pid = int(path.read_text())
    pids.append(pid)
    assert pid_alive(pid)
    return jid, pid


def cancelled(agent, jid, timeout=5.0):
    """Wait for the job's cancelled entry; return its results."""
    def ok():
        rs = agent.job_results(jid)
        return rs if rs and rs[-1]["outcome"] == "cancelled" else None
    return wait_for(ok, timeout, what="a cancelled result for %s (have %r)"
                    % (jid, agent.job_results(jid)))


def assert_gone_for_good(agent, jid):
    """Deleted, in no queue, and no further run or result."""
    r = agent.redis.client()
    assert not r.exists(agent.key("job:" + jid))
    assert r.zscore(agent.key("delayed"), jid) is None
    assert r.zscore(agent.key("leases"), jid) is None
    assert r.zscore(agent.key("dead"), jid) is None
    n = len(agent.job_results(jid))
    assert stays(lambda: len(agent.job_results(jid)) == n, 1.5), agent.job_results(jid)


def test_cancel_running_job_through_its_agent(dispatchd, handler, record_dir, pids):
    agent = dispatchd({"slow": slow(handler, record_dir)})
    jid, pid = started(agent, record_dir, pids)

    p = ctl("-s", agent.sock, "cancel", jid)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.startswith("cancelling job %s: it is running on agent dt-agent, "
                               "which stops it within a second" % jid), p.stdout
    wait_for(lambda: not pid_alive(pid), 2.0, what="handler %d to be gone" % pid)
    (r,) = cancelled(agent, jid)
    assert (r["attempt"], r["agent"], r["signal"], r["exit"], r["error"]) == \
        ("1", "dt-agent", "15", "", CANCEL_TEXT), r
    au.log_has(agent, r"job %s: cancelled by an administrator \(heard on pub/sub\)" % jid)
    assert_gone_for_good(agent, jid)
    # dispatchctl job: gone, with its cancelled run
    p, rep = ctl_json(agent.sock, "job", jid)
    assert rep["job"] is None and [x["outcome"] for x in rep["results"]] == ["cancelled"]
    # once it is gone, cancelling it again is a clear error
    p = ctl("-s", agent.sock, "cancel", jid)
    assert p.returncode == 1 and "not_found: " + FORGOTTEN in p.stderr, (p.returncode,
                                                                         p.stderr)

    # --json: the count, and that it is being cancelled where
    jid2, pid2 = started(agent, record_dir, pids)
    p, rep = ctl_json(agent.sock, "cancel", jid2)
    assert p.returncode == 0 and rep == {"ok": True, "count": 1, "cancelling": True,
                                         "agent": "dt-agent"}, rep
    cancelled(agent, jid2)
    wait_for(lambda: not pid_alive(pid2), 2.0, what="handler %d to be gone" % pid2)
    # counted as a fate of its own
    fams = au.parse_prometheus(au.ctl_ok("-s", agent.sock, "metrics").stdout)
    assert au.sample(fams, "dispatchd_jobs_total", handler="slow", outcome="cancelled") == 2
    assert au.sample(fams, "dispatchd_jobs_total", handler="slow", outcome="retry") == 0


def test_cancel_through_another_agents_socket(dispatchd, handler, record_dir, pids):
    a = dispatchd({"slow": slow(handler, record_dir)}, name="runner")
    b = dispatchd({"other": {"on": "y", "exec": "/bin/true"}}, name="bystander")
    jid, pid = started(a, record_dir, pids)

    p = ctl("-s", b.sock, "cancel", jid)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "it is running on agent runner" in p.stdout, p.stdout
    wait_for(lambda: not pid_alive(pid), 2.0, what="handler %d to be gone" % pid)
    (r,) = cancelled(a, jid)
    assert (r["agent"], r["error"]) == ("runner", CANCEL_TEXT), r
    au.log_has(a, r"job %s: cancelled by an administrator \(heard on pub/sub\)" % jid)
    au.log_has(b, r"admin: cancel: job %s runs on agent runner" % jid)
    assert_gone_for_good(a, jid)
    assert a.ping()["running"] == 0
    invariants.check(a.redis.client(), a.ns, [jid], name="cancel via another agent")


def test_cancel_kills_a_handler_ignoring_sigterm_after_kill_grace(dispatchd, handler,
                                                                   workdir):
    pidfile = workdir / "pids"
    agent = dispatchd({"stubborn": {"on": "x", "exec": "%s %s" % (handler("stubborn.sh"),
                                                                 pidfile)}},
                      agent_opts={"kill_grace": "1s"})
    jid = agent.emit("x")["jobs"][0]["id"]
    wait_for(pidfile.exists, 10, what="stubborn handler to start")
    procs = [int(x) for x in pidfile.read_text().split()]
    p = ctl("-s", agent.sock, "cancel", jid)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    au.log_has(agent, r"job %s: cancelled by an administrator" % jid)
    # SIGTERM is ignored: alive through most of the grace, then SIGKILLed
    assert stays(lambda: all(pid_alive(x) for x in procs), 0.6)
    wait_for(lambda: not any(pid_alive(x) for x in procs), 3.0,
             what="stubborn handler and its child to be gone")
    (r,) = cancelled(agent, jid)
    assert (r["signal"], r["timed_out"], r["error"]) == ("9", "0", CANCEL_TEXT), r
    assert 1000 <= int(r["duration_ms"]), r
    assert_gone_for_good(agent, jid)


def test_cancel_with_the_hint_lost_happens_within_a_heartbeat(dispatchd, handler,
                                                               record_dir, pids, workdir):
    """The admin script run with no notify channel marks the job and
    publishes nothing, as when the hint is lost: the agent's next heartbeat
    (every lease/3, here 1 s) finds the mark and stops the handler."""
    agent = dispatchd({"slow": slow(handler, record_dir)}, agent_opts={"lease": "3s"})
    jid, pid = started(agent, record_dir, pids)
    admin = scripts.load(workdir / "scripts")["admin"]
    k = agent.key
    rep = agent.redis.client().eval(admin, 3, k("delayed"), k("dead"), k("results"),
                                    "{dt}:", "cancel", jid, 0, 1, 1000, "")
    assert rep == [1, b"cancelling", b"dt-agent"]
    wait_for(lambda: not pid_alive(pid), 1.0 + 1.5, what="handler %d to be gone" % pid)
    (r,) = cancelled(agent, jid)
    assert r["error"] == CANCEL_TEXT, r
    au.log_has(agent, r"job %s: cancelled by an administrator \(reported by the "
               r"heartbeat\)" % jid)
    assert "heard on pub/sub" not in agent.stderr()
    assert_gone_for_good(agent, jid)


def test_cancel_of_a_finished_job_is_an_error(dispatchd):
    agent = dispatchd({"quick": {"on": "x", "exec": "/bin/true"}})
    jid = agent.emit("x")["jobs"][0]["id"]
    assert agent.wait_final(jid)[-1]["outcome"] == "done"
    p = ctl("-s", agent.sock, "cancel", jid)
    assert p.returncode == 1 and "not_found: " + FORGOTTEN in p.stderr, (p.returncode,
                                                                         p.stderr)
    p, rep = ctl_json(agent.sock, "cancel", jid)
    assert p.returncode == 1 and rep == {"ok": False, "code": "not_found",
                                         "error": FORGOTTEN}, rep
    assert [r["outcome"] for r in agent.job_results(jid)] == ["done"]


def test_lease_recovery_of_a_cancelled_job_whose_agent_died(dispatchd, handler,
                                                             record_dir, pids):
    """The agent running the job is kill -9'd; the cancel, sent to another
    agent (which serves the same handler, so a retry would run there), marks
    the job; lease recovery then records it cancelled instead of retrying."""
    a = dispatchd({"slow": slow(handler, record_dir)}, name="doomed",
                  agent_opts={"lease": "3s"})
    jid, pid = started(a, record_dir, pids)
    b = dispatchd({"slow": slow(handler, record_dir)}, name="survivor",
                  agent_opts={"lease": "3s"})
    a.kill9()
    p = ctl("-s", b.sock, "cancel", jid)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "it is running on agent doomed" in p.stdout, p.stdout
    # the lease expires 3 s after doomed's last renewal; recovery runs every
    # 2 s with 1 s of grace
    (r,) = cancelled(b, jid, timeout=12)
    assert (r["agent"], r["attempt"], r["error"]) == \
        ("doomed", "1", CANCEL_TEXT + "; lease expired"), r
    wait_for(lambda: not pid_alive(pid), 5, what="handler %d to die with its agent" % pid)
    assert_gone_for_good(b, jid)
    assert not (Path(record_dir) / (jid + ".pid.tmp")).exists()
    assert b.ping()["running"] == 0
    invariants.check(b.redis.client(), b.ns, [jid], name="cancel, then recovery")
