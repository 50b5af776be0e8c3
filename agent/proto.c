/*
 * proto.c: the socket protocol without I/O.  One line of JSON in, a parsed
 * request out; error replies out as lines.  Pure, so it is unit-tested and
 * fuzzable; the same envelope parser serves pub/sub messages.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dispatchd.h"

#define ID_MAX		200
#define DELAY_MAX_S	(366.0 * 86400)
#define DEPTH_MAX	64	/* nesting of arrays and objects */

/* What each op takes: allowed argument names, and whether it is admin. */
struct op {
	const char	*name;
	enum request_op	 op;
	int		 admin;
	const char	*args;		/* space-separated allowed fields */
};

static const struct op ops[] = {
	{ "emit",	OP_EMIT,	0, NULL },
	{ "ping",	OP_PING,	0, "" },
	{ "status",	OP_STATUS,	0, "" },
	{ "jobs",	OP_JOBS,	0, "state handler limit" },
	{ "job",	OP_JOB,		0, "id" },
	{ "results",	OP_RESULTS,	0, "handler event limit after" },
	{ "handlers",	OP_HANDLERS,	0, "" },
	{ "metrics",	OP_METRICS,	0, "" },
	{ "cancel",	OP_CANCEL,	1, "id" },
	{ "retry",	OP_RETRY,	1, "id dead handler limit" },
	{ "purge",	OP_PURGE,	1, "dead handler older_than limit" },
	{ "run",	OP_RUN,		1, "handler event data" },
	{ NULL,		0,		0, NULL }
};

static int	 proto_fill_event(json_t *, struct event *, char *, size_t);

/* Fill ev from a parsed envelope object; -1 with err on a bad field. */
static int
proto_fill_event(json_t *obj, struct event *ev, char *err, size_t errlen)
{
	const char	*key, *name, *id;
	json_t		*v, *data;
	double		 d;

	memset(ev, 0, sizeof *ev);
	json_object_foreach(obj, key, v) {
		if (strcmp(key, "op") && strcmp(key, "event") &&
		    strcmp(key, "data") && strcmp(key, "id") &&
		    strcmp(key, "delay") && strcmp(key, "at")) {
			snprintf(err, errlen, "unknown field '%.64s' (an event "
			    "has event, data, id, delay or at)", key);
			return -1;
		}
	}
	if ((name = json_string_value(json_object_get(obj, "event"))) == NULL) {
		snprintf(err, errlen, "'event' must be a string");
		return -1;
	}
	if (!util_valid_event_name(name)) {
		snprintf(err, errlen, "event name must be 1-%d characters of "
		    "A-Z a-z 0-9 . _ : -", EVENT_NAME_MAX);
		return -1;
	}
	if ((v = json_object_get(obj, "id")) != NULL) {
		id = json_string_value(v);
		if (id == NULL || json_string_length(v) == 0 ||
		    json_string_length(v) > ID_MAX ||
		    strpbrk(id, " \t\r\n") != NULL) {
			snprintf(err, errlen, "'id' must be a string of 1-%d "
			    "characters without blanks", ID_MAX);
			return -1;
		}
		ev->id = xstrdup(id);
	}
	if (json_object_get(obj, "delay") && json_object_get(obj, "at")) {
		snprintf(err, errlen, "give 'delay' or 'at', not both");
		goto fail;
	}
	if ((v = json_object_get(obj, "delay")) != NULL) {
		d = json_number_value(v);
		if (!json_is_number(v) || d < 0 || d > DELAY_MAX_S) {
			snprintf(err, errlen, "'delay' must be seconds from 0 "
			    "to one year");
			goto fail;
		}
		ev->delay_ms = (int64_t)llround(d * 1000);
	}
	if ((v = json_object_get(obj, "at")) != NULL) {
		d = json_number_value(v);
		if (!json_is_number(v) || d < 0 || d > 1e11) {
			snprintf(err, errlen, "'at' must be a Unix time in "
			    "seconds");
			goto fail;
		}
		ev->at_ms = (int64_t)llround(d * 1000);
	}
	data = json_object_get(obj, "data");
	if (data == NULL)
		ev->data = xstrdup("{}");
	else if ((ev->data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY))
	    == NULL)
		fatalx("proto: json_dumps failed");
	ev->name = xstrdup(name);
	return 0;
fail:
	proto_event_clear(ev);
	return -1;
}

