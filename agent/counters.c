/*
 * counters.c: what this agent has counted since it started: the counters
 * of events, requests, reconnects and recoveries that every module bumps,
 * and per handler the finished attempts by fate with a duration
 * histogram.  The numbers live here, low in the layers, so counting takes
 * no module into another's; metrics.c only renders them.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "dispatchd.h"

/* The upper bounds of the duration histogram, in seconds. */
const double	counters_bucket_s[COUNTERS_BUCKETS] = {
	0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800
};

struct counters			 counters;
static struct handler_stats	*stats;
static size_t			 n_stats;

/* The stats of a handler, created on first use. */
static struct handler_stats *
counters_for(const char *name)
{
	size_t	i;

	for (i = 0; i < n_stats; i++)
		if (strcmp(stats[i].name, name) == 0)
			return &stats[i];
	stats = xreallocarray(stats, n_stats + 1, sizeof *stats);
	memset(&stats[n_stats], 0, sizeof stats[0]);
	stats[n_stats].name = xstrdup(name);
	return &stats[n_stats++];
}

/* Count one finished attempt of a handler, with the run's duration. */
void
counters_job(const char *handler, enum job_fate fate, int64_t duration_ms)
{
	struct handler_stats	*s = counters_for(handler);
	double			 d = (double)duration_ms / 1000.0;
	size_t			 i;

	s->fate[fate]++;
	for (i = 0; i < COUNTERS_BUCKETS; i++)
		if (d <= counters_bucket_s[i]) {
			s->bucket[i]++;
			break;
		}
	s->count++;
	s->sum_s += d;
	counters.jobs_finished++;
}

/* The handlers counted so far, in the order first seen. */
const struct handler_stats *
counters_handlers(size_t *n)
{
	*n = n_stats;
	return stats;
}
