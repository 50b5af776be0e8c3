/*
 * dispatchctl: the command-line client.  It speaks only to the agent's
 * socket: one request line, one reply line.  Exit status: 0 ok, 1 the
 * agent answered with an error, 64 usage, 69 the agent is unreachable.
 * The command line is parsed and checked in ctl_args.c.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "dispatchd.h"

#define REPLY_TIMEOUT_MS	30000

typedef int (*ctl_fn)(const struct ctl_args *);

/* An error: the message, no usage line (ctl_args_fail prints both). */
#define die(status, ...)	ctl_args_fail((status), NULL, 0, __VA_ARGS__)

static const char	*socket_path;
static int		 json_output;
static json_t		*emit_data;	/* live JSON, freed at exit */
static json_t		*request;
static json_t		*reply;

/* At exit: free what is live. */
static void
ctl_free_live(void)
{
	json_decref(emit_data);
	json_decref(request);
	json_decref(reply);
	emit_data = request = reply = NULL;
}

/* Send the request line and read the reply object into reply. */
static void
ctl_call(void)
{
	struct sockaddr_un	 sun;
	struct pollfd		 pfd;
	json_error_t		 jerr;
	char			*line, *buf = NULL, *nl;
	size_t			 len, have = 0, size = 0, off = 0;
	ssize_t			 n;
	int			 fd;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(socket_path) >= sizeof sun.sun_path)
		die(EXIT_USAGE, "socket path too long: %s", socket_path);
	strcpy(sun.sun_path, socket_path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		die(EXIT_UNAVAILABLE, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1)
		die(EXIT_UNAVAILABLE, "cannot reach the agent at %s: %s",
		    socket_path, strerror(errno));
	if ((line = json_dumps(request, JSON_COMPACT)) == NULL)
		die(1, "cannot encode the request");
	len = strlen(line);
	line = xreallocarray(line, len + 2, 1);
	line[len++] = '\n';
	while (off < len) {
		n = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		/* refused mid-request (too large): its answer says why */
		if (n == -1 && (errno == EPIPE || errno == ECONNRESET))
			break;
		if (n == -1)
			die(EXIT_UNAVAILABLE, "write to %s: %s", socket_path,
			    strerror(errno));
		off += (size_t)n;
	}
	free(line);
	for (;;) {
		if (have + 4096 > size) {
			size = size ? size * 2 : 8192;
			buf = xreallocarray(buf, size, 1);
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, REPLY_TIMEOUT_MS) == 0)
			die(EXIT_UNAVAILABLE, "no reply from the agent in %d s",
			    REPLY_TIMEOUT_MS / 1000);
		n = read(fd, buf + have, size - have - 1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			die(EXIT_UNAVAILABLE, "the agent closed the connection "
			    "without a reply");
		have += (size_t)n;
		buf[have] = '\0';
		if ((nl = memchr(buf, '\n', have)) != NULL)
			break;
	}
	close(fd);
	reply = json_loadb(buf, (size_t)(nl - buf), 0, &jerr);
	if (reply == NULL || !json_is_object(reply))
		die(1, "unreadable reply from the agent: %s", jerr.text);
	if (json_output)
		printf("%.*s\n", (int)(nl - buf), buf);
	free(buf);
}

/* Exit 1 with the agent's error, if the reply is one. */
static void
ctl_check(void)
{
	const char	*code, *msg;

	if (json_is_true(json_object_get(reply, "ok")))
		return;
	code = json_string_value(json_object_get(reply, "code"));
	msg = json_string_value(json_object_get(reply, "error"));
	if (json_output)
		exit(1);
	die(1, "%s: %s", code ? code : "error", msg ? msg : "(no message)");
}

/* Read all of standard input. */
static char *
ctl_read_stdin(size_t *len)
{
	char	*buf = NULL;
	size_t	 size = 0, have = 0, n;

	do {
		if (have + 4096 > size) {
			size = size ? size * 2 : 8192;
			buf = xreallocarray(buf, size, 1);
		}
		n = fread(buf + have, 1, size - have, stdin);
		have += n;
	} while (n > 0);
	if (ferror(stdin))
		die(1, "reading standard input: %s", strerror(errno));
	*len = have;
	return buf;
}