/* Is v nested deeper than max levels? */
static int
proto_too_deep(json_t *v, int max)
{
	const char	*key;
	json_t		*e;
	size_t		 i;

	if (max < 0)
		return 1;
	if (json_is_object(v)) {
		json_object_foreach(v, key, e)
			if (proto_too_deep(e, max - 1))
				return 1;
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, e)
			if (proto_too_deep(e, max - 1))
				return 1;
	}
	return 0;
}

/* Copy an optional string argument; -1 if present but not a string. */
static int
proto_str(json_t *obj, const char *key, char **out, char *err, size_t errlen)
{
	json_t	*v = json_object_get(obj, key);

	if (v == NULL)
		return 0;
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    json_string_length(v) > 256) {
		snprintf(err, errlen, "'%s' must be a string of 1-256 "
		    "characters", key);
		return -1;
	}
	*out = xstrdup(json_string_value(v));
	return 0;
}

/* Is word one of the space-separated words of list? */
static int
proto_has_word(const char *list, const char *word)
{
	size_t	n = strlen(word);

	while (*list != '\0') {
		if (strncmp(list, word, n) == 0 &&
		    (list[n] == ' ' || list[n] == '\0'))
			return 1;
		list += strcspn(list, " ");
		list += strspn(list, " ");
	}
	return 0;
}

/* Check and copy the arguments of an op other than emit. */
static int
proto_fill_args(json_t *obj, const struct op *o, struct request *req,
    char *err, size_t errlen)
{
	const char	*key;
	json_t		*v;
	double		 d;

	json_object_foreach(obj, key, v) {
		if (strcmp(key, "op") != 0 && !proto_has_word(o->args, key)) {
			snprintf(err, errlen, "%s: unknown field '%.64s'%s%s%s",
			    o->name, key, o->args[0] ? " (it takes " : "",
			    o->args, o->args[0] ? ")" : "");
			return -1;
		}
	}
	req->limit = 20;
	if (proto_str(obj, "id", &req->id, err, errlen) == -1 ||
	    proto_str(obj, "handler", &req->handler, err, errlen) == -1 ||
	    proto_str(obj, "state", &req->state, err, errlen) == -1 ||
	    proto_str(obj, "after", &req->after, err, errlen) == -1)
		return -1;
	if (o->op == OP_RESULTS &&
	    proto_str(obj, "event", &req->event, err, errlen) == -1)
		return -1;
	if ((v = json_object_get(obj, "limit")) != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 10000) {
			snprintf(err, errlen, "'limit' must be 1-10000");
			return -1;
		}
		req->limit = (long)json_integer_value(v);
		req->limit_given = 1;
	}
	if ((v = json_object_get(obj, "dead")) != NULL) {
		if (!json_is_boolean(v)) {
			snprintf(err, errlen, "'dead' must be true or false");
			return -1;
		}
		req->dead = json_is_true(v);
	}
	if ((v = json_object_get(obj, "older_than")) != NULL) {
		d = json_number_value(v);
		if (!json_is_number(v) || d < 0) {
			snprintf(err, errlen, "'older_than' must be seconds");
			return -1;
		}
		req->older_ms = (int64_t)llround(d * 1000);
	}
	if (o->op == OP_JOBS && req->state != NULL &&
	    strcmp(req->state, "ready") && strcmp(req->state, "delayed") &&
	    strcmp(req->state, "running") && strcmp(req->state, "dead")) {
		snprintf(err, errlen, "'state' is ready, delayed, running or "
		    "dead");
		return -1;
	}
	if (req->after != NULL && (strspn(req->after, "0123456789") == 0 ||
	    strspn(req->after, "0123456789-") != strlen(req->after) ||
	    strchr(strchr(req->after, '-') ? strchr(req->after, '-') + 1 :
	    "", '-') != NULL)) {
		snprintf(err, errlen, "'after' must be a stream id like "
		    "1700000000000-0");
		return -1;
	}
	if ((o->op == OP_JOB || o->op == OP_CANCEL) && req->id == NULL) {
		snprintf(err, errlen, "%s needs 'id'", o->name);
		return -1;
	}
	if (o->op == OP_RETRY && (req->id == NULL) == !req->dead) {
		snprintf(err, errlen, "retry needs 'id' or \"dead\":true");
		return -1;
	}
	if (o->op == OP_PURGE && !req->dead) {
		snprintf(err, errlen, "purge needs \"dead\":true");
		return -1;
	}
	if (o->op == OP_RUN) {
		if (req->handler == NULL) {
			snprintf(err, errlen, "run needs 'handler'");
			return -1;
		}
		if (proto_str(obj, "event", &req->ev.name, err, errlen) == -1)
			return -1;
		if (req->ev.name == NULL)
			req->ev.name = xstrdup("run");
		if (!util_valid_event_name(req->ev.name)) {
			snprintf(err, errlen, "bad event name");
			return -1;
		}
		v = json_object_get(obj, "data");
		req->ev.data = v ? json_dumps(v, JSON_COMPACT |
		    JSON_ENCODE_ANY) : xstrdup("{}");
	}
	return 0;
}

