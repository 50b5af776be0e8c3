/*
 * proto.c: the socket protocol without I/O.  One line of JSON in, a parsed
 * request out; reply lines out.  Pure, so it is unit-tested and fuzzable;
 * the same envelope parser serves pub/sub messages.
 *
 * proto_ops is the one table of ops: what each takes on the wire, and its
 * dispatchctl command line (ctl_args.c).  The agent's handlers are indexed
 * by op in control.c and admin.c; dispatchctl's in dispatchctl.c.
 */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dispatchd.h"

#define ID_MAX		200
#define DELAY_MAX_S	(366.0 * 86400)
#define DEPTH_MAX	64	/* nesting of arrays and objects */

/* Every op and command, in the order dispatchctl --help lists them. */
const struct proto_op proto_ops[OP_COUNT] = {
	[OP_EMIT] = {
		.name = "emit", .flags = PROTO_ENVELOPE,
		.fields = "event data id delay at", .required = "event",
		.min_args = 1, .max_args = -1, .options = "data delay id",
		.synopsis = "EVENT [KEY=VALUE ...] [KEY:=JSON ...] "
		    "[--data JSON | --data -]\n[--id ID] [--delay "
		    "SECONDS|DURATION]",
		.help = "emit an event" },
	[OP_PING] = {
		.name = "ping", .fields = "", .required = "",
		.options = "", .synopsis = "",
		.help = "check that the agent answers" },
	[OP_STATUS] = {
		.name = "status", .fields = "", .required = "",
		.options = "", .synopsis = "",
		.help = "queues per handler, agents" },
	[OP_JOBS] = {
		.name = "jobs", .fields = "state handler limit", .required = "",
		.options = "state handler limit",
		.synopsis = "[--state ready|delayed|running|dead] "
		    "[--handler H]\n[--limit N]",
		.help = "jobs in one state" },
	[OP_JOB] = {
		.name = "job", .fields = "id", .required = "id",
		.min_args = 1, .max_args = 1, .options = "", .synopsis = "ID",
		.help = "a job's fields and results" },
	[OP_CANCEL] = {
		.name = "cancel", .flags = PROTO_ADMIN,
		.fields = "id", .required = "id",
		.min_args = 1, .max_args = 1, .options = "", .synopsis = "ID",
		.help = "delete a waiting or dead job, stop a running one" },
	[OP_RETRY] = {
		.name = "retry", .flags = PROTO_ADMIN,
		.fields = "id dead handler limit", .required = "id|dead",
		.max_args = 1, .options = "dead handler limit",
		.synopsis = "ID | --dead [--handler H] [--limit N]",
		.help = "queue again now" },
	[OP_PURGE] = {
		.name = "purge", .flags = PROTO_ADMIN,
		.fields = "dead handler older_than limit", .required = "dead",
		.options = "dead handler limit older-than",
		.synopsis = "--dead [--older-than D] [--handler H] [--limit N]",
		.help = "delete dead jobs" },
	[OP_RESULTS] = {
		.name = "results", .fields = "handler event limit after",
		.required = "", .options = "handler event limit follow",
		.synopsis = "[--handler H] [--event E] [-n N] [--follow]",
		.help = "the last runs" },
	[OP_HANDLERS] = {
		.name = "handlers", .fields = "", .required = "",
		.options = "", .synopsis = "",
		.help = "effective handler settings" },
	[OP_CHECK] = {
		.name = "check", .flags = PROTO_LOCAL,
		.fields = "", .required = "",
		.max_args = 1, .options = "", .synopsis = "[FILE]",
		.help = "check a configuration file" },
	[OP_RUN] = {
		.name = "run", .flags = PROTO_ADMIN | PROTO_EVENT,
		.fields = "handler event data", .required = "handler",
		.min_args = 1, .max_args = 1, .options = "data event",
		.synopsis = "HANDLER [--data JSON] [--event E]",
		.help = "run a handler once now" },
	[OP_METRICS] = {
		.name = "metrics", .fields = "", .required = "",
		.options = "", .synopsis = "",
		.help = "Prometheus text" },
	[OP_PAUSE] = {
		.name = "pause", .flags = PROTO_ADMIN,
		.fields = "handler for", .required = "handler",
		.min_args = 1, .max_args = 1, .options = "for",
		.synopsis = "HANDLER [--for DURATION]",
		.help = "start none of a handler's jobs, on any agent" },
	[OP_RESUME] = {
		.name = "resume", .flags = PROTO_ADMIN,
		.fields = "handler", .required = "handler",
		.min_args = 1, .max_args = 1, .options = "",
		.synopsis = "HANDLER",
		.help = "end a pause" },
};

