#!/bin/sh
# flood.sh: 1 GiB of zeros on stdout, 1 MiB of random bytes on stderr.
head -c 1048576 /dev/urandom >&2 &
head -c 1073741824 /dev/zero
wait
exit 0
