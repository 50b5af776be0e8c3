/*
 * test_config.c: the configuration loader, each error path with its
 * file:line, defaults, conf.d order, every [handler] key (good and bad
 * values, each error word for word), the job cgroup's limits and event
 * matching.
 */
#include "config.h"

#include <sys/stat.h>

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../agent/dispatchd.h"
#include "tap.h"

static char	dir[64];
static char	path[128];
static char	err[1024];

/* Remove the conf.d files written by the conf.d tests. */
static void
rmdir_conf_d(const char *d)
{
	char	cmd[256];

	snprintf(cmd, sizeof cmd, "rm -rf '%s/conf.d'", d);
	if (system(cmd) != 0)
		abort();
}

/* Write text to name inside the test directory. */
static void
put(const char *name, const char *text)
{
	char	p[256];
	FILE	*fp;

	snprintf(p, sizeof p, "%s/%s", dir, name);
	if ((fp = fopen(p, "w")) == NULL)
		abort();
	fputs(text, fp);
	fclose(fp);
}

/* Load the main file with text; NULL on error (err set). */
static struct config *
load(const char *text)
{
	put("d.conf", text);
	return config_load(path, err, sizeof err);
}

/* Does loading text fail with an error that starts "d.conf:line:" and
 * contains what? */
static int
fails(const char *text, int line, const char *what)
{
	struct config	*c;
	char		 want[256];

	if ((c = load(text)) != NULL) {
		config_free(c);
		return 0;
	}
	snprintf(want, sizeof want, "%s:%d: ", path, line);
	if (strncmp(err, want, strlen(want)) != 0 || strstr(err, what) == NULL) {
		printf("# got: %s\n", err);
		return 0;
	}
	return 1;
}

/* Does loading text fail with exactly "d.conf:line: " and then msg? */
static int
fails_with(const char *text, int line, const char *msg)
{
	struct config	*c;
	char		 want[1024];

	if ((c = load(text)) != NULL) {
		config_free(c);
		return 0;
	}
	snprintf(want, sizeof want, "%s:%d: %s", path, line, msg);
	if (strcmp(err, want) != 0) {
		printf("# got:  %s\n# want: %s\n", err, want);
		return 0;
	}
	return 1;
}

/* One [handler] key: a value it takes and one it refuses, word for word. */
struct key_case {
	const char	*key;
	const char	*good;
	const char	*bad;
	const char	*msg;		/* the error after "file:line: " */
};

/*
 * Every [handler] key, set on line 4 after on and exec: each good value
 * loads, each bad one fails with its message exactly (the e2e tests and
 * people's scripts read these messages).
 */
