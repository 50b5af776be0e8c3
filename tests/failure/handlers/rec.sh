#!/bin/sh
# rec.sh FILE SLEEP1 [SLEEP_LATER [EXIT]]: record "job attempt pid(=pgid) epoch",
# then sleep SLEEP1 on attempt 1 and SLEEP_LATER on later attempts, then exit EXIT.
f=$1; s1=${2:-0}; s2=${3:-0}; rc=${4:-0}
echo "$DISPATCH_JOB_ID $DISPATCH_ATTEMPT $$ $(date +%s.%N)" >> "$f"
if [ "$DISPATCH_ATTEMPT" = 1 ]; then s=$s1; else s=$s2; fi
if [ "$s" != 0 ]; then sleep "$s"; fi
echo "$DISPATCH_JOB_ID $DISPATCH_ATTEMPT $$ end $(date +%s.%N)" >> "$f"
exit "$rc"
