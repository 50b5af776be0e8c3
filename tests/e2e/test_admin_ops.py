"""dispatchctl admin commands (status, jobs, job, cancel, retry, purge,
results, handlers, check, run, metrics) against a real agent, through the
real CLI binary (subprocess, -s SOCKET)."""

import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

import admin_util as au
from harness import ddtest
from admin_util import ctl, ctl_json, ctl_ok
from harness.ddtest import stays, wait_for

BLOCK_SH = """#!/bin/sh
# block.sh FILE: wait until FILE exists (the test releases it), then exit 0.
cat >/dev/null
while [ ! -e "$1" ]; do sleep 0.02; done
exit 0
"""

FLAGFAIL_SH = """#!/bin/sh
# flagfail.sh FLAG: fail (exit 1) while FLAG exists, succeed otherwise.
cat >/dev/null
if [ -e "$1" ]; then echo "flag present" >&2; exit 1; fi
echo "flag gone"
exit 0
"""


@pytest.fixture
def bindir(workdir):
    return au.script_dir(workdir)


@pytest.fixture
def release(workdir, dispatchd):
    """A file that block.sh handlers wait for; created at teardown (before
    the agent is stopped) so running handlers end quickly."""
    path = workdir / "release"
    yield path
    path.touch()


def sock_args(agent):
    return ["-s", str(agent.sock)]


def jobs_of(agent, *args):
    p, rep = ctl_json(agent.sock, "jobs", *args)
    assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return rep["jobs"]


def emit_job(agent, event, **kw):
    rep = agent.emit(event, **kw)
    assert len(rep["jobs"]) == 1, rep
    return rep["jobs"][0]["id"]


def wait_state(agent, job_id, state, timeout=10.0):
    def ok():
        p, rep = ctl_json(agent.sock, "job", job_id)
        return rep if p.returncode == 0 and (rep.get("job") or {}).get("state") == state else None
    return wait_for(ok, timeout, what="job %s in state %s" % (job_id, state))


def table_rows(text, header_word):
    """Rows (split on blanks) of the table whose header starts with header_word."""
    lines = text.splitlines()
    for i, l in enumerate(lines):
        if l.startswith(header_word):
            out = []
            for r in lines[i + 1:]:
                if not r.strip():
                    break
                out.append(r.split())
            return out
    raise AssertionError("no %s table in %r" % (header_word, text))


# ------------------------------------------------------------- status ----

def test_status_table_and_json(dispatchd, bindir, release):
    block = au.write_script(bindir, "block.sh", BLOCK_SH)
    agent = dispatchd({
        "ok": {"on": "e.ok", "exec": "/bin/true"},
        "bad": {"on": "e.bad", "exec": "/bin/false", "attempts": 1},
        "slow": {"on": "e.slow", "exec": "%s %s" % (block, release), "concurrency": 1},
    })
    done_id = emit_job(agent, "e.ok")
    dead_id = emit_job(agent, "e.bad")
    agent.wait_final(done_id)
    agent.wait_final(dead_id)
    emit_job(agent, "e.ok", delay=300)
    run1 = emit_job(agent, "e.slow")
    wait_state(agent, run1, "running")
    emit_job(agent, "e.slow")  # concurrency 1: stays ready

    p, rep = ctl_json(agent.sock, "status")
    assert p.returncode == 0, p
    assert rep["ok"] is True and rep["redis"] is True
    hs = {h["name"]: h for h in rep["handlers"]}
    assert sorted(hs) == ["bad", "ok", "slow"]
    want = {
        "ok": dict(ready=0, delayed=1, running=0, dead=0, done_1h=1, failed_1h=0),
        "bad": dict(ready=0, delayed=0, running=0, dead=1, done_1h=0, failed_1h=1),
        "slow": dict(ready=1, delayed=0, running=1, dead=0, done_1h=0, failed_1h=0),
    }
    for name, fields in want.items():
        got = {k: hs[name][k] for k in fields}
        assert got == fields, (name, hs[name])
    assert "oldest_ready_s" in hs["slow"] and 0 <= hs["slow"]["oldest_ready_s"] < 30, hs["slow"]
    assert rep["delayed_total"] == 1 and rep["dead_total"] == 1, rep
    agents = {a["name"]: a for a in rep["agents"]}
    a = agents["dt-agent"]
    assert a["alive"] is True, a
    assert 0 <= a["heartbeat_age_s"] < 10, a
    assert a["running"] == 1, a
    assert a["version"] == agent.ping()["version"], a
    assert a.get("host"), a

    # the table says the same
    p = ctl_ok(*sock_args(agent), "status")
    rows = {r[0]: r for r in table_rows(p.stdout, "HANDLER")}
    assert rows["slow"][1:7] == ["1", "0", "1", "0", "0", "0"], p.stdout
    assert rows["bad"][1:7] == ["0", "0", "0", "1", "0", "1"], p.stdout
    assert rows["ok"][1:7] == ["0", "1", "0", "0", "1", "0"], p.stdout
    arows = {r[0]: r for r in table_rows(p.stdout, "AGENT")}
    assert arows["dt-agent"][1] == "yes", p.stdout
    assert re.match(r"^[0-9.]+s$", arows["dt-agent"][2]), p.stdout


def test_status_shows_stopped_agent_not_alive(dispatchd):
    """A second agent (another name) that stopped is listed with alive=no
    (or dropped) at the latest once its lease ran out; the live one stays
    alive.  (Today a cleanly stopped agent is reported alive until its
    heartbeat key expires: see ADMIN_FINDINGS.md.)"""
    a1 = dispatchd({"ok": {"on": "e", "exec": "/bin/true"}})
    a2 = dispatchd({"ok": {"on": "e", "exec": "/bin/true"}}, name="other-agent",
                   agent_opts={"lease": "2s"})
    def both_alive():
        p, rep = ctl_json(a1.sock, "status")
        names = {a["name"]: a for a in rep["agents"]}
        return all(n in names and names[n]["alive"] for n in ("dt-agent", "other-agent"))
    wait_for(both_alive, 10, interval=0.2, what="both agents to be listed alive")
    assert a2.stop() == 0

    def gone():
        p, rep = ctl_json(a1.sock, "status")
        names = {a["name"]: a for a in rep["agents"]}
        assert names["dt-agent"]["alive"] is True, rep
        return "other-agent" not in names or names["other-agent"]["alive"] is False
    wait_for(gone, 6, interval=0.2, what="the stopped agent to be reported not alive")


