"""Failure matrix #8-#14: Redis restarts, outages, partitions, stalls and
full disks (the agent's spool and Redis's AOF)."""

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import (handler, read_lines, pgid_members, wait_for, stays, short, Client,
                      children_of, free_port, NS)

BACKOFF = "100ms..200ms"


def rec_hs(rec, s1=0, s2=0, on="job.*", **kw):
    h = {"on": on, "exec": "%s %s %s %s" % (handler("rec.sh"), rec, s1, s2),
         "backoff": BACKOFF, "timeout": "60s", "attempts": 10}
    h.update(kw)
    return {"rec": h}


def runs(rec, jid=None):
    return [l for l in read_lines(rec) if l[3] != "end" and (jid is None or l[0] == jid)]


def jobs_by_event_id(env):
    by = {}
    for r in env.results():
        by.setdefault(r["event_id"], set()).add(r["job"])
    return by


def done_by_event_id(env):
    by = {}
    for r in env.results():
        if r["outcome"] == "done":
            by.setdefault(r["event_id"], []).append(r["job"])
    return by


# ---------------------------------------------------------------- #8 ----

def test_08_redis_crash_and_restart_with_aof(env):
    """#8 kill -9 Redis (appendfsync always) while events arrive and jobs
    run, restart it on the same dir: the agent reconnects, reloads its
    scripts, retries its finishes; no acknowledged enqueue is lost."""
    r = env.start_redis(aof=True, fsync="always")
    rec = env.dir / "rec"
    a = env.agent(rec_hs(rec, 0.3, 0.3), name="a", opts={"lease": "4s", "workers": 4})
    # some bulk so that loading the AOF takes a moment (-LOADING)
    c = r.client()
    pipe = c.pipeline(transaction=False)
    for i in range(60):
        pipe.set("filler:%d" % i, b"f" * (2 << 20))
    pipe.execute()
    acked, refused = {}, []
    crashed = threading.Event()

    def emitter():
        for i in range(300):
            eid = "e8-%d" % i
            try:
                rep = a.request({"event": "job.x", "data": {"i": i}, "id": eid}, timeout=15)
            except OSError as e:
                refused.append((eid, repr(e)))
                continue
            if rep.get("ok"):
                acked[eid] = rep["jobs"][0]["id"]
            else:
                refused.append((eid, rep.get("code")))
            if i == 100:
                crashed.wait(10)
            time.sleep(0.005)
    t = threading.Thread(target=emitter)
    t.start()
    wait_for(lambda: len(acked) >= 100, 20, what="100 acked emits")
    r.crash()
    crashed.set()
    time.sleep(0.5)
    r.start(wait=False)
    r.wait_up(30)
    t.join(60)
    assert not t.is_alive()
    env.wait_final(acked.values(), 60)
    log = a.stderr()
    print("acked %d, refused %d (e.g. %s); agent saw LOADING: %s; reconnects: %d"
          % (len(acked), len(refused), refused[:2], "LOADING" in log,
             log.count("redis cmd: connected")))
    assert log.count("redis cmd: connected") >= 2
    assert all(code == "unavailable" for _, code in refused), refused[:5]
    # refused (unavailable) events with ids may or may not be queued; the
    # reply said so.  Acked ones: each exactly one done.
    done = done_by_event_id(env)
    for eid, jid in acked.items():
        assert done.get(eid) == [jid], (eid, done.get(eid))
    env.check(list(acked.values()), all_pending_ok=False,
              pending_ok=set(j for e in refused for j in jobs_by_event_id(env).get(e[0], ())))


# ---------------------------------------------------------------- #9 ----

