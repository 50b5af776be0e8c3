#!/bin/sh
# stubborn.sh FILE: like grandchild.sh, but everything ignores SIGTERM, so
# only the SIGKILL after kill_grace can end it.
trap '' TERM
sleep 1000 &
echo "$$ $!" > "$1.tmp"
mv "$1.tmp" "$1"
sleep 1000
