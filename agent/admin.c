/*
 * admin.c: the socket ops behind dispatchctl beyond emit and ping: looking
 * at queues, jobs and results, changing jobs on a person's request, the
 * effective handler settings, metrics, and running a handler once.  Each
 * op reads or changes Redis with one script or command and answers one
 * JSON line.
 */
#include "config.h"

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dispatchd.h"

#define SCAN_LIMIT	10000	/* members a status script looks at */
#define RESULTS_SCAN	10000	/* stream entries a filtered read looks at */
#define MAX_REMOTE	256	/* handlers only other agents serve */

/* One op waiting for Redis. */
struct pending_admin {
	enqueue_cb	 cb;
	void		*arg;
	enum request_op	 op;
	long		 limit;
	char		*id;		/* cancel: the job */
	char		*handler;	/* results filter */
	char		*event;
};

static const char *const job_fields[] = {
	"id", "handler", "event", "event_id", "state", "attempt", "failures",
	"max_attempts", "created_ms", "due_ms", "owner", "lease_ms",
	"died_ms", "last_error", "cancel", "data"
};
#define N_JOB_FIELDS	(sizeof job_fields / sizeof job_fields[0])

/* A JSON string from bytes that may not be valid UTF-8. */
static json_t *
admin_str(const char *s, size_t len)
{
	json_t	*v;
	char	*clean;
	size_t	 n;

	clean = util_utf8_clean(s ? s : "", s ? len : 0, &n);
	v = json_stringn(clean, n);
	free(clean);
	return v;
}

/* The pending op is over. */
static void
admin_done(struct pending_admin *pa)
{
	free(pa->id);
	free(pa->handler);
	free(pa->event);
	free(pa);
}

/*
 * A reply that is NULL, an error, or not an array of the shape given
 * (call_reply_is; NULL: any array): answer unavailable and say so.
 */
static int
admin_bad_reply(struct pending_admin *pa, const struct redisReply *r,
    const char *shape)
{
	char	msg[300];

	if (r != NULL && r->type == REDIS_REPLY_ARRAY &&
	    (shape == NULL || call_reply_is(r, shape)))
		return 0;
	snprintf(msg, sizeof msg, "redis: %s", r == NULL ?
	    "the connection was lost" : r->type == REDIS_REPLY_ERROR ?
	    r->str : "unexpected reply");
	enqueue_refuse(pa->cb, pa->arg, "unavailable", msg);
	admin_done(pa);
	return 1;
}

/* Integer value of a reply element (integer or numeric string). */
static long long
admin_int(const redisReply *r)
{
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_STRING)
		return strtoll(r->str, NULL, 10);
	return 0;
}

/* A job's fields (JOB_FIELDS order) as an object; data only if asked. */
static json_t *
admin_job(const redisReply *f, int with_data)
{
	json_t		*o = json_object(), *d;
	json_error_t	 jerr;
	size_t		 i;

	for (i = 0; i < f->elements && i < N_JOB_FIELDS; i++) {
		const redisReply	*e = f->element[i];

		if (strcmp(job_fields[i], "data") == 0) {
			if (!with_data)
				continue;
			d = json_loadb(e->str, e->len, JSON_DECODE_ANY, &jerr);
			json_object_set_new(o, "data", d ? d :
			    admin_str(e->str, e->len));
		} else if (strcmp(job_fields[i], "attempt") == 0 ||
		    strcmp(job_fields[i], "failures") == 0 ||
		    strcmp(job_fields[i], "max_attempts") == 0 ||
		    strcmp(job_fields[i], "cancel") == 0 ||
		    strstr(job_fields[i], "_ms") != NULL) {
			if (e->len > 0)
				json_object_set_new(o, job_fields[i],
				    json_integer(admin_int(e)));
		} else if (e->len > 0)
			json_object_set_new(o, job_fields[i],
			    admin_str(e->str, e->len));
	}
	return o;
}

/* A results stream entry {id, [k, v, ...]} as an object. */
static json_t *
admin_entry(const redisReply *e)
{
	json_t		*o = json_object();
	const redisReply *kv;
	size_t		 i;

	if (!call_reply_is(e, "sa") || !call_reply_strings(e->element[1]))
		return o;
	json_object_set_new(o, "id", admin_str(e->element[0]->str,
	    e->element[0]->len));
	kv = e->element[1];
	for (i = 0; i + 1 < kv->elements; i += 2) {
		char	*key = xstrndup(kv->element[i]->str,
		    kv->element[i]->len);

		json_object_set_new(o, key, admin_str(kv->element[i + 1]->str,
		    kv->element[i + 1]->len));
		free(key);
	}
	return o;
}

