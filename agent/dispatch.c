/*
 * dispatch.c: the agent's work loop.  It owns the worker slots, fetches
 * jobs for the handlers that have a free slot, starts their runs, renews
 * their leases with the heartbeat, recovers jobs whose agent died, and
 * records each outcome with the finish script.  A finish that Redis did not
 * take is kept, in order, and sent again when Redis is back: it is never
 * dropped, and the fencing attempt number makes a repeat harmless.
 */
#include "config.h"

#include <sys/queue.h>

#ifdef HAVE_MALLOC_TRIM
#include <malloc.h>
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dispatchd.h"

#define POLL_S		1.0	/* fetch fallback when hints are lost */
#define START_PAUSE_MS	1000	/* no fetching after a failed start */
#define RECOVER_S	2.0
#define RECOVER_LIMIT	500
#define DEAD_TTL_S	(7 * 86400)

/* A job running on this agent. */
struct job {
	TAILQ_ENTRY(job) entry;
	char		*id;
	char		*event;
	char		*event_id;
	struct handler	*h;
	long		 attempt;
	long		 max_attempts;
	struct run	*run;
	size_t		 output_max;	/* the cap its capture started with */
	int		 pid;		/* the handler's process group */
	unsigned long long started;	/* its start time, for the state file */
	int64_t		 renewed_mono;	/* when Redis last confirmed the lease */
	int		 lost;		/* the lease went to someone else */
	int		 release;	/* stopped by the drain */
};
TAILQ_HEAD(jobs, job);

/* A finish waiting for Redis: the script's keys and arguments. */
struct finish {
	TAILQ_ENTRY(finish) entry;
	int		 argc;
	int		 cap;		/* room in argv and lens */
	char		**argv;
	size_t		*lens;
	char		*what;		/* job id and handler, for logs */
	char		*handler;	/* for metrics */
	char		*job_id;	/* its lease is renewed until sent */
	long		 attempt;
	int64_t		 duration_ms;
	int		 inflight;
};
TAILQ_HEAD(finishes, finish);

#define FETCH_MAX	64	/* jobs started per fetch reply, at most */

static struct jobs	 running = TAILQ_HEAD_INITIALIZER(running);
static struct jobs	 ran_now = TAILQ_HEAD_INITIALIZER(ran_now);
static int		 n_ran_now;	/* dispatchctl run children */
static struct finishes	 unsent = TAILQ_HEAD_INITIALIZER(unsent);
static int		 n_running;
static int		 fetching;
static int		 draining;
static size_t		 rotate;		/* fairness among handlers */
static int64_t		 fetch_paused_until;	/* after a failed start */
static ev_timer		 poll_timer;
static ev_timer		 lease_timer;
static ev_timer		 recover_timer;
static ev_timer		 retry_timer;
static ev_idle		 kick_idle;
static char		 host[256];
static char		 token[128];		/* this life, in the heartbeat */
static char		 prev_token[640];	/* previous lives' */
static int		 claimed;		/* the name is ours in Redis */
static int		 claiming;		/* the claim is under way */
static int		 leader;		/* we hold the events lead */
static int64_t		 leader_mono;		/* when Redis last said so */
static void		(*on_claimed)(void);	/* main's: the agent is ready */
static void		(*drained)(void);
static void		(*goodbye_done)(void);

static void	 dispatch_fetch(void);
static void	 dispatch_setup_error(const struct job *,
		    const struct run_result *, char *, size_t);
static const char *dispatch_outcome(const struct job *,
		    const struct run_result *);
static void	 dispatch_on_recover(struct ev_loop *, ev_timer *, int);
static void	 dispatch_flush(void);
static void	 dispatch_check_drained(void);

/* Write the running handlers' process groups to the state file. */
static void
dispatch_save_state(void)
{
	struct job		*j;
	int			*pids;
	unsigned long long	*started;
	size_t			 n = 0;

	pids = xcalloc((size_t)(n_running + n_ran_now) + 1, sizeof *pids);
	started = xcalloc((size_t)(n_running + n_ran_now) + 1,
	    sizeof *started);
	TAILQ_FOREACH(j, &running, entry)
		if (j->pid > 0) {
			pids[n] = j->pid;
			started[n++] = j->started;
		}
	TAILQ_FOREACH(j, &ran_now, entry)
		if (j->pid > 0) {
			pids[n] = j->pid;
			started[n++] = j->started;
		}
	state_save(token, pids, started, n);
	free(pids);
	free(started);
}

/* Free a job and its hold on its handler's settings. */
static void
dispatch_free_job(struct job *j)
{
	handler_release(j->h);
	free(j->id);
	free(j->event);
	free(j->event_id);
	free(j);
}

/*
 * A JSON string from text read back from Redis, which is a trust boundary:
 * whatever was written there, the handler gets valid JSON.
 */
static json_t *
dispatch_jstr(const char *text)
{
	json_t	*v;
	char	*clean;
	size_t	 n;

	clean = util_utf8_clean(text, strlen(text), &n);
	v = json_stringn(clean, n);
	free(clean);
	return v;
}