def test_09_redis_down_events_spooled(env):
    """#9 Redis down while 100 events arrive on the socket: each is answered
    ok+spooled, then delivered exactly once per event id, in order, once
    Redis is back; the spool drains."""
    r = env.start_redis(aof=True)
    rec = env.dir / "rec"
    spool = env.dir / "spool"
    hs = {"s": {"on": "sp.*", "exec": "%s %s" % (handler("append.sh"), rec),
                "backoff": BACKOFF, "concurrency": 1}}
    a = env.agent(hs, name="a", opts={"spool": str(spool), "workers": 1})
    r.stop()
    wait_for(lambda: a.ping()["redis"] is False, 10, what="agent to see Redis down")
    msgs = [{"event": "sp.x", "data": {"i": i}, "id": "e9-%03d" % i} for i in range(100)]
    # a producer retrying 3 events (same ids) and 5 events without an id
    msgs += [dict(msgs[i]) for i in (3, 50, 99)]
    msgs += [{"event": "sp.noid", "data": {"i": 100 + i}} for i in range(5)]
    reps = a.emit_many(msgs)
    assert all(x.get("ok") and x.get("spooled") for x in reps), reps[:3]
    noid = [x["event_id"] for x in reps[-5:]]
    assert len(set(noid)) == 5 and all(noid)
    files = sorted(p.name for p in spool.iterdir() if p.name.endswith(".event"))
    assert len(files) == 108
    r.start()
    want = ["e9-%03d" % i for i in range(100)] + noid
    wait_for(lambda: set(want) <= set(done_by_event_id(env)), 30,
             what="every spooled event delivered")
    wait_for(lambda: not any(spool.iterdir()), 5, what="the spool to drain")
    assert stays(lambda: len(env.results()) == 105, 1.0), len(env.results())
    done = done_by_event_id(env)
    for eid in want:
        assert len(done[eid]) == 1, (eid, done[eid])
    order = [r_["event_id"] for r_ in env.results()]
    assert order == want, "not replayed in order: %s" % order[:10]
    p = a.ping()
    print("ping after replay: spooled %s replayed %s spool_waiting %s"
          % (p.get("spooled"), p.get("replayed"), p.get("spool_waiting")))
    assert p.get("spooled") == 108 and p.get("replayed") == 108 and p.get("spool_waiting") == 0
    env.check([j for e in want for j in done[e]])


# ---------------------------------------------------------------- #10 ---

def test_10a_redis_down_shorter_than_lease(env):
    """#10 Redis down for 1 s while a job runs (lease 6s): renewals resume,
    no re-run."""
    r = env.start_redis(aof=True)
    rec = env.dir / "rec"
    a = env.agent(rec_hs(rec, 4, 0), name="a", opts={"lease": "6s"})
    jid = a.emit("job.x")["jobs"][0]["id"]
    wait_for(lambda: runs(rec, jid), 10, what="the job to start")
    time.sleep(0.5)
    r.stop()
    time.sleep(1.0)
    r.start()
    fin = env.wait_final([jid], 15)[jid]
    res = env.job_results(jid)
    assert short(res) == [("a", "1", "done", "", "", "0")], short(res)
    assert "stopping its handler" not in a.stderr()
    env.check([jid])


def test_10b_redis_down_longer_than_lease(env):
    """#10 Redis down for 3 s with lease 1s: the local lease guard stops the
    handler before Redis returns (no overlap with a re-run); after the
    restart the job is retried and done once."""
    r = env.start_redis(aof=True)
    rec = env.dir / "rec"
    a = env.agent(rec_hs(rec, 10, 0), name="a")
    b = env.agent(rec_hs(rec, 10, 0), name="b")
    jid = a.emit("job.x")["jobs"][0]["id"]
    wait_for(lambda: runs(rec, jid), 10, what="the job to start")
    pgid = int(runs(rec, jid)[0][2])
    r.stop()
    t0 = time.monotonic()
    wait_for(lambda: not pgid_members(pgid), 3, what="the guard to stop the handler")
    killed_after = time.monotonic() - t0
    time.sleep(3.0 - killed_after)
    r.start()
    env.wait_final([jid], 20)
    res = env.job_results(jid)
    print("guard stopped the handler %.2fs into the outage; results %s" % (killed_after, short(res)))
    logs = a.stderr() + b.stderr()
    assert "Redis has not renewed its lease" in logs
    assert killed_after < 1.5
    assert res[-1]["outcome"] == "done" and res[-1]["attempt"] == "2", short(res)
    assert [l for l in read_lines(rec) if l[0] == jid and l[1] == "1" and l[3] == "end"] == []
    env.check([jid])


# ---------------------------------------------------------------- #11 ---

def _socat_tree(p):
    return [p.pid] + children_of(p.pid)


