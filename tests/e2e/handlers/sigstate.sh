#!/bin/sh
# sigstate.sh: print the signal mask/ignored set the handler was started with.
exec grep -E '^Sig(Ign|Blk):' /proc/self/status
