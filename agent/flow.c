/*
 * flow.c: the flow-control settings of a handler without I/O: the rate
 * ("10/s", "100/m burst 20") and the word each fetch carries for the
 * handler, which the fetch loop (scripts_flow.c) reads.  Pure, so it is
 * unit-tested.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatchd.h"

#define RATE_MAX	1000000L	/* starts per period, and burst */

/* A whole number from 1 to RATE_MAX at *s, moving past it; -1 if none. */
static long
flow_number(const char **s)
{
	char	*end;
	long	 n;

	if (!isdigit((unsigned char)**s))
		return -1;
	errno = 0;
	n = strtol(*s, &end, 10);
	if (errno != 0 || n < 1 || n > RATE_MAX)
		return -1;
	*s = end;
	return n;
}

/* Skip blanks at *s. */
static void
flow_blanks(const char **s)
{
	while (**s == ' ' || **s == '\t')
		(*s)++;
}

/*
 * Parse a rate, "N/s", "N/m" or "N/h", optionally followed by "burst B"
 * (default 1: starts evenly spread), into r; -1 with err if it is not one.
 */
int
flow_parse_rate(const char *text, struct flow_rate *r, char *err,
    size_t errlen)
{
	const char	*s = text;
	long		 n, burst = 1;
	int64_t		 period;

	flow_blanks(&s);
	if ((n = flow_number(&s)) == -1 || *s++ != '/')
		goto bad;
	switch (*s++) {
	case 's':
		period = 1000;
		break;
	case 'm':
		period = 60 * 1000;
		break;
	case 'h':
		period = 3600 * 1000;
		break;
	default:
		goto bad;
	}
	flow_blanks(&s);
	if (strncmp(s, "burst", 5) == 0) {
		s += 5;
		flow_blanks(&s);
		if ((burst = flow_number(&s)) == -1)
			goto bad;
		flow_blanks(&s);
	}
	if (*s != '\0')
		goto bad;
	r->count = n;
	r->period_ms = period;
	r->burst = burst;
	return 0;
bad:
	snprintf(err, errlen, "'%s' is not a rate like 10/s, 100/m or "
	    "5/h, with an optional burst N (numbers from 1 to %ld)", text,
	    RATE_MAX);
	return -1;
}

/*
 * The word a fetch carries for a handler: "-" without limits, else its
 * limits joined by commas: "m<N>" for max_running, "r<count>/<period
 * ms>/<burst>" for the rate.  No blanks: the finish's rooms are words.
 */
char *
flow_word(int max_running, const struct flow_rate *rate)
{
	char	 m[32] = "", r[80] = "", *w;

	if (max_running > 0)
		snprintf(m, sizeof m, "m%d", max_running);
	if (rate->count > 0)
		snprintf(r, sizeof r, "r%ld/%lld/%ld", rate->count,
		    (long long)rate->period_ms, rate->burst);
	if (m[0] == '\0' && r[0] == '\0')
		return xstrdup("-");
	xasprintf(&w, "%s%s%s", m, m[0] && r[0] ? "," : "", r);
	return w;
}
