/*
 * test_proto.c: request parsing and error replies of the socket protocol.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "../../agent/dispatchd.h"
#include "tap.h"

static char	err[300];

/* Parse s; returns the proto_parse status, clears the request. */
static int
parse(const char *s, struct request *req)
{
	return proto_parse(s, strlen(s), req, err, sizeof err);
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

	line = proto_error("invalid", "near '\xff\xfe'", &len);
	ok(line != NULL && strstr(line, "\xef\xbf\xbd") != NULL,
	    "error text with invalid UTF-8 is cleaned, not fatal");
	free(line);
	line = proto_error("invalid", "bad \"thing\"", &len);
	ok(len == strlen(line) && line[len - 1] == '\n' &&
	    strcmp(line, "{\"ok\":false,\"code\":\"invalid\","
	    "\"error\":\"bad \\\"thing\\\"\"}\n") == 0, "error reply: %s",
	    line);
	free(line);
	return done();
}
