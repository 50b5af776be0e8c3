/*
 * config.c: the INI configuration.  The main file is read first, then every
 * *.conf in the conf.d directory beside it in name order; later values
 * override earlier ones, and env lines add up.  Every key is checked when
 * it is read, so each error names its file, line and key.  This file reads
 * the [agent] and [access] sections; handler.c reads each [handler NAME].
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <ini.h>

#include "dispatchd.h"

#define CONFIG_LINE_MAX	4096

/* The configuration in force: main.c sets it at start and on each reload. */
struct config	*cfg;

enum key_type {
	KEY_STRING,
	KEY_DURATION,
	KEY_SIZE,
	KEY_INT,
	KEY_MODE,
	KEY_LOGLEVEL,
	KEY_USER,
	KEY_GROUP,
};

/* One [agent] key: its name, type, bounds and place in struct config. */
struct agent_key {
	const char	*name;
	enum key_type	 type;
	size_t		 off;
	long		 min;
	long		 max;
};

#define OFF(f)	offsetof(struct config, f)
static const struct agent_key agent_keys[] = {
	{ "name",		KEY_STRING,	OFF(name),		0, 0 },
	{ "redis",		KEY_STRING,	OFF(redis),		0, 0 },
	{ "redis_password_file", KEY_STRING,	OFF(password_file),	0, 0 },
	{ "redis_user",		KEY_STRING,	OFF(redis_user),	0, 0 },
	{ "namespace",		KEY_STRING,	OFF(namespace),		0, 0 },
	{ "socket",		KEY_STRING,	OFF(socket),		0, 0 },
	{ "socket_mode",	KEY_MODE,	OFF(socket_mode),	0, 0777 },
	{ "max_message",	KEY_SIZE,	OFF(max_message),	64, 64L << 20 },
	{ "max_clients",	KEY_INT,	OFF(max_clients),	1, 100000 },
	{ "client_timeout",	KEY_DURATION,	OFF(client_timeout_ms),	100, 0 },
	{ "subscribe",		KEY_STRING,	OFF(subscribe),		0, 0 },
	{ "inbox",		KEY_STRING,	OFF(inbox),		0, 0 },
	{ "inbox_claim",	KEY_DURATION,	OFF(inbox_claim_ms),	100, 0 },
	{ "workers",		KEY_INT,	OFF(workers),		1, 4096 },
	{ "lease",		KEY_DURATION,	OFF(lease_ms),		300, 0 },
	{ "output_max",		KEY_SIZE,	OFF(output_max),	0, 64L << 20 },
	{ "results_max",	KEY_INT,	OFF(results_max),	1, 1000000000 },
	{ "drain_timeout",	KEY_DURATION,	OFF(drain_ms),		0, 0 },
	{ "kill_grace",		KEY_DURATION,	OFF(kill_grace_ms),	0, 0 },
	{ "dedup_window",	KEY_DURATION,	OFF(dedup_ms),		1000, 0 },
	{ "route_grace",	KEY_DURATION,	OFF(route_grace_ms),	0, 0 },
	{ "log_level",		KEY_LOGLEVEL,	OFF(log_level),		0, 0 },
	{ "spool",		KEY_STRING,	OFF(spool),		0, 0 },
	{ "metrics_listen",	KEY_STRING,	OFF(metrics_listen),	0, 0 },
	{ "user",		KEY_USER,	OFF(user),		0, 0 },
	{ "group",		KEY_GROUP,	OFF(group),		0, 0 },
	{ "socket_group",	KEY_GROUP,	OFF(socket_group),	0, 0 },
	{ "spool_max",		KEY_SIZE,	OFF(spool_max),		4096, LONG_MAX },
};
#undef OFF

/* Parser state for one file. */
struct parse {
	struct config	*conf;
	const char	*file;
	FILE		*fp;
	int		 line;
	int		 failed;
	char		*err;
	size_t		 errlen;
	struct handler	*cur;		/* section being read, or NULL */
	int		 in_agent;
	int		 in_access;
};

