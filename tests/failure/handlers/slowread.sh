#!/bin/sh
# slowread.sh OUT: read stdin only after 2 s, copy it to OUT.
sleep 2
cat > "$1.tmp" && mv "$1.tmp" "$1"
