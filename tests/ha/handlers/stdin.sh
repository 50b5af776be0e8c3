#!/bin/sh
# stdin.sh DIR: keep the job JSON the agent handed over, one file per job:
# DIR/<job id>.json (the event id and data are inside).
cat > "$1/$DISPATCH_JOB_ID.json.tmp" && mv "$1/$DISPATCH_JOB_ID.json.tmp" "$1/$DISPATCH_JOB_ID.json"
