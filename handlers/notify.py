#!/usr/bin/python3
"""notify.py - tell people that something happened.

    exec = /usr/share/dispatchd/handlers/notify.py

Reads the job JSON from stdin and prints a one-line summary of its data.
If NOTIFY_URL is set (env = NOTIFY_URL=https://... in the handler's
section), the summary is also POSTed there as text.

Exit status: 0 done; 75 try again later (the web hook is down);
65 the job itself is bad, retrying will not help.
"""

import json
import os
import sys
import urllib.error
import urllib.request

EX_DATAERR = 65
EX_TEMPFAIL = 75


def main():
    try:
        job = json.load(sys.stdin)
    except ValueError as e:
        print(f"notify: job is not JSON: {e}", file=sys.stderr)
        return EX_DATAERR

    data = job.get("data")
    if isinstance(data, dict):
        fields = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(data.items()))
    else:
        fields = json.dumps(data)
    summary = f"{job.get('event')}: {fields} (job {job.get('id')}, attempt {job.get('attempt')}/{job.get('max_attempts')})"
    print(summary)

    url = os.environ.get("NOTIFY_URL")
    if not url:
        return 0
    try:
        req = urllib.request.Request(url, data=summary.encode(), method="POST",
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
        with urllib.request.urlopen(req, timeout=10):
            pass
    except (urllib.error.URLError, OSError) as e:
        # Network trouble is usually temporary: exit 75 and dispatchd
        # runs the job again after a backoff.
        print(f"notify: POST {url} failed: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main())
