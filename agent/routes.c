/*
 * routes.c: the handlers other agents serve.  Each agent writes the
 * routing settings of its handlers (on, exec, attempts, timeout, backoff,
 * delay) to routes:<agent> when it claims its name and when it reloads,
 * then says so with "a" on the notify channel; every agent reads the live
 * agents' routes on that notice and with its heartbeat, so a new agent's
 * handlers are known everywhere a few milliseconds after it is ready.  Fan-out then creates
 * jobs for handlers this agent lacks, so an event emitted on any host
 * reaches the host that has the SMS modem; only an agent that has a
 * handler fetches its jobs.  An agent silent for longer than route_grace
 * stops contributing routes: until then its jobs wait, visibly.
 */
#include "config.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dispatchd.h"

/* A handler as another agent serves it. */
struct route {
	char		*agent;
	struct handler	*h;		/* name, on, exec and job settings */
};

static struct route	*routes;
static size_t		 n_routes;
static char		**warned;	/* "handler agent exec" said once */
static size_t		 n_warned;
static int		 refreshing;
static int		 refresh_again;	/* a notice came during a refresh */

/* A handler's routing settings as JSON text. */
static char *
routes_spec(const struct handler *h)
{
	json_t	*o, *on;
	char	*s;
	size_t	 i;

	on = json_array();
	for (i = 0; i < h->n_on; i++)
		json_array_append_new(on, json_string(h->on[i]));
	o = json_pack("{s:o, s:s, s:i, s:I, s:I, s:I, s:I}", "on", on,
	    "exec", h->exec, "attempts", h->attempts,
	    "timeout_ms", (json_int_t)h->timeout_ms,
	    "backoff_ms", (json_int_t)h->backoff_base_ms,
	    "backoff_cap_ms", (json_int_t)h->backoff_cap_ms,
	    "delay_ms", (json_int_t)h->delay_ms);
	if (o != NULL && h->key != NULL)
		json_object_set_new(o, "key", json_pack("{s:s, s:i, s:s}",
		    "template", flow_key_text(h->key), "per_key", h->per_key,
		    "on_busy", flow_busy_words[h->on_busy]));
	if (o != NULL && h->flow_sig != NULL)
		json_object_set_new(o, "flow", json_string(h->flow_sig));
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("routes: cannot build a spec");
	json_decref(o);
	return s;
}

/*
 * Write this agent's routes (at its claim and after a reload), then tell
 * the other agents.  The notice follows the writes on one connection, so
 * Redis has them when it is heard.
 */
void
routes_publish(void)
{
	const char	**argv;
	char		 *key, *notify, **specs;
	size_t		  i, n = 0;

	key = schema_key(KEY_ROUTES, cfg->name);
	argv = xcalloc(3 + 2 * cfg->n_handlers, sizeof *argv);
	specs = xcalloc(cfg->n_handlers + 1, sizeof *specs);
	argv[0] = "DEL";
	argv[1] = key;
	redis_command(rcmd, NULL, NULL, 2, argv, NULL);
	argv[n++] = "HSET";
	argv[n++] = key;
	for (i = 0; i < cfg->n_handlers; i++) {
		specs[i] = routes_spec(cfg->handlers[i]);
		argv[n++] = cfg->handlers[i]->name;
		argv[n++] = specs[i];
	}
	if (cfg->n_handlers > 0)
		redis_command(rcmd, NULL, NULL, (int)n, argv, NULL);
	notify = schema_key(KEY_NOTIFY, NULL);
	argv[0] = "PUBLISH";
	argv[1] = notify;
	argv[2] = "a";
	redis_command(rcmd, NULL, NULL, 3, argv, NULL);
	for (i = 0; i < cfg->n_handlers; i++)
		free(specs[i]);
	free(specs);
	free(argv);
	free(notify);
	free(key);
}

/*
 * The flow settings of another agent's handler: its key (jobs made here
 * for it are admitted by key as its own would be) and its signature.
 */