/* Set emit_data from --data: JSON text, or - for standard input. */
static void
ctl_emit_data(const char *arg)
{
	json_error_t	 jerr;
	char		*buf;
	size_t		 len;

	if (strcmp(arg, "-") == 0) {
		buf = ctl_read_stdin(&len);
		emit_data = json_loadb(buf, len, 0, &jerr);
		free(buf);
	} else
		emit_data = json_loads(arg, JSON_DECODE_ANY, &jerr);
	if (emit_data == NULL)
		die(EXIT_USAGE, "--data: invalid JSON: %s", jerr.text);
	if (!json_is_object(emit_data))
		die(EXIT_USAGE, "--data: must be a JSON object");
}

/* dispatchctl emit EVENT [KEY=VALUE ...] [--data ...] [--id] [--delay]. */
static int
ctl_emit(const struct ctl_args *a)
{
	json_t		*jobs, *job, *v;
	json_error_t	 jerr;
	const char	*event = a->argv[0];
	char		*eq;
	size_t		 i;
	int		 k;

	if (!util_valid_event_name(event))
		die(EXIT_USAGE, "'%s' is not an event name (1-%d characters of "
		    "A-Z a-z 0-9 . _ : -)", event, EVENT_NAME_MAX);
	if (a->data != NULL)
		ctl_emit_data(a->data);
	/* KEY=VALUE and KEY:=JSON add to --data's object, if any */
	for (k = 1; k < a->argc; k++) {
		if ((eq = strchr(a->argv[k], '=')) == NULL || eq == a->argv[k])
			die(EXIT_USAGE, "emit: unexpected '%s' (try KEY=VALUE, "
			    "KEY:=JSON, --data, --id or --delay)", a->argv[k]);
		if (emit_data == NULL)
			emit_data = json_object();
		if (eq[-1] == ':') {
			v = json_loads(eq + 1, JSON_DECODE_ANY, &jerr);
			if (v == NULL)
				die(EXIT_USAGE, "%s: invalid JSON: %s",
				    a->argv[k], jerr.text);
			eq[-1] = '\0';
		} else {
			v = json_string(eq + 1);
			if (v == NULL)
				die(EXIT_USAGE, "%s: not valid UTF-8",
				    a->argv[k]);
			*eq = '\0';
		}
		json_object_set_new(emit_data, a->argv[k], v);
	}
	request = json_pack("{s:s, s:s}", "op", "emit", "event", event);
	if (emit_data != NULL)
		json_object_set_new(request, "data", emit_data);
	emit_data = NULL;	/* the request owns it now */
	if (a->id != NULL)
		json_object_set_new(request, "id", json_string(a->id));
	if (a->delay != NULL)
		json_object_set_new(request, "delay", json_real(a->delay_s));
	ctl_call();
	ctl_check();
	if (!json_output) {
		printf("event %s%s\n",
		    json_string_value(json_object_get(reply, "event_id")),
		    json_is_true(json_object_get(reply, "duplicate")) ?
		    " (duplicate: already queued)" : "");
		if (json_is_true(json_object_get(reply, "spooled")))
			printf("spooled: Redis is unreachable; the agent queues "
			    "it when Redis is back\n");
		jobs = json_object_get(reply, "jobs");
		json_array_foreach(jobs, i, job)
			printf("job %s %s\n",
			    json_string_value(json_object_get(job, "id")),
			    json_string_value(json_object_get(job, "handler")));
		if (jobs != NULL && json_array_size(jobs) == 0)
			printf("no handler is configured for %s\n", event);
	}
	exit(0);
}

/* dispatchctl ping. */
static int
ctl_ping(const struct ctl_args *a)
{
	request = json_pack("{s:s}", "op", "ping");
	ctl_call();
	ctl_check();
	if (!json_output)
		printf("agent %s (dispatchd %s): redis %s, %lld of %lld "
		    "workers busy\n",
		    json_string_value(json_object_get(reply, "agent")),
		    json_string_value(json_object_get(reply, "version")),
		    json_is_true(json_object_get(reply, "redis")) ?
		    "connected" : "NOT connected",
		    (long long)json_integer_value(json_object_get(reply,
		    "running")),
		    (long long)json_integer_value(json_object_get(reply,
		    "workers")));
	exit(0);
}