# --------------------------------------------------------------- jobs ----

def test_jobs_state_handler_limit(dispatchd, bindir, release):
    block = au.write_script(bindir, "block.sh", BLOCK_SH)
    agent = dispatchd({
        "a": {"on": "e.a", "exec": "/bin/true"},
        "b": {"on": "e.b", "exec": "/bin/true"},
        "slow": {"on": "e.slow", "exec": "%s %s" % (block, release), "concurrency": 1},
        "bad": {"on": "e.bad", "exec": "/bin/false", "attempts": 1},
    })
    delayed_a = [emit_job(agent, "e.a", delay=300 + i) for i in range(3)]
    delayed_b = [emit_job(agent, "e.b", delay=300) for _ in range(2)]
    running = emit_job(agent, "e.slow")
    wait_state(agent, running, "running")
    ready = [emit_job(agent, "e.slow") for _ in range(2)]
    dead = emit_job(agent, "e.bad")
    agent.wait_final(dead)

    got = jobs_of(agent, "--state", "delayed")
    assert sorted(j["id"] for j in got) == sorted(delayed_a + delayed_b), got
    assert all(j["state"] == "delayed" for j in got), got
    got = jobs_of(agent, "--state", "delayed", "--handler", "a")
    assert [j["id"] for j in got] == delayed_a, ("oldest first", got)
    got = jobs_of(agent, "--state", "delayed", "--handler", "a", "--limit", "2")
    assert [j["id"] for j in got] == delayed_a[:2], got
    got = jobs_of(agent, "--state", "delayed", "--limit", "1")
    assert len(got) == 1, got

    got = jobs_of(agent, "--state", "ready")
    assert [j["id"] for j in got] == ready, got
    assert jobs_of(agent) == got, "default state is ready"
    assert jobs_of(agent, "--state", "ready", "--handler", "a") == []
    assert [j["id"] for j in jobs_of(agent, "--state", "ready", "--limit", "1")] == ready[:1]

    got = jobs_of(agent, "--state", "running")
    assert [j["id"] for j in got] == [running], got
    assert got[0]["handler"] == "slow" and got[0]["attempt"] == 1, got
    assert jobs_of(agent, "--state", "running", "--handler", "a") == []

    got = jobs_of(agent, "--state", "dead")
    assert [j["id"] for j in got] == [dead], got
    assert got[0]["state"] == "dead" and got[0]["handler"] == "bad" and got[0]["event"] == "e.bad"
    assert jobs_of(agent, "--state", "dead", "--handler", "b") == []

    # table form: one row per job, id and handler columns
    p = ctl_ok(*sock_args(agent), "jobs", "--state", "delayed", "--handler", "b")
    rows = table_rows(p.stdout, "JOB")
    assert sorted(r[0] for r in rows) == sorted(delayed_b), p.stdout
    assert all(r[1] == "b" and r[2] == "e.b" and r[3] == "delayed" for r in rows), p.stdout

    # bad arguments
    for args in (["--limit", "0"], ["--limit", "x"], ["--state"], ["--bogus"]):
        p = ctl(*sock_args(agent), "jobs", *args)
        assert p.returncode == 64, (args, p.returncode, p.stderr)
    p = ctl(*sock_args(agent), "jobs", "--state", "sideways")
    assert p.returncode in (1, 64) and p.stderr, (p.returncode, p.stderr)


# ---------------------------------------------------------------- job ----

def test_job_fields_and_results(dispatchd):
    agent = dispatchd({"bad": {"on": "e.bad", "exec": "/bin/sh -c 'echo hello-out; exit 3'",
                               "attempts": 1}})
    jid = emit_job(agent, "e.bad", data={"k": [1, "two"]})
    agent.wait_final(jid)
    p, rep = ctl_json(agent.sock, "job", jid)
    assert p.returncode == 0, p
    job = rep["job"]
    for k, v in dict(id=jid, handler="bad", event="e.bad", state="dead", attempt=1,
                     max_attempts=1, data={"k": [1, "two"]}).items():
        assert job.get(k) == v, (k, job)
    for k in ("event_id", "created_ms", "died_ms", "failures"):
        assert k in job, (k, job)
    assert len(rep["results"]) == 1, rep
    r = rep["results"][0]
    assert r["job"] == jid and r["outcome"] == "dead" and r["exit"] == "3", r
    assert r["stdout"] == "hello-out\n", r

    p = ctl_ok(*sock_args(agent), "job", jid)
    fields = dict(l.split(None, 1) for l in p.stdout.split("\nresults:")[0].splitlines() if l.strip())
    assert fields["id"] == jid and fields["state"] == "dead" and fields["handler"] == "bad", p.stdout
    assert json.loads(fields["data"]) == {"k": [1, "two"]}, p.stdout
    assert "dead" in p.stdout.split("results:")[1] and "hello-out" in p.stdout, p.stdout

    p = ctl(*sock_args(agent), "job", "no-such-job-id")
    assert p.returncode == 1 and "not_found" in p.stderr, (p.returncode, p.stderr)
    p = ctl(*sock_args(agent), "job")
    assert p.returncode == 64, p


