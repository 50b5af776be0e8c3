"""dispatchctl pause / resume: a paused handler still takes jobs and starts
none of them on any agent; resume drains the queue; a pause outlives the
restart of every agent; --for ends by itself (the agent that skipped the
handler wakes at the pause's end, not at its next poll).  Three agents share
one Redis; the handlers record their own start times (handlers/span.sh)."""

import time

from admin_util import ctl_json, ctl_ok
from flow_util import spans, three_agents
from harness.ddtest import stays, wait_for


def handlers(handler, record_dir):
    return {"inv": {"on": "invoice.*", "exec": "%s %s" % (handler("span.sh"), record_dir)},
            "other": {"on": "other", "exec": "%s %s" % (handler("span.sh"), record_dir)}}


def test_pause_starts_nothing_anywhere_and_resume_drains(dispatchd, handler, record_dir):
    agents = three_agents(dispatchd, handlers(handler, record_dir))
    p, rep = ctl_json(agents[0].sock, "pause", "inv")
    assert p.returncode == 0 and rep["paused"] is True and "until_ms" not in rep
    jids = [agents[i % 3].emit("invoice.print", {"n": i})["jobs"][0]["id"] for i in range(9)]
    # other handlers are not held
    other = agents[1].emit("other")["jobs"][0]["id"]
    wait_for(lambda: other in spans(record_dir), 5, what="the other handler's job")
    assert stays(lambda: not set(jids) & set(spans(record_dir)), 1.5), \
        "a paused handler's job started"
    # status and metrics say so, on every agent
    for a in agents:
        _, st = ctl_json(a.sock, "status")
        (h,) = [h for h in st["handlers"] if h["name"] == "inv"]
        assert h["paused"] is True and h["ready"] == 9 and "paused_until_ms" not in h
        (o,) = [h for h in st["handlers"] if h["name"] == "other"]
        assert "paused" not in o
    text = ctl_ok("-s", agents[2].sock, "metrics").stdout
    assert 'dispatchd_handler_paused{handler="inv"} 1' in text
    assert 'dispatchd_handler_paused{handler="other"} 0' in text
    assert "PAUSED until resumed" in ctl_ok("-s", agents[0].sock, "status").stdout
    t_resume = time.time()
    assert "resumed" in ctl_ok("-s", agents[2].sock, "resume", "inv").stdout
    wait_for(lambda: set(jids) <= set(spans(record_dir)), 10, what="the queue to drain")
    s = spans(record_dir)
    assert min(s[j][0] for j in jids) >= t_resume
    assert 'dispatchd_handler_paused{handler="inv"} 0' in \
        ctl_ok("-s", agents[0].sock, "metrics").stdout
    assert "was not paused" in ctl_ok("-s", agents[0].sock, "resume", "inv").stdout


def test_pause_for_ends_by_itself_and_the_agent_wakes_then(dispatchd, handler, record_dir):
    agents = three_agents(dispatchd, handlers(handler, record_dir))
    p, rep = ctl_json(agents[0].sock, "pause", "inv", "--for", "2s")
    assert p.returncode == 0 and rep["until_ms"] > 0
    until = rep["until_ms"] / 1000.0
    jids = [agents[i % 3].emit("invoice.print", {"n": i})["jobs"][0]["id"] for i in range(6)]
    _, st = ctl_json(agents[1].sock, "status")
    (h,) = [h for h in st["handlers"] if h["name"] == "inv"]
    assert h["paused_until_ms"] == rep["until_ms"]
    wait_for(lambda: set(jids) <= set(spans(record_dir)), 10, what="the jobs after the pause")
    starts = sorted(s for s, _ in (spans(record_dir)[j] for j in jids))
    print("first start - pause end: %+.0f ms" % ((starts[0] - until) * 1000))
    assert starts[0] >= until - 0.01
    # woken by the fetch's report of the pause's end, not by the 1 s poll
    assert starts[0] - until < 0.5
    _, st = ctl_json(agents[2].sock, "status")
    assert not any(h.get("paused") for h in st["handlers"])


def test_a_pause_outlives_the_restart_of_every_agent(dispatchd, handler, record_dir):
    agents = three_agents(dispatchd, handlers(handler, record_dir))
    ctl_ok("-s", agents[1].sock, "pause", "inv")
    jids = [agents[0].emit("invoice.print", {"n": i})["jobs"][0]["id"] for i in range(4)]
    for a in agents:
        a.stop()
    for a in agents:
        a.restart()
    jids += [agents[2].emit("invoice.print", {"n": 9})["jobs"][0]["id"]]
    assert stays(lambda: not set(jids) & set(spans(record_dir)), 1.5), \
        "a job of the paused handler started after the restart"
    _, st = ctl_json(agents[0].sock, "status")
    assert [h["paused"] for h in st["handlers"] if h["name"] == "inv"] == [True]
    ctl_ok("-s", agents[0].sock, "resume", "inv")
    wait_for(lambda: set(jids) <= set(spans(record_dir)), 10, what="the queue to drain")


def test_pausing_a_handler_no_agent_serves_is_refused(dispatchd, handler, record_dir):
    a = dispatchd(handlers(handler, record_dir))
    p, rep = ctl_json(a.sock, "pause", "nosuch")
    assert p.returncode != 0 and rep["code"] == "not_found"
    p, rep = ctl_json(a.sock, "resume", "nosuch")
    assert p.returncode != 0 and rep["code"] == "not_found"
