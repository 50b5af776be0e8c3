#!/bin/sh
# poison.sh FILE: record the run, then kill -9 the parent (the agent).
echo "$DISPATCH_JOB_ID $DISPATCH_ATTEMPT $$ $PPID" >> "$1"
kill -9 "$PPID"
sleep 30
