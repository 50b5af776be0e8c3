#!/bin/sh
# nostdin.sh [SECONDS]: never reads stdin; optionally sleeps first.
[ -n "$1" ] && sleep "$1"
echo "did not read stdin"
exit 0