/* Build the job JSON given to the handler on stdin. */
static char *
dispatch_job_json(const struct job *j, const char *data, double emitted_s,
    double deadline_s, size_t *len)
{
	json_t		*o, *d;
	json_error_t	 jerr;
	char		*s;

	d = json_loads(data, JSON_DECODE_ANY, &jerr);
	if (d == NULL)
		d = dispatch_jstr(data);	/* not ours: keep it, as text */
	o = json_pack("{s:o, s:o, s:o, s:s, s:o, s:i, s:i, s:f, s:f}",
	    "id", dispatch_jstr(j->id), "event", dispatch_jstr(j->event),
	    "event_id", dispatch_jstr(j->event_id),
	    "handler", j->h->name, "data", d, "attempt", (json_int_t)j->attempt,
	    "max_attempts", (json_int_t)j->max_attempts,
	    "emitted_at", emitted_s, "deadline", deadline_s);
	/* 13 digits: Unix seconds with milliseconds */
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT |
	    JSON_REAL_PRECISION(13))) == NULL)
		fatalx("dispatch: cannot build the job JSON");
	json_decref(o);
	*len = strlen(s);
	s = xreallocarray(s, *len + 2, 1);
	s[(*len)++] = '\n';
	s[*len] = '\0';
	return s;
}

/* Is NAME set by one of the handler's env lines? */
static int
dispatch_env_has(const struct handler *h, const char *name)
{
	size_t	i, n = strlen(name);

	for (i = 0; i < h->n_env; i++)
		if (strncmp(h->env[i], name, n) == 0 && h->env[i][n] == '=')
			return 1;
	return 0;
}

