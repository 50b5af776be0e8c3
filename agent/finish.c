/*
 * finish.c: the outbox of finished runs.  Each run's outcome becomes one
 * finish script call, queued in order and sent at once, all pipelined
 * (finishes of different jobs are independent, and waiting for each reply
 * let finished work pile up unrecorded under load).  A finish Redis did not
 * take stays queued and is sent again when Redis is back: it is never
 * dropped, and the fencing attempt number with the fin:<jid> record makes
 * a repeat harmless.  Until its finish is recorded a job keeps its lease
 * (the heartbeat renews it through finish_each).
 *
 * A finish may also fill the slot its run freed: the call is built when
 * it is sent, and the hooks' fill says then which rooms to ask for, so a
 * busy agent makes one call per job instead of a finish and a fetch.  A
 * finish sent again asks afresh; a fetch whose reply is lost is put back
 * by the heartbeat, as a lost fetch's is.
 */
#include "config.h"

#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatchd.h"

/* A finish waiting for Redis: what the call is built from. */
struct finish {
	TAILQ_ENTRY(finish) entry;
	char		*what;		/* job id and handler, for logs */
	char		*handler;
	char		*job_id;	/* its lease is renewed until sent */
	long		 attempt;
	enum job_outcome outcome;
	int64_t		 backoff_ms;
	struct run_result res;		/* out, err, setup_stage: ours */
	char		*out;		/* clean UTF-8 */
	size_t		 out_len;
	char		*err;
	size_t		 err_len;
	char		*error;		/* why the program never started */
	long		 asked;		/* jobs its call asked for */
	int		 inflight;
};
TAILQ_HEAD(finishes, finish);

static struct finishes		 unsent = TAILQ_HEAD_INITIALIZER(unsent);
static size_t			 n_unsent;
static ev_timer			 retry_timer;
static struct finish_hooks	 hooks;

/* Captured output (capped at max) as valid UTF-8. */
static char *
finish_clean(const char *buf, size_t len, size_t max, size_t *n)
{
	/* a full buffer was cut at the cap, maybe inside a character */
	if (buf != NULL && len == max)
		len = util_utf8_trim(buf, len);
	return util_utf8_clean(buf ? buf : "", len, n);
}

/* Add one result field. */
static void
finish_field(struct call *c, const char *name, const char *value, size_t len)
{
	call_arg(c, "field", name);
	call_argn(c, "value", value, len);
}

/* Add one numeric result field. */
static void
finish_number(struct call *c, const char *name, long long value)
{
	call_arg(c, "field", name);
	call_int(c, "value", value);
}

/* Add a figure the kernel counted, if it counted it. */
static void
finish_usage(struct call *c, const char *name, int64_t value)
{
	if (value >= 0)
		finish_number(c, name, (long long)value);
}

/* The call of finish f, asking for want jobs from rooms ("" for none). */
static struct call *
finish_call(const struct finish *f, long want, const char *rooms)
{
	const struct run_result	*res = &f->res;
	struct call		*c;

	c = call_start(SCRIPT_FINISH);
	call_key(c, KEY_JOB, f->job_id);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_RUNNING, cfg->name);
	call_key(c, KEY_DELAYED, NULL);
	call_key(c, KEY_DEAD, NULL);
	call_key(c, KEY_RESULTS, NULL);
	call_key(c, KEY_READY, f->handler);
	call_key(c, KEY_FIN, f->job_id);
	call_key(c, KEY_PAUSED, NULL);
	call_arg(c, "jid", f->job_id);
	call_arg(c, "agent", cfg->name);
	call_int(c, "attempt", f->attempt);
	call_arg(c, "outcome", job_outcome_name(f->outcome));
	call_int(c, "backoff_ms", f->backoff_ms);
	call_int(c, "results_max", cfg->results_max);
	call_int(c, "dead_ttl_s", SCHEMA_DEAD_TTL_S);
	/* a resend comes after a reconnect: two leases is ample for that */
	call_int(c, "remember_ms", cfg->lease_ms * 2);
	call_arg(c, "P", cfg->prefix);
	call_int(c, "lease_ms", cfg->lease_ms);
	call_int(c, "want", want);
	call_arg(c, "rooms", rooms);
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
	finish_field(c, "stdout", f->out, f->out_len);
	finish_field(c, "stderr", f->err, f->err_len);
	finish_number(c, "output_bytes", (long long)res->output_bytes);
	finish_number(c, "truncated", res->truncated);
	finish_field(c, "host", util_hostname(), strlen(util_hostname()));
	finish_usage(c, "cpu_user_us", res->usage.cpu_user_us);
	finish_usage(c, "cpu_system_us", res->usage.cpu_system_us);
	finish_usage(c, "memory_peak", res->usage.memory_peak);
	finish_usage(c, "oom_kills", res->usage.oom_kills);
	finish_usage(c, "tasks_peak", res->usage.tasks_peak);
	if (res->leftovers)
		finish_number(c, "leftovers", 1);
	finish_field(c, "error", f->error, strlen(f->error));
	return c;
}

