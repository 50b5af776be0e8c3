/*
 * fuzz_config.c: libFuzzer target for the configuration loader.  The input
 * is written to a file (the loader reads files) and loaded; it must load or
 * fail with a "file:line: message", never crash or leak.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../agent/dispatchd.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char	 dir[64], path[96];
	struct config	*c;
	char		 err[1024];
	FILE		*fp;

	if (dir[0] == '\0') {
		strcpy(dir, "/tmp/dispatchd-fuzz-XXXXXX");
		if (mkdtemp(dir) == NULL)
			abort();
		snprintf(path, sizeof path, "%s/d.conf", dir);
	}
	if ((fp = fopen(path, "w")) == NULL)
		abort();
	fwrite(data, 1, size, fp);
	fclose(fp);
	if ((c = config_load(path, err, sizeof err)) != NULL)
		config_free(c);
	else if (strncmp(err, path, strlen(path)) != 0)
		abort();	/* every error names the file */
	return 0;
}
