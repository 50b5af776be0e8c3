"""The kill loop (issue 3, "Proof"): 3 agents, 2000 jobs of a fast handler
that appends "job attempt" to a file; kill -9 a random agent every few
hundred ms and restart it (same name, same socket dir, as systemd would).
At the end every job is done exactly once by the results stream; reruns
(jobs in flight at a kill) are counted, explained and printed."""

import random
import threading
import time
from collections import Counter, defaultdict

import pytest

from conftest import handler, read_lines, wait_for, short, Client

N_JOBS = 2000
N_AGENTS = 3
DEADLINE_S = 100


@pytest.mark.slow
def test_kill_loop(env):
    env.start_redis()
    rec = env.dir / "rec"
    hs = {"w": {"on": "kl", "exec": "%s %s 0.1" % (handler("append.sh"), rec),
                "backoff": "50ms..100ms", "attempts": 100, "timeout": "10s"}}
    agents = [env.agent(hs, name="kl%d" % i, opts={"workers": 4, "lease": "1s"})
              for i in range(N_AGENTS)]
    rnd = random.Random(20261127)
    jobs = {}              # event id -> job id (from the emit replies)
    emit_errors = Counter()
    stop = threading.Event()

    def emitter():
        ids = ["kl-%04d" % i for i in range(N_JOBS)]
        i = 0
        while i < len(ids) and not stop.is_set():
            batch = ids[i:i + 50]
            a = rnd.choice(agents)
            try:
                with Client(a.sock, 10) as c:
                    reps = c.requests([{"event": "kl", "data": {"n": e}, "id": e} for e in batch])
            except (OSError, AssertionError) as e:
                emit_errors[type(e).__name__] += 1
                time.sleep(0.02)
                continue           # resend the batch (same ids: idempotent)
            bad = [r for r in reps if not r.get("ok")]
            if bad:
                emit_errors["not ok: %s" % bad[0].get("code")] += 1
                time.sleep(0.02)
                continue
            for e, r in zip(batch, reps):
                jid = r["jobs"][0]["id"]
                assert jobs.setdefault(e, jid) == jid, "event %s got two job ids" % e
            i += len(batch)
    th = threading.Thread(target=emitter)
    th.start()

    def n_done():
        return env.rc().xlen("{ft}:results") and sum(
            1 for r in env.results() if r["outcome"] == "done")

    kills, refused_restarts, t0 = 0, 0, time.monotonic()
    lives = defaultdict(list)
    try:
        while time.monotonic() - t0 < DEADLINE_S:
            time.sleep(rnd.uniform(0.2, 0.5))
            # restart agents that exited on their own (e.g. a refused name)
            for a in agents:
                if not a.alive():
                    lives[a.name].append(a.proc.returncode)
                    if a.proc.returncode == 69:
                        refused_restarts += 1
                    a.spawn()
            if len(jobs) == N_JOBS and not th.is_alive():
                done = {r["job"] for r in env.results() if r["outcome"] == "done"}
                if len(done) >= N_JOBS:
                    break
            a = rnd.choice(agents)
            if a.alive():
                a.kill9()
                lives[a.name].append(-9)
                kills += 1
                a.spawn()
    finally:
        stop.set()
        th.join(30)
    elapsed = time.monotonic() - t0
    for a in agents:
        if not a.alive():
            a.spawn()
    jids = list(jobs.values())
    assert len(jids) == N_JOBS, "only %d events acked (errors %s)" % (len(jids), emit_errors)
    env.wait_final(jids, 30)
    rep = env.check(jids)

    # -- the accounting
    by_job = rep.by_job
    done_count = Counter(r["job"] for rs in by_job.values() for r in rs if r["outcome"] == "done")
    assert all(done_count[j] == 1 for j in jids), \
        [j for j in jids if done_count[j] != 1][:10]
    runs = defaultdict(list)
    for l in read_lines(rec):
        runs[l[0]].append(int(l[1]))
    dup_attempt = {j: a for j, atts in runs.items() for a, n in Counter(atts).items() if n > 1}
    assert not dup_attempt, "the same attempt ran twice: %s" % dup_attempt
    never_ran = [j for j in jids if not runs.get(j)]
    assert not never_ran, never_ran[:10]
    reruns = {}
    for j in jids:
        rs = by_job[j]
        atts = sorted({int(r["attempt"]) for r in rs})
        if len(atts) > 1:
            # every attempt before the last must have ended by lease recovery
            # (the agent running it was killed): nothing else fails here
            early = [r for r in rs if int(r["attempt"]) < atts[-1] and r["outcome"] != "stale"]
            assert early and all(r["outcome"] == "retry" and r["error"] == "lease expired"
                                 for r in early), (j, short(rs))
            reruns[j] = {"attempts": atts, "handler_runs": runs[j],
                         "agents": [r["agent"] for r in rs]}
    print("kill loop: %d jobs in %.1fs, %d kills (%d restarts refused with exit 69), "
          "emit errors %s" % (N_JOBS, elapsed, kills, refused_restarts, dict(emit_errors)))
    print("lives per agent (exit statuses):", {k: Counter(v) for k, v in lives.items()})
    print("reruns: %d jobs re-run after a kill (%d extra attempts, %d extra handler runs):"
          % (len(reruns), rep.reruns,
             sum(len(runs[j]) - 1 for j in reruns)))
    for j, v in sorted(reruns.items()):
        print("  %s attempts %s handler runs %s agents %s"
              % (j, v["attempts"], v["handler_runs"], v["agents"]))
    assert kills >= 10, "too few kills to mean anything: %d" % kills
    assert rep.done == N_JOBS
