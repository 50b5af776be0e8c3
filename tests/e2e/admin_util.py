"""Helpers for the admin / access / users / systemd / reload e2e tests.

Kept apart from ddtest.py (which others edit).  Everything drives the real
binaries; waiting is done by polling with deadlines (ddtest.wait_for).
"""

import math
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
from pathlib import Path

from harness import ddtest
from harness.ddtest import wait_for

NOBODY_UID = 65534
NOBODY_GID = 65534
SETPRIV_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def ctl(*args, env=None, input=None, timeout=15, as_nobody=False):
    """Run the real dispatchctl to completion (str output)."""
    argv = [str(ddtest.DISPATCHCTL)] + [str(a) for a in args]
    if as_nobody:
        argv = SETPRIV_NOBODY + argv
    return subprocess.run(argv, stdin=subprocess.DEVNULL if input is None else None,
                          input=input, capture_output=True, timeout=timeout,
                          env=env if env is not None else ddtest.agent_environ(),
                          text=True)


def ctl_ok(*args, **kw):
    p = ctl(*args, **kw)
    assert p.returncode == 0, ("dispatchctl %r" % (args,), p.returncode, p.stdout, p.stderr)
    return p


def ctl_json(sock, *args, **kw):
    """dispatchctl -s SOCK --json ARGS; returns (CompletedProcess, parsed reply or None)."""
    import json
    p = ctl("-s", sock, "--json", *args, **kw)
    try:
        rep = json.loads(p.stdout) if p.stdout.strip() else None
    except ValueError:
        raise AssertionError("--json output is not JSON: %r (stderr %r)" % (p.stdout, p.stderr))
    return p, rep


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def open_up(path):
    """Make every directory from path up to / traversable by others (temp dirs
    only: mkdtemp makes them 0700)."""
    p = Path(path).resolve()
    for d in [p] + list(p.parents):
        if str(d) == "/":
            break
        st = os.stat(str(d))
        if st.st_mode & 0o005 != 0o005:
            if not str(d).startswith("/tmp/"):
                raise AssertionError("refusing to chmod %s (not under /tmp)" % d)
            os.chmod(str(d), stat.S_IMODE(st.st_mode) | 0o755)


def script_dir(workdir, name="bin"):
    """A root-owned 0755 dir for handler programs that nobody can execute
    (and that passes the agent's ownership check)."""
    d = Path(workdir) / name
    d.mkdir(mode=0o755, exist_ok=True)
    os.chmod(str(d), 0o755)
    open_up(d)
    return d


def write_script(dir, name, text, mode=0o755):
    p = Path(dir) / name
    p.write_text(text)
    os.chmod(str(p), mode)
    return str(p)


def copy_handler(dir, name):
    src = ddtest.HANDLERS / name
    dst = Path(dir) / name
    shutil.copyfile(str(src), str(dst))
    os.chmod(str(dst), 0o755)
    return str(dst)


def log_has(agent, pattern, timeout=5.0):
    """Wait until the agent's stderr matches regex pattern; return the match."""
    rx = re.compile(pattern)
    return wait_for(lambda: rx.search(agent.stderr()), timeout,
                    what="agent log line matching %r" % pattern)


