#!/bin/sh
# leave_child.sh FILE: leave a background child holding stdout/stderr open,
# record its pid in FILE, and exit 0 at once.
sleep 1000 &
echo "$!" > "$1.tmp"
mv "$1.tmp" "$1"
echo "leader done"
exit 0
