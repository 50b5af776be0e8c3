"""Events published on the {ns}:events channel are treated as emits."""

import json
import time

from harness import ddtest
from harness.ddtest import stays, wait_for


def wait_subscribed(agent, channel):
    r = agent.redis.client()
    wait_for(lambda: dict(r.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1,
             what="agent to subscribe to %s" % channel)
    return r


def test_publish_emits(dispatchd, handler, record_dir):
    agent = dispatchd({"rec": {"on": "remote.*", "exec": handler("record.py"),
                               "env": "RECORD_DIR=%s" % record_dir}})
    channel = agent.key("events")
    r = wait_subscribed(agent, channel)

    def handled():
        return [x for x in agent.results() if x["event"] == "remote.hello"]

    assert r.publish(channel, json.dumps({"event": "remote.hello", "data": {"a": 1}})) >= 1
    res = wait_for(handled, what="result for the published event")
    assert res[0]["outcome"] == "done" and res[0]["handler"] == "rec"
    stdin = json.loads(handler_record(record_dir, res[0]["job"])["stdin"])
    assert stdin["data"] == {"a": 1} and stdin["event"] == "remote.hello"

    # garbage is ignored, the agent lives, and the channel still works
    for junk in ["not json", "{", "[]", '{"data":{}}', '{"event":"bad name!"}',
                 '{"event":"remote.x","delay":"soon"}', "\x00\xff", ""]:
        r.publish(channel, junk)
    assert agent.ping()["ok"] is True
    r.publish(channel, json.dumps({"event": "remote.again", "id": "pub-1"}))
    r.publish(channel, json.dumps({"event": "remote.again", "id": "pub-1"}))  # dup
    again = wait_for(lambda: [x for x in agent.results() if x["event"] == "remote.again"],
                     what="result for the second published event")
    assert again[0]["outcome"] == "done"
    assert agent.ping()["ok"] is True
    # nothing from the garbage, and the duplicate made no second job
    assert stays(lambda: sorted(x["event"] for x in agent.results())
                 == ["remote.again", "remote.hello"], 0.5), agent.results()


def handler_record(record_dir, jid):
    p = record_dir / ("rec.%s.1.json" % jid)
    wait_for(p.exists, what=p.name)
    return ddtest.read_json_file(str(p))


def test_publish_dedup_and_delay(dispatchd, handler, record_dir):
    """Published envelopes get the same treatment as socket emits: the id
    de-duplicates across both ingresses, and delay works."""
    agent = dispatchd({"rec": {"on": "remote.*", "exec": handler("record.py"),
                               "env": "RECORD_DIR=%s" % record_dir}})
    channel = agent.key("events")
    r = wait_subscribed(agent, channel)
    first = agent.emit("remote.dup", {"via": "socket"}, id="both-ways")
    r.publish(channel, json.dumps({"event": "remote.dup", "id": "both-ways",
                                   "data": {"via": "pubsub"}}))
    t = time.time()
    r.publish(channel, json.dumps({"event": "remote.later", "delay": 0.5}))
    later = wait_for(lambda: [x for x in agent.results() if x["event"] == "remote.later"],
                     5, what="the delayed published event")
    started = int(later[0]["started_ms"]) / 1000.0
    print("published delay=0.5: started %.1f ms after publish+0.5s" % ((started - t - 0.5) * 1000))
    assert started >= t + 0.5 - 0.01
    agent.wait_final(first["jobs"][0]["id"])
    assert stays(lambda: len([x for x in agent.results() if x["event"] == "remote.dup"]) == 1,
                 0.5), agent.results()
    assert agent.ping()["ok"]
