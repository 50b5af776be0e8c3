"""Redis Cluster (issue 5): all keys share the {namespace} hash tag (one
slot); the agent is pointed at a node that does not own it and follows
MOVED, also after the slot is migrated to another node in the middle of a
stream of emits and jobs.

Three masters on loopback (redis-server --cluster-enabled yes on free ports,
`redis-cli --cluster create ... --cluster-yes`).  The migration is done by
hand (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE of every key in the
slot, CLUSTER SETSLOT NODE on every node), so that exactly the slot of
{ha} moves.  Afterwards every acknowledged event is done and the
invariant checker passes on the node that owns the slot now.  While the
slot migrates (about 1.5 s, keys moved five at a time), the agent waits
out ASK, TRYAGAIN and MOVED and sends each command again once the slot
has moved (issue 9.5): no emit is refused.
"""

import subprocess
import time

import pytest

from hatest import (free_port, find_redis_cli, rec_handler, wait_for, append_figure,
                    read_records, Producer, count_by)


def cluster_state(r):
    raw = r.execute_command("CLUSTER", "INFO")
    if isinstance(raw, dict):
        return raw.get("cluster_state")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    for line in text.splitlines():
        if line.startswith("cluster_state:"):
            return line.split(":", 1)[1].strip()
    return None


def slot_owner_port(r, slot):
    for rng in r.execute_command("CLUSTER", "SLOTS"):
        lo, hi, master = rng[0], rng[1], rng[2]
        if lo <= slot <= hi:
            return int(master[1])
    return None


def myid(r):
    v = r.execute_command("CLUSTER", "MYID")
    return v.decode() if isinstance(v, bytes) else v


def migrate_slot(src, dst, others, slot, batch=5, pause=0.03):
    """Move one slot from src to dst (Redis objects), keys and all, a few
    keys at a time with pauses, so that the agent meets the MIGRATING /
    IMPORTING state (ASK, TRYAGAIN) for a while.  Returns (keys moved,
    seconds)."""
    t0 = time.time()
    s, d = src.client(), dst.client()
    sid, did = myid(s), myid(d)
    d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", sid)
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", did)
    moved = 0
    while True:
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
        if not keys:
            break
        s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 10000, "REPLACE",
                          "KEYS", *keys)
        moved += len(keys)
        time.sleep(pause)
    d.execute_command("CLUSTER", "SETSLOT", slot, "NODE", did)
    s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", did)
    for o in others:
        o.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", did)
    return moved, time.time() - t0


def test_cluster_moved_and_migration(env):
    cli = find_redis_cli()
    if cli is None:
        pytest.skip("redis-cli not installed")
    nodes = [env.start_redis(port=free_port(bus=True), cluster=True) for _ in range(3)]
    r = subprocess.run([cli, "--cluster", "create"] +
                       ["127.0.0.1:%d" % n.port for n in nodes] +
                       ["--cluster-replicas", "0", "--cluster-yes"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: all(cluster_state(n.client()) == "ok" for n in nodes), 30, interval=0.2,
             what="cluster_state:ok on every node")
    slot = nodes[0].client().execute_command("CLUSTER", "KEYSLOT", env.key("x"))
    wait_for(lambda: len({slot_owner_port(n.client(), slot) for n in nodes}) == 1, 10,
             interval=0.1, what="every node to agree on the slot's owner")
    owner_port = slot_owner_port(nodes[0].client(), slot)
    owner = [n for n in nodes if n.port == owner_port][0]
    others = [n for n in nodes if n is not owner]
    entry, target = others[0], others[1]
    print("slot %d of {%s}: owner %d, agent pointed at %d, migrating to %d"
          % (slot, env.ns, owner.port, entry.port, target.port))
    env.redis = owner

    rec = env.dir / "rec"
    rec.mkdir()
    hs = {"cj": rec_handler(rec, "c.*", "c0", attempts=5, timeout="10s")}
    a = env.agent(hs, name="c0", redis_addr="127.0.0.1:%d" % entry.port,
                  opts={"lease": "2s", "workers": 2})
    first = [a.emit("c.first", {"i": i}, id="first-%d" % i)["jobs"][0]["id"] for i in range(20)]
    env.wait_final(first, 20)
    oc = owner.client()
    assert oc.exists(env.key("agent:c0")), "the agent's keys are not on the slot's owner"
    assert not entry.client().dbsize(), "keys on the node that does not own the slot"

    prod = Producer(a, "cev", event="c.ev")
    prod.start()
    time.sleep(2.0)
    t_mig = time.time()
    moved, took = migrate_slot(owner, target, [entry], slot)
    wait_for(lambda: all(slot_owner_port(n.client(), slot) == target.port for n in nodes), 10,
             interval=0.1, what="every node to see the slot on its new owner")
    env.redis = target
    tc = target.client()

    def on_target():
        last = list(prod.acked.items())[-1:]
        if last and last[0][1][1] > t_mig + took and tc.exists(env.key("seen:" + last[0][0])):
            return last[0][1][1]
        return None
    t_moved = wait_for(on_target, 30, interval=0.1, what="new acks on the slot's new owner")
    time.sleep(2.0)
    prod.stop.set()
    prod.join(60)
    assert not prod.is_alive()
    assert not prod.gave_up, "emits refused for 30 s: %s" % prod.gave_up[:5]
    # ASK, TRYAGAIN and MOVED waited out: a migration refuses nothing
    assert not prod.refused, "emits refused during the migration: %r" % dict(prod.refused)
    assert not owner.client().dbsize(), "keys left behind on the old owner"

    acked_jobs = [j["id"] for rep, _ in prod.acked.values() for j in rep["jobs"]]
    # the inbox stream moved with the slot: entries added on the new owner
    # are read too
    if tc.exists(env.key("inbox")):
        tc.xadd(env.key("inbox"), {"event": "c.inbox", "id": "inbox-after-migration"})
        try:
            wait_for(lambda: [x for x in env.results() if x["event_id"] ==
                              "inbox-after-migration" and x["outcome"] == "done"],
                     10, interval=0.1, what="the inbox entry added after the migration")
        except AssertionError as e:
            inbox_problem = str(e)
        else:
            inbox_problem = None
    else:
        inbox_problem = None
    after = [a.emit("c.after", {"i": i}, id="after-%d" % i)["jobs"][0]["id"] for i in range(10)]
    env.wait_final(first + acked_jobs + after, 40)
    rep = env.check(first + acked_jobs + after)
    runs = read_records(rec)
    twice = [j for j, n in count_by(runs, lambda l: l[0]).items() if n > 1]
    line = ("slot=%d keys_moved=%d migration_s=%.2f acked=%d refused=%s lost=0 "
            "acks_on_new_owner_after=%.2fs reruns=%d handler_runs_twice=%d"
            % (slot, moved, took, len(prod.acked), dict(prod.refused), t_moved - t_mig,
               rep.reruns, len(twice)))
    print("CLUSTER " + line)
    append_figure("failover.txt", "cluster-migration " + line)
    assert rep.done == len(set(first + acked_jobs + after))
    assert inbox_problem is None, "after the slot migration the agent no longer reads its " \
        "inbox: %s" % inbox_problem
