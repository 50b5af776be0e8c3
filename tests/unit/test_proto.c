/*
 * test_proto.c: request parsing and error replies of the socket protocol,
 * and a walk of the op table (proto_ops): every op parses from a minimal
 * request, each missing required field gives its error, names are unique.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../agent/dispatchd.h"
#include "tap.h"

static char	err[300];

/* Parse s; returns the proto_parse status, clears the request. */
static int
parse(const char *s, struct request *req)
{
	return proto_parse(s, strlen(s), req, err, sizeof err);
}

/* A valid value for each field an op may take, as JSON text. */
static const struct {
	const char	*name;
	const char	*json;
} samples[] = {
	{ "event", "\"e.x\"" }, { "data", "{\"k\":[1]}" }, { "id", "\"x1\"" },
	{ "delay", "1.5" }, { "at", "1700000000" }, { "state", "\"dead\"" },
	{ "handler", "\"h\"" }, { "limit", "5" }, { "after", "\"1-0\"" },
	{ "dead", "true" }, { "older_than", "60" }, { "for", "90" },
};

/* The sample of field name (len bytes of it), or NULL. */
static const char *
test_proto_sample(const char *name, size_t len)
{
	size_t	i;

	for (i = 0; i < sizeof samples / sizeof samples[0]; i++)
		if (strlen(samples[i].name) == len &&
		    strncmp(samples[i].name, name, len) == 0)
			return samples[i].json;
	return NULL;
}

/* Is word (len bytes) one of the space-separated words of list? */
static int
test_proto_in(const char *list, const char *word, size_t len)
{
	for (; *list != '\0'; list += strspn(list, " |")) {
		if (strcspn(list, " |") == len && strncmp(list, word, len) == 0)
			return 1;
		list += strcspn(list, " |");
	}
	return 0;
}

/*
 * The minimal request of o in buf: its required fields (the first of each
 * group), but not the group at skip; then the field extra, if not NULL.
 */
static void
test_proto_minimal(const struct proto_op *o, const char *skip,
    const char *extra, char *buf, size_t size)
{
	const char	*g;
	size_t		 n, len;

	n = (size_t)snprintf(buf, size, "{\"op\":\"%s\"", o->name);
	for (g = o->required; *g != '\0'; g += strspn(g, " ")) {
		len = strcspn(g, "| ");
		if (g != skip)
			n += (size_t)snprintf(buf + n, size - n, ",\"%.*s\":%s",
			    (int)len, g, test_proto_sample(g, len));
		g += strcspn(g, " ");
	}
	if (extra != NULL)
		n += (size_t)snprintf(buf + n, size - n, ",\"%s\":%s", extra,
		    test_proto_sample(extra, strlen(extra)));
	snprintf(buf + n, size - n, "}");
}

/* The documented error for o without the required group g. */
static void
test_proto_needs(const struct proto_op *o, const char *g, char *buf,
    size_t size)
{
	const char	*alt;
	size_t		 n, len;

	if (o->flags & PROTO_ENVELOPE) {
		snprintf(buf, size, "'%.*s' must be a string",
		    (int)strcspn(g, " "), g);
		return;
	}
	n = (size_t)snprintf(buf, size, "%s needs", o->name);
	for (alt = g; *alt != '\0' && *alt != ' '; alt += len) {
		if (*alt == '|')
			alt++;
		len = strcspn(alt, "| ");
		n += (size_t)snprintf(buf + n, size - n,
		    strcmp(test_proto_sample(alt, len), "true") == 0 ?
		    "%s \"%.*s\":true" : "%s '%.*s'", alt == g ? "" : " or",
		    (int)len, alt);
	}
}