/* Free what a request holds. */
void
proto_request_clear(struct request *req)
{
	proto_event_clear(&req->ev);
	free(req->id);
	free(req->handler);
	free(req->state);
	free(req->event);
	free(req->after);
	memset(req, 0, sizeof *req);
}

/* Parse a JSON object from buf; NULL with err set when it is not one. */
static json_t *
proto_load(const char *buf, size_t len, char *err, size_t errlen)
{
	json_t		*obj;
	json_error_t	 jerr;

	obj = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (obj == NULL) {
		snprintf(err, errlen, "invalid JSON at column %d: %s",
		    jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(obj)) {
		snprintf(err, errlen, "a request must be a JSON object");
		json_decref(obj);
		return NULL;
	}
	if (proto_too_deep(obj, DEPTH_MAX)) {
		snprintf(err, errlen, "JSON nested deeper than %d levels",
		    DEPTH_MAX);
		json_decref(obj);
		return NULL;
	}
	return obj;
}

/*
 * Parse one request line (without its newline).  Returns 0, or -1 for an
 * invalid request or -2 for an unknown op, with err holding a message for
 * the client.
 */
int
proto_parse(const char *line, size_t len, struct request *req, char *err,
    size_t errlen)
{
	const struct op	*o;
	json_t		*obj, *opv;
	const char	*op = "emit";
	int		 rc = -1;

	memset(req, 0, sizeof *req);
	if ((obj = proto_load(line, len, err, errlen)) == NULL)
		return -1;
	if ((opv = json_object_get(obj, "op")) != NULL &&
	    (op = json_string_value(opv)) == NULL) {
		snprintf(err, errlen, "'op' must be a string");
		goto out;
	}
	for (o = ops; o->name != NULL; o++)
		if (strcmp(op, o->name) == 0)
			break;
	if (o->name == NULL) {
		snprintf(err, errlen, "unknown op '%.64s'", op);
		rc = -2;
		goto out;
	}
	req->op = o->op;
	req->admin = o->admin;
	if (o->op == OP_EMIT)
		rc = proto_fill_event(obj, &req->ev, err, errlen);
	else if ((rc = proto_fill_args(obj, o, req, err, errlen)) == -1)
		proto_request_clear(req);
out:
	json_decref(obj);
	return rc;
}

/* Parse a bare event envelope (a pub/sub message). */
int
proto_parse_event(const char *buf, size_t len, struct event *ev, char *err,
    size_t errlen)
{
	json_t		*obj, *op;
	int		 rc;

	memset(ev, 0, sizeof *ev);
	if ((obj = proto_load(buf, len, err, errlen)) == NULL)
		return -1;
	op = json_object_get(obj, "op");
	if (op != NULL && (!json_is_string(op) ||
	    strcmp(json_string_value(op), "emit") != 0)) {
		snprintf(err, errlen, "only emit is accepted here");
		json_decref(obj);
		return -1;
	}
	rc = proto_fill_event(obj, ev, err, errlen);
	json_decref(obj);
	return rc;
}

/* Free what an event holds. */
void
proto_event_clear(struct event *ev)
{
	free(ev->name);
	free(ev->data);
	free(ev->id);
	memset(ev, 0, sizeof *ev);
}

/*
 * An error reply line, newline included, naming event_id when it is not
 * NULL (the id to retry with); *len gets its length.
 */
char *
proto_error_id(const char *code, const char *msg, const char *event_id,
    size_t *len)
{
	json_t	*o;
	char	*s, *line, *clean;
	size_t	 n;

	/* the message may quote the client's bytes: make them valid UTF-8 */
	clean = util_utf8_clean(msg, strlen(msg), &n);
	o = json_pack("{s:b, s:s, s:s}", "ok", 0, "code", code, "error", clean);
	free(clean);
	if (o != NULL && event_id != NULL)
		json_object_set_new(o, "event_id", json_string(event_id));
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("proto: cannot build a reply");
	json_decref(o);
	*len = (size_t)xasprintf(&line, "%s\n", s);
	free(s);
	return line;
}

/* An error reply line, newline included; *len gets its length. */
char *
proto_error(const char *code, const char *msg, size_t *len)
{
	return proto_error_id(code, msg, NULL, len);
}
