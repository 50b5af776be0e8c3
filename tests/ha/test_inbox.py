"""Durable ingress (issue 5): the {ns}:inbox stream, consumer group `agents`.

Producers XADD (fields: event; data JSON text, default {}; id, default
"inbox-<entry id>"; delay seconds or at unix seconds).  Agents XREADGROUP
(consumer = agent name), enqueue, then XACK; entries left pending by a dead
consumer for longer than inbox_claim are claimed by a live agent.
"""

import json
import time
from pathlib import Path

import pytest

from hatest import (require_config, wait_for, stays, handler, count_by)

GROUP = "agents"


def inbox_feature(env):
    require_config({"inbox": "{ha}:inbox", "inbox_claim": "1s"}, env.dir / "probe",
                   "inbox (inbox, inbox_claim)")


def handlers(jobdir):
    return {"ib1": {"on": "inb.*", "exec": "%s %s" % (handler("stdin.sh"), jobdir),
                    "backoff": "100ms..300ms"},
            "ib2": {"on": "inb.*", "exec": "/bin/true", "backoff": "100ms..300ms"}}


def xadd(r, stream, **fields):
    return r.xadd(stream, {k: (v if isinstance(v, str) else json.dumps(v))
                           for k, v in fields.items()}).decode()


def pending(r, stream):
    try:
        return r.xpending(stream, GROUP)["pending"]
    except Exception as e:      # no group yet
        return "no group (%s)" % e


def wait_acked(r, stream, timeout=15):
    wait_for(lambda: pending(r, stream) == 0, timeout, interval=0.1,
             what="XPENDING %s %s to be empty (now %r)" % (stream, GROUP, pending(r, stream)))


def jobs_by_event_id(env, expected_ids, n_handlers=2, timeout=20):
    """Wait until every expected event id has its jobs done; then check
    nothing more comes.  Returns the done results by (event_id, handler)."""
    want = len(expected_ids) * n_handlers
    key = env.key("results")
    r = env.rc()

    def enough():
        done = [x for x in env.results() if x["outcome"] == "done"
                and x["event_id"] in expected_ids]
        return done if len(done) >= want else None
    try:
        wait_for(enough, timeout, interval=0.1, what="%d done jobs" % want)
    except AssertionError:
        pass        # the assertion below names what is missing
    n = r.xlen(key)
    stays(lambda: r.xlen(key) == n, 1.5)
    done = [x for x in env.results() if x["outcome"] == "done"]
    per = count_by(done, lambda x: (x["event_id"], x["handler"]))
    missing = [(e, h) for e in expected_ids for h in ("ib1", "ib2")[:n_handlers]
               if (e, h) not in per]
    extra = {k: v for k, v in per.items() if v > 1}
    unexpected = sorted({e for e, _ in per} - set(expected_ids))
    assert not missing and not extra and not unexpected, (
        "jobs per inbox entry: %d (event id, handler) missing (e.g. %s), %d doubled "
        "(e.g. %s), unexpected event ids %s"
        % (len(missing), missing[:5], len(extra), list(extra.items())[:5], unexpected[:5]))
    return {k: x for x in done for k in [(x["event_id"], x["handler"])]}