static int	 config_fail(struct parse *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static char	*config_read_line(char *, int, void *);
static int	 config_section(struct parse *, const char *);
static int	 config_on_key(void *, const char *, const char *, const char *);
static int	 config_agent_key(struct parse *, const char *, const char *);
static int	 config_handler_key(struct parse *, const char *, const char *);
static int	 config_access_key(struct parse *, const char *, const char *);
static int	 config_parse_file(struct config *, const char *, char *, size_t);
static int	 config_parse_dir(struct config *, const char *, char *, size_t);
static int	 config_finish(struct config *, char *, size_t);
static struct handler *config_add_handler(struct config *, const char *,
		    const char *, int);

/* Record the first error as "file:line: message"; returns 0 for inih. */
static int
config_fail(struct parse *p, const char *fmt, ...)
{
	char	msg[512];
	va_list	ap;

	if (p->failed++)
		return 0;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(p->err, p->errlen, "%s:%d: %s", p->file, p->line, msg);
	return 0;
}

/*
 * inih's line reader.  Counting lines here is how errors get line numbers
 * (Debian's inih is built without INI_HANDLER_LINENO), and section headers
 * are checked here because inih only reports sections that have keys.
 */
static char *
config_read_line(char *buf, int size, void *arg)
{
	struct parse	*p = arg;
	char		*s, *end;
	size_t		 len;
	int		 c;

	if (fgets(buf, size, p->fp) == NULL)
		return NULL;
	p->line++;
	len = strlen(buf);
	if (len == (size_t)size - 1 && buf[len - 1] != '\n' && !feof(p->fp)) {
		config_fail(p, "line longer than %d characters", size - 2);
		while ((c = fgetc(p->fp)) != EOF && c != '\n')
			;
		buf[0] = '\n';
		buf[1] = '\0';
		return buf;
	}
	for (s = buf; isspace((unsigned char)*s); s++)
		;
	if (*s == '[') {
		end = strchr(s, ']');
		if (end == NULL)
			config_fail(p, "section header without ']'");
		else {
			*end = '\0';
			config_section(p, s + 1);
			*end = ']';
		}
	}
	return buf;
}

/* Start a section: [agent] or [handler NAME]. */
static int
config_section(struct parse *p, const char *name)
{
	p->cur = NULL;
	p->in_agent = 0;
	p->in_access = 0;
	while (isspace((unsigned char)*name))
		name++;
	if (strcmp(name, "agent") == 0) {
		p->in_agent = 1;
		return 1;
	}
	if (strcmp(name, "access") == 0) {
		p->in_access = 1;
		return 1;
	}
	if (strncmp(name, "handler", 7) == 0 &&
	    isspace((unsigned char)name[7])) {
		char	buf[HANDLER_NAME_MAX + 2];
		size_t	len;

		name += 8;
		while (isspace((unsigned char)*name))
			name++;
		len = strlen(name);
		while (len > 0 && isspace((unsigned char)name[len - 1]))
			len--;
		if (len == 0 || len > HANDLER_NAME_MAX)
			return config_fail(p, "[handler NAME]: bad name");
		memcpy(buf, name, len);
		buf[len] = '\0';
		if (!util_valid_handler_name(buf))
			return config_fail(p, "[handler %s]: a handler name is "
			    "letters, digits, '.', '_' and '-'", buf);
		p->cur = config_add_handler(p->conf, buf, p->file, p->line);
		return 1;
	}
	return config_fail(p, "unknown section [%s]", name);
}

/* inih's callback: route a key to its section. */
static int
config_on_key(void *arg, const char *section, const char *key,
    const char *value)
{
	struct parse	*p = arg;

	if (p->in_agent)
		return config_agent_key(p, key, value);
	if (p->in_access)
		return config_access_key(p, key, value);
	if (p->cur != NULL)
		return config_handler_key(p, key, value);
	if (section[0] == '\0')
		return config_fail(p, "%s: key outside any section", key);
	return 0;	/* unknown section: already reported */
}

/* What is wrong with a string [agent] key's value, or NULL. */
static const char *
config_check_string(const char *key, const char *value)
{
	if (strcmp(key, "name") == 0 && !util_valid_event_name(value))
		return "must be 1-200 characters of A-Z a-z 0-9 . _ : -";
	if (strcmp(key, "namespace") == 0 && (value[0] == '\0' ||
	    strpbrk(value, "{}: \t") != NULL))
		return "must be non-empty, without braces, colons or blanks";
	if ((strcmp(key, "spool") == 0 || strcmp(key, "socket") == 0) &&
	    value[0] != '\0' && value[0] != '/')
		return "must be an absolute path";
	if (strcmp(key, "redis_password_file") == 0 && value[0] != '\0' &&
	    access(value, R_OK) == -1)
		return strerror(errno);
	return NULL;
}

/* Set one [agent] key from the table. */
static int
config_agent_key(struct parse *p, const char *key, const char *value)
{
	const struct agent_key	*k;
	const char		*why;
	char			*base = (char *)p->conf;
	int64_t			 ms;
	size_t			 size, i;
	long			 n;
	int			 level;
	char			 bad[256];

	switch (limits_set(&p->conf->limits, key, value, p->file, p->line,
	    bad, sizeof bad)) {
	case 0:
		return 1;
	case -1:
		return config_fail(p, "[agent] %s: %s", key, bad);
	}
	if (strcmp(key, "cgroup") == 0) {
		if (strcmp(value, "auto") != 0 && strcmp(value, "off") != 0)
			return config_fail(p, "[agent] cgroup: '%s' is not "
			    "auto or off", value);
		p->conf->cgroup = strcmp(value, "auto") == 0;
		return 1;
	}
	for (i = 0; i < sizeof agent_keys / sizeof agent_keys[0]; i++)
		if (strcmp(agent_keys[i].name, key) == 0)
			break;
	if (i == sizeof agent_keys / sizeof agent_keys[0])
		return config_fail(p, "[agent] %s: unknown key", key);
	k = &agent_keys[i];
	switch (k->type) {
	case KEY_STRING:
		if ((why = config_check_string(key, value)) != NULL)
			return config_fail(p, "[agent] %s: '%s' %s", key, value,
			    why);
		free(*(char **)(base + k->off));
		*(char **)(base + k->off) = xstrdup(value);
		if (strcmp(key, "redis") == 0) {
			/* checked later, by redis_setup: say where it was */
			free(p->conf->redis_at);
			xasprintf(&p->conf->redis_at, "%s:%d", p->file,
			    p->line);
		}
		break;
	case KEY_DURATION:
		if (util_parse_duration(value, &ms) == -1)
			return config_fail(p, "[agent] %s: bad duration '%s' "
			    "(like 250ms, 30s, 15m, 2h)", key, value);
		if (ms < k->min)
			return config_fail(p, "[agent] %s: '%s' is less than "
			    "the least allowed, %lldms", key, value,
			    (long long)k->min);
		*(int64_t *)(base + k->off) = ms;
		break;
	case KEY_SIZE:
		if (util_parse_size(value, &size) == -1 ||
		    size < (size_t)k->min || size > (size_t)k->max)
			return config_fail(p, "[agent] %s: bad size '%s' "
			    "(like 64k, 1m)", key, value);
		*(size_t *)(base + k->off) = size;
		break;
	case KEY_INT:
		if (util_parse_int(value, k->min, k->max, &n) == -1)
			return config_fail(p, "[agent] %s: '%s' is not a whole "
			    "number from %ld to %ld", key, value, k->min,
			    k->max);
		if (k->off == offsetof(struct config, results_max))
			p->conf->results_max = n;
		else
			*(int *)(base + k->off) = (int)n;
		break;
	case KEY_MODE:
		if (value[0] != '0' ||
		    util_parse_int(value, 0, 0777, &n) == -1)
			return config_fail(p, "[agent] %s: '%s' is not an "
			    "octal mode like 0660", key, value);
		*(int *)(base + k->off) = (int)n;
		break;
	case KEY_LOGLEVEL:
		if ((level = log_level_parse(value)) == -1)
			return config_fail(p, "[agent] %s: '%s' is not one of "
			    "debug, info, notice, warning, err", key, value);
		*(int *)(base + k->off) = level;
		break;
	case KEY_USER:
	case KEY_GROUP:
		if (value[0] != '\0' && (k->type == KEY_USER ?
		    getpwnam(value) == NULL : getgrnam(value) == NULL))
			return config_fail(p, "[agent] %s: no %s named '%s'",
			    key, k->type == KEY_USER ? "user" : "group", value);
		free(*(char **)(base + k->off));
		*(char **)(base + k->off) = value[0] ? xstrdup(value) : NULL;
		break;
	}
	return 1;
}

/* An [access] key: emit or admin lines add principals. */
static int
config_access_key(struct parse *p, const char *key, const char *value)
{
	const char	*why;
	char		 bad[128];
	int		 rc;

	if (strcmp(key, "emit") == 0)
		rc = access_parse(value, 1, &p->conf->emit, &p->conf->n_emit,
		    &why, bad, sizeof bad);
	else if (strcmp(key, "admin") == 0)
		rc = access_parse(value, 0, &p->conf->admin,
		    &p->conf->n_admin, &why, bad, sizeof bad);
	else
		return config_fail(p, "[access] %s: unknown key (emit or "
		    "admin)", key);
	if (rc == -1)
		return config_fail(p, "[access] %s: '%s': %s", key, bad, why);
	return 1;
}

/* A [handler NAME] key: handler.c reads it, this file says where. */
static int
config_handler_key(struct parse *p, const char *key, const char *value)
{
	char	msg[512];

	if (handler_set(p->cur, key, value, p->file, p->line, msg,
	    sizeof msg) == -1)
		return config_fail(p, "%s", msg);
	return 1;
}

/* Find or create the handler called name. */
static struct handler *
config_add_handler(struct config *conf, const char *name, const char *file,
    int line)
{
	struct handler	*h;

	if ((h = handler_find(conf, name)) != NULL)
		return h;
	h = handler_new(name, file, line);
	conf->handlers = xreallocarray(conf->handlers, conf->n_handlers + 1,
	    sizeof *conf->handlers);
	conf->handlers[conf->n_handlers++] = h;
	return h;
}

/* Parse one file into conf. */
static int
config_parse_file(struct config *conf, const char *file, char *err,
    size_t errlen)
{
	struct parse	p;
	int		rc;

	memset(&p, 0, sizeof p);
	p.conf = conf;
	p.file = file;
	p.err = err;
	p.errlen = errlen;
	if ((p.fp = fopen(file, "re")) == NULL) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return -1;
	}
#ifdef HAVE_INI_RUNTIME_LINE
	/* inih's buffer is 200 bytes unless lifted: too short for an exec */
	ini_use_stack = 0;
	ini_initial_alloc = ini_max_line = CONFIG_LINE_MAX;
#endif
	rc = ini_parse_stream(config_read_line, &p, config_on_key, &p);
	fclose(p.fp);
	if (p.failed)
		return -1;
	if (rc != 0) {
		snprintf(err, errlen, "%s:%d: syntax error (expected "
		    "[section] or key = value)", file, rc > 0 ? rc : p.line);
		return -1;
	}
	return 0;
}

