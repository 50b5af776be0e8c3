#!/bin/sh
# nostdin.sh FILE: never read stdin.
echo "$DISPATCH_JOB_ID" >> "$1"
exec sleep 1
