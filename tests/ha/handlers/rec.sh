#!/bin/sh
# rec.sh DIR [SLEEP]: append "job attempt agent event_id event" to DIR/$DD_AGENT
# (one short line with O_APPEND: atomic), then sleep SLEEP seconds if given.
# DD_AGENT comes from the handler's env= line, so that every agent has the same
# exec line for the handler.
echo "$DISPATCH_JOB_ID $DISPATCH_ATTEMPT ${DD_AGENT:-unknown} $DISPATCH_EVENT_ID $DISPATCH_EVENT" >> "$1/${DD_AGENT:-unknown}"
if [ -n "$2" ]; then sleep "$2"; fi
