/*
 * test_flow.c: flow control's pure parts: the rate parser, the key
 * template parser and its expansion, and the flow word a fetch carries
 * for a handler.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../agent/dispatchd.h"
#include "tap.h"

/* The key of event with data (JSON text) by template, or "ERR: why". */
static char *
key_of(const char *tmpl, const char *event, const char *data)
{
	static char	 buf[1024];
	struct flow_key	*k;
	json_t		*d = json_loads(data, JSON_DECODE_ANY, NULL);
	char		 err[512], *out;

	if ((k = flow_key_parse(tmpl, err, sizeof err)) == NULL)
		snprintf(buf, sizeof buf, "PARSE: %s", err);
	else if (flow_key_expand(k, event, d, &out, err, sizeof err) == -1)
		snprintf(buf, sizeof buf, "ERR: %s", err);
	else {
		snprintf(buf, sizeof buf, "%s", out);
		free(out);
	}
	flow_key_free(k);
	json_decref(d);
	return buf;
}

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

	ok(strcmp(key_of("${data.host}", "e", "{\"host\":\"web1\"}"),
	    "web1") == 0, "${data.host}");
	ok(strcmp(key_of("${event}/${data.o.id}", "order.paid",
	    "{\"o\":{\"id\":42}}"), "order.paid/42") == 0,
	    "${event}, a nested path, a number");
	ok(strcmp(key_of("host-${data.host:-none}!", "e", "{}"),
	    "host-none!") == 0, "a default and literals");
	ok(strcmp(key_of("${data.h:-none}", "e", "{\"h\":null}"), "none") ==
	    0, "null takes the default");
	ok(strcmp(key_of("${data.ok}", "e", "{\"ok\":true}"), "true") == 0,
	    "a boolean");
	ok(strcmp(key_of("${data.d:-}", "e", "{}"), "") == 0,
	    "an empty default");
	ok(strcmp(key_of("plain", "e", "{}"), "plain") == 0, "literal only");
	ok(strcmp(key_of("$x{y}", "e", "{}"), "$x{y}") == 0,
	    "a $ not before { is text");
	ok(strncmp(key_of("${data.host}", "e", "{}"), "ERR: the key "
	    "${data.host} is missing", 32) == 0, "missing: names the field");
	ok(strncmp(key_of("${data.host}", "e", "[1]"), "ERR: ", 5) == 0,
	    "data not an object: missing");
	ok(strstr(key_of("${data.a}", "e", "{\"a\":{}}"), "not a string") !=
	    NULL, "an object is refused");
	ok(strstr(key_of("${data.host", "e", "{}"), "without its }") != NULL,
	    "an unclosed ${ is refused");
	ok(strstr(key_of("${host}", "e", "{}"), "is not ${event} or "
	    "${data.NAME}") != NULL, "an unknown name is refused");
	ok(strstr(key_of("${data.}", "e", "{}"), "PARSE") != NULL &&
	    strstr(key_of("${data.a..b}", "e", "{}"), "PARSE") != NULL &&
	    strstr(key_of("${data.a b}", "e", "{}"), "PARSE") != NULL,
	    "bad paths are refused");
	ok(strstr(key_of("", "e", "{}"), "empty") != NULL, "empty refused");

	ok(word_is(0, 0, 0, 0, "-"), "no limits: -");
	ok(word_is(3, 0, 0, 0, "m3"), "max_running alone");
	ok(word_is(0, 20, 1000, 1, "r20/1000/1"), "rate alone");
	ok(word_is(3, 100, 60000, 20, "m3,r100/60000/20"), "both, no blanks");
	return done();
}
