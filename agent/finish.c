/*
 * finish.c: the outbox of finished runs.  Each run's outcome becomes one
 * finish script call, queued in order and sent at once, all pipelined
 * (finishes of different jobs are independent, and waiting for each reply
 * let finished work pile up unrecorded under load).  A finish Redis did not
 * take stays queued and is sent again when Redis is back: it is never
 * dropped, and the fencing attempt number with the fin:<jid> record makes
 * a repeat harmless.  Until its finish is recorded a job keeps its lease
 * (the heartbeat renews it through finish_each).
 */
#include "config.h"

#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatchd.h"

#define DEAD_TTL_S	(7 * 86400)

/* A finish waiting for Redis. */
struct finish {
	TAILQ_ENTRY(finish) entry;
	struct call	*call;
	char		*what;		/* job id and handler, for logs */
	char		*handler;	/* for the counters */
	char		*job_id;	/* its lease is renewed until sent */
	long		 attempt;
	int64_t		 duration_ms;
	int		 inflight;
};
TAILQ_HEAD(finishes, finish);

static struct finishes	 unsent = TAILQ_HEAD_INITIALIZER(unsent);
static size_t		 n_unsent;
static ev_timer		 retry_timer;
static void		(*recorded_hook)(void);

/* Add captured output (capped at max) as valid UTF-8. */
static void
finish_output(struct call *c, const char *name, const char *buf, size_t len,
    size_t max)
{
	char	*clean;
	size_t	 n;

	/* a full buffer was cut at the cap, maybe inside a character */
	if (buf != NULL && len == max)
		len = util_utf8_trim(buf, len);
	clean = util_utf8_clean(buf ? buf : "", len, &n);
	call_arg(c, "field", name);
	call_argn(c, "value", clean, n);
	free(clean);
}

/* Add one result field. */
static void
finish_field(struct call *c, const char *name, const char *value)
{
	call_arg(c, "field", name);
	call_arg(c, "value", value);
}

/* Add one numeric result field. */
static void
finish_number(struct call *c, const char *name, long long value)
{
	call_arg(c, "field", name);
	call_int(c, "value", value);
}

/* Free a finish. */
static void
finish_free(struct finish *f)
{
	call_free(f->call);
	free(f->what);
	free(f->handler);
	free(f->job_id);
	free(f);
}

/* A finish is in Redis: forget it, send the next, tell the drain. */
static void
finish_done(struct finish *f)
{
	TAILQ_REMOVE(&unsent, f, entry);
	n_unsent--;
	finish_free(f);
	finish_flush();
	if (recorded_hook != NULL)
		recorded_hook();
}

/* The finish script answered {fate, stream id}, or the connection went. */
static void
finish_on_reply(const struct redisReply *reply, void *arg)
{
	struct finish	*f = arg;
	enum job_fate	 fate;

	f->inflight = 0;
	if (call_reply_is(reply, "ss") &&
	    job_fate_parse(reply->element[0]->str, &fate) == -1) {
		/* recorded, in words of another version: not ours to count */
		log_warnx("finish %s: recorded as %s", f->what,
		    reply->element[0]->str);
		finish_done(f);
		return;
	}
	if (!call_reply_is(reply, "ss")) {
		if (reply != NULL)
			log_warnx("finish %s: %s; will retry", f->what,
			    reply->type == REDIS_REPLY_ERROR ? reply->str :
			    "unexpected reply");
		if (!ev_is_active(&retry_timer)) {
			/* a fired one-shot timer must be set again */
			ev_timer_set(&retry_timer, 1.0, 0.);
			ev_timer_start(EV_DEFAULT_ &retry_timer);
		}
		return;
	}
	if (fate == FATE_STALE)
		log_warnx("job %s: finished after its lease was lost; "
		    "recorded as stale", f->what);
	else if (fate == FATE_RETRY)
		promote_kick();		/* re-arm for the retry's due time */
	counters_job(f->handler, fate, f->duration_ms);
	finish_done(f);
}