/* Does an entry's field equal want (NULL: no filter)? */
static int
admin_entry_has(const redisReply *e, const char *field, const char *want)
{
	const redisReply	*kv;
	size_t			 i;

	if (want == NULL)
		return 1;
	if (!call_reply_is(e, "sa") || !call_reply_strings(e->element[1]))
		return 0;
	kv = e->element[1];
	for (i = 0; i + 1 < kv->elements; i += 2)
		if (strcmp(kv->element[i]->str, field) == 0)
			return strcmp(kv->element[i + 1]->str, want) == 0;
	return 0;
}

/* status answered. */
static void
admin_on_status(const struct redisReply *r, void *arg)
{
	struct pending_admin	*pa = arg;
	json_t			*o, *hs, *ag, *h, *a;
	long long		 now, oldest;
	size_t			 i;
	int			 mismatch;
	const char		*who, *sig;
	const redisReply	*t;

	if (admin_bad_reply(pa, r, NULL) || !call_reply_is(r, "iaaiii")) {
		if (r != NULL && r->type == REDIS_REPLY_ARRAY)
			enqueue_refuse(pa->cb, pa->arg, "unavailable",
			    "unexpected status reply"), admin_done(pa);
		return;
	}
	now = r->element[0]->integer;
	hs = json_array();
	for (i = 0; i < r->element[1]->elements; i++) {
		t = r->element[1]->element[i];
		if (!call_reply_is(t, "siiiiii*"))
			continue;
		oldest = t->elements > 7 && t->element[7]->type ==
		    REDIS_REPLY_INTEGER ? t->element[7]->integer : -1;
		h = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
		    "name", t->element[0]->str,
		    "ready", (json_int_t)t->element[1]->integer,
		    "delayed", (json_int_t)t->element[2]->integer,
		    "running", (json_int_t)t->element[3]->integer,
		    "dead", (json_int_t)t->element[4]->integer,
		    "done_1h", (json_int_t)t->element[5]->integer,
		    "failed_1h", (json_int_t)t->element[6]->integer);
		if (oldest >= 0)
			json_object_set_new(h, "oldest_ready_s",
			    json_real((double)(now - oldest) / 1000.0));
		if (t->elements > 8 && t->element[8]->type ==
		    REDIS_REPLY_INTEGER && t->element[8]->integer >= 0) {
			json_object_set_new(h, "paused", json_true());
			if (t->element[8]->integer > 0)
				json_object_set_new(h, "paused_until_ms",
				    json_integer(t->element[8]->integer));
		}
		json_object_set_new(h, "agents",
		    routes_agents(t->element[0]->str, &mismatch));
		json_object_set_new(h, "exec_mismatch",
		    json_boolean(mismatch));
		admin_flow_status(h, t);
		json_object_set_new(h, "flow_mismatch", json_boolean(
		    routes_flow_mismatch(t->element[0]->str, &who, &sig)));
		json_array_append_new(hs, h);
	}
	ag = json_array();
	for (i = 0; i < r->element[2]->elements; i++) {
		t = r->element[2]->element[i];
		if (!call_reply_is(t, "siii??"))
			continue;
		a = json_pack("{s:o, s:b, s:f, s:I, s:o, s:o}",
		    "name", admin_str(t->element[0]->str, t->element[0]->len),
		    "alive", t->element[2]->integer != 0,
		    "heartbeat_age_s",
		    (double)(now - t->element[1]->integer) / 1000.0,
		    "running", (json_int_t)t->element[3]->integer,
		    "version", admin_str(t->element[4]->str,
		    t->element[4]->len),
		    "host", admin_str(t->element[5]->str, t->element[5]->len));
		json_array_append_new(ag, a);
	}
	o = json_pack("{s:b, s:o, s:o, s:b, s:I, s:I, s:I}", "redis", 1,
	    "handlers", hs, "agents", ag,
	    "truncated", r->element[3]->integer != 0,
	    "delayed_total", (json_int_t)r->element[4]->integer,
	    "dead_total", (json_int_t)r->element[5]->integer,
	    "spool_waiting", (json_int_t)spool_count());
	json_object_set_new(o, "cgroup", json_string(cgroup_mode()));
	enqueue_answer(pa->cb, pa->arg, o);
	admin_done(pa);
}

