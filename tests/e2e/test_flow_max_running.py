"""max_running = N: at most N jobs of the handler run at once across every
agent sharing the Redis (concurrency stays per agent), checked from the
handlers' own start and end times; a slot held by an agent that dies is
freed when its lease is recovered."""

from flow_util import most_at_once, spans, three_agents
from harness.ddtest import stays, wait_for


def test_max_running_3_over_three_agents_of_4_workers(dispatchd, handler, record_dir):
    h = {"backup": {"on": "backup", "max_running": 3,
                    "exec": "%s %s 0.15" % (handler("span.sh"), record_dir)}}
    agents = three_agents(dispatchd, h, workers=4)
    jids = [agents[i % 3].emit("backup", {"n": i})["jobs"][0]["id"] for i in range(30)]
    wait_for(lambda: set(jids) <= set(spans(record_dir)), 30, what="30 backups")
    s = spans(record_dir)
    peak = most_at_once(s[j] for j in jids)
    ran_on = {r["agent"] for r in agents[0].results() if r["outcome"] == "done"}
    print("peak %d at once, agents %s" % (peak, sorted(ran_on)))
    assert peak <= 3
    assert peak == 3, "the limit should be reached, not serialised"
    assert len(ran_on) >= 2, "fleet-wide: more than one agent ran them"
    # the fleet count is empty again
    assert agents[0].redis.client().scard(agents[0].key("flow:backup:running")) == 0
    # handlers ran once each
    assert sum(1 for r in agents[0].results() if r["outcome"] == "done") == 30


def test_a_dead_agents_slot_is_freed_by_lease_recovery(dispatchd, handler, record_dir):
    slow = {"one": {"on": "one", "max_running": 1, "backoff": "100ms..100ms",
                    "exec": "%s %s 30" % (handler("span.sh"), record_dir)}}
    quick = {"one": dict(slow["one"], exec="%s %s" % (handler("span.sh"), record_dir))}
    opts = {"lease": "1s", "workers": 2}
    a = dispatchd(slow, agent_opts=opts, name="fa0")
    r = a.redis.client()
    first = a.emit("one")["jobs"][0]["id"]
    wait_for(lambda: r.sismember(a.key("flow:one:running"), first), 5, what="first running")
    b = dispatchd(quick, agent_opts=opts, name="fa1")
    second = b.emit("one")["jobs"][0]["id"]
    # b has free workers, but the fleet's one slot is a's
    assert stays(lambda: second not in spans(record_dir), 1.0)
    a.kill9()
    wait_for(lambda: {first, second} <= set(spans(record_dir)), 15,
             what="both jobs to run on b after a's lease is recovered")
    s = spans(record_dir)
    assert most_at_once([s[first], s[second]]) == 1
    assert r.scard(a.key("flow:one:running")) == 0