/* Where the agent runs its jobs, from a status reply. */
static void
ctl_print_cgroups(void)
{
	json_t	*v = json_object_get(reply, "cgroup");

	if (json_is_string(v))
		printf("cgroups: %s\n", json_string_value(v));
}

/* A handler's flow control in a status reply: keys, limits, holds. */
static void
ctl_print_flow(json_t *h)
{
	json_t	*k, *why;
	size_t	 i;
	char	 b[3][64];

	if (json_object_get(h, "busy_keys")) {
		printf("  keys: %s busy, %s jobs waiting",
		    ctl_cell(h, "busy_keys", b[0], sizeof b[0]),
		    ctl_cell(h, "waiting", b[1], sizeof b[1]));
		json_array_foreach(json_object_get(h, "keys"), i, k)
			printf("%s %s (%s running, %s waiting)", i ? "," : ":",
			    ctl_cell(k, "key", b[0], sizeof b[0]),
			    ctl_cell(k, "held", b[1], sizeof b[1]),
			    ctl_cell(k, "waiting", b[2], sizeof b[2]));
		printf("\n");
	}
	if (json_object_get(h, "max_running"))
		printf("  fleet: %s of max_running %s\n", ctl_cell(h,
		    "running_fleet", b[0], sizeof b[0]), ctl_cell(h,
		    "max_running", b[1], sizeof b[1]));
	if ((why = json_object_get(h, "held")) != NULL) {
		printf("  not starting now:");
		json_array_foreach(why, i, k)
			printf("%s %s", i ? "," : "", json_string_value(k));
		printf("\n");
	}
}

/* dispatchctl status. */
static int
ctl_status(const struct ctl_args *a)
{
	json_t	*h, *ag;
	size_t	 i;
	char	 b[8][64];

	request = json_pack("{s:s}", "op", "status");
	ctl_call();
	ctl_check();
	if (json_output)
		exit(0);
	if (!json_is_true(json_object_get(reply, "redis"))) {
		printf("Redis: NOT reachable from the agent (%s events waiting "
		    "in the spool)\n", ctl_cell(reply, "spool_waiting", b[0],
		    sizeof b[0]));
		ctl_print_cgroups();
		exit(0);
	}
	printf("%-20s %8s %8s %8s %8s %9s %9s %12s  %s\n", "HANDLER", "READY",
	    "DELAYED", "RUNNING", "DEAD", "DONE/1h", "FAILED/1h",
	    "OLDEST READY", "AGENTS");
	json_array_foreach(json_object_get(reply, "handlers"), i, h) {
		json_t	*who;
		size_t	 k;

		printf("%-20s %8s %8s %8s %8s %9s %9s %11s%s  ",
		    ctl_cell(h, "name", b[0], sizeof b[0]),
		    ctl_cell(h, "ready", b[1], sizeof b[1]),
		    ctl_cell(h, "delayed", b[2], sizeof b[2]),
		    ctl_cell(h, "running", b[3], sizeof b[3]),
		    ctl_cell(h, "dead", b[4], sizeof b[4]),
		    ctl_cell(h, "done_1h", b[5], sizeof b[5]),
		    ctl_cell(h, "failed_1h", b[6], sizeof b[6]),
		    ctl_cell(h, "oldest_ready_s", b[7], sizeof b[7]),
		    json_object_get(h, "oldest_ready_s") ? "s" : " ");
		json_array_foreach(json_object_get(h, "agents"), k, who)
			printf("%s%s", k ? "," : "", json_string_value(who));
		if (json_array_size(json_object_get(h, "agents")) == 0)
			printf("(none alive: jobs wait)");
		printf("\n");
		if (json_is_true(json_object_get(h, "paused")))
			printf("  PAUSED %s%s\n", json_object_get(h,
			    "paused_until_ms") ? "until " : "until resumed",
			    json_object_get(h, "paused_until_ms") ? ctl_when(h,
			    "paused_until_ms", b[1], sizeof b[1]) : "");
		ctl_print_flow(h);
		if (json_is_true(json_object_get(h, "flow_mismatch")))
			printf("  WARNING: %s has different key, per_key, "
			    "on_busy, rate or max_running on different "
			    "agents\n", b[0]);
		if (json_is_true(json_object_get(h, "exec_mismatch")))
			printf("  WARNING: %s has different exec lines on "
			    "different agents\n", b[0]);
	}
	printf("\n%-24s %-6s %14s %8s %-10s %s\n", "AGENT", "ALIVE",
	    "HEARTBEAT AGE", "RUNNING", "VERSION", "HOST");
	json_array_foreach(json_object_get(reply, "agents"), i, ag)
		printf("%-24s %-6s %13ss %8s %-10s %s\n",
		    ctl_cell(ag, "name", b[0], sizeof b[0]),
		    ctl_cell(ag, "alive", b[1], sizeof b[1]),
		    ctl_cell(ag, "heartbeat_age_s", b[2], sizeof b[2]),
		    ctl_cell(ag, "running", b[3], sizeof b[3]),
		    ctl_cell(ag, "version", b[4], sizeof b[4]),
		    ctl_cell(ag, "host", b[5], sizeof b[5]));
	printf("\nRedis: reachable; %s delayed, %s dead in all%s\n",
	    ctl_cell(reply, "delayed_total", b[0], sizeof b[0]),
	    ctl_cell(reply, "dead_total", b[1], sizeof b[1]),
	    json_is_true(json_object_get(reply, "truncated")) ?
	    " (per-handler counts are partial: large queues)" : "");
	ctl_print_cgroups();
	exit(0);
}

