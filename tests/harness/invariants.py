"""Read-only invariant checker over a dispatchd namespace in Redis.

The whole state is read in ONE read-only Lua script (`#!lua flags=no-writes`),
so the snapshot is atomic even while agents run; the checks are then made in
Python.  Nothing is ever written to Redis.

    report = check(redis_client, "ft", job_ids, pending_ok=set(...))

raises InvariantError listing every violation, or returns a Report with the
counts (jobs checked, done, dead, pending, reruns, ...).

The invariants below are what "no job was lost, duplicated or stuck" means
for the failure matrix (tests/failure) and the many-agent tests (tests/ha);
tests/README.md states the same list.  Structures are the namespace's keys
(doc/ARCHITECTURE.md, "Redis keys"):
  * every jid in leases has state=running;
  * every running job has a lease;
  * delayed members have state=delayed; ready:<h> members have state=ready
    (and handler h); dead members have state=dead (while the hash exists);
  * no job is in two structures (leases, delayed, any ready list, dead), nor
    twice in one ready list;
  * no job is stuck: a hash in state ready/delayed/dead is in its structure;
  * every job created by the test has exactly one terminal result (outcome
    done, dead or cancelled) in the results stream, unless the test says it
    may still be legitimately pending (then it must be in a live state);
  * per (job, attempt) at most one non-stale result (released results keep
    their attempt; the next run gets attempt+1), non-stale attempts never go
    backwards, nothing non-stale follows a terminal result;
  * a done or cancelled job has no hash left; a dead job's hash (if any) is
    state=dead.
"""

import json
from collections import defaultdict

SNAPSHOT_LUA = r"""#!lua flags=no-writes
local P = ARGV[1]
local function scan(pat)
  local cur, res = '0', {}
  repeat
    local r = redis.call('SCAN', cur, 'MATCH', pat, 'COUNT', 1000)
    cur = r[1]
    for _, k in ipairs(r[2]) do res[#res + 1] = k end
  until cur == '0'
  return res
end
local function zmap(key)
  local z, m = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES'), {}
  for i = 1, #z, 2 do m[#m + 1] = {z[i], z[i + 1]} end
  return m
end
local snap = {leases = zmap(P .. 'leases'), delayed = zmap(P .. 'delayed'),
  dead = zmap(P .. 'dead'), ready = {}, running_sets = {}, jobs = {},
  results = {}, keys = {}}
for _, k in ipairs(scan(P .. 'ready:*')) do
  snap.ready[#snap.ready + 1] = {string.sub(k, #P + 7), redis.call('LRANGE', k, 0, -1)}
end
for _, k in ipairs(scan(P .. 'agent:*:running')) do
  snap.running_sets[#snap.running_sets + 1] = {k, redis.call('SMEMBERS', k)}
end
local fields = {'id', 'state', 'handler', 'owner', 'attempt', 'failures',
  'max_attempts', 'last_error', 'event_id', 'event'}
for _, k in ipairs(scan(P .. 'job:*')) do
  local v = redis.call('HMGET', k, unpack(fields))
  local j = {key = string.sub(k, #P + 5)}
  for i, f in ipairs(fields) do if v[i] then j[f] = v[i] end end
  snap.jobs[#snap.jobs + 1] = j
end
local want = {job = 1, attempt = 1, outcome = 1, error = 1, agent = 1,
  event_id = 1, handler = 1, exit = 1, signal = 1, timed_out = 1,
  started_ms = 1, duration_ms = 1, output_bytes = 1, truncated = 1}
if redis.call('EXISTS', P .. 'results') == 1 then
  for _, e in ipairs(redis.call('XRANGE', P .. 'results', '-', '+')) do
    local d = {_id = e[1]}
    for i = 1, #e[2], 2 do
      if want[e[2][i]] then d[e[2][i]] = e[2][i + 1] end
    end
    snap.results[#snap.results + 1] = d
  end
end
for _, k in ipairs(scan(P .. '*')) do snap.keys[#snap.keys + 1] = k end
return cjson.encode(snap)
"""

TERMINAL = ("done", "dead", "cancelled")


class InvariantError(AssertionError):
    pass


