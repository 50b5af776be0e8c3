/*
 * ctl_print.c: how dispatchctl shows a reply to people: table cells,
 * times, and one results entry per line.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "dispatchd.h"

/* A JSON value as short text for a table cell. */
const char *
ctl_cell(json_t *o, const char *key, char *buf, size_t len)
{
	json_t	*v = json_object_get(o, key);

	if (v == NULL || json_is_null(v))
		snprintf(buf, len, "-");
	else if (json_is_string(v))
		snprintf(buf, len, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(buf, len, "%.4g", json_real_value(v));
	else if (json_is_boolean(v))
		snprintf(buf, len, "%s", json_is_true(v) ? "yes" : "no");
	else
		snprintf(buf, len, "...");
	return buf;
}

/* A Unix time in ms as local time, for people. */
const char *
ctl_when(json_t *o, const char *key, char *buf, size_t len)
{
	json_t		*v = json_object_get(o, key);
	time_t		 t;
	struct tm	 tm;

	long long	 ms;

	/* job fields are numbers; results stream fields are strings */
	ms = json_is_integer(v) ? (long long)json_integer_value(v) :
	    json_is_string(v) ? strtoll(json_string_value(v), NULL, 10) : 0;
	if (ms <= 0) {
		snprintf(buf, len, "%-19s", "-");
		return buf;
	}
	t = (time_t)(ms / 1000);
	localtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
	return buf;
}

/* A results entry's number field, or -1 when it is not there. */
static long long
ctl_field_number(json_t *r, const char *key)
{
	json_t	*v = json_object_get(r, key);

	if (json_is_integer(v))
		return (long long)json_integer_value(v);
	if (json_is_string(v) && json_string_length(v) > 0)
		return strtoll(json_string_value(v), NULL, 10);
	return -1;
}

/*
 * What the kernel counted for a run, as " cpu 0.52+0.01 s, peak 104.2
 * MiB, 1 OOM kill, 12 tasks, left children"; nothing for what it did not.
 */
static void
ctl_print_usage(json_t *r)
{
	long long	user, sys, peak, ooms, tasks;

	user = ctl_field_number(r, "cpu_user_us");
	sys = ctl_field_number(r, "cpu_system_us");
	peak = ctl_field_number(r, "memory_peak");
	ooms = ctl_field_number(r, "oom_kills");
	tasks = ctl_field_number(r, "tasks_peak");
	if (user >= 0 && sys >= 0)
		printf(", cpu %.2f+%.2f s", (double)user / 1e6,
		    (double)sys / 1e6);
	if (peak >= 0)
		printf(", peak %.1f MiB", (double)peak / 1048576.0);
	if (ooms > 0)
		printf(", %lld OOM kill%s", ooms, ooms == 1 ? "" : "s");
	if (tasks >= 0)
		printf(", %lld task%s", tasks, tasks == 1 ? "" : "s");
	if (ctl_field_number(r, "leftovers") == 1)
		printf(", children outlived it");
}

/* Print one results entry for people. */
void
ctl_print_result(json_t *r)
{
	char	 b[10][96];
	json_t	*v;

	printf("%s  %-8s %-16s %-20s job %s attempt %s",
	    ctl_when(r, "started_ms", b[0], sizeof b[0]),
	    ctl_cell(r, "outcome", b[1], sizeof b[1]),
	    ctl_cell(r, "handler", b[2], sizeof b[2]),
	    ctl_cell(r, "event", b[3], sizeof b[3]),
	    ctl_cell(r, "job", b[4], sizeof b[4]),
	    ctl_cell(r, "attempt", b[5], sizeof b[5]));
	if ((v = json_object_get(r, "exit")) && json_string_length(v))
		printf(" exit %s", json_string_value(v));
	if ((v = json_object_get(r, "signal")) && json_string_length(v))
		printf(" signal %s", json_string_value(v));
	if ((v = json_object_get(r, "timed_out")) &&
	    strcmp(json_string_value(v) ? json_string_value(v) : "", "1") == 0)
		printf(" timed out");
	if ((v = json_object_get(r, "duration_ms")) && json_string_length(v))
		printf(" %s ms", json_string_value(v));
	if ((v = json_object_get(r, "agent")) && json_string_length(v))
		printf(" on %s", json_string_value(v));
	ctl_print_usage(r);
	if ((v = json_object_get(r, "error")) && json_string_length(v))
		printf(" (%s)", json_string_value(v));
	printf("\n");
}