def test_inbox_one_job_set_per_entry_3_agents(env):
    """3 agents read the default stream {ha}:inbox.  40 entries with an id,
    40 without (event id inbox-<entry id>), 5 with delay=2, 5 with at=now+2,
    and 5 repeats of ids already sent: exactly one job per handler per
    distinct event id, data handed over, delays honoured, every entry
    acked."""
    env.start_redis()
    inbox_feature(env)
    jobdir = env.dir / "jobs"
    jobdir.mkdir()
    agents = [env.agent(handlers(jobdir), name="i%d" % i, opts={"lease": "2s"})
              for i in range(3)]
    r = env.rc()
    stream = env.key("inbox")
    # the agents create the group
    wait_for(lambda: any(g["name"] == GROUP.encode() for g in r.xinfo_groups(stream))
             if r.exists(stream) else False, 10, interval=0.1,
             what="consumer group %s on %s" % (GROUP, stream))

    expected = {}       # event id -> data
    delayed = {}        # event id -> earliest start (ms)
    for k in range(40):
        eid = "ib-a-%d" % k
        xadd(r, stream, event="inb.a", data={"k": k, "kind": "id"}, id=eid)
        expected[eid] = {"k": k, "kind": "id"}
    for k in range(40):
        entry = xadd(r, stream, event="inb.b", data={"k": k, "kind": "noid"})
        expected["inbox-" + entry] = {"k": k, "kind": "noid"}
    t_ms = time.time() * 1000
    for k in range(5):
        eid = "ib-d-%d" % k
        xadd(r, stream, event="inb.d", data={"k": k}, id=eid, delay="2")
        expected[eid] = {"k": k}
        delayed[eid] = t_ms + 2000
    at = time.time() + 2
    for k in range(5):
        eid = "ib-t-%d" % k
        xadd(r, stream, event="inb.t", id=eid, at="%.3f" % at)
        expected[eid] = {}
        delayed[eid] = at * 1000
    for k in range(5):      # a producer resending: de-duplicated by the id
        xadd(r, stream, event="inb.a", data={"k": k, "kind": "id"}, id="ib-a-%d" % k)
    assert r.xlen(stream) == 95

    got = jobs_by_event_id(env, set(expected))
    # data as sent (default {}), one job file per ib1 job
    files = list(Path(jobdir).glob("*.json"))
    assert len(files) == len(expected), "%d ib1 job files for %d entries" % (
        len(files), len(expected))
    for f in files:
        job = json.loads(f.read_text())
        assert job["event_id"] in expected, job
        assert job["data"] == expected[job["event_id"]], job
        assert job["attempt"] == 1
    for eid, earliest in delayed.items():
        for h in ("ib1", "ib2"):
            started = int(got[(eid, h)]["started_ms"])
            assert started >= earliest - 150, \
                "%s/%s started %.0f ms before its due time" % (eid, h, earliest - started)
    wait_acked(r, stream)
    cons = {c["name"].decode() for c in r.xinfo_consumers(stream, GROUP)}
    print("consumers:", cons, "share:", count_by(got.values(), lambda x: x["agent"]))
    assert cons <= {"i0", "i1", "i2"} and cons, cons
    assert all(a.alive() for a in agents)
    env.check()


def test_inbox_bad_entries_acked(env):
    """Entries without an event, with data that is not JSON, with a bad
    event name, with a bad delay: logged, counted, acked; the agent lives
    and the good entry after them is processed."""
    env.start_redis()
    inbox_feature(env)
    jobdir = env.dir / "jobs"
    jobdir.mkdir()
    a = env.agent(handlers(jobdir), name="b0")
    r = env.rc()
    stream = env.key("inbox")
    bad = {xadd(r, stream, data='{"k":1}'): "no event field",
           xadd(r, stream, event="inb.bad", data="{not json"): "data not JSON",
           xadd(r, stream, event="bad name!", data="{}"): "bad event name",
           xadd(r, stream, event="inb.bad", delay="soon"): "delay 'soon'",
           xadd(r, stream, event="inb.bad", at="tomorrow"): "at 'tomorrow'"}
    xadd(r, stream, event="inb.good", data='{"ok":true}', id="good-1")
    wait_for(lambda: [x for x in env.results() if x["event_id"] == "good-1"
                      and x["outcome"] == "done"], 15, interval=0.1, what="the good entry's jobs")
    wait_acked(r, stream)
    time.sleep(0.5)
    enq = {}
    for x in env.results():
        e = x["event_id"][len("inbox-"):] if x["event_id"].startswith("inbox-") else None
        if e in bad:
            enq[bad[e]] = x["outcome"]
    m = a.ctl("metrics")
    counted = [l for l in m.stdout.splitlines() if l.startswith("dispatchd_inbox_rejected_total")]
    print("metrics:", counted)
    assert counted and float(counted[0].split()[-1]) >= 3, "bad entries not counted: %r" % counted
    assert not enq, "bad inbox entries were enqueued instead of dropped: %r" % enq
    jobs_by_event_id(env, {"good-1"})
    assert a.alive()
    ping = a.ping()
    print("ping after bad entries:", ping)
    assert ping["ok"] is True
    assert not [x for x in env.results() if x["event"] in ("inb.bad", "bad name!")]
    log = a.stderr()
    mentioned = [e for e in bad if e in log]
    print("bad entries named in the log: %d of %d" % (len(mentioned), len(bad)))
    assert [l for l in log.splitlines() if l[:3] in ("<3>", "<4>") and "inbox" in l.lower()], \
        "no warning/error about the bad inbox entries in the log"


