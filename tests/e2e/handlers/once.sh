#!/bin/sh
# once.sh MARKER SECONDS: the first run (MARKER absent) creates MARKER,
# writes its pid to MARKER and sleeps SECONDS; later runs exit 0 at once.
if [ -e "$1" ]; then
    echo "second run"
    exit 0
fi
echo $$ > "$1.tmp"
mv "$1.tmp" "$1"
sleep "$2"
echo "first run finished"
