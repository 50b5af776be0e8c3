/*
 * handler.c: one [handler NAME] section.  Its keys are read through a
 * table (name, type, place in struct handler, bounds and the words of its
 * error); the few that need more than a number or a name have their own
 * parse function.  Once the whole configuration is read, a handler learns
 * who runs it.  A handler is shared by its configuration and every job
 * running it, and the last to let go frees it.
 */
#include "config.h"

#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatchd.h"

/* Where a value was read, and room to say what is wrong with it. */
struct handler_at {
	struct handler	*h;
	const char	*key;
	const char	*file;
	int		 line;
	char		*msg;
	size_t		 msglen;
};

enum handler_key_type {
	HKEY_DURATION,			/* int64_t milliseconds */
	HKEY_INT,			/* int */
	HKEY_LONG,			/* long */
	HKEY_SIZE,			/* size_t bytes */
	HKEY_USER,			/* char *, a user that exists */
	HKEY_GROUP,			/* char *, a group that exists */
	HKEY_CUSTOM,			/* parse does it all */
};

/*
 * One [handler] key.  A value that does not parse, or is under min (or
 * over max, for numbers), gives "[handler NAME] KEY: " then bad_before,
 * the value in quotes and bad_after; under gives its own words instead
 * when a value below min is wrong for another reason than its form.
 */
struct handler_key {
	const char		*name;
	enum handler_key_type	 type;
	size_t			 off;
	long			 min;
	long			 max;		/* numbers only */
	const char		*bad_before;
	const char		*bad_after;
	const char		*under;
	int			(*parse)(struct handler_at *, const char *);
};

static int	 handler_fail(struct handler_at *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static int	 handler_parse_on(struct handler_at *, const char *);
static int	 handler_parse_exec(struct handler_at *, const char *);
static int	 handler_parse_backoff(struct handler_at *, const char *);
static int	 handler_parse_workdir(struct handler_at *, const char *);
static int	 handler_parse_env(struct handler_at *, const char *);
static int	 handler_parse_rate(struct handler_at *, const char *);
static int	 handler_parse_key(struct handler_at *, const char *);
static int	 handler_parse_on_busy(struct handler_at *, const char *);

#define OFF(f)	offsetof(struct handler, f)
static const struct handler_key handler_keys[] = {
	{ "on",		  HKEY_CUSTOM,	 0,			0, 0,
	    NULL, NULL, NULL, handler_parse_on },
	{ "exec",	  HKEY_CUSTOM,	 0,			0, 0,
	    NULL, NULL, NULL, handler_parse_exec },
	{ "timeout",	  HKEY_DURATION, OFF(timeout_ms),	1, 0,
	    "bad duration ", " (like 30s, 5m)", "must be more than 0", NULL },
	{ "delay",	  HKEY_DURATION, OFF(delay_ms),		0, 0,
	    "bad duration ", "", NULL, NULL },
	{ "attempts",	  HKEY_INT,	 OFF(attempts),		1, 1000,
	    "", " is not a number from 1 to 1000", NULL, NULL },
	{ "concurrency",  HKEY_INT,	 OFF(concurrency),	1, 4096,
	    "", " is not a number from 1 to 4096", NULL, NULL },
	{ "max_running",  HKEY_INT,	 OFF(max_running),	1, 1000000,
	    "", " is not a number from 1 to 1000000", NULL, NULL },
	{ "rate",	  HKEY_CUSTOM,	 0,			0, 0,
	    NULL, NULL, NULL, handler_parse_rate },
	{ "key",	  HKEY_CUSTOM,	 0,			0, 0,
	    NULL, NULL, NULL, handler_parse_key },
	{ "per_key",	  HKEY_INT,	 OFF(per_key),		1, 1000000,
	    "", " is not a number from 1 to 1000000", NULL, NULL },
	{ "on_busy",	  HKEY_CUSTOM,	 0,			0, 0,
	    NULL, NULL, NULL, handler_parse_on_busy },
	{ "backoff",	  HKEY_CUSTOM,	 0,			0, 0,
	    NULL, NULL, NULL, handler_parse_backoff },
	{ "workdir",	  HKEY_CUSTOM,	 0,			0, 0,
	    NULL, NULL, NULL, handler_parse_workdir },
	{ "user",	  HKEY_USER,	 OFF(user),		0, 0,
	    "no user named ", "", NULL, NULL },
	{ "group",	  HKEY_GROUP,	 OFF(group),		0, 0,
	    "no group named ", "", NULL, NULL },
	{ "limit_nofile", HKEY_LONG,	 OFF(limit_nofile),	1, 1L << 30,
	    "", " is not a positive number", NULL, NULL },
	{ "limit_nproc",  HKEY_LONG,	 OFF(limit_nproc),	1, 1L << 30,
	    "", " is not a positive number", NULL, NULL },
	{ "limit_as",	  HKEY_SIZE,	 OFF(limit_as),		1L << 20, 0,
	    "", " is not a size of at least 1m", NULL, NULL },
	{ "limit_cpu",	  HKEY_DURATION, OFF(limit_cpu_ms),	1000, 0,
	    "", " is not a duration of at least 1s", NULL, NULL },
	{ "env",	  HKEY_CUSTOM,	 0,			0, 0,
	    NULL, NULL, NULL, handler_parse_env },
};
#undef OFF

/* Say what is wrong after "[handler NAME] KEY: "; returns -1. */
static int
handler_fail(struct handler_at *at, const char *fmt, ...)
{
	char	why[512];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	snprintf(at->msg, at->msglen, "[handler %s] %s: %s", at->h->name,
	    at->key, why);
	return -1;
}

/* on: event names or globs, separated by commas or blanks. */
static int
handler_parse_on(struct handler_at *at, const char *value)
{
	struct handler	*h = at->h;
	char		*copy, *tok, *save;
	size_t		 i;

	for (i = 0; i < h->n_on; i++)
		free(h->on[i]);
	h->n_on = 0;
	copy = xstrdup(value);
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		for (i = 0; tok[i] != '\0'; i++)
			if (!isalnum((unsigned char)tok[i]) &&
			    strchr("._:-*?", tok[i]) == NULL)
				break;
		if (tok[i] != '\0' || i > EVENT_NAME_MAX) {
			handler_fail(at, "'%s' is not an event name or glob",
			    tok);
			free(copy);
			return -1;
		}
		h->on = xreallocarray(h->on, h->n_on + 1, sizeof *h->on);
		h->on[h->n_on++] = xstrdup(tok);
	}
	free(copy);
	if (h->n_on == 0)
		return handler_fail(at, "no event names");
	return 0;
}

