/*
 * ctl_args.c: the dispatchctl command line.  The global options (-s, -c,
 * --json, -h, -V) may come before or after the command; a command's own
 * options come after it, in any order among its arguments; "--" ends the
 * options, so that an argument may begin with '-'.  All of it is checked
 * here, before anything is sent: a bad line exits 64 with a usage line.
 * The commands, their arguments and options come from proto_ops.
 */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatchd.h"

/* Codes of the options that have no short letter. */
enum {
	OPT_DATA = 256,
	OPT_DEAD,
	OPT_DELAY,
	OPT_EVENT,
	OPT_FOR,
	OPT_HANDLER,
	OPT_ID,
	OPT_OLDER_THAN,
	OPT_STATE
};

/*
 * A leading '-' makes getopt_long hand back each argument in its place
 * (as 1), whatever POSIXLY_CORRECT says, so that options may follow the
 * command; ':' tells a missing value apart from an unknown option.
 */
static const char ctl_shortopts[] = "-:c:fhjn:s:V";

/* Every option; the global ones are named in ctl_globals. */
static const struct option ctl_longopts[] = {
	{ "config",	required_argument,	NULL, 'c' },
	{ "help",	no_argument,		NULL, 'h' },
	{ "json",	no_argument,		NULL, 'j' },
	{ "socket",	required_argument,	NULL, 's' },
	{ "version",	no_argument,		NULL, 'V' },
	{ "data",	required_argument,	NULL, OPT_DATA },
	{ "dead",	no_argument,		NULL, OPT_DEAD },
	{ "delay",	required_argument,	NULL, OPT_DELAY },
	{ "event",	required_argument,	NULL, OPT_EVENT },
	{ "follow",	no_argument,		NULL, 'f' },
	{ "for",	required_argument,	NULL, OPT_FOR },
	{ "handler",	required_argument,	NULL, OPT_HANDLER },
	{ "id",		required_argument,	NULL, OPT_ID },
	{ "limit",	required_argument,	NULL, 'n' },
	{ "older-than",	required_argument,	NULL, OPT_OLDER_THAN },
	{ "state",	required_argument,	NULL, OPT_STATE },
	{ NULL,		0,			NULL, 0 }
};
static const char ctl_globals[] = "config help json socket version";

/* A bad command line: the message, the usage of c (or how to get it). */
#define ctl_fail(c, ...)	ctl_args_fail(EXIT_USAGE, (c), 1, __VA_ARGS__)

/* Print a command's name and synopsis; return the last line's length. */
static int
ctl_synopsis(FILE *f, const struct proto_op *c, int col, int indent)
{
	const char	*s;

	col += fprintf(f, "%s%s", c->name, *c->synopsis != '\0' ? " " : "");
	for (s = c->synopsis; *s != '\0'; s++) {
		if (*s == '\n')
			col = fprintf(f, "\n%*s", indent, "") - 1;
		else {
			fputc(*s, f);
			col++;
		}
	}
	return col;
}

/* Print the usage text and exit. */
static void __attribute__((noreturn))
ctl_usage(int status)
{
	FILE	*f = status ? stderr : stdout;
	int	 i, col;

	fputs("usage: dispatchctl [-s SOCKET] [-c CONFIG] [--json] COMMAND "
	    "[ARGUMENT ...]\n"
	    "       dispatchctl -h | -V\n"
	    "\n"
	    "commands:\n", f);
	for (i = 0; i < OP_COUNT; i++) {
		fputs("  ", f);
		col = ctl_synopsis(f, &proto_ops[i], 2, 7);
		fprintf(f, "%*s%s\n", col < 35 ? 37 - col : 2, "",
		    proto_ops[i].help);
	}
	fprintf(f, "\n"
	    "-s, -c and --json may also follow the command.  After \"--\",\n"
	    "nothing is an option: an argument may then begin with '-'.\n"
	    "The socket is -s, else $DISPATCHD_SOCKET, else the [agent] socket\n"
	    "of -c CONFIG, else %s.\n", CTL_DEFAULT_SOCKET);
	exit(status);
}