def test_job_of_finished_job_is_null_with_results(dispatchd):
    agent = dispatchd({"ok": {"on": "e", "exec": "/bin/true"}})
    jid = emit_job(agent, "e")
    agent.wait_final(jid)
    p, rep = ctl_json(agent.sock, "job", jid)
    if p.returncode == 0:
        assert rep["job"] is None, rep
        assert [r["outcome"] for r in rep["results"]] == ["done"], rep
        p = ctl_ok(*sock_args(agent), "job", jid)
        assert "gone" in p.stdout and "done" in p.stdout, p.stdout
    else:
        # acceptable reading of PROTOCOL.md too: not_found once finished
        assert p.returncode == 1 and rep["code"] == "not_found", (p, rep)


# ------------------------------------------------------------- cancel ----

def test_cancel_ready_delayed_dead_running_unknown(dispatchd, bindir, release):
    block = au.write_script(bindir, "block.sh", BLOCK_SH)
    agent = dispatchd({
        "slow": {"on": "e.slow", "exec": "%s %s" % (block, release), "concurrency": 1},
        "later": {"on": "e.later", "exec": "/bin/true"},
        "bad": {"on": "e.bad", "exec": "/bin/false", "attempts": 1},
    })
    running = emit_job(agent, "e.slow")
    wait_state(agent, running, "running")
    ready = emit_job(agent, "e.slow")
    delayed = emit_job(agent, "e.later", delay=300)
    dead = emit_job(agent, "e.bad")
    agent.wait_final(dead)
    assert [j["id"] for j in jobs_of(agent, "--state", "ready")] == [ready]

    for jid, state in ((ready, "ready"), (delayed, "delayed"), (dead, "dead")):
        p = ctl(*sock_args(agent), "cancel", jid)
        assert p.returncode == 0, (state, p.returncode, p.stdout, p.stderr)
        assert "cancelled: 1 job" in p.stdout, p.stdout
        assert jid not in [j["id"] for j in jobs_of(agent, "--state", state)], state
        rs = agent.job_results(jid)
        assert rs and rs[-1]["outcome"] == "cancelled", (state, rs)
        p, rep = ctl_json(agent.sock, "job", jid)
        assert (p.returncode == 0 and rep["job"] is None) or \
            (p.returncode == 1 and rep["code"] == "not_found"), (state, rep)
        # cancelling it again: nothing left to cancel
        p = ctl(*sock_args(agent), "cancel", jid)
        assert p.returncode == 1 and "not_found" in p.stderr, (state, p.returncode, p.stderr)

    assert not agent.redis.client().exists(agent.key("job:%s" % ready))
    assert agent.redis.client().zscore(agent.key("delayed"), delayed) is None
    assert agent.redis.client().zscore(agent.key("dead"), dead) is None

    p = ctl(*sock_args(agent), "cancel", "0123456789abcdef0123456789abcdef")
    assert p.returncode == 1 and "not_found" in p.stderr, (p.returncode, p.stderr)
    p = ctl(*sock_args(agent), "cancel")
    assert p.returncode == 64, p

    # a running job is stopped by its agent and recorded cancelled
    # (tests/e2e/test_cancel_running.py has the rest)
    p, rep = ctl_json(agent.sock, "cancel", running)
    assert p.returncode == 0 and rep == {"ok": True, "count": 1, "cancelling": True,
                                         "agent": agent.name}, rep
    rs = wait_for(lambda: [r for r in agent.job_results(running)
                           if r["outcome"] == "cancelled"], 5, what="running job cancelled")
    assert [r["outcome"] for r in agent.job_results(running)] == ["cancelled"], rs
    assert jobs_of(agent, "--state", "running") == []

    # the cancelled ready job never runs
    release.touch()
    assert stays(lambda: agent.job_results(ready)[-1]["outcome"] == "cancelled", 0.5)


# -------------------------------------------------------------- retry ----

def final_again(agent, jid, n=2, timeout=10.0):
    """Wait for the n-th final (done/dead) result of a job; return all."""
    def ok():
        rs = agent.job_results(jid)
        return rs if len([r for r in rs if r["outcome"] in ("done", "dead")]) >= n else None
    return wait_for(ok, timeout, what="final result #%d of %s" % (n, jid))


def test_bulk_limit_is_what_was_asked(dispatchd):
    """retry --dead and purge --dead take every dead job by default (up to
    10000 a call) and exactly --limit when one is given, 20 included."""
    agent = dispatchd({"bad": {"on": "e", "exec": "/bin/false", "attempts": 1}})
    ids = [emit_job(agent, "e") for _ in range(25)]
    for jid in ids:
        agent.wait_final(jid)
    p, rep = ctl_json(agent.sock, "purge", "--dead", "--limit", "20")
    assert p.returncode == 0 and rep["count"] == 20, rep
    p, rep = ctl_json(agent.sock, "purge", "--dead")
    assert p.returncode == 0 and rep["count"] == 5, rep
    assert jobs_of(agent, "--state", "dead") == []


def test_retry_id_and_dead_with_handler(dispatchd, bindir, workdir):
    ff = au.write_script(bindir, "flagfail.sh", FLAGFAIL_SH)
    flag = workdir / "failing"
    flag.touch()
    agent = dispatchd({
        "f": {"on": "e.f", "exec": "%s %s" % (ff, flag), "attempts": 1},
        "g": {"on": "e.g", "exec": "%s %s" % (ff, flag), "attempts": 1},
    })
    f_ids = [emit_job(agent, "e.f") for _ in range(3)]
    g_id = emit_job(agent, "e.g")
    for jid in f_ids + [g_id]:
        assert agent.wait_final(jid)[-1]["outcome"] == "dead"
    assert sorted(j["id"] for j in jobs_of(agent, "--state", "dead")) == sorted(f_ids + [g_id])

    flag.unlink()  # the handler succeeds from now on

    p = ctl(*sock_args(agent), "retry", f_ids[0])
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "queued again: 1 job" in p.stdout, p.stdout
    rs = final_again(agent, f_ids[0])
    assert [r["outcome"] for r in rs] == ["dead", "done"], rs

    p, rep = ctl_json(agent.sock, "retry", "--dead", "--handler", "f")
    assert p.returncode == 0 and rep["count"] == 2, (p, rep)
    for jid in f_ids[1:]:
        rs = final_again(agent, jid)
        assert [r["outcome"] for r in rs] == ["dead", "done"], rs
    # g was not selected
    assert stays(lambda: [j["id"] for j in jobs_of(agent, "--state", "dead")] == [g_id], 0.3)

    p = ctl_ok(*sock_args(agent), "retry", "--dead")
    assert "queued again: 1 job" in p.stdout, p.stdout
    assert [r["outcome"] for r in final_again(agent, g_id)] == ["dead", "done"]
    assert jobs_of(agent, "--state", "dead") == []

    # nothing dead any more; unknown id; usage
    p, rep = ctl_json(agent.sock, "retry", "--dead")
    assert p.returncode == 0 and rep["count"] == 0, rep
    p = ctl(*sock_args(agent), "retry")
    assert p.returncode == 64, p