/* The handler's environment: the fixed set, then its own env lines. */
static char **
dispatch_envp(const struct job *j)
{
	char	**envp;
	size_t	  n = 0, i;

	envp = xcalloc(10 + j->h->n_env, sizeof *envp);
	if (!dispatch_env_has(j->h, "PATH"))
		envp[n++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
	if (!dispatch_env_has(j->h, "HOME"))
		xasprintf(&envp[n++], "HOME=%s", j->h->home);
	if (!dispatch_env_has(j->h, "LANG"))
		envp[n++] = xstrdup("LANG=C.UTF-8");
	xasprintf(&envp[n++], "DISPATCH_JOB_ID=%s", j->id);
	xasprintf(&envp[n++], "DISPATCH_EVENT=%s", j->event);
	xasprintf(&envp[n++], "DISPATCH_EVENT_ID=%s", j->event_id);
	xasprintf(&envp[n++], "DISPATCH_HANDLER=%s", j->h->name);
	xasprintf(&envp[n++], "DISPATCH_ATTEMPT=%ld", j->attempt);
	xasprintf(&envp[n++], "DISPATCH_MAX_ATTEMPTS=%ld", j->max_attempts);
	for (i = 0; i < j->h->n_env; i++)
		envp[n++] = xstrdup(j->h->env[i]);
	envp[n] = NULL;
	return envp;
}

/* Add an argument the finish takes ownership of. */
static void
dispatch_arg_own(struct finish *f, char *s, size_t len)
{
	if (f->argc == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 32;
		f->argv = xreallocarray(f->argv, (size_t)f->cap,
		    sizeof *f->argv);
		f->lens = xreallocarray(f->lens, (size_t)f->cap,
		    sizeof *f->lens);
	}
	f->argv[f->argc] = s;
	f->lens[f->argc++] = len;
}

/* Add a printf-formatted argument. */
static void __attribute__((format(printf, 2, 3)))
dispatch_argf(struct finish *f, const char *fmt, ...)
{
	va_list	 ap;
	char	*s;
	int	 n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("vasprintf");
	dispatch_arg_own(f, s, (size_t)n);
}

/* Add captured output (capped at max) as valid UTF-8. */
static void
dispatch_arg_output(struct finish *f, const char *buf, size_t len,
    size_t max)
{
	char	*clean;
	size_t	 n;

	/* a full buffer was cut at the cap, maybe inside a character */
	if (buf != NULL && len == max)
		len = util_utf8_trim(buf, len);
	clean = util_utf8_clean(buf ? buf : "", len, &n);
	dispatch_arg_own(f, clean, n);
}

/* Free a finish. */
static void
dispatch_free_finish(struct finish *f)
{
	int	i;

	for (i = 0; i < f->argc; i++)
		free(f->argv[i]);
	free(f->argv);
	free(f->lens);
	free(f->what);
	free(f->handler);
	free(f->job_id);
	free(f);
}

/* The finish script answered. */
static void
dispatch_on_finished(const struct redisReply *reply, void *arg)
{
	struct finish	*f = arg;

	f->inflight = 0;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != 2) {
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
	if (strcmp(reply->element[0]->str, "stale") == 0)
		log_warnx("job %s: finished after its lease was lost; "
		    "recorded as stale", f->what);
	else if (strcmp(reply->element[0]->str, "retry") == 0)
		promote_kick();		/* re-arm for the retry's due time */
	metrics_job(f->handler, reply->element[0]->str, f->duration_ms);
	TAILQ_REMOVE(&unsent, f, entry);
	dispatch_free_finish(f);
	counters.jobs_finished++;
	dispatch_flush();
	dispatch_check_drained();
}

/*
 * Send every waiting finish not already on its way, oldest first, all
 * pipelined: finishes of different jobs are independent, and waiting for
 * each reply let finished work pile up unrecorded under load.
 */
static void
dispatch_flush(void)
{
	struct finish	*f;

	TAILQ_FOREACH(f, &unsent, entry) {
		if (f->inflight)
			continue;
		if (redis_script(rcmd, SCRIPT_FINISH, dispatch_on_finished, f,
		    8, f->argc, (const char **)f->argv, f->lens) == -1)
			break;
		f->inflight = 1;
	}
}

/* Retry timer for finishes Redis refused. */
static void
dispatch_on_retry(EV_P_ ev_timer *w, int revents)
{
	dispatch_flush();
}

/* Log one line per outcome with what a person needs to find the job. */
static void
dispatch_log_outcome(const struct job *j, const struct run_result *res,
    const char *outcome, const char *error)
{
	char	how[300];

	if (error[0] != '\0')
		snprintf(how, sizeof how, "%s", error);
	else if (res->timed_out)
		snprintf(how, sizeof how, "timed out");
	else if (res->signaled)
		snprintf(how, sizeof how, "killed by signal %d", res->signo);
	else
		snprintf(how, sizeof how, "exit %d", res->code);
	if (strcmp(outcome, "ok") == 0)
		outcome = "done";
	else if (strcmp(outcome, "fail") == 0)
		outcome = "failed";
	else if (strcmp(outcome, "fatal") == 0)
		outcome = "failed permanently";
	else
		outcome = "stopped and put back";
	log_msg(strcmp(outcome, "done") == 0 ? LOG_INFO : LOG_NOTICE,
	    "job %s event %s handler %s attempt %ld: %s, %s, %lld ms", j->id,
	    j->event, j->h->name, j->attempt, outcome, how,
	    (long long)res->duration_ms);
}

/* A run is over: free its slot and queue its finish. */
static void
dispatch_on_run_done(const struct run_result *res, void *arg)
{
	struct job	*j = arg;
	struct finish	*f;
	const char	*outcome;
	char		 error[256];
	int64_t		 backoff;

	dispatch_setup_error(j, res, error, sizeof error);
	outcome = dispatch_outcome(j, res);
	dispatch_log_outcome(j, res, outcome, error);
	backoff = strcmp(outcome, "fail") != 0 ? 0 :
	    util_backoff_ms(j->h->backoff_base_ms, j->h->backoff_cap_ms,
	    (int)j->attempt, util_random01());

	f = xcalloc(1, sizeof *f);
	xasprintf(&f->what, "%s (%s)", j->id, j->h->name);
	f->handler = xstrdup(j->h->name);
	f->job_id = xstrdup(j->id);
	f->attempt = j->attempt;
	f->duration_ms = res->duration_ms;
	dispatch_argf(f, "%sjob:%s", cfg->prefix, j->id);
	dispatch_argf(f, "%sleases", cfg->prefix);
	dispatch_argf(f, "%sagent:%s:running", cfg->prefix, cfg->name);
	dispatch_argf(f, "%sdelayed", cfg->prefix);
	dispatch_argf(f, "%sdead", cfg->prefix);
	dispatch_argf(f, "%sresults", cfg->prefix);
	dispatch_argf(f, "%sready:%s", cfg->prefix, j->h->name);
	dispatch_argf(f, "%sfin:%s", cfg->prefix, j->id);
	dispatch_argf(f, "%s", j->id);
	dispatch_argf(f, "%s", cfg->name);
	dispatch_argf(f, "%ld", j->attempt);
	dispatch_argf(f, "%s", outcome);
	dispatch_argf(f, "%lld", (long long)backoff);
	dispatch_argf(f, "%ld", cfg->results_max);
	dispatch_argf(f, "%d", DEAD_TTL_S);
	/* a resend comes after a reconnect: two leases is ample for that */
	dispatch_argf(f, "%lld", (long long)cfg->lease_ms * 2);
	dispatch_argf(f, "exit");
	if (res->exited)
		dispatch_argf(f, "%d", res->code);
	else
		dispatch_argf(f, "%s", "");
	dispatch_argf(f, "signal");
	if (res->signaled)
		dispatch_argf(f, "%d", res->signo);
	else
		dispatch_argf(f, "%s", "");
	dispatch_argf(f, "timed_out");
	dispatch_argf(f, "%d", res->timed_out);
	dispatch_argf(f, "started_ms");
	dispatch_argf(f, "%lld", (long long)res->started_ms);
	dispatch_argf(f, "duration_ms");
	dispatch_argf(f, "%lld", (long long)res->duration_ms);
	dispatch_argf(f, "stdout");
	dispatch_arg_output(f, res->out, res->out_len, j->output_max);
	dispatch_argf(f, "stderr");
	dispatch_arg_output(f, res->err, res->err_len, j->output_max);
	dispatch_argf(f, "output_bytes");
	dispatch_argf(f, "%llu", (unsigned long long)res->output_bytes);
	dispatch_argf(f, "truncated");
	dispatch_argf(f, "%d", res->truncated);
	dispatch_argf(f, "host");
	dispatch_argf(f, "%s", host);
	dispatch_argf(f, "error");
	dispatch_argf(f, "%s", error);
	TAILQ_INSERT_TAIL(&unsent, f, entry);

	TAILQ_REMOVE(&running, j, entry);
	n_running--;
	dispatch_free_job(j);
	dispatch_flush();
	dispatch_kick();
}

/* Fill a run spec for the job (envp and input stay the caller's). */
static void
dispatch_spec(struct run_spec *spec, const struct job *j, char **envp,
    const char *input, size_t len)
{
	memset(spec, 0, sizeof *spec);
	spec->argv = j->h->argv;
	spec->envp = envp;
	spec->workdir = j->h->workdir;
	spec->input = input;
	spec->input_len = len;
	spec->timeout_ms = j->h->timeout_ms;
	spec->kill_grace_ms = cfg->kill_grace_ms;
	spec->output_max = j->output_max;
	spec->set_user = j->h->set_user;
	spec->uid = j->h->uid;
	spec->gid = j->h->gid;
	spec->groups = j->h->groups;
	spec->n_groups = j->h->n_groups;
	spec->limit_nofile = j->h->limit_nofile;
	spec->limit_nproc = j->h->limit_nproc;
	spec->limit_as = j->h->limit_as;
	spec->limit_cpu_ms = j->h->limit_cpu_ms;
}

/* The error text for a run that failed before its program started. */
static void
dispatch_setup_error(const struct job *j, const struct run_result *res,
    char *error, size_t errlen)
{
	const char	*hint = "";

	error[0] = '\0';
	if (res->setup_stage == NULL)
		return;
	/* the kernel says ENOENT for a script whose #! interpreter is gone */
	if (strcmp(res->setup_stage, "exec") == 0 &&
	    res->setup_errno == ENOENT && access(j->h->argv[0], F_OK) == 0)
		hint = " (the program is there: is its #! interpreter?)";
	snprintf(error, errlen, "%s %s: %s%s", res->setup_stage,
	    strcmp(res->setup_stage, "chdir") == 0 ? j->h->workdir :
	    j->h->argv[0], strerror(res->setup_errno), hint);
}

/* The finish outcome of a run: ok, fail, fatal, or release. */
static const char *
dispatch_outcome(const struct job *j, const struct run_result *res)
{
	if (j->release)
		return "release";
	switch (util_exit_class(res->exited, res->code, res->signaled,
	    res->timed_out)) {
	case EXIT_CLASS_OK:
		return "ok";
	case EXIT_CLASS_FATAL:
		return "fatal";
	default:
		return "fail";
	}
}

/* A handler run on request (dispatchctl run), outside the queue. */
struct run_now {
	struct job	 job;
	run_now_cb	 cb;
	void		*arg;
};

/* A run-now is over: report, free; a drain may be waiting for it. */
static void
dispatch_on_ran_now(const struct run_result *res, void *arg)
{
	struct run_now	*rn = arg;
	char		 error[256];
	const char	*outcome;

	TAILQ_REMOVE(&ran_now, &rn->job, entry);
	n_ran_now--;
	dispatch_setup_error(&rn->job, res, error, sizeof error);
	outcome = dispatch_outcome(&rn->job, res);
	rn->cb(res, strcmp(outcome, "ok") == 0 ? "done" : strcmp(outcome,
	    "fatal") == 0 ? "dead" : strcmp(outcome, "release") == 0 ?
	    "stopped" : "retry", error, rn->job.id, rn->arg);
	free(rn->job.id);
	free(rn->job.event);
	handler_release(rn->job.h);
	free(rn);
	dispatch_check_drained();
}

/*
 * Run handler h once, now, exactly as a job of event with data would run
 * (user, environment, stdin, timeout, output caps), without queueing
 * anything.  cb gets the result.  -1 with err when it cannot start.
 */
int
dispatch_run_now(struct handler *h, const char *event, const char *data,
    run_now_cb cb, void *arg, char *err, size_t errlen)
{
	struct run_now	*rn;
	struct run_spec	 spec;
	char		*input, **envp, hex[33];
	size_t		 len;
	unsigned long long ticks;
	int64_t		 now = util_wall_ms();

	if (draining) {
		snprintf(err, errlen, "the agent is stopping");
		return -1;
	}
	rn = xcalloc(1, sizeof *rn);
	util_random_hex(hex, 16);
	xasprintf(&rn->job.id, "run-%s", hex);
	rn->job.event = xstrdup(event);
	rn->job.event_id = rn->job.id;
	rn->job.h = h;
	handler_hold(h);
	rn->job.attempt = 1;
	rn->job.max_attempts = h->attempts;
	rn->job.output_max = cfg->output_max;
	rn->cb = cb;
	rn->arg = arg;
	input = dispatch_job_json(&rn->job, data, (double)now / 1000.0,
	    (double)(now + h->timeout_ms) / 1000.0, &len);
	envp = dispatch_envp(&rn->job);
	dispatch_spec(&spec, &rn->job, envp, input, len);
	ticks = state_ticks_now();
	rn->job.run = runner_start(&spec, dispatch_on_ran_now, rn, err, errlen);
	util_free_words(envp);
	free(input);
	if (rn->job.run == NULL) {
		free(rn->job.id);
		free(rn->job.event);
		handler_release(h);
		free(rn);
		return -1;
	}
	/* in the drain's and the state file's view, as a job is */
	TAILQ_INSERT_TAIL(&ran_now, &rn->job, entry);
	n_ran_now++;
	rn->job.pid = runner_pid(rn->job.run);
	rn->job.started = ticks;
	if (state_add(rn->job.pid, rn->job.started))
		dispatch_save_state();
	return 0;
}

/* Start the run of a fetched job; a failure to start is its outcome. */
static void
dispatch_run(struct job *j, const char *data, int64_t created_ms,
    int64_t now_ms)
{
	struct run_spec		 spec;
	struct run_result	 res;
	char			*input, **envp, err[256];
	size_t			 len;
	unsigned long long	 ticks;
	int			 start_errno;

	input = dispatch_job_json(j, data, (double)created_ms / 1000.0,
	    (double)(now_ms + j->h->timeout_ms) / 1000.0, &len);
	envp = dispatch_envp(j);
	dispatch_spec(&spec, j, envp, input, len);
	TAILQ_INSERT_TAIL(&running, j, entry);
	n_running++;
	counters.jobs_started++;
	j->renewed_mono = util_mono_ms();
	/*
	 * The clock /proc gives as a process's start, read just before the
	 * clone: runner_start returns only after the exec, which under load
	 * may take longer than the slack a restart allows.
	 */
	ticks = state_ticks_now();
	if (draining) {
		/* a fetch answered after the drain began: do not start it */
		j->run = NULL;
		snprintf(err, sizeof err, "the agent is stopping");
		start_errno = 0;
	} else {
		j->run = runner_start(&spec, dispatch_on_run_done, j, err,
		    sizeof err);
		start_errno = errno;
	}
	util_free_words(envp);
	free(input);
	if (j->run != NULL) {
		j->pid = runner_pid(j->run);
		/*
		 * Appended at once; a finished handler's line is harmless,
		 * since its pid is gone or has another start time when a
		 * restart reads it.
		 */
		j->started = ticks;
		if (state_add(j->pid, j->started))
			dispatch_save_state();
	}
	if (j->run == NULL) {
		/*
		 * The agent could not start it (out of descriptors or
		 * processes, or stopping): not the job's fault, so it goes
		 * back without a failure counted, and fetching pauses a moment
		 * instead of burning through the queue.  Nothing ran, so there
		 * is no exit status.
		 */
		log_warnx("job %s: cannot start %s: %s; putting it back",
		    j->id, j->h->name, err);
		memset(&res, 0, sizeof res);
		res.setup_stage = start_errno != 0 ? "start" : NULL;
		res.setup_errno = start_errno;
		res.started_ms = util_wall_ms();
		j->release = 1;
		fetch_paused_until = util_mono_ms() + START_PAUSE_MS;
		dispatch_on_run_done(&res, j);
	}
}

/* Start each job of a fetch's answer {now, jobs}. */
static void
dispatch_start_fetched(const struct redisReply *reply, long asked)
{
	const redisReply	*jobs, **e;
	struct job		*j;
	struct handler		*h;
	size_t			 i;

	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_warnx("fetch: %s", reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[1]->type != REDIS_REPLY_ARRAY)
		return;
	jobs = reply->element[1];
	for (i = 0; i < jobs->elements; i++) {
		e = (const redisReply **)jobs->element[i]->element;
		if (jobs->element[i]->elements != 8)
			continue;
		if ((h = handler_find(cfg, e[1]->str)) == NULL) {
			/* cannot happen: we only ask for our own handlers */
			log_errx("fetch: job %s for unknown handler %s",
			    e[0]->str, e[1]->str);
			continue;
		}
		j = xcalloc(1, sizeof *j);
		j->id = xstrdup(e[0]->str);
		j->h = h;
		handler_hold(h);
		j->output_max = cfg->output_max;
		j->attempt = (long)e[2]->integer;
		j->max_attempts = e[4]->str ? strtol(e[4]->str, NULL, 10) : 1;
		j->event = xstrdup(e[5]->str ? e[5]->str : "");
		j->event_id = xstrdup(e[6]->str ? e[6]->str : "");
		dispatch_run(j, e[3]->str ? e[3]->str : "{}",
		    e[7]->str ? strtoll(e[7]->str, NULL, 10) : 0,
		    (int64_t)reply->element[0]->integer);
	}
	/* a full batch: there may be more; a short one: wait for a hint */
	if ((long)jobs->elements >= asked)
		dispatch_fetch();
}

/*
 * The fetch script answered.  A drain waits for it too: its jobs hold
 * leases, and are put back rather than started.
 */
static void
dispatch_on_fetched(const struct redisReply *reply, void *arg)
{
	fetching = 0;
	dispatch_start_fetched(reply, (long)(intptr_t)arg);
	dispatch_check_drained();
}

/*
 * Jobs of the handler called name running now.  By name, not by struct:
 * after a reload the old settings of running jobs and the new ones share
 * the handler's concurrency.
 */
static int
dispatch_running_for(const char *name)
{
	struct job	*j;
	int		 n = 0;

	TAILQ_FOREACH(j, &running, entry)
		if (strcmp(j->h->name, name) == 0)
			n++;
	return n;
}

/*
 * Ask for as many jobs as there are free slots, within each handler's
 * concurrency, unless a fetch is already under way.
 */
static void
dispatch_fetch(void)
{
	const char	**argv;
	char		 *keys[2], lease[32], want[16], **rooms;
	size_t		  i, k, n = 0, nh = cfg->n_handlers, nr = 0;
	int		  room, free_slots = cfg->workers - n_running;

	if (fetching || draining || !claimed || free_slots <= 0 ||
	    !redis_ready(rcmd) || nh == 0 ||
	    util_mono_ms() < fetch_paused_until)
		return;
	/*
	 * Starting a batch holds the loop; with thousands of slots a whole
	 * batch could outlast a lease before the heartbeat runs.  A full
	 * batch fetches again at once, so this costs one round trip per
	 * FETCH_MAX jobs and nothing else.
	 */
	if (free_slots > FETCH_MAX)
		free_slots = FETCH_MAX;
	argv = xcalloc(6 + 2 * nh, sizeof *argv);
	rooms = xcalloc(nh, sizeof *rooms);
	xasprintf(&keys[0], "%sleases", cfg->prefix);
	xasprintf(&keys[1], "%sagent:%s:running", cfg->prefix, cfg->name);
	snprintf(lease, sizeof lease, "%lld", (long long)cfg->lease_ms);
	snprintf(want, sizeof want, "%d", free_slots);
	argv[n++] = keys[0];
	argv[n++] = keys[1];
	argv[n++] = cfg->prefix;
	argv[n++] = cfg->name;
	argv[n++] = lease;
	argv[n++] = want;
	rotate++;
	for (i = 0; i < nh; i++) {
		k = (rotate + i) % nh;
		room = cfg->handlers[k]->concurrency -
		    dispatch_running_for(cfg->handlers[k]->name);
		if (room <= 0)
			continue;
		if (room > free_slots)
			room = free_slots;
		xasprintf(&rooms[nr], "%d", room);
		argv[n++] = cfg->handlers[k]->name;
		argv[n++] = rooms[nr++];
	}
	if (nr > 0 && redis_script(rcmd, SCRIPT_FETCH, dispatch_on_fetched,
	    (void *)(intptr_t)free_slots, 2, (int)n, argv, NULL) == 0)
		fetching = 1;
	while (nr > 0)
		free(rooms[--nr]);
	free(rooms);
	free(keys[0]);
	free(keys[1]);
	free(argv);
}

/* Idle watcher: fetch once the loop has nothing else to do. */
static void
dispatch_on_kick(EV_P_ ev_idle *w, int revents)
{
	ev_idle_stop(EV_A_ w);
	dispatch_fetch();
}

/* Something may be ready (a hint, a freed slot): fetch soon. */
void
dispatch_kick(void)
{
	if (!draining)
		ev_idle_start(EV_DEFAULT_ &kick_idle);
}

/* Fallback poll, for hints lost while pub/sub was down. */
static void
dispatch_on_poll(EV_P_ ev_timer *w, int revents)
{
	static uint64_t	trimmed_at = (uint64_t)-1;

	dispatch_fetch();
#ifdef HAVE_MALLOC_TRIM
	/*
	 * Idle after some work: give the memory a burst of jobs took back
	 * to the system, so an agent's size says what it needs now.
	 */
	if (n_running == 0 && TAILQ_EMPTY(&unsent) &&
	    trimmed_at != counters.jobs_started) {
		trimmed_at = counters.jobs_started;
		malloc_trim(0);
	}
#endif
}

/* The extend script answered with the jobs whose lease we lost. */
static void
dispatch_on_extended(const struct redisReply *reply, void *arg)
{
	int64_t			*asked = arg;
	const redisReply	*lost;
	struct job		*j;
	size_t			 i;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != 2) {
		free(asked);
		return;
	}
	if (reply->element[0]->integer != 0)
		leader_mono = *asked;
	if (leader != (reply->element[0]->integer != 0)) {
		leader = reply->element[0]->integer != 0;
		log_info("%s the events lead: pub/sub events without an id are "
		    "%s here", leader ? "took" : "lost", leader ? "queued" :
		    "left to the leader");
	}
	lost = reply->element[1];
	for (i = 0; i < lost->elements; i++)
		TAILQ_FOREACH(j, &running, entry)
			if (strcmp(j->id, lost->element[i]->str) == 0 &&
			    !j->lost) {
				log_warnx("job %s: lease lost to another agent; "
				    "stopping its handler", j->id);
				j->lost = 1;
				runner_stop(j->run);
			}
	/* the leases of the others run from when we asked */
	TAILQ_FOREACH(j, &running, entry)
		if (!j->lost && j->renewed_mono < *asked)
			j->renewed_mono = *asked;
	free(asked);
}

