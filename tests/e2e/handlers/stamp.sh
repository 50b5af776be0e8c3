#!/bin/sh
# stamp.sh DIR: first thing, write the wall clock (ns) to DIR/<job>.<attempt>.
t=$(date +%s%N)
echo "$t" > "$1/.$DISPATCH_JOB_ID.$DISPATCH_ATTEMPT.tmp"
mv "$1/.$DISPATCH_JOB_ID.$DISPATCH_ATTEMPT.tmp" "$1/$DISPATCH_JOB_ID.$DISPATCH_ATTEMPT"
cat >/dev/null
exit 0
