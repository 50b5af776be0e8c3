#!/bin/sh
# log-event.sh - append one line per job to an event log.
#
#   exec = /usr/share/dispatchd/handlers/log-event.sh [LOGFILE]
#
# With LOGFILE, the line is appended to it; without, it goes to stdout,
# which dispatchd stores in the job's entry in the results stream.
#
# dispatchd writes the job as JSON on stdin and also sets DISPATCH_JOB_ID,
# DISPATCH_EVENT, DISPATCH_ATTEMPT and friends in the environment, so a
# shell handler rarely needs to parse the JSON at all.
#
# Exit status, as dispatchd reads it:
#   0    done, the job is finished
#   75   temporary failure (EX_TEMPFAIL): run the job again later
#   64-78 (other than 75) permanent failure: give up at once
#   anything else, a signal or the timeout: retried until "attempts" runs out

set -u

# Read all of stdin into a variable.  Do read it, even if unused: a
# handler that never reads its stdin is fine, but reading it keeps the
# example honest about what arrives there.
job=$(cat) || exit 75

# One line per job; the JSON is folded onto that line in case it ever
# contains newlines.
line=$(printf '%s event=%s job=%s attempt=%s/%s %s' \
	"$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	"${DISPATCH_EVENT:-?}" "${DISPATCH_JOB_ID:-?}" \
	"${DISPATCH_ATTEMPT:-?}" "${DISPATCH_MAX_ATTEMPTS:-?}" \
	"$(printf '%s' "$job" | tr '\n' ' ')")

if [ $# -eq 0 ]; then
	printf '%s\n' "$line"
	exit 0
fi

# A short line written with O_APPEND lands in one piece, even when
# several jobs log at the same moment.  If the disk is full or the
# directory is missing, ask for a retry rather than losing the line.
if ! printf '%s\n' "$line" >>"$1"; then
	echo "log-event: cannot append to $1" >&2
	exit 75
fi
exit 0
