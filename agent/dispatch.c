/*
 * dispatch.c: the work loop.  It owns the worker slots: it fetches jobs
 * for the handlers that have a free slot (rotating among them for
 * fairness, within each one's concurrency), starts their runs, hands each
 * outcome to the finish outbox, and keeps the running jobs' leases as the
 * heartbeat reports them.  It also runs a handler once on request
 * (dispatchctl run), and drains: no new work, then the running handlers
 * stopped or waited for, then every finish recorded.
 */
#include "config.h"

#include <sys/queue.h>

#ifdef HAVE_MALLOC_TRIM
#include <malloc.h>
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatchd.h"

#define POLL_S		1.0	/* fetch fallback when hints are lost */
#define START_PAUSE_MS	1000	/* no fetching after a failed start */
#define FETCH_MAX	64	/* jobs started per fetch reply, at most */

/* A job running on this agent. */
struct job {
	TAILQ_ENTRY(job) entry;
	struct job_info	 info;		/* its strings and handler are ours */
	struct run	*run;
	size_t		 output_max;	/* the cap its capture started with */
	int		 pid;		/* the handler's process group */
	unsigned long long started;	/* its start time, for the state file */
	int64_t		 renewed_mono;	/* when Redis last confirmed the lease */
	int		 lost;		/* the lease went to someone else */
	int		 release;	/* stopped by the drain */
	int		 cancel;	/* cancelled by an administrator */
};
TAILQ_HEAD(jobs, job);

/* A handler run on request (dispatchctl run), outside the queue. */
struct run_now {
	struct job	 job;
	run_now_cb	 cb;
	void		*arg;
};

static struct jobs	 running = TAILQ_HEAD_INITIALIZER(running);
static struct jobs	 ran_now = TAILQ_HEAD_INITIALIZER(ran_now);
static int		 n_running;
static int		 n_ran_now;	/* dispatchctl run children */
static int		 open_for_work;	/* the agent's name is ours */
static int		 fetching;
static int		 draining;
static size_t		 rotate;		/* fairness among handlers */
static int64_t		 fetch_paused_until;	/* after a failed start */
static ev_timer		 poll_timer;
static ev_timer		 wake_timer;	/* a pause, or a rate, ends */
static ev_idle		 kick_idle;
static void		(*drained)(void);

static void	 dispatch_fetch(void);
static void	 dispatch_check_drained(void);
static void	 dispatch_on_filled(int64_t, const struct redisReply *, int64_t,
		    long);
static char	*dispatch_fill(long *);

/* What the finish outbox tells the loop, and asks of it. */
static const struct finish_hooks finish_hooks = {
	.recorded = dispatch_check_drained,
	.fill = dispatch_fill,
	.fetched = dispatch_on_filled,
};

/* Write the running handlers' process groups to the state file. */
static void
dispatch_save_state(void)
{
	struct jobs		*lists[] = { &running, &ran_now };
	struct job		*j;
	int			*pids;
	unsigned long long	*started;
	size_t			 n = 0, i;

	pids = xcalloc((size_t)(n_running + n_ran_now) + 1, sizeof *pids);
	started = xcalloc((size_t)(n_running + n_ran_now) + 1,
	    sizeof *started);
	for (i = 0; i < 2; i++)
		TAILQ_FOREACH(j, lists[i], entry)
			if (j->pid > 0) {
				pids[n] = j->pid;
				started[n++] = j->started;
			}
	state_save(pids, started, n);
	free(pids);
	free(started);
}

/* Record a handler that just started in the state file. */
static void
dispatch_started(struct job *j, unsigned long long ticks)
{
	j->pid = runner_pid(j->run);
	/*
	 * Appended at once; a finished handler's line is harmless, since its
	 * pid is gone or has another start time when a restart reads it.
	 */
	j->started = ticks;
	if (state_add(j->pid, j->started))
		dispatch_save_state();
}

/* Free a job's strings and its hold on its handler's settings. */
static void
dispatch_free_job(struct job *j)
{
	handler_release(j->info.h);
	free(j->info.id);
	free(j->info.event);
	if (j->info.event_id != j->info.id)
		free(j->info.event_id);
}