/*
 * A script's "#!" interpreter must exist too: the kernel reports a missing
 * one as ENOENT for the script, which reads as if the script were gone.
 * NULL if fine or not a script (or unreadable here: exec will tell).
 */
static const char *
handler_check_interpreter(const char *path)
{
	static char	 why[PATH_MAX + 64];
	char		 head[PATH_MAX + 3], *end;
	ssize_t		 n;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	n = read(fd, head, sizeof head - 1);
	close(fd);
	if (n < 3 || head[0] != '#' || head[1] != '!')
		return NULL;
	head[n] = '\0';
	end = head + 2;
	end += strspn(end, " \t");
	memmove(head, end, strlen(end) + 1);
	head[strcspn(head, " \t\r\n")] = '\0';
	if (head[0] == '\0')
		snprintf(why, sizeof why, "its #! line names no interpreter");
	else if (access(head, X_OK) == -1)
		snprintf(why, sizeof why, "its #! interpreter %s: %s", head,
		    strerror(errno));
	else
		return NULL;
	return why;
}

/* Check that path is an executable regular file. */
static const char *
handler_check_program(const char *path)
{
	struct stat	st;

	if (path[0] != '/')
		return "the program must be an absolute path";
	if (stat(path, &st) == -1)
		return strerror(errno);
	if (!S_ISREG(st.st_mode))
		return "not a regular file";
	if (access(path, X_OK) == -1)
		return "not executable";
	return handler_check_interpreter(path);
}

/* exec: the program and its arguments, remembering where it was set. */
static int
handler_parse_exec(struct handler_at *at, const char *value)
{
	struct handler	*h = at->h;
	char		**words;
	const char	*why;

	if (util_split_words(value, &words, &why) == -1)
		return handler_fail(at, "%s", why);
	if ((why = handler_check_program(words[0])) != NULL) {
		handler_fail(at, "%s: %s", words[0], why);
		util_free_words(words);
		return -1;
	}
	util_free_words(h->argv);
	free(h->exec);
	free(h->exec_file);
	h->argv = words;
	h->exec = xstrdup(value);
	h->exec_file = xstrdup(at->file);
	h->exec_line = at->line;
	return 0;
}