/* dispatchctl jobs [--state S] [--handler H] [--limit N]. */
static int
ctl_jobs(const struct ctl_args *a)
{
	json_t		*j;
	size_t		 i;
	char		 b[8][64];

	request = json_pack("{s:s, s:s}", "op", "jobs", "state",
	    a->state ? a->state : "ready");
	if (a->handler)
		json_object_set_new(request, "handler",
		    json_string(a->handler));
	if (a->limit)
		json_object_set_new(request, "limit", json_integer(a->limit));
	ctl_call();
	ctl_check();
	if (json_output)
		exit(0);
	printf("%-34s %-16s %-20s %-8s %7s %-19s %s\n", "JOB", "HANDLER",
	    "EVENT", "STATE", "ATTEMPT", "CREATED", "DUE/DIED");
	json_array_foreach(json_object_get(reply, "jobs"), i, j)
		printf("%-34s %-16s %-20s %-8s %7s %-19s %s\n",
		    ctl_cell(j, "id", b[0], sizeof b[0]),
		    ctl_cell(j, "handler", b[1], sizeof b[1]),
		    ctl_cell(j, "event", b[2], sizeof b[2]),
		    ctl_cell(j, "state", b[3], sizeof b[3]),
		    ctl_cell(j, "attempt", b[4], sizeof b[4]),
		    ctl_when(j, "created_ms", b[5], sizeof b[5]),
		    ctl_when(j, json_object_get(j, "died_ms") ? "died_ms" :
		    "due_ms", b[6], sizeof b[6]));
	exit(0);
}

/* dispatchctl results [--handler H] [--event E] [-n N] [--follow]. */
static int
ctl_results(const struct ctl_args *a)
{
	json_t		*r;
	char		*last = NULL;
	size_t		 i;

	for (;;) {
		request = json_pack("{s:s}", "op", "results");
		if (a->handler)
			json_object_set_new(request, "handler",
			    json_string(a->handler));
		if (a->event)
			json_object_set_new(request, "event",
			    json_string(a->event));
		if (last != NULL)
			json_object_set_new(request, "after",
			    json_string(last));
		else
			json_object_set_new(request, "limit",
			    json_integer(a->limit ? a->limit : 20));
		ctl_call();
		ctl_check();
		if (!json_output)
			json_array_foreach(json_object_get(reply, "results"),
			    i, r)
				ctl_print_result(r);
		fflush(stdout);
		if (json_string_value(json_object_get(reply, "last"))) {
			free(last);
			last = xstrdup(json_string_value(json_object_get(reply,
			    "last")));
		}
		if (!a->follow)
			break;
		json_decref(request);
		json_decref(reply);
		request = reply = NULL;
		if (last == NULL)
			last = xstrdup("0");
		usleep(500 * 1000);
	}
	free(last);
	exit(0);
}