/* Send a script call for pa, and free it; a reply goes to done. */
static void
admin_script(struct pending_admin *pa, struct call *c, redis_cb done)
{
	if (call_send_free(c, done, pa) == -1) {
		enqueue_refuse(pa->cb, pa->arg, "unavailable", "Redis is not "
		    "reachable");
		admin_done(pa);
	}
}

/* status: per-handler queues, agents. */
static void
admin_status(struct pending_admin *pa, const struct request *req)
{
	const char	*remote[MAX_REMOTE];
	struct call	*c;
	size_t		 i, n;

	if (!redis_ready(rcmd)) {
		enqueue_answer(pa->cb, pa->arg, json_pack("{s:b, s:I, s:s}",
		    "redis", 0, "spool_waiting", (json_int_t)spool_count(),
		    "cgroup", cgroup_mode()));
		admin_done(pa);
		return;
	}
	c = call_start(SCRIPT_STATUS);
	call_key(c, KEY_DELAYED, NULL);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_DEAD, NULL);
	call_key(c, KEY_RESULTS, NULL);
	call_key(c, KEY_AGENTS, NULL);
	call_key(c, KEY_PAUSED, NULL);
	call_arg(c, "P", cfg->prefix);
	call_int(c, "limit", SCAN_LIMIT);
	for (i = 0; i < cfg->n_handlers; i++)
		call_arg(c, "handler", cfg->handlers[i]->name);
	/* and the handlers only other agents serve */
	n = routes_remote_names(remote, MAX_REMOTE);
	for (i = 0; i < n; i++)
		call_arg(c, "handler", remote[i]);
	admin_script(pa, c, admin_on_status);
}

/* jobs answered: a list of field lists. */
static void
admin_on_jobs(const struct redisReply *r, void *arg)
{
	struct pending_admin	*pa = arg;
	json_t			*jobs;
	size_t			 i;

	if (admin_bad_reply(pa, r, NULL))
		return;
	jobs = json_array();
	for (i = 0; i < r->elements; i++)
		json_array_append_new(jobs, admin_job(r->element[i], 0));
	enqueue_answer(pa->cb, pa->arg, json_pack("{s:o}", "jobs", jobs));
	admin_done(pa);
}

/* jobs [state] [handler] [limit]. */
static void
admin_jobs(struct pending_admin *pa, const struct request *req)
{
	struct call	*c;
	size_t		 i;

	c = call_start(SCRIPT_JOBS);
	call_key(c, KEY_DELAYED, NULL);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_DEAD, NULL);
	call_arg(c, "P", cfg->prefix);
	call_arg(c, "state", req->state ? req->state : "ready");
	call_arg(c, "handler_or_empty", req->handler ? req->handler : "");
	call_int(c, "limit", req->limit);
	for (i = 0; i < cfg->n_handlers; i++)
		call_arg(c, "handler", cfg->handlers[i]->name);
	if (req->handler != NULL && handler_find(cfg, req->handler) == NULL)
		call_arg(c, "handler", req->handler);
	admin_script(pa, c, admin_on_jobs);
}

/* job answered: {fields, results}. */
static void
admin_on_job(const struct redisReply *r, void *arg)
{
	struct pending_admin	*pa = arg;
	json_t			*res;
	size_t			 i;

	if (admin_bad_reply(pa, r, "aa"))
		return;
	res = json_array();
	for (i = 0; i < r->element[1]->elements; i++)
		json_array_append_new(res, admin_entry(r->element[1]->element[i]));
	if (r->element[0]->elements == 0 && json_array_size(res) == 0) {
		json_decref(res);
		enqueue_refuse(pa->cb, pa->arg, "not_found", "no such job");
	} else
		enqueue_answer(pa->cb, pa->arg, json_pack("{s:o, s:o}", "job",
		    r->element[0]->elements ? admin_job(r->element[0], 1) :
		    json_null(), "results", res));
	admin_done(pa);
}

/* job ID: its fields and results. */
static void
admin_job_op(struct pending_admin *pa, const struct request *req)
{
	struct call	*c;

	c = call_start(SCRIPT_JOB);
	call_key(c, KEY_RESULTS, NULL);
	call_arg(c, "P", cfg->prefix);
	call_arg(c, "jid", req->id);
	call_int(c, "limit", RESULTS_SCAN);
	admin_script(pa, c, admin_on_job);
}

