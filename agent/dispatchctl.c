/*
 * dispatchctl: the command-line client.  It speaks only to the agent's
 * socket: one request line, one reply line.  Exit status: 0 ok, 1 the
 * agent answered with an error, 64 usage, 69 the agent is unreachable.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "dispatchd.h"

#define REPLY_TIMEOUT_MS	30000
#define DEFAULT_SOCKET		"/run/dispatchd/dispatchd.sock"

static const char	*socket_path;
static int		 json_output;
static json_t		*emit_data;	/* live JSON, freed by ctl_exit */
static json_t		*request;
static json_t		*reply;

/* Print usage and exit. */
static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: dispatchctl [-s SOCKET] [-c CONFIG] [--json] COMMAND ...\n"
	    "\n"
	    "commands:\n"
	    "  emit EVENT [KEY=VALUE ...] [KEY:=JSON ...] [--data JSON | --data -]\n"
	    "       [--id ID] [--delay SECONDS]\n"
	    "                 emit an event; prints its id and its jobs\n"
	    "  ping           check that the agent answers\n"
	    "\n"
	    "The socket is -s, else $DISPATCHD_SOCKET, else the [agent] socket\n"
	    "of -c CONFIG, else %s.\n", DEFAULT_SOCKET);
	exit(status);
}

/* Free what is live and exit. */
static void __attribute__((noreturn))
ctl_exit(int status)
{
	json_decref(emit_data);
	json_decref(request);
	json_decref(reply);
	exit(status);
}

/* Print an error and exit with status. */
static void __attribute__((noreturn, format(printf, 2, 3)))
die(int status, const char *fmt, ...)
{
	va_list	ap;

	fputs("dispatchctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	ctl_exit(status);
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
		n = write(fd, line + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
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
	if (!json_output)
		fprintf(stderr, "dispatchctl: %s: %s\n", code ? code : "error",
		    msg ? msg : "(no message)");
	ctl_exit(1);
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

/* dispatchctl emit EVENT [KEY=VALUE ...] [--data ...] [--id] [--delay]. */
static int
ctl_emit(int argc, char **argv)
{
	json_t		*jobs, *job, *v;
	json_error_t	 jerr;
	const char	*id = NULL, *delay = NULL, *event;
	char		*end, *eq, *buf;
	double		 d;
	size_t		 i, len;
	int		 k;

	if (argc < 2)
		usage(EXIT_USAGE);
	event = argv[1];
	if (!util_valid_event_name(event))
		die(EXIT_USAGE, "'%s' is not an event name (1-%d characters of "
		    "A-Z a-z 0-9 . _ : -)", event, EVENT_NAME_MAX);
	for (k = 2; k < argc; k++) {
		if (strcmp(argv[k], "--data") == 0 && k + 1 < argc) {
			if (emit_data != NULL)
				die(EXIT_USAGE, "--data cannot be combined "
				    "with KEY=VALUE or given twice");
			if (strcmp(argv[++k], "-") == 0) {
				buf = ctl_read_stdin(&len);
				emit_data = json_loadb(buf, len, 0, &jerr);
				free(buf);
			} else
				emit_data = json_loads(argv[k], JSON_DECODE_ANY,
				    &jerr);
			if (emit_data == NULL)
				die(EXIT_USAGE, "--data: invalid JSON: %s",
				    jerr.text);
			if (!json_is_object(emit_data))
				die(EXIT_USAGE, "--data: must be a JSON object");
		} else if (strcmp(argv[k], "--id") == 0 && k + 1 < argc)
			id = argv[++k];
		else if (strcmp(argv[k], "--delay") == 0 && k + 1 < argc) {
			delay = argv[++k];
			d = strtod(delay, &end);
			if (*delay == '\0' || *end != '\0' || d < 0)
				die(EXIT_USAGE, "--delay: '%s' is not a number "
				    "of seconds", delay);
		} else if ((eq = strchr(argv[k], '=')) != NULL &&
		    eq != argv[k] && argv[k][0] != '-') {
			if (emit_data == NULL)
				emit_data = json_object();
			if (eq[-1] == ':') {
				v = json_loads(eq + 1, JSON_DECODE_ANY, &jerr);
				if (v == NULL)
					die(EXIT_USAGE, "%s: invalid JSON: %s",
					    argv[k], jerr.text);
				eq[-1] = '\0';
			} else {
				v = json_string(eq + 1);
				if (v == NULL)
					die(EXIT_USAGE, "%s: not valid UTF-8",
					    argv[k]);
				*eq = '\0';
			}
			json_object_set_new(emit_data, argv[k], v);
		} else
			die(EXIT_USAGE, "emit: unexpected '%s' (try KEY=VALUE, "
			    "KEY:=JSON, --data, --id or --delay)", argv[k]);
	}
	request = json_pack("{s:s, s:s}", "op", "emit", "event", event);
	if (emit_data != NULL)
		json_object_set_new(request, "data", emit_data);
	emit_data = NULL;	/* the request owns it now */
	if (id != NULL)
		json_object_set_new(request, "id", json_string(id));
	if (delay != NULL)
		json_object_set_new(request, "delay",
		    json_real(strtod(delay, NULL)));
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
	ctl_exit(0);
}

/* dispatchctl ping. */
static int
ctl_ping(int argc, char **argv)
{
	if (argc != 1)
		usage(EXIT_USAGE);
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
	ctl_exit(0);
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

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket",	required_argument,	NULL, 's' },
		{ "config",	required_argument,	NULL, 'c' },
		{ "json",	no_argument,		NULL, 'j' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "version",	no_argument,		NULL, 'V' },
		{ NULL,		0,			NULL, 0 }
	};
	const char	*config = NULL;
	int		 ch;

	while ((ch = getopt_long(argc, argv, "+s:c:jhV", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			socket_path = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case 'j':
			json_output = 1;
			break;
		case 'h':
			usage(0);
		case 'V':
			printf("dispatchctl %s\n", DISPATCHD_VERSION);
			return 0;
		default:
			usage(EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage(EXIT_USAGE);
	if (socket_path == NULL)
		socket_path = getenv("DISPATCHD_SOCKET");
	if (socket_path == NULL && config != NULL)
		ctl_socket_from_config(config, 1);
	if (socket_path == NULL &&
	    access(SYSCONFDIR "/dispatchd/dispatchd.conf", R_OK) == 0)
		ctl_socket_from_config(SYSCONFDIR "/dispatchd/dispatchd.conf", 0);
	if (socket_path == NULL)
		socket_path = DEFAULT_SOCKET;
	if (strcmp(argv[0], "emit") == 0)
		return ctl_emit(argc, argv);
	if (strcmp(argv[0], "ping") == 0)
		return ctl_ping(argc, argv);
	die(EXIT_USAGE, "unknown command '%s' (try emit or ping)", argv[0]);
}