/* Log one line per outcome with what a person needs to find the job. */
static void
dispatch_log_outcome(const struct job *j, const struct run_result *res,
    enum job_outcome outcome, const char *error)
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
	log_msg(outcome == JOB_OK ? LOG_INFO : LOG_NOTICE,
	    "job %s event %s handler %s attempt %ld: %s, %s, %lld ms",
	    j->info.id, j->info.event, j->info.h->name, j->info.attempt,
	    j->cancel && outcome != JOB_OK ? "cancelled" :
	    job_outcome_said(outcome), how, (long long)res->duration_ms);
}

/* A run is over: free its slot and queue its finish. */
static void
dispatch_on_run_done(const struct run_result *res, void *arg)
{
	struct job		*j = arg;
	enum job_outcome	 outcome;
	char			 error[256];

	job_setup_error(&j->info, res, error, sizeof error);
	outcome = job_outcome(res, j->release);
	dispatch_log_outcome(j, res, outcome, error);
	/* the slot is free before the finish, which may fill it */
	TAILQ_REMOVE(&running, j, entry);
	n_running--;
	finish_queue(&j->info, res, outcome, error, j->output_max);
	dispatch_free_job(j);
	free(j);
	dispatch_kick();
}

/* Start job j's handler with data on stdin; NULL with err if it cannot. */
static struct run *
dispatch_spawn(struct job *j, const char *data, int64_t emitted_ms,
    int64_t now_ms, run_done_cb done, unsigned long long *ticks,
    char *err, size_t errlen)
{
	struct run_spec	 spec;
	struct run	*run;
	char		*input, **envp;
	size_t		 len;
	int		 saved_errno;

	input = job_input(&j->info, data, (double)emitted_ms / 1000.0,
	    (double)(now_ms + j->info.h->timeout_ms) / 1000.0, &len);
	envp = job_envp(&j->info);
	job_spec(&spec, &j->info, envp, input, len, cfg->kill_grace_ms,
	    j->output_max);
	/*
	 * The clock /proc gives as a process's start, read just before the
	 * clone: runner_start returns only after the exec, which under load
	 * may take longer than the slack a restart allows.
	 */
	*ticks = state_ticks_now();
	run = runner_start(&spec, done, j, err, errlen);
	saved_errno = errno;
	util_free_words(envp);
	free(input);
	errno = saved_errno;
	return run;
}

/* A run-now is over: report, free; a drain may be waiting for it. */
static void
dispatch_on_ran_now(const struct run_result *res, void *arg)
{
	struct run_now	*rn = arg;
	char		 error[256];

	TAILQ_REMOVE(&ran_now, &rn->job, entry);
	n_ran_now--;
	job_setup_error(&rn->job.info, res, error, sizeof error);
	rn->cb(res, job_outcome_run_now(job_outcome(res, rn->job.release)),
	    error, rn->job.info.id, rn->arg);
	dispatch_free_job(&rn->job);
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
	struct run_now		*rn;
	char			 hex[33];
	unsigned long long	 ticks;
	int64_t			 now = util_wall_ms();

	if (draining) {
		snprintf(err, errlen, "the agent is stopping");
		return -1;
	}
	rn = xcalloc(1, sizeof *rn);
	util_random_hex(hex, 16);
	xasprintf(&rn->job.info.id, "run-%s", hex);
	rn->job.info.event = xstrdup(event);
	rn->job.info.event_id = rn->job.info.id;
	rn->job.info.h = h;
	handler_hold(h);
	rn->job.info.attempt = 1;
	rn->job.info.max_attempts = h->attempts;
	rn->job.output_max = cfg->output_max;
	rn->cb = cb;
	rn->arg = arg;
	rn->job.run = dispatch_spawn(&rn->job, data, now, now,
	    dispatch_on_ran_now, &ticks, err, errlen);
	if (rn->job.run == NULL) {
		dispatch_free_job(&rn->job);
		free(rn);
		return -1;
	}
	/* in the drain's and the state file's view, as a job is */
	TAILQ_INSERT_TAIL(&ran_now, &rn->job, entry);
	n_ran_now++;
	dispatch_started(&rn->job, ticks);
	return 0;
}

