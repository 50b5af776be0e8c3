"""A handler program that is missing at start, or stops being executable."""

import os
import shutil

import pytest

from harness import ddtest
from harness.ddtest import run


def config_with_line(path, exec_value, redis_sock="/nonexistent/redis.sock"):
    text = ("[agent]\n"
            "redis = unix:%s\n"
            "socket = %s/agent.sock\n"
            "\n"
            "[handler h]\n"
            "on = x\n"
            "exec = %s arg\n" % (redis_sock, path.parent, exec_value))
    path.write_text(text)
    return text.splitlines().index("exec = %s arg" % exec_value) + 1


@pytest.mark.parametrize("kind", ["missing", "not-executable"])
def test_check_config_rejects_bad_program(workdir, kind):
    prog = workdir / "prog.sh"
    if kind == "not-executable":
        prog.write_text("#!/bin/sh\nexit 0\n")
        prog.chmod(0o644)
    conf = workdir / "d.conf"
    line = config_with_line(conf, str(prog))
    p = run([ddtest.DISPATCHD, "-t", "-c", conf])
    assert p.returncode == 78, (p.returncode, p.stdout, p.stderr)
    assert "%s:%d:" % (conf, line) in p.stderr, p.stderr
    assert "exec" in p.stderr, p.stderr
    assert str(prog) in p.stderr, p.stderr


def test_agent_refuses_to_start_with_missing_program(workdir, redis_server):
    conf = workdir / "d.conf"
    line = config_with_line(conf, str(workdir / "nope"), redis_server.sock)
    p = run([ddtest.DISPATCHD, "-c", conf], timeout=10)
    assert p.returncode == 78, (p.returncode, p.stderr)
    assert "%s:%d:" % (conf, line) in p.stderr, p.stderr


@pytest.mark.parametrize("how", ["chmod", "remove", "interpreter"])
def test_program_broken_after_start(dispatchd, handler, workdir, how):
    if how == "interpreter" and os.environ.get("DISPATCHD_WRAPPER"):
        pytest.skip("under valgrind the exec of a script is valgrind's own")
    prog = workdir / "h.sh"
    shutil.copy(handler("exit.sh"), str(prog))
    prog.chmod(0o755)
    agent = dispatchd({"h": {"on": "x", "exec": "%s 0" % prog,
                             "attempts": 2, "backoff": "100ms..100ms"}})
    if how == "chmod":
        prog.chmod(0o644)
    elif how == "interpreter":
        prog.write_text("#!/nonexistent/sh\nexit 0\n")
    else:
        prog.unlink()
    jid = agent.emit("x")["jobs"][0]["id"]
    res = agent.wait_final(jid)
    print("exec failure results:", [{k: r[k] for k in ("outcome", "exit", "signal", "error")}
                                    for r in res])
    assert [r["outcome"] for r in res] == ["retry", "dead"], res
    for r in res:
        err = r["error"]
        assert err, "no error text in result %r" % r
        assert str(prog) in err or "denied" in err.lower() or "no such file" in err.lower(), err
        assert r["exit"] in ("75", ""), r
        if how == "interpreter":
            assert "#! interpreter" in err, err
    assert agent.ping()["ok"] is True
    # repaired: works again without a restart
    shutil.copy(handler("exit.sh"), str(prog))
    prog.chmod(0o755)
    jid2 = agent.emit("x")["jobs"][0]["id"]
    assert agent.wait_final(jid2)[-1]["outcome"] == "done"