/* dispatchctl job ID. */
static int
ctl_job(const struct ctl_args *a)
{
	json_t		*job, *v, *r;
	const char	*key;
	size_t		 i;
	char		*s;

	request = json_pack("{s:s, s:s}", "op", "job", "id", a->argv[0]);
	ctl_call();
	ctl_check();
	if (json_output)
		exit(0);
	job = json_object_get(reply, "job");
	if (json_is_object(job))
		json_object_foreach(job, key, v) {
			s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			printf("%-14s %s\n", key, json_is_string(v) ?
			    json_string_value(v) : s);
			free(s);
		}
	else
		printf("(the job is gone: it finished or was cancelled)\n");
	printf("\nresults:\n");
	json_array_foreach(json_object_get(reply, "results"), i, r) {
		ctl_print_result(r);
		if ((v = json_object_get(r, "stdout")) && json_string_length(v))
			printf("  stdout: %s\n", json_string_value(v));
		if ((v = json_object_get(r, "stderr")) && json_string_length(v))
			printf("  stderr: %s\n", json_string_value(v));
	}
	exit(0);
}

/* dispatchctl cancel ID | retry ID | retry --dead | purge --dead. */
static int
ctl_change(const struct ctl_args *a)
{
	const char	*op = a->name, *agent;

	if (a->argc == 1 && (a->dead || a->handler || a->limit))
		die(EXIT_USAGE, "%s: give a job id or --dead [--handler H], "
		    "not both", op);
	if (a->argc == 1)
		request = json_pack("{s:s, s:s}", "op", op, "id", a->argv[0]);
	else if (!a->dead && a->cmd == OP_PURGE)
		die(EXIT_USAGE, "purge: give --dead (cancel ID removes one "
		    "job)");
	else if (!a->dead)
		die(EXIT_USAGE, "%s: give a job id or --dead", op);
	else {
		request = json_pack("{s:s, s:b}", "op", op, "dead", 1);
		if (a->handler)
			json_object_set_new(request, "handler",
			    json_string(a->handler));
		if (a->limit)
			json_object_set_new(request, "limit",
			    json_integer(a->limit));
		if (a->older_than > 0)
			json_object_set_new(request, "older_than",
			    json_real(a->older_than));
	}
	ctl_call();
	ctl_check();
	if (json_output)
		exit(0);
	/* a running job: its agent stops it, and its finish records it */
	agent = json_string_value(json_object_get(reply, "agent"));
	if (json_is_true(json_object_get(reply, "cancelling")))
		printf("cancelling job %s: it is running on agent %s, which "
		    "stops it within a second (dispatchctl job %s shows the "
		    "outcome)\n", a->argv[0], agent ? agent : "?", a->argv[0]);
	else
		printf("%s: %lld job%s\n", a->cmd == OP_CANCEL ?
		    "cancelled" : a->cmd == OP_RETRY ? "queued again" :
		    "purged", (long long)json_integer_value(json_object_get(
		    reply, "count")), json_integer_value(json_object_get(reply,
		    "count")) == 1 ? "" : "s");
	exit(0);
}

