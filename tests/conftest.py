"""Shared by every pytest suite under tests/ (e2e, failure, ha).

The suites' own fixtures are in tests/<suite>/conftest.py; the code they
share (private redis-server, the real agent with a generated config, the
socket client, polling with deadlines, the Redis invariant checker) is the
package tests/harness/, on sys.path through tests/pytest.ini.  See
tests/README.md.
"""


def pytest_configure(config):
    # used by tests/failure and tests/ha
    config.addinivalue_line("markers", "slow: takes about a minute or more")