def test_retry_running_job_is_conflict(dispatchd, bindir, release):
    block = au.write_script(bindir, "block.sh", BLOCK_SH)
    agent = dispatchd({"slow": {"on": "e", "exec": "%s %s" % (block, release)}})
    jid = emit_job(agent, "e")
    wait_state(agent, jid, "running")
    p = ctl(*sock_args(agent), "retry", jid)
    assert p.returncode == 1 and "conflict" in p.stderr, (p.returncode, p.stderr)


def test_retried_dead_job_forgets_when_it_died(dispatchd, bindir, release):
    """A dead job put back by retry is ready, and no longer shows the time
    it died (workers = 1, held by a blocked job, so it stays ready)."""
    block = au.write_script(bindir, "block.sh", BLOCK_SH)
    agent = dispatchd({"bad": {"on": "e.bad", "exec": "/bin/false", "attempts": 1},
                       "slow": {"on": "e.slow", "exec": "%s %s" % (block, release)}},
                      agent_opts={"workers": 1})
    jid = emit_job(agent, "e.bad")
    assert wait_state(agent, jid, "dead")["job"].get("died_ms")
    wait_state(agent, emit_job(agent, "e.slow"), "running")
    ctl_ok(*sock_args(agent), "retry", jid)
    job = wait_state(agent, jid, "ready")["job"]
    assert "died_ms" not in job and job["failures"] in (0, "0"), job


def test_retry_unknown_id_is_not_found(dispatchd):
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}})
    p, rep = ctl_json(agent.sock, "retry", "0123456789abcdef0123456789abcdef")
    assert p.returncode == 1, (p.returncode, rep)
    assert rep["code"] == "not_found", rep


def test_retry_resets_failures(dispatchd, bindir, workdir):
    """A job retried by hand gets its failures reset: with attempts = 2 it
    is tried twice again (not once, not more)."""
    ff = au.write_script(bindir, "flagfail.sh", FLAGFAIL_SH)
    flag = workdir / "failing"
    flag.touch()
    agent = dispatchd({"f": {"on": "e", "exec": "%s %s" % (ff, flag), "attempts": 2,
                             "backoff": "50ms..100ms"}})
    jid = emit_job(agent, "e")
    assert [r["outcome"] for r in agent.wait_final(jid)] == ["retry", "dead"]
    ctl_ok(*sock_args(agent), "retry", jid)
    rs = final_again(agent, jid)[2:]
    assert [r["outcome"] for r in rs] == ["retry", "dead"], rs
    assert stays(lambda: len(agent.job_results(jid)) == 4, 0.5), agent.job_results(jid)
    assert [j["id"] for j in jobs_of(agent, "--state", "dead")] == [jid]


# -------------------------------------------------------------- purge ----

def test_purge_dead_older_than(dispatchd):
    agent = dispatchd({"bad": {"on": "e.bad", "exec": "/bin/false", "attempts": 1},
                       "bad2": {"on": "e.bad2", "exec": "/bin/false", "attempts": 1}})
    old = emit_job(agent, "e.bad")
    agent.wait_final(old)
    t_old = time.time()
    p, rep = ctl_json(agent.sock, "purge", "--dead", "--older-than", "1h")
    assert p.returncode == 0 and rep["count"] == 0, rep
    wait_for(lambda: time.time() - t_old > 1.3, 5, what="the old dead job to age")
    new = emit_job(agent, "e.bad")
    other = emit_job(agent, "e.bad2")
    agent.wait_final(new)
    agent.wait_final(other)
    p = ctl(*sock_args(agent), "purge", "--dead", "--older-than", "1s")
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert "purged: 1 job" in p.stdout, p.stdout
    dead = sorted(j["id"] for j in jobs_of(agent, "--state", "dead"))
    assert dead == sorted([new, other]), dead
    assert not agent.redis.client().exists(agent.key("job:%s" % old))

    p, rep = ctl_json(agent.sock, "purge", "--dead", "--handler", "bad2")
    assert p.returncode == 0 and rep["count"] == 1, rep
    assert [j["id"] for j in jobs_of(agent, "--state", "dead")] == [new]
    p, rep = ctl_json(agent.sock, "purge", "--dead")
    assert p.returncode == 0 and rep["count"] == 1, rep
    assert jobs_of(agent, "--state", "dead") == []

    for args in (["purge"], ["purge", "--dead", "--older-than", "soon"], ["purge", "someid"]):
        p = ctl(*sock_args(agent), *args)
        assert p.returncode == 64, (args, p.returncode, p.stderr)


# ------------------------------------------------------------ results ----

