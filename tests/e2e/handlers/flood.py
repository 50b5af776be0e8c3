#!/usr/bin/python3
# flood.py [STDOUT_BYTES [STDERR_BYTES]]: write that much (default 10 MiB of
# 'x' to stdout, 256 KiB of 'e' to stderr) and exit 0.  Never reads stdin.
import sys

n_out = int(sys.argv[1]) if len(sys.argv) > 1 else 10 * 1024 * 1024
n_err = int(sys.argv[2]) if len(sys.argv) > 2 else 256 * 1024
chunk = b"x" * 65536
left = n_out
while left > 0:
    k = min(left, len(chunk))
    sys.stdout.buffer.write(chunk[:k])
    left -= k
sys.stdout.flush()
sys.stderr.buffer.write(b"e" * n_err)
sys.stderr.flush()