/* backoff: BASE..CAP, two durations. */
static int
handler_parse_backoff(struct handler_at *at, const char *value)
{
	char	*copy, *dots;
	int64_t	 ms, cap;

	copy = xstrdup(value);
	dots = strstr(copy, "..");
	if (dots != NULL)
		*dots = '\0';
	if (dots == NULL || util_parse_duration(copy, &ms) == -1 ||
	    util_parse_duration(dots + 2, &cap) == -1 || ms <= 0 ||
	    cap < ms) {
		free(copy);
		return handler_fail(at, "'%s' is not BASE..CAP like 5s..1h "
		    "(BASE more than 0, CAP at least BASE)", value);
	}
	free(copy);
	at->h->backoff_base_ms = ms;
	at->h->backoff_cap_ms = cap;
	return 0;
}

/* rate: fleet-wide starts, "10/s", "100/m burst 20" (flow.c). */
static int
handler_parse_rate(struct handler_at *at, const char *value)
{
	char	why[256];

	if (flow_parse_rate(value, &at->h->rate, why, sizeof why) == -1)
		return handler_fail(at, "%s", why);
	return 0;
}

/* key: a template over the event, "${data.host}" (flow.c). */
static int
handler_parse_key(struct handler_at *at, const char *value)
{
	char	why[512];

	flow_key_free(at->h->key);
	if ((at->h->key = flow_key_parse(value, why, sizeof why)) == NULL)
		return handler_fail(at, "%s", why);
	return 0;
}

/* on_busy: queue, coalesce, replace or reject. */
static int
handler_parse_on_busy(struct handler_at *at, const char *value)
{
	int	i;

	for (i = 0; flow_busy_words[i] != NULL; i++)
		if (strcmp(value, flow_busy_words[i]) == 0) {
			at->h->on_busy = (enum flow_busy)i;
			return 0;
		}
	return handler_fail(at, "'%s' is not queue, coalesce, replace or "
	    "reject", value);
}

/* workdir: an existing absolute directory. */
static int
handler_parse_workdir(struct handler_at *at, const char *value)
{
	struct stat	st;

	if (value[0] != '/' || stat(value, &st) == -1 || !S_ISDIR(st.st_mode))
		return handler_fail(at, "%s: not an existing absolute "
		    "directory", value);
	free(at->h->workdir);
	at->h->workdir = xstrdup(value);
	return 0;
}

/* env: one KEY=value line; lines add up. */
static int
handler_parse_env(struct handler_at *at, const char *value)
{
	struct handler	*h = at->h;
	const char	*eq;
	size_t		 i;

	eq = strchr(value, '=');
	for (i = 0; eq != NULL && value + i < eq; i++)
		if (!(isalnum((unsigned char)value[i]) || value[i] == '_') ||
		    isdigit((unsigned char)value[0]))
			break;
	if (eq == NULL || eq == value || value + i != eq)
		return handler_fail(at, "'%s' is not KEY=value", value);
	if (strncmp(value, "DISPATCH_", 9) == 0)
		return handler_fail(at, "DISPATCH_* variables are set by the "
		    "agent");
	h->env = xreallocarray(h->env, h->n_env + 2, sizeof *h->env);
	h->env[h->n_env++] = xstrdup(value);
	h->env[h->n_env] = NULL;
	return 0;
}

/* A new handler called name, declared at file:line, with the defaults. */
struct handler *
handler_new(const char *name, const char *file, int line)
{
	struct handler	*h;

	h = xcalloc(1, sizeof *h);
	h->refs = 1;
	h->name = xstrdup(name);
	h->file = xstrdup(file);
	h->line = line;
	h->timeout_ms = 5 * 60 * 1000;
	h->attempts = 5;
	h->backoff_base_ms = 5 * 1000;
	h->backoff_cap_ms = 3600 * 1000;
	h->workdir = xstrdup("/");
	return h;
}

/*
 * Set key, read at file:line, from the table.  On failure returns -1 with
 * msg set to "[handler NAME] KEY: why" (the caller adds file:line).
 */
