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
import socket
import threading
import time

import pytest

from hatest import (find_sentinel, binary_mentions, free_port, rec_handler, wait_for,
                    append_figure, read_records, Producer, Sentinel)
from harness.ddtest import request

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


class MuteServer(threading.Thread):
    """A TCP server on loopback that accepts connections and never answers
    (a hung sentinel); counts the connections it accepted."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self.conns.append(c)        # held open, never read or answered
            self.accepted += 1

    def close(self):
        self.done.set()
        self.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_sentinel_that_never_answers_does_not_block(env):
    """The first sentinel accepts the connection and never answers.  The
    agent asks it before every connect (500 ms) and every second (50 ms),
    each time then the next sentinel; the asks must not stall the loop:
    the agent answers ping on its socket promptly all along, first while
    no sentinel names the master (the second is not up yet: the agent
    keeps reconnecting), then once it has found the master through the
    second one."""
    if find_sentinel() is None:
        pytest.skip("redis-sentinel not installed (apt-get install redis-sentinel)")
    if not binary_mentions("sentinel://"):
        pytest.skip("sentinel:// addresses: feature not in this build")
    mute = MuteServer()
    mute.start()
    try:
        master = env.start_redis(port=free_port())
        real_port = free_port()
        addr = "sentinel://127.0.0.1:%d,127.0.0.1:%d/%s" % (mute.port, real_port, NAME)
        (env.dir / "rec").mkdir()
        a = env.agent({"sj": rec_handler(env.dir / "rec", "s.*", "s0")}, name="s0",
                      redis_addr=addr, start=False)
        a.spawn()

        def pings_promptly(seconds, what):
            """Ping in a loop for `seconds`; every reply within 0.3 s.
            Returns how many times the mute sentinel was asked meanwhile."""
            before = mute.accepted
            end = time.monotonic() + seconds
            worst = 0.0
            n = 0
            while time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    rep = request(a.sock, {"op": "ping"}, timeout=0.3)
                except OSError as e:
                    raise AssertionError("%s: ping not answered within 0.3 s (%s) after %d "
                                         "prompt ones:\n%s" % (what, e, n, a.stderr()[-3000:]))
                worst = max(worst, time.monotonic() - t0)
                assert rep.get("ok") is True, rep
                n += 1
                time.sleep(0.01)
            print("%s: %d pings, slowest %.3f s, mute sentinel asked %d times"
                  % (what, n, worst, mute.accepted - before))
            return mute.accepted - before

        def answers():
            try:
                return request(a.sock, {"op": "ping"}, timeout=1.0).get("ok") is True
            except OSError:
                return False
        wait_for(answers, 20, interval=0.05, what="the agent to answer ping")
        # no sentinel names the master: the connections keep asking
        asked = pings_promptly(4.0, "no master known")
        assert asked >= 3, "the mute sentinel was asked %d times in 4 s" % asked
        assert "no sentinel knows master %s" % NAME in a.stderr()

        s = Sentinel(env.dir / "sentinel0", real_port, master.port, NAME)
        env.sentinels.append(s)
        s.start()

        def up():
            try:
                return request(a.sock, {"op": "ping"}, timeout=1.0).get("redis") is True
            except OSError:
                return False
        wait_for(up, 20, interval=0.05, what="the agent to reach the master "
                 "through the second sentinel")
        assert master.client().exists(env.key("agent:s0")), "agent not on the master"
        # connected: the once-a-second check still asks the mute one first
        asked = pings_promptly(3.0, "master known")
        assert asked >= 2, "the mute sentinel was asked %d times in 3 s" % asked
        jid = a.emit("s.one", {})["jobs"][0]["id"]
        env.wait_final([jid], 20)
    finally:
        mute.close()
