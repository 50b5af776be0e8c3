"""Redis Sentinel (issue 5): redis = sentinel://h:p,h:p,h:p/mymaster.

On loopback: one master, one replica, three sentinels (redis-sentinel),
ports chosen at random.  An agent emits and runs a stream of events (with
ids) while `SENTINEL FAILOVER mymaster` promotes the replica.  Afterwards
the agent works against the new master, the invariant checker passes there,
and the number of acknowledged events lost (replication is asynchronous: an
ack from the old master for a write not yet replicated can be lost) is
printed and appended to tests/ha/failover.txt.  Losses are reported, not
asserted to be zero.
"""

import collections
import signal
import time

import pytest

from hatest import (find_sentinel, binary_mentions, free_port, rec_handler, wait_for,
                    append_figure, read_records, Producer)

NAME = "mymaster"


def info(r, section):
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in r.info(section).items()}


def master_port(sentinel):
    addr = sentinel.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)
    return int(addr[1]) if addr else None


@pytest.mark.parametrize("mode", ["sentinel-failover", "sentinel-failover-min-replicas",
                                  "master-kill9"])
def test_sentinel_failover(env, mode):
    """mode sentinel-failover: `SENTINEL FAILOVER mymaster` with the old
    master alive (it is demoted later by the sentinels);
    sentinel-failover-min-replicas: the same with min-replicas-to-write 1
    (min-replicas-max-lag 2) on the old master, so that it refuses writes
    once its replica has left (the mitigation Redis documents);
    master-kill9: the master is killed -9 and the sentinels fail over on
    their own (down-after 3 s)."""
    if find_sentinel() is None:
        pytest.skip("redis-sentinel not installed (apt-get install redis-sentinel)")
    if not binary_mentions("sentinel://"):
        pytest.skip("sentinel:// addresses: feature not in this build")
    fast = ["--repl-diskless-sync-delay", "0"]
    guard = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"] \
        if mode.endswith("min-replicas") else []
    old = env.start_redis(port=free_port(), extra=fast + guard)
    new = env.start_redis(port=free_port(),
                          extra=fast + ["--replicaof", "127.0.0.1", str(old.port)])
    wait_for(lambda: info(new.client(), "replication").get("master_link_status") == "up",
             15, interval=0.1, what="the replica to sync")
    sentinels = [env.start_sentinel(old.port, NAME) for _ in range(3)]

    def sentinels_ready():
        for s in sentinels:
            c = s.client()
            if len(c.execute_command("SENTINEL", "REPLICAS", NAME)) != 1:
                return False
            if len(c.execute_command("SENTINEL", "SENTINELS", NAME)) != 2:
                return False
        return True
    wait_for(sentinels_ready, 30, interval=0.2, what="sentinels to know the replica and each other")

    addr = "sentinel://%s/%s" % (",".join("127.0.0.1:%d" % s.port for s in sentinels), NAME)
    rec = env.dir / "rec"
    rec.mkdir()
    hs = {"sj": rec_handler(rec, "s.*", "s0", attempts=5, timeout="10s")}
    hs["sj"]["exec"] += " 0.05"
    a = env.agent(hs, name="s0", redis_addr=addr, opts={"lease": "2s", "workers": 2})
    assert old.client().exists(env.key("agent:s0")), "agent not on the master"

    prod = Producer(a, "sev")
    prod.start()
    time.sleep(3.0)
    t_fail = time.time()
    if mode.startswith("sentinel-failover"):
        sentinels[0].client().execute_command("SENTINEL", "FAILOVER", NAME)
    else:
        old.stop(sig=signal.SIGKILL)
    wait_for(lambda: all(master_port(s) == new.port for s in sentinels), 30, interval=0.1,
             what="every sentinel to name the new master")
    t_switched = time.time()
    wait_for(lambda: info(new.client(), "replication").get("role") == "master", 10,
             interval=0.1, what="the replica to become master")
    # keep the stream going until the agent writes to the new master (its
    # latest acks show up there), at most 30 s, then 2 s more
    r = new.client()

    def on_new_master():
        last = list(prod.acked.items())[-1:]
        if last and last[0][1][1] > t_switched and r.exists(env.key("seen:" + last[0][0])):
            return last[0][1][1]
        return None
    try:
        t_moved = wait_for(on_new_master, 30, interval=0.1,
                           what="the agent's acks to land on the new master")
    except AssertionError:
        t_moved = None
    time.sleep(2.0)
    prod.stop.set()
    prod.join(60)
    assert not prod.is_alive()

    # the agent is connected to the new master and processes new events
    env.redis = new
    a.wait_ready(20)
    wait_for(lambda: r.exists(env.key("agent:s0")), 10, interval=0.1,
             what="the agent's heartbeat on the new master")
    after = [a.emit("s.after", {"i": i}, id="after-%d" % i)["jobs"][0]["id"] for i in range(10)]
    env.wait_final(after, 30)

    # every acknowledged event: done on the new master, or lost with it
    acked = prod.acked

    def settled():
        res = env.results()
        done_ev = {x["event_id"] for x in res if x["outcome"] == "done"}
        open_ = []
        lost = []
        for eid in acked:
            if eid in done_ev:
                continue
            if r.exists(env.key("seen:" + eid)):
                open_.append(eid)       # queued, not finished yet
            else:
                lost.append(eid)
        return (lost, res) if not open_ else None
    lost, res = wait_for(settled, 40, interval=0.3,
                         what="every acknowledged event to be done or gone")
    lost_set = set(lost)
    job_ids = [j["id"] for eid, (rep, _) in acked.items() if eid not in lost_set
               for j in rep["jobs"]] + after
    rep = env.check(job_ids)
    runs = read_records(rec)
    twice = [j for j, n in collections.Counter(l[0] for l in runs).items() if n > 1]
    lost_times = [acked[e][1] - t_fail for e in lost]
    line = ("mode=%s acked=%d lost=%d (acked %s s around SENTINEL FAILOVER) refused=%s gave_up=%d "
            "sentinels_switched_after=%.2fs agent_on_new_master_after=%s refusals_window=%s reruns=%d handler_runs_twice=%d"
            % (mode, len(acked), len(lost), ["%.2f" % t for t in lost_times[:3]] + ["..."] + ["%.2f" % t for t in lost_times[-3:]], dict(prod.refused),
               len(prod.gave_up), t_switched - t_fail,
               "%.2fs" % (t_moved - t_fail) if t_moved else "never(30s)",
               "%.2fs..%.2fs" % (prod.first_refusal - t_fail, prod.last_refusal - t_fail)
               if prod.first_refusal else "none", rep.reruns, len(twice)))
    print("FAILOVER " + line)
    print(rep.summary())
    append_figure("failover.txt", line)
    assert not prod.gave_up, "emits refused for 30 s: %s" % prod.gave_up[:5]
    assert t_moved is not None, "the agent's acks never reached the new master within 30 s"
    assert len(acked) > 100
