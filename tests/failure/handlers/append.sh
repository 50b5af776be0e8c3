#!/bin/sh
# append.sh FILE [SLEEP]: record "job attempt" (one short line, O_APPEND:
# atomic), then sleep SLEEP seconds if given.
echo "$DISPATCH_JOB_ID $DISPATCH_ATTEMPT" >> "$1"
if [ -n "$2" ]; then sleep "$2"; fi