int
handler_set(struct handler *h, const char *key, const char *value,
    const char *file, int line, char *msg, size_t msglen)
{
	struct handler_at	 at = { h, key, file, line, msg, msglen };
	const struct handler_key *k;
	char			*base = (char *)h, **s;
	int64_t			 ms;
	size_t			 size, i;
	long			 n;
	char			 why[256];

	switch (limits_set(&h->limits, key, value, file, line, why,
	    sizeof why)) {
	case 0:
		return 0;
	case -1:
		return handler_fail(&at, "%s", why);
	}
	for (i = 0; i < sizeof handler_keys / sizeof handler_keys[0]; i++)
		if (strcmp(handler_keys[i].name, key) == 0)
			break;
	if (i == sizeof handler_keys / sizeof handler_keys[0])
		return handler_fail(&at, "unknown key");
	k = &handler_keys[i];
	switch (k->type) {
	case HKEY_CUSTOM:
		return k->parse(&at, value);
	case HKEY_DURATION:
		if (util_parse_duration(value, &ms) == -1 ||
		    (ms < k->min && k->under == NULL))
			goto bad;
		if (ms < k->min)
			return handler_fail(&at, "%s", k->under);
		*(int64_t *)(base + k->off) = ms;
		break;
	case HKEY_INT:
	case HKEY_LONG:
		if (util_parse_int(value, k->min, k->max, &n) == -1)
			goto bad;
		if (k->type == HKEY_INT)
			*(int *)(base + k->off) = (int)n;
		else
			*(long *)(base + k->off) = n;
		break;
	case HKEY_SIZE:
		if (util_parse_size(value, &size) == -1 ||
		    size < (size_t)k->min)
			goto bad;
		*(size_t *)(base + k->off) = size;
		break;
	case HKEY_USER:
	case HKEY_GROUP:
		if (k->type == HKEY_USER ? getpwnam(value) == NULL :
		    getgrnam(value) == NULL)
			goto bad;
		s = (char **)(base + k->off);
		free(*s);
		*s = xstrdup(value);
		break;
	}
	return 0;
bad:
	return handler_fail(&at, "%s'%s'%s", k->bad_before, value,
	    k->bad_after);
}

/*
 * Who runs the handler: its user (or [agent] user), its group (or [agent]
 * group, or the user's primary group), the user's supplementary groups.
 * Unset, handlers run as the agent itself.  Only an agent running as root
 * can run them as someone else.
 */
static int
handler_resolve_user(const struct config *conf, struct handler *h, char *err,
    size_t errlen)
{
	const char	*user = h->user ? h->user : conf->user;
	const char	*group = h->group ? h->group : conf->group;
	struct passwd	*pw;
	struct group	*gr;
	int		 n = 64;

	if (user == NULL) {
		h->uid = geteuid();
		h->gid = getegid();
		pw = getpwuid(h->uid);
		h->home = xstrdup(pw && pw->pw_dir ? pw->pw_dir : "/");
		if (group == NULL)
			return 0;
		if ((gr = getgrnam(group)) == NULL)
			goto nogroup;
		h->gid = gr->gr_gid;
		h->set_user = h->gid != getegid();
		goto check;
	}
	if ((pw = getpwnam(user)) == NULL) {
		snprintf(err, errlen, "%s:%d: [handler %s] user: no user named "
		    "'%s'", h->file, h->line, h->name, user);
		return -1;
	}
	h->uid = pw->pw_uid;
	h->gid = pw->pw_gid;
	h->home = xstrdup(pw->pw_dir ? pw->pw_dir : "/");
	if (group != NULL) {
		if ((gr = getgrnam(group)) == NULL)
			goto nogroup;
		h->gid = gr->gr_gid;
	}
	/* resolved here, in the parent: NSS must not run in the child */
	h->groups = xcalloc((size_t)n, sizeof *h->groups);
	if (getgrouplist(pw->pw_name, h->gid, h->groups, &n) == -1) {
		h->groups = xreallocarray(h->groups, (size_t)n,
		    sizeof *h->groups);
		getgrouplist(pw->pw_name, h->gid, h->groups, &n);
	}
	h->n_groups = n;
	h->set_user = 1;
check:
	if (h->set_user && geteuid() != 0 && (h->uid != geteuid() ||
	    h->gid != getegid())) {
		snprintf(err, errlen, "%s:%d: [handler %s] runs as %s:%s, but "
		    "only an agent running as root can switch users", h->file,
		    h->line, h->name, user ? user : "(agent)",
		    group ? group : "(primary)");
		return -1;
	}
	if (geteuid() != 0)
		h->set_user = 0;
	return 0;
nogroup:
	snprintf(err, errlen, "%s:%d: [handler %s] group: no group named '%s'",
	    h->file, h->line, h->name, group);
	return -1;
}

/*
 * An agent running as root refuses a program that someone other than
 * root or the handler's user could replace: the file and every directory
 * above it must be owned by one of them and not writable by group or
 * others (a sticky directory, such as /tmp, protects what others own).
 */