/*
 * The local lease guard: a job whose lease Redis has not confirmed for
 * most of a lease period may be recovered by another agent any moment, so
 * its handler is stopped here rather than left to run twice at once.
 */
static void
dispatch_guard_leases(void)
{
	struct job	*j;
	int64_t		 now = util_mono_ms();
	int64_t		 limit = cfg->lease_ms - cfg->lease_ms / 6;

	TAILQ_FOREACH(j, &running, entry)
		if (!j->lost && !j->release && now - j->renewed_mono > limit) {
			log_warnx("job %s: Redis has not renewed its lease for "
			    "%lld ms; stopping its handler before another "
			    "agent runs it", j->id,
			    (long long)(now - j->renewed_mono));
			j->lost = 1;
			runner_stop(j->run);
		}
}

/* Heartbeat: say we are alive and renew the leases of running jobs. */
static void
dispatch_on_lease(EV_P_ ev_timer *w, int revents)
{
	const char	**argv;
	char		 *own[10], **att;
	struct job	 *j;
	struct finish	 *f;
	int64_t		 *asked;
	size_t		  n = 0, i = 0;
	int		  n_unsent = 0;

	dispatch_guard_leases();
	if (!claimed)
		return;
	TAILQ_FOREACH(f, &unsent, entry)
		n_unsent++;
	argv = xcalloc(18 + 2 * (size_t)(n_running + n_unsent), sizeof *argv);
	att = xcalloc((size_t)(n_running + n_unsent) + 1, sizeof *att);
	xasprintf(&own[0], "%sleases", cfg->prefix);
	xasprintf(&own[1], "%sagent:%s", cfg->prefix, cfg->name);
	xasprintf(&own[2], "%sagents", cfg->prefix);
	xasprintf(&own[3], "%lld", (long long)cfg->lease_ms);
	xasprintf(&own[4], "%sagent:%s:info", cfg->prefix, cfg->name);
	xasprintf(&own[5], "%sagent:%s:running", cfg->prefix, cfg->name);
	xasprintf(&own[6], "%sresults", cfg->prefix);
	xasprintf(&own[7], "%ld", cfg->results_max);
	xasprintf(&own[8], "%slock:events", cfg->prefix);
	/* only agents that take pub/sub events compete for the lead */
	xasprintf(&own[9], "%lld", cfg->subscribe[0] != '\0' ?
	    (long long)cfg->lease_ms : 0LL);
	argv[n++] = own[0];
	argv[n++] = own[1];
	argv[n++] = own[2];
	argv[n++] = own[4];
	argv[n++] = own[5];
	argv[n++] = own[6];
	argv[n++] = own[8];
	argv[n++] = cfg->prefix;
	argv[n++] = cfg->name;
	argv[n++] = own[3];
	argv[n++] = own[3];
	argv[n++] = token;
	argv[n++] = DISPATCHD_VERSION;
	argv[n++] = host;
	/* a fetch in flight holds a job we do not know of yet */
	argv[n++] = fetching ? "0" : "1";
	argv[n++] = own[7];
	argv[n++] = own[9];
	TAILQ_FOREACH(j, &running, entry) {
		if (j->lost)
			continue;
		xasprintf(&att[i], "%ld", j->attempt);
		argv[n++] = j->id;
		argv[n++] = att[i++];
	}
	/* a finished job keeps its lease until its finish is recorded */
	TAILQ_FOREACH(f, &unsent, entry) {
		xasprintf(&att[i], "%ld", f->attempt);
		argv[n++] = f->job_id;
		argv[n++] = att[i++];
	}
	routes_refresh();
	asked = xmalloc(sizeof *asked);
	*asked = util_mono_ms();
	if (redis_script(rcmd, SCRIPT_EXTEND, dispatch_on_extended, asked, 7,
	    (int)n, argv, NULL) == -1)
		free(asked);
	while (i > 0)
		free(att[--i]);
	for (i = 0; i < 10; i++)
		free(own[i]);
	free(att);
	free(argv);
}