def test_results_n_handler_event(dispatchd):
    agent = dispatchd({
        "a": {"on": "x.*", "exec": "/bin/true"},
        "b": {"on": "x.one", "exec": "/bin/true"},
    })
    jobs = []
    for ev in ("x.one", "x.two", "x.one"):
        for j in agent.emit(ev)["jobs"]:
            jobs.append((ev, j["handler"], j["id"]))
            agent.wait_final(j["id"])
    all_results = agent.results()
    assert len(all_results) == 5

    p, rep = ctl_json(agent.sock, "results", "-n", "2")
    assert p.returncode == 0
    assert [r["id"] for r in rep["results"]] == [r["_id"] for r in all_results[-2:]], \
        "last 2, oldest first"
    assert rep["last"] == all_results[-1]["_id"]

    p, rep = ctl_json(agent.sock, "results", "--handler", "b")
    assert [r["job"] for r in rep["results"]] == [j for ev, h, j in jobs if h == "b"], rep
    p, rep = ctl_json(agent.sock, "results", "--event", "x.two")
    assert [r["job"] for r in rep["results"]] == [j for ev, h, j in jobs if ev == "x.two"], rep
    p, rep = ctl_json(agent.sock, "results", "--event", "x.one", "--handler", "a", "-n", "1")
    assert [r["job"] for r in rep["results"]] == \
        [j for ev, h, j in jobs if ev == "x.one" and h == "a"][-1:], rep
    p, rep = ctl_json(agent.sock, "results", "--event", "nothing")
    assert p.returncode == 0 and rep["results"] == [], rep

    # human form: one line per entry with outcome, handler, event, job
    p = ctl_ok(*sock_args(agent), "results", "-n", "3")
    lines = p.stdout.splitlines()
    assert len(lines) == 3, p.stdout
    for line, r in zip(lines, all_results[-3:]):
        assert r["job"] in line and " done " in line and r["handler"] in line, line
    p = ctl_ok(*sock_args(agent), "results", "--handler", "b")
    assert len(p.stdout.splitlines()) == 2, p.stdout

    for args in (["-n", "0"], ["-n"], ["--bogus"]):
        p = ctl(*sock_args(agent), "results", *args)
        assert p.returncode == 64, (args, p.returncode, p.stderr)


class LineReader:
    def __init__(self, stream):
        self.lines = []
        self.t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.t.start()

    def _run(self, stream):
        for line in iter(stream.readline, ""):
            self.lines.append(line)