/* Start the run of a fetched job; a failure to start is its outcome. */
static void
dispatch_run(struct job *j, const char *data, int64_t created_ms,
    int64_t now_ms)
{
	struct run_result	 res;
	char			 err[256];
	unsigned long long	 ticks;
	int			 start_errno = 0;

	TAILQ_INSERT_TAIL(&running, j, entry);
	n_running++;
	counters.jobs_started++;
	j->renewed_mono = util_mono_ms();
	if (draining) {
		/* a fetch answered after the drain began: do not start it */
		snprintf(err, sizeof err, "the agent is stopping");
	} else {
		j->run = dispatch_spawn(j, data, created_ms, now_ms,
		    dispatch_on_run_done, &ticks, err, sizeof err);
		start_errno = errno;
	}
	if (j->run != NULL) {
		dispatch_started(j, ticks);
		return;
	}
	/*
	 * The agent could not start it (out of descriptors or processes, or
	 * stopping): not the job's fault, so it goes back without a failure
	 * counted, and fetching pauses a moment instead of burning through
	 * the queue.  Nothing ran, so there is no exit status.
	 */
	log_warnx("job %s: cannot start %s: %s; putting it back", j->info.id,
	    j->info.h->name, err);
	memset(&res, 0, sizeof res);
	res.setup_stage = start_errno != 0 ? "start" : NULL;
	res.setup_errno = start_errno;
	res.started_ms = util_wall_ms();
	j->release = 1;
	fetch_paused_until = util_mono_ms() + START_PAUSE_MS;
	dispatch_on_run_done(&res, j);
}

/* A string element of a fetched job, or def when it is nil. */
static const char *
dispatch_field(const redisReply *e, const char *def)
{
	return e->type == REDIS_REPLY_STRING ? e->str : def;
}

/*
 * A fetch said that a handler it skipped may start at wake (Redis's
 * clock, now its time): fetch then, unless a wake-up comes sooner.
 */
static void
dispatch_wake_at(int64_t now, int64_t wake)
{
	double	after, at;

	if (wake < 0 || draining)
		return;
	after = (double)(wake > now ? wake - now : 0) / 1000.0 + 0.001;
	at = ev_now(EV_DEFAULT) + after;
	if (ev_is_active(&wake_timer) &&
	    ev_now(EV_DEFAULT) + ev_timer_remaining(EV_DEFAULT_ &wake_timer) <= at)
		return;
	ev_timer_stop(EV_DEFAULT_ &wake_timer);
	ev_timer_set(&wake_timer, after, 0.);
	ev_timer_start(EV_DEFAULT_ &wake_timer);
}

/* The wake timer: what held a handler has ended; fetch. */
static void
dispatch_on_wake(EV_P_ ev_timer *w, int revents)
{
	dispatch_fetch();
}

/* Start each job a fetch took, on Redis's clock now. */
static void
dispatch_start_jobs(int64_t now, const struct redisReply *jobs, long asked)
{
	const redisReply	**e;
	struct job		 *j;
	struct handler		 *h;
	size_t			  i;

	for (i = 0; i < jobs->elements; i++) {
		/* jid, handler, attempt, then fields that may be nil */
		if (!call_reply_is(jobs->element[i], "ssi?????"))
			continue;
		e = (const redisReply **)jobs->element[i]->element;
		if ((h = handler_find(cfg, e[1]->str)) == NULL) {
			/* cannot happen: we only ask for our own handlers */
			log_errx("fetch: job %s for unknown handler %s",
			    e[0]->str, e[1]->str);
			continue;
		}
		j = xcalloc(1, sizeof *j);
		j->info.id = xstrdup(e[0]->str);
		j->info.h = h;
		handler_hold(h);
		j->output_max = cfg->output_max;
		j->info.attempt = (long)e[2]->integer;
		j->info.max_attempts = strtol(dispatch_field(e[4], "1"), NULL,
		    10);
		j->info.event = xstrdup(dispatch_field(e[5], ""));
		j->info.event_id = xstrdup(dispatch_field(e[6], ""));
		dispatch_run(j, dispatch_field(e[3], "{}"),
		    strtoll(dispatch_field(e[7], "0"), NULL, 10), now);
	}
	/* a full batch: there may be more; a short one: wait for a hint */
	if ((long)jobs->elements >= asked)
		dispatch_fetch();
}

/*
 * The fetch script answered {now, jobs, wake}.  A drain waits for it too:
 * its jobs hold leases, and are put back rather than started.
 */
static void
dispatch_on_fetched(const struct redisReply *reply, void *arg)
{
	fetching = 0;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		log_warnx("fetch: %s", reply->str);
	else if (call_reply_is(reply, "iai")) {
		dispatch_wake_at(reply->element[0]->integer,
		    reply->element[2]->integer);
		dispatch_start_jobs(reply->element[0]->integer,
		    reply->element[1], (long)(intptr_t)arg);
	}
	dispatch_check_drained();
}