/* The recover script answered. */
static void
dispatch_on_recovered(const struct redisReply *reply, void *arg)
{
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
	    reply->integer > 0) {
		counters.recovered += (uint64_t)reply->integer;
		log_notice("recovered %lld jobs whose lease had expired",
		    reply->integer);
	}
	else if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		log_warnx("recover: %s", reply->str);
}

/* Recover jobs whose agent stopped renewing their leases. */
static void
dispatch_on_recover(EV_P_ ev_timer *w, int revents)
{
	const char	*argv[14];
	char		*own[13];
	size_t		 i;
	int64_t		 base = 5000, cap = 3600 * 1000;

	xasprintf(&own[0], "%sleases", cfg->prefix);
	xasprintf(&own[1], "%sdelayed", cfg->prefix);
	xasprintf(&own[2], "%sdead", cfg->prefix);
	xasprintf(&own[3], "%sresults", cfg->prefix);
	xasprintf(&own[4], "%slock:recover", cfg->prefix);
	xasprintf(&own[5], "%d", (int)(RECOVER_S * 1000) - 100);
	xasprintf(&own[6], "%d", RECOVER_LIMIT);
	xasprintf(&own[7], "%d", 1000);
	xasprintf(&own[8], "%lld", (long long)base);
	xasprintf(&own[9], "%lld", (long long)cap);
	xasprintf(&own[10], "%ld", cfg->results_max);
	xasprintf(&own[11], "%d", DEAD_TTL_S);
	xasprintf(&own[12], "%snotify", cfg->prefix);
	for (i = 0; i < 5; i++)
		argv[i] = own[i];
	argv[5] = cfg->prefix;
	for (i = 5; i < 13; i++)
		argv[i + 1] = own[i];
	redis_script(rcmd, SCRIPT_RECOVER, dispatch_on_recovered, NULL, 5, 14,
	    argv, NULL);
	for (i = 0; i < 13; i++)
		free(own[i]);
}

