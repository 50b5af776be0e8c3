/*
 * job.c: what a handler is given and what its exit means, with no I/O:
 * the job JSON on stdin, the environment, the run spec, the error text of
 * a run that never started, and the outcome of a run as an enum with the
 * words each audience uses for it (the finish script, the log, dispatchctl
 * run), so no caller converts one string into another.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "dispatchd.h"

/* Each outcome, as the finish script, the log and dispatchctl run say it. */
static const struct {
	const char	*script;
	const char	*said;
	const char	*run_now;
} outcome_words[JOB_NOUTCOMES] = {
	[JOB_OK] =	{ "ok",		"done",			"done" },
	[JOB_FAIL] =	{ "fail",	"failed",		"retry" },
	[JOB_FATAL] =	{ "fatal",	"failed permanently",	"dead" },
	[JOB_RELEASE] =	{ "release",	"stopped and put back",	"stopped" },
};

/* What the finish script made of an attempt (its reply, metrics labels). */
static const char *const fate_names[JOB_NFATES] = {
	[FATE_DONE] = "done",
	[FATE_RETRY] = "retry",
	[FATE_DEAD] = "dead",
	[FATE_STALE] = "stale",
	[FATE_RELEASED] = "released",
	[FATE_CANCELLED] = "cancelled",
};

/*
 * A JSON string from text read back from Redis, which is a trust boundary:
 * whatever was written there, the handler gets valid JSON.
 */
static json_t *
job_jstr(const char *text)
{
	json_t	*v;
	char	*clean;
	size_t	 n;

	clean = util_utf8_clean(text, strlen(text), &n);
	v = json_stringn(clean, n);
	free(clean);
	return v;
}

/* The job JSON given to the handler on stdin, newline-ended. */
char *
job_input(const struct job_info *j, const char *data, double emitted_s,
    double deadline_s, size_t *len)
{
	json_t		*o, *d;
	json_error_t	 jerr;
	char		*s;

	d = json_loads(data, JSON_DECODE_ANY, &jerr);
	if (d == NULL)
		d = job_jstr(data);	/* not ours: keep it, as text */
	o = json_pack("{s:o, s:o, s:o, s:s, s:o, s:i, s:i, s:f, s:f}",
	    "id", job_jstr(j->id), "event", job_jstr(j->event),
	    "event_id", job_jstr(j->event_id),
	    "handler", j->h->name, "data", d, "attempt", (json_int_t)j->attempt,
	    "max_attempts", (json_int_t)j->max_attempts,
	    "emitted_at", emitted_s, "deadline", deadline_s);
	/* 13 digits: Unix seconds with milliseconds */
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT |
	    JSON_REAL_PRECISION(13))) == NULL)
		fatalx("job: cannot build the job JSON");
	json_decref(o);
	*len = strlen(s);
	s = xreallocarray(s, *len + 2, 1);
	s[(*len)++] = '\n';
	s[*len] = '\0';
	return s;
}

/* Is NAME set by one of the handler's env lines? */
static int
job_env_has(const struct handler *h, const char *name)
{
	size_t	i, n = strlen(name);

	for (i = 0; i < h->n_env; i++)
		if (strncmp(h->env[i], name, n) == 0 && h->env[i][n] == '=')
			return 1;
	return 0;
}

/* The handler's environment: the fixed set, then its own env lines. */
char **
job_envp(const struct job_info *j)
{
	char	**envp;
	size_t	  n = 0, i;

	envp = xcalloc(10 + j->h->n_env, sizeof *envp);
	if (!job_env_has(j->h, "PATH"))
		envp[n++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
	if (!job_env_has(j->h, "HOME"))
		xasprintf(&envp[n++], "HOME=%s", j->h->home);
	if (!job_env_has(j->h, "LANG"))
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

/* Fill a run spec for the job; envp and input stay the caller's. */
void
job_spec(struct run_spec *spec, const struct job_info *j, char **envp,
    const char *input, size_t len, int64_t kill_grace_ms, size_t output_max)
{
	const struct handler	*h = j->h;

	memset(spec, 0, sizeof *spec);
	spec->argv = h->argv;
	spec->envp = envp;
	spec->workdir = h->workdir;
	spec->input = input;
	spec->input_len = len;
	spec->timeout_ms = h->timeout_ms;
	spec->kill_grace_ms = kill_grace_ms;
	spec->output_max = output_max;
	spec->set_user = h->set_user;
	spec->uid = h->uid;
	spec->gid = h->gid;
	spec->groups = h->groups;
	spec->n_groups = h->n_groups;
	spec->limit_nofile = h->limit_nofile;
	spec->limit_nproc = h->limit_nproc;
	spec->limit_as = h->limit_as;
	spec->limit_cpu_ms = h->limit_cpu_ms;
	spec->limits = &h->limits;
	snprintf(spec->cgroup_name, sizeof spec->cgroup_name, "job-%s-%ld",
	    j->id, j->attempt);
}

/*
 * The error text of a run that failed before its program started, or
 * that the kernel killed for memory; "" otherwise.
 */
void
job_setup_error(const struct job_info *j, const struct run_result *res,
    char *error, size_t errlen)
{
	const char	*hint = "";

	error[0] = '\0';
	/* a child killed for memory does not fail a handler that coped */
	if (res->usage.oom_kills > 0 && !(res->exited && res->code == 0)) {
		snprintf(error, errlen, "killed by the kernel: out of memory "
		    "in the job's cgroup (memory_max %zu bytes, peak %lld)",
		    j->h->limits.memory_max, (long long)res->usage.memory_peak);
		return;
	}
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

/* The outcome of a run; released: the agent stopped it to put it back. */
enum job_outcome
job_outcome(const struct run_result *res, int released)
{
	if (released)
		return JOB_RELEASE;
	switch (util_exit_class(res->exited, res->code, res->signaled,
	    res->timed_out)) {
	case EXIT_CLASS_OK:
		return JOB_OK;
	case EXIT_CLASS_FATAL:
		return JOB_FATAL;
	default:
		return JOB_FAIL;
	}
}

/* The finish script's word for an outcome: ok, fail, fatal, release. */
const char *
job_outcome_name(enum job_outcome o)
{
	return outcome_words[o].script;
}

/* The log's words for an outcome. */
const char *
job_outcome_said(enum job_outcome o)
{
	return outcome_words[o].said;
}

/* dispatchctl run's word for an outcome: done, retry, dead, stopped. */
const char *
job_outcome_run_now(enum job_outcome o)
{
	return outcome_words[o].run_now;
}

/* The fate named s, as the finish script replies it; -1 if none. */
int
job_fate_parse(const char *s, enum job_fate *fate)
{
	int	i;

	for (i = 0; i < JOB_NFATES; i++)
		if (strcmp(fate_names[i], s) == 0) {
			*fate = (enum job_fate)i;
			return 0;
		}
	return -1;
}

/* A fate's name: done, retry, dead, stale, released, cancelled. */
const char *
job_fate_name(enum job_fate fate)
{
	return fate_names[fate];
}
