/*
 * subscribe.c: the pub/sub side.  The events channel is an ingress like
 * the socket, with nobody to answer: a bad message is logged and counted,
 * never fatal.  The notify channel carries wake-up hints from enqueues and
 * promotions: "r" means a job is ready, "d" that a delayed one was added,
 * "a" that an agent wrote its routes (it claimed its name or reloaded),
 * "c JID" that an administrator cancelled job JID while it runs (the agent
 * running it stops it), "h" is a heartbeat that proves the subscription
 * still works.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "dispatchd.h"

#define HEARTBEAT_S	5.0	/* publish a heartbeat to ourselves */
#define DEAF_MS		15000	/* no message for this long: resubscribe */

static char	*notify;		/* the channel's name, a copy */
static ev_timer	 heartbeat;

/* An event from pub/sub was queued, or not. */
static void
subscribe_on_enqueued(int ok, const char *line, size_t len, void *arg)
{
	if (!ok)
		log_warnx("pub/sub event not queued: %.*s", (int)len - 1, line);
}

/* Print at most 80 bytes of untrusted text, escaped, for a log line. */
static void
subscribe_escape(char *out, size_t outlen, const char *in, size_t len)
{
	size_t	i, o = 0;

	for (i = 0; i < len && o + 5 < outlen; i++) {
		unsigned char	ch = (unsigned char)in[i];

		if (ch >= 0x20 && ch < 0x7f && ch != '\\')
			out[o++] = (char)ch;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", ch);
		if (i == 80) {
			snprintf(out + o, outlen - o, "...");
			return;
		}
	}
	out[o] = '\0';
}

/* A message arrived on one of our channels. */
static void
subscribe_on_message(const char *channel, const char *msg, size_t len)
{
	struct event	ev;
	char		err[300], shown[400], *jid;

	if (strcmp(channel, notify) == 0) {
		if (len == 1 && msg[0] == 'd')
			promote_kick();
		else if (len == 1 && msg[0] == 'r')
			dispatch_kick();
		else if (len == 1 && msg[0] == 'a')
			routes_refresh();
		else if (len > 2 && msg[0] == 'c' && msg[1] == ' ') {
			jid = xstrndup(msg + 2, len - 2);
			dispatch_cancel(jid, "heard on pub/sub");
			free(jid);
		}
		return;		/* "h": a heartbeat, heard is all it is for */
	}
	if (len > cfg->max_message) {
		counters.pubsub_bad++;
		log_warnx("pub/sub %s: message of %zu bytes is over "
		    "max_message; dropped", channel, len);
		return;
	}
	if (proto_parse_event(msg, len, &ev, err, sizeof err) == -1) {
		counters.pubsub_bad++;
		subscribe_escape(shown, sizeof shown, msg, len);
		log_warnx("pub/sub %s: bad event (%s): %s", channel, err,
		    shown);
		return;
	}
	/*
	 * Every subscribed agent gets every message.  With an id, each one
	 * enqueues it and Redis keeps the first; without one there is
	 * nothing to tell copies apart, so only the events leader does.
	 */
	if (ev.id == NULL && !heartbeat_is_leader()) {
		log_debug("pub/sub %s: event %s without an id: left to the "
		    "events leader", channel, ev.name);
		proto_event_clear(&ev);
		return;
	}
	enqueue_event(&ev, 1, subscribe_on_enqueued, NULL);
	proto_event_clear(&ev);
}

/* A PUBLISH of ours was answered; nothing to do. */
static void
subscribe_on_published(const struct redisReply *reply, void *arg)
{
}

/*
 * Every few seconds: publish a heartbeat on the notify channel, and if the
 * subscriber has heard nothing (not even our own heartbeats) for a while,
 * it is deaf: resubscribe.  Hints published meanwhile are lost, so the
 * reconnect is followed by a fetch and promote sweep.
 */
static void
subscribe_on_heartbeat(EV_P_ ev_timer *w, int revents)
{
	const char	*argv[3] = { "PUBLISH", notify, "h" };
	int64_t		 silent = redis_silence_ms(rsub);

	if (!redis_ready(rcmd))
		return;
	if (silent > DEAF_MS) {
		log_warnx("redis sub: nothing heard for %lld ms; "
		    "subscribing again", (long long)silent);
		redis_reconnect(rsub, "deaf");
		return;
	}
	redis_command(rcmd, subscribe_on_published, NULL, 3, argv, NULL);
}

/* The subscriber came back: sweep for what its hints would have said. */
static void
subscribe_on_state(int up)
{
	if (up) {
		promote_kick();
		dispatch_kick();
	}
}

/* Open the subscriber connection: hints always, events unless turned off. */
void
subscribe_start(void)
{
	const char	*channels[2];
	size_t		 n = 0;

	notify = schema_key(KEY_NOTIFY, NULL);
	channels[n++] = notify;
	if (cfg->subscribe[0] != '\0')
		channels[n++] = cfg->subscribe;
	rsub = redis_open("sub", subscribe_on_state);
	redis_subscribe(rsub, channels, n, subscribe_on_message);
	ev_timer_init(&heartbeat, subscribe_on_heartbeat, HEARTBEAT_S,
	    HEARTBEAT_S);
	ev_timer_start(EV_DEFAULT_ &heartbeat);
}