/*
 * dispatchctl's one error printer: "dispatchctl: " and the message; with
 * usage, the usage of c, or how to get it when c is NULL; then exit with
 * status.
 */
void
ctl_args_fail(int status, const struct proto_op *c, int usage,
    const char *fmt, ...)
{
	va_list	ap;

	fputs("dispatchctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (usage && c != NULL) {
		fputs("usage: dispatchctl ", stderr);
		ctl_synopsis(stderr, c, 0, 8);
		fputc('\n', stderr);
	} else if (usage)
		fputs("usage: dispatchctl [-s SOCKET] [-c CONFIG] [--json] "
		    "COMMAND ...\n(dispatchctl --help lists the commands)\n",
		    stderr);
	exit(status);
}

/* Whether word is one of the space-separated words of list. */
static int
ctl_in(const char *word, const char *list)
{
	size_t	len = strlen(word);

	while (*list != '\0') {
		if (strncmp(list, word, len) == 0 &&
		    (list[len] == ' ' || list[len] == '\0'))
			return 1;
		list += strcspn(list, " ");
		list += strspn(list, " ");
	}
	return 0;
}

/* The option whose code is val, or NULL. */
static const struct option *
ctl_option(int val)
{
	const struct option	*o;

	for (o = ctl_longopts; o->name != NULL; o++)
		if (o->val == val)
			return o;
	return NULL;
}

/* Refuse "-state" for "--state", which getopt would read as -s tate. */
static void
ctl_single_dash(const struct proto_op *c, const char *arg)
{
	const struct option	*o;
	size_t			 len;

	if (arg == NULL || arg[0] != '-' || arg[1] == '-' || arg[1] == '\0' ||
	    arg[2] == '\0')
		return;
	len = strcspn(arg + 1, "=");
	for (o = ctl_longopts; o->name != NULL; o++)
		if (strlen(o->name) == len &&
		    strncmp(o->name, arg + 1, len) == 0)
			ctl_fail(c, "'%s': long options take two dashes (-%s)",
			    arg, arg);
}

/* Exit 64 for what getopt refused (ch '?' or ':') in argument arg. */
static void __attribute__((noreturn))
ctl_refused(const struct proto_op *c, int ch, const char *arg)
{
	const struct option	*o;
	const char		*hint = "";
	size_t			 len;
	int			 n = 0;

	if (c != NULL && c->max_args != 0)
		hint = " (an argument that begins with '-' goes after \"--\")";
	if (ch == ':' && arg[1] == '-')
		ctl_fail(c, "%s needs a value", arg);
	if (ch == ':')
		ctl_fail(c, "-%c needs a value", optopt);
	if (optopt != 0 && (o = ctl_option(optopt)) != NULL)
		ctl_fail(c, "--%s takes no value", o->name);
	if (optopt != 0)
		ctl_fail(c, "unknown option '-%c'%s", optopt, hint);
	/* a long option: unknown, or the start of more than one */
	len = strcspn(arg, "=");
	for (o = ctl_longopts; o->name != NULL; o++)
		if (len > 2 && strncmp(o->name, arg + 2, len - 2) == 0)
			n++;
	if (n > 1)
		ctl_fail(c, "'%.*s' is ambiguous", (int)len, arg);
	ctl_fail(c, "unknown option '%.*s'%s", (int)len, arg, hint);
}