def terminate(proc, timeout=5.0):
    """Stop a Popen we started, by its PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# ------------------------------------------------ Prometheus text format ----

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_HELP_RE = re.compile(r"^# HELP (%s) (.*)$" % _NAME)
_TYPE_RE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % _NAME)
_SAMPLE_RE = re.compile(r"^(%s)(\{[^}]*\})? (\S+)( -?[0-9]+)?$" % _NAME)
_LABEL_RE = re.compile(r'(%s)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"' % _LABEL)


class PromError(AssertionError):
    pass


def _parse_value(s, lineno, line):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.match(r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$", s):
        raise PromError("line %d: value %r is not a number: %r" % (lineno, s, line))
    return float(s)


def _parse_labels(text, lineno, line):
    labels = {}
    if text is None:
        return labels
    inner = text[1:-1]
    pos = 0
    while pos < len(inner):
        m = _LABEL_RE.match(inner, pos)
        if not m:
            raise PromError("line %d: bad label set at %r: %r" % (lineno, inner[pos:], line))
        name, value = m.group(1), m.group(2)
        if name in labels:
            raise PromError("line %d: duplicate label %s: %r" % (lineno, name, line))
        labels[name] = value
        pos = m.end()
        if pos < len(inner):
            if inner[pos] != ",":
                raise PromError("line %d: expected ',' in labels: %r" % (lineno, line))
            pos += 1
    return labels


def parse_prometheus(text):
    """Strictly parse Prometheus text exposition 0.0.4.

    Returns {family: {"type", "help", "samples": [(name, labels, value)]}}.
    Raises PromError on any line that does not follow the format, on samples
    without a TYPE, on counters not ending in _total, on broken histograms."""
    if text and not text.endswith("\n"):
        raise PromError("exposition does not end with a newline")
    fams = {}
    current = None
    seen_sample_keys = set()
    for lineno, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        if line == "":
            raise PromError("line %d: empty line" % lineno)
        if line.startswith("#"):
            m = _HELP_RE.match(line)
            if m:
                f = fams.setdefault(m.group(1), {"type": None, "help": None, "samples": []})
                if f["help"] is not None:
                    raise PromError("line %d: second HELP for %s" % (lineno, m.group(1)))
                f["help"] = m.group(2)
                current = m.group(1)
                continue
            m = _TYPE_RE.match(line)
            if m:
                f = fams.setdefault(m.group(1), {"type": None, "help": None, "samples": []})
                if f["type"] is not None:
                    raise PromError("line %d: second TYPE for %s" % (lineno, m.group(1)))
                if f["samples"]:
                    raise PromError("line %d: TYPE after samples of %s" % (lineno, m.group(1)))
                f["type"] = m.group(2)
                current = m.group(1)
                continue
            if line.startswith("# HELP") or line.startswith("# TYPE"):
                raise PromError("line %d: malformed HELP/TYPE: %r" % (lineno, line))
            continue  # plain comment
        m = _SAMPLE_RE.match(line)
        if not m:
            raise PromError("line %d: not a sample line: %r" % (lineno, line))
        name = m.group(1)
        labels = _parse_labels(m.group(2), lineno, line)
        value = _parse_value(m.group(3), lineno, line)
        fam = None
        for cand in (name, re.sub(r"_(bucket|sum|count)$", "", name)):
            if cand in fams and fams[cand]["type"] is not None:
                fam = cand
                if cand == name:
                    break
        if fam is None:
            raise PromError("line %d: sample %s has no TYPE line before it" % (lineno, name))
        if fam != current:
            raise PromError("line %d: sample %s is not grouped under its family %s "
                            "(current %s)" % (lineno, name, fam, current))
        ftype = fams[fam]["type"]
        if ftype == "histogram":
            if name == fam:
                raise PromError("line %d: histogram %s sample without _bucket/_sum/_count"
                                % (lineno, name))
            if name.endswith("_bucket") and "le" not in labels:
                raise PromError("line %d: bucket without le: %r" % (lineno, line))
        elif name != fam:
            raise PromError("line %d: sample %s does not belong to %s %s"
                            % (lineno, name, ftype, fam))
        if ftype in ("counter", "histogram") and not (math.isnan(value)) and value < 0:
            raise PromError("line %d: negative %s value: %r" % (lineno, ftype, line))
        key = (name, tuple(sorted(labels.items())))
        if key in seen_sample_keys:
            raise PromError("line %d: duplicate sample %r" % (lineno, line))
        seen_sample_keys.add(key)
        fams[fam]["samples"].append((name, labels, value))
    for fam, f in fams.items():
        if f["type"] is None:
            raise PromError("family %s has HELP but no TYPE" % fam)
        if f["help"] is None:
            raise PromError("family %s has no HELP" % fam)
        if f["type"] == "counter" and not fam.endswith("_total"):
            raise PromError("counter %s does not end in _total" % fam)
        if f["type"] == "histogram":
            check_histogram(fam, f["samples"])
    return fams


def check_histogram(fam, samples):
    groups = {}
    for name, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if name == fam + "_bucket":
            g["buckets"].append((labels["le"], value))
        elif name == fam + "_sum":
            g["sum"] = value
        elif name == fam + "_count":
            g["count"] = value
    for rest, g in groups.items():
        if g["count"] is None or g["sum"] is None:
            raise PromError("histogram %s%r lacks _sum or _count" % (fam, rest))
        if not g["buckets"]:
            raise PromError("histogram %s%r has no buckets" % (fam, rest))
        les = []
        for le, v in g["buckets"]:
            les.append((_parse_value(le, 0, le), v))
        if les[-1][0] != float("inf"):
            raise PromError("histogram %s%r: last bucket is not le=\"+Inf\"" % (fam, rest))
        for (a, va), (b, vb) in zip(les, les[1:]):
            if not b > a:
                raise PromError("histogram %s%r: le not increasing (%s, %s)" % (fam, rest, a, b))
            if vb < va:
                raise PromError("histogram %s%r: buckets not cumulative (%s:%s > %s:%s)"
                                % (fam, rest, a, va, b, vb))
        if les[-1][1] != g["count"]:
            raise PromError("histogram %s%r: +Inf bucket %s != _count %s"
                            % (fam, rest, les[-1][1], g["count"]))


def sample(fams, name, **labels):
    """Value of one sample (None if absent)."""
    for fam in fams.values():
        for n, l, v in fam["samples"]:
            if n == name and all(l.get(k) == str(x) for k, x in labels.items()):
                return v
    return None


def promtool():
    return shutil.which("promtool")


# ------------------------------------------------------------ systemd ----

class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)
        self.sock.settimeout(0.05)
        self.messages = []

    def drain(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return self.messages
            self.messages.append(data.decode("utf-8", "replace"))

    def assignments(self):
        """All KEY=VALUE lines received so far, in order."""
        self.drain()
        out = []
        for m in self.messages:
            for line in m.split("\n"):
                if line:
                    out.append(line)
        return out

    def wait(self, line, timeout=10.0, after=0):
        """Wait until `line` (e.g. 'READY=1') arrives at index >= after;
        return its index in assignments()."""
        def found():
            a = self.assignments()
            for i in range(after, len(a)):
                if a[i] == line:
                    return i + 1  # truthy even for index 0
            return None
        return wait_for(found, timeout, what="%s on NOTIFY_SOCKET (got %r)"
                        % (line, self.assignments()[after:][-20:])) - 1

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
