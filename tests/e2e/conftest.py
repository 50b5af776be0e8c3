"""Fixtures for the dispatchd end-to-end tests.

Each test gets its own short tmp dir (unix socket paths must stay under 108
bytes), its own redis-server and, through the `dispatchd` factory, its own
agent(s).  Teardown stops the agent by PID with SIGTERM and asserts it exited
with status 0; the agent's stderr is attached to the report of a failed test.

Run: /usr/bin/python3 -m pytest tests/e2e   (Debian's python3-pytest and
python3-redis; no other packages).  Environment:
  DISPATCHD_BUILD         build dir holding agent/dispatchd and agent/dispatchctl
                          (default build/ in the source tree); a missing binary fails the
                          tests that need it
  DISPATCHD_REDIS_SERVER  redis-server to use (default: from PATH); when there
                          is none every test is skipped
  DISPATCHD_TEST_KEEP     keep each test's /tmp/dde-* dir (configs, logs)
  DISPATCHD_SANITIZED     set for an ASan build (looser memory bound)
  ASAN_*/UBSAN_*/LSAN_*   passed on to the agent (never to handlers)
Handlers used by the tests are in handlers/ (executable scripts).
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from harness import ddtest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "redis_args(*args): extra redis-server arguments for this test")


def pytest_collection_modifyitems(config, items):
    if ddtest.REDIS_SERVER is None:
        skip = pytest.mark.skip(reason="redis-server not installed")
        for item in items:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for agent in getattr(item, "_dd_agents", []):
            rep.sections.append(("dispatchd %s stderr (%s)" % (agent.name, agent.stderr_path),
                                 agent.stderr()[-30000:]))
        srv = getattr(item, "_dd_redis", None)
        if srv is not None:
            rep.sections.append(("redis-server log", srv.log()))


def _require_binaries():
    for b in (ddtest.DISPATCHD, ddtest.DISPATCHCTL):
        if not os.access(str(b), os.X_OK):
            pytest.fail("%s not built (set DISPATCHD_BUILD to the build dir)" % b,
                        pytrace=False)


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="dde-", dir="/tmp"))
    yield d
    if not os.environ.get("DISPATCHD_TEST_KEEP"):
        shutil.rmtree(str(d), ignore_errors=True)


@pytest.fixture
def redis_server(request, workdir):
    if ddtest.REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    m = request.node.get_closest_marker("redis_args")
    srv = ddtest.RedisServer(workdir / "redis", m.args if m else ())
    request.node._dd_redis = srv
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def record_dir(workdir):
    """Where handlers/record.py and friends drop their files."""
    d = workdir / "rec"
    d.mkdir()
    return d


@pytest.fixture
def dispatchd(request, workdir, redis_server):
    """Factory: dispatchd(handlers, agent_opts=None, env=None, name=..., start=True)."""
    _require_binaries()
    agents = []
    request.node._dd_agents = agents

    def start(handlers, agent_opts=None, env=None, name="dt-agent", ns="dt",
              start=True):
        a = ddtest.Agent(workdir / ("agent-%d" % len(agents)), redis_server, handlers,
                         agent_opts=agent_opts, name=name, ns=ns, env=env)
        agents.append(a)
        if start:
            a.start()
        return a

    yield start

    problems = []
    # every results entry any agent wrote must have the documented shape
    seen_ns = set()
    for a in agents:
        if a.ns in seen_ns or redis_server.proc is None:
            continue
        seen_ns.add(a.ns)
        try:
            entries = a.results()
        except Exception:   # Redis stopped by the test: nothing to check
            continue
        problems += ["results stream: " + p for p in ddtest.result_problems(entries)]
    for a in agents:
        if a.proc is None and a.returncode is None:
            continue  # never started
        rc = a.stop()
        if rc != a.expect_rc:
            problems.append("agent %s did not exit cleanly: exit %r (expected %r)"
                            "\n--- stderr ---\n%s"
                            % (a.name, rc, a.expect_rc, a.stderr()[-20000:]))
    assert not problems, "\n".join(problems)


@pytest.fixture
def handler():
    """Absolute path of a script in tests/e2e/handlers/."""
    def path(name):
        p = ddtest.HANDLERS / name
        assert os.access(str(p), os.X_OK), "%s is not executable" % p
        return str(p)
    return path
