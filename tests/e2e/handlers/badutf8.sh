#!/bin/sh
# badutf8.sh: print invalid UTF-8 (and a NUL) to stdout and stderr.
printf 'ok \377\376 bytes \000 end\n'
printf 'bad \300\n' >&2
