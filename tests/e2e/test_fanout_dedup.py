"""Fan-out of one event to several handlers, and de-dup by the producer's id."""

import json

from harness import ddtest
from harness.ddtest import wait_for


def records(record_dir):
    return sorted(p.name for p in record_dir.iterdir() if not p.name.startswith("."))


def test_fanout_three_handlers(dispatchd, handler, record_dir):
    rec = handler("record.py")
    env = "RECORD_DIR=%s" % record_dir
    agent = dispatchd({
        "exact": {"on": "order.paid", "exec": rec, "env": env},
        "glob": {"on": "order.*", "exec": rec, "env": env},
        "list": {"on": "other.thing, order.paid", "exec": rec, "env": env},
        "nomatch": {"on": "user.*, order.paid.late", "exec": rec, "env": env},
    })
    rep = agent.emit("order.paid", {"n": 1})
    jobs = {j["handler"]: j["id"] for j in rep["jobs"]}
    assert sorted(jobs) == ["exact", "glob", "list"], rep
    assert len(set(jobs.values())) == 3, "job ids not distinct: %r" % rep
    for h, jid in jobs.items():
        res = agent.wait_final(jid)
        assert [r["outcome"] for r in res] == ["done"], res
        assert res[0]["handler"] == h
        assert res[0]["event_id"] == rep["event_id"]
        p = record_dir / ("%s.%s.1.json" % (h, jid))
        wait_for(p.exists, what=p.name)
        seen = json.loads(ddtest.read_json_file(str(p))["stdin"])
        assert seen["handler"] == h and seen["id"] == jid
        assert seen["event_id"] == rep["event_id"]
    done = [r for r in agent.results() if r["outcome"] == "done"]
    assert len(done) == 3
    assert len(records(record_dir)) == 3
    # the glob also takes other order.* events, alone
    rep2 = agent.emit("order.refunded")
    assert [j["handler"] for j in rep2["jobs"]] == ["glob"]


def test_dedup_by_id(dispatchd, handler, record_dir):
    rec = handler("record.py")
    env = "RECORD_DIR=%s" % record_dir
    agent = dispatchd({
        "a": {"on": "order.paid", "exec": rec, "env": env},
        "b": {"on": "order.*", "exec": rec, "env": env},
    })
    first = agent.emit("order.paid", {"v": 1}, id="idem-123")
    assert len(first["jobs"]) == 2
    assert not first.get("duplicate", False)
    second = agent.emit("order.paid", {"v": 2}, id="idem-123")
    assert second.get("duplicate") is True, second
    assert second["jobs"] == first["jobs"]
    assert second["event_id"] == first["event_id"]

    for j in first["jobs"]:
        agent.wait_final(j["id"])
    # a different id is a new event
    third = agent.emit("order.paid", {"v": 3}, id="idem-456")
    assert not third.get("duplicate", False)
    assert {j["id"] for j in third["jobs"]}.isdisjoint({j["id"] for j in first["jobs"]})
    for j in third["jobs"]:
        agent.wait_final(j["id"])
    # the repeat after the run is still a duplicate
    fourth = agent.emit("order.paid", {"v": 4}, id="idem-123")
    assert fourth.get("duplicate") is True and fourth["jobs"] == first["jobs"]

    # each handler ran once per distinct id, with the first event's data
    names = records(record_dir)
    assert len(names) == 4, names
    for j in first["jobs"]:
        seen = json.loads(ddtest.read_json_file(
            str(record_dir / ("%s.%s.1.json" % (j["handler"], j["id"]))))["stdin"])
        assert seen["data"] == {"v": 1}
    results = agent.results()
    assert len(results) == 4, results
    assert all(r["outcome"] == "done" for r in results)


def test_dedup_window_expires(dispatchd, handler):
    agent = dispatchd({"h": {"on": "e", "exec": handler("exit.sh")}},
                      agent_opts={"dedup_window": "1s"})
    first = agent.emit("e", id="short-lived")
    assert agent.emit("e", id="short-lived").get("duplicate") is True
    again = wait_for(lambda: (lambda r: r if not r.get("duplicate") else None)(
        agent.emit("e", id="short-lived")), 3, interval=0.1,
        what="the id to be forgotten after dedup_window")
    assert again["jobs"][0]["id"] != first["jobs"][0]["id"]