/* A finish's fetch is over: its jobs, or NULL when it did not happen. */
static void
dispatch_on_filled(int64_t now, const struct redisReply *jobs, int64_t wake,
    long asked)
{
	fetching = 0;
	if (jobs != NULL) {
		dispatch_wake_at(now, wake);
		dispatch_start_jobs(now, jobs, asked);
	}
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
		if (strcmp(j->info.h->name, name) == 0)
			n++;
	return n;
}

/* How many jobs a fetch may ask for now; 0 when none. */
static int
dispatch_free_slots(void)
{
	int	free_slots = cfg->workers - n_running;

	if (fetching || draining || !open_for_work || free_slots <= 0 ||
	    !redis_ready(rcmd) || cfg->n_handlers == 0 ||
	    util_mono_ms() < fetch_paused_until)
		return 0;
	/*
	 * Starting a batch holds the loop; with thousands of slots a whole
	 * batch could outlast a lease before the heartbeat runs.  A full
	 * batch fetches again at once, so this costs one round trip per
	 * FETCH_MAX jobs and nothing else.
	 */
	return free_slots > FETCH_MAX ? FETCH_MAX : free_slots;
}

/*
 * Call fn with each handler that has room, and that room (at most
 * free_slots), in an order that rotates at each call, for fairness; the
 * number of handlers given.
 */
static size_t
dispatch_rooms(int free_slots, void (*fn)(const struct handler *, int,
    void *), void *arg)
{
	struct handler	*h;
	size_t		 i, nh = cfg->n_handlers, nr = 0;
	int		 room;

	rotate++;
	for (i = 0; i < nh; i++) {
		h = cfg->handlers[(rotate + i) % nh];
		room = h->concurrency - dispatch_running_for(h->name);
		if (room <= 0)
			continue;
		fn(h, room > free_slots ? free_slots : room, arg);
		nr++;
	}
	return nr;
}

/* Add a handler, its room and its flow limits to a fetch call. */
static void
dispatch_room_arg(const struct handler *h, int room, void *arg)
{
	call_arg(arg, "handler", h->name);
	call_int(arg, "room", room);
	call_arg(arg, "flow", h->flow);
}

/* Ask for as many jobs as there are free slots, unless one is on its way. */
static void
dispatch_fetch(void)
{
	struct call	*c;
	int		 free_slots;

	if ((free_slots = dispatch_free_slots()) == 0)
		return;
	c = call_start(SCRIPT_FETCH);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_RUNNING, cfg->name);
	call_key(c, KEY_PAUSED, NULL);
	call_arg(c, "P", cfg->prefix);
	call_arg(c, "agent", cfg->name);
	call_int(c, "lease_ms", cfg->lease_ms);
	call_int(c, "want", free_slots);
	if (dispatch_rooms(free_slots, dispatch_room_arg, c) > 0 &&
	    call_send(c, dispatch_on_fetched, (void *)(intptr_t)free_slots) == 0)
		fetching = 1;
	call_free(c);
}

/* Add a handler to a room text, "handler room flow ...". */
static void
dispatch_room_text(const struct handler *h, int room, void *arg)
{
	char	**text = arg, *s;

	xasprintf(&s, "%s%s%s %d %s", *text ? *text : "", *text ? " " : "",
	    h->name, room, h->flow);
	free(*text);
	*text = s;
}

/*
 * A finish is being sent: the rooms it may fill in the same call (the
 * slot its run freed, and any other free one), or NULL.  It counts as a
 * fetch under way until the finish answers.
 */
static char *
dispatch_fill(long *want)
{
	char	*rooms = NULL;
	int	 free_slots;

	if ((free_slots = dispatch_free_slots()) == 0)
		return NULL;
	if (dispatch_rooms(free_slots, dispatch_room_text, &rooms) == 0)
		return NULL;
	*want = free_slots;
	fetching = 1;
	return rooms;
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
	if (n_running == 0 && finish_pending() == 0 &&
	    trimmed_at != counters.jobs_started) {
		trimmed_at = counters.jobs_started;
		malloc_trim(0);
	}
#endif
}

/* Call fn with the id and attempt of each running job that holds a lease. */
void
dispatch_each_lease(void (*fn)(const char *, long, void *), void *arg)
{
	struct job	*j;

	TAILQ_FOREACH(j, &running, entry)
		if (!j->lost)
			fn(j->info.id, j->info.attempt, arg);
}