/*
 * cancel, retry or purge answered {count, message}; a cancel of a running
 * job {1, "cancelling", the agent running it}, which stops it.
 */
static void
admin_on_changed(const struct redisReply *r, void *arg)
{
	struct pending_admin	*pa = arg;
	int			 running;

	running = pa->op == OP_CANCEL && r != NULL &&
	    r->type == REDIS_REPLY_ARRAY && r->elements == 3;
	if (admin_bad_reply(pa, r, running ? "iss" : "is"))
		return;
	if (running) {
		log_notice("admin: cancel: job %s runs on agent %s; asked it to "
		    "stop", pa->id, r->element[2]->str);
		enqueue_answer(pa->cb, pa->arg, json_pack("{s:I, s:b, s:o}",
		    "count", (json_int_t)r->element[0]->integer,
		    "cancelling", 1, "agent", admin_str(r->element[2]->str,
		    r->element[2]->len)));
	} else if (r->element[0]->integer == 0 && (pa->op == OP_CANCEL ||
	    (pa->op == OP_RETRY && strcmp(r->element[1]->str, "ok") != 0)))
		enqueue_refuse(pa->cb, pa->arg, strncmp(r->element[1]->str,
		    "no such job", 11) == 0 ? "not_found" : "conflict",
		    r->element[1]->str);
	else {
		log_notice("admin: %s: %lld jobs", pa->op == OP_CANCEL ?
		    "cancel" : pa->op == OP_RETRY ? "retry" : "purge",
		    r->element[0]->integer);
		enqueue_answer(pa->cb, pa->arg, json_pack("{s:I}", "count",
		    (json_int_t)r->element[0]->integer));
	}
	admin_done(pa);
}

/* cancel ID, retry ID, retry --dead, purge --dead. */
static void
admin_change(struct pending_admin *pa, const struct request *req)
{
	const char	*action;
	struct call	*c;

	if (req->op == OP_CANCEL)
		action = "cancel";
	else if (req->op == OP_RETRY)
		action = req->dead ? "retry_dead" : "retry";
	else
		action = "purge";
	pa->id = req->id ? xstrdup(req->id) : NULL;
	c = call_start(SCRIPT_ADMIN);
	call_key(c, KEY_DELAYED, NULL);
	call_key(c, KEY_DEAD, NULL);
	call_key(c, KEY_RESULTS, NULL);
	call_arg(c, "P", cfg->prefix);
	call_arg(c, "action", action);
	call_arg(c, "target", req->id ? req->id : req->handler ? req->handler :
	    "");
	call_int(c, "older_ms", req->older_ms);
	/* bulk changes take as many as one call may, unless told fewer */
	call_int(c, "limit", req->dead && !req->limit_given ? 10000 :
	    req->limit);
	call_int(c, "results_max", cfg->results_max);
	call_key_arg(c, "notify_channel", KEY_NOTIFY, NULL);
	admin_script(pa, c, admin_on_changed);
}

/* results answered: entries, newest first or oldest first. */
static void
admin_on_results(const struct redisReply *r, void *arg)
{
	struct pending_admin	*pa = arg;
	json_t			*res;
	const char		*last = NULL;
	size_t			 i;
	long			 n = 0;

	if (admin_bad_reply(pa, r, NULL))
		return;
	res = json_array();
	/* XREVRANGE gives newest first; the reply lists oldest first */
	for (i = 0; i < r->elements && n < pa->limit; i++) {
		if (admin_entry_has(r->element[i], "handler", pa->handler) &&
		    admin_entry_has(r->element[i], "event", pa->event)) {
			json_array_insert_new(res, 0, admin_entry(r->element[i]));
			n++;
		}
	}
	if (r->elements > 0)
		last = r->element[0]->element[0]->str;
	enqueue_answer(pa->cb, pa->arg, json_pack("{s:o, s:s?}", "results", res,
	    "last", last));
	admin_done(pa);
}

/* results answered, oldest first (a follow read after a stream id). */
static void
admin_on_results_after(const struct redisReply *r, void *arg)
{
	struct pending_admin	*pa = arg;
	json_t			*res;
	const char		*last = NULL;
	size_t			 i;

	if (admin_bad_reply(pa, r, NULL))
		return;
	res = json_array();
	for (i = 0; i < r->elements; i++)
		if (admin_entry_has(r->element[i], "handler", pa->handler) &&
		    admin_entry_has(r->element[i], "event", pa->event))
			json_array_append_new(res, admin_entry(r->element[i]));
	if (r->elements > 0)
		last = r->element[r->elements - 1]->element[0]->str;
	enqueue_answer(pa->cb, pa->arg, json_pack("{s:o, s:s?}", "results", res,
	    "last", last));
	admin_done(pa);
}