/* Send every waiting finish not already on its way, oldest first. */
void
finish_flush(void)
{
	struct finish	*f;

	TAILQ_FOREACH(f, &unsent, entry) {
		if (f->inflight)
			continue;
		if (call_send(f->call, finish_on_reply, f) == -1)
			break;
		f->inflight = 1;
	}
}

/* Retry timer for finishes Redis refused. */
static void
finish_on_retry(EV_P_ ev_timer *w, int revents)
{
	finish_flush();
}

/*
 * Queue the finish of job j's run and send it.  error: why the program
 * never started, or "".  output_max: the cap its capture ran with.
 */
void
finish_queue(const struct job_info *j, const struct run_result *res,
    enum job_outcome outcome, const char *error, size_t output_max)
{
	struct finish	*f;
	struct call	*c;
	int64_t		 backoff;

	backoff = outcome != JOB_FAIL ? 0 :
	    util_backoff_ms(j->h->backoff_base_ms, j->h->backoff_cap_ms,
	    (int)j->attempt, util_random01());
	f = xcalloc(1, sizeof *f);
	xasprintf(&f->what, "%s (%s)", j->id, j->h->name);
	f->handler = xstrdup(j->h->name);
	f->job_id = xstrdup(j->id);
	f->attempt = j->attempt;
	f->duration_ms = res->duration_ms;

	f->call = c = call_start(SCRIPT_FINISH);
	call_key(c, KEY_JOB, j->id);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_RUNNING, cfg->name);
	call_key(c, KEY_DELAYED, NULL);
	call_key(c, KEY_DEAD, NULL);
	call_key(c, KEY_RESULTS, NULL);
	call_key(c, KEY_READY, j->h->name);
	call_key(c, KEY_FIN, j->id);
	call_arg(c, "jid", j->id);
	call_arg(c, "agent", cfg->name);
	call_int(c, "attempt", j->attempt);
	call_arg(c, "outcome", job_outcome_name(outcome));
	call_int(c, "backoff_ms", backoff);
	call_int(c, "results_max", cfg->results_max);
	call_int(c, "dead_ttl_s", DEAD_TTL_S);
	/* a resend comes after a reconnect: two leases is ample for that */
	call_int(c, "remember_ms", cfg->lease_ms * 2);
	/* no exit code when killed by a signal, no signal when it exited */
	call_arg(c, "field", "exit");
	if (res->exited)
		call_int(c, "value", res->code);
	else
		call_arg(c, "value", "");
	call_arg(c, "field", "signal");
	if (res->signaled)
		call_int(c, "value", res->signo);
	else
		call_arg(c, "value", "");
	finish_number(c, "timed_out", res->timed_out);
	finish_number(c, "started_ms", res->started_ms);
	finish_number(c, "duration_ms", res->duration_ms);
	finish_output(c, "stdout", res->out, res->out_len, output_max);
	finish_output(c, "stderr", res->err, res->err_len, output_max);
	call_arg(c, "field", "output_bytes");
	call_argf(c, "value", "%llu", (unsigned long long)res->output_bytes);
	finish_number(c, "truncated", res->truncated);
	finish_field(c, "host", util_hostname());
	finish_field(c, "error", error);
	TAILQ_INSERT_TAIL(&unsent, f, entry);
	n_unsent++;
	finish_flush();
}

/* How many finishes Redis has not recorded yet. */
size_t
finish_pending(void)
{
	return n_unsent;
}

/* Call fn with the job id and attempt of each finish not yet recorded. */
void
finish_each(void (*fn)(const char *, long, void *), void *arg)
{
	struct finish	*f;

	TAILQ_FOREACH(f, &unsent, entry)
		fn(f->job_id, f->attempt, arg);
}

/* Set up the retry timer; recorded is called after each finish lands. */
void
finish_init(void (*recorded)(void))
{
	recorded_hook = recorded;
	ev_timer_init(&retry_timer, finish_on_retry, 1.0, 0.);
}
