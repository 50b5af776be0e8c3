/*
 * call.c: script calls built argument by named argument, and replies
 * checked for shape before use.  Each script declares its KEYS and ARGV
 * by name (scripts.c); a call adds them in that order, each under its
 * name, and the builder checks every name against the declaration, so a
 * miscounted or misplaced argument stops the agent at its first use (in
 * the tests) instead of shifting every later one silently.  The strings
 * go into one buffer: a call costs two allocations however many
 * arguments it has.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "dispatchd.h"

/* A script call being built: its arguments, and where its check stands. */
struct call {
	enum script_id	 script;
	const char	*next;		/* the declared names still to come */
	const char	*group;		/* the repeated group's first name */
	int		 nkeys;		/* < 0: still adding keys */
	int		 argc;
	int		 cap;
	size_t		*offs;		/* each argument's start in buf */
	size_t		*lens;
	char		*buf;
	size_t		 used;
	size_t		 size;
};

/* Skip blanks and, at a group's start, remember it. */
static void
call_skip(struct call *c)
{
	while (*c->next == ' ')
		c->next++;
	if (*c->next == '[')
		c->group = ++c->next;
}

/* The next declared name must be name: move past it, or stop the agent. */
static void
call_check(struct call *c, const char *name)
{
	size_t	n = strlen(name);

	call_skip(c);
	if (strncmp(c->next, name, n) != 0 || (c->next[n] != ' ' &&
	    c->next[n] != ']' && c->next[n] != '\0'))
		fatalx("script %s: %s %s given where %.*s is declared",
		    scripts[c->script].name, c->nkeys < 0 ? "key" : "argument",
		    name, *c->next ? (int)strcspn(c->next, " ]") : 5,
		    *c->next ? c->next : "(end)");
	c->next += n;
	if (*c->next == ']')
		c->next = c->group;	/* the group repeats */
}

/* Is the declaration used up, or at a repeated group's boundary? */
static int
call_complete(struct call *c)
{
	call_skip(c);
	return *c->next == '\0' || c->next == c->group;
}

/* Room for one more argument of len bytes; where it goes. */
static char *
call_room(struct call *c, size_t len)
{
	if (c->argc == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->offs = xreallocarray(c->offs, (size_t)c->cap,
		    sizeof *c->offs);
		c->lens = xreallocarray(c->lens, (size_t)c->cap,
		    sizeof *c->lens);
	}
	if (c->size - c->used < len + 1) {
		while (c->size - c->used < len + 1)
			c->size = c->size ? c->size * 2 : 512;
		c->buf = xreallocarray(c->buf, c->size, 1);
	}
	c->offs[c->argc] = c->used;
	c->lens[c->argc] = len;
	c->argc++;
	c->used += len + 1;
	c->buf[c->used - 1] = '\0';
	return c->buf + c->used - len - 1;
}

/* Start a call of script id. */
struct call *
call_start(enum script_id id)
{
	struct call	*c;

	c = xcalloc(1, sizeof *c);
	c->script = id;
	c->next = scripts[id].keys;
	c->nkeys = -1;
	return c;
}

/* Append the name of key k for id, as the next argument. */
static void
call_put_key(struct call *c, enum schema_key k, const char *id)
{
	size_t	n;

	n = schema_format(NULL, 0, k, id);
	schema_format(call_room(c, n), n + 1, k, id);
}

/* Add key k (for id, or NULL for the namespace's own keys). */
void
call_key(struct call *c, enum schema_key k, const char *id)
{
	if (c->nkeys >= 0)
		fatalx("script %s: key %s after the arguments",
		    scripts[c->script].name, schema_name(k));
	call_check(c, schema_name(k));
	call_put_key(c, k, id);
}

