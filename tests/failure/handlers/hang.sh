#!/bin/sh
# hang.sh MODE FILE: record "pgid", then hang in one of several ways.
f=$2
echo "pgid $$" >> "$f"
case $1 in
plain)	sleep 1000 ;;
stubborn) trap '' TERM; sleep 1000 ;;
grandchild) sleep 1000 & echo "child $!" >> "$f"; sleep 1000 ;;
setsid)	setsid sleep 1000 & echo "escapee $!" >> "$f"; sleep 1000 ;;
esac