/* results [handler] [event] [limit] [after]. */
static void
admin_results(struct pending_admin *pa, const struct request *req)
{
	const char	*argv[6];
	char		*key, count[16], *after = NULL;
	int		 rc;
	long		 scan;

	key = schema_key(KEY_RESULTS, NULL);
	pa->limit = req->limit;
	pa->handler = req->handler ? xstrdup(req->handler) : NULL;
	pa->event = req->event ? xstrdup(req->event) : NULL;
	scan = pa->handler || pa->event ? RESULTS_SCAN : req->limit;
	snprintf(count, sizeof count, "%ld", req->after ? 1000 : scan);
	if (req->after != NULL) {
		xasprintf(&after, "(%s", req->after);
		argv[0] = "XRANGE";
		argv[1] = key;
		argv[2] = after;
		argv[3] = "+";
	} else {
		argv[0] = "XREVRANGE";
		argv[1] = key;
		argv[2] = "+";
		argv[3] = "-";
	}
	argv[4] = "COUNT";
	argv[5] = count;
	rc = redis_command(rcmd, req->after ? admin_on_results_after :
	    admin_on_results, pa, 6, argv, NULL);
	if (rc == -1) {
		enqueue_refuse(pa->cb, pa->arg, "unavailable", "Redis is not "
		    "reachable");
		admin_done(pa);
	}
	free(after);
	free(key);
}

/* Words as a JSON array. */
static json_t *
admin_words(char *const *w, size_t n)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; w != NULL && (n ? i < n : w[i] != NULL); i++)
		json_array_append_new(a, admin_str(w[i], strlen(w[i])));
	return a;
}

/* handlers: the effective settings of each handler. */
static void
admin_handlers(struct pending_admin *pa, const struct request *req)
{
	json_t		*hs = json_array(), *h;
	struct handler	*x;
	struct passwd	*pw;
	struct group	*gr;
	size_t		 i;

	for (i = 0; i < cfg->n_handlers; i++) {
		x = cfg->handlers[i];
		h = json_pack("{s:s, s:o, s:o, s:o, s:f, s:i, s:f, s:f, s:f, "
		    "s:i, s:o, s:o, s:i, s:i, s:o}",
		    "name", x->name, "on", admin_words(x->on, x->n_on),
		    "exec", admin_str(x->exec, strlen(x->exec)),
		    "argv", admin_words(x->argv, 0),
		    "timeout_s", (double)x->timeout_ms / 1000.0,
		    "attempts", x->attempts,
		    "backoff_base_s", (double)x->backoff_base_ms / 1000.0,
		    "backoff_cap_s", (double)x->backoff_cap_ms / 1000.0,
		    "delay_s", (double)x->delay_ms / 1000.0,
		    "concurrency", x->concurrency,
		    "workdir", admin_str(x->workdir, strlen(x->workdir)),
		    "env", admin_words(x->env, x->n_env),
		    "uid", (int)x->uid, "gid", (int)x->gid,
		    "declared", json_sprintf("%s:%d", x->file, x->line));
		if (x->max_running)
			json_object_set_new(h, "max_running",
			    json_integer(x->max_running));
		if (x->rate.count > 0)
			json_object_set_new(h, "rate", json_sprintf(
			    "%ld/%c burst %ld", x->rate.count,
			    x->rate.period_ms == 1000 ? 's' :
			    x->rate.period_ms == 60000 ? 'm' : 'h',
			    x->rate.burst));
		if ((pw = getpwuid(x->uid)) != NULL)
			json_object_set_new(h, "user", json_string(pw->pw_name));
		if ((gr = getgrgid(x->gid)) != NULL)
			json_object_set_new(h, "group", json_string(gr->gr_name));
		if (x->limit_nofile)
			json_object_set_new(h, "limit_nofile",
			    json_integer(x->limit_nofile));
		if (x->limit_nproc)
			json_object_set_new(h, "limit_nproc",
			    json_integer(x->limit_nproc));
		if (x->limit_as)
			json_object_set_new(h, "limit_as",
			    json_integer((json_int_t)x->limit_as));
		if (x->limit_cpu_ms)
			json_object_set_new(h, "limit_cpu_s",
			    json_real((double)x->limit_cpu_ms / 1000.0));
		json_array_append_new(hs, h);
	}
	enqueue_answer(pa->cb, pa->arg, json_pack("{s:s, s:o}", "config",
	    cfg->path, "handlers", hs));
	admin_done(pa);
}

