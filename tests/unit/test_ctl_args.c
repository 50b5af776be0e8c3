/*
 * test_ctl_args.c: dispatchctl's command line.  Global options before or
 * after the command, a command's options among its arguments, "--", and
 * the lines that must be refused with exit 64 before anything is sent.
 */
#include "config.h"

#include <sys/wait.h>

#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../agent/dispatchd.h"
#include "tap.h"

/* Parse a NULL-ended command line into a. */
static void
parse(struct ctl_args *a, const char **words)
{
	static char	 store[16][64];
	static char	*argv[17];
	int		 argc;

	for (argc = 0; words[argc] != NULL; argc++) {
		snprintf(store[argc], sizeof store[argc], "%s", words[argc]);
		argv[argc] = store[argc];
	}
	argv[argc] = NULL;
	optind = 0;		/* glibc: start afresh */
	ctl_args_parse(argc, argv, a);
}

/* The exit status of parsing words in a child, its output thrown away. */
static int
refused(const char **words)
{
	struct ctl_args	a;
	pid_t		pid;
	int		status, fd;

	if ((pid = fork()) == 0) {
		fd = open("/dev/null", O_WRONLY);
		dup2(fd, 1);
		dup2(fd, 2);
		parse(&a, words);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) == -1 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

int
main(void)
{
	struct ctl_args	 a;
	const char	*emit[] = { "dispatchctl", "-s", "/tmp/x.sock", "emit",
	    "order.paid", "--data", "{}", "--delay", "1.5", NULL };
	const char	*after[] = { "dispatchctl", "jobs", "--state", "dead",
	    "--json", "-n", "20", "-s", "/tmp/y.sock", NULL };
	const char	*dash[] = { "dispatchctl", "job", "--", "-odd-id", NULL };
	const char	*retry[] = { "dispatchctl", "retry", "--dead",
	    "--handler", "sms", NULL };
	const char	*no_cmd[] = { "dispatchctl", "-s", "/tmp/x", NULL };
	const char	*unknown[] = { "dispatchctl", "frobnicate", NULL };
	const char	*missing[] = { "dispatchctl", "emit", NULL };
	const char	*extra[] = { "dispatchctl", "ping", "what", NULL };
	const char	*early[] = { "dispatchctl", "--state", "dead", "jobs",
	    NULL };
	const char	*foreign[] = { "dispatchctl", "ping", "--dead", NULL };
	const char	*bad_delay[] = { "dispatchctl", "emit", "e", "--delay",
	    "inf", NULL };
	const char	*bad_limit[] = { "dispatchctl", "jobs", "-n", "0",
	    NULL };
	const char	*no_value[] = { "dispatchctl", "jobs", "--state",
	    NULL };
	const char	*pause[] = { "dispatchctl", "pause", "invoices", "--for",
	    "1h", NULL };
	const char	*bad_for[] = { "dispatchctl", "pause", "h", "--for",
	    "soon", NULL };
	const char	*resume_for[] = { "dispatchctl", "resume", "h", "--for",
	    "1h", NULL };

	parse(&a, emit);
	ok(a.cmd == OP_EMIT && strcmp(a.name, "emit") == 0, "emit");
	ok(a.argc == 1 && strcmp(a.argv[0], "order.paid") == 0,
	    "its argument");
	ok(a.socket != NULL && strcmp(a.socket, "/tmp/x.sock") == 0,
	    "-s before the command");
	ok(a.data != NULL && strcmp(a.data, "{}") == 0 && a.delay_s == 1.5,
	    "--data and --delay");
	free(a.argv);

	parse(&a, after);
	ok(a.cmd == OP_JOBS && a.json && a.limit == 20 &&
	    strcmp(a.state, "dead") == 0, "jobs with its options");
	ok(a.socket != NULL && strcmp(a.socket, "/tmp/y.sock") == 0,
	    "-s after the command");
	free(a.argv);

	parse(&a, dash);
	ok(a.cmd == OP_JOB && a.argc == 1 && strcmp(a.argv[0], "-odd-id") == 0,
	    "-- lets an argument begin with -");
	free(a.argv);

	parse(&a, pause);
	ok(a.cmd == OP_PAUSE && a.argc == 1 && strcmp(a.argv[0], "invoices") ==
	    0 && a.for_s == 3600.0, "pause HANDLER --for 1h");
	free(a.argv);
	ok(refused(bad_for) == EXIT_USAGE, "pause --for soon: 64");
	ok(refused(resume_for) == EXIT_USAGE, "resume takes no --for: 64");

	parse(&a, retry);
	ok(a.cmd == OP_RETRY && a.dead && strcmp(a.handler, "sms") == 0 &&
	    a.argc == 0, "retry --dead --handler");
	free(a.argv);

	ok(refused(no_cmd) == EXIT_USAGE, "no command: 64");
	ok(refused(unknown) == EXIT_USAGE, "an unknown command: 64");
	ok(refused(missing) == EXIT_USAGE, "a missing argument: 64");
	ok(refused(extra) == EXIT_USAGE, "an extra argument: 64");
	ok(refused(early) == EXIT_USAGE,
	    "a command's option before the command: 64");
	ok(refused(foreign) == EXIT_USAGE,
	    "an option the command does not take: 64");
	ok(refused(bad_delay) == EXIT_USAGE, "--delay inf: 64");
	ok(refused(bad_limit) == EXIT_USAGE, "--limit 0: 64");
	ok(refused(no_value) == EXIT_USAGE, "an option without its value: 64");
	return done();
}