/* strcmp order for scandir, so conf.d order does not depend on locale. */
static int
config_name_order(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Keep *.conf entries that are not hidden. */
static int
config_is_conf(const struct dirent *d)
{
	size_t	len = strlen(d->d_name);

	return d->d_name[0] != '.' && len > 5 &&
	    strcmp(d->d_name + len - 5, ".conf") == 0;
}

/* Parse every *.conf in dir, in name order; a missing dir is fine. */
static int
config_parse_dir(struct config *conf, const char *dir, char *err,
    size_t errlen)
{
	struct dirent	**list;
	char		 *path;
	int		  n, i, rc = 0;

	if ((n = scandir(dir, &list, config_is_conf, config_name_order)) == -1) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++) {
		xasprintf(&path, "%s/%s", dir, list[i]->d_name);
		if (rc == 0 && config_parse_file(conf, path, err, errlen) == -1)
			rc = -1;
		free(path);
		free(list[i]);
	}
	free(list);
	return rc;
}

/* Check what only the whole configuration can tell, and fill defaults. */
static int
config_finish(struct config *conf, char *err, size_t errlen)
{
	struct group	*gr;
	size_t		 i;

	if (conf->namespace[0] == '\0' || strpbrk(conf->namespace, "{}: \t")) {
		snprintf(err, errlen, "%s: [agent] namespace: '%s' must be "
		    "non-empty without braces, colons or blanks", conf->path,
		    conf->namespace);
		return -1;
	}
	if (!util_valid_event_name(conf->name)) {
		snprintf(err, errlen, "%s: [agent] name: '%s' must be 1-200 "
		    "characters of A-Z a-z 0-9 . _ : -", conf->path, conf->name);
		return -1;
	}
	if (conf->spool != NULL && conf->spool[0] == '\0') {
		free(conf->spool);
		conf->spool = NULL;
	}
	if (conf->spool != NULL && conf->spool[0] != '/') {
		snprintf(err, errlen, "%s: [agent] spool: '%s' must be an "
		    "absolute directory", conf->path, conf->spool);
		return -1;
	}
	conf->socket_gid = getegid();
	if (conf->socket_group != NULL &&
	    (gr = getgrnam(conf->socket_group)) != NULL)
		conf->socket_gid = gr->gr_gid;
	xasprintf(&conf->prefix, "{%s}:", conf->namespace);
	if (conf->subscribe == NULL)
		xasprintf(&conf->subscribe, "%sevents", conf->prefix);
	if (conf->inbox == NULL)
		xasprintf(&conf->inbox, "%sinbox", conf->prefix);
	for (i = 0; i < conf->n_handlers; i++)
		if (handler_finish(conf->handlers[i], conf, err, errlen) == -1)
			return -1;
	return 0;
}