/* Free a finish. */
static void
finish_free(struct finish *f)
{
	free(f->what);
	free(f->handler);
	free(f->job_id);
	free(f->out);
	free(f->err);
	free(f->error);
	free(f);
}


/*
 * The fetch a finish carried is over: jobs, or NULL if it did not happen;
 * wake is when a pause that held a handler asked for ends, or -1.
 */
static void
finish_fetched(struct finish *f, int64_t now, const struct redisReply *jobs,
    int64_t wake)
{
	long	asked = f->asked;

	if (asked == 0)
		return;
	f->asked = 0;
	hooks.fetched(now, jobs, wake, asked);
}

/*
 * The finish script answered {fate, stream id, now, fetched jobs, wake},
 * or the connection went.
 */
static void
finish_on_reply(const struct redisReply *reply, void *arg)
{
	struct finish	*f = arg;
	enum job_fate	 fate;

	f->inflight = 0;
	if (!call_reply_is(reply, "ssia*")) {
		finish_fetched(f, 0, NULL, -1);
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
	if (job_fate_parse(reply->element[0]->str, &fate) == -1)
		/* recorded, in words of another version: not ours to count */
		log_warnx("finish %s: recorded as %s", f->what,
		    reply->element[0]->str);
	else {
		if (fate == FATE_STALE)
			log_warnx("job %s: finished after its lease was lost; "
			    "recorded as stale", f->what);
		else if (fate == FATE_CANCELLED)
			log_notice("job %s: cancelled by an administrator; "
			    "recorded and deleted", f->what);
		else if (fate == FATE_RETRY)
			promote_kick();	/* re-arm for the retry's due time */
		counters_job(f->handler, fate, f->res.duration_ms);
	}
	/*
	 * Out of the queue before its jobs start: one that cannot start
	 * queues its own finish, and the flush must not send this one again.
	 */
	TAILQ_REMOVE(&unsent, f, entry);
	n_unsent--;
	finish_fetched(f, reply->element[2]->integer, reply->element[3],
	    reply->elements > 4 && reply->element[4]->type ==
	    REDIS_REPLY_INTEGER ? reply->element[4]->integer : -1);
	finish_free(f);
	finish_flush();
	hooks.recorded();
}

/* Send every waiting finish not already on its way, oldest first. */
void
finish_flush(void)
{
	struct finish	*f;
	struct call	*c;
	char		*rooms;
	long		 want = 0;
	int		 rc;

	TAILQ_FOREACH(f, &unsent, entry) {
		if (f->inflight)
			continue;
		if (!redis_ready(rcmd))
			break;
		rooms = hooks.fill(&want);
		c = finish_call(f, rooms != NULL ? want : 0, rooms != NULL ?
		    rooms : "");
		free(rooms);
		f->asked = rooms != NULL ? want : 0;
		rc = call_send_free(c, finish_on_reply, f);
		if (rc == -1) {
			finish_fetched(f, 0, NULL, -1);
			break;
		}
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

	f = xcalloc(1, sizeof *f);
	xasprintf(&f->what, "%s (%s)", j->id, j->h->name);
	f->handler = xstrdup(j->h->name);
	f->job_id = xstrdup(j->id);
	f->attempt = j->attempt;
	f->outcome = outcome;
	f->backoff_ms = outcome != JOB_FAIL ? 0 :
	    util_backoff_ms(j->h->backoff_base_ms, j->h->backoff_cap_ms,
	    (int)j->attempt, util_random01());
	f->res = *res;
	f->res.out = f->res.err = NULL;		/* the runner's, not ours */
	f->res.setup_stage = NULL;
	f->out = finish_clean(res->out, res->out_len, output_max, &f->out_len);
	f->err = finish_clean(res->err, res->err_len, output_max, &f->err_len);
	f->error = xstrdup(error);
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

/* Set up the retry timer and the hooks of the slot-filling fetch. */
void
finish_init(const struct finish_hooks *h)
{
	hooks = *h;
	ev_timer_init(&retry_timer, finish_on_retry, 1.0, 0.);
}