/* The claim script answered: the name is ours, or another agent's. */
static void
dispatch_on_claimed(const struct redisReply *reply, void *arg)
{
	long long	n;

	claiming = 0;
	if (reply == NULL)
		return;		/* lost the connection: claim again on return */
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
		/* MOVED: a Cluster node that does not hold the keys; we move */
		log_msg(reply->type == REDIS_REPLY_ERROR &&
		    strncmp(reply->str, "MOVED", 5) == 0 ? LOG_INFO : LOG_ERR,
		    "claim: %s", reply->type == REDIS_REPLY_ERROR ?
		    reply->str : "unexpected reply");
		return;
	}
	n = reply->element[0]->integer;
	if (n < 0) {
		log_errx("another agent named '%s' is alive (its heartbeat "
		    "expires in %lld ms): two agents must not share a name; "
		    "set [agent] name", cfg->name,
		    reply->element[2]->integer);
		control_close();	/* the socket file is not ours to leave */
		exit(EXIT_UNAVAILABLE);
	}
	claimed = 1;
	leader = reply->elements == 4 && reply->element[3]->integer != 0;
	if (leader)
		leader_mono = util_mono_ms();
	state_claim_done();
	dispatch_save_state();
	redis_check_durability(rcmd);
	routes_publish();
	routes_refresh();
	on_claimed();
	if (n > 0) {
		log_notice("reclaimed %lld jobs this agent was running when it "
		    "stopped; they will be retried", n);
		dispatch_on_recover(EV_DEFAULT_ &recover_timer, 0);
	}
	dispatch_redis_state(1);
}

