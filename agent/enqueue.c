/*
 * enqueue.c: turn an accepted event into jobs.  The handlers whose 'on'
 * matches are looked up here, and one script call creates every job or
 * none; the caller hears back only after Redis has answered, so nothing is
 * acknowledged that is not stored.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dispatchd.h"

#define JOB_ID_BYTES	16
#define MAX_FANOUT	256

/* What an enqueue waits on: the caller and the event's id. */
struct pending_enqueue {
	enqueue_cb	 cb;
	void		*arg;
	char		*event_id;
	char		*event;
	char		*spool_line;	/* the event to spool if Redis fails */
};

/* A spooled event being queued again. */
struct replay {
	char		*name;
};

static ev_timer	 replay_timer;
static int	 replaying;
static void	(*queued_hook)(void);	/* main's: jobs may be ready */

static void	 enqueue_replay_in(double);

/* Build the reply line {"ok":true,"event_id":..,"jobs":[..]} from "jid h ...". */
static char *
enqueue_reply(const char *event_id, const char *joined, size_t len,
    int duplicate, size_t *outlen)
{
	json_t		*o, *jobs;
	char		*copy, *save, *jid, *h;

	jobs = json_array();
	copy = xstrndup(joined, len);
	for (jid = strtok_r(copy, " ", &save); jid != NULL;
	    jid = strtok_r(NULL, " ", &save)) {
		if ((h = strtok_r(NULL, " ", &save)) == NULL)
			break;
		/* from Redis: keep only well-formed entries */
		if (util_valid_handler_name(jid) && util_valid_handler_name(h))
			json_array_append_new(jobs, json_pack("{s:s, s:s}",
			    "id", jid, "handler", h));
	}
	free(copy);
	o = json_pack("{s:b, s:s, s:o}", "ok", 1, "event_id", event_id,
	    "jobs", jobs);
	if (duplicate)
		json_object_set_new(o, "duplicate", json_true());
	return proto_reply(o, outlen);
}

/* Hand a reply line to the caller and free the wait. */
static void
enqueue_done(struct pending_enqueue *pe, int ok, char *line, size_t len)
{
	pe->cb(ok, line, len, pe->arg);
	free(line);
	free(pe->event_id);
	free(pe->event);
	free(pe->spool_line);
	free(pe);
}

/*
 * The event as a self-contained spool line: the time it was spooled (this
 * host's clock), a blank, then the envelope with its id, so replay is
 * idempotent.  A delay stays relative: at replay, the time spent in the
 * spool (measured on this same clock) is taken off it, and Redis's clock
 * decides the rest, so another host's clock never matters.
 */
static char *
enqueue_spool_line(const struct event *ev, const char *event_id,
    size_t *len)
{
	json_t		*o, *data;
	json_error_t	 jerr;
	char		*s, *line;

	data = json_loads(ev->data, JSON_DECODE_ANY, &jerr);
	o = json_pack("{s:s, s:o, s:s}", "event", ev->name,
	    "data", data ? data : json_object(), "id", event_id);
	if (ev->at_ms > 0)
		json_object_set_new(o, "at",
		    json_real((double)ev->at_ms / 1000.0));
	else if (ev->delay_ms > 0)
		json_object_set_new(o, "delay",
		    json_real((double)ev->delay_ms / 1000.0));
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT |
	    JSON_REAL_PRECISION(17))) == NULL)
		fatalx("enqueue: cannot build a spool line");
	json_decref(o);
	*len = (size_t)xasprintf(&line, "%lld %s\n",
	    (long long)util_wall_ms(), s);
	free(s);
	return line;
}

/*
 * Redis could not take the event: spool it if there is a spool, and
 * answer ok, spooled; otherwise (or if the spool fails) unavailable.
 */
