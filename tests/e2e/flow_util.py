"""Helpers for the flow-control e2e tests (tests/e2e/test_flow_*.py).

The handlers record their own start and end times (handlers/span.sh); these
helpers read them back and check what the flow limits promise from them.
"""

import os
from pathlib import Path


def spans(record_dir):
    """{job id: (start_s, end_s)} of every finished run in record_dir (the
    last attempt of each job)."""
    out = {}
    for name in os.listdir(str(record_dir)):
        if name.startswith("."):
            continue
        jid, _, attempt = name.rpartition(".")
        text = (Path(record_dir) / name).read_text().split()
        if len(text) != 2:
            continue
        out[jid] = (int(text[0]) / 1e9, int(text[1]) / 1e9)
    return out


def most_at_once(intervals):
    """The largest number of the (start, end) intervals that overlap."""
    ev = []
    for s, e in intervals:
        ev.append((s, 1))
        ev.append((e, -1))
    # an end at the very instant of a start does not overlap it
    ev.sort(key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def three_agents(dispatchd, handlers, workers=4, **kw):
    """Three agents on one Redis and namespace, each with handlers."""
    return [dispatchd(handlers, agent_opts={"workers": workers}, name="fa%d" % i, **kw)
            for i in range(3)]