static void
test_handler_keys(const char *prog)
{
	static const struct key_case cases[] = {
		{ "on", "a.b, c.*", "a b!",
		    "[handler h] on: 'b!' is not an event name or glob" },
		{ "on", "x", ",",
		    "[handler h] on: no event names" },
		{ "exec", NULL, "/nonexistent/prog",
		    "[handler h] exec: /nonexistent/prog: No such file or "
		    "directory" },
		{ "timeout", "30s", "soon",
		    "[handler h] timeout: bad duration 'soon' (like 30s, 5m)" },
		{ "timeout", "1ms", "0",
		    "[handler h] timeout: must be more than 0" },
		{ "delay", "0", "soon",
		    "[handler h] delay: bad duration 'soon'" },
		{ "attempts", "1000", "0",
		    "[handler h] attempts: '0' is not a number from 1 to 1000" },
		{ "concurrency", "4096", "4097",
		    "[handler h] concurrency: '4097' is not a number from 1 to "
		    "4096" },
		{ "max_running", "1000000", "0",
		    "[handler h] max_running: '0' is not a number from 1 to "
		    "1000000" },
		{ "rate", "100/m burst 20", "fast",
		    "[handler h] rate: 'fast' is not a rate like 10/s, 100/m "
		    "or 5/h, with an optional burst N (numbers from 1 to "
		    "1000000)" },
		{ "key", "${data.host:-none}", "${data.host",
		    "[handler h] key: '${data.host': ${ without its }" },
		{ "per_key", NULL, "0",
		    "[handler h] per_key: '0' is not a number from 1 to "
		    "1000000" },
		{ "on_busy", NULL, "drop",
		    "[handler h] on_busy: 'drop' is not queue, coalesce, "
		    "replace or reject" },
		{ "backoff", "1s..1s", "1h..5s",
		    "[handler h] backoff: '1h..5s' is not BASE..CAP like 5s..1h "
		    "(BASE more than 0, CAP at least BASE)" },
		{ "backoff", "1s..10s", "0..5s",
		    "[handler h] backoff: '0..5s' is not BASE..CAP like 5s..1h "
		    "(BASE more than 0, CAP at least BASE)" },
		{ "workdir", "/tmp", "/nonexistent",
		    "[handler h] workdir: /nonexistent: not an existing "
		    "absolute directory" },
		{ "workdir", "/", "tmp",
		    "[handler h] workdir: tmp: not an existing absolute "
		    "directory" },
		{ "user", NULL, "nosuchuser_xyz",
		    "[handler h] user: no user named 'nosuchuser_xyz'" },
		{ "group", NULL, "nosuchgroup_xyz",
		    "[handler h] group: no group named 'nosuchgroup_xyz'" },
		{ "limit_nofile", "1073741824", "0",
		    "[handler h] limit_nofile: '0' is not a positive number" },
		{ "limit_nproc", "1", "1073741825",
		    "[handler h] limit_nproc: '1073741825' is not a positive "
		    "number" },
		{ "limit_as", "1m", "1023k",
		    "[handler h] limit_as: '1023k' is not a size of at least "
		    "1m" },
		{ "limit_cpu", "1s", "999ms",
		    "[handler h] limit_cpu: '999ms' is not a duration of at "
		    "least 1s" },
		{ "env", "A_1=", "1A=x",
		    "[handler h] env: '1A=x' is not KEY=value" },
		{ "env", "_=x", "=x",
		    "[handler h] env: '=x' is not KEY=value" },
		{ "env", "DISPATCHX=1", "DISPATCH_X=1",
		    "[handler h] env: DISPATCH_* variables are set by the "
		    "agent" },
		{ "colour", NULL, "blue",
		    "[handler h] colour: unknown key" },
		/* the job cgroup's limits (limits.c) */
		{ "memory_max", "1m", "lots",
		    "[handler h] memory_max: 'lots' is not a size of at least "
		    "1m (like 512m, 2g)" },
		{ "memory_max", "2g", "1023k",
		    "[handler h] memory_max: '1023k' is not a size of at least "
		    "1m (like 512m, 2g)" },
		{ "memory_max", "512MiB", "-1m",
		    "[handler h] memory_max: '-1m' is not a size of at least "
		    "1m (like 512m, 2g)" },
		{ "memory_swap_max", "0", "lots",
		    "[handler h] memory_swap_max: 'lots' is not a size (like "
		    "512m, 2g)" },
		{ "tasks_max", "1", "0",
		    "[handler h] tasks_max: '0' is not a number of tasks from 1 "
		    "to 4194304" },
		{ "tasks_max", "4194304", "4194305",
		    "[handler h] tasks_max: '4194305' is not a number of tasks "
		    "from 1 to 4194304" },
		{ "tasks_max", "20", "many",
		    "[handler h] tasks_max: 'many' is not a number of tasks "
		    "from 1 to 4194304" },
		{ "cpu_max", "50%", "0%",
		    "[handler h] cpu_max: '0%' is not a share of CPU (like 50% "
		    "of one, or 2 for two CPUs)" },
		{ "cpu_max", "1%", "0.5%",
		    "[handler h] cpu_max: '0.5%' is not a share of CPU (like "
		    "50% of one, or 2 for two CPUs)" },
		{ "cpu_max", "1.5", "half",
		    "[handler h] cpu_max: 'half' is not a share of CPU (like "
		    "50% of one, or 2 for two CPUs)" },
		{ "cpu_max", "100", "101",
		    "[handler h] cpu_max: '101' is not a share of CPU (like 50% "
		    "of one, or 2 for two CPUs)" },
		{ "cpu_max", "10000%", "50 %",
		    "[handler h] cpu_max: '50 %' is not a share of CPU (like "
		    "50% of one, or 2 for two CPUs)" },
		{ "cpu_max", "2", "-1",
		    "[handler h] cpu_max: '-1' is not a share of CPU (like 50% "
		    "of one, or 2 for two CPUs)" },
		{ "io_weight", "1", "0",
		    "[handler h] io_weight: '0' is not a weight from 1 to 10000 "
		    "(100 is the default)" },
		{ "io_weight", "10000", "10001",
		    "[handler h] io_weight: '10001' is not a weight from 1 to "
		    "10000 (100 is the default)" },
		{ "leftovers", "kill", "maybe",
		    "[handler h] leftovers: 'maybe' is not kill or wait" },
		{ "leftovers", "wait", "Wait",
		    "[handler h] leftovers: 'Wait' is not kill or wait" },
	};
	const struct key_case	*k;
	struct passwd		*pw;
	struct group		*gr;
	struct config		*c;
	struct handler		*h;
	char			 text[2048], user[256], group[256];
	const char		*good;
	size_t			 i;

	pw = getpwuid(geteuid());
	gr = getgrgid(getegid());
	snprintf(user, sizeof user, "%s", pw ? pw->pw_name : "root");
	snprintf(group, sizeof group, "%s", gr ? gr->gr_name : "root");
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		k = &cases[i];
		good = k->good;
		if (strcmp(k->key, "exec") == 0)
			good = prog;
		else if (strcmp(k->key, "user") == 0)
			good = user;
		else if (strcmp(k->key, "group") == 0)
			good = group;
		if (good != NULL) {
			snprintf(text, sizeof text, "[handler h]\non = x\n"
			    "exec = %s\n%s = %s\n", prog, k->key, good);
			c = load(text);
			ok(c != NULL, "handler %s = %s loads%s%s", k->key, good,
			    c ? "" : ": ", c ? "" : err);
			config_free(c);
		}
		snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
		    "%s = %s\n", prog, k->key, k->bad);
		ok(fails_with(text, 4, k->msg), "handler %s = %s: its error",
		    k->key, k->bad);
	}

	/* the flow keys together; per_key and on_busy need a key */
	c = load("[handler h]\non = x\nexec = /bin/false\nkey = ${data.host}\n"
	    "per_key = 2\non_busy = coalesce\nmax_running = 4\n"
	    "rate = 10/m burst 3\n");
	h = c ? handler_find(c, "h") : NULL;
	ok(h != NULL && h->per_key == 2 && h->on_busy == BUSY_COALESCE &&
	    strcmp(flow_key_text(h->key), "${data.host}") == 0 &&
	    strcmp(h->flow, "m4,r10/60000/3") == 0 && strcmp(h->flow_sig,
	    "key=${data.host} per_key=2 on_busy=coalesce m4,r10/60000/3") == 0,
	    "key, per_key, on_busy, max_running, rate together");
	if (c != NULL)
		config_free(c);
	ok(fails_with("[handler h]\non = x\nexec = /bin/false\nper_key = 2\n",
	    1, "[handler h] per_key and on_busy need a key"),
	    "per_key without a key is refused");

	/* each key lands in its field; the last value of a key wins */
	snprintf(text, sizeof text, "[agent]\nworkers = 8\n[handler h]\n"
	    "on = x\nexec = /bin/false\ntimeout = 1m\ndelay = 250ms\n"
	    "attempts = 7\nconcurrency = 3\nbackoff = 2s..1m\nworkdir = /tmp\n"
	    "user = %s\ngroup = %s\nlimit_nofile = 100\nlimit_nproc = 0x10\n"
	    "limit_as = 2m\nlimit_cpu = 1m\nenv = A=1\non = y, z.*\n"
	    "exec = %s one\n", user, group, prog);
	c = load(text);
	h = c ? handler_find(c, "h") : NULL;
	ok(h != NULL, "every handler key at once loads%s%s", c ? "" : ": ",
	    c ? "" : err);
	if (h != NULL) {
		ok(h->n_on == 2 && strcmp(h->on[0], "y") == 0 &&
		    strcmp(h->on[1], "z.*") == 0, "a later on replaces");
		ok(strcmp(h->argv[0], prog) == 0 &&
		    strcmp(h->argv[1], "one") == 0 && h->argv[2] == NULL &&
		    strcmp(h->exec_file, path) == 0 && h->exec_line == 20,
		    "a later exec replaces, and says where it was set");
		ok(h->timeout_ms == 60000 && h->delay_ms == 250 &&
		    h->attempts == 7 && h->concurrency == 3 &&
		    h->backoff_base_ms == 2000 && h->backoff_cap_ms == 60000,
		    "timeout, delay, attempts, concurrency, backoff");
		ok(strcmp(h->workdir, "/tmp") == 0 &&
		    strcmp(h->user, user) == 0 && strcmp(h->group, group) == 0,
		    "workdir, user, group");
		ok(h->limit_nofile == 100 && h->limit_nproc == 16 &&
		    h->limit_as == 2 * 1024 * 1024 && h->limit_cpu_ms == 60000,
		    "limits");
		ok(h->n_env == 1 && strcmp(h->env[0], "A=1") == 0 &&
		    h->env[1] == NULL, "env");
		ok(strcmp(h->file, path) == 0 && h->line == 3,
		    "the handler says where its section starts");
	}
	config_free(c);

	/* defaults */
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n", prog);
	c = load(text);
	h = c ? handler_find(c, "h") : NULL;
	ok(h && h->timeout_ms == 300000 && h->delay_ms == 0 &&
	    h->attempts == 5 && h->concurrency == 4 &&
	    h->backoff_base_ms == 5000 && h->backoff_cap_ms == 3600000 &&
	    strcmp(h->workdir, "/") == 0 && h->user == NULL &&
	    h->group == NULL && h->limit_nofile == 0 && h->limit_nproc == 0 &&
	    h->limit_as == 0 && h->limit_cpu_ms == 0 && h->n_env == 0 &&
	    h->uid == geteuid() && h->refs == 1, "handler defaults");
	config_free(c);

	/* the first error is the one reported */
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
	    "attempts = 0\ncolour = blue\n", prog);
	ok(fails_with(text, 4, "[handler h] attempts: '0' is not a number "
	    "from 1 to 1000"), "the first bad key is the one reported");

	/* a section named twice is one handler */
	snprintf(text, sizeof text, "[handler h]\non = x\n[agent]\n"
	    "[handler h]\nexec = %s\n", prog);
	c = load(text);
	ok(c && c->n_handlers == 1 && c->handlers[0]->line == 1 &&
	    c->handlers[0]->n_on == 1, "a section named again adds to it");
	config_free(c);
}