class Report:
    def __init__(self):
        self.jobs_checked = 0
        self.done = 0
        self.dead = 0
        self.cancelled = 0
        self.pending = 0
        self.reruns = 0            # extra runs (distinct attempts - 1), summed
        self.rerun_jobs = []       # jobs that ran more than once
        self.lease_expired = 0     # results written by recovery
        self.stale = 0
        self.released = 0
        self.retries = 0
        self.results = 0
        self.notes = []
        self.snapshot = None
        self.by_job = {}

    def summary(self):
        return ("jobs checked %d: done %d, dead %d, cancelled %d, pending %d; reruns %d "
                "(in %d jobs); results %d (retry %d, lease expired %d, stale %d, "
                "released %d)" % (self.jobs_checked, self.done, self.dead, self.cancelled,
                                  self.pending, self.reruns, len(self.rerun_jobs),
                                  self.results, self.retries, self.lease_expired,
                                  self.stale, self.released))

    def __str__(self):
        return self.summary()


def snapshot(r, ns):
    """One atomic read of everything under {ns}:."""
    raw = r.eval(SNAPSHOT_LUA, 0, "{%s}:" % ns)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    snap = json.loads(raw)
    # cjson encodes empty tables as {}: normalise to lists
    for k in ("leases", "delayed", "dead", "ready", "running_sets", "jobs",
              "results", "keys"):
        if isinstance(snap.get(k), dict):
            snap[k] = list(snap[k].values())
    snap["ready"] = [(h, list(v) if isinstance(v, list) else []) for h, v in snap["ready"]]
    snap["running_sets"] = [(k, list(v) if isinstance(v, list) else [])
                            for k, v in snap["running_sets"]]
    return snap


