/*
 * test_flow.c: flow control's pure parts: the rate parser and the flow
 * word a fetch carries for a handler.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../agent/dispatchd.h"
#include "tap.h"

/* Does text parse as count per period_ms with burst? */
static int
rate_is(const char *text, long count, int64_t period_ms, long burst)
{
	struct flow_rate	r = { 0, 0, 0 };
	char			err[256];

	return flow_parse_rate(text, &r, err, sizeof err) == 0 &&
	    r.count == count && r.period_ms == period_ms && r.burst == burst;
}

/* Is text refused, with a message that quotes it? */
static int
rate_bad(const char *text)
{
	struct flow_rate	r = { 0, 0, 0 };
	char			err[256] = "";

	return flow_parse_rate(text, &r, err, sizeof err) == -1 &&
	    strstr(err, text) != NULL && strstr(err, "10/s") != NULL;
}

/* Is the flow word for max_running and rate want? */
static int
word_is(int max_running, long count, int64_t period_ms, long burst,
    const char *want)
{
	struct flow_rate	r = { count, period_ms, burst };
	char			*w = flow_word(max_running, &r);
	int			 same = strcmp(w, want) == 0;

	if (!same)
		printf("# got '%s'\n", w);
	free(w);
	return same;
}

int
main(void)
{
	ok(rate_is("10/s", 10, 1000, 1), "10/s, burst 1 by default");
	ok(rate_is("100/m burst 20", 100, 60000, 20), "100/m burst 20");
	ok(rate_is("5/h", 5, 3600000, 1), "5/h");
	ok(rate_is("  7/s  burst\t3 ", 7, 1000, 3), "blanks around the parts");
	ok(rate_is("1000000/s burst 1000000", 1000000, 1000, 1000000),
	    "the largest numbers");
	ok(rate_bad("0/s"), "0/s refused");
	ok(rate_bad("10"), "no period refused");
	ok(rate_bad("10/d"), "an unknown period refused");
	ok(rate_bad("10/sec"), "a long period name refused");
	ok(rate_bad("-1/s"), "a negative count refused");
	ok(rate_bad("1.5/s"), "a fraction refused");
	ok(rate_bad("10/s burst"), "burst without a number refused");
	ok(rate_bad("10/s burst 0"), "burst 0 refused");
	ok(rate_bad("10/s burst 5 more"), "trailing words refused");
	ok(rate_bad("1000001/s"), "a count too large refused");
	ok(rate_bad("99999999999999999999/s"), "an overflowing count refused");
	ok(rate_bad(""), "empty refused");

	ok(word_is(0, 0, 0, 0, "-"), "no limits: -");
	ok(word_is(3, 0, 0, 0, "m3"), "max_running alone");
	ok(word_is(0, 20, 1000, 1, "r20/1000/1"), "rate alone");
	ok(word_is(3, 100, 60000, 20, "m3,r100/60000/20"), "both, no blanks");
	return done();
}
