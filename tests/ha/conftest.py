"""Fixtures for the dispatchd many-agents / HA tests (issue 5).

Run: /usr/bin/python3 -m pytest tests/ha   (Debian's python3-pytest and
python3-redis; redis-server, redis-cli, and redis-sentinel for
test_sentinel.py).  Everything listens on loopback (unix sockets or
127.0.0.1 on random free ports) under a /tmp/ddh-* dir; teardown ends, by
PID, every process the test started.

Environment: DISPATCHD_BUILD (default build/ in the source tree), DISPATCHD_TEST_KEEP
(keep the tmp dir).  Tests needing a feature the binary lacks skip after a
capability probe (a config key `dispatchd -t` rejects, a Redis key the agent
does not write), so the suite is green before the feature lands.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import hatest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        env = getattr(item, "_ha_env", None)
        if env is not None:
            for a in env.agents:
                rep.sections.append(("dispatchd %s stderr (%s)" % (a.name, a.stderr_path),
                                     a.stderr()[-8000:]))
            for r in env.redises:
                rep.sections.append(("redis-server %s log" % (r.port or r.sock), r.log()))
            for s in env.sentinels:
                rep.sections.append(("sentinel %s log" % s.port, s.log()))


@pytest.fixture
def env(request):
    if hatest.REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    for b in (hatest.DISPATCHD, hatest.DISPATCHCTL):
        if not os.access(str(b), os.X_OK):
            pytest.fail("%s not built (set DISPATCHD_BUILD)" % b, pytrace=False)
    d = Path(tempfile.mkdtemp(prefix="ddh-", dir="/tmp"))
    e = hatest.Env(d, request)
    request.node._ha_env = e
    yield e
    problems = e.teardown()
    if not os.environ.get("DISPATCHD_TEST_KEEP"):
        shutil.rmtree(str(d), ignore_errors=True)
    assert not problems, problems