static void
enqueue_fallback(struct pending_enqueue *pe, const char *why)
{
	char	*line, err[300], msg[400];
	size_t	 len;

	if (pe->spool_line != NULL && spool_put(pe->spool_line,
	    strlen(pe->spool_line), err, sizeof err) == 0) {
		counters.spooled++;
		log_notice("event %s id %s: %s; spooled", pe->event,
		    pe->event_id, why);
		/* connected but refused (MISCONF, LOADING...): try again soon */
		enqueue_replay_in(1.0);
		line = proto_reply(json_pack("{s:b, s:b, s:s}", "ok", 1,
		    "spooled", 1, "event_id", pe->event_id), &len);
		enqueue_done(pe, 1, line, len);
		return;
	}
	if (pe->spool_line != NULL) {
		log_warnx("event %s id %s: %s, and %s", pe->event,
		    pe->event_id, why, err);
		snprintf(msg, sizeof msg, "%s, and %s; nothing was queued", why,
		    err);
	} else
		snprintf(msg, sizeof msg, "%s; nothing was queued", why);
	line = proto_reply_error("unavailable", msg, NULL, &len);
	enqueue_done(pe, 0, line, len);
}

/* The enqueue script answered. */
static void
enqueue_on_reply(const struct redisReply *reply, void *arg)
{
	struct pending_enqueue	*pe = arg;
	char			*line, msg[300];
	size_t			 len;

	if (reply == NULL && pe->spool_line != NULL) {
		/* outcome unknown: the spool's replay is idempotent by id */
		enqueue_fallback(pe, "lost the connection to Redis");
		return;
	}
	if (reply == NULL) {
		line = proto_reply_error("unavailable", "lost the connection "
		    "to Redis: the event may or may not be queued; send it "
		    "again with this event_id as its id", pe->event_id, &len);
		enqueue_done(pe, 0, line, len);
		return;
	}
	if (!call_reply_is(reply, "is")) {
		snprintf(msg, sizeof msg, "redis: %.200s",
		    reply->type == REDIS_REPLY_ERROR ? reply->str :
		    "unexpected reply to enqueue");
		log_warnx("enqueue %s: %s", pe->event, msg);
		if (reply->type == REDIS_REPLY_ERROR &&
		    strncmp(reply->str, "ERR", 3) != 0) {
			/* LOADING, BUSY, MISCONF, OOM, READONLY, ...: passing */
			enqueue_fallback(pe, msg);
			return;
		}
		line = proto_reply_error("unavailable", msg, pe->event_id,
		    &len);
		enqueue_done(pe, 0, line, len);
		return;
	}
	if (reply->element[0]->integer == 2) {
		/* on_busy = reject: nothing was queued, nor the id seen */
		snprintf(msg, sizeof msg, "handler %.*s is busy: its key has "
		    "no free slot (on_busy = reject); nothing was queued",
		    (int)strcspn(reply->element[1]->str, " "),
		    reply->element[1]->str);
		line = proto_reply_error("busy", msg, pe->event_id, &len);
		enqueue_done(pe, 0, line, len);
		return;
	}
	counters.emitted++;
	line = enqueue_reply(pe->event_id, reply->element[1]->str,
	    reply->element[1]->len, reply->element[0]->integer == 0, &len);
	log_debug("event %s id %s: %s", pe->event, pe->event_id,
	    reply->element[0]->integer == 0 ? "a duplicate, already queued" :
	    "queued");
	enqueue_done(pe, 1, line, len);
	queued_hook();
	if (spool_count() > 0)
		enqueue_replay_in(0.);	/* Redis takes writes again */
}

/*
 * The keys of the keyed handlers among hs[0..n) for ev, into keys (NULL
 * for a handler without one; the caller frees them); -1 with err when an
 * event lacks what a template needs.
 */