def test_results_follow(dispatchd):
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}})
    first = emit_job(agent, "e")
    agent.wait_final(first)
    proc = subprocess.Popen([str(ddtest.DISPATCHCTL), "-s", str(agent.sock), "results",
                             "--follow", "-n", "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ddtest.agent_environ())
    try:
        rd = LineReader(proc.stdout)
        wait_for(lambda: any(first in l for l in rd.lines), 10, what="existing entry printed")
        second = emit_job(agent, "e", data={"n": 2})
        wait_for(lambda: any(second in l for l in rd.lines), 10,
                 what="the new result line appears under --follow")
        third = emit_job(agent, "e")
        wait_for(lambda: any(third in l for l in rd.lines), 10, what="another new line")
        assert proc.poll() is None, "--follow must keep running"
        # each entry printed once
        assert sum(first in l for l in rd.lines) == 1, rd.lines
        assert sum(second in l for l in rd.lines) == 1, rd.lines
    finally:
        au.terminate(proc)
        proc.stdout.close()
        proc.stderr.close()


# ----------------------------------------------------------- handlers ----

def test_handlers_effective_settings(dispatchd, bindir):
    prog = au.write_script(bindir, "h.sh", "#!/bin/sh\nexit 0\n")
    agent = dispatchd({
        "one": {"on": "a.b, c.*", "exec": '%s arg1 "arg two"' % prog, "timeout": "7s",
                "attempts": 3, "backoff": "100ms..2s", "concurrency": 2, "delay": "1.5",
                "env": ["FOO=bar", "BAZ=qux quux"], "user": "nobody"},
        "two": {"on": "z", "exec": "/bin/true"},
    })
    p, rep = ctl_json(agent.sock, "handlers")
    assert p.returncode == 0, p
    assert rep["config"] == str(agent.conf)
    hs = {h["name"]: h for h in rep["handlers"]}
    assert list(hs) == ["one", "two"], "config order"
    one = hs["one"]
    assert one["on"] == ["a.b", "c.*"], one
    assert one["argv"] == [prog, "arg1", "arg two"], one
    assert one["timeout_s"] == 7 and one["attempts"] == 3, one
    assert one["backoff_base_s"] == 0.1 and one["backoff_cap_s"] == 2, one
    assert one["concurrency"] == 2 and one["delay_s"] == 1.5, one
    assert one["env"] == ["FOO=bar", "BAZ=qux quux"], one
    assert one["uid"] == au.NOBODY_UID and one["gid"] == au.NOBODY_GID, one
    assert one["declared"].startswith(str(agent.conf) + ":"), one
    two = hs["two"]
    assert two["attempts"] == 5 and two["timeout_s"] == 300 and two["concurrency"] == 4, two
    assert two["env"] == [], two
    assert two["uid"] == os.geteuid(), two

    p = ctl_ok(*sock_args(agent), "handlers")
    text = p.stdout
    sect = text.split("[handler one]")[1].split("[handler two]")[0]
    for line in ("on = a.b, c.*", "timeout = 7s", "attempts = 3", "concurrency = 2",
                 "env = FOO=bar", "env = BAZ=qux quux", "uid 65534 gid 65534"):
        assert line in sect, (line, sect)


# -------------------------------------------------------------- check ----

def test_check_ok_and_error(workdir, redis_server):
    good = workdir / "good.conf"
    good.write_text("[agent]\nredis = unix:%s\nsocket = %s\n\n[handler a]\non = x\nexec = /bin/true\n"
                    % (redis_server.sock, workdir / "s.sock"))
    p = ctl("check", good)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "%s: configuration OK" % good in p.stdout, p.stdout
    p2 = ddtest.run([ddtest.DISPATCHD, "-t", "-c", good])
    assert p2.returncode == 0 and p2.stdout.split(" (")[0] == p.stdout.split(" (")[0], (p2, p)
    # -c CONFIG is the default file for check
    p = ctl("-c", good, "check")
    assert p.returncode == 0, (p.returncode, p.stderr)

    bad = workdir / "bad.conf"
    bad.write_text("[agent]\nsocket = %s\n\n[handler a]\non = x\nexec = /bin/true\ntimeout = forever\n"
                   % (workdir / "s.sock"))
    p = ctl("check", bad)
    assert p.returncode == 78, (p.returncode, p.stdout, p.stderr)
    assert re.search(r"%s:7: " % re.escape(str(bad)), p.stderr), p.stderr
    p2 = ddtest.run([ddtest.DISPATCHD, "-t", "-c", bad])
    assert p2.returncode == 78 and p2.stderr.strip() == p.stderr.strip(), (p2.stderr, p.stderr)
    # a bad -c file is reported by check, not refused as a way to the socket
    p = ctl("-c", bad, "check")
    assert p.returncode == 78 and re.search(r"%s:7: " % re.escape(str(bad)), p.stderr), p

    p = ctl("check", good, "extra")
    assert p.returncode == 64, p


# ---------------------------------------------------------------- run ----

RUN_PY = """#!/usr/bin/python3
import json, os, sys
d = sys.stdin.buffer.read()
open(os.environ["OUT"], "wb").write(d)
print("got", json.loads(d)["data"])
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("RC", "0")))
"""


def test_run_handler_once_nothing_queued(dispatchd, bindir, workdir):
    prog = au.write_script(bindir, "run.py", RUN_PY)
    out = workdir / "run.out"
    agent = dispatchd({
        "h": {"on": "e", "exec": prog, "env": "OUT=%s" % out, "timeout": "5s"},
        "fails": {"on": "never", "exec": prog, "env": ["OUT=%s.f" % out, "RC=3"]},
    })
    done = emit_job(agent, "e")
    agent.wait_final(done)
    r = agent.redis.client()
    xlen = r.xlen(agent.key("results"))
    keys_before = sorted(r.keys("*"))
    emitted = agent.ping()["emitted"]

    data = {"greeting": "hi $(touch x) `y`", "n": [1, 2.5, None]}
    p = ctl(*sock_args(agent), "run", "h", "--data", json.dumps(data), "--event", "custom.ev")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.startswith("outcome: done"), p.stdout
    assert "got" in p.stdout and "to stderr" in p.stdout, p.stdout
    job = json.loads(out.read_bytes())
    assert job["data"] == data and job["event"] == "custom.ev" and job["handler"] == "h", job
    assert job["attempt"] == 1, job

    p, rep = ctl_json(agent.sock, "run", "h")
    assert p.returncode == 0 and rep["outcome"] == "done" and rep["exit"] == 0, rep
    assert json.loads(out.read_bytes())["data"] == {} and \
        json.loads(out.read_bytes())["event"] == "run", "defaults"

    p, rep = ctl_json(agent.sock, "run", "fails")
    # (--json exits 0 here, the table form 1: see ADMIN_FINDINGS.md)
    assert p.returncode in (0, 1), (p.returncode, rep)
    assert rep["ok"] is True and rep["outcome"] != "done" and rep["exit"] == 3, rep
    p = ctl(*sock_args(agent), "run", "fails")
    assert p.returncode == 1 and "exit 3" in p.stdout, (p.returncode, p.stdout)

    p = ctl(*sock_args(agent), "run", "nosuch")
    assert p.returncode == 1 and "not_found" in p.stderr, (p.returncode, p.stderr)
    for args in (["run"], ["run", "h", "--data", "{bad"], ["run", "h", "--bogus", "1"]):
        p = ctl(*sock_args(agent), *args)
        assert p.returncode == 64, (args, p.returncode, p.stderr)

    # nothing queued or recorded
    assert r.xlen(agent.key("results")) == xlen, agent.results()[-3:]
    assert sorted(k for k in r.keys("*") if b":agent:" not in k) == \
        sorted(k for k in keys_before if b":agent:" not in k), (keys_before, r.keys("*"))
    assert agent.ping()["emitted"] == emitted
    assert jobs_of(agent, "--state", "ready") == [] and jobs_of(agent, "--state", "delayed") == []


# ------------------------------------------------------------ metrics ----

REQUIRED_METRICS = {
    "dispatchd_jobs_total": "counter",
    "dispatchd_job_duration_seconds": "histogram",
    "dispatchd_queue_ready": "gauge",
    "dispatchd_queue_delayed": "gauge",
    "dispatchd_queue_dead": "gauge",
    "dispatchd_running_jobs": "gauge",
    "dispatchd_leases_recovered_total": "counter",
    "dispatchd_redis_reconnects_total": "counter",
    "dispatchd_events_spooled_total": "counter",
    "dispatchd_events_unrouted_total": "counter",
    "dispatchd_socket_rejected_total": "counter",
    "dispatchd_events_emitted_total": "counter",
    "dispatchd_redis_up": "gauge",
}


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def check_metrics_text(text, handlers):
    fams = au.parse_prometheus(text)
    for name, typ in REQUIRED_METRICS.items():
        assert name in fams, ("missing family", name, sorted(fams))
        assert fams[name]["type"] == typ, (name, fams[name]["type"])
    assert all(set(l) == {"handler", "outcome"} for _, l, _ in fams["dispatchd_jobs_total"]["samples"])
    assert {l["handler"] for _, l, _ in fams["dispatchd_queue_ready"]["samples"]} == set(handlers)
    assert all(n.startswith("dispatchd_") for n in fams), sorted(fams)
    if au.promtool():
        p = subprocess.run([au.promtool(), "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=20)
        assert p.returncode == 0, ("promtool", p.stdout, p.stderr)
    return fams


def test_metrics_ctl_and_http(dispatchd, bindir, release):
    block = au.write_script(bindir, "block.sh", BLOCK_SH)
    port = au.free_port()
    agent = dispatchd({
        "ok": {"on": "e.ok", "exec": "/bin/true"},
        "bad": {"on": "e.bad", "exec": "/bin/false", "attempts": 1},
        "slow": {"on": "e.slow", "exec": "%s %s" % (block, release)},
    }, agent_opts={"metrics_listen": "127.0.0.1:%d" % port})
    for _ in range(3):
        agent.wait_final(emit_job(agent, "e.ok"))
    agent.wait_final(emit_job(agent, "e.bad"))
    emit_job(agent, "e.ok", delay=300)
    running = emit_job(agent, "e.slow")
    wait_state(agent, running, "running")
    assert agent.emit("nobody.listens")["jobs"] == []
    with agent.connect() as c:
        assert c.request(b"{not json")["ok"] is False

    p = ctl_ok(*sock_args(agent), "metrics")
    fams = check_metrics_text(p.stdout, ["ok", "bad", "slow"])
    s = au.sample
    assert s(fams, "dispatchd_jobs_total", handler="ok", outcome="done") == 3
    assert s(fams, "dispatchd_jobs_total", handler="bad", outcome="dead") == 1
    assert s(fams, "dispatchd_job_duration_seconds_count", handler="ok") == 3
    assert s(fams, "dispatchd_job_duration_seconds_count", handler="bad") == 1
    assert s(fams, "dispatchd_running_jobs") == 1
    assert s(fams, "dispatchd_queue_delayed") == 1
    assert s(fams, "dispatchd_queue_dead") == 1
    # 6 events queued jobs, 1 was unrouted (counted there, maybe here too)
    assert s(fams, "dispatchd_events_emitted_total") in (6, 7)
    assert s(fams, "dispatchd_events_emitted_total") == agent.ping()["emitted"]
    assert s(fams, "dispatchd_events_unrouted_total") == 1
    assert s(fams, "dispatchd_socket_rejected_total") >= 1
    assert s(fams, "dispatchd_redis_up") == 1
    assert s(fams, "dispatchd_leases_recovered_total") == 0

    p, rep = ctl_json(agent.sock, "metrics")
    assert p.returncode == 0 and rep["ok"] is True, rep
    au.parse_prometheus(rep["text"])

    status, headers, body = http_get("http://127.0.0.1:%d/metrics" % port)
    assert status == 200, (status, body)
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("text/plain"), ctype
    hfams = check_metrics_text(body, ["ok", "bad", "slow"])
    assert set(hfams) == set(fams)
    assert s(hfams, "dispatchd_jobs_total", handler="ok", outcome="done") == 3

    status, _, _ = http_get("http://127.0.0.1:%d/nothing-here" % port)
    assert status == 404, status


def test_prometheus_parser_rejects_bad_text():
    """The strict parser used above really is strict."""
    good = ("# HELP a_total x\n# TYPE a_total counter\na_total{h=\"x\"} 1\n"
            "# HELP h y\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 3.5\nh_count 2\n")
    au.parse_prometheus(good)
    bad = [
        good.replace("a_total{h=\"x\"} 1", "a_total{h=\"x\"} one"),
        good.replace("a_total counter", "a_total countr"),
        good.replace("# TYPE a_total counter\n", ""),
        good.replace("a_total", "a_count"),
        good.replace("h_bucket{le=\"+Inf\"} 2", "h_bucket{le=\"+Inf\"} 0"),
        good.replace("h_count 2", "h_count 3"),
        good.replace("{h=\"x\"}", "{h=x}"),
        good + "\n",
        good[:-1],
    ]
    for text in bad:
        with pytest.raises(au.PromError):
            au.parse_prometheus(text)


# --------------------------------------------------------- exit codes ----

def test_exit_codes_unreachable_and_usage(workdir):
    nosock = workdir / "none.sock"
    for args in (["status"], ["jobs"], ["job", "x"], ["cancel", "x"], ["retry", "--dead"],
                 ["purge", "--dead"], ["results"], ["handlers"], ["run", "h"], ["metrics"]):
        p = ctl("-s", nosock, *args)
        assert p.returncode == 69, (args, p.returncode, p.stderr)
        assert p.stderr, args
    for args in (["status", "extra"], ["handlers", "x"], ["metrics", "x"], ["job"],
                 ["job", "a", "b"], ["cancel", "--dead"], ["retry", "--handler", "x"],
                 ["results", "--follow", "x"], ["jobs", "--limit", "10001"]):
        p = ctl("-s", nosock, *args)
        assert p.returncode == 64, (args, p.returncode, p.stderr)


# ------------------------------------------------------------- extras ----

def test_run_timeout_kills_the_handler(dispatchd, bindir, workdir):
    pidfile = workdir / "run.pid"
    prog = au.write_script(bindir, "hang.sh", "#!/bin/sh\necho $$ > %s\nexec sleep 30\n" % pidfile)
    agent = dispatchd({"h": {"on": "never", "exec": prog, "timeout": "500ms"}},
                      agent_opts={"kill_grace": "300ms"})
    t0 = time.monotonic()
    p, rep = ctl_json(agent.sock, "run", "h")
    elapsed = time.monotonic() - t0
    assert rep["ok"] is True and rep["timed_out"] is True, rep
    assert rep["outcome"] != "done" and rep["signal"] is not None, rep
    assert elapsed < 5, elapsed
    pid = int(pidfile.read_text())
    wait_for(lambda: not ddtest.pid_alive(pid), 5, what="the run's handler to be gone")
    p = ctl(*sock_args(agent), "run", "h")
    assert p.returncode == 1 and "timed out" in p.stdout, (p.returncode, p.stdout)


def test_status_and_jobs_with_redis_down(dispatchd, redis_server):
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}})
    redis_server.stop()
    wait_for(lambda: agent.ping()["redis"] is False, 10, what="agent to notice redis down")
    p, rep = ctl_json(agent.sock, "status")
    assert p.returncode == 0 and rep["ok"] is True and rep["redis"] is False, (p, rep)
    p = ctl_ok(*sock_args(agent), "status")
    assert "NOT reachable" in p.stdout, p.stdout
    for args in (["jobs"], ["job", "x"], ["results"], ["cancel", "x"], ["retry", "--dead"],
                 ["purge", "--dead"]):
        p, rep = ctl_json(agent.sock, *args)
        assert p.returncode == 1 and rep["code"] == "unavailable", (args, p.returncode, rep)
    # metrics still answer, with redis_up 0
    fams = au.parse_prometheus(ctl_ok(*sock_args(agent), "metrics").stdout)
    assert au.sample(fams, "dispatchd_redis_up") == 0
    # handlers and run do not need Redis
    ctl_ok(*sock_args(agent), "handlers")


def test_results_follow_with_filter(dispatchd):
    agent = dispatchd({"a": {"on": "e.a", "exec": "/bin/true"},
                       "b": {"on": "e.b", "exec": "/bin/true"}})
    proc = subprocess.Popen([str(ddtest.DISPATCHCTL), "-s", str(agent.sock), "results",
                             "--follow", "--handler", "b"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ddtest.agent_environ())
    try:
        rd = LineReader(proc.stdout)
        ja = emit_job(agent, "e.a")
        jb = emit_job(agent, "e.b")
        agent.wait_final(ja)
        wait_for(lambda: any(jb in l for l in rd.lines), 10, what="b's result under --follow")
        ja2 = emit_job(agent, "e.a")
        jb2 = emit_job(agent, "e.b")
        agent.wait_final(ja2)
        wait_for(lambda: any(jb2 in l for l in rd.lines), 10, what="b's second result")
        assert not any(ja in l or ja2 in l for l in rd.lines), rd.lines
        assert len(rd.lines) == 2, rd.lines
    finally:
        au.terminate(proc)
        proc.stdout.close()
        proc.stderr.close()


def test_metrics_http_robustness(dispatchd):
    import socket as socketlib
    port = au.free_port()
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
                      agent_opts={"metrics_listen": "127.0.0.1:%d" % port})
    # a client that connects and says nothing must not block a scrape
    idle = socketlib.create_connection(("127.0.0.1", port), timeout=5)
    try:
        t0 = time.monotonic()
        status, _, body = http_get("http://127.0.0.1:%d/metrics" % port)
        assert status == 200 and time.monotonic() - t0 < 2, status
        au.parse_prometheus(body)
        # an oversized request line is refused, the agent lives on
        big = socketlib.create_connection(("127.0.0.1", port), timeout=5)
        try:
            big.sendall(b"GET /metrics?" + b"x" * 20000 + b" HTTP/1.0\r\n\r\n")
            try:
                resp = big.recv(1000)
            except (ConnectionResetError, socketlib.timeout):
                resp = b""
            assert not resp.startswith(b"HTTP/1.0 200") and not resp.startswith(b"HTTP/1.1 200"), resp
        finally:
            big.close()
        # a POST is not a scrape
        raw = socketlib.create_connection(("127.0.0.1", port), timeout=5)
        try:
            raw.sendall(b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
            resp = raw.recv(1000)
            assert resp.split(b" ")[1] in (b"404", b"405", b"400", b"501"), resp
        finally:
            raw.close()
        assert agent.ping()["ok"] is True
        status, _, body = http_get("http://127.0.0.1:%d/metrics" % port)
        assert status == 200
    finally:
        idle.close()


def test_metrics_listen_port_in_use_exit_69(dispatchd):
    import socket as socketlib
    holder = socketlib.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}},
                          agent_opts={"metrics_listen": "127.0.0.1:%d" % port}, start=False)
        agent.spawn()
        rc = agent.proc.wait(10)
        agent.expect_rc = 69
        assert rc == 69, (rc, agent.stderr())
        assert "metrics_listen" in agent.stderr()
    finally:
        holder.close()


