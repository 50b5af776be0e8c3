/*
 * inbox.c: durable ingress for remote producers that cannot lose events.
 * Producers XADD to a stream; the agents read it through one consumer
 * group, each entry once, and acknowledge an entry only after its enqueue
 * succeeded.  Entries left pending by an agent that died are claimed by a
 * live one after inbox_claim.  An entry without an id gets one from its
 * stream id, so a claimed entry fans out once however often it is read.
 * The blocking read has a connection of its own: it would hold up every
 * command queued behind it.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dispatchd.h"

#define INBOX_COUNT	"100"	/* entries per read */
#define INBOX_BLOCK	"5000"	/* ms a read waits for entries */
#define INBOX_GROUP	"agents"

static struct rconn	*rin;
static ev_timer		 claim_timer;
static ev_timer		 retry_timer;

static void	 inbox_read(void);
static int	 reading;		/* an XREADGROUP is under way */
static int	 claiming;		/* the name is ours: claim entries */
static void	 inbox_on_state(int);

/* An entry's enqueue finished: acknowledge it, or leave it for a claim. */
static void
inbox_on_enqueued(int ok, const char *line, size_t len, void *arg)
{
	char		*id = arg;
	const char	*argv[4];

	if (ok) {
		argv[0] = "XACK";
		argv[1] = cfg->inbox;
		argv[2] = INBOX_GROUP;
		argv[3] = id;
		redis_command(rcmd, NULL, NULL, 4, argv, NULL);
	} else
		log_warnx("inbox: entry %s not queued (it will be claimed "
		    "again): %.*s", id, (int)len - 1, line);
	free(id);
}

/* Acknowledge an entry that can never be queued. */
static void
inbox_drop(const char *id, const char *why)
{
	const char	*argv[4] = { "XACK", NULL, INBOX_GROUP, NULL };

	counters.inbox_bad++;
	log_warnx("inbox: entry %s dropped: %s", id, why);
	argv[1] = cfg->inbox;
	argv[3] = id;
	redis_command(rcmd, NULL, NULL, 4, argv, NULL);
}

/* The value of field name in a flat {k, v, ...} reply, or NULL. */
static const redisReply *
inbox_field(const redisReply *kv, const char *name)
{
	size_t	i;

	for (i = 0; i + 1 < kv->elements; i += 2)
		if (strcmp(kv->element[i]->str, name) == 0)
			return kv->element[i + 1];
	return NULL;
}

/* Copy a numeric field into the envelope; -1 if it is not a number. */
static int
inbox_number(json_t *o, const redisReply *kv, const char *name)
{
	const redisReply	*v;
	char			*end;
	double			 d;

	if ((v = inbox_field(kv, name)) == NULL)
		return 0;
	d = strtod(v->str, &end);
	if (v->len == 0 || *end != '\0' || !isfinite(d))
		return -1;
	json_object_set_new(o, name, json_real(d));
	return 0;
}

/*
 * Turn one entry {id, {field, value, ...}} into an envelope and enqueue
 * it: fields event, data (JSON text), id, delay, at.
 */
static void
inbox_entry(const redisReply *e)
{
	const redisReply	*kv, *v;
	json_t			*o, *data;
	json_error_t		 jerr;
	struct event		 ev;
	char			*line, err[300], *eid;
	const char		*id;

	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING)
		return;
	id = e->element[0]->str;
	kv = e->element[1];
	if (kv->type != REDIS_REPLY_ARRAY) {
		inbox_drop(id, "deleted from the stream");
		return;
	}
	if ((v = inbox_field(kv, "event")) == NULL) {
		inbox_drop(id, "no event field");
		return;
	}
	o = json_object();
	json_object_set_new(o, "event", json_stringn(v->str, v->len));
	if ((v = inbox_field(kv, "data")) != NULL) {
		if ((data = json_loadb(v->str, v->len, JSON_DECODE_ANY,
		    &jerr)) == NULL) {
			json_decref(o);
			inbox_drop(id, "data is not JSON");
			return;
		}
		json_object_set_new(o, "data", data);
	}
	if ((v = inbox_field(kv, "id")) != NULL)
		json_object_set_new(o, "id", json_stringn(v->str, v->len));
	else {
		/* the stream id: a redelivery fans out only once */
		xasprintf(&eid, "inbox-%s", id);
		json_object_set_new(o, "id", json_string(eid));
		free(eid);
	}
	if (inbox_number(o, kv, "delay") == -1 ||
	    inbox_number(o, kv, "at") == -1) {
		json_decref(o);
		inbox_drop(id, "delay and at must be numbers of seconds");
		return;
	}
	line = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (line == NULL) {
		inbox_drop(id, "fields are not valid UTF-8");
		return;
	}
	if (proto_parse_event(line, strlen(line), &ev, err, sizeof err) == -1) {
		free(line);
		inbox_drop(id, err);
		return;
	}
	free(line);
	counters.inbox_read++;
	enqueue_event(&ev, 0, inbox_on_enqueued, xstrdup(id));
	proto_event_clear(&ev);
}