/* Walk proto_ops: every op, its fields, its required fields. */
static void
test_proto_table(void)
{
	const struct proto_op	*o, *p;
	struct request		 req;
	const char		*w, *g;
	char			 buf[1024], want[300];
	size_t			 len;
	int			 rc;

	for (o = proto_ops; o < proto_ops + OP_COUNT; o++) {
		ok(o->name != NULL && o->fields != NULL && o->required != NULL &&
		    o->options != NULL && o->synopsis != NULL &&
		    o->help != NULL && *o->help != '\0' &&
		    (o->max_args == -1 || o->max_args >= o->min_args),
		    "op %d: every entry is filled in", (int)(o - proto_ops));
		for (p = proto_ops; p < o; p++)
			if (strcmp(p->name, o->name) == 0)
				break;
		ok(p == o, "%s: the name is unique", o->name);
		for (w = o->fields; *w != '\0'; w += strspn(w, " ")) {
			len = strcspn(w, " ");
			ok(test_proto_sample(w, len) != NULL,
			    "%s: field %.*s has a sample here", o->name,
			    (int)len, w);
			w += len;
		}
		for (w = o->required; *w != '\0'; w += strspn(w, " |")) {
			len = strcspn(w, " |");
			ok(test_proto_in(o->fields, w, len), "%s: required %.*s "
			    "is one of its fields", o->name, (int)len, w);
			w += len;
		}
		test_proto_minimal(o, NULL, NULL, buf, sizeof buf);
		rc = parse(buf, &req);
		if (o->flags & PROTO_LOCAL) {
			ok(rc == -2 && strstr(err, "unknown op") != NULL,
			    "%s: dispatchctl's own, not an op: %s", o->name, err);
			continue;
		}
		ok(rc == 0 && req.op == (enum request_op)(o - proto_ops) &&
		    req.admin == !!(o->flags & PROTO_ADMIN),
		    "%s: parses from %s%s%s", o->name, buf, rc ? ": " : "",
		    rc ? err : "");
		if (rc == 0)
			proto_request_clear(&req);
		for (g = o->required; *g != '\0'; g += strspn(g, " ")) {
			test_proto_minimal(o, g, NULL, buf, sizeof buf);
			test_proto_needs(o, g, want, sizeof want);
			ok(parse(buf, &req) == -1 && strcmp(err, want) == 0,
			    "%s: without %.*s: %s", o->name,
			    (int)strcspn(g, " "), g, err);
			g += strcspn(g, " ");
		}
		for (w = o->fields; *w != '\0'; w += strspn(w, " ")) {
			len = strcspn(w, " ");
			snprintf(want, sizeof want, "%.*s", (int)len, w);
			w += len;
			if (test_proto_in(o->required, want, strlen(want)))
				continue;
			test_proto_minimal(o, NULL, want, buf, sizeof buf);
			rc = parse(buf, &req);
			ok(rc == 0, "%s: takes %s: %s", o->name, want,
			    rc ? err : buf);
			if (rc == 0)
				proto_request_clear(&req);
		}
		test_proto_minimal(o, NULL, "limit", buf, sizeof buf);
		if (!test_proto_in(o->fields, "limit", 5))
			ok(parse(buf, &req) == -1 &&
			    strstr(err, "unknown field 'limit'") != NULL,
			    "%s: refuses a field it does not take: %s",
			    o->name, err);
	}
}

