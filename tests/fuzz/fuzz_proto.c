/*
 * fuzz_proto.c: libFuzzer target for the socket protocol parser and the
 * pub/sub envelope parser.  Any input must give a request or an error,
 * never a crash, a leak or undefined behaviour.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../agent/dispatchd.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct request	req;
	struct event	ev;
	char		err[300], *line;
	size_t		len;

	if (proto_parse((const char *)data, size, &req, err, sizeof err) == 0) {
		if (req.op == OP_EMIT && (!util_valid_event_name(req.ev.name) ||
		    req.ev.data == NULL))
			abort();
		proto_request_clear(&req);
	} else {
		line = proto_reply_error("invalid", err, NULL, &len);
		free(line);
	}
	if (proto_parse_event((const char *)data, size, &ev, err,
	    sizeof err) == 0)
		proto_event_clear(&ev);
	return 0;
}
