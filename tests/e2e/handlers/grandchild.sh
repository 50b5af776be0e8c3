#!/bin/sh
# grandchild.sh FILE: start a grandchild, write "<own pid> <grandchild pid>"
# to FILE, say "waiting" on stdout, then sleep (to be killed by the timeout).
sleep 1000 &
echo "$$ $!" > "$1.tmp"
mv "$1.tmp" "$1"
echo waiting
sleep 1000