/*
 * Load path and its conf.d.  On failure returns NULL with err set to
 * "file:line: message".
 */
struct config *
config_load(const char *path, char *err, size_t errlen)
{
	struct config	*conf;
	char		 host[256], *dir;
	const char	*slash;

	conf = xcalloc(1, sizeof *conf);
	conf->path = xstrdup(path);
	if (gethostname(host, sizeof host) == -1)
		strcpy(host, "localhost");
	host[sizeof host - 1] = '\0';
	conf->name = xstrdup(host);
	conf->redis = xstrdup("127.0.0.1:6379");
	conf->redis_at = xstrdup(path);
	conf->namespace = xstrdup("dispatchd");
	conf->socket = xstrdup("/run/dispatchd/dispatchd.sock");
	conf->socket_mode = 0660;
	conf->max_message = 1024 * 1024;
	conf->max_clients = 256;
	conf->client_timeout_ms = 60 * 1000;
	conf->output_max = 64 * 1024;
	conf->workers = 4;
	conf->lease_ms = 30 * 1000;
	conf->drain_ms = 30 * 1000;
	conf->kill_grace_ms = 10 * 1000;
	conf->cgroup = 1;
	conf->dedup_ms = 24 * 3600 * 1000;
	conf->route_grace_ms = 3600 * 1000;
	conf->inbox_claim_ms = 60 * 1000;
	conf->results_max = 100000;
	conf->log_level = LOG_INFO;
	conf->spool_max = 256 * 1024 * 1024;

	if (config_parse_file(conf, path, err, errlen) == -1)
		goto fail;
	if ((slash = strrchr(path, '/')) == NULL)
		dir = xstrdup("conf.d");
	else
		xasprintf(&dir, "%.*s/conf.d", (int)(slash - path), path);
	if (config_parse_dir(conf, dir, err, errlen) == -1) {
		free(dir);
		goto fail;
	}
	free(dir);
	if (config_finish(conf, err, errlen) == -1)
		goto fail;
	return conf;
fail:
	config_free(conf);
	return NULL;
}