/* How a field of the ops other than emit is checked and kept. */
enum proto_type {
	FIELD_STRING,	/* 1-256 characters, a char * */
	FIELD_LIMIT,	/* 1-10000, a long; sets limit_given */
	FIELD_FLAG,	/* true or false, an int; required means true */
	FIELD_SECONDS	/* 0 or more, an int64_t of ms */
};

static int	 proto_check_state(const struct request *, char *, size_t);
static int	 proto_check_after(const struct request *, char *, size_t);

/*
 * The fields of the ops other than emit, in the order they are checked:
 * first every field's type, then the checks of the values.  A field an
 * op takes must be here; but in a PROTO_EVENT op, event and data are the
 * event's (proto_fill_ev).
 */
static const struct proto_field {
	const char	*name;
	enum proto_type	 type;
	size_t		 off;		/* where it goes in struct request */
	int		(*check)(const struct request *, char *, size_t);
					/* a string's value, or NULL */
} proto_fields[] = {
	{ "id",		FIELD_STRING,	offsetof(struct request, id), NULL },
	{ "handler",	FIELD_STRING,	offsetof(struct request, handler),
	    NULL },
	{ "state",	FIELD_STRING,	offsetof(struct request, state),
	    proto_check_state },
	{ "after",	FIELD_STRING,	offsetof(struct request, after),
	    proto_check_after },
	{ "event",	FIELD_STRING,	offsetof(struct request, event), NULL },
	{ "limit",	FIELD_LIMIT,	offsetof(struct request, limit), NULL },
	{ "dead",	FIELD_FLAG,	offsetof(struct request, dead), NULL },
	{ "older_than",	FIELD_SECONDS,	offsetof(struct request, older_ms),
	    NULL },
	{ "for",	FIELD_SECONDS,	offsetof(struct request, for_ms), NULL },
};
#define N_FIELDS	(sizeof proto_fields / sizeof proto_fields[0])

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