def test_11_partition_blackhole(env):
    """#11 agent -> socat TCP proxy -> Redis; kill -STOP the proxy (no RST):
    ping keeps answering, the lease guard stops the handler, the watchdog
    drops the connection, an emit is answered (spooled) instead of hanging;
    kill -CONT heals, everything is delivered."""
    r = env.start_redis(aof=True)
    port = free_port()
    sp = env.popen(["socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % port,
                    "UNIX-CONNECT:%s" % r.sock])
    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return True
        except OSError:
            return False
    wait_for(listening, 5, what="socat to listen")
    rec = env.dir / "rec"
    spool = env.dir / "spool"
    a = env.agent(rec_hs(rec, 5, 0), name="a",
                  opts={"redis": "127.0.0.1:%d" % port, "spool": str(spool)})
    jid = a.emit("job.x")["jobs"][0]["id"]
    wait_for(lambda: runs(rec, jid), 10, what="the job to start")
    pgid = int(runs(rec, jid)[0][2])
    stopped = _socat_tree(sp)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        reply = {}

        def emit_during():
            t = time.monotonic()
            try:
                reply["rep"] = a.request({"event": "job.y", "id": "e11"}, timeout=30)
            except OSError as e:
                reply["rep"] = repr(e)
            reply["took"] = time.monotonic() - t
        th = threading.Thread(target=emit_during)
        th.start()
        worst = 0.0
        guard_at = None
        while time.monotonic() - t0 < 13:
            t = time.monotonic()
            assert a.ping(timeout=3)["ok"]
            worst = max(worst, time.monotonic() - t)
            if guard_at is None and not pgid_members(pgid):
                guard_at = time.monotonic() - t0
            time.sleep(0.2)
        th.join(20)
        log = a.stderr()
        print("partition: worst ping %.3fs; handler stopped after %s s; emit answered after "
              "%.1fs: %r; watchdog fired: %s"
              % (worst, guard_at and round(guard_at, 2), reply.get("took", -1),
                 reply.get("rep"), "no answer from" in log))
        assert worst < 1.0
        assert guard_at is not None and guard_at < 2.0
        assert "no answer from" in log, "watchdog did not fire within 13 s"
        assert isinstance(reply.get("rep"), dict) and reply["rep"].get("ok") \
            and reply["rep"].get("spooled"), reply
        assert reply["took"] < 12
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    env.wait_final([jid], 30)
    wait_for(lambda: "e11" in done_by_event_id(env), 30, what="the spooled emit delivered")
    res = env.job_results(jid)
    print("results:", short(res))
    print("e11 results:", short([x for x in env.results() if x["event_id"] == "e11"]))
    assert res[-1]["outcome"] == "done"
    env.check([jid] + done_by_event_id(env)["e11"])


# ---------------------------------------------------------------- #12 ---

def test_12_redis_stall(env):
    """#12 CLIENT PAUSE 3000 WRITE, then DEBUG SLEEP 2, lease 5s (renew every
    1.67 s): no false lease loss, no watchdog, emits wait and succeed."""
    r = env.start_redis()
    rec = env.dir / "rec"
    a = env.agent(rec_hs(rec, 8, 0), name="a", opts={"lease": "5s"})
    jid = a.emit("job.x")["jobs"][0]["id"]
    wait_for(lambda: runs(rec, jid), 10, what="the job to start")
    c = r.client()
    c.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
    t = time.monotonic()
    rep = a.request({"event": "job.y"}, timeout=10)
    took = time.monotonic() - t
    assert rep.get("ok") and rep["jobs"], rep
    j2 = rep["jobs"][0]["id"]
    time.sleep(max(0, 3.5 - (time.monotonic() - t)))
    c.execute_command("DEBUG", "SLEEP", "2")
    env.wait_final([jid, j2], 20)
    log = a.stderr()
    print("emit during CLIENT PAUSE answered after %.2fs" % took)
    assert "stopping its handler" not in log and "lease lost" not in log
    assert "no answer from" not in log
    assert short(env.job_results(jid)) == [("a", "1", "done", "", "", "0")]
    env.check([jid, j2])


# ---------------------------------------------------------------- #13 ---

@pytest.mark.parametrize("how", ["tmpfs_256k", "spool_max"])
def test_13_spool_full(env, how):
    """#13 the spool fills up (a 256k tmpfs: ENOSPC; or spool_max): clients
    get unavailable, nothing acked is lost, nothing refused is queued, and
    it recovers once the spool drains."""
    r = env.start_redis(aof=True)
    rec = env.dir / "rec"
    spool = env.dir / "spool"
    opts = {"max_message": "1m"}
    if how == "tmpfs_256k":
        env.mount_tmpfs(spool, "256k")
    else:
        opts["spool_max"] = "64k"
    opts["spool"] = str(spool)
    hs = {"s": {"on": "sp.*", "exec": "%s %s" % (handler("append.sh"), rec), "backoff": BACKOFF}}
    a = env.agent(hs, name="a", opts=opts)
    r.stop()
    wait_for(lambda: a.ping()["redis"] is False, 10, what="agent to see Redis down")
    acked, refused = [], []
    pad = "p" * 8000
    for i in range(80):
        eid = "e13-%03d" % i
        rep = a.request({"event": "sp.x", "data": {"i": i, "pad": pad}, "id": eid})
        if rep.get("ok"):
            assert rep.get("spooled"), rep
            acked.append(eid)
        else:
            assert rep.get("code") == "unavailable", rep
            refused.append((eid, rep.get("error")))
    print("%s: acked %d, refused %d; first refusal: %s"
          % (how, len(acked), len(refused), refused[:1]))
    assert acked and refused
    # once full, it stays refused (no acked-after-refused reordering hole)
    assert acked == ["e13-%03d" % i for i in range(len(acked))]
    r.start()
    wait_for(lambda: set(acked) <= set(done_by_event_id(env)), 30, what="spool replay")
    wait_for(lambda: not [p for p in spool.iterdir() if p.name.endswith(".event")], 5,
             what="spool drained")
    assert stays(lambda: len(env.results()) == len(acked), 1.0)
    done = done_by_event_id(env)
    for eid in acked:
        assert len(done[eid]) == 1
    for eid, _ in refused:
        assert eid not in done and not r.client().exists("{%s}:seen:%s" % (NS, eid))
    # space freed: spooling works again
    r.stop()
    wait_for(lambda: a.ping()["redis"] is False, 10, what="agent to see Redis down")
    rep = a.request({"event": "sp.x", "data": {"again": 1, "pad": pad}, "id": "e13-again"})
    assert rep.get("ok") and rep.get("spooled"), rep
    r.start()
    wait_for(lambda: "e13-again" in done_by_event_id(env), 20, what="the later spooled emit")
    done = done_by_event_id(env)
    env.check([j for e in acked + ["e13-again"] for j in done[e]])