def test_inbox_claims_entries_of_dead_consumer(env):
    """Entries read by a consumer that never acks ("dead-agent", a fake
    consumer driven by the test) are claimed after inbox_claim = 1s by a
    live agent and processed once; new entries flow meanwhile."""
    env.start_redis()
    inbox_feature(env)
    jobdir = env.dir / "jobs"
    jobdir.mkdir()
    r = env.rc()
    stream = env.key("inbox")
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = set()
    for k in range(10):
        xadd(r, stream, event="inb.c", data={"k": k}, id="cl-%d" % k)
        ids.add("cl-%d" % k)
    read = r.xreadgroup(GROUP, "dead-agent", {stream: ">"}, count=100)
    t_read = time.time() * 1000
    assert len(read[0][1]) == 10
    assert pending(r, stream) == 10

    a = env.agent(handlers(jobdir), name="c0", opts={"inbox_claim": "1s", "lease": "2s"})
    for k in range(5):
        xadd(r, stream, event="inb.n", data={"k": k}, id="new-%d" % k)
    got = jobs_by_event_id(env, ids | {"new-%d" % k for k in range(5)}, timeout=20)
    first_claimed = min(int(got[(e, "ib1")]["started_ms"]) for e in ids)
    print("claimed entries started %.0f ms after the fake consumer read them"
          % (first_claimed - t_read))
    assert first_claimed >= t_read + 900, "claimed before inbox_claim elapsed"
    wait_acked(r, stream)
    assert a.alive()
    env.check()


def test_inbox_off_when_empty(env):
    """inbox = (empty) turns durable ingress off: no group is created and
    entries stay unread."""
    env.start_redis()
    inbox_feature(env)
    a = env.agent({"x": {"on": "inb.*", "exec": "/bin/true"}}, name="o0",
                  opts={"inbox": ""})
    r = env.rc()
    stream = env.key("inbox")
    xadd(r, stream, event="inb.x")
    assert stays(lambda: r.xlen(env.key("results")) == 0, 2.0)
    assert not r.xinfo_groups(stream)
    assert a.alive()


def test_inbox_stream_deleted_and_recreated(env):
    """The stream is deleted while the agents block on it (an operator's DEL,
    or the key moving away in a cluster slot migration: the blocked
    XREADGROUP fails with UNBLOCKED); producers then XADD again: the agents
    recreate the group and go on reading."""
    env.start_redis()
    inbox_feature(env)
    jobdir = env.dir / "jobs"
    jobdir.mkdir()
    agents = [env.agent(handlers(jobdir), name="d%d" % i) for i in range(2)]
    r = env.rc()
    stream = env.key("inbox")
    xadd(r, stream, event="inb.before", id="before-1")
    jobs_by_event_id(env, {"before-1"})
    wait_acked(r, stream)
    time.sleep(0.3)             # the agents block in XREADGROUP again
    r.delete(stream)
    time.sleep(0.5)
    for k in range(3):
        xadd(r, stream, event="inb.after", id="after-%d" % k)
    jobs_by_event_id(env, {"before-1"} | {"after-%d" % k for k in range(3)}, timeout=8)
    wait_acked(r, stream)
    assert all(a.alive() for a in agents)