static int
enqueue_keys(const struct event *ev, struct handler **hs, size_t n,
    char **keys, char *err, size_t errlen)
{
	json_t		*data = NULL;
	json_error_t	 jerr;
	char		 why[400];
	size_t		 i;

	for (i = 0; i < n; i++) {
		keys[i] = NULL;
		if (hs[i]->key == NULL)
			continue;
		if (data == NULL)
			data = json_loads(ev->data, JSON_DECODE_ANY, &jerr);
		if (flow_key_expand(hs[i]->key, ev->name, data, &keys[i], why,
		    sizeof why) == -1) {
			snprintf(err, errlen, "handler %s: %s", hs[i]->name,
			    why);
			while (i-- > 0)
				free(keys[i]);
			json_decref(data);
			return -1;
		}
	}
	json_decref(data);
	return 0;
}

/*
 * Enqueue ev (borrowed); cb gets (ok, reply line, length, arg) exactly
 * once, possibly before this returns.  With may_spool, an event Redis
 * cannot take goes to the spool, if there is one.
 */
void
enqueue_event(struct event *ev, int may_spool, enqueue_cb cb, void *arg)
{
	struct pending_enqueue	*pe;
	struct handler		*hs[MAX_FANOUT];
	struct call		*c;
	char			 eid[2 * JOB_ID_BYTES + 1];
	char			 jid[2 * JOB_ID_BYTES + 1], *line;
	char			*keys[MAX_FANOUT], err[512];
	size_t			 n, i, len;

	if (ev->id == NULL)
		util_random_hex(eid, JOB_ID_BYTES);
	else
		eid[0] = '\0';
	n = handler_match(cfg, ev->name, hs, MAX_FANOUT);
	/* and the handlers only other agents serve */
	n = routes_match(ev->name, hs, n, MAX_FANOUT);
	if (n == 0) {
		counters.unrouted++;
		log_info("event %s: no handler is configured for it",
		    ev->name);
		line = enqueue_reply(ev->id ? ev->id : eid, "", 0, 0, &len);
		cb(1, line, len, arg);
		free(line);
		return;
	}
	if (enqueue_keys(ev, hs, n, keys, err, sizeof err) == -1) {
		/* the event's fault: not spooled, answered invalid */
		line = proto_reply_error("invalid", err, NULL, &len);
		cb(0, line, len, arg);
		free(line);
		return;
	}
	pe = xcalloc(1, sizeof *pe);
	pe->cb = cb;
	pe->arg = arg;
	pe->event_id = xstrdup(ev->id ? ev->id : eid);
	pe->event = xstrdup(ev->name);
	if (may_spool && spool_enabled())
		pe->spool_line = enqueue_spool_line(ev, pe->event_id, &len);
	if (!redis_ready(rcmd)) {
		for (i = 0; i < n; i++)
			free(keys[i]);
		enqueue_fallback(pe, "Redis is not reachable");
		return;
	}

	c = call_start(SCRIPT_ENQUEUE);
	call_key(c, KEY_SEEN, pe->event_id);
	call_key(c, KEY_DELAYED, NULL);
	call_arg(c, "P", cfg->prefix);
	call_arg(c, "eid", pe->event_id);
	call_int(c, "dedup_ms", cfg->dedup_ms);
	call_int(c, "at_ms", ev->at_ms);
	call_arg(c, "event", ev->name);
	call_arg(c, "data", ev->data);
	call_key_arg(c, "notify_channel", KEY_NOTIFY, NULL);
	for (i = 0; i < n; i++) {
		util_random_hex(jid, JOB_ID_BYTES);
		call_arg(c, "jid", jid);
		call_arg(c, "handler", hs[i]->name);
		call_int(c, "delay_ms", ev->delay_ms + hs[i]->delay_ms);
		call_int(c, "max_attempts", hs[i]->attempts);
		call_int(c, "timeout_ms", hs[i]->timeout_ms);
		call_int(c, "backoff_ms", hs[i]->backoff_base_ms);
		call_int(c, "backoff_cap_ms", hs[i]->backoff_cap_ms);
		call_arg(c, "key", keys[i] ? keys[i] : "");
		call_int(c, "per_key", hs[i]->per_key > 0 ? hs[i]->per_key : 1);
		call_arg(c, "on_busy", flow_busy_words[hs[i]->on_busy]);
		free(keys[i]);
	}
	if (call_send_free(c, enqueue_on_reply, pe) == -1)
		enqueue_fallback(pe, "Redis is not reachable");
}