# ---------------------------------------------------------------- #14 ---

class KnownBug(AssertionError):
    """A regression of an agent bug this suite once found."""


def test_14_redis_aof_disk_full(env):
    """#14 Redis's AOF dir on a 4 MiB tmpfs that fills up (appendfsync
    everysec): Redis answers writes with -MISCONF; the agent stays up,
    spools emits, keeps its finish pending (retried about once a second);
    when space frees, everything is delivered."""
    rdir = env.dir / "redis0"
    env.mount_tmpfs(rdir, "4m")
    r = env.start_redis(aof=True, fsync="everysec")
    rec = env.dir / "rec"
    spool = env.dir / "spool"
    a = env.agent(rec_hs(rec, 1.5, 0), name="a", opts={"spool": str(spool), "lease": "8s"})
    first = [a.emit("job.a", {"i": i})["jobs"][0]["id"] for i in range(5)]
    env.wait_final(first, 15)
    running = a.emit("job.long")["jobs"][0]["id"]
    wait_for(lambda: runs(rec, running), 10, what="the long job to start")
    filler = rdir / "filler"
    with open(str(filler), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    acked = []
    misconf = False
    deadline = time.monotonic() + 15
    i = 0
    while time.monotonic() < deadline and not misconf:
        rep = a.request({"event": "job.b", "data": {"i": i, "pad": "q" * 2000}, "id": "e14-%d" % i})
        assert rep.get("ok"), rep
        acked.append("e14-%d" % i)
        i += 1
        try:
            r.client().set("probe", "x")
        except Exception as e:
            misconf = "MISCONF" in str(e)
        time.sleep(0.05)
    assert misconf, "Redis never refused writes"
    for j in range(10):
        rep = a.request({"event": "job.b", "data": {"i": i}, "id": "e14-%d" % i})
        assert rep.get("ok") and rep.get("spooled"), rep
        acked.append("e14-%d" % i)
        i += 1
    before = a.stderr().count("will retry")
    t_full = time.monotonic()
    wait_for(lambda: a.stderr().count("will retry") > before, 5, what="the finish to be refused")
    time.sleep(3.0)       # Redis refuses writes for a while; the finish waits
    retries = a.stderr().count("will retry") - before
    window = time.monotonic() - t_full
    assert a.alive() and a.ping()["ok"]
    filler.unlink()
    env.wait_final([running], 20)
    bugs = []
    print("finish retries while Redis refused writes: %d in %.1fs" % (retries, window))
    if retries > 2 * window + 3:
        bugs.append("F2: the refused finish was retried %d times in %.1fs (expected about "
                    "once a second)" % (retries, window))
    try:
        wait_for(lambda: set(acked) <= set(done_by_event_id(env)), 15,
                 what="every acked emit done")
    except AssertionError:
        waiting = sorted(p.name for p in spool.iterdir() if p.name.endswith(".event"))
        bugs.append("F1: 15 s after Redis accepted writes again, %d spooled events are still "
                    "in the spool (ping spool_waiting=%s); acked %s, done %s"
                    % (len(waiting), a.ping().get("spool_waiting"), len(acked),
                       len(set(acked) & set(done_by_event_id(env)))))
        # a dropped connection makes the agent replay: nothing acked is lost
        c = r.client()
        for cl in c.client_list():
            if cl.get("name") == "dispatchd:a:cmd":
                c.client_kill_filter(_id=cl["id"])
        wait_for(lambda: set(acked) <= set(done_by_event_id(env)), 20,
                 what="every acked emit done after a reconnect")
    done = done_by_event_id(env)
    for eid in acked:
        assert len(done[eid]) == 1, (eid, done[eid])
    env.check(first + [running] + [j for e in acked for j in done[e]])
    if bugs:
        raise KnownBug("\n".join(bugs))