/* dispatchctl handlers. */
static int
ctl_handlers(const struct ctl_args *a)
{
	json_t	*h, *v;
	size_t	 i, k;
	char	 b[64];

	request = json_pack("{s:s}", "op", "handlers");
	ctl_call();
	ctl_check();
	if (json_output)
		exit(0);
	printf("# from %s\n", json_string_value(json_object_get(reply,
	    "config")));
	json_array_foreach(json_object_get(reply, "handlers"), i, h) {
		printf("\n[handler %s]\t# %s\n", json_string_value(
		    json_object_get(h, "name")), json_string_value(
		    json_object_get(h, "declared")));
		printf("on = ");
		json_array_foreach(json_object_get(h, "on"), k, v)
			printf("%s%s", k ? ", " : "", json_string_value(v));
		printf("\nexec = %s\n", json_string_value(json_object_get(h,
		    "exec")));
		printf("timeout = %ss\n", ctl_cell(h, "timeout_s", b, sizeof b));
		printf("attempts = %s\n", ctl_cell(h, "attempts", b, sizeof b));
		printf("backoff = %ss..", ctl_cell(h, "backoff_base_s", b,
		    sizeof b));
		printf("%ss\n", ctl_cell(h, "backoff_cap_s", b, sizeof b));
		printf("delay = %ss\n", ctl_cell(h, "delay_s", b, sizeof b));
		printf("concurrency = %s\n", ctl_cell(h, "concurrency", b,
		    sizeof b));
		if (json_object_get(h, "max_running"))
			printf("max_running = %s\n", ctl_cell(h, "max_running",
			    b, sizeof b));
		if (json_object_get(h, "rate"))
			printf("rate = %s\n", ctl_cell(h, "rate", b, sizeof b));
		printf("workdir = %s\n", ctl_cell(h, "workdir", b, sizeof b));
		printf("# runs as %s", ctl_cell(h, "user", b, sizeof b));
		printf(":%s", ctl_cell(h, "group", b, sizeof b));
		printf(", uid %s", ctl_cell(h, "uid", b, sizeof b));
		printf(" gid %s\n", ctl_cell(h, "gid", b, sizeof b));
		if (json_object_get(h, "limit_nofile"))
			printf("limit_nofile = %s\n", ctl_cell(h,
			    "limit_nofile", b, sizeof b));
		if (json_object_get(h, "limit_nproc"))
			printf("limit_nproc = %s\n", ctl_cell(h, "limit_nproc",
			    b, sizeof b));
		if (json_object_get(h, "limit_as"))
			printf("limit_as = %s\n", ctl_cell(h, "limit_as", b,
			    sizeof b));
		if (json_object_get(h, "limit_cpu_s"))
			printf("limit_cpu = %ss\n", ctl_cell(h, "limit_cpu_s", b,
			    sizeof b));
		json_array_foreach(json_object_get(h, "env"), k, v)
			printf("env = %s\n", json_string_value(v));
	}
	exit(0);
}

/* dispatchctl run HANDLER [--data JSON] [--event E]. */
static int
ctl_run(const struct ctl_args *a)
{
	json_t		*data = NULL, *v;
	json_error_t	 jerr;
	char		 b[64];
	int		 status;

	if (a->data != NULL && (data = json_loads(a->data, JSON_DECODE_ANY,
	    &jerr)) == NULL)
		die(EXIT_USAGE, "--data: invalid JSON: %s", jerr.text);
	request = json_pack("{s:s, s:s}", "op", "run", "handler", a->argv[0]);
	if (data != NULL)
		json_object_set_new(request, "data", data);
	if (a->event != NULL)
		json_object_set_new(request, "event", json_string(a->event));
	ctl_call();
	ctl_check();
	status = strcmp(json_string_value(json_object_get(reply, "outcome")),
	    "done") == 0 ? 0 : 1;
	if (json_output)
		exit(status);
	printf("outcome: %s", json_string_value(json_object_get(reply,
	    "outcome")));
	if (json_is_integer(v = json_object_get(reply, "exit")))
		printf(", exit %lld", (long long)json_integer_value(v));
	if (json_is_integer(v = json_object_get(reply, "signal")))
		printf(", signal %lld", (long long)json_integer_value(v));
	if (json_is_true(json_object_get(reply, "timed_out")))
		printf(", timed out");
	printf(", %s ms\n", ctl_cell(reply, "duration_ms", b, sizeof b));
	if (json_string_length(v = json_object_get(reply, "error")))
		printf("error: %s\n", json_string_value(v));
	printf("--- stdout%s\n%s", json_is_true(json_object_get(reply,
	    "truncated")) ? " (truncated)" : "", json_string_value(
	    json_object_get(reply, "stdout")));
	printf("--- stderr\n%s", json_string_value(json_object_get(reply,
	    "stderr")));
	exit(status);
}