/* Keep the value of option ch; c is the command, NULL if none yet. */
static void
ctl_set(const struct proto_op *c, struct ctl_args *a, int ch, const char *arg)
{
	char	*end;
	int64_t	 ms;

	switch (ch) {
	case 'c':
		a->config = arg;
		break;
	case 'h':
		ctl_usage(0);
	case 'j':
		a->json = 1;
		break;
	case 's':
		a->socket = arg;
		break;
	case 'V':
		printf("dispatchctl %s\n", DISPATCHD_VERSION);
		exit(0);
	case OPT_DATA:
		if (a->data != NULL)
			ctl_fail(c, "%s: --data is given twice", c->name);
		a->data = arg;
		break;
	case OPT_DEAD:
		a->dead = 1;
		break;
	case OPT_DELAY:
		/* seconds, or a duration as in the config: 90s, 1h */
		a->delay = arg;
		a->delay_s = strtod(arg, &end);
		/* json_real() refuses inf and nan: the delay would be lost */
		if (*arg == '\0' || *end != '\0' || !isfinite(a->delay_s)) {
			if (util_parse_duration(arg, &ms) == -1)
				ctl_fail(c, "--delay: '%s' is not seconds or a "
				    "duration like 90s, 15m, 1h", arg);
			a->delay_s = (double)ms / 1000.0;
		}
		if (a->delay_s < 0)
			ctl_fail(c, "--delay: '%s' is negative", arg);
		break;
	case OPT_EVENT:
		a->event = arg;
		break;
	case 'f':
		a->follow = 1;
		break;
	case OPT_HANDLER:
		a->handler = arg;
		break;
	case OPT_ID:
		a->id = arg;
		break;
	case 'n':
		a->limit = strtol(arg, &end, 10);
		if (*arg == '\0' || *end != '\0' || a->limit < 1 ||
		    a->limit > 10000)
			ctl_fail(c, "%s: --limit takes 1-10000, not '%s'",
			    c->name, arg);
		break;
	case OPT_OLDER_THAN:
		if (util_parse_duration(arg, &ms) == -1)
			ctl_fail(c, "%s: --older-than takes a duration like 7d "
			    "or 12h", c->name);
		a->older_than = (double)ms / 1000.0;
		break;
	case OPT_FOR:
		if (util_parse_duration(arg, &ms) == -1 || ms <= 0)
			ctl_fail(c, "%s: --for takes a duration like 90s or 1h",
			    c->name);
		a->for_s = (double)ms / 1000.0;
		break;
	case OPT_STATE:
		a->state = arg;
		break;
	}
}

/* Take an argument: the first names the command, the rest are its own. */
static const struct proto_op *
ctl_operand(const struct proto_op *c, struct ctl_args *a, char *arg)
{
	int	i;

	if (c != NULL) {
		a->argv[a->argc++] = arg;
		return c;
	}
	for (i = 0; i < OP_COUNT; i++)
		if (strcmp(arg, proto_ops[i].name) == 0)
			return &proto_ops[i];
	ctl_fail(NULL, "unknown command '%s'", arg);
}

/* Parse argv into a, or exit: 0 for -h and -V, 64 for a bad line. */
void
ctl_args_parse(int argc, char **argv, struct ctl_args *a)
{
	const struct proto_op	*c = NULL;
	const struct option	*o;
	const char		*arg;
	int			 ch;

	memset(a, 0, sizeof *a);
	a->argv = xcalloc((size_t)argc + 1, sizeof *a->argv);
	for (;;) {
		/* the argument getopt looks at: mid-way, optind stays on it */
		arg = optind < argc ? argv[optind] : NULL;
		if ((ch = getopt_long(argc, argv, ctl_shortopts, ctl_longopts,
		    NULL)) == -1)
			break;
		if (ch == 1) {
			c = ctl_operand(c, a, optarg);
			continue;
		}
		ctl_single_dash(c, arg);
		if (ch == '?' || ch == ':')
			ctl_refused(c, ch, arg);
		o = ctl_option(ch);
		if (!ctl_in(o->name, ctl_globals)) {
			if (c == NULL)
				ctl_fail(NULL, "--%s is not a global option: "
				    "give it after the command", o->name);
			if (!ctl_in(o->name, c->options))
				ctl_fail(c, "%s takes no --%s", c->name,
				    o->name);
		}
		ctl_set(c, a, ch, optarg);
	}
	/* what follows "--", the command too if it came after it */
	for (; optind < argc; optind++)
		c = ctl_operand(c, a, argv[optind]);
	if (c == NULL)
		ctl_usage(EXIT_USAGE);
	a->cmd = (enum request_op)(c - proto_ops);
	a->name = c->name;
	if (a->argc < c->min_args)
		ctl_fail(c, "%s: missing %.*s", c->name,
		    (int)strcspn(c->synopsis, " \n"), c->synopsis);
	if (c->max_args != -1 && a->argc > c->max_args)
		ctl_fail(c, "%s: unexpected '%s'", c->name,
		    a->argv[c->max_args]);
}
