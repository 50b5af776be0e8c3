"""Socket protocol: errors, connection handling, pipelining."""

import json
import socket

import pytest

from harness.ddtest import stays


@pytest.fixture
def agent(dispatchd, handler):
    return dispatchd({"h": {"on": "known.*", "exec": handler("exit.sh")}},
                     agent_opts={"max_message": "1k"})


def assert_error(rep, code):
    assert rep.get("ok") is False, rep
    assert rep.get("code") == code, rep
    assert isinstance(rep.get("error"), str) and rep["error"], rep


def test_malformed_json_keeps_connection(agent):
    with agent.connect() as c:
        for bad in ["{not json", '{"event": "known.a",', "nul\x00l", '"just a string"',
                    "[1, 2]", "42", "null"]:
            assert_error(c.request(bad), "invalid")
            # the same connection still works
            assert c.request({"op": "ping"})["ok"] is True


@pytest.mark.parametrize("msg", [
    {"data": {}},                                     # missing event
    {"op": "emit", "event": ""},
    {"event": "bad name!"},
    {"event": "bad/name"},
    {"event": "sp ace"},
    {"event": "\u00e9v\u00e9nement"},
    {"event": "x" * 201},
    {"event": 5},
    {"event": None},
    {"event": ["known.a"]},
    {"event": "known.a", "delay": "soon"},
    {"event": "known.a", "at": "tomorrow"},
], ids=lambda m: json.dumps(m)[:40])
def test_bad_envelope_is_invalid(agent, msg):
    with agent.connect() as c:
        assert_error(c.request(msg), "invalid")
        assert c.request({"op": "ping"})["ok"] is True
    assert agent.results() == []
    # nothing enqueued: no job hashes at all
    assert agent.redis.client().keys(agent.key("job:*")) == []


def test_event_name_edge_cases_accepted(agent):
    for name in ["known.a", "known." + "x" * 194, "known.A-Z_0-9:z"]:
        assert len(name) <= 200
        rep = agent.request({"event": name})
        assert rep["ok"] is True, (name, rep)
        assert len(rep["jobs"]) == 1


def test_unknown_op(agent):
    with agent.connect() as c:
        assert_error(c.request({"op": "frobnicate"}), "unknown_op")
        assert c.request({"op": "ping"})["ok"] is True


def test_unknown_event_gives_empty_jobs(agent):
    rep = agent.request({"event": "nobody.listens", "data": {"x": 1}})
    assert rep["ok"] is True, rep
    assert rep["jobs"] == []
    assert isinstance(rep["event_id"], str)
    assert stays(lambda: agent.results() == [], 0.3)


def test_oversize_line_closes_connection(agent):
    with agent.connect() as c:
        assert c.request({"op": "ping"})["ok"] is True
        big = json.dumps({"event": "known.a", "data": "a" * 2000})
        assert len(big) > 1024
        c.send(big)
        assert_error(c.recv(), "too_large")
        assert c.at_eof(), "connection not closed after too_large"
    # a line under the limit is fine, and the agent lives
    ok = json.dumps({"event": "known.a", "data": "a" * 900})
    assert len(ok) < 1000
    rep = agent.request(ok)
    assert rep["ok"] is True, rep
    assert agent.ping()["ok"] is True


def test_oversize_line_without_newline(agent):
    """More than max_message bytes with no newline yet: the agent must not
    buffer without bound; it answers too_large and closes."""
    with agent.connect() as c:
        c.send_raw(b"{\"event\":\"known.a\",\"data\":\"" + b"a" * 4096)
        assert_error(c.recv(), "too_large")
        assert c.at_eof()
    assert agent.ping()["ok"] is True


def test_pipelined_replies_in_order(agent):
    with agent.connect() as c:
        reps = c.requests([
            {"op": "ping"},
            {"event": "known.one", "id": "p1"},
            "garbage",
            {"event": "nobody.x"},
            {"event": "known.two"},
            {"op": "nope"},
            {"event": "known.one", "id": "p1"},
        ])
    assert reps[0]["ok"] is True and "agent" in reps[0]
    assert reps[1]["ok"] is True and len(reps[1]["jobs"]) == 1
    assert_error(reps[2], "invalid")
    assert reps[3]["ok"] is True and reps[3]["jobs"] == []
    assert reps[4]["ok"] is True and len(reps[4]["jobs"]) == 1
    assert reps[5]["ok"] is False   # the code is checked in test_unknown_op
    assert reps[6].get("duplicate") is True and reps[6]["jobs"] == reps[1]["jobs"]


def test_many_clients_and_abrupt_disconnects(agent):
    """Clients that connect and vanish mid-line or before reading replies
    do not disturb the agent."""
    socks = []
    for i in range(50):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(agent.sock))
        if i % 3 == 0:
            s.sendall(b'{"event":"known.half"')
        elif i % 3 == 1:
            s.sendall(b'{"op":"ping"}\n' * 20)
        socks.append(s)
    for s in socks:
        s.close()
    assert agent.ping()["ok"] is True


def test_max_message_boundary(agent):
    """max_message = 1k: a 1024-byte line (without its newline) is accepted,
    a 1025-byte line is too_large."""
    def line_of(n):
        base = '{"event":"known.a","data":""}'
        return base[:-2] + "a" * (n - len(base)) + '"}'
    exact = line_of(1024)
    assert len(exact) == 1024
    rep = agent.request(exact)
    assert rep.get("ok") is True, rep
    over = line_of(1025)
    with agent.connect() as c:
        c.send(over)
        assert_error(c.recv(), "too_large")
