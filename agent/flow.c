/*
 * flow.c: the flow-control settings of a handler without I/O: the rate
 * ("10/s", "100/m burst 20"), the word each fetch carries for the
 * handler, which the fetch loop (scripts_flow.c) reads, and the key
 * template ("${data.host}") with its expansion for an event.  Pure, so
 * it is unit-tested.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

/* One piece of a key template. */
struct flow_part {
	enum { PART_TEXT, PART_EVENT, PART_DATA } kind;
	char		*text;		/* the literal, or the path after data. */
	char		*def;		/* ${...:-def}, or NULL */
};

/* A parsed key template. */
struct flow_key {
	char			*text;	/* as written */
	struct flow_part	*parts;
	size_t			 n;
};

/* Free a key template; NULL is fine. */
void
flow_key_free(struct flow_key *k)
{
	size_t	i;

	if (k == NULL)
		return;
	for (i = 0; i < k->n; i++) {
		free(k->parts[i].text);
		free(k->parts[i].def);
	}
	free(k->parts);
	free(k->text);
	free(k);
}

/* The template as written. */
const char *
flow_key_text(const struct flow_key *k)
{
	return k->text;
}

/* Append a part to k. */
static void
flow_key_add(struct flow_key *k, int kind, const char *s, size_t len,
    const char *def, size_t deflen)
{
	struct flow_part	*p;

	k->parts = xreallocarray(k->parts, k->n + 1, sizeof *k->parts);
	p = &k->parts[k->n++];
	p->kind = kind;
	p->text = xstrndup(s, len);
	p->def = def != NULL ? xstrndup(def, deflen) : NULL;
}

/* Is s (len bytes) a path of names, "a" or "a.b_c.d-1"? */
static int
flow_valid_path(const char *s, size_t len)
{
	size_t	i;
	int	seg = 0;

	for (i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (seg == 0)
				return 0;
			seg = 0;
		} else if (isalnum((unsigned char)s[i]) || s[i] == '_' ||
		    s[i] == '-')
			seg++;
		else
			return 0;
	}
	return seg > 0;
}

/*
 * Parse a key template: literal text, ${event}, ${data.PATH} (PATH names
 * separated by dots), each ${...} with an optional default, ${data.x:-d}.
 * NULL with err if it is not one.
 */
struct flow_key *
flow_key_parse(const char *text, char *err, size_t errlen)
{
	struct flow_key	*k;
	const char	*s = text, *open, *close, *name, *def;
	size_t		 nlen;

	k = xcalloc(1, sizeof *k);
	k->text = xstrdup(text);
	if (*text == '\0') {
		snprintf(err, errlen, "an empty template");
		goto bad;
	}
	while (*s != '\0') {
		if ((open = strstr(s, "${")) == NULL) {
			flow_key_add(k, PART_TEXT, s, strlen(s), NULL, 0);
			break;
		}
		if (open > s)
			flow_key_add(k, PART_TEXT, s, (size_t)(open - s), NULL,
			    0);
		name = open + 2;
		if ((close = strchr(name, '}')) == NULL) {
			snprintf(err, errlen, "'%s': ${ without its }", text);
			goto bad;
		}
		def = strstr(name, ":-");
		if (def != NULL && def > close)
			def = NULL;
		nlen = (size_t)((def != NULL ? def : close) - name);
		if (nlen == 5 && strncmp(name, "event", 5) == 0)
			flow_key_add(k, PART_EVENT, "", 0, def ? def + 2 : NULL,
			    def ? (size_t)(close - def - 2) : 0);
		else if (nlen > 5 && strncmp(name, "data.", 5) == 0 &&
		    flow_valid_path(name + 5, nlen - 5))
			flow_key_add(k, PART_DATA, name + 5, nlen - 5,
			    def ? def + 2 : NULL,
			    def ? (size_t)(close - def - 2) : 0);
		else {
			snprintf(err, errlen, "'%s': ${%.*s} is not ${event} "
			    "or ${data.NAME}", text, (int)nlen, name);
			goto bad;
		}
		s = close + 1;
	}
	return k;
bad:
	flow_key_free(k);
	return NULL;
}

