"""The contract of each Lua script in agent/scripts.c, against a private Redis.

The comment above each script states its KEYS, ARGV and reply; these tests
call the script bodies exactly as the agent loads them (harness.scripts) with
the keys and arguments the agent passes, and check the keys it writes, the
reply's shape and types, and the edges the comment promises.  No agent runs
here.  The key names are the Redis layout of doc/ARCHITECTURE.md ("Redis
keys"): every key under the "{<namespace>}:" prefix P.
"""

import shutil
import tempfile

import pytest
import redis as redislib

from harness import scripts
from harness.ddtest import wait_for

P = "{t}:"
# The job hash fields the read-only scripts (jobs, job) return, in order.
JOB_FIELDS = ["id", "handler", "event", "event_id", "state", "attempt", "failures",
              "max_attempts", "created_ms", "due_ms", "owner", "lease_ms", "died_ms",
              "last_error", "cancel", "data"]
CANCEL_TEXT = "cancelled by an administrator while running"


def K(suffix):
    return P + suffix


@pytest.fixture(scope="module")
def bodies():
    """{name: body}, built once for the module."""
    d = tempfile.mkdtemp(prefix="dde-scripts-", dir="/tmp")
    try:
        yield scripts.load(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def r(redis_server):
    return redislib.Redis(unix_socket_path=str(redis_server.sock), socket_timeout=5,
                          decode_responses=True)


@pytest.fixture
def raw(redis_server):
    return redis_server.client()


class Lua:
    """Calls the agent's scripts the way the agent does: SCRIPT LOAD, EVALSHA."""

    def __init__(self, r, bodies):
        self.r = r
        self.sha = {n: r.script_load(b) for n, b in bodies.items()}

    def __call__(self, name, keys, args):
        return self.r.evalsha(self.sha[name], len(keys), *keys, *[str(a) for a in args])

    def now(self):
        s, us = self.r.time()
        return s * 1000 + us // 1000

    # -- the scripts, with the KEYS the agent passes and defaults for ARGV
    def enqueue(self, eid, jobs, at_ms=0, dedup_ms=60000, notify="", event="order.paid",
                data='{"n":1}'):
        """jobs: (jid, handler[, delay_ms[, max_attempts[, key[, per_key[,
        on_busy]]]]]) tuples."""
        argv = [P, eid, dedup_ms, at_ms, event, data, notify]
        for j in jobs:
            jid, h, delay, mx, key, per, busy = (tuple(j) + (0, 3, "", 1, "queue")[len(j) - 2:])
            argv += [jid, h, delay, mx, 30000, 1000, 60000, key, per, busy]
        return self("enqueue", [K("seen:" + eid), K("delayed")], argv)

    def promote(self, limit=100, notify=""):
        return self("promote", [K("delayed")], [P, limit, notify])

    def fetch(self, agent, pairs, want=10, lease_ms=5000, full=False):
        """{now, jobs}, or with full the whole reply {now, jobs, wake}."""
        argv = [P, agent, lease_ms, want]
        for pair in pairs:
            h, room, flow = (tuple(pair) + ("-",))[:3]
            argv += [h, room, flow]
        rep = self("fetch", [K("leases"), K("agent:%s:running" % agent), K("paused")],
                   argv)
        return rep if full else rep[:2]

    def extend(self, agent, pairs=(), token="tok", reconcile=0, leader_ttl_ms=0,
               lease_ms=5000, heartbeat_ttl_ms=5000, version="9.9", host="hostA"):
        argv = [P, agent, lease_ms, heartbeat_ttl_ms, token, version, host, reconcile,
                1000, leader_ttl_ms]
        for jid, att in pairs:
            argv += [jid, att]
        return self("extend", [K("leases"), K("agent:" + agent), K("agents"),
                               K("agent:%s:info" % agent), K("agent:%s:running" % agent),
                               K("results"), K("lock:events")], argv)

    def finish(self, jid, agent, attempt, outcome, handler="h1", backoff_ms=1000,
               dead_ttl_s=3600, remember_ms=10000, fields=("exit", "0"), want=0,
               rooms=(), lease_ms=30000, full=False):
        """{outcome, stream id, now, jobs}, or with full the whole reply."""
        rep = self("finish", [K("job:" + jid), K("leases"), K("agent:%s:running" % agent),
                              K("delayed"), K("dead"), K("results"), K("ready:" + handler),
                              K("fin:" + jid), K("paused")],
                   [jid, agent, attempt, outcome, backoff_ms, 1000, dead_ttl_s,
                    remember_ms, P, lease_ms, want,
                    " ".join("%s %d %s" % (tuple(hr) + ("-",))[:3] for hr in rooms)]
                   + list(fields))
        return rep if full else rep[:4]

    def pause(self, handler, for_ms=0, action="pause", notify=""):
        return self("pause", [K("paused")], [action, handler, for_ms, notify])

    def recover(self, lock_ms=1000, limit=100, grace_ms=0, backoff_ms=1000,
                backoff_cap_ms=60000, dead_ttl_s=3600, notify=""):
        return self("recover", [K("leases"), K("delayed"), K("dead"), K("results"),
                                K("lock:recover")],
                    [P, lock_ms, limit, grace_ms, backoff_ms, backoff_cap_ms, 1000,
                     dead_ttl_s, notify])

    def claim(self, name, token, previous="", heartbeat_ttl_ms=5000, leader_ttl_ms=0):
        return self("claim", [K("agent:" + name), K("agent:%s:running" % name), K("leases"),
                              K("agents"), K("lock:events")],
                    [token, previous, heartbeat_ttl_ms, name, leader_ttl_ms])

    def status(self, handlers, limit=100):
        return self("status", [K("delayed"), K("leases"), K("dead"), K("results"),
                               K("agents"), K("paused")], [P, limit] + list(handlers))

    def jobs(self, state, handlers, handler="", limit=100):
        return self("jobs", [K("delayed"), K("leases"), K("dead")],
                    [P, state, handler, limit] + list(handlers))

    def job(self, jid, limit=100):
        return self("job", [K("results")], [P, jid, limit])

    def admin(self, action, target="", older_ms=0, limit=100, notify=""):
        return self("admin", [K("delayed"), K("dead"), K("results")],
                    [P, action, target, older_ms, limit, 1000, notify])

    def routes(self, self_name, grace_ms=10000):
        return self("routes", [K("agents")], [P, self_name, grace_ms])


@pytest.fixture
def lua(r, bodies):
    return Lua(r, bodies)


def results(r):
    """The results stream as a list of dicts (plus "_id")."""
    return [dict(f, _id=i) for i, f in r.xrange(K("results"))]


def snapshot(raw):
    """Every key with its DUMP: equal snapshots mean nothing was written."""
    return {k: raw.dump(k) for k in raw.keys("*")}


def dead_job(lua, jid, handler="h1", agent="a1"):
    """Enqueue, fetch and fail fatally: a job in state dead."""
    lua.enqueue("e-" + jid, [(jid, handler)])
    lua.fetch(agent, [(handler, 1)])
    assert lua.finish(jid, agent, 1, "fatal", handler=handler)[0] == "dead"


# ------------------------------------------------------------ coverage ----

TESTED = {"enqueue", "promote", "fetch", "extend", "finish", "recover", "claim", "status",
          "jobs", "job", "admin", "routes", "pause"}


def test_every_script_has_contract_tests(bodies):
    assert set(scripts.names()) == TESTED, "a script without tests here, or a test for " \
        "a script that is gone"
    assert set(bodies) == TESTED and all(bodies.values())


# ------------------------------------------------------------- enqueue ----

def test_enqueue_fans_out_and_writes_jobs_ready_lists_and_seen(lua, r):
    t0 = lua.now()
    rep = lua.enqueue("e1", [("j1", "h1"), ("j2", "h2", 0, 5)], dedup_ms=60000)
    assert rep == [1, "j1 h1 j2 h2"]
    assert isinstance(rep[0], int) and isinstance(rep[1], str)
    j1 = r.hgetall(K("job:j1"))
    assert {k: j1[k] for k in ("id", "event_id", "event", "handler", "data", "state",
                               "attempt", "failures", "max_attempts", "timeout_ms",
                               "backoff_ms", "backoff_cap_ms")} == {
        "id": "j1", "event_id": "e1", "event": "order.paid", "handler": "h1",
        "data": '{"n":1}', "state": "ready", "attempt": "0", "failures": "0",
        "max_attempts": "3", "timeout_ms": "30000", "backoff_ms": "1000",
        "backoff_cap_ms": "60000"}
    assert int(j1["created_ms"]) >= t0 and j1["due_ms"] == j1["created_ms"]
    assert r.hget(K("job:j2"), "max_attempts") == "5"
    assert r.lrange(K("ready:h1"), 0, -1) == ["j1"]
    assert r.lrange(K("ready:h2"), 0, -1) == ["j2"]
    assert r.get(K("seen:e1")) == "j1 h1 j2 h2"
    assert 0 < r.pttl(K("seen:e1")) <= 60000
    assert r.zcard(K("delayed")) == 0


def test_enqueue_repeated_event_id_returns_first_jobs_and_writes_nothing(lua, r, raw):
    lua.enqueue("e1", [("j1", "h1")])
    before = snapshot(raw)
    assert lua.enqueue("e1", [("j9", "h1")]) == [0, "j1 h1"]
    assert snapshot(raw) == before
    assert not r.exists(K("job:j9"))


def test_enqueue_existing_job_id_is_an_error_before_any_write(lua, r, raw):
    lua.enqueue("e1", [("j1", "h1")])
    before = snapshot(raw)
    with pytest.raises(redislib.ResponseError, match="job id already exists"):
        lua.enqueue("e2", [("j2", "h1"), ("j1", "h1")])
    assert snapshot(raw) == before


def test_enqueue_delay_and_at_make_delayed_jobs_on_redis_time(lua, r):
    now = lua.now()
    lua.enqueue("e1", [("j1", "h1", 60000)])
    lua.enqueue("e2", [("j2", "h1", 1000)], at_ms=now + 30000)
    for jid, lo, hi in (("j1", now + 60000, now + 62000), ("j2", now + 31000, now + 31001)):
        j = r.hgetall(K("job:" + jid))
        assert j["state"] == "delayed"
        assert lo <= int(j["due_ms"]) <= hi
        assert r.zscore(K("delayed"), jid) == int(j["due_ms"])
    assert not r.exists(K("ready:h1"))


def test_enqueue_publishes_r_and_d_on_the_notify_channel(lua, r):
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(K("notify"))
    wait_for(lambda: r.pubsub_numsub(K("notify"))[0][1] == 1, 5, what="subscription")
    lua.enqueue("e1", [("j1", "h1"), ("j2", "h2", 60000)], notify=K("notify"))
    lua.enqueue("e2", [("j3", "h1")])           # no channel: no message
    got = []

    def two():
        m = p.get_message(timeout=0.1)
        if m:
            got.append(m["data"])
        return len(got) >= 2
    wait_for(two, 5, what="two notify messages")
    assert got == ["r", "d"]
    assert p.get_message(timeout=0.3) is None
    p.close()


# ------------------------------------------------------------- promote ----

def test_promote_moves_due_jobs_and_reports_next_due(lua, r):
    lua.enqueue("e1", [("j1", "h1", 60000), ("j2", "h1", 120000)])
    r.zadd(K("delayed"), {"j1": 0})                       # j1 is due now
    rep = lua.promote()
    moved, nextdue, now = rep
    assert all(isinstance(x, int) for x in rep)
    assert moved == 1 and nextdue == r.zscore(K("delayed"), "j2")
    assert abs(now - lua.now()) < 1000
    assert r.hget(K("job:j1"), "state") == "ready"
    assert r.lrange(K("ready:h1"), 0, -1) == ["j1"]
    assert r.zrange(K("delayed"), 0, -1) == ["j2"]


def test_promote_limit_and_empty_and_a_member_without_hash(lua, r):
    lua.enqueue("e1", [("j1", "h1", 60000), ("j2", "h1", 60000)])
    r.zadd(K("delayed"), {"j1": 0, "j2": 1, "ghost": 2})
    assert lua.promote(limit=2)[:2] == [2, 2]             # j1, j2; ghost is next
    assert lua.promote()[:2] == [0, -1]                   # ghost dropped, not counted
    assert r.zcard(K("delayed")) == 0 and not r.exists(K("job:ghost"))


def test_finish_fills_the_slot_it_frees_as_fetch_would(lua, r):
    lua.enqueue("e1", [("j1", "h1"), ("k1", "h2")], event="a.b")
    lua.enqueue("e2", [("j2", "h1"), ("k2", "h2")])
    lua.enqueue("e3", [("j3", "h1")])
    lua.fetch("a1", [("h1", 1)])
    status, sid, now, jobs = lua.finish("j1", "a1", 1, "ok", want=2,
                                        rooms=[("h2", 1), ("h1", 5)], lease_ms=5000)
    assert status == "done"
    assert [j[:3] for j in jobs] == [["k1", "h2", 1], ["j2", "h1", 1]]
    assert jobs[0][3:7] == ['{"n":1}', "3", "a.b", "e1"]
    assert r.zscore(K("leases"), "k1") == now + 5000
    assert r.smembers(K("agent:a1:running")) == {"k1", "j2"}
    assert r.hget(K("job:j2"), "owner") == "a1" and r.llen(K("ready:h1")) == 1
    # a release is not fetched back by its own finish when the agent asks for none
    assert lua.finish("k1", "a1", 1, "release", handler="h2")[0] == "released"
    assert r.lrange(K("ready:h2"), 0, -1) == ["k2", "k1"]


# --------------------------------------------------------------- fetch ----

def test_fetch_takes_oldest_first_bumps_attempt_and_registers_lease(lua, r):
    lua.enqueue("e1", [("j1", "h1")], event="a.b")
    lua.enqueue("e2", [("j2", "h1")])
    now, jobs = lua.fetch("a1", [("h1", 10)], lease_ms=5000)
    assert isinstance(now, int)
    assert [j[:3] for j in jobs] == [["j1", "h1", 1], ["j2", "h1", 1]]
    jid, h, attempt, data, max_attempts, event, event_id, created_ms = jobs[0]
    assert isinstance(attempt, int)
    assert (data, max_attempts, event, event_id) == ('{"n":1}', "3", "a.b", "e1")
    assert created_ms == r.hget(K("job:j1"), "created_ms")
    j = r.hgetall(K("job:j1"))
    assert (j["state"], j["owner"], j["attempt"]) == ("running", "a1", "1")
    assert int(j["lease_ms"]) == now + 5000 and int(j["started_ms"]) == now
    assert r.zscore(K("leases"), "j1") == now + 5000
    assert r.smembers(K("agent:a1:running")) == {"j1", "j2"}
    assert not r.exists(K("ready:h1"))


def test_fetch_respects_per_handler_room_and_want(lua, r):
    lua.enqueue("e1", [("a1", "h1"), ("b1", "h2")])
    lua.enqueue("e2", [("a2", "h1"), ("b2", "h2")])
    lua.enqueue("e3", [("a3", "h1"), ("b3", "h2")])
    _, jobs = lua.fetch("ag", [("h1", 1), ("h2", 5)], want=3)
    assert [j[0] for j in jobs] == ["a1", "b1", "b2"]
    assert r.llen(K("ready:h1")) == 2 and r.llen(K("ready:h2")) == 1


def test_fetch_skips_ids_whose_job_is_not_ready_and_empty_is_empty(lua, r):
    lua.enqueue("e1", [("j1", "h1")])
    r.rpush(K("ready:h1"), "ghost")                       # RPOP takes it first
    _, jobs = lua.fetch("a1", [("h1", 5)])
    assert [j[0] for j in jobs] == ["j1"]
    assert not r.exists(K("job:ghost")) and not r.zscore(K("leases"), "ghost")
    now, jobs = lua.fetch("a1", [("h1", 5)])
    assert isinstance(now, int) and jobs == []


# -------------------------------------------------------------- extend ----

def test_extend_renews_held_leases_reports_lost_ones_and_heartbeats(lua, r):
    lua.enqueue("e1", [("j1", "h1"), ("j2", "h2")])
    lua.fetch("a1", [("h1", 1), ("h2", 1)], lease_ms=1000)
    old = r.zscore(K("leases"), "j2")
    rep = lua.extend("a1", [("j1", 1), ("j2", 2), ("nope", 1)], token="T1",
                     lease_ms=60000, heartbeat_ttl_ms=7000, version="1.2", host="hx")
    assert rep == [0, ["j2", "nope"], []]                 # j2: wrong attempt
    now = lua.now()
    assert now + 50000 < r.zscore(K("leases"), "j1") <= now + 60000
    assert r.hget(K("job:j1"), "lease_ms") == str(int(r.zscore(K("leases"), "j1")))
    assert r.zscore(K("leases"), "j2") == old
    assert not r.zscore(K("leases"), "nope")              # XX: never adds a lease
    assert r.get(K("agent:a1")) == "T1" and 0 < r.pttl(K("agent:a1")) <= 7000
    assert now - 2000 < r.zscore(K("agents"), "a1") <= now
    assert r.hgetall(K("agent:a1:info")) == {"version": "1.2", "host": "hx"}


def test_extend_takes_the_events_lead_only_if_free(lua, r):
    assert lua.extend("a1", leader_ttl_ms=0) == [0, [], []]
    assert not r.exists(K("lock:events"))
    assert lua.extend("a1", leader_ttl_ms=5000)[0] == 1
    assert lua.extend("a2", leader_ttl_ms=5000)[0] == 0
    assert lua.extend("a1", leader_ttl_ms=5000)[0] == 1
    assert r.get(K("lock:events")) == "a1" and 0 < r.pttl(K("lock:events")) <= 5000


def test_extend_reconcile_puts_back_jobs_the_agent_does_not_know(lua, r):
    lua.enqueue("e1", [("j1", "h1"), ("j2", "h2")])
    lua.enqueue("e2", [("j3", "h1")])
    lua.fetch("a1", [("h1", 1), ("h2", 1)])               # j1 and j2
    assert lua.extend("a1", [("j2", 1)], reconcile=1) == [0, [], []]
    j = r.hgetall(K("job:j1"))
    assert (j["state"], j["owner"], j["attempt"]) == ("ready", "", "1")
    assert r.rpop(K("ready:h1")) == "j1"                  # put back to run next
    assert not r.zscore(K("leases"), "j1") and r.zscore(K("leases"), "j2")
    assert r.smembers(K("agent:a1:running")) == {"j2"}
    (e,) = results(r)
    assert (e["job"], e["outcome"], e["attempt"], e["agent"]) == ("j1", "released", "1", "a1")
    assert e["error"] == "fetched on a lost connection; put back"


def test_extend_reports_the_held_jobs_an_administrator_cancelled(lua, r):
    lua.enqueue("e1", [("j1", "h1"), ("j2", "h2"), ("j3", "h3")])
    lua.fetch("a1", [("h1", 1), ("h2", 1), ("h3", 1)])
    for jid in ("j1", "j3"):
        assert lua.admin("cancel", jid) == [1, "cancelling", "a1"]
    # held and marked: renewed as any other, and reported
    rep = lua.extend("a1", [("j1", 1), ("j2", 1)], lease_ms=60000)
    assert rep == [0, [], ["j1"]]
    assert r.zscore(K("leases"), "j1") > lua.now() + 50000
    assert r.hget(K("job:j1"), "state") == "running"
    # not held (wrong attempt, another agent): lost, not reported
    assert lua.extend("a1", [("j1", 2)]) == [0, ["j1"], []]
    assert lua.extend("a2", [("j1", 1)]) == [0, ["j1"], []]
    # reconcile: a marked job the agent does not know of is never started:
    # deleted as cancelled, not put back
    assert lua.extend("a1", [("j1", 1), ("j2", 1)], reconcile=1) == [0, [], ["j1"]]
    assert not r.exists(K("job:j3")) and not r.zscore(K("leases"), "j3")
    assert not r.exists(K("ready:h3")) and r.smembers(K("agent:a1:running")) == {"j1", "j2"}
    (e,) = results(r)
    assert (e["job"], e["outcome"], e["attempt"], e["agent"], e["error"]) == \
        ("j3", "cancelled", "1", "a1", "cancelled by an administrator before it ran")


# -------------------------------------------------------------- finish ----

def test_finish_ok_records_done_deletes_the_job_and_remembers(lua, r):
    lua.enqueue("e1", [("j1", "h1")], event="a.b")
    lua.fetch("a1", [("h1", 1)])
    rep = lua.finish("j1", "a1", 1, "ok", fields=("exit", "0", "stdout", "hi"))
    status, sid, now, fetched = rep
    assert status == "done" and isinstance(sid, str) and "-" in sid
    assert isinstance(now, int) and fetched == []          # want 0: no fetch
    assert not r.exists(K("job:j1"))
    assert not r.zscore(K("leases"), "j1") and not r.smembers(K("agent:a1:running"))
    (e,) = results(r)
    assert e == {"_id": sid, "job": "j1", "event": "a.b", "event_id": "e1", "handler": "h1",
                 "attempt": "1", "outcome": "done", "agent": "a1", "exit": "0",
                 "stdout": "hi"}
    assert r.get(K("fin:j1")) == "1 a1 done " + sid
    assert 0 < r.pttl(K("fin:j1")) <= 10000


def test_finish_sent_again_gets_the_first_answer_and_is_recorded_once(lua, r, raw):
    lua.enqueue("e1", [("j1", "h1")])
    lua.fetch("a1", [("h1", 1)])
    first = lua.finish("j1", "a1", 1, "fail")
    assert first[0] == "retry"
    before = snapshot(raw)
    assert lua.finish("j1", "a1", 1, "fail")[:2] == first[:2]
    # any outcome: the first; and a repeat fetches nothing
    assert lua.finish("j1", "a1", 1, "ok", want=1, rooms=[("h1", 1)])[1:4:2] == \
        [first[1], []]
    assert snapshot(raw) == before
    assert len(results(r)) == 1


def test_finish_stale_attempt_is_recorded_as_stale_and_changes_nothing(lua, r):
    lua.enqueue("e1", [("j1", "h1")])
    lua.fetch("a1", [("h1", 1)])
    job = r.hgetall(K("job:j1"))
    lease = r.zscore(K("leases"), "j1")
    for agent, att in (("a1", 2), ("a2", 1)):             # wrong attempt, wrong owner
        status, sid = lua.finish("j1", agent, att, "ok")[:2]
        assert status == "stale"
        assert results(r)[-1]["outcome"] == "stale" and results(r)[-1]["_id"] == sid
    assert r.hgetall(K("job:j1")) == job and r.zscore(K("leases"), "j1") == lease
    assert not r.exists(K("fin:j1"))                      # the owner's record is untouched
    assert lua.finish("j1", "a1", 1, "ok")[0] == "done"   # the owner still can


def test_finish_fail_retries_after_backoff_then_dead_at_max_attempts(lua, r):
    lua.enqueue("e1", [("j1", "h1", 0, 2)])
    lua.fetch("a1", [("h1", 1)])
    now = lua.now()
    assert lua.finish("j1", "a1", 1, "fail", backoff_ms=4000)[0] == "retry"
    j = r.hgetall(K("job:j1"))
    assert (j["state"], j["owner"], j["failures"]) == ("delayed", "", "1")
    assert now + 4000 <= int(j["due_ms"]) <= now + 5000
    assert r.zscore(K("delayed"), "j1") == int(j["due_ms"])
    r.zadd(K("delayed"), {"j1": 0})
    lua.promote()
    _, jobs = lua.fetch("a1", [("h1", 1)])
    assert jobs[0][:3] == ["j1", "h1", 2]
    assert lua.finish("j1", "a1", 2, "fail", dead_ttl_s=3600)[0] == "dead"
    j = r.hgetall(K("job:j1"))
    assert (j["state"], j["failures"]) == ("dead", "2") and "died_ms" in j
    assert r.zscore(K("dead"), "j1") == int(j["died_ms"])
    assert 0 < r.ttl(K("job:j1")) <= 3600
    assert [e["outcome"] for e in results(r)] == ["retry", "dead"]


def test_finish_fatal_is_dead_at_once_and_release_requeues_without_failure(lua, r):
    lua.enqueue("e1", [("j1", "h1", 0, 5), ("j2", "h2", 0, 5)])
    lua.enqueue("e2", [("j3", "h2")])
    lua.fetch("a1", [("h1", 1), ("h2", 1)])
    assert lua.finish("j1", "a1", 1, "fatal")[0] == "dead"
    assert r.hget(K("job:j1"), "failures") == "1"
    assert lua.finish("j2", "a1", 1, "release", handler="h2")[0] == "released"
    j = r.hgetall(K("job:j2"))
    assert (j["state"], j["owner"], j["failures"]) == ("ready", "", "0")
    assert r.rpop(K("ready:h2")) == "j2"                  # ahead of j3: runs next


def test_finish_of_a_cancelled_job_records_cancelled_and_deletes_it(lua, r, raw):
    lua.enqueue("e1", [("j1", "h1", 0, 5), ("j2", "h1", 0, 5), ("j3", "h1", 0, 5),
                       ("j4", "h1", 0, 5), ("j5", "h1", 0, 5)])
    lua.fetch("a1", [("h1", 5)])
    for jid in ("j1", "j2", "j3", "j4", "j5"):
        assert lua.admin("cancel", jid) == [1, "cancelling", "a1"]
    # a stale finish (wrong attempt) changes nothing, the mark stays
    job, lease = r.hgetall(K("job:j1")), r.zscore(K("leases"), "j1")
    assert lua.finish("j1", "a1", 2, "fail")[0] == "stale"
    assert r.hgetall(K("job:j1")) == job and r.zscore(K("leases"), "j1") == lease
    assert job["cancel"] == "1"
    # stopped by a signal (fail): cancelled, not retried, no failure counted
    status, sid, _, _ = lua.finish("j1", "a1", 1, "fail",
                                   fields=("signal", "15", "error", ""))
    assert status == "cancelled"
    assert not r.exists(K("job:j1")) and not r.zscore(K("leases"), "j1")
    assert not r.zscore(K("delayed"), "j1") and "j1" not in r.smembers(K("agent:a1:running"))
    e = results(r)[-1]
    assert (e["_id"], e["job"], e["outcome"], e["signal"], e["error"]) == \
        (sid, "j1", "cancelled", "15", CANCEL_TEXT)
    assert r.get(K("fin:j1")) == "1 a1 cancelled " + sid
    before = snapshot(raw)
    assert lua.finish("j1", "a1", 1, "fail")[:2] == ["cancelled", sid]   # sent again
    assert snapshot(raw) == before
    # a release (the drain stopped it), a fatal exit: cancelled too; an error
    # the run had is kept after the cancel's; no error field: one is added
    assert lua.finish("j2", "a1", 1, "release")[0] == "cancelled"
    assert lua.finish("j3", "a1", 1, "fatal", fields=("error", "exec x: gone"))[0] == \
        "cancelled"
    assert results(r)[-1]["error"] == CANCEL_TEXT + "; exec x: gone"
    assert results(r)[-2]["error"] == CANCEL_TEXT
    # it had succeeded before the cancel reached it: done
    assert lua.finish("j4", "a1", 1, "ok")[0] == "done"
    assert not any(r.exists(K("job:" + j)) for j in ("j2", "j3", "j4"))
    assert r.zcard(K("delayed")) == 0 and r.zcard(K("dead")) == 0
    assert not r.exists(K("ready:h1"))
    assert [e["outcome"] for e in results(r)] == ["stale", "cancelled", "cancelled",
                                                  "cancelled", "done"]
    # an unmarked job released by a drain is still released
    lua.enqueue("e2", [("k1", "h1")])
    lua.fetch("a1", [("h1", 1)])
    assert lua.finish("k1", "a1", 1, "release")[0] == "released"


# ------------------------------------------------------------- recover ----

def test_recover_moves_expired_leases_with_a_failure_counted(lua, r):
    lua.enqueue("e1", [("j1", "h1"), ("j2", "h2")])
    lua.fetch("a1", [("h1", 1), ("h2", 1)], lease_ms=60000)
    r.zadd(K("leases"), {"j1": 0})                         # j1's lease expired
    now = lua.now()
    assert lua.recover(lock_ms=3000) == 1
    j = r.hgetall(K("job:j1"))
    assert (j["state"], j["owner"], j["failures"], j["last_error"]) == \
        ("delayed", "", "1", "lease expired")
    assert now + 1000 <= r.zscore(K("delayed"), "j1") <= now + 2000   # job's backoff_ms
    assert r.zrange(K("leases"), 0, -1) == ["j2"]
    assert r.smembers(K("agent:a1:running")) == {"j2"}
    (e,) = results(r)
    assert (e["job"], e["attempt"], e["outcome"], e["agent"], e["error"]) == \
        ("j1", "1", "retry", "a1", "lease expired")
    assert 0 < r.pttl(K("lock:recover")) <= 3000


def test_recover_is_locked_and_spares_leases_within_grace(lua, r):
    lua.enqueue("e1", [("j1", "h1")])
    lua.fetch("a1", [("h1", 1)])
    r.zadd(K("leases"), {"j1": lua.now() - 100})
    assert lua.recover(grace_ms=10000) == 0               # expired, but within grace
    assert lua.recover() == -1                            # another run holds the lock
    r.delete(K("lock:recover"))
    assert lua.recover() == 1


def test_recover_sends_the_last_attempt_to_dead(lua, r):
    lua.enqueue("e1", [("j1", "h1", 0, 1)])
    lua.fetch("a1", [("h1", 1)])
    r.zadd(K("leases"), {"j1": 0})
    assert lua.recover(dead_ttl_s=600) == 1
    assert r.hget(K("job:j1"), "state") == "dead" and r.zscore(K("dead"), "j1")
    assert 0 < r.ttl(K("job:j1")) <= 600
    assert results(r)[0]["outcome"] == "dead"


def test_recover_of_a_cancelled_job_records_cancelled_and_does_not_retry(lua, r):
    lua.enqueue("e1", [("j1", "h1", 0, 5), ("j2", "h1", 0, 5)])
    lua.fetch("a1", [("h1", 2)])
    assert lua.admin("cancel", "j1") == [1, "cancelling", "a1"]
    r.zadd(K("leases"), {"j1": 0, "j2": 0})               # a1 died
    assert lua.recover() == 2
    assert not r.exists(K("job:j1")) and not r.zscore(K("delayed"), "j1")
    assert r.smembers(K("agent:a1:running")) == set()
    assert r.hget(K("job:j2"), "state") == "delayed"      # unmarked: retried
    out = {e["job"]: e for e in results(r)}
    assert (out["j1"]["outcome"], out["j1"]["agent"], out["j1"]["attempt"]) == \
        ("cancelled", "a1", "1")
    assert out["j1"]["error"] == CANCEL_TEXT + "; lease expired"
    assert out["j2"]["outcome"] == "retry"
    assert lua.finish("j1", "a1", 1, "fail")[0] == "stale"   # a1's late finish


# --------------------------------------------------------------- claim ----

def test_claim_refuses_a_live_name(lua, r):
    r.set(K("agent:a1"), "other", px=10000)
    rep = lua.claim("a1", "mine", previous="old1 old2")
    assert rep[:2] == [-1, "other"] and isinstance(rep[2], int) and 0 < rep[2] <= 10000
    assert r.get(K("agent:a1")) == "other" and not r.zscore(K("agents"), "a1")


def test_claim_takes_the_name_from_a_previous_life_and_expires_its_leases(lua, r):
    lua.enqueue("e1", [("j1", "h1"), ("j2", "h2")])
    lua.fetch("a1", [("h1", 1), ("h2", 1)], lease_ms=60000)
    r.set(K("agent:a1"), "old2", px=10000)                # our last life's heartbeat
    assert lua.claim("a1", "new", previous="old1 old2", heartbeat_ttl_ms=4000) == \
        [2, "", 0, 0]
    assert r.get(K("agent:a1")) == "new" and 0 < r.pttl(K("agent:a1")) <= 4000
    assert r.zscore(K("agents"), "a1") is not None
    assert r.zscore(K("leases"), "j1") == 0 and r.zscore(K("leases"), "j2") == 0
    assert not r.exists(K("agent:a1:running"))
    assert lua.recover() == 2                             # recover retries them
    assert lua.claim("a1", "new")[0] == 0                 # our own token: accepted


def test_claim_takes_the_events_lead_if_free(lua, r):
    assert lua.claim("a1", "t1", leader_ttl_ms=5000)[3] == 1
    assert lua.claim("a2", "t2", leader_ttl_ms=5000)[3] == 0
    assert r.get(K("lock:events")) == "a1"


# -------------------------------------------------------------- status ----

def test_status_counts_per_handler_and_lists_agents_read_only(lua, r, raw):
    lua.enqueue("e1", [("j1", "h1")])
    lua.enqueue("e2", [("j2", "h1")])
    lua.enqueue("e3", [("j3", "h1")])
    lua.enqueue("e4", [("j4", "h1", 60000)])
    lua.fetch("a1", [("h1", 1)])
    lua.finish("j1", "a1", 1, "ok")                       # done
    lua.fetch("a1", [("h1", 1)])
    lua.finish("j2", "a1", 1, "fatal")                    # dead
    lua.enqueue("e5", [("j5", "h1")])
    lua.fetch("a1", [("h1", 1)])                          # j3 running
    lua.extend("a1", [("j3", 1)], version="1.2", host="hx")
    before = snapshot(raw)
    now, hs, ag, trunc, delayed_total, dead_total = lua.status(["h1", "h2"])
    assert snapshot(raw) == before
    assert isinstance(now, int)
    created_j5 = int(r.hget(K("job:j5"), "created_ms"))
    assert hs == [["h1", 1, 1, 1, 1, 1, 1, created_j5, -1, 0, 0, [], 0, ""],
                  ["h2", 0, 0, 0, 0, 0, 0, -1, -1, 0, 0, [], 0, ""]]
    (a,) = ag
    assert a[0] == "a1" and isinstance(a[1], int) and a[2:] == [1, 1, "1.2", "hx"]
    assert (trunc, delayed_total, dead_total) == (0, 1, 1)
    assert lua.status(["h1"], limit=1)[3] == 1            # counts partial: truncated


# ---------------------------------------------------------------- jobs ----

def test_jobs_lists_one_state_oldest_first_read_only(lua, r, raw):
    lua.enqueue("e1", [("j1", "h1"), ("j3", "h2")])
    lua.enqueue("e2", [("j2", "h1")])
    lua.enqueue("e3", [("d1", "h1", 60000)])
    before = snapshot(raw)
    rows = lua.jobs("ready", ["h1", "h2"])
    assert snapshot(raw) == before
    assert [row[0] for row in rows] == ["j1", "j2", "j3"]
    for row in rows:
        assert len(row) == len(JOB_FIELDS) and all(isinstance(v, str) for v in row)
    row = dict(zip(JOB_FIELDS, rows[0]))
    assert (row["handler"], row["state"], row["attempt"], row["owner"], row["data"]) == \
        ("h1", "ready", "0", "", '{"n":1}')
    assert [x[0] for x in lua.jobs("ready", ["h1", "h2"], handler="h2")] == ["j3"]
    assert [x[0] for x in lua.jobs("ready", ["h1", "h2"], limit=1)] == ["j1"]
    assert [x[0] for x in lua.jobs("delayed", [])] == ["d1"]
    lua.fetch("a1", [("h1", 1)])
    assert [(x[0], x[4]) for x in lua.jobs("running", [])] == [("j1", "running")]
    assert lua.jobs("dead", []) == []


# ----------------------------------------------------------------- job ----

def test_job_returns_fields_and_its_results_oldest_first(lua, r, raw):
    lua.enqueue("e1", [("j1", "h1", 0, 5), ("j2", "h2")])
    lua.fetch("a1", [("h1", 1), ("h2", 1)])
    s1 = lua.finish("j1", "a1", 1, "fail")[1]
    lua.finish("j2", "a1", 1, "ok", handler="h2")
    r.zadd(K("delayed"), {"j1": 0})
    lua.promote()
    lua.fetch("a1", [("h1", 1)])
    s2 = lua.finish("j1", "a1", 2, "fail")[1]
    before = snapshot(raw)
    fields, res = lua.job("j1")
    assert snapshot(raw) == before
    assert len(fields) == len(JOB_FIELDS)
    f = dict(zip(JOB_FIELDS, fields))
    assert (f["id"], f["state"], f["attempt"], f["failures"], f["died_ms"]) == \
        ("j1", "delayed", "2", "2", "")
    assert [e[0] for e in res] == [s1, s2]
    kv = res[0][1]
    assert dict(zip(kv[::2], kv[1::2]))["outcome"] == "retry"
    assert [e[0] for e in lua.job("j1", limit=1)[1]] == [s2]     # newest scanned first
    fields, res = lua.job("j2")                           # done: no hash, results stay
    assert fields == [] and [e[1][e[1].index("outcome") + 1] for e in res] == ["done"]
    assert lua.job("nope") == [[], []]


# --------------------------------------------------------------- admin ----

def test_admin_cancel_deletes_a_waiting_job_and_marks_a_running_one(lua, r):
    lua.enqueue("e1", [("j1", "h1"), ("j2", "h2")])
    lua.fetch("a1", [("h2", 1)])
    assert lua.admin("cancel", "j1") == [1, "cancelled"]
    assert not r.exists(K("job:j1")) and not r.exists(K("ready:h1"))
    (e,) = results(r)
    assert (e["job"], e["outcome"], e["handler"], e["error"]) == \
        ("j1", "cancelled", "h1", "cancelled by an administrator")
    # running: marked, its state and lease left for its agent's finish
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(K("notify"))
    wait_for(lambda: r.pubsub_numsub(K("notify"))[0][1] == 1, 5, what="subscription")
    job, lease = r.hgetall(K("job:j2")), r.zscore(K("leases"), "j2")
    assert lua.admin("cancel", "j2", notify=K("notify")) == [1, "cancelling", "a1"]
    after = r.hgetall(K("job:j2"))
    assert after.pop("cancel") == "1" and after == job
    assert r.zscore(K("leases"), "j2") == lease and len(results(r)) == 1
    m = wait_for(lambda: p.get_message(timeout=0.1), 5, what="the cancel hint")
    assert m["data"] == "c j2"
    # again: the same answer (and hint), still nothing recorded
    assert lua.admin("cancel", "j2") == [1, "cancelling", "a1"]
    assert len(results(r)) == 1
    assert p.get_message(timeout=0.3) is None             # no channel: no hint
    p.close()
    fields, _ = lua.job("j2")
    assert dict(zip(JOB_FIELDS, fields))["cancel"] == "1"
    assert lua.admin("cancel", "nope") == \
        [0, "no such job: it finished, was cancelled or never existed"]


def test_admin_retry_requeues_a_dead_job_with_failures_reset(lua, r):
    dead_job(lua, "j1")
    lua.enqueue("e2", [("j2", "h1")])
    assert lua.admin("retry", "j1") == [1, "ok"]
    j = r.hgetall(K("job:j1"))
    assert (j["state"], j["failures"]) == ("ready", "0") and "died_ms" not in j
    assert r.ttl(K("job:j1")) == -1                       # PERSIST: no dead expiry
    assert not r.zscore(K("dead"), "j1") and "j1" in r.lrange(K("ready:h1"), 0, -1)
    assert lua.admin("retry", "j2") == [0, "only a dead or delayed job can be retried"]
    assert lua.admin("retry", "nope") == [0, "no such job"]


def test_admin_retry_dead_and_purge_by_handler(lua, r):
    dead_job(lua, "d1", "h1")
    dead_job(lua, "d2", "h1")
    dead_job(lua, "d3", "h2")
    assert lua.admin("retry_dead", "h1", limit=1)[0] == 1
    assert lua.admin("purge", "", older_ms=3600000) == [0, "ok"]    # none that old
    assert lua.admin("purge", "h2") == [1, "ok"]
    assert not r.exists(K("job:d3")) and not r.zscore(K("dead"), "d3")
    assert r.zcard(K("dead")) == 1
    with pytest.raises(redislib.ResponseError, match="unknown action"):
        lua.admin("frobnicate")


# -------------------------------------------------------------- routes ----

def test_routes_of_live_agents_except_self(lua, r, raw):
    now = lua.now()
    r.zadd(K("agents"), {"a1": now, "a2": now, "a3": now - 60000, "a4": now})
    r.hset(K("routes:a1"), mapping={"h1": '{"on":"x.*"}'})
    r.hset(K("routes:a3"), mapping={"h3": '{"on":"y"}'})
    before = snapshot(raw)
    rep = lua.routes("a2", grace_ms=10000)
    assert snapshot(raw) == before
    assert sorted(rep) == [["a1", ["h1", '{"on":"x.*"}']], ["a4", []]]


# --------------------------------------------------------------- pause ----

def test_pause_holds_a_handler_in_the_fetch_and_lets_the_others_run(lua, r):
    lua.enqueue("e1", [("j1", "h1"), ("j2", "h2")])
    was, until, now = lua.pause("h1")
    assert (was, until) == (0, 0) and r.hget(K("paused"), "h1") == "0"
    now, jobs, wake = lua.fetch("a1", [("h1", 5), ("h2", 5)], full=True)
    assert [j[0] for j in jobs] == ["j2"] and wake == -1   # until resumed: no wake
    assert r.lrange(K("ready:h1"), 0, -1) == ["j1"]           # untouched, still first
    # the finish's fetch skips it too
    rep = lua.finish("j2", "a1", 1, "ok", handler="h2", want=1, rooms=[("h1", 1)],
                     full=True)
    assert rep[3] == [] and rep[4] == -1
    # a pause taken again says it was paused
    assert lua.pause("h1")[0] == 1


def test_pause_for_a_time_reports_its_end_as_wake_and_ends_by_itself(lua, r):
    lua.enqueue("e1", [("j1", "h1")])
    was, until, now = lua.pause("h1", for_ms=300)
    assert was == 0 and now + 250 <= until <= now + 350
    t, jobs, wake = lua.fetch("a1", [("h1", 5)], full=True)
    assert jobs == [] and wake == until
    # a handler the agent did not ask for does not set wake
    assert lua.fetch("a1", [("h2", 5)], full=True)[2] == -1
    wait_for(lambda: lua.now() > until, 2, what="the pause's end")
    t, jobs, wake = lua.fetch("a1", [("h1", 5)], full=True)
    assert [j[0] for j in jobs] == ["j1"] and wake == -1
    assert r.hget(K("paused"), "h1") is None                  # the ended pause is gone


def test_resume_deletes_the_pause_and_publishes_the_ready_hint(lua, r):
    p = r.pubsub()
    p.subscribe(K("notify"))
    wait_for(lambda: p.get_message(timeout=0.1) is not None, 2, what="subscribed")
    lua.enqueue("e1", [("j1", "h1")])
    lua.pause("h1")
    assert lua.pause("h1", action="resume", notify=K("notify"))[0] == 1
    assert r.hget(K("paused"), "h1") is None
    msg = wait_for(lambda: p.get_message(timeout=0.1), 2, what="the hint")
    assert msg["data"] == "r"
    assert [j[0] for j in lua.fetch("a1", [("h1", 5)])[1]] == ["j1"]
    assert lua.pause("h1", action="resume")[0] == 0           # not paused: says so
    with pytest.raises(redislib.ResponseError):
        lua.pause("h1", action="frobnicate")


def test_status_reports_pauses_and_their_end(lua, r):
    lua.pause("h1")
    lua.pause("h2", for_ms=60000)
    now, hs = lua.status(["h1", "h2", "h3"])[:2]
    pu = {h[0]: h[8] for h in hs}
    assert pu["h1"] == 0 and pu["h2"] > now and pu["h3"] == -1


# --------------------------------------------------------- max_running ----

def test_fetch_holds_a_handler_at_its_fleet_limit_across_agents(lua, r):
    lua.enqueue("e1", [("j%d" % i, "h1") for i in range(5)] + [("k1", "h2")])
    _, jobs = lua.fetch("a1", [("h1", 5, "m3"), ("h2", 5)])
    assert sorted(j[0] for j in jobs if j[1] == "h1") == ["j0", "j1", "j2"]
    assert [j[0] for j in jobs if j[1] == "h2"] == ["k1"]       # others not held
    assert r.smembers(K("flow:h1:running")) == {"j0", "j1", "j2"}
    assert r.hget(K("job:j0"), "fleet") == "1" and r.hget(K("job:k1"), "fleet") is None
    assert lua.fetch("a2", [("h1", 5, "m3")])[1] == []            # another agent: full
    # the finish frees the slot, and its own fetch may take it
    st, _, _, got = lua.finish("j0", "a1", 1, "ok", want=5, rooms=[("h1", 5, "m3")])
    assert st == "done" and [j[0] for j in got] == ["j3"]
    assert r.scard(K("flow:h1:running")) == 3
    # a retry frees it too; a stale finish does not
    assert lua.finish("j1", "a1", 1, "fail")[0] == "retry"
    assert lua.finish("j2", "a9", 1, "ok")[0] == "stale"
    assert r.smembers(K("flow:h1:running")) == {"j2", "j3"}
    assert [j[0] for j in lua.fetch("a2", [("h1", 5, "m3")])[1]] == ["j4"]


def test_fleet_slot_freed_by_recovery_and_reconcile_and_the_count_heals(lua, r):
    lua.enqueue("e1", [("j%d" % i, "h1") for i in range(4)])
    lua.fetch("a1", [("h1", 2, "m2")], lease_ms=1)               # j0 j1, leases expire
    wait_for(lambda: lua.now() > int(r.hget(K("job:j0"), "lease_ms")), 2, what="expiry")
    assert lua.recover() == 2
    assert r.scard(K("flow:h1:running")) == 0
    lua.fetch("a2", [("h1", 2, "m2")])                           # j2 j3
    # a lost fetch reply: the reconcile puts both back and frees their slots
    lua.extend("a2", reconcile=1)
    assert r.scard(K("flow:h1:running")) == 0
    # a member left without a lease (a crash between two steps) is dropped at the limit
    r.sadd(K("flow:h1:running"), "ghost1", "ghost2")
    _, jobs = lua.fetch("a3", [("h1", 2, "m2")])
    assert len(jobs) == 2 and "ghost1" not in r.smembers(K("flow:h1:running"))


# ---------------------------------------------------------------- rate ----

def test_fetch_spends_rate_tokens_and_says_when_the_next_one_comes(lua, r):
    lua.enqueue("e1", [("j%d" % i, "h1") for i in range(4)] + [("k1", "h2")])
    now, jobs, wake = lua.fetch("a1", [("h1", 4, "r10/1000/1"), ("h2", 4)], full=True)
    assert [j[0] for j in jobs] == ["j0", "k1"]                # one token, others not held
    assert now < wake <= now + 101                              # the next token: 100 ms
    tok, ts = r.hmget(K("flow:h1:rate"), "tokens", "ts")
    assert float(tok) < 1 and int(ts) == now
    assert 0 < r.pttl(K("flow:h1:rate")) <= 1100 + 100
    # another agent shares the bucket
    now2, jobs, wake2 = lua.fetch("a2", [("h1", 4, "r10/1000/1")], full=True)
    assert jobs == [] and abs(wake2 - wake) <= 1
    wait_for(lambda: lua.now() >= wake, 2, what="the next token")
    _, jobs, _ = lua.fetch("a2", [("h1", 4, "r10/1000/1")], full=True)
    assert [j[0] for j in jobs] == ["j1"]                       # in order


def test_rate_burst_lets_that_many_start_at_once_and_no_wake_when_emptied(lua, r):
    lua.enqueue("e1", [("j%d" % i, "h1") for i in range(7)])
    now, jobs, wake = lua.fetch("a1", [("h1", 10, "r100/60000/5")], full=True)
    assert len(jobs) == 5 and now + 550 <= wake <= now + 601   # 600 ms a token
    lua.r.delete(K("flow:h1:rate"))                             # a full bucket again
    now, jobs, wake = lua.fetch("a1", [("h1", 10, "r100/60000/5")], full=True)
    assert len(jobs) == 2 and wake == -1                        # the list ran out first
    # with max_running too, the smaller room wins
    lua.enqueue("e2", [("x%d" % i, "h3") for i in range(5)])
    _, jobs = lua.fetch("a1", [("h3", 10, "m2,r100/1000/50")])
    assert len(jobs) == 2 and r.scard(K("flow:h3:running")) == 2
    assert float(r.hget(K("flow:h3:rate"), "tokens")) == pytest.approx(48, abs=0.5)


# ----------------------------------------------------------------- keys ----

def test_a_busy_key_makes_its_jobs_wait_in_order_and_other_keys_run(lua, r):
    lua.enqueue("e1", [("a1", "h1", 0, 3, "A")])
    lua.enqueue("e2", [("a2", "h1", 0, 3, "A")])
    lua.enqueue("e3", [("a3", "h1", 0, 3, "A")])
    lua.enqueue("e4", [("b1", "h1", 0, 3, "B")])
    assert r.lrange(K("ready:h1"), 0, -1) == ["b1", "a1"]
    assert r.lrange(K("flow:h1:wait:A"), 0, -1) == ["a3", "a2"]
    assert r.hget(K("job:a2"), "state") == "waiting"
    assert r.hgetall(K("flow:h1:keys")) == {"A": "1", "B": "1"}
    _, jobs = lua.fetch("ag", [("h1", 10)])
    assert [j[0] for j in jobs] == ["a1", "b1"]                 # never a waiting one
    # a retry keeps its slot: a2 still waits
    assert lua.finish("a1", "ag", 1, "fail", backoff_ms=0)[0] == "retry"
    assert r.hget(K("job:a1"), "kslot") == "1" and r.llen(K("flow:h1:wait:A")) == 2
    wait_for(lambda: lua.promote()[0] == 1, 2, what="the retry due")
    assert r.lrange(K("ready:h1"), 0, -1) == ["a1"]              # back at the head
    _, jobs = lua.fetch("ag", [("h1", 10)])
    # done: the slot goes to a2, which the finish's own fetch takes
    st, _, _, got = lua.finish("a1", "ag", 2, "ok", want=5, rooms=[("h1", 5)])
    assert st == "done" and [j[0] for j in got] == ["a2"]
    assert r.lrange(K("flow:h1:wait:A"), 0, -1) == ["a3"]
    # dead also frees it; the keys hash forgets a key nobody holds
    assert lua.finish("a2", "ag", 1, "fatal")[0] == "dead"
    assert r.lrange(K("ready:h1"), 0, -1) == ["a3"]
    lua.fetch("ag", [("h1", 10)])
    lua.finish("a3", "ag", 1, "ok")
    lua.finish("b1", "ag", 1, "ok")
    assert r.exists(K("flow:h1:keys")) == 0


def test_per_key_2_admits_two_and_delayed_jobs_are_admitted_when_due(lua, r):
    for i in range(3):
        lua.enqueue("e%d" % i, [("j%d" % i, "h1", 0, 3, "A", 2)])
    assert r.llen(K("ready:h1")) == 2 and r.llen(K("flow:h1:wait:A")) == 1
    lua.enqueue("e9", [("d1", "h1", 50, 3, "A", 2)])            # delayed
    assert r.hget(K("job:d1"), "state") == "delayed"
    wait_for(lambda: lua.promote()[0] == 0 and r.zcard(K("delayed")) == 0, 2,
             what="d1 due")
    assert r.lrange(K("flow:h1:wait:A"), 0, -1) == ["d1", "j2"]  # at its due time, behind


def test_on_busy_coalesce_replace_and_reject(lua, r):
    lua.enqueue("e0", [("c0", "hc", 0, 3, "K", 1, "coalesce")])
    lua.enqueue("e1", [("c1", "hc", 0, 3, "K", 1, "coalesce")])
    assert lua.enqueue("e2", [("c2", "hc", 0, 3, "K", 1, "coalesce")]) == [1, "c1 hc"]
    assert r.exists(K("job:c2")) == 0 and r.llen(K("flow:hc:wait:K")) == 1
    lua.enqueue("f0", [("r0", "hr", 0, 3, "K", 1, "replace")])
    lua.enqueue("f1", [("r1", "hr", 0, 3, "K", 1, "replace")], data='{"v":1}')
    assert lua.enqueue("f2", [("r2", "hr", 0, 3, "K", 1, "replace")],
                       data='{"v":2}') == [1, "r1 hr"]
    assert r.hmget(K("job:r1"), "data", "event_id") == ['{"v":2}', "f2"]
    lua.enqueue("g0", [("x0", "hx", 0, 3, "K", 1, "reject")])
    before = r.dbsize()
    assert lua.enqueue("g1", [("x1", "hx", 0, 3, "K", 1, "reject"), ("y1", "hy")]) == \
        [2, "hx K"]
    assert r.dbsize() == before                                 # nothing, not even seen:
    assert r.exists(K("seen:g1")) == 0


def test_recovery_and_cancel_give_the_key_slot_to_the_next_job(lua, r):
    lua.enqueue("e1", [("a1", "h1", 0, 1, "A")])
    lua.enqueue("e2", [("a2", "h1", 0, 1, "A")])
    lua.enqueue("e3", [("a3", "h1", 0, 1, "A")])
    lua.fetch("dead-agent", [("h1", 1)], lease_ms=1)
    wait_for(lambda: lua.now() > int(r.hget(K("job:a1"), "lease_ms")), 2, what="expiry")
    assert lua.recover() == 1                                   # a1 dead (1 attempt)
    assert r.lrange(K("ready:h1"), 0, -1) == ["a2"]
    # cancel of a waiting job takes it out of its key's list
    assert lua("admin", [K("delayed"), K("dead"), K("results")],
               [P, "cancel", "a3", 0, 10, 1000, ""])[0] == 1
    assert r.llen(K("flow:h1:wait:A")) == 0
    # cancel of the admitted one frees the slot
    lua("admin", [K("delayed"), K("dead"), K("results")], [P, "cancel", "a2", 0, 10, 1000, ""])
    assert r.exists(K("flow:h1:keys")) == 0
    # retry of the dead one goes through its key again
    lua.enqueue("e4", [("a4", "h1", 0, 1, "A")])
    lua("admin", [K("delayed"), K("dead"), K("results")], [P, "retry", "a1", 0, 10, 1000, ""])
    assert r.hget(K("job:a1"), "state") == "waiting"


def test_status_shows_busy_keys_what_waits_the_fleet_count_and_tokens(lua, r):
    for i in range(4):
        lua.enqueue("e%d" % i, [("a%d" % i, "h1", 0, 3, "A")])
    lua.enqueue("e9", [("b0", "h1", 0, 3, "B")])
    lua.enqueue("f1", [("m0", "h2"), ("m1", "h3")])
    lua.fetch("ag", [("h2", 5, "m1"), ("h3", 5, "r1/60000/1")])
    row = {h[0]: h for h in lua.status(["h1", "h2", "h3"])[1]}
    assert row["h1"][9:12] == [2, 3, [["A", 1, 3], ["B", 1, 0]]]
    assert row["h2"][12] == 1 and row["h1"][12] == 0
    assert float(row["h3"][13]) < 1 and row["h2"][13] == ""
