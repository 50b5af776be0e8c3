"""The agent's Lua scripts, exactly as agent/scripts.c has them.

The bodies are C string literals built with macros (NOW, JOB_FIELDS), so
they are not parsed here: tests/bench/dumpscripts.c is compiled against
agent/scripts.c and agent/scripts_flow.c (which holds the fetch path's
bodies) with the C compiler (as tests/bench/run does) and asked for each
script by name.  What it prints is the very string the agent sends with
SCRIPT LOAD.  Only the names are read from scripts.c's table, to know which
scripts exist.
"""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from harness.ddtest import TOP

SCRIPTS_C = TOP / "agent" / "scripts.c"
SCRIPTS_FLOW_C = TOP / "agent" / "scripts_flow.c"
DUMPSCRIPTS_C = TOP / "tests" / "bench" / "dumpscripts.c"


def names():
    """The script names of the scripts[] table in agent/scripts.c, in order."""
    return re.findall(r'\[SCRIPT_\w+\]\s*=\s*\{\s*"(\w+)"', SCRIPTS_C.read_text())


def compiler():
    """$CC split into words, else cc, gcc or clang from PATH; None if none."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for cc in ("cc", "gcc", "clang"):
        if shutil.which(cc):
            return [cc]
    return None


def load(workdir):
    """{name: body} for every script, from dumpscripts built in workdir."""
    workdir = Path(workdir)
    inc = workdir / "inc"
    inc.mkdir(parents=True, exist_ok=True)
    # scripts.c includes config.h first; it needs nothing from it
    (inc / "config.h").write_text('#define PACKAGE_VERSION "test"\n')
    exe = workdir / "dumpscripts"
    cc = compiler()
    assert cc, "no C compiler (set CC)"
    r = subprocess.run(cc + ["-std=c11", "-I" + str(inc), "-I" + str(TOP / "agent"),
                             "-o", str(exe), str(DUMPSCRIPTS_C), str(SCRIPTS_C),
                             str(SCRIPTS_FLOW_C)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "compiling dumpscripts failed:\n" + r.stderr
    bodies = {}
    for name in names():
        r = subprocess.run([str(exe), name], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout, "dumpscripts %s: %s" % (name, r.stderr)
        bodies[name] = r.stdout
    return bodies