int
main(void)
{
	struct request	 req;
	struct event	 ev;
	char		*line, deep[5000];
	size_t		 len, i;

	ok(parse("{\"event\":\"order.paid\",\"data\":{\"n\":1}}", &req) == 0 &&
	    req.op == OP_EMIT && strcmp(req.ev.name, "order.paid") == 0 &&
	    strcmp(req.ev.data, "{\"n\":1}") == 0 && req.ev.id == NULL,
	    "emit without op");
	proto_event_clear(&req.ev);
	ok(parse("{\"op\":\"emit\",\"event\":\"a\"}", &req) == 0 &&
	    strcmp(req.ev.data, "{}") == 0, "data defaults to {}");
	proto_event_clear(&req.ev);
	ok(parse("{\"op\":\"emit\",\"event\":\"a\",\"id\":\"k1\",\"delay\":1.5}",
	    &req) == 0 && strcmp(req.ev.id, "k1") == 0 &&
	    req.ev.delay_ms == 1500, "id and fractional delay");
	proto_event_clear(&req.ev);
	ok(parse("{\"event\":\"a\",\"at\":1700000000.25}", &req) == 0 &&
	    req.ev.at_ms == 1700000000250LL, "at in Unix seconds");
	proto_event_clear(&req.ev);
	ok(parse("{\"event\":\"a\",\"data\":[1,\"x\"]}", &req) == 0 &&
	    strcmp(req.ev.data, "[1,\"x\"]") == 0, "data may be any JSON");
	proto_event_clear(&req.ev);
	ok(parse("{\"op\":\"ping\"}", &req) == 0 && req.op == OP_PING, "ping");

	ok(parse("not json", &req) == -1 && strstr(err, "invalid JSON"),
	    "malformed JSON: %s", err);
	ok(parse("[1,2]", &req) == -1 && strstr(err, "object"), "not an object");
	ok(parse("{\"data\":{}}", &req) == -1 && strstr(err, "event"),
	    "missing event");
	ok(parse("{\"event\":5}", &req) == -1, "event not a string");
	ok(parse("{\"event\":\"a b\"}", &req) == -1, "bad event name");
	ok(parse("{\"event\":\"\"}", &req) == -1, "empty event name");
	ok(parse("{\"event\":\"a\",\"delay\":-1}", &req) == -1,
	    "negative delay");
	ok(parse("{\"event\":\"a\",\"delay\":\"5\"}", &req) == -1,
	    "delay as a string");
	ok(parse("{\"event\":\"a\",\"delay\":1,\"at\":2}", &req) == -1,
	    "delay and at together");
	ok(parse("{\"event\":\"a\",\"id\":\"\"}", &req) == -1, "empty id");
	ok(parse("{\"event\":\"a\",\"id\":7}", &req) == -1, "id not a string");
	ok(parse("{\"event\":\"a\",\"dely\":1}", &req) == -1 &&
	    strstr(err, "dely"), "unknown field named: %s", err);
	ok(parse("{\"event\":\"a\",\"event\":\"b\"}", &req) == -1,
	    "duplicate keys rejected");
	ok(parse("{\"op\":\"shutdown\"}", &req) == -2 &&
	    strstr(err, "unknown op"), "unknown op");
	ok(parse("{\"event\":\"a\",\"data\":\"\xff\"}", &req) == -1,
	    "invalid UTF-8 rejected");
	for (i = 0; i < 4000; i++)
		deep[i] = '[';
	deep[i] = '\0';
	ok(proto_parse(deep, strlen(deep), &req, err, sizeof err) == -1,
	    "deep nesting rejected without a crash");

	strcpy(deep, "{\"event\":\"a\",\"data\":");
	for (i = 0; i < 70; i++)
		strcat(deep, "[");
	for (i = 0; i < 70; i++)
		strcat(deep, "]");
	strcat(deep, "}");
	ok(proto_parse(deep, strlen(deep), &req, err, sizeof err) == -1 &&
	    strstr(err, "deeper"), "nesting over 64 levels rejected: %s", err);
	strcpy(deep, "{\"event\":\"a\",\"data\":");
	for (i = 0; i < 60; i++)
		strcat(deep, "[");
	for (i = 0; i < 60; i++)
		strcat(deep, "]");
	strcat(deep, "}");
	ok(proto_parse(deep, strlen(deep), &req, err, sizeof err) == 0,
	    "nesting of 60 levels accepted");
	proto_event_clear(&req.ev);

	ok(proto_parse_event("{\"event\":\"x\"}", 13, &ev, err, sizeof err)
	    == 0 && strcmp(ev.name, "x") == 0, "pub/sub envelope");
	proto_event_clear(&ev);
	ok(proto_parse_event("{\"op\":\"ping\"}", 13, &ev, err, sizeof err)
	    == -1, "pub/sub accepts only emit");

	ok(parse("{\"op\":\"jobs\",\"state\":\"dead\",\"handler\":\"h\","
	    "\"limit\":5}", &req) == 0 && req.op == OP_JOBS && !req.admin &&
	    strcmp(req.state, "dead") == 0 && req.limit == 5, "jobs op");
	proto_request_clear(&req);
	ok(parse("{\"op\":\"jobs\",\"state\":\"done\"}", &req) == -1,
	    "jobs: unknown state");
	ok(parse("{\"op\":\"jobs\",\"limit\":0}", &req) == -1,
	    "jobs: limit out of range");
	ok(parse("{\"op\":\"job\"}", &req) == -1 && strstr(err, "id"),
	    "job needs an id");
	ok(parse("{\"op\":\"cancel\",\"id\":\"x\"}", &req) == 0 &&
	    req.admin, "cancel is an admin op");
	proto_request_clear(&req);
	ok(parse("{\"op\":\"retry\",\"id\":\"x\",\"dead\":true}", &req)
	    == -1, "retry: id or dead, not both");
	ok(parse("{\"op\":\"purge\",\"older_than\":3600}", &req) == -1,
	    "purge needs dead");
	ok(parse("{\"op\":\"purge\",\"dead\":true,\"older_than\":3600}",
	    &req) == 0 && req.older_ms == 3600000, "purge --older-than");
	proto_request_clear(&req);
	ok(parse("{\"op\":\"results\",\"after\":\"1700000000000-3\"}",
	    &req) == 0 && strcmp(req.after, "1700000000000-3") == 0,
	    "results after a stream id");
	proto_request_clear(&req);
	ok(parse("{\"op\":\"results\",\"after\":\"garbage\"}", &req) == -1,
	    "results: bad stream id");
	ok(parse("{\"op\":\"results\",\"after\":\"1-2-3\"}", &req) == -1,
	    "results: two dashes");
	ok(parse("{\"op\":\"run\",\"handler\":\"h\",\"data\":[1]}", &req)
	    == 0 && req.admin && strcmp(req.ev.data, "[1]") == 0 &&
	    strcmp(req.ev.name, "run") == 0, "run with data");
	proto_request_clear(&req);
	ok(parse("{\"op\":\"status\",\"x\":1}", &req) == -1 &&
	    strstr(err, "unknown field"), "status takes no fields");

	line = proto_reply_error("invalid", "near '\xff\xfe'", NULL, &len);
	ok(line != NULL && strstr(line, "\xef\xbf\xbd") != NULL,
	    "error text with invalid UTF-8 is cleaned, not fatal");
	free(line);
	line = proto_reply_error("invalid", "bad \"thing\"", NULL, &len);
	ok(len == strlen(line) && line[len - 1] == '\n' &&
	    strcmp(line, "{\"ok\":false,\"code\":\"invalid\","
	    "\"error\":\"bad \\\"thing\\\"\"}\n") == 0, "error reply: %s",
	    line);
	free(line);
	line = proto_reply_error("unavailable", "lost", "ev-1", &len);
	ok(strcmp(line, "{\"ok\":false,\"code\":\"unavailable\","
	    "\"error\":\"lost\",\"event_id\":\"ev-1\"}\n") == 0,
	    "error reply with an event id: %s", line);
	free(line);
	line = proto_reply_ok(json_pack("{s:i}", "count", 3), &len);
	ok(len == strlen(line) && strcmp(line, "{\"count\":3,\"ok\":true}\n")
	    == 0, "ok reply: ok comes last: %s", line);
	free(line);
	line = proto_reply(json_pack("{s:b, s:s}", "ok", 1, "agent", "a"),
	    &len);
	ok(strcmp(line, "{\"ok\":true,\"agent\":\"a\"}\n") == 0,
	    "whole reply as given: %s", line);
	free(line);

	test_proto_table();
	return done();
}
