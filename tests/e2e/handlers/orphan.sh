#!/bin/sh
# orphan.sh FILE: the handler itself dies on SIGTERM but leaves a grandchild
# in its process group that ignores SIGTERM; the SIGKILL to the group after
# kill_grace must still reach it.
(trap '' TERM; exec sleep 1000) &
echo "$$ $!" > "$1.tmp"
mv "$1.tmp" "$1"
sleep 1000