def test_retry_delayed_job_runs_now(dispatchd):
    agent = dispatchd({"a": {"on": "e", "exec": "/bin/true"}})
    jid = emit_job(agent, "e", delay=300)
    p, rep = ctl_json(agent.sock, "retry", jid)
    assert p.returncode == 0 and rep["count"] == 1, rep
    assert agent.wait_final(jid, timeout=5)[-1]["outcome"] == "done"
    assert jobs_of(agent, "--state", "delayed") == []


BAD_ADMIN_REQUESTS = [
    {"op": "results", "limit": 0}, {"op": "results", "limit": 10001},
    {"op": "jobs", "state": "bogus"}, {"op": "jobs", "limit": 0}, {"op": "jobs", "bogus": 1},
    {"op": "status", "x": 1}, {"op": "cancel"}, {"op": "cancel", "id": ""},
    {"op": "cancel", "id": 5}, {"op": "retry"}, {"op": "retry", "id": "x", "dead": True},
    {"op": "purge"}, {"op": "purge", "dead": False},
    {"op": "purge", "dead": True, "older_than": -5}, {"op": "purge", "dead": True, "older_than": "x"},
    {"op": "run"}, {"op": "run", "handler": "ok", "event": "bad event!"}, {"op": "job"},
    {"op": "metrics", "x": 1}, {"op": "handlers", "x": 1}, {"op": "retry", "dead": True, "limit": 0},
]


def test_admin_ops_reject_bad_fields(dispatchd):
    agent = dispatchd({"ok": {"on": "e", "exec": "/bin/true"}})
    with agent.connect() as c:
        reps = c.requests(BAD_ADMIN_REQUESTS)
    for req, rep in zip(BAD_ADMIN_REQUESTS, reps):
        assert rep.get("ok") is False and rep.get("code") == "invalid", (req, rep)
    assert agent.ping()["ok"] is True


def test_results_bad_after_is_invalid(dispatchd):
    agent = dispatchd({"ok": {"on": "e", "exec": "/bin/true"}})
    rep = agent.request({"op": "results", "after": "garbage"})
    assert rep.get("ok") is False and rep.get("code") == "invalid", rep
