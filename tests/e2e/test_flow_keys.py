"""key = TEMPLATE with per_key and on_busy: jobs of one key run at most
per_key at once across every agent, the others wait in order per key while
other keys run; coalesce, replace and reject act on a busy key; a key's
slot held by an agent killed with -9 is freed by lease recovery.  Checked
from the handlers' own start and end times (handlers/span.sh)."""

import json
import time

from flow_util import most_at_once, spans, three_agents
from harness import ddtest
from harness.ddtest import Client, stays, wait_for


def keyed(handler, record_dir, sleep="", **extra):
    h = {"on": "deploy", "key": "${data.host}",
         "exec": "%s %s %s" % (handler("span.sh"), record_dir, sleep)}
    h.update(extra)
    return {"deploy": h}


def emit_all(agent, datas):
    with Client(agent.sock, timeout=30) as c:
        return c.requests([{"op": "emit", "event": "deploy", "data": d} for d in datas])


def stdin_of(record_dir, jid):
    return json.loads((record_dir / (".%s.1.stdin" % jid)).read_text())


def test_per_key_1_over_10_keys_never_overlaps_and_keys_run_in_parallel(
        dispatchd, handler, record_dir):
    agents = three_agents(dispatchd, keyed(handler, record_dir, "0.01"))
    datas = [{"host": "h%d" % (i % 10), "n": i} for i in range(300)]
    reps = emit_all(agents[0], datas)
    assert all(r["ok"] for r in reps), [r for r in reps if not r["ok"]][:3]
    key_of = {r["jobs"][0]["id"]: d["host"] for r, d in zip(reps, datas)}
    wait_for(lambda: len(spans(record_dir)) >= 300, 60, what="300 keyed jobs")
    s = spans(record_dir)
    assert set(s) == set(key_of)
    by_key = {}
    for jid, k in key_of.items():
        by_key.setdefault(k, []).append(jid)
    for k, jids in by_key.items():
        assert most_at_once(s[j] for j in jids) == 1, "key %s overlapped" % k
        # in order of arrival per key
        order = sorted(jids, key=lambda j: s[j][0])
        assert order == [j for j in key_of if key_of[j] == k], "key %s out of order" % k
    peak = most_at_once(s.values())
    done = [r for r in agents[0].results() if r["outcome"] == "done"]
    print("keys at once: %d; agents %s" % (peak, sorted({r["agent"] for r in done})))
    assert peak >= 4, "keys should run in parallel"
    assert len(done) == 300 and len({r["job"] for r in done}) == 300   # once each
    assert agents[0].redis.client().exists(agents[0].key("flow:deploy:keys")) == 0


def busy_first(agent, record_dir, host="web1"):
    """Emit a job that holds the key for a while; wait until it runs."""
    jid = agent.emit("deploy", {"host": host, "n": 0})["jobs"][0]["id"]
    wait_for(lambda: (record_dir / (".%s.1.stdin" % jid)).exists(), 5, what="first running")
    return jid


def test_coalesce_runs_a_burst_once_more(dispatchd, handler, record_dir):
    a = dispatchd(keyed(handler, record_dir, "0.6", on_busy="coalesce"))
    first = busy_first(a, record_dir)
    reps = emit_all(a, [{"host": "web1", "n": i} for i in range(1, 51)])
    ids = {r["jobs"][0]["id"] for r in reps}
    assert len(ids) == 1, "every later emit answered with the one waiting job"
    other = a.emit("deploy", {"host": "web2"})["jobs"][0]["id"]   # another key: its own
    wait_for(lambda: ids | {first, other} <= set(spans(record_dir)), 10, what="the runs")
    assert stays(lambda: len(spans(record_dir)) == 3, 0.5)
    assert stdin_of(record_dir, ids.pop())["data"]["n"] == 1     # the first waiting one


def test_replace_runs_with_the_last_events_data(dispatchd, handler, record_dir):
    a = dispatchd(keyed(handler, record_dir, "0.6", on_busy="replace"))
    first = busy_first(a, record_dir)
    reps = emit_all(a, [{"host": "web1", "n": i} for i in range(1, 11)])
    ids = {r["jobs"][0]["id"] for r in reps}
    assert len(ids) == 1
    jid = ids.pop()
    wait_for(lambda: {first, jid} <= set(spans(record_dir)), 10, what="the runs")
    assert stdin_of(record_dir, jid)["data"] == {"host": "web1", "n": 10}
    assert stays(lambda: len(spans(record_dir)) == 2, 0.5)


def test_reject_answers_busy_and_queues_nothing(dispatchd, handler, record_dir):
    a = dispatchd(keyed(handler, record_dir, "0.6", on_busy="reject"))
    busy_first(a, record_dir)
    rep = a.request({"op": "emit", "event": "deploy", "data": {"host": "web1"}, "id": "x1"})
    assert rep["ok"] is False and rep["code"] == "busy" and "deploy" in rep["error"], rep
    assert a.request({"op": "emit", "event": "deploy", "data": {"host": "web2"}})["ok"]
    wait_for(lambda: len(spans(record_dir)) == 2, 5, what="the two admitted jobs")
    # once the key is free the same id is taken: the rejection recorded nothing
    rep = a.request({"op": "emit", "event": "deploy", "data": {"host": "web1"}, "id": "x1"})
    assert rep["ok"] is True and not rep.get("duplicate"), rep