/* A spooled event was queued (remove it, go on) or not (retry later). */
static void
enqueue_on_replayed(int ok, const char *line, size_t len, void *arg)
{
	struct replay	*rp = arg;

	replaying = 0;
	if (ok) {
		spool_remove(rp->name);
		counters.replayed++;
		if (spool_count() == 0)
			log_notice("spool: every spooled event is queued");
		/* go on from the loop, not by recursion */
		enqueue_replay_in(0.);
	} else {
		log_warnx("spool: replay of %s stopped: %.*s", rp->name,
		    (int)len - 1, line);
		enqueue_replay_in(1.);
	}
	free(rp->name);
	free(rp);
}

/* The replay timer fired. */
static void
enqueue_on_replay_timer(EV_P_ ev_timer *w, int revents)
{
	enqueue_replay();
}

/* Replay the spool in s seconds, unless a replay is under way. */
static void
enqueue_replay_in(double s)
{
	static int	inited;

	if (!inited++)
		ev_init(&replay_timer, enqueue_on_replay_timer);
	if (replaying || ev_is_active(&replay_timer))
		return;
	ev_timer_set(&replay_timer, s, 0.);
	ev_timer_start(EV_DEFAULT_ &replay_timer);
}

/* Set the hook called after an enqueue: jobs may be ready to fetch. */
void
enqueue_init(void (*queued)(void))
{
	queued_hook = queued;
}

/*
 * Queue the spooled events, oldest first, one at a time: each file is
 * deleted only after its enqueue succeeded.
 */
void
enqueue_replay(void)
{
	struct replay	*rp;
	struct event	 ev;
	const char	*name;
	char		*buf, *json, err[300];
	long long	 spooled;
	size_t		 len;
	int		 later;

	if (replaying || !spool_enabled() || !redis_ready(rcmd))
		return;
	while ((buf = spool_oldest(&name, &len, &later)) != NULL) {
		spooled = strtoll(buf, &json, 10);
		if (*json == ' ' && proto_parse_event(json + 1,
		    len - (size_t)(json + 1 - buf), &ev, err, sizeof err) == 0)
			break;
		if (*json != ' ')
			snprintf(err, sizeof err, "not a spool line");
		log_warnx("spool: %s: %s", name, err);
		spool_reject(name);
		free(buf);
	}
	if (buf == NULL) {
		if (later)
			enqueue_replay_in(1.);	/* out of descriptors: wait */
		return;
	}
	free(buf);
	if (ev.delay_ms > 0) {
		ev.delay_ms -= util_wall_ms() - spooled;
		if (ev.delay_ms < 0)
			ev.delay_ms = 0;
	}
	rp = xcalloc(1, sizeof *rp);
	rp->name = xstrdup(name);
	replaying = 1;
	enqueue_event(&ev, 0, enqueue_on_replayed, rp);
	proto_event_clear(&ev);
}

/* Answer a request with the fields of o (stolen) and "ok":true. */
void
enqueue_answer(enqueue_cb cb, void *arg, json_t *o)
{
	char	*line;
	size_t	 len;

	line = proto_reply_ok(o, &len);
	cb(1, line, len, arg);
	free(line);
}

/* Answer a request with an error. */
void
enqueue_refuse(enqueue_cb cb, void *arg, const char *code, const char *msg)
{
	char	*line;
	size_t	 len;

	line = proto_reply_error(code, msg, NULL, &len);
	cb(0, line, len, arg);
	free(line);
}
