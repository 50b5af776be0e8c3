/*
 * schema.c: the names of the agent's Redis keys.  Every key starts with
 * the namespace's "{namespace}:" hash tag (so a Cluster keeps them on one
 * node); a key of one thing (a job, a handler, an agent) adds its id.
 * This table is the only place that spells them: doc/ARCHITECTURE.md
 * lists the same keys with what each holds.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatchd.h"

/* Each key: the name scripts declare it by, and its layout after the tag. */
static const struct {
	const char	*name;
	const char	*layout;	/* %s: the id, for keys of one thing */
} schema_keys[KEY_COUNT] = {
	[KEY_LEASES] =		{ "leases",		"leases" },
	[KEY_DELAYED] =		{ "delayed",		"delayed" },
	[KEY_DEAD] =		{ "dead",		"dead" },
	[KEY_RESULTS] =		{ "results",		"results" },
	[KEY_AGENTS] =		{ "agents",		"agents" },
	[KEY_NOTIFY] =		{ "notify",		"notify" },
	[KEY_LOCK_EVENTS] =	{ "lock:events",	"lock:events" },
	[KEY_LOCK_RECOVER] =	{ "lock:recover",	"lock:recover" },
	[KEY_JOB] =		{ "job",		"job:%s" },
	[KEY_READY] =		{ "ready",		"ready:%s" },
	[KEY_FIN] =		{ "fin",		"fin:%s" },
	[KEY_SEEN] =		{ "seen",		"seen:%s" },
	[KEY_AGENT] =		{ "agent",		"agent:%s" },
	[KEY_RUNNING] =		{ "running",		"agent:%s:running" },
	[KEY_INFO] =		{ "info",		"agent:%s:info" },
	[KEY_ROUTES] =		{ "routes",		"routes:%s" },
	[KEY_PAUSED] =		{ "paused",		"paused" },
};

/* The name a script's KEYS declaration uses for key k. */
const char *
schema_name(enum schema_key k)
{
	return schema_keys[k].name;
}

/*
 * Key k in the namespace in force, for id (NULL for the namespace's own
 * keys), written to buf; its length, or the length it needs.
 */
size_t
schema_format(char *buf, size_t size, enum schema_key k, const char *id)
{
	const char	*layout = schema_keys[k].layout;
	size_t		 n, p = strlen(cfg->prefix);
	int		 m;

	if (strchr(layout, '%') != NULL && id == NULL)
		fatalx("schema: key %s needs an id", schema_keys[k].name);
	/* the layouts are this file's constants, with one %s at most */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	if (size > p) {
		memcpy(buf, cfg->prefix, p);
		m = snprintf(buf + p, size - p, layout, id);
	} else
		m = snprintf(NULL, 0, layout, id);
#pragma GCC diagnostic pop
	if (m < 0)
		fatal("snprintf");
	n = p + (size_t)m;
	return n;
}

/* Key k for id (NULL for the namespace's own keys), freed by the caller. */
char *
schema_key(enum schema_key k, const char *id)
{
	char	*s;
	size_t	 n;

	n = schema_format(NULL, 0, k, id);
	s = xmalloc(n + 1);
	schema_format(s, n + 1, k, id);
	return s;
}