static void
routes_parse_flow(struct handler *h, const json_t *o)
{
	const json_t	*k = json_object_get(o, "key"), *v;
	char		 err[512];
	size_t		 i;

	v = json_object_get(o, "flow");
	h->flow_sig = xstrdup(json_is_string(v) ? json_string_value(v) : "-");
	h->per_key = 1;
	if (!json_is_object(k) || !json_is_string(v = json_object_get(k,
	    "template")))
		return;
	if ((h->key = flow_key_parse(json_string_value(v), err,
	    sizeof err)) == NULL) {
		log_warnx("routes: handler %s: key: %s", h->name, err);
		return;
	}
	if ((i = (size_t)json_integer_value(json_object_get(k, "per_key"))) > 0)
		h->per_key = (int)i;
	v = json_object_get(k, "on_busy");
	for (i = 0; json_is_string(v) && flow_busy_words[i] != NULL; i++)
		if (strcmp(json_string_value(v), flow_busy_words[i]) == 0)
			h->on_busy = (enum flow_busy)i;
}

/* A handler from another agent's spec; NULL if it does not parse. */
static struct handler *
routes_parse(const char *name, const char *spec, size_t len)
{
	struct handler	*h;
	json_t		*o, *on, *v;
	json_error_t	 jerr;
	size_t		 i;

	if (!util_valid_handler_name(name) ||
	    (o = json_loadb(spec, len, 0, &jerr)) == NULL)
		return NULL;
	on = json_object_get(o, "on");
	if (!json_is_array(on) || json_array_size(on) == 0 ||
	    !json_is_string(json_object_get(o, "exec"))) {
		json_decref(o);
		return NULL;
	}
	h = xcalloc(1, sizeof *h);
	h->refs = 1;
	h->name = xstrdup(name);
	h->exec = xstrdup(json_string_value(json_object_get(o, "exec")));
	h->on = xcalloc(json_array_size(on), sizeof *h->on);
	json_array_foreach(on, i, v)
		if (json_is_string(v))
			h->on[h->n_on++] = xstrdup(json_string_value(v));
	h->attempts = (int)json_integer_value(json_object_get(o, "attempts"));
	h->timeout_ms = json_integer_value(json_object_get(o, "timeout_ms"));
	h->backoff_base_ms = json_integer_value(json_object_get(o,
	    "backoff_ms"));
	h->backoff_cap_ms = json_integer_value(json_object_get(o,
	    "backoff_cap_ms"));
	h->delay_ms = json_integer_value(json_object_get(o, "delay_ms"));
	routes_parse_flow(h, o);
	if (h->attempts < 1)
		h->attempts = 1;
	if (h->timeout_ms <= 0)
		h->timeout_ms = 5 * 60 * 1000;
	json_decref(o);
	return h;
}

/* Say once that a handler has different exec lines on two agents. */
static void
routes_check_exec(const char *name, const char *agent, const char *exec,
    const char *other_agent, const char *other_exec)
{
	char	*key;
	size_t	 i;

	if (strcmp(exec, other_exec) == 0)
		return;
	xasprintf(&key, "%s %s %s %s", name, agent, exec, other_agent);
	for (i = 0; i < n_warned; i++)
		if (strcmp(warned[i], key) == 0) {
			free(key);
			return;
		}
	warned = xreallocarray(warned, n_warned + 1, sizeof *warned);
	warned[n_warned++] = key;
	log_warnx("handler %s has different exec lines: '%s' on %s, '%s' on "
	    "%s", name, exec, agent, other_exec, other_agent);
}

/* Forget the table. */
static void
routes_clear(void)
{
	size_t	i;

	for (i = 0; i < n_routes; i++) {
		free(routes[i].agent);
		handler_release(routes[i].h);
	}
	free(routes);
	routes = NULL;
	n_routes = 0;
}

/* The routes script answered: {{agent, {handler, spec, ...}}...}. */
static void
routes_on_read(const struct redisReply *reply, void *arg)
{
	const redisReply	*a, *kv;
	struct handler		*h, *mine;
	size_t			 i, k, j;

	refreshing = 0;
	if (refresh_again) {
		/* this read may predate what the notice announced */
		refresh_again = 0;
		routes_refresh();
	}
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
		return;
	routes_clear();
	for (i = 0; i < reply->elements; i++) {
		a = reply->element[i];
		if (!call_reply_is(a, "sa") || !call_reply_strings(a->element[1]))
			continue;
		kv = a->element[1];
		for (k = 0; k + 1 < kv->elements; k += 2) {
			h = routes_parse(kv->element[k]->str,
			    kv->element[k + 1]->str, kv->element[k + 1]->len);
			if (h == NULL)
				continue;
			if ((mine = handler_find(cfg, h->name)) != NULL)
				routes_check_exec(h->name, cfg->name,
				    mine->exec, a->element[0]->str, h->exec);
			for (j = 0; j < n_routes; j++)
				if (strcmp(routes[j].h->name, h->name) == 0)
					routes_check_exec(h->name,
					    routes[j].agent, routes[j].h->exec,
					    a->element[0]->str, h->exec);
			routes = xreallocarray(routes, n_routes + 1,
			    sizeof *routes);
			routes[n_routes].agent = xstrdup(a->element[0]->str);
			routes[n_routes++].h = h;
		}
	}
}