/* The value at path (dotted, len bytes) in data, or NULL. */
static const json_t *
flow_lookup(const json_t *data, const char *path, size_t len)
{
	const char	*dot;
	char		*name;
	size_t		 n;

	while (data != NULL && json_is_object(data)) {
		dot = memchr(path, '.', len);
		n = dot ? (size_t)(dot - path) : len;
		name = xstrndup(path, n);
		data = json_object_get(data, name);
		free(name);
		if (dot == NULL)
			return data;
		len -= n + 1;
		path = dot + 1;
	}
	return NULL;
}

/* Append len bytes of s to the string *out of *olen bytes. */
static void
flow_append(char **out, size_t *olen, const char *s, size_t len)
{
	*out = xreallocarray(*out, *olen + len + 1, 1);
	memcpy(*out + *olen, s, len);
	*olen += len;
	(*out)[*olen] = '\0';
}

/*
 * The key of an event (its name and parsed data) by template k, in *out
 * (freed by the caller); -1 with err naming the field that is missing or
 * not a string, number or boolean.
 */
int
flow_key_expand(const struct flow_key *k, const char *event,
    const json_t *data, char **out, char *err, size_t errlen)
{
	const struct flow_part	*p;
	const json_t		*v;
	char			 num[64];
	size_t			 i, olen = 0;

	*out = xstrdup("");
	for (i = 0; i < k->n; i++) {
		p = &k->parts[i];
		if (p->kind == PART_TEXT) {
			flow_append(out, &olen, p->text, strlen(p->text));
			continue;
		}
		if (p->kind == PART_EVENT) {
			flow_append(out, &olen, event, strlen(event));
			continue;
		}
		v = flow_lookup(data, p->text, strlen(p->text));
		if (json_is_string(v))
			flow_append(out, &olen, json_string_value(v),
			    json_string_length(v));
		else if (json_is_integer(v) || json_is_real(v) ||
		    json_is_boolean(v)) {
			if (json_is_integer(v))
				snprintf(num, sizeof num, "%lld",
				    (long long)json_integer_value(v));
			else if (json_is_real(v))
				snprintf(num, sizeof num, "%.17g",
				    json_real_value(v));
			else
				snprintf(num, sizeof num, "%s",
				    json_is_true(v) ? "true" : "false");
			flow_append(out, &olen, num, strlen(num));
		} else if ((v == NULL || json_is_null(v)) && p->def != NULL)
			flow_append(out, &olen, p->def, strlen(p->def));
		else {
			snprintf(err, errlen, "the key ${data.%s} %s", p->text,
			    v == NULL || json_is_null(v) ? "is missing from the "
			    "event's data (a default is written ${data.x:-none})"
			    : "is not a string, number or boolean");
			free(*out);
			*out = NULL;
			return -1;
		}
	}
	if (olen > FLOW_KEY_MAX) {
		snprintf(err, errlen, "the key is longer than %d bytes",
		    FLOW_KEY_MAX);
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

/* The words of on_busy, by enum flow_busy. */
const char *const flow_busy_words[] = { "queue", "coalesce", "replace",
    "reject", NULL };

/*
 * Every flow setting of a handler in one line (key, per_key, on_busy,
 * and the fetch's word), so that two agents' settings compare as text.
 */
char *
flow_signature(const struct flow_key *key, int per_key,
    enum flow_busy on_busy, const char *word)
{
	char	*s;

	if (key == NULL)
		xasprintf(&s, "%s", word);
	else
		xasprintf(&s, "key=%s per_key=%d on_busy=%s %s", key->text,
		    per_key, flow_busy_words[on_busy], word);
	return s;
}
