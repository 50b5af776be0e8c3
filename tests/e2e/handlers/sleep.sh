#!/bin/sh
# sleep.sh SECONDS [DIR]: optionally append this run's pid to
# DIR/<job>.started (one line per run), then sleep.
if [ -n "$2" ]; then
    echo $$ >> "$2/$DISPATCH_JOB_ID.started"
fi
sleep "$1"
echo "slept $1"