/* Redis says another agent holds job jid's lease now: stop its handler. */
void
dispatch_lease_lost(const char *jid)
{
	struct job	*j;

	TAILQ_FOREACH(j, &running, entry)
		if (strcmp(j->info.id, jid) == 0 && !j->lost) {
			log_warnx("job %s: lease lost to another agent; "
			    "stopping its handler", j->info.id);
			j->lost = 1;
			runner_stop(j->run);
		}
}

/*
 * An administrator cancelled job jid while it ran (how: the notify hint,
 * or the heartbeat's report of the mark): stop its handler if it runs
 * here.  The finish script reads the mark in Redis and records the run
 * as cancelled; nothing here changes the outcome the agent reports.
 */
void
dispatch_cancel(const char *jid, const char *how)
{
	struct job	*j;

	TAILQ_FOREACH(j, &running, entry) {
		if (strcmp(j->info.id, jid) != 0 || j->cancel)
			continue;
		j->cancel = 1;
		/* stopped already, for a drain or a lost lease */
		if (j->lost || j->release)
			continue;
		log_notice("job %s: cancelled by an administrator (%s); "
		    "stopping its handler", j->info.id, how);
		runner_stop(j->run);
	}
}

/* Redis renewed the leases asked for at asked_mono. */
void
dispatch_leases_renewed(int64_t asked_mono)
{
	struct job	*j;

	TAILQ_FOREACH(j, &running, entry)
		if (!j->lost && j->renewed_mono < asked_mono)
			j->renewed_mono = asked_mono;
}

/*
 * The local lease guard: a job whose lease Redis has not confirmed for
 * most of a lease period may be recovered by another agent any moment, so
 * its handler is stopped here rather than left to run twice at once.
 */
void
dispatch_guard_leases(void)
{
	struct job	*j;
	int64_t		 now = util_mono_ms();
	int64_t		 limit = cfg->lease_ms - cfg->lease_ms / 6;

	TAILQ_FOREACH(j, &running, entry)
		if (!j->lost && !j->release && now - j->renewed_mono > limit) {
			log_warnx("job %s: Redis has not renewed its lease for "
			    "%lld ms; stopping its handler before another "
			    "agent runs it", j->info.id,
			    (long long)(now - j->renewed_mono));
			j->lost = 1;
			runner_stop(j->run);
		}
}

/* Is a fetch on its way (holding jobs this agent does not know of yet)? */
int
dispatch_fetching(void)
{
	return fetching;
}

/* Start the poll timer; fetching waits for dispatch_open. */
void
dispatch_start(void)
{
	finish_init(&finish_hooks);
	ev_idle_init(&kick_idle, dispatch_on_kick);
	ev_timer_init(&poll_timer, dispatch_on_poll, POLL_S, POLL_S);
	ev_timer_init(&wake_timer, dispatch_on_wake, 0., 0.);
	ev_timer_start(EV_DEFAULT_ &poll_timer);
}

/*
 * The agent's name is ours: fetching may begin.  The state file is written
 * whole, now without the previous lives' tokens.
 */
void
dispatch_open(void)
{
	open_for_work = 1;
	dispatch_save_state();
}

/* Tell main once nothing runs and every finish is in Redis. */
static void
dispatch_check_drained(void)
{
	if (draining && n_running == 0 && n_ran_now == 0 && !fetching &&
	    finish_pending() == 0 && drained != NULL) {
		void	(*cb)(void) = drained;

		drained = NULL;
		cb();
	}
}

/* Stop the handlers of a list and mark their jobs to be put back. */
static void
dispatch_release(struct jobs *list)
{
	struct job	*j;

	TAILQ_FOREACH(j, list, entry)
		if (!j->release) {
			j->release = 1;
			runner_stop(j->run);
		}
}

/*
 * The first call stops fetching and waits for what runs; a second stops
 * the running handlers too and puts their jobs back (not counted as
 * failures).  done is called when the last finish is in Redis.
 */
void
dispatch_drain(void (*done)(void))
{
	if (!draining) {
		draining = 1;
		drained = done;
		ev_timer_stop(EV_DEFAULT_ &poll_timer);
		ev_timer_stop(EV_DEFAULT_ &wake_timer);
		ev_idle_stop(EV_DEFAULT_ &kick_idle);
		dispatch_check_drained();
		return;
	}
	dispatch_release(&running);
	dispatch_release(&ran_now);
}

/* How many handlers run now: jobs, and runs asked for by dispatchctl. */
int
dispatch_running(void)
{
	return n_running + n_ran_now;
}