/* The keys are all given: go on to the arguments. */
static void
call_keys_done(struct call *c)
{
	if (c->nkeys >= 0)
		return;
	if (!call_complete(c))
		fatalx("script %s: arguments before the key %.*s",
		    scripts[c->script].name, (int)strcspn(c->next, " ]"),
		    c->next);
	c->nkeys = c->argc;
	c->next = scripts[c->script].args;
	c->group = NULL;
}

/* Add the argument name: len bytes of s (which need not be a string). */
void
call_argn(struct call *c, const char *name, const char *s, size_t len)
{
	call_keys_done(c);
	call_check(c, name);
	memcpy(call_room(c, len), s, len);
}

/* Add the argument name: the string s. */
void
call_arg(struct call *c, const char *name, const char *s)
{
	call_argn(c, name, s, strlen(s));
}

/* Add the argument name: the name of key k (for id), as a channel is. */
void
call_key_arg(struct call *c, const char *name, enum schema_key k,
    const char *id)
{
	call_keys_done(c);
	call_check(c, name);
	call_put_key(c, k, id);
}

/* Add the argument name: a number. */
void
call_int(struct call *c, const char *name, long long v)
{
	char	num[24];

	call_argn(c, name, num, (size_t)snprintf(num, sizeof num, "%lld", v));
}

/*
 * Send the call on the command connection; cb gets the reply (or NULL if
 * the connection is lost).  The call stays the caller's, to send again or
 * free.  -1 when Redis is not connected.
 */
int
call_send(struct call *c, redis_cb cb, void *arg)
{
	const char	**argv;
	int		  i, rc;

	call_keys_done(c);
	if (!call_complete(c))
		fatalx("script %s: argument %.*s missing",
		    scripts[c->script].name, (int)strcspn(c->next, " ]"),
		    c->next);
	argv = xcalloc((size_t)c->argc + 1, sizeof *argv);
	for (i = 0; i < c->argc; i++)
		argv[i] = c->buf + c->offs[i];
	rc = redis_script(rcmd, c->script, cb, arg, c->nkeys, c->argc, argv,
	    c->lens);
	free(argv);
	return rc;
}

/* Free a call. */
void
call_free(struct call *c)
{
	if (c == NULL)
		return;
	free(c->offs);
	free(c->lens);
	free(c->buf);
	free(c);
}

/* Send a call once and free it; -1 when Redis is not connected. */
int
call_send_free(struct call *c, redis_cb cb, void *arg)
{
	int	rc;

	rc = call_send(c, cb, arg);
	call_free(c);
	return rc;
}

/*
 * Does reply r have the shape given, one letter per element of an array:
 * i integer, s string (bulk or status), a array, n nil, ? anything; or,
 * with a shape ending in '*', at least those elements?  The types a reply
 * decoder then reads are the types it checked.
 */
int
call_reply_is(const struct redisReply *r, const char *shape)
{
	size_t	i, n = strlen(shape);
	int	t;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return 0;
	if (n > 0 && shape[n - 1] == '*') {
		if (r->elements < --n)
			return 0;
	} else if (r->elements != n)
		return 0;
	for (i = 0; i < n; i++) {
		t = r->element[i]->type;
		switch (shape[i]) {
		case 'i':
			if (t != REDIS_REPLY_INTEGER)
				return 0;
			break;
		case 's':
			if (t != REDIS_REPLY_STRING && t != REDIS_REPLY_STATUS)
				return 0;
			break;
		case 'a':
			if (t != REDIS_REPLY_ARRAY)
				return 0;
			break;
		case 'n':
			if (t != REDIS_REPLY_NIL)
				return 0;
			break;
		}
	}
	return 1;
}

/* Are all elements of array r strings (a list of ids, say)? */
int
call_reply_strings(const struct redisReply *r)
{
	size_t	i;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return 0;
	for (i = 0; i < r->elements; i++)
		if (r->element[i]->type != REDIS_REPLY_STRING &&
		    r->element[i]->type != REDIS_REPLY_STATUS)
			return 0;
	return 1;
}