def check(r, ns, job_ids=None, pending_ok=(), all_pending_ok=False,
          expect_attempts=None, name="", log=print):
    """Check the invariants; raise InvariantError or return a Report.

    job_ids: the jobs the test created (from emit replies); None = every job
      seen in Redis or in the results stream.
    pending_ok: jobs that may legitimately still be pending (ready, delayed,
      running); all_pending_ok: any job may be.
    expect_attempts: {jid: n} jobs that must have run exactly n attempts.
    """
    snap = snapshot(r, ns)
    rep = Report()
    rep.snapshot = snap
    bad = []

    jobs = {}
    for j in snap["jobs"]:
        jobs[j["key"]] = j
    where = defaultdict(list)      # jid -> structures it is in
    lease = {jid for jid, _ in snap["leases"]}
    delayed = {jid for jid, _ in snap["delayed"]}
    dead = {jid for jid, _ in snap["dead"]}

    for jid in lease:
        where[jid].append("leases")
        st = jobs.get(jid, {}).get("state")
        if st != "running":
            bad.append("lease held for job %s whose state is %r" % (jid, st))
    for jid in delayed:
        where[jid].append("delayed")
        st = jobs.get(jid, {}).get("state")
        if st != "delayed":
            bad.append("job %s is in delayed but its state is %r" % (jid, st))
    for jid in dead:
        where[jid].append("dead")
        j = jobs.get(jid)
        if j is not None and j.get("state") != "dead":
            bad.append("job %s is in dead but its state is %r" % (jid, j.get("state")))
    ready_of = {}
    for h, lst in snap["ready"]:
        seen = set()
        for jid in lst:
            if jid in seen:
                bad.append("job %s is twice in ready:%s" % (jid, h))
            seen.add(jid)
            where[jid].append("ready:" + h)
            ready_of[jid] = h
            j = jobs.get(jid, {})
            if j.get("state") != "ready":
                bad.append("job %s is in ready:%s but its state is %r" % (jid, h, j.get("state")))
            elif j.get("handler") != h:
                bad.append("job %s of handler %r is in ready:%s" % (jid, j.get("handler"), h))
    for jid, w in where.items():
        if len(w) > 1:
            bad.append("job %s is in %d structures: %s" % (jid, len(w), ", ".join(w)))

    in_running_set = defaultdict(list)
    for key, members in snap["running_sets"]:
        for jid in members:
            in_running_set[jid].append(key)
    for jid, j in jobs.items():
        st = j.get("state")
        if st == "running":
            if jid not in lease:
                bad.append("job %s is running (owner %r) without a lease" % (jid, j.get("owner")))
            if not any(k.endswith(":agent:%s:running" % j.get("owner")) for k in in_running_set[jid]):
                rep.notes.append("running job %s is not in agent:%s:running (reclaim in progress?)"
                                 % (jid, j.get("owner")))
        elif st == "ready":
            if jid not in ready_of:
                bad.append("job %s is in state ready but in no ready list (stuck)" % jid)
        elif st == "delayed":
            if jid not in delayed:
                bad.append("job %s is in state delayed but not in delayed (stuck)" % jid)
        elif st == "dead":
            if jid not in dead:
                bad.append("job %s is in state dead but not in dead" % jid)
        else:
            bad.append("job %s has unknown state %r" % (jid, st))

    # -- the results stream
    by_job = defaultdict(list)
    for e in snap["results"]:
        by_job[e.get("job", "")].append(e)
    rep.by_job = by_job
    rep.results = len(snap["results"])
    for e in snap["results"]:
        o = e.get("outcome")
        if o == "stale":
            rep.stale += 1
        elif o == "released":
            rep.released += 1
        elif o == "retry":
            rep.retries += 1
        if e.get("error") == "lease expired":
            rep.lease_expired += 1

    if job_ids is None:
        job_ids = set(jobs) | {j for j in by_job if j}
    job_ids = list(dict.fromkeys(job_ids))
    pending_ok = set(pending_ok)
    rep.jobs_checked = len(job_ids)
    for jid in job_ids:
        res = by_job.get(jid, [])
        nonstale = [e for e in res if e.get("outcome") != "stale"]
        per_attempt = defaultdict(list)
        for e in nonstale:
            per_attempt[e.get("attempt")].append(e.get("outcome"))
        for att, outs in per_attempt.items():
            if len(outs) > 1:
                bad.append("job %s attempt %s has %d non-stale results: %s"
                           % (jid, att, len(outs), outs))
        last = 0
        for e in nonstale:
            try:
                a = int(e.get("attempt") or 0)
            except ValueError:
                bad.append("job %s: result with attempt %r" % (jid, e.get("attempt")))
                continue
            if a < last:
                bad.append("job %s: attempt went back from %d to %d in the results"
                           % (jid, last, a))
            last = max(last, a)
        term = [e for e in nonstale if e.get("outcome") in TERMINAL]
        if len(term) > 1:
            bad.append("job %s has %d terminal results: %s"
                       % (jid, len(term), [(e["attempt"], e["outcome"]) for e in term]))
        if term:
            after = nonstale[nonstale.index(term[0]) + 1:]
            if after:
                bad.append("job %s has results after its terminal one: %s"
                           % (jid, [(e["attempt"], e["outcome"]) for e in after]))
        attempts_seen = {e.get("attempt") for e in res}
        if len(attempts_seen) > 1:
            rep.reruns += len(attempts_seen) - 1
            rep.rerun_jobs.append(jid)
        j = jobs.get(jid)
        if term and term[0]["outcome"] in ("done", "cancelled"):
            if term[0]["outcome"] == "done":
                rep.done += 1
            else:
                rep.cancelled += 1
            if j is not None:
                bad.append("job %s is %s but its hash remains (state %r)"
                           % (jid, term[0]["outcome"], j.get("state")))
        elif term:
            rep.dead += 1
            if j is not None and j.get("state") != "dead":
                bad.append("job %s is dead by its results but its state is %r" % (jid, j.get("state")))
            if jid not in dead:
                bad.append("dead job %s is not in the dead set" % jid)
        else:
            if jid in pending_ok or all_pending_ok:
                if j is None or j.get("state") not in ("ready", "delayed", "running"):
                    bad.append("pending job %s is in no live state (hash %r): lost" % (jid, j))
                rep.pending += 1
            else:
                bad.append("job %s has no terminal result (state %r, results %s)"
                           % (jid, j and j.get("state"),
                              [(e.get("attempt"), e.get("outcome"), e.get("error")) for e in res]))
        if expect_attempts and jid in expect_attempts:
            n = len({e.get("attempt") for e in res})
            if n != expect_attempts[jid]:
                bad.append("job %s ran %d attempts, expected %d" % (jid, n, expect_attempts[jid]))

    if log:
        log("INVARIANTS %s: %s" % (name, rep.summary()))
        for n in rep.notes[:5]:
            log("  note: " + n)
    if bad:
        raise InvariantError("%d invariant violation(s) in {%s}:\n  %s\n(%s)"
                             % (len(bad), ns, "\n  ".join(bad[:60]), rep.summary()))
    return rep
