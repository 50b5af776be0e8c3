/*
 * admin_flow.c: the socket ops of flow control, pause and resume.  The
 * pause lives in Redis (the paused hash, one script call), so it holds on
 * every agent and outlives their restarts; the fetch loop reads it.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dispatchd.h"

/* One pause or resume waiting for Redis. */
struct pending_flow {
	enqueue_cb	 cb;
	void		*arg;
	enum request_op	 op;
	char		*handler;
};

/* The pause script answered {was paused, until_ms, now}. */
static void
admin_flow_on_reply(const struct redisReply *r, void *arg)
{
	struct pending_flow	*pf = arg;
	json_t			*o;
	long long		 until;

	if (!call_reply_is(r, "iii")) {
		enqueue_refuse(pf->cb, pf->arg, "unavailable", r == NULL ?
		    "redis: the connection was lost" : r->type ==
		    REDIS_REPLY_ERROR ? r->str : "redis: unexpected reply");
		goto done;
	}
	until = r->element[1]->integer;
	o = json_pack("{s:s, s:b, s:b}", "handler", pf->handler,
	    "paused", pf->op == OP_PAUSE,
	    "was_paused", r->element[0]->integer != 0);
	if (pf->op == OP_PAUSE && until > 0)
		json_object_set_new(o, "until_ms", json_integer(until));
	log_notice("admin: %s %s%s", pf->op == OP_PAUSE ? "pause" : "resume",
	    pf->handler, pf->op == OP_PAUSE && until == 0 ?
	    " until resumed" : "");
	enqueue_answer(pf->cb, pf->arg, o);
done:
	free(pf->handler);
	free(pf);
}

/* pause HANDLER [for], resume HANDLER; cb gets the reply line. */
void
admin_flow_request(const struct request *req, enqueue_cb cb, void *arg)
{
	struct pending_flow	*pf;
	struct call		*c;
	json_t			*who;
	int			 mismatch, known;
	char			 msg[300];

	who = routes_agents(req->handler, &mismatch);
	known = json_array_size(who) > 0 ||
	    handler_find(cfg, req->handler) != NULL;
	json_decref(who);
	if (!known) {
		/* a typo would pause nothing and say so nowhere */
		snprintf(msg, sizeof msg, "no live agent serves handler %s",
		    req->handler);
		enqueue_refuse(cb, arg, "not_found", msg);
		return;
	}
	pf = xcalloc(1, sizeof *pf);
	pf->cb = cb;
	pf->arg = arg;
	pf->op = req->op;
	pf->handler = xstrdup(req->handler);
	c = call_start(SCRIPT_PAUSE);
	call_key(c, KEY_PAUSED, NULL);
	call_arg(c, "action", req->op == OP_PAUSE ? "pause" : "resume");
	call_arg(c, "handler", req->handler);
	call_int(c, "for_ms", req->op == OP_PAUSE ? req->for_ms : 0);
	call_key_arg(c, "notify_channel", KEY_NOTIFY, NULL);
	if (call_send_free(c, admin_flow_on_reply, pf) == -1) {
		enqueue_refuse(cb, arg, "unavailable",
		    "Redis is not reachable");
		free(pf->handler);
		free(pf);
	}
}

/*
 * Add a status row's flow fields (t: the status script's row for one
 * handler) to h: busy keys, what waits behind them, the fleet count, and
 * why ready jobs do not start ("held": paused, fleet limit, rate; "key
 * busy" when jobs wait for their key).
 */
void
admin_flow_status(json_t *h, const struct redisReply *t)
{
	const struct redisReply	*k;
	struct handler		*mine;
	json_t			*keys, *held;
	long long		 ready, fleet;
	double			 tokens;
	size_t			 i;

	if (!call_reply_is(t, "s????????iiais*"))
		return;
	mine = handler_find(cfg, t->element[0]->str);
	ready = t->element[1]->integer;
	fleet = t->element[12]->integer;
	held = json_array();
	if (t->element[8]->integer >= 0)
		json_array_append_new(held, json_string("paused"));
	if (mine != NULL && mine->max_running > 0) {
		json_object_set_new(h, "running_fleet", json_integer(fleet));
		json_object_set_new(h, "max_running",
		    json_integer(mine->max_running));
		if (fleet >= mine->max_running && ready > 0)
			json_array_append_new(held, json_string("fleet limit"));
	}
	if (t->element[13]->len > 0) {
		tokens = strtod(t->element[13]->str, NULL);
		json_object_set_new(h, "rate_tokens", json_real(tokens));
		if (tokens < 1 && ready > 0)
			json_array_append_new(held, json_string("rate"));
	}
	if (t->element[9]->integer > 0 || (mine != NULL && mine->key)) {
		json_object_set_new(h, "busy_keys",
		    json_integer(t->element[9]->integer));
		json_object_set_new(h, "waiting",
		    json_integer(t->element[10]->integer));
		keys = json_array();
		for (i = 0; i < t->element[11]->elements; i++) {
			k = t->element[11]->element[i];
			if (call_reply_is(k, "sii"))
				json_array_append_new(keys, json_pack(
				    "{s:s%, s:I, s:I}", "key", k->element[0]->str,
				    k->element[0]->len, "held",
				    (json_int_t)k->element[1]->integer,
				    "waiting", (json_int_t)k->element[2]->integer));
		}
		json_object_set_new(h, "keys", keys);
		if (t->element[10]->integer > 0)
			json_array_append_new(held, json_string("key busy"));
	}
	if (json_array_size(held) > 0)
		json_object_set_new(h, "held", held);
	else
		json_decref(held);
}
