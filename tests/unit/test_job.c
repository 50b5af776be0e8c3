/*
 * test_job.c: what a handler is given (the job JSON on stdin, the
 * environment, the run spec) and what its exit means (the outcome and the
 * words each audience uses), and the Redis key names with every script's
 * declared KEYS, which must all be keys the schema knows.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../agent/dispatchd.h"
#include "tap.h"

/* Is NAME=VALUE among envp? */
static int
env_is(char **envp, const char *line)
{
	for (; *envp != NULL; envp++)
		if (strcmp(*envp, line) == 0)
			return 1;
	return 0;
}

/* How many of envp start with NAME=? */
static int
env_count(char **envp, const char *name)
{
	size_t	n = strlen(name);
	int	c = 0;

	for (; *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			c++;
	return c;
}

/* A run that exited with code. */
static struct run_result
exited(int code)
{
	struct run_result	r;

	memset(&r, 0, sizeof r);
	r.exited = 1;
	r.code = code;
	return r;
}

/* Are the words of a declaration all key names of the schema? */
static int
keys_known(const char *decl)
{
	char	*copy, *w, *save;
	int	 k, known, all = 1;

	copy = xstrdup(decl);
	for (w = strtok_r(copy, " []", &save); w != NULL;
	    w = strtok_r(NULL, " []", &save)) {
		known = 0;
		for (k = 0; k < KEY_COUNT; k++)
			if (strcmp(schema_name((enum schema_key)k), w) == 0)
				known = 1;
		if (!known) {
			printf("# unknown key %s\n", w);
			all = 0;
		}
	}
	free(copy);
	return all;
}

int
main(void)
{
	struct config		 conf;
	static char		 a0[] = "/bin/true", a1[] = "x";
	static char		 e0[] = "PATH=/opt/bin", e1[] = "TZ=UTC";
	static char		 name[] = "stock", home[] = "/var/lib/dispatchd";
	static char		 wd[] = "/tmp", id[] = "j1", ev[] = "order.paid";
	static char		 eid[] = "e\xff" "1", prefix[] = "{ns}:";
	char			*argv[] = { a0, a1, NULL };
	char			*env[] = { e0, e1, NULL };
	struct handler		 h;
	struct job_info		 j;
	struct run_spec		 spec;
	struct run_result	 r;
	enum job_fate		 fate;
	json_t			*o;
	json_error_t		 jerr;
	char			*in, **envp, err[256], *key, buf[8];
	size_t			 len;
	int			 i;

	memset(&h, 0, sizeof h);
	h.name = name;
	h.argv = argv;
	h.env = env;
	h.n_env = 2;
	h.home = home;
	h.workdir = wd;
	h.timeout_ms = 30000;
	h.limit_nofile = 64;
	memset(&j, 0, sizeof j);
	j.id = id;
	j.event = ev;
	j.event_id = eid;	/* read back from Redis: not ours */
	j.h = &h;
	j.attempt = 2;
	j.max_attempts = 5;

	/* stdin: one line of JSON with every field of the contract */
	in = job_input(&j, "{\"order\":7}", 1700000000.5, 1700000030.5, &len);
	ok(len == strlen(in) && in[len - 1] == '\n', "stdin is one line");
	o = json_loads(in, 0, &jerr);
	ok(o != NULL, "stdin is JSON");
	ok(strcmp(json_string_value(json_object_get(o, "id")), "j1") == 0 &&
	    strcmp(json_string_value(json_object_get(o, "handler")),
	    "stock") == 0, "id and handler");
	ok(json_integer_value(json_object_get(json_object_get(o, "data"),
	    "order")) == 7, "data is the event's JSON");
	ok(json_integer_value(json_object_get(o, "attempt")) == 2 &&
	    json_integer_value(json_object_get(o, "max_attempts")) == 5,
	    "attempt and max_attempts");
	ok(json_real_value(json_object_get(o, "emitted_at")) == 1700000000.5 &&
	    json_real_value(json_object_get(o, "deadline")) == 1700000030.5,
	    "emitted_at and deadline keep their milliseconds");
	ok(strcmp(json_string_value(json_object_get(o, "event_id")),
	    "e\xef\xbf\xbd" "1") == 0, "invalid UTF-8 from Redis is replaced");
	json_decref(o);
	free(in);
	in = job_input(&j, "not json", 0, 0, &len);
	o = json_loads(in, 0, &jerr);
	ok(o != NULL && strcmp(json_string_value(json_object_get(o, "data")),
	    "not json") == 0, "data that is not JSON is given as a string");
	json_decref(o);
	free(in);

	/* the environment: the fixed set, the handler's lines win */
	envp = job_envp(&j);
	ok(env_is(envp, "PATH=/opt/bin") && env_count(envp, "PATH") == 1,
	    "an env line replaces the default PATH");
	ok(env_is(envp, "HOME=/var/lib/dispatchd") &&
	    env_is(envp, "LANG=C.UTF-8"), "HOME and LANG");
	ok(env_is(envp, "DISPATCH_JOB_ID=j1") &&
	    env_is(envp, "DISPATCH_EVENT=order.paid") &&
	    env_is(envp, "DISPATCH_HANDLER=stock") &&
	    env_is(envp, "DISPATCH_ATTEMPT=2") &&
	    env_is(envp, "DISPATCH_MAX_ATTEMPTS=5"), "the DISPATCH_ variables");
	ok(env_is(envp, "TZ=UTC"), "the handler's own lines");
	for (i = 0; envp[i] != NULL; i++)
		;
	ok(i == 10, "nothing else (%d entries)", i);
	util_free_words(envp);

	/* the run spec carries the handler's settings and the caller's */
	job_spec(&spec, &j, NULL, "x", 1, 5000, 4096);
	ok(spec.argv == h.argv && spec.timeout_ms == 30000 &&
	    spec.kill_grace_ms == 5000 && spec.output_max == 4096 &&
	    spec.limit_nofile == 64 && strcmp(spec.workdir, "/tmp") == 0,
	    "run spec");

	/* outcomes */
	r = exited(0);
	ok(job_outcome(&r, 0) == JOB_OK, "exit 0: ok");
	r = exited(1);
	ok(job_outcome(&r, 0) == JOB_FAIL, "exit 1: fail");
	r = exited(75);
	ok(job_outcome(&r, 0) == JOB_FAIL, "exit 75: fail");
	r = exited(78);
	ok(job_outcome(&r, 0) == JOB_FATAL, "exit 78 (a sysexits code): fatal");
	r = exited(0);
	ok(job_outcome(&r, 1) == JOB_RELEASE, "stopped by the agent: release");
	memset(&r, 0, sizeof r);
	r.signaled = 1;
	r.signo = 9;
	ok(job_outcome(&r, 0) == JOB_FAIL, "a signal: fail");
	ok(strcmp(job_outcome_name(JOB_OK), "ok") == 0 &&
	    strcmp(job_outcome_name(JOB_FAIL), "fail") == 0 &&
	    strcmp(job_outcome_name(JOB_FATAL), "fatal") == 0 &&
	    strcmp(job_outcome_name(JOB_RELEASE), "release") == 0,
	    "the finish script's words");
	ok(strcmp(job_outcome_run_now(JOB_OK), "done") == 0 &&
	    strcmp(job_outcome_run_now(JOB_FAIL), "retry") == 0 &&
	    strcmp(job_outcome_run_now(JOB_FATAL), "dead") == 0 &&
	    strcmp(job_outcome_run_now(JOB_RELEASE), "stopped") == 0,
	    "dispatchctl run's words");
	ok(strcmp(job_outcome_said(JOB_FATAL), "failed permanently") == 0,
	    "the log's words");
	for (i = 0; i < JOB_NFATES; i++)
		ok(job_fate_parse(job_fate_name((enum job_fate)i), &fate) == 0 &&
		    (int)fate == i, "fate %s parses back", job_fate_name(fate));
	ok(job_fate_parse("finished", &fate) == -1, "an unknown fate");

	/* set-up errors */
	memset(&r, 0, sizeof r);
	job_setup_error(&j, &r, err, sizeof err);
	ok(err[0] == '\0', "no set-up error");
	r.setup_stage = "chdir";
	r.setup_errno = 2;
	job_setup_error(&j, &r, err, sizeof err);
	ok(strcmp(err, "chdir /tmp: No such file or directory") == 0,
	    "chdir error names the directory: %s", err);
	r.setup_stage = "exec";
	job_setup_error(&j, &r, err, sizeof err);
	ok(strstr(err, "#! interpreter") != NULL,
	    "exec ENOENT of a program that exists hints at #!: %s", err);

	/* key names */
	memset(&conf, 0, sizeof conf);
	conf.prefix = prefix;
	cfg = &conf;
	key = schema_key(KEY_RUNNING, "a1");
	ok(strcmp(key, "{ns}:agent:a1:running") == 0, "agent running key");
	free(key);
	key = schema_key(KEY_LEASES, NULL);
	ok(strcmp(key, "{ns}:leases") == 0, "the namespace's own key");
	free(key);
	len = schema_format(buf, sizeof buf, KEY_JOB, "abcdef");
	ok(len == 15 && strcmp(buf, "{ns}:jo") == 0,
	    "a short buffer is cut and the length is what it needs");
	for (i = 0; i < SCRIPT_COUNT; i++)
		ok(keys_known(scripts[i].keys), "script %s declares known keys",
		    scripts[i].name);
	return done();
}
