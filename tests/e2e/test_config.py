"""Config checking with dispatchd -t, and command-line handling."""

import pytest

from harness import ddtest
from harness.ddtest import run


def write_conf(workdir, agent_extra="", handler_extra="", tail=""):
    """A valid config with optional extra lines; returns (path, text lines)."""
    text = ("; test config\n"
            "[agent]\n"
            "name = cfg-agent\n"
            "redis = unix:%(d)s/redis.sock\n"
            "socket = %(d)s/agent.sock\n"
            "workers = 2\n"
            "%(agent_extra)s"
            "\n"
            "[handler ok]\n"
            "on = order.paid, order.*\n"
            "exec = /bin/true \"a b\"\n"
            "timeout = 5m\n"
            "%(handler_extra)s"
            "%(tail)s") % {"d": workdir, "agent_extra": agent_extra,
                            "handler_extra": handler_extra, "tail": tail}
    path = workdir / "dispatchd.conf"
    path.write_text(text)
    return path, text.splitlines()


def line_of(lines, needle):
    """Line number of the one line equal to needle, else containing it."""
    hits = [i + 1 for i, l in enumerate(lines) if l == needle] or \
        [i + 1 for i, l in enumerate(lines) if needle in l]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def test_valid_config_ok(workdir):
    path, _ = write_conf(workdir, agent_extra="lease = 30s\noutput_max = 64k\n",
                         handler_extra="backoff = 5s..1h\nattempts = 5\nenv = A=b\nenv = C=d\n"
                                       "delay = 0\nconcurrency = 2\nworkdir = /\n")
    p = run([ddtest.DISPATCHD, "-t", "-c", path])
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "%s: configuration OK" % path in p.stdout, p.stdout


CONFIG_ERRORS = [
    ("unknown agent key", {"agent_extra": "frobnicate = 1\n"}, "frobnicate"),
    ("unknown handler key", {"handler_extra": "colour = blue\n"}, "colour"),
    ("unknown section", {"tail": "\n[bogus]\nx = 1\n"}, "[bogus]"),
    ("bad duration", {"agent_extra": "lease = 5 parsecs\n"}, "lease"),
    ("bad handler timeout", {"handler_extra": "timeout = soon\n"}, "timeout = soon"),
    ("bad size", {"agent_extra": "output_max = lots\n"}, "output_max"),
    ("bad workers", {"agent_extra": "workers = -3\n"}, "workers = -3"),
    ("bad backoff", {"handler_extra": "backoff = 1h..5s\n"}, "backoff"),
    ("bad handler name", {"tail": "\n[handler bad/name]\non = x\nexec = /bin/true\n"},
     "[handler bad/name]"),
    ("bad log level", {"agent_extra": "log_level = chatty\n"}, "log_level"),
    ("unterminated quote", {"tail": "\n[handler q]\non = x\nexec = /bin/true \"open\n"},
     "\"open"),
    ("env without =", {"handler_extra": "env = JUSTAKEY\n"}, "JUSTAKEY"),
    ("empty on", {"tail": "\n[handler e]\non =\nexec = /bin/true\n"}, ("on =", "[handler e]")),
    ("zero attempts", {"handler_extra": "attempts = 0\n"}, "attempts = 0"),
    ("bad socket_mode", {"agent_extra": "socket_mode = rw\n"}, "socket_mode"),
    ("missing password file", {"agent_extra": "redis_password_file = /nonexistent/pw\n"},
     "redis_password_file"),
    ("bad namespace", {"agent_extra": "namespace = a b\n"}, "namespace"),
    ("bad agent name", {"agent_extra": "name = {x}\n"}, "name = {x}"),
    ("bad redis port", {"agent_extra": "redis = redis://h:notaport\n"}, "notaport"),
    ("lease under its minimum", {"agent_extra": "lease = 100ms\n"}, "lease = 100ms"),
    ("zero timeout", {"handler_extra": "timeout = 0s\n"}, "timeout = 0s"),
]


@pytest.mark.parametrize("case,kw,needle", CONFIG_ERRORS,
                         ids=[c[0].replace(" ", "-") for c in CONFIG_ERRORS])
def test_config_error(workdir, case, kw, needle):
    path, lines = write_conf(workdir, **kw)
    needles = needle if isinstance(needle, tuple) else (needle,)
    where = ["%s:%d:" % (path, line_of(lines, n)) for n in needles]
    p = run([ddtest.DISPATCHD, "-t", "-c", path])
    assert p.returncode == 78, (case, p.returncode, p.stdout, p.stderr)
    assert any(w in p.stderr for w in where), (case, where, p.stderr)


def test_handler_without_exec(workdir):
    path, lines = write_conf(workdir, tail="\n[handler noexec]\non = x\n")
    p = run([ddtest.DISPATCHD, "-t", "-c", path])
    assert p.returncode == 78, (p.returncode, p.stderr)
    assert str(path) in p.stderr and "exec" in p.stderr, p.stderr


def test_conf_d_error_names_its_file(workdir):
    path, _ = write_conf(workdir)
    (workdir / "conf.d").mkdir()
    (workdir / "conf.d" / "10-good.conf").write_text(
        "[handler extra]\non = y\nexec = /bin/true\n")
    bad = workdir / "conf.d" / "20-bad.conf"
    bad.write_text("[handler broken]\non = z\nexec = /bin/true\nretries = 3\n")
    p = run([ddtest.DISPATCHD, "-t", "-c", path])
    assert p.returncode == 78, (p.returncode, p.stderr)
    assert "%s:4:" % bad in p.stderr, p.stderr


def test_missing_config_file(workdir):
    p = run([ddtest.DISPATCHD, "-t", "-c", workdir / "nope.conf"])
    assert p.returncode == 78, (p.returncode, p.stderr)
    assert "nope.conf" in p.stderr


def test_usage_errors():
    for args in (["--bogus"], ["-c"], ["-x"], ["extra-arg"]):
        p = run([ddtest.DISPATCHD] + args, timeout=10)
        assert p.returncode == 64, (args, p.returncode, p.stderr)
        assert p.stderr, args


def test_version_and_help():
    p = run([ddtest.DISPATCHD, "-V"])
    assert p.returncode == 0 and "0.1.0" in p.stdout + p.stderr, p
    p = run([ddtest.DISPATCHD, "-h"])
    assert p.returncode == 0 and "-c" in p.stdout + p.stderr, p