/* Take the agent's name in Redis (once a life) before fetching. */
static void
dispatch_claim(void)
{
	const char	*argv[10];
	char		*own[7];
	int		 i;

	if (claiming)
		return;
	xasprintf(&own[0], "%sagent:%s", cfg->prefix, cfg->name);
	xasprintf(&own[1], "%sagent:%s:running", cfg->prefix, cfg->name);
	xasprintf(&own[2], "%sleases", cfg->prefix);
	xasprintf(&own[3], "%lld", (long long)cfg->lease_ms);
	xasprintf(&own[4], "%sagents", cfg->prefix);
	xasprintf(&own[5], "%slock:events", cfg->prefix);
	xasprintf(&own[6], "%lld", cfg->subscribe[0] != '\0' ?
	    (long long)cfg->lease_ms : 0LL);
	argv[0] = own[0];
	argv[1] = own[1];
	argv[2] = own[2];
	argv[3] = own[4];
	argv[4] = own[5];
	argv[5] = token;
	argv[6] = prev_token;
	argv[7] = own[3];
	argv[8] = cfg->name;
	argv[9] = own[6];
	if (redis_script(rcmd, SCRIPT_CLAIM, dispatch_on_claimed, NULL, 5, 10,
	    argv, NULL) == 0)
		claiming = 1;
	for (i = 0; i < 7; i++)
		free(own[i]);
}

