#!/bin/sh
# pidsleep.sh DIR [SECONDS]: write this run's pid to DIR/<job>.pid, then
# become `sleep SECONDS` (default 300): the pid is the whole job, so a test
# can tell when it is gone.
echo $$ > "$1/$DISPATCH_JOB_ID.pid.tmp"
mv "$1/$DISPATCH_JOB_ID.pid.tmp" "$1/$DISPATCH_JOB_ID.pid"
exec sleep "${2:-300}"
