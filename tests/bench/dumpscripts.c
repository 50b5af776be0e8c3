/*
 * dumpscripts.c: print the agent's Lua scripts, so that the ingest baseline
 * runs exactly the enqueue script of the agent under test.  Built by
 * tests/bench/run against agent/scripts.c with a stub config.h:
 *
 *   dumpscripts NAME    prints the body of the script called NAME
 */
#include <stdio.h>
#include <string.h>

#include "dispatchd.h"

int
main(int argc, char **argv)
{
	int	i;

	for (i = 0; i < SCRIPT_COUNT; i++)
		if (argc > 1 && scripts[i].name != NULL &&
		    strcmp(scripts[i].name, argv[1]) == 0) {
			fputs(scripts[i].body, stdout);
			return 0;
		}
	fprintf(stderr, "dumpscripts: no script %s\n", argc > 1 ? argv[1] :
	    "(none given)");
	return 1;
}