/* Read the live agents' routes (heartbeat, claim, another's notice). */
void
routes_refresh(void)
{
	struct call	*c;

	if (refreshing) {
		refresh_again = 1;
		return;
	}
	c = call_start(SCRIPT_ROUTES);
	call_key(c, KEY_AGENTS, NULL);
	call_arg(c, "P", cfg->prefix);
	call_arg(c, "self", cfg->name);
	call_int(c, "grace_ms", cfg->route_grace_ms);
	if (call_send_free(c, routes_on_read, NULL) == 0)
		refreshing = 1;
}

/*
 * Add to out (which holds n handlers already, room for max) the other
 * agents' handlers that this agent lacks and whose 'on' matches event,
 * one per handler name.  Returns the new count.
 */
size_t
routes_match(const char *event, struct handler **out, size_t n, size_t max)
{
	size_t	i, j, k;

	for (i = 0; i < n_routes && n < max; i++) {
		struct handler	*h = routes[i].h;

		if (handler_find(cfg, h->name) != NULL)
			continue;
		for (j = 0; j < n; j++)
			if (strcmp(out[j]->name, h->name) == 0)
				break;
		if (j < n)
			continue;
		for (k = 0; k < h->n_on; k++)
			if (fnmatch(h->on[k], event, 0) == 0) {
				out[n++] = h;
				break;
			}
	}
	return n;
}

/*
 * For status: the names of the handlers other agents serve that this one
 * lacks (into names, room for max; returns the count), and for any
 * handler the agents serving it and whether their exec lines differ.
 */
size_t
routes_remote_names(const char **names, size_t max)
{
	size_t	i, j, n = 0;

	for (i = 0; i < n_routes && n < max; i++) {
		if (handler_find(cfg, routes[i].h->name) != NULL)
			continue;
		for (j = 0; j < n; j++)
			if (strcmp(names[j], routes[i].h->name) == 0)
				break;
		if (j == n)
			names[n++] = routes[i].h->name;
	}
	return n;
}

/* The agents serving handler name (this one first if it has it). */
json_t *
routes_agents(const char *name, int *mismatch)
{
	struct handler	*mine = handler_find(cfg, name);
	const char	*exec = mine ? mine->exec : NULL;
	json_t		*a = json_array();
	size_t		 i;

	*mismatch = 0;
	if (mine != NULL)
		json_array_append_new(a, json_string(cfg->name));
	for (i = 0; i < n_routes; i++) {
		if (strcmp(routes[i].h->name, name) != 0)
			continue;
		json_array_append_new(a, json_string(routes[i].agent));
		if (exec == NULL)
			exec = routes[i].h->exec;
		else if (strcmp(exec, routes[i].h->exec) != 0)
			*mismatch = 1;
	}
	return a;
}

/*
 * Do the agents serving handler name disagree on its flow settings (key,
 * per_key, on_busy, max_running, rate)?  The first differing one found
 * goes to other, with its agent.
 */
int
routes_flow_mismatch(const char *name, const char **agent,
    const char **other)
{
	struct handler	*mine = handler_find(cfg, name);
	const char	*sig = mine ? mine->flow_sig : NULL;
	size_t		 i;

	for (i = 0; i < n_routes; i++) {
		if (strcmp(routes[i].h->name, name) != 0)
			continue;
		if (sig == NULL)
			sig = routes[i].h->flow_sig;
		else if (strcmp(sig, routes[i].h->flow_sig) != 0) {
			*agent = routes[i].agent;
			*other = routes[i].h->flow_sig;
			return 1;
		}
	}
	return 0;
}