/* dispatchctl pause HANDLER [--for D], resume HANDLER. */
static int
ctl_flow(const struct ctl_args *a)
{
	char	b[64];

	request = json_pack("{s:s, s:s}", "op", a->name, "handler",
	    a->argv[0]);
	if (a->for_s > 0)
		json_object_set_new(request, "for", json_real(a->for_s));
	ctl_call();
	ctl_check();
	if (json_output)
		exit(0);
	if (a->cmd == OP_RESUME)
		printf("%s: %s\n", a->argv[0], json_is_true(json_object_get(
		    reply, "was_paused")) ? "resumed" : "was not paused");
	else if (json_object_get(reply, "until_ms"))
		printf("%s: paused until %s\n", a->argv[0], ctl_when(reply,
		    "until_ms", b, sizeof b));
	else
		printf("%s: paused until resumed\n", a->argv[0]);
	exit(0);
}

/* dispatchctl metrics. */
static int
ctl_metrics(const struct ctl_args *a)
{
	request = json_pack("{s:s}", "op", "metrics");
	ctl_call();
	ctl_check();
	if (!json_output)
		fputs(json_string_value(json_object_get(reply, "text")), stdout);
	exit(0);
}

/* dispatchctl check [FILE]: as dispatchd -t, without the agent. */
static int
ctl_config_check(const struct ctl_args *a)
{
	struct config	*c;
	char		 err[1024];
	const char	*path = a->argc > 0 ? a->argv[0] : a->config ?
	    a->config : SYSCONFDIR "/dispatchd/dispatchd.conf";
	if ((c = config_load(path, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		exit(EXIT_CONFIG);
	}
	printf("%s: configuration OK (%zu handlers)\n", path, c->n_handlers);
	config_free(c);
	exit(0);
}

/* Find the socket from the config file, quietly. */
static void
ctl_socket_from_config(const char *path, int must)
{
	struct config	*c;
	char		 err[1024];

	if ((c = config_load(path, err, sizeof err)) == NULL) {
		if (must)
			die(EXIT_USAGE, "%s", err);
		return;
	}
	socket_path = xstrdup(c->socket);
	config_free(c);
}

/* The socket: -s, $DISPATCHD_SOCKET, -c's config, the default config. */
static void
ctl_find_socket(const struct ctl_args *a)
{
	socket_path = a->socket;
	if (socket_path == NULL)
		socket_path = getenv("DISPATCHD_SOCKET");
	if (socket_path == NULL && a->config != NULL)
		ctl_socket_from_config(a->config, 1);
	if (socket_path == NULL &&
	    access(SYSCONFDIR "/dispatchd/dispatchd.conf", R_OK) == 0)
		ctl_socket_from_config(SYSCONFDIR "/dispatchd/dispatchd.conf", 0);
	if (socket_path == NULL)
		socket_path = CTL_DEFAULT_SOCKET;
}

/* Parse the command line, find the socket, run the command. */
int
main(int argc, char **argv)
{
	/* each command of proto_ops, by op */
	static const ctl_fn	 cmds[OP_COUNT] = {
		[OP_EMIT] = ctl_emit,
		[OP_PING] = ctl_ping,
		[OP_STATUS] = ctl_status,
		[OP_JOBS] = ctl_jobs,
		[OP_JOB] = ctl_job,
		[OP_CANCEL] = ctl_change,
		[OP_RETRY] = ctl_change,
		[OP_PURGE] = ctl_change,
		[OP_RESULTS] = ctl_results,
		[OP_HANDLERS] = ctl_handlers,
		[OP_CHECK] = ctl_config_check,
		[OP_RUN] = ctl_run,
		[OP_METRICS] = ctl_metrics,
		[OP_PAUSE] = ctl_flow,
		[OP_RESUME] = ctl_flow,
	};
	static struct ctl_args	 args;	/* static: its argv stays reachable */
	int			 i;

	for (i = 0; i < OP_COUNT; i++)
		if (cmds[i] == NULL)
			die(1, "no function for command %s",
			    proto_ops[i].name);
	atexit(ctl_free_live);
	ctl_args_parse(argc, argv, &args);
	json_output = args.json;
	/* check needs no socket, and a bad -c file is what it reports */
	if (args.cmd != OP_CHECK)
		ctl_find_socket(&args);
	return cmds[args.cmd](&args);
}