static int
handler_check_owner(const struct handler *h, char *err, size_t errlen)
{
	struct stat	 st;
	char		*path, *slash;
	const char	*why = NULL;

	if (geteuid() != 0)
		return 0;
	if ((path = realpath(h->argv[0], NULL)) == NULL)
		return 0;	/* checked at exec: reported then */
	for (;;) {
		if (stat(path, &st) == -1)
			break;
		if (st.st_uid != 0 && st.st_uid != h->uid)
			why = "is owned by another user";
		else if ((st.st_mode & S_IWOTH) && !(S_ISDIR(st.st_mode) &&
		    (st.st_mode & S_ISVTX)))
			why = "is writable by everyone";
		else if ((st.st_mode & S_IWGRP) && st.st_gid != 0 &&
		    !(S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX)))
			why = "is writable by its group";
		if (why != NULL || strcmp(path, "/") == 0)
			break;
		slash = strrchr(path, '/');
		if (slash == path)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	if (why != NULL)
		snprintf(err, errlen, "%s:%d: [handler %s] exec: %s %s: someone "
		    "other than root or the handler's user could replace the "
		    "program", h->exec_file, h->exec_line, h->name, path, why);
	free(path);
	return why != NULL ? -1 : 0;
}

/*
 * Finish h once conf is read whole: check it has on and exec, cap its
 * concurrency at the workers, and resolve who runs it.  On failure
 * returns -1 with err set to "file:line: message".
 */
int
handler_finish(struct handler *h, const struct config *conf, char *err,
    size_t errlen)
{
	if (h->n_on == 0 || h->argv == NULL) {
		snprintf(err, errlen, "%s:%d: [handler %s] needs both 'on' and "
		    "'exec'", h->file, h->line, h->name);
		return -1;
	}
	if (h->concurrency == 0 || h->concurrency > conf->workers)
		h->concurrency = conf->workers;
	limits_inherit(&h->limits, &conf->limits);
	if ((h->per_key != 0 || h->on_busy != BUSY_QUEUE) && h->key == NULL) {
		snprintf(err, errlen, "%s:%d: [handler %s] per_key and on_busy "
		    "need a key", h->file, h->line, h->name);
		return -1;
	}
	if (h->per_key == 0)
		h->per_key = 1;
	free(h->flow);
	h->flow = flow_word(h->max_running, &h->rate);
	free(h->flow_sig);
	h->flow_sig = flow_signature(h->key, h->per_key, h->on_busy, h->flow);
	if (handler_resolve_user(conf, h, err, errlen) == -1 ||
	    handler_check_owner(h, err, errlen) == -1)
		return -1;
	return 0;
}

/* A running job keeps its handler's settings alive across a reload. */
void
handler_hold(struct handler *h)
{
	h->refs++;
}

/* Free h and everything it owns. */
static void
handler_free(struct handler *h)
{
	size_t	i;

	for (i = 0; i < h->n_on; i++)
		free(h->on[i]);
	free(h->on);
	util_free_words(h->argv);
	util_free_words(h->env);
	free(h->exec);
	free(h->exec_file);
	free(h->flow);
	free(h->flow_sig);
	flow_key_free(h->key);
	free(h->user);
	free(h->group);
	free(h->groups);
	free(h->home);
	free(h->workdir);
	free(h->name);
	free(h->file);
	limits_free(&h->limits);
	free(h);
}

/* Drop a reference; the last one frees the handler. */
void
handler_release(struct handler *h)
{
	if (--h->refs > 0)
		return;
	handler_free(h);
}

/* The handler in conf called name, or NULL. */
struct handler *
handler_find(const struct config *conf, const char *name)
{
	size_t	i;

	for (i = 0; i < conf->n_handlers; i++)
		if (strcmp(conf->handlers[i]->name, name) == 0)
			return conf->handlers[i];
	return NULL;
}

/* Collect up to max handlers whose 'on' matches event; returns the count. */
size_t
handler_match(const struct config *conf, const char *event,
    struct handler **out, size_t max)
{
	struct handler	*h;
	size_t		 i, j, n = 0;

	for (i = 0; i < conf->n_handlers && n < max; i++) {
		h = conf->handlers[i];
		for (j = 0; j < h->n_on; j++)
			if (fnmatch(h->on[j], event, 0) == 0) {
				out[n++] = h;
				break;
			}
	}
	return n;
}