/* Fill ev from a parsed envelope object; -1 with err on a bad field. */
static int
proto_fill_event(json_t *obj, struct event *ev, char *err, size_t errlen)
{
	const char	*key, *name, *id;
	json_t		*v, *data;
	double		 d;

	memset(ev, 0, sizeof *ev);
	json_object_foreach(obj, key, v) {
		if (strcmp(key, "op") != 0 &&
		    !proto_has_word(proto_ops[OP_EMIT].fields, key)) {
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

/* jobs: is the state one there is? */
static int
proto_check_state(const struct request *req, char *err, size_t errlen)
{
	if (strcmp(req->state, "ready") && strcmp(req->state, "delayed") &&
	    strcmp(req->state, "running") && strcmp(req->state, "dead")) {
		snprintf(err, errlen, "'state' is ready, delayed, running or "
		    "dead");
		return -1;
	}
	return 0;
}

/* results: is after a stream id, digits and at most one dash? */
static int
proto_check_after(const struct request *req, char *err, size_t errlen)
{
	const char	*a = req->after;

	if (strspn(a, "0123456789") == 0 ||
	    strspn(a, "0123456789-") != strlen(a) ||
	    strchr(strchr(a, '-') ? strchr(a, '-') + 1 : "", '-') != NULL) {
		snprintf(err, errlen, "'after' must be a stream id like "
		    "1700000000000-0");
		return -1;
	}
	return 0;
}

/* The entry of proto_fields named name, or NULL. */
static const struct proto_field *
proto_field(const char *name)
{
	size_t	i;

	for (i = 0; i < N_FIELDS; i++)
		if (strcmp(proto_fields[i].name, name) == 0)
			return &proto_fields[i];
	return NULL;
}

/* Check the type of field f, present in obj, and keep its value. */
static int
proto_fill_field(json_t *obj, const struct proto_field *f,
    struct request *req, char *err, size_t errlen)
{
	json_t	*v = json_object_get(obj, f->name);
	char	*at = (char *)req + f->off;
	double	 d;

	switch (f->type) {
	case FIELD_STRING:
		return proto_str(obj, f->name, (char **)(void *)at, err,
		    errlen);
	case FIELD_LIMIT:
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 10000) {
			snprintf(err, errlen, "'%s' must be 1-10000", f->name);
			return -1;
		}
		*(long *)(void *)at = (long)json_integer_value(v);
		req->limit_given = 1;
		return 0;
	case FIELD_FLAG:
		if (!json_is_boolean(v)) {
			snprintf(err, errlen, "'%s' must be true or false",
			    f->name);
			return -1;
		}
		*(int *)(void *)at = json_is_true(v);
		return 0;
	case FIELD_SECONDS:
		d = json_number_value(v);
		if (!json_is_number(v) || d < 0 || d > 1e10) {
			snprintf(err, errlen, "'%s' must be seconds", f->name);
			return -1;
		}
		*(int64_t *)(void *)at = (int64_t)llround(d * 1000);
		return 0;
	}
	return 0;
}

/*
 * Are the required fields there?  Each space-separated group of o's
 * required needs exactly one of its '|'-separated alternatives: a field
 * given, or a flag given as true.
 */
static int
proto_required(json_t *obj, const struct proto_op *o, char *err,
    size_t errlen)
{
	const struct proto_field *f;
	const char	*g, *alt;
	char		 name[64];
	size_t		 glen, len, used;
	json_t		*v;
	int		 n;

	for (g = o->required; *g != '\0'; g += glen, g += strspn(g, " ")) {
		glen = strcspn(g, " ");
		n = 0;
		for (alt = g; alt < g + glen; alt += len + (alt[len] == '|')) {
			len = strcspn(alt, "| ");
			snprintf(name, sizeof name, "%.*s", (int)len, alt);
			f = proto_field(name);
			v = json_object_get(obj, name);
			n += f != NULL && f->type == FIELD_FLAG ?
			    json_is_true(v) : v != NULL;
		}
		if (n == 1)
			continue;
		/* "retry needs 'id' or "dead":true" */
		used = (size_t)snprintf(err, errlen, "%s needs", o->name);
		for (alt = g; alt < g + glen && used < errlen;
		    alt += len + (alt[len] == '|')) {
			len = strcspn(alt, "| ");
			snprintf(name, sizeof name, "%.*s", (int)len, alt);
			f = proto_field(name);
			used += (size_t)snprintf(err + used, errlen - used,
			    f != NULL && f->type == FIELD_FLAG ?
			    "%s \"%s\":true" : "%s '%s'", alt == g ? "" : " or",
			    name);
		}
		return -1;
	}
	return 0;
}

/* An op that carries an event (run): its name, default the op's, and data. */
static int
proto_fill_ev(json_t *obj, const struct proto_op *o, struct request *req,
    char *err, size_t errlen)
{
	json_t	*v;

	if (proto_str(obj, "event", &req->ev.name, err, errlen) == -1)
		return -1;
	if (req->ev.name == NULL)
		req->ev.name = xstrdup(o->name);
	if (!util_valid_event_name(req->ev.name)) {
		snprintf(err, errlen, "bad event name");
		return -1;
	}
	v = json_object_get(obj, "data");
	req->ev.data = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) :
	    xstrdup("{}");
	return 0;
}

/*
 * Check and copy the fields of an op other than emit, as o says: no
 * unknown field; each type, then each value; the required ones.
 */
static int
proto_fill_args(json_t *obj, const struct proto_op *o, struct request *req,
    char *err, size_t errlen)
{
	const struct proto_field *f;
	const char	*key;
	json_t		*v;

	json_object_foreach(obj, key, v) {
		if (strcmp(key, "op") != 0 && !proto_has_word(o->fields, key)) {
			snprintf(err, errlen, "%s: unknown field '%.64s'%s%s%s",
			    o->name, key, o->fields[0] ? " (it takes " : "",
			    o->fields, o->fields[0] ? ")" : "");
			return -1;
		}
	}
	req->limit = 20;
	for (f = proto_fields; f < proto_fields + N_FIELDS; f++) {
		if (json_object_get(obj, f->name) == NULL ||
		    ((o->flags & PROTO_EVENT) && strcmp(f->name, "event") == 0))
			continue;
		if (proto_fill_field(obj, f, req, err, errlen) == -1)
			return -1;
	}
	for (f = proto_fields; f < proto_fields + N_FIELDS; f++)
		if (f->check != NULL && *(char **)(void *)((char *)req +
		    f->off) != NULL && f->check(req, err, errlen) == -1)
			return -1;
	if (proto_required(obj, o, err, errlen) == -1)
		return -1;
	if ((o->flags & PROTO_EVENT) &&
	    proto_fill_ev(obj, o, req, err, errlen) == -1)
		return -1;
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
	const struct proto_op	*o;
	json_t			*obj, *opv;
	const char		*op = "emit";
	int			 rc = -1;

	memset(req, 0, sizeof *req);
	if ((obj = proto_load(line, len, err, errlen)) == NULL)
		return -1;
	if ((opv = json_object_get(obj, "op")) != NULL &&
	    (op = json_string_value(opv)) == NULL) {
		snprintf(err, errlen, "'op' must be a string");
		goto out;
	}
	for (o = proto_ops; o < proto_ops + OP_COUNT; o++)
		if (!(o->flags & PROTO_LOCAL) && strcmp(op, o->name) == 0)
			break;
	if (o == proto_ops + OP_COUNT) {
		snprintf(err, errlen, "unknown op '%.64s'", op);
		rc = -2;
		goto out;
	}
	req->op = (enum request_op)(o - proto_ops);
	req->admin = (o->flags & PROTO_ADMIN) != 0;
	if (o->flags & PROTO_ENVELOPE)
		rc = proto_fill_event(obj, &req->ev, err, errlen);
	else
		rc = proto_fill_args(obj, o, req, err, errlen);
	if (rc == -1)
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
 * The reply builders: every reply line the agent sends comes from one of
 * these three.  A line ends in a newline; *len gets its length.
 */

/* A reply line from a whole reply object o (stolen), "ok" and all. */
char *
proto_reply(json_t *o, size_t *len)
{
	char	*s, *line;

	if (o == NULL || (s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("proto: cannot build a reply");
	json_decref(o);
	*len = (size_t)xasprintf(&line, "%s\n", s);
	free(s);
	return line;
}

/* A success reply line: the fields of o (stolen), then "ok":true. */
char *
proto_reply_ok(json_t *o, size_t *len)
{
	if (o != NULL)
		json_object_set_new(o, "ok", json_true());
	return proto_reply(o, len);
}

/*
 * An error reply line, naming event_id when it is not NULL (the id to
 * retry with).
 */
char *
proto_reply_error(const char *code, const char *msg, const char *event_id,
    size_t *len)
{
	json_t	*o;
	char	*clean;
	size_t	 n;

	/* the message may quote the client's bytes: make them valid UTF-8 */
	clean = util_utf8_clean(msg, strlen(msg), &n);
	o = json_pack("{s:b, s:s, s:s}", "ok", 0, "code", code, "error", clean);
	free(clean);
	if (o != NULL && event_id != NULL)
		json_object_set_new(o, "event_id", json_string(event_id));
	return proto_reply(o, len);
}
