/*
 * limits.c: what a job may use, as the config spells it.
 *
 * The keys are the same in [agent], where they are defaults, and in a
 * [handler] section, where they win.  Each remembers the line it was set
 * on, so that a limit this host cannot enforce is refused by file:line
 * (cgroup.c knows what the host can do; this module knows no kernel).
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatchd.h"

static const char *const limit_names[LIMIT_COUNT] = {
	[LIMIT_MEMORY] = "memory_max",
	[LIMIT_SWAP] = "memory_swap_max",
	[LIMIT_TASKS] = "tasks_max",
	[LIMIT_CPU] = "cpu_max",
	[LIMIT_IO] = "io_weight",
	[LIMIT_LEFTOVERS] = "leftovers",
};

/* The config key of a limit. */
const char *
limits_name(enum limit_kind kind)
{
	return limit_names[kind];
}

/*
 * cpu_max: "50%" of one CPU, or a number of CPUs ("2", "1.5"); kept as a
 * percentage of one CPU, from 1 to 100 CPUs.
 */
static int
limits_parse_cpu(const char *s, int *pct)
{
	char	*end;
	double	 v;

	if (!isdigit((unsigned char)*s))
		return -1;
	v = strtod(s, &end);
	if (*end == '%' && end[1] == '\0')
		;
	else if (*end == '\0')
		v *= 100.0;
	else
		return -1;
	if (v < 1.0 || v > 10000.0)
		return -1;
	*pct = (int)(v + 0.5);
	return 0;
}

/*
 * Set the limit key to value, read at file:line.  Returns 1 if key is not
 * a limit, 0 when set, -1 with why ("is not a size", ...) if value is bad.
 */
int
limits_set(struct job_limits *l, const char *key, const char *value,
    const char *file, int line, char *why, size_t whylen)
{
	enum limit_kind	 kind;
	size_t		 size;
	long		 n;
	int		 pct;

	for (kind = 0; kind < LIMIT_COUNT; kind++)
		if (strcmp(limit_names[kind], key) == 0)
			break;
	if (kind == LIMIT_COUNT)
		return 1;
	switch (kind) {
	case LIMIT_MEMORY:
	case LIMIT_SWAP:
		if (util_parse_size(value, &size) == -1 || (kind ==
		    LIMIT_MEMORY && size < 1024 * 1024)) {
			snprintf(why, whylen, "'%s' is not a size%s (like "
			    "512m, 2g)", value, kind == LIMIT_MEMORY ?
			    " of at least 1m" : "");
			return -1;
		}
		if (kind == LIMIT_MEMORY)
			l->memory_max = size;
		else
			l->swap_max = size;
		break;
	case LIMIT_TASKS:
		if (util_parse_int(value, 1, 4194304, &n) == -1) {
			snprintf(why, whylen, "'%s' is not a number of tasks "
			    "from 1 to 4194304", value);
			return -1;
		}
		l->tasks_max = n;
		break;
	case LIMIT_CPU:
		if (limits_parse_cpu(value, &pct) == -1) {
			snprintf(why, whylen, "'%s' is not a share of CPU "
			    "(like 50%% of one, or 2 for two CPUs)", value);
			return -1;
		}
		l->cpu_pct = pct;
		break;
	case LIMIT_IO:
		if (util_parse_int(value, 1, 10000, &n) == -1) {
			snprintf(why, whylen, "'%s' is not a weight from 1 to "
			    "10000 (100 is the default)", value);
			return -1;
		}
		l->io_weight = (int)n;
		break;
	case LIMIT_LEFTOVERS:
		if (strcmp(value, "kill") == 0)
			l->leftovers_wait = 0;
		else if (strcmp(value, "wait") == 0)
			l->leftovers_wait = 1;
		else {
			snprintf(why, whylen, "'%s' is not kill or wait",
			    value);
			return -1;
		}
		break;
	case LIMIT_COUNT:
		break;
	}
	l->set |= 1U << kind;
	free(l->at[kind]);
	xasprintf(&l->at[kind], "%s:%d", file, line);
	return 0;
}

/* Take every limit l does not set from the defaults d. */
void
limits_inherit(struct job_limits *l, const struct job_limits *d)
{
	enum limit_kind	 kind;

	for (kind = 0; kind < LIMIT_COUNT; kind++) {
		if ((l->set & (1U << kind)) || !(d->set & (1U << kind)))
			continue;
		switch (kind) {
		case LIMIT_MEMORY:
			l->memory_max = d->memory_max;
			break;
		case LIMIT_SWAP:
			l->swap_max = d->swap_max;
			break;
		case LIMIT_TASKS:
			l->tasks_max = d->tasks_max;
			break;
		case LIMIT_CPU:
			l->cpu_pct = d->cpu_pct;
			break;
		case LIMIT_IO:
			l->io_weight = d->io_weight;
			break;
		case LIMIT_LEFTOVERS:
			l->leftovers_wait = d->leftovers_wait;
			break;
		case LIMIT_COUNT:
			break;
		}
		l->set |= 1U << kind;
		l->at[kind] = xstrdup(d->at[kind]);
	}
}

/* Free what limits_set and limits_inherit kept. */
void
limits_free(struct job_limits *l)
{
	enum limit_kind	 kind;

	for (kind = 0; kind < LIMIT_COUNT; kind++) {
		free(l->at[kind]);
		l->at[kind] = NULL;
	}
}
