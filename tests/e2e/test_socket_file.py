"""The agent's unix socket file and process signals."""

import os
import signal
import socket
import stat


def test_socket_mode_default(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}})
    st = os.stat(str(agent.sock))
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)


def test_socket_mode_setting(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}},
                      agent_opts={"socket_mode": "0600"})
    assert stat.S_IMODE(os.stat(str(agent.sock)).st_mode) == 0o600


def test_stale_socket_file_replaced(dispatchd, handler):
    """A socket file left by a crashed agent does not stop a new one."""
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}}, start=False)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(agent.sock))
    s.close()  # leaves the file behind, nobody listening
    assert os.path.exists(str(agent.sock))
    agent.start()
    assert agent.ping()["ok"] is True


def test_sigint_exits_cleanly(dispatchd, handler):
    agent = dispatchd({"h": {"on": "x", "exec": handler("exit.sh")}})
    agent.proc.send_signal(signal.SIGINT)
    assert agent.proc.wait(10) == 0, agent.stderr()