/* The path:line a limit says it was set at is line of the test file. */
static int
limit_at(const struct job_limits *l, enum limit_kind kind, int line)
{
	char	want[256];

	snprintf(want, sizeof want, "%s:%d", path, line);
	if (l->at[kind] == NULL || strcmp(l->at[kind], want) != 0) {
		printf("# %s at %s, want %s\n", limits_name(kind),
		    l->at[kind] ? l->at[kind] : "(unset)", want);
		return 0;
	}
	return 1;
}

/*
 * The job cgroup's keys (limits.c): each value lands in its field with
 * the line it was set on (the "cannot be enforced" error names it),
 * [agent] gives the defaults a handler's own values beat, and cgroup =
 * auto | off.  Which limits the host can enforce is cgroup.c's, checked
 * end to end (tests/e2e/test_cgroup.py).
 */
static void
test_limits(const char *prog)
{
	struct job_limits	 l;
	struct config		*c;
	struct handler		*h;
	char			 text[2048], why[256];
	enum limit_kind		 kind;

	/* every key at once, lines 4 to 9 */
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
	    "memory_max = 50m\nmemory_swap_max = 16m\ntasks_max = 20\n"
	    "cpu_max = 1.5\nio_weight = 500\nleftovers = wait\n", prog);
	c = load(text);
	h = c ? handler_find(c, "h") : NULL;
	ok(h != NULL, "every limit key at once loads%s%s", c ? "" : ": ",
	    c ? "" : err);
	if (h != NULL) {
		ok(h->limits.memory_max == 50 * 1024 * 1024 &&
		    h->limits.swap_max == 16 * 1024 * 1024 &&
		    h->limits.tasks_max == 20 && h->limits.cpu_pct == 150 &&
		    h->limits.io_weight == 500 && h->limits.leftovers_wait == 1,
		    "each limit in its field, cpu_max 1.5 as 150%%");
		ok(h->limits.set == (1U << LIMIT_COUNT) - 1, "all marked set");
		for (kind = 0; kind < LIMIT_COUNT; kind++)
			ok(limit_at(&h->limits, kind, 4 + (int)kind),
			    "%s remembers its line", limits_name(kind));
	}
	config_free(c);

	/* cpu_max: a share of one CPU, or CPUs; rounded to whole percent */
	{
		static const struct {
			const char	*value;
			int		 pct;
		} cpus[] = {
			{ "50%", 50 }, { "1%", 1 }, { "2", 200 },
			{ "0.5", 50 }, { "1.5%", 2 }, { "100", 10000 },
			{ "10000%", 10000 }, { "0.01", 1 },
		};
		size_t	i;

		for (i = 0; i < sizeof cpus / sizeof cpus[0]; i++) {
			snprintf(text, sizeof text, "[handler h]\non = x\n"
			    "exec = %s\ncpu_max = %s\n", prog, cpus[i].value);
			c = load(text);
			h = c ? handler_find(c, "h") : NULL;
			ok(h && h->limits.cpu_pct == cpus[i].pct,
			    "cpu_max = %s is %d%% of one CPU (got %d)",
			    cpus[i].value, cpus[i].pct, h ? h->limits.cpu_pct :
			    -1);
			config_free(c);
		}
	}

	/* none given: none set, leftovers kill */
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n", prog);
	c = load(text);
	h = c ? handler_find(c, "h") : NULL;
	ok(h && h->limits.set == 0 && h->limits.leftovers_wait == 0 &&
	    c->cgroup == 1 && c->limits.set == 0,
	    "no limits by default, leftovers kill, cgroup auto");
	config_free(c);

	/* [agent] defaults; a handler's own value wins, with its line */
	snprintf(text, sizeof text, "[agent]\nmemory_max = 64m\n"
	    "cpu_max = 50%%\nleftovers = wait\n[handler h]\non = x\n"
	    "exec = %s\nmemory_max = 32m\n[handler g]\non = y\nexec = %s\n",
	    prog, prog);
	c = load(text);
	h = c ? handler_find(c, "h") : NULL;
	ok(h != NULL, "[agent] limits load%s%s", c ? "" : ": ", c ? "" : err);
	if (h != NULL) {
		ok(h->limits.memory_max == 32 * 1024 * 1024 &&
		    limit_at(&h->limits, LIMIT_MEMORY, 8),
		    "a handler's memory_max beats [agent]'s and says its line");
		ok(h->limits.cpu_pct == 50 && h->limits.leftovers_wait == 1 &&
		    limit_at(&h->limits, LIMIT_CPU, 3) &&
		    limit_at(&h->limits, LIMIT_LEFTOVERS, 4),
		    "[agent] cpu_max and leftovers inherited, with [agent]'s "
		    "lines");
		ok(!(h->limits.set & (1U << LIMIT_TASKS)) &&
		    !(h->limits.set & (1U << LIMIT_SWAP)) &&
		    !(h->limits.set & (1U << LIMIT_IO)),
		    "what neither gives stays unset");
		h = handler_find(c, "g");
		ok(h && h->limits.memory_max == 64 * 1024 * 1024 &&
		    limit_at(&h->limits, LIMIT_MEMORY, 2),
		    "a handler without its own takes [agent]'s");
	}
	config_free(c);

	/* [agent] refuses bad values as handlers do, and cgroup */
	ok(fails_with("[agent]\nname = a\nmemory_max = lots\n", 3,
	    "[agent] memory_max: 'lots' is not a size of at least 1m (like "
	    "512m, 2g)"), "[agent] memory_max = lots: its error");
	ok(fails_with("[agent]\ntasks_max = 0\n", 2,
	    "[agent] tasks_max: '0' is not a number of tasks from 1 to "
	    "4194304"), "[agent] tasks_max = 0: its error");
	ok(fails_with("[agent]\ncpu_max = 0%\n", 2,
	    "[agent] cpu_max: '0%' is not a share of CPU (like 50% of one, or "
	    "2 for two CPUs)"), "[agent] cpu_max = 0%%: its error");
	ok(fails_with("[agent]\nleftovers = maybe\n", 2,
	    "[agent] leftovers: 'maybe' is not kill or wait"),
	    "[agent] leftovers = maybe: its error");
	ok(fails_with("[agent]\n\ncgroup = yes\n", 3,
	    "[agent] cgroup: 'yes' is not auto or off"),
	    "[agent] cgroup = yes: its error");
	ok(fails_with("[agent]\ncgroup = Off\n", 2,
	    "[agent] cgroup: 'Off' is not auto or off"),
	    "[agent] cgroup takes lower case words only");
	c = load("[agent]\ncgroup = off\n");
	ok(c && c->cgroup == 0, "cgroup = off");
	config_free(c);
	c = load("[agent]\ncgroup = off\ncgroup = auto\n");
	ok(c && c->cgroup == 1, "cgroup = auto, the last one wins");
	config_free(c);

	/* limits_set itself */
	memset(&l, 0, sizeof l);
	ok(limits_set(&l, "timeout", "5s", "f", 1, why, sizeof why) == 1 &&
	    l.set == 0, "a key that is not a limit is left to the caller");
	ok(limits_set(&l, "memory_max", "8m", "f", 2, why, sizeof why) == 0 &&
	    limits_set(&l, "memory_max", "9m", "g", 7, why, sizeof why) == 0 &&
	    l.memory_max == 9 * 1024 * 1024 && strcmp(l.at[LIMIT_MEMORY],
	    "g:7") == 0, "a later value replaces, and moves its line");
	ok(limits_set(&l, "memory_max", "x", "f", 3, why, sizeof why) == -1 &&
	    strcmp(why, "'x' is not a size of at least 1m (like 512m, 2g)") ==
	    0 && l.memory_max == 9 * 1024 * 1024 &&
	    strcmp(l.at[LIMIT_MEMORY], "g:7") == 0,
	    "a bad value says why and changes nothing");
	limits_free(&l);
	ok(l.at[LIMIT_MEMORY] == NULL, "limits_free");
	for (kind = 0; kind < LIMIT_COUNT; kind++)
		ok(limits_name(kind) != NULL, "limit %d is named %s", (int)kind,
		    limits_name(kind));
}

