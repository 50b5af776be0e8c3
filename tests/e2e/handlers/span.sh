#!/bin/sh
# span.sh DIR [SECONDS]: record this run's wall-clock start and end (ns) as
# "START END" in DIR/<job>.<attempt>, sleeping SECONDS (default none) between;
# its stdin goes to DIR/.<job>.<attempt>.stdin.
s=$(date +%s%N)
cat > "$1/.$DISPATCH_JOB_ID.$DISPATCH_ATTEMPT.stdin"
if [ -n "$2" ]; then
    sleep "$2"
fi
e=$(date +%s%N)
echo "$s $e" > "$1/.$DISPATCH_JOB_ID.$DISPATCH_ATTEMPT.tmp"
mv "$1/.$DISPATCH_JOB_ID.$DISPATCH_ATTEMPT.tmp" "$1/$DISPATCH_JOB_ID.$DISPATCH_ATTEMPT"
exit 0