/* Entries arrived (or the read timed out, or the connection went). */
static void
inbox_on_read(const struct redisReply *reply, void *arg)
{
	const redisReply	*s;
	size_t			 i, k;

	reading = 0;
	if (reply == NULL)
		return;		/* reconnecting: the state callback reads again */
	if (reply->type == REDIS_REPLY_ERROR) {
		/*
		 * The stream or the group went away (deleted, or moved to
		 * another Cluster node): make them again, read a little later.
		 */
		log_warnx("inbox: %s; reading again in 1 s", reply->str);
		ev_timer_stop(EV_DEFAULT_ &retry_timer);
		ev_timer_set(&retry_timer, 1., 0.);
		ev_timer_start(EV_DEFAULT_ &retry_timer);
		return;
	}
	/* {{stream, {entries}}} */
	for (i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements;
	    i++) {
		s = reply->element[i];
		if (!call_reply_is(s, "sa"))
			continue;
		for (k = 0; k < s->element[1]->elements; k++)
			inbox_entry(s->element[1]->element[k]);
	}
	inbox_read();
}

/* Wait for new entries on the inbox connection. */
static void
inbox_read(void)
{
	const char	*argv[10] = { "XREADGROUP", "GROUP", INBOX_GROUP, NULL,
	    "COUNT", INBOX_COUNT, "BLOCK", INBOX_BLOCK, "STREAMS", NULL };
	const char	*full[11];
	int		 i;

	argv[3] = cfg->name;
	for (i = 0; i < 9; i++)
		full[i] = argv[i];
	full[9] = cfg->inbox;
	full[10] = ">";
	/* one read at a time: after a reconnect the old one may still come */
	if (!reading && redis_command(rin, inbox_on_read, NULL, 11, full,
	    NULL) == 0)
		reading = 1;
}

/* After an error: make the stream and group again, then read. */
static void
inbox_on_retry(EV_P_ ev_timer *w, int revents)
{
	if (redis_ready(rin))
		inbox_on_state(1);
}

/* XAUTOCLAIM answered: {next, {entries}, ...}. */
static void
inbox_on_claimed(const struct redisReply *reply, void *arg)
{
	size_t	i;

	if (!call_reply_is(reply, "sa*"))
		return;
	if (reply->element[1]->elements > 0)
		log_notice("inbox: claimed %zu entries an agent left pending",
		    reply->element[1]->elements);
	for (i = 0; i < reply->element[1]->elements; i++)
		inbox_entry(reply->element[1]->element[i]);
}

/* Claim entries pending too long on another (dead) consumer. */
static void
inbox_on_claim_timer(EV_P_ ev_timer *w, int revents)
{
	const char	*argv[9] = { "XAUTOCLAIM", NULL, INBOX_GROUP, NULL,
	    NULL, "0-0", "COUNT", INBOX_COUNT, NULL };
	char		 idle[32];

	if (!redis_ready(rcmd))
		return;
	snprintf(idle, sizeof idle, "%lld", (long long)cfg->inbox_claim_ms);
	argv[1] = cfg->inbox;
	argv[3] = cfg->name;
	argv[4] = idle;
	redis_command(rcmd, inbox_on_claimed, NULL, 8, argv, NULL);
}

/* The inbox connection came up: make sure the group exists, then read. */
static void
inbox_on_state(int up)
{
	const char	*argv[6] = { "XGROUP", "CREATE", NULL, INBOX_GROUP, "0",
	    "MKSTREAM" };

	if (!up)
		return;
	argv[2] = cfg->inbox;
	/* BUSYGROUP when it exists already: fine */
	redis_command(rin, NULL, NULL, 6, argv, NULL);
	inbox_read();
}

/* Start reading the inbox, unless it is turned off. */
void
inbox_start(void)
{
	if (cfg->inbox == NULL || cfg->inbox[0] == '\0')
		return;
	rin = redis_open("inbox", inbox_on_state);
	ev_init(&retry_timer, inbox_on_retry);
	ev_init(&claim_timer, inbox_on_claim_timer);
}

/*
 * The agent's name is ours: claim the entries dead agents left pending,
 * from now on (before, another live agent of the name might be us).
 */
void
inbox_claim_start(void)
{
	claiming = 1;
	inbox_reconfigure();
}

/* Claim entries idle for inbox_claim twice as often as that (reload). */
void
inbox_reconfigure(void)
{
	double	period = (double)cfg->inbox_claim_ms / 2000.0;

	if (rin == NULL || !claiming)
		return;
	if (period < 0.5)
		period = 0.5;
	ev_timer_stop(EV_DEFAULT_ &claim_timer);
	ev_timer_set(&claim_timer, period, period);
	ev_timer_start(EV_DEFAULT_ &claim_timer);
}

/* Stop (exit). */
void
inbox_stop(void)
{
	if (rin == NULL)
		return;
	ev_timer_stop(EV_DEFAULT_ &claim_timer);
	ev_timer_stop(EV_DEFAULT_ &retry_timer);
	redis_close(rin);
	rin = NULL;
}