/* Redis came up or went down. */
void
dispatch_redis_state(int up)
{
	if (!up)
		return;
	if (!claimed) {
		dispatch_claim();
		return;
	}
	dispatch_on_lease(EV_DEFAULT_ &lease_timer, 0);
	dispatch_flush();
	promote_kick();
	dispatch_kick();
	enqueue_replay();
}

/*
 * Start the timers; fetching begins when Redis is ready and the name is
 * ours, which claimed hears (once a life).
 */
void
dispatch_start(const char *rundir, void (*claimed_cb)(void))
{
	char		 nonce[17];
	int		 killed;

	if (gethostname(host, sizeof host) == -1)
		strcpy(host, "localhost");
	host[sizeof host - 1] = '\0';
	util_random_hex(nonce, 8);
	snprintf(token, sizeof token, "%s:%d:%s", host, (int)getpid(), nonce);
	on_claimed = claimed_cb;
	if ((killed = state_open(rundir, cfg->name, prev_token,
	    sizeof prev_token)) > 0)
		log_notice("killed %d handler process groups left by this "
		    "agent's previous run", killed);
	dispatch_save_state();
	ev_idle_init(&kick_idle, dispatch_on_kick);
	ev_timer_init(&poll_timer, dispatch_on_poll, POLL_S, POLL_S);
	ev_timer_start(EV_DEFAULT_ &poll_timer);
	ev_timer_init(&lease_timer, dispatch_on_lease,
	    (double)cfg->lease_ms / 3000.0, (double)cfg->lease_ms / 3000.0);
	ev_timer_start(EV_DEFAULT_ &lease_timer);
	ev_timer_init(&recover_timer, dispatch_on_recover, RECOVER_S,
	    RECOVER_S);
	ev_timer_start(EV_DEFAULT_ &recover_timer);
	ev_timer_init(&retry_timer, dispatch_on_retry, 1.0, 0.);
}

/* The configuration changed: new lease period, new handlers to fetch. */
void
dispatch_reconfigure(void)
{
	ev_timer_stop(EV_DEFAULT_ &lease_timer);
	ev_timer_set(&lease_timer, (double)cfg->lease_ms / 3000.0,
	    (double)cfg->lease_ms / 3000.0);
	ev_timer_start(EV_DEFAULT_ &lease_timer);
	dispatch_kick();
}

/* Tell main once nothing runs and every finish is in Redis. */
static void
dispatch_check_drained(void)
{
	if (draining && n_running == 0 && n_ran_now == 0 && !fetching &&
	    TAILQ_EMPTY(&unsent) && drained != NULL) {
		void	(*cb)(void) = drained;

		drained = NULL;
		cb();
	}
}

/*
 * Stop fetching; if release is set, stop the running handlers too and put
 * their jobs back (not counted as failures).  done is called when the
 * last finish is in Redis.
 */
void
dispatch_drain(void (*done)(void))
{
	struct job	*j;

	if (!draining) {
		draining = 1;
		drained = done;
		ev_timer_stop(EV_DEFAULT_ &poll_timer);
		ev_idle_stop(EV_DEFAULT_ &kick_idle);
		dispatch_check_drained();
		return;
	}
	TAILQ_FOREACH(j, &running, entry) {
		if (!j->release) {
			j->release = 1;
			runner_stop(j->run);
		}
	}
	TAILQ_FOREACH(j, &ran_now, entry) {
		if (!j->release) {
			j->release = 1;
			runner_stop(j->run);
		}
	}
}

/* The goodbye was answered (or the connection is gone): done. */
static void
dispatch_on_goodbye(const struct redisReply *reply, void *arg)
{
	goodbye_done();
}

/*
 * At a clean exit, give up the name at once (rather than when the
 * heartbeat expires), so status shows the agent not alive and a new
 * agent of that name may start; then call done.
 */
void
dispatch_goodbye(void (*done)(void))
{
	const char	*argv[2];
	char		*hb;
	int		 rc;

	/*
	 * The agent stays in the agents set: its routes keep their grace, so
	 * events for its handlers still queue while it is away.
	 */
	xasprintf(&hb, "%sagent:%s", cfg->prefix, cfg->name);
	argv[0] = "DEL";
	argv[1] = hb;
	goodbye_done = done;
	rc = redis_command(rcmd, dispatch_on_goodbye, NULL, 2, argv, NULL);
	free(hb);
	if (rc == -1)
		done();
}

/* Has the agent taken its name in Redis (so it may work)? */
int
dispatch_ready(void)
{
	return claimed;
}

/*
 * Do we enqueue pub/sub events that carry no id?  Only while Redis
 * confirmed the lead recently: the lock expires a lease after its last
 * renewal, and an agent that was paused (or cut off) longer than that
 * must not act on a lead another agent may hold by now.
 */
int
dispatch_is_leader(void)
{
	return leader &&
	    util_mono_ms() - leader_mono < cfg->lease_ms * 2 / 3;
}

/* How many handlers run now: jobs, and runs asked for by dispatchctl. */
int
dispatch_running(void)
{
	return n_running + n_ran_now;
}