/* Free a configuration and its handlers. */
void
config_free(struct config *conf)
{
	size_t	i;

	if (conf == NULL)
		return;
	for (i = 0; i < conf->n_handlers; i++)
		handler_release(conf->handlers[i]);
	free(conf->handlers);
	free(conf->path);
	free(conf->name);
	free(conf->redis);
	free(conf->redis_at);
	free(conf->password_file);
	free(conf->redis_user);
	free(conf->namespace);
	free(conf->prefix);
	free(conf->socket);
	free(conf->subscribe);
	free(conf->inbox);
	free(conf->spool);
	free(conf->metrics_listen);
	free(conf->user);
	free(conf->group);
	free(conf->socket_group);
	access_free(conf->emit, conf->n_emit);
	access_free(conf->admin, conf->n_admin);
	limits_free(&conf->limits);
	free(conf);
}

/*
 * Carry over from the running configuration the keys that only a restart
 * can change (the socket and its owner, the Redis address and identity,
 * the channel), logging each one that differs.
 */
void
config_keep_fixed(struct config *next, const struct config *now)
{
	struct {
		const char	*key;
		size_t		 off;
	} fixed[] = {
		{ "name", offsetof(struct config, name) },
		{ "redis", offsetof(struct config, redis) },
		{ "redis_password_file", offsetof(struct config, password_file) },
		{ "redis_user", offsetof(struct config, redis_user) },
		{ "namespace", offsetof(struct config, namespace) },
		{ "socket", offsetof(struct config, socket) },
		{ "socket_group", offsetof(struct config, socket_group) },
		{ "subscribe", offsetof(struct config, subscribe) },
		{ "inbox", offsetof(struct config, inbox) },
		{ "prefix", offsetof(struct config, prefix) },
		{ "spool", offsetof(struct config, spool) },
		{ "metrics_listen", offsetof(struct config, metrics_listen) },
	};
	char		**a, *b;
	size_t		  i;

	for (i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
		a = (char **)((char *)next + fixed[i].off);
		b = *(char *const *)((const char *)now + fixed[i].off);
		if ((*a == NULL) != (b == NULL) ||
		    (*a != NULL && strcmp(*a, b) != 0)) {
			if (strcmp(fixed[i].key, "prefix") != 0)
				log_warnx("reload: [agent] %s changes only "
				    "with a restart; keeping '%s'",
				    fixed[i].key, b ? b : "");
			free(*a);
			*a = b ? xstrdup(b) : NULL;
		}
	}
	if (next->socket_mode != now->socket_mode) {
		log_warnx("reload: [agent] socket_mode changes only with a "
		    "restart");
		next->socket_mode = now->socket_mode;
	}
	/* the socket file keeps its group: so must the check of emitters */
	next->socket_gid = now->socket_gid;
}
