#!/usr/bin/python3
# Record what the handler sees (argv, env, cwd, stdin, process ids, open fds)
# into $RECORD_DIR/<handler>.<job id>.<attempt>.json, print a line on stdout
# and on stderr, then exit with $RECORD_EXIT (default 0).
import json
import os
import sys
import time

start = time.time()
stdin = sys.stdin.buffer.read()

fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except OSError:
        pass  # the fd of the directory listing itself is gone by now

rec = {
    "start": start,
    "argv": sys.argv,
    "env": dict(os.environ),
    "cwd": os.getcwd(),
    "stdin": stdin.decode("utf-8", "surrogateescape"),
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "sid": os.getsid(0),
    "fds": fds,
}
d = os.environ.get("RECORD_DIR", "/tmp")
name = "%s.%s.%s.json" % (os.environ.get("DISPATCH_HANDLER", "unknown"),
                          os.environ.get("DISPATCH_JOB_ID", "unknown"),
                          os.environ.get("DISPATCH_ATTEMPT", "unknown"))
tmp = os.path.join(d, "." + name + ".tmp")
with open(tmp, "w") as f:
    json.dump(rec, f)
os.rename(tmp, os.path.join(d, name))

sys.stdout.write("out:%s\n" % os.environ.get("DISPATCH_JOB_ID", ""))
sys.stderr.write("err:%s\n" % os.environ.get("DISPATCH_HANDLER", ""))
sys.stdout.flush()
sys.stderr.flush()
sys.exit(int(os.environ.get("RECORD_EXIT", "0")))