def test_a_missing_field_is_invalid_and_a_bad_template_is_refused_by_t(
        dispatchd, handler, record_dir, workdir):
    a = dispatchd(keyed(handler, record_dir))
    rep = a.request({"op": "emit", "event": "deploy", "data": {"n": 1}})
    assert rep["ok"] is False and rep["code"] == "invalid" and "data.host" in rep["error"]
    conf = workdir / "bad.conf"
    conf.write_text(ddtest.render_config({"name": "x"}, {"d": {
        "on": "deploy", "exec": handler("span.sh"), "key": "${data.host"}}))
    p = ddtest.run([ddtest.DISPATCHD, "-t", "-c", conf])
    assert p.returncode == 78 and "%s:7: [handler d] key:" % conf in p.stderr, p.stderr


def test_kill_9_of_the_agent_running_a_keys_job_frees_the_key(
        dispatchd, handler, record_dir):
    opts = {"lease": "1s", "workers": 2}
    slow = keyed(handler, record_dir, "30", backoff="100ms..100ms")
    quick = keyed(handler, record_dir, backoff="100ms..100ms")
    a = dispatchd(slow, agent_opts=opts, name="fa0")
    first = busy_first(a, record_dir)
    b = dispatchd(quick, agent_opts=opts, name="fa1")
    second = b.emit("deploy", {"host": "web1", "n": 1})["jobs"][0]["id"]
    assert stays(lambda: second not in spans(record_dir), 1.0), "the key was busy"
    t = time.time()
    a.kill9()
    wait_for(lambda: {first, second} <= set(spans(record_dir)), 15,
             what="the key's jobs after a's lease is recovered")
    s = spans(record_dir)
    # the retry of the first keeps its place at the head of its key
    assert t < s[first][0] < s[second][0]
    assert most_at_once([s[first], s[second]]) == 1


def test_status_reports_agents_that_disagree_on_flow_settings(dispatchd, handler, record_dir):
    from admin_util import ctl_json, ctl_ok
    a = dispatchd(keyed(handler, record_dir), name="fa0")
    b = dispatchd(keyed(handler, record_dir, per_key=2), name="fa1")
    c = dispatchd({"other": {"on": "o", "exec": handler("span.sh"), "rate": "5/s"}},
                  name="fa2")

    def mismatch():
        _, st = ctl_json(c.sock, "status")
        return {h["name"]: h["flow_mismatch"] for h in st["handlers"]}
    wait_for(lambda: mismatch().get("deploy") is True, 5, what="the mismatch seen")
    assert mismatch()["other"] is False
    assert "different key, per_key" in ctl_ok("-s", a.sock, "status").stdout
    # an event for the keyed handler emitted where it is not served is keyed too
    rep = c.request({"op": "emit", "event": "deploy", "data": {"n": 1}})
    assert rep["ok"] is False and rep["code"] == "invalid" and "data.host" in rep["error"]


def test_status_shows_busy_keys_and_why_ready_jobs_do_not_start(dispatchd, handler,
                                                                 record_dir):
    from admin_util import ctl_json, ctl_ok
    hs = keyed(handler, record_dir, "30")
    hs["backup"] = {"on": "backup", "max_running": 1,
                    "exec": "%s %s 30" % (handler("span.sh"), record_dir)}
    hs["sms"] = {"on": "sms", "rate": "1/h", "exec": "%s %s" % (handler("span.sh"), record_dir)}
    a = dispatchd(hs, agent_opts={"workers": 8})
    busy_first(a, record_dir)
    for i in range(3):
        a.emit("deploy", {"host": "web1", "n": i})
    for i in range(2):
        a.emit("backup")
        a.emit("sms")
    ctl_ok("-s", a.sock, "pause", "sms")

    def rows():
        _, st = ctl_json(a.sock, "status")
        return {h["name"]: h for h in st["handlers"]}
    wait_for(lambda: rows()["backup"].get("running_fleet") == 1 and
             rows()["sms"].get("ready") == 1, 5, what="the limits reached")
    r = rows()
    assert r["deploy"]["busy_keys"] == 1 and r["deploy"]["waiting"] == 3
    assert r["deploy"]["keys"] == [{"key": "web1", "held": 1, "waiting": 3}]
    assert r["deploy"]["held"] == ["key busy"]
    assert r["backup"]["held"] == ["fleet limit"]
    assert r["sms"]["held"] == ["paused", "rate"]
    text = ctl_ok("-s", a.sock, "status").stdout
    assert "keys: 1 busy, 3 jobs waiting: web1 (1 running, 3 waiting)" in text
    assert "fleet: 1 of max_running 1" in text
    assert "not starting now: paused, rate" in text