/* A run-now finished: report everything the results stream would. */
static void
admin_on_ran(const struct run_result *res, const char *outcome,
    const char *error, const char *job_id, void *arg)
{
	struct pending_admin	*pa = arg;
	json_t			*o;

	o = json_pack("{s:s, s:s, s:b, s:I, s:I, s:o, s:o, s:I, s:b, s:s}",
	    "job", job_id, "outcome", outcome, "timed_out", res->timed_out,
	    "started_ms", (json_int_t)res->started_ms,
	    "duration_ms", (json_int_t)res->duration_ms,
	    "stdout", admin_str(res->out, res->out_len),
	    "stderr", admin_str(res->err, res->err_len),
	    "output_bytes", (json_int_t)res->output_bytes,
	    "truncated", res->truncated, "error", error);
	json_object_set_new(o, "exit", res->exited ?
	    json_integer(res->code) : json_null());
	json_object_set_new(o, "signal", res->signaled ?
	    json_integer(res->signo) : json_null());
	enqueue_answer(pa->cb, pa->arg, o);
	admin_done(pa);
}

/* run HANDLER: run it now as a job would run, queue nothing. */
static void
admin_run(struct pending_admin *pa, const struct request *req)
{
	struct handler	*h;
	char		 err[300];

	if ((h = handler_find(cfg, req->handler)) == NULL) {
		snprintf(err, sizeof err, "no handler named '%s'", req->handler);
		enqueue_refuse(pa->cb, pa->arg, "not_found", err);
		admin_done(pa);
		return;
	}
	log_notice("admin: running handler %s once, outside the queue",
	    h->name);
	if (dispatch_run_now(h, req->ev.name, req->ev.data, admin_on_ran, pa,
	    err, sizeof err) == -1) {
		enqueue_refuse(pa->cb, pa->arg, "unavailable", err);
		admin_done(pa);
	}
}

/* metrics: the Prometheus text, inside JSON. */
static void
admin_on_metrics(const char *text, size_t len, void *arg)
{
	struct pending_admin	*pa = arg;

	enqueue_answer(pa->cb, pa->arg, json_pack("{s:s%}", "text", text, len));
	admin_done(pa);
}

/* metrics: render them. */
static void
admin_metrics(struct pending_admin *pa, const struct request *req)
{
	metrics_render(admin_on_metrics, pa);
}

/* pause, resume: admin_flow.c serves them. */
static void
admin_flow(struct pending_admin *pa, const struct request *req)
{
	admin_flow_request(req, pa->cb, pa->arg);
	admin_done(pa);
}

/* The ops served here, by op; control.c serves the others. */
static void (*const admin_ops[OP_COUNT])(struct pending_admin *,
    const struct request *) = {
	[OP_STATUS] = admin_status,
	[OP_JOBS] = admin_jobs,
	[OP_JOB] = admin_job_op,
	[OP_CANCEL] = admin_change,
	[OP_RETRY] = admin_change,
	[OP_PURGE] = admin_change,
	[OP_RESULTS] = admin_results,
	[OP_HANDLERS] = admin_handlers,
	[OP_RUN] = admin_run,
	[OP_METRICS] = admin_metrics,
	[OP_PAUSE] = admin_flow,
	[OP_RESUME] = admin_flow,
};

/* Is op one of those served here? */
int
admin_serves(enum request_op op)
{
	return op < OP_COUNT && admin_ops[op] != NULL;
}

/*
 * Serve one of admin_ops; cb gets one reply line, possibly before this
 * returns.
 */
void
admin_request(const struct request *req, enqueue_cb cb, void *arg)
{
	struct pending_admin	*pa;

	if (!admin_serves(req->op)) {
		enqueue_refuse(cb, arg, "unknown_op", "not an admin op");
		return;
	}
	pa = xcalloc(1, sizeof *pa);
	pa->cb = cb;
	pa->arg = arg;
	pa->op = req->op;
	admin_ops[req->op](pa, req);
}