int
main(void)
{
	struct config	*c;
	struct handler	*hs[8];
	char		 prog[128], text[2048];

	strcpy(dir, "/tmp/dispatchd-test-XXXXXX");
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof path, "%s/d.conf", dir);
	snprintf(prog, sizeof prog, "%s/h.sh", dir);
	put("h.sh", "#!/bin/sh\nexit 0\n");
	chmod(prog, 0755);

	c = load("[agent]\nname = a1\n");
	ok(c != NULL, "minimal config loads: %s", c ? "" : err);
	ok(c && c->workers == 4 && c->lease_ms == 30000 &&
	    c->output_max == 65536 && c->max_message == 1048576 &&
	    c->results_max == 100000 && c->socket_mode == 0660 &&
	    c->drain_ms == 30000, "defaults");
	ok(c && strcmp(c->prefix, "{dispatchd}:") == 0 &&
	    strcmp(c->subscribe, "{dispatchd}:events") == 0,
	    "namespace gives the key prefix and channel");
	config_free(c);

	snprintf(text, sizeof text,
	    "; comment\n[agent]\nnamespace = shop\nworkers = 2\nlease = 2s\n"
	    "subscribe =\n\n"
	    "[handler sms]\non = order.paid, user.*\nexec = %s --to \"a b\"\n"
	    "timeout = 250ms\nattempts = 3\nbackoff = 1s..10s\ndelay = 2s\n"
	    "concurrency = 9\nworkdir = /tmp\nenv = A=1\nenv = B=x=y\n", prog);
	c = load(text);
	ok(c != NULL, "full config loads: %s", c ? "" : err);
	if (c != NULL) {
		struct handler *h = handler_find(c, "sms");

		ok(strcmp(c->prefix, "{shop}:") == 0 && c->subscribe[0] == '\0',
		    "namespace and empty subscribe");
		ok(h && h->n_on == 2 && strcmp(h->on[1], "user.*") == 0, "on list");
		ok(h && strcmp(h->argv[2], "a b") == 0 && h->argv[3] == NULL,
		    "exec split into words");
		ok(h && h->timeout_ms == 250 && h->attempts == 3 &&
		    h->backoff_base_ms == 1000 && h->backoff_cap_ms == 10000 &&
		    h->delay_ms == 2000, "durations and numbers");
		ok(h && h->concurrency == 2, "concurrency capped at workers");
		ok(h && h->n_env == 2 && strcmp(h->env[1], "B=x=y") == 0,
		    "env lines add up");
		ok(handler_match(c, "order.paid", hs, 8) == 1 &&
		    handler_match(c, "user.new", hs, 8) == 1 &&
		    handler_match(c, "order.refunded", hs, 8) == 0, "glob match");
		config_free(c);
	}

	ok(fails("[agent]\nworkers = 0\n", 2, "workers"), "workers out of range");
	ok(fails("[agent]\n\nlease = soon\n", 3, "lease"), "bad duration");
	ok(fails("[agent]\nlease = 100ms\n", 2, "least allowed, 300ms"),
	    "duration under its minimum says the minimum");
	ok(fails("[agent]\noutput_max = lots\n", 2, "output_max"), "bad size");
	ok(fails("[agent]\nsocket_mode = 660\n", 2, "octal"), "mode not octal");
	ok(fails("[agent]\nlog_level = chatty\n", 2, "log_level"),
	    "bad log level");
	ok(fails("[agent]\nworkerz = 3\n", 2, "unknown key"), "unknown key");
	ok(fails("[agent]\n[agnet]\nname = x\n", 2, "unknown section"),
	    "unknown section");
	ok(fails("[agent]\n[nothing]\n", 2, "unknown section"),
	    "unknown empty section");
	ok(fails("name = x\n", 1, "outside"), "key outside a section");
	ok(fails("[handler a b]\n", 1, "handler"), "bad handler name");
	ok(fails("[handler h]\non = x\nexec = /nonexistent/prog\n", 3,
	    "No such file"), "missing program");
	ok(fails("[handler h]\non = x\nexec = relative/prog\n", 3,
	    "absolute"), "relative program");
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
	    "timeout = 0\n", dir);
	ok(fails(text, 3, "not a regular file"), "program is a directory");
	put("noexec.sh", "#!/bin/sh\n");
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s/noexec.sh\n",
	    dir);
	ok(fails(text, 3, "not executable"), "program not executable");
	put("badshebang.sh", "#!/nonexistent/interpreter\n");
	snprintf(text, sizeof text, "%s/badshebang.sh", dir);
	chmod(text, 0755);
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s/badshebang.sh\n",
	    dir);
	ok(fails(text, 3, "#! interpreter /nonexistent/interpreter"),
	    "a script's missing interpreter is named");
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s 'open\n",
	    prog);
	ok(fails(text, 3, "quote"), "unterminated quote in exec");
	ok(fails("[handler h]\non = a b!\n", 2, "event name"), "bad on");
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
	    "backoff = 5s\n", prog);
	ok(fails(text, 4, "BASE..CAP"), "bad backoff");
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
	    "timeout = 0s\n", prog);
	ok(fails(text, 4, "more than 0"), "zero timeout says why");
	{
		/* an exec of 1000 characters: long argument lists are real */
		char	long_text[8192], arg[1001];
		struct config *lc;

		memset(arg, 'a', 1000);
		arg[1000] = '\0';
		snprintf(long_text, sizeof long_text, "[handler h]\non = x\n"
		    "exec = %s %s\n", prog, arg);
#ifdef HAVE_INI_RUNTIME_LINE
		lc = load(long_text);
		ok(lc != NULL && lc->n_handlers == 1 &&
		    strlen(lc->handlers[0]->argv[1]) == 1000,
		    "a 1000-character exec line is read whole");
		config_free(lc);
#else
		ok(fails(long_text, 3, "line longer than"),
		    "a line over inih's limit is a clear error");
#endif
		memset(long_text, 'b', 5000);
		memcpy(long_text, "[agent]\nname = ", 15);
		strcpy(long_text + 5000, "\n");
		ok(fails(long_text, 2, "line longer than"),
		    "a line over the limit names its line");
	}
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
	    "env = NOEQUALS\n", prog);
	ok(fails(text, 4, "KEY=value"), "bad env");
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
	    "env = DISPATCH_JOB_ID=1\n", prog);
	ok(fails(text, 4, "DISPATCH_"), "env may not set DISPATCH_*");
	snprintf(text, sizeof text, "[handler h]\non = x\nexec = %s\n"
	    "workdir = /nonexistent\n", prog);
	ok(fails(text, 4, "workdir"), "missing workdir");
	test_handler_keys(prog);
	test_limits(prog);
	ok(fails("[agent]\n\n[handler h]\non = x\n", 3, "exec"),
	    "handler without exec names its section line");
	ok(fails("[agent]\nthis line has no equals\n", 2, "syntax"),
	    "syntax error");

	/* conf.d: read in name order, later files override */
	snprintf(text, sizeof text, "%s/conf.d", dir);
	mkdir(text, 0755);
	put("conf.d/20-b.conf", "[agent]\nworkers = 7\n");
	put("conf.d/10-a.conf", "[agent]\nworkers = 3\nname = fromdir\n");
	put("conf.d/ignored.txt", "[agent]\nworkers = 99\n");
	c = load("[agent]\nworkers = 1\n");
	ok(c && c->workers == 7 && strcmp(c->name, "fromdir") == 0,
	    "conf.d files in name order override the main file");
	config_free(c);
	put("conf.d/30-bad.conf", "[agent]\nbogus = 1\n");
	c = load("[agent]\n");
	ok(c == NULL && strstr(err, "conf.d/30-bad.conf:2: ") != NULL,
	    "an error in conf.d names that file: %s", err);

	/* [access] */
	{
		struct peer	root = { 0, 0, NULL, 0 };
		struct peer	nob = { 65534, 65534, NULL, 0 };
		uint32_t	grp[] = { 4242 };
		struct peer	member = { 1234, 1234, grp, 1 };

		rmdir_conf_d(dir);
		c = load("[access]\nemit = root:order.*, @4242\nemit = 65534:x.*\n"
		    "admin = 65534\n");
		ok(c != NULL, "access section loads: %s", c ? "" : err);
		if (c != NULL) {
			ok(access_may_emit(c, &root, "order.paid") &&
			    !access_may_emit(c, &root, "user.new"),
			    "user with a glob");
			ok(access_may_emit(c, &member, "anything"),
			    "supplementary group, every event");
			ok(access_may_emit(c, &nob, "x.y") &&
			    !access_may_emit(c, &nob, "order.paid"),
			    "second emit line adds");
			ok(access_may_admin(c, &nob) &&
			    !access_may_admin(c, &root), "admin list replaces "
			    "the default");
			config_free(c);
		}
		c = load("[agent]\n");
		ok(c && access_may_emit(c, &root, "a") &&
		    !access_may_emit(c, &nob, "a") && access_may_admin(c, &root)
		    && !access_may_admin(c, &nob), "defaults: root only");
		config_free(c);
		ok(fails("[access]\nemit = nosuchuser_xyz\n", 2, "no such user"),
		    "unknown user in access");
		ok(fails("[access]\nemit = @nosuchgroup_xyz\n", 2,
		    "no such group"), "unknown group in access");
		ok(fails("[access]\nadmin = root:order.*\n", 2, "globs"),
		    "admin takes no globs");
		ok(fails("[access]\nwho = root\n", 2, "unknown key"),
		    "unknown access key");
	}

	c = config_load("/nonexistent/d.conf", err, sizeof err);
	ok(c == NULL && strstr(err, "No such file"), "missing config file");

	snprintf(text, sizeof text, "rm -rf '%s'", dir);
	if (system(text) != 0)
		printf("# could not remove %s\n", dir);
	return done();
}
