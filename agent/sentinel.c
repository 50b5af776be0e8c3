/*
 * sentinel.c: where the master is, when [agent] redis names Sentinels
 * ("sentinel://host:port,host:port/MASTER").  A connection asks here
 * before each connect (sentinel_locate); once a second a check asks again
 * and tells redis.c when the sentinels name another master, so that the
 * agent leaves a demoted one at once.  An ask goes to the sentinels in
 * the order configured, one at a time, and ends with the first that
 * names the master ("SENTINEL get-master-addr-by-name"); each has a
 * timeout to connect and another to answer.  The asks are asynchronous
 * (hiredis on libev): a sentinel that does not answer never stalls the
 * loop.  Sentinels are asked without AUTH, as they always were.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include "dispatchd.h"

#define LOCATE_MS	500	/* per sentinel and step: before a connect */
#define CHECK_MS	50	/* the same for the once-a-second check */
#define CHECK_PERIOD	1.0

/* One ask: the sentinels in turn until one names the master. */
struct sentinel_ask {
	int			 timeout_ms;	/* to connect, then to answer */
	int			 locate;	/* for a connect (else the check) */
	size_t			 next;		/* the sentinel being asked */
	redisAsyncContext	*ac;		/* its context, or NULL */
	ev_timer		 timer;		/* its timeout; or none left */
	sentinel_cb		 cb;
	void			*arg;
};

static char		**sentinels;		/* "host:port" of each sentinel */
static size_t		  n_sentinels;
static char		 *sentinel_master;	/* the name they know it by */
static ev_timer		  sentinel_check;
static struct sentinel_ask *sentinel_checking;	/* the check's ask, or NULL */
static sentinel_moved_cb  sentinel_on_moved;
static char		 *sentinel_host;	/* the master last handed out */
static int		  sentinel_port;
static unsigned		  sentinel_located;	/* counts the handings out */

static void	 sentinel_try(struct sentinel_ask *);

/*
 * Remember the sentinels of spec (what follows "sentinel://").  -1, with
 * the reason in err, when it is not "host:port[,host:port...]/MASTER".
 */
int
sentinel_setup(const char *spec, const char *at, char *err, size_t errlen)
{
	char	*list, *slash, *tok, *save;

	list = xstrdup(spec);
	if ((slash = strchr(list, '/')) == NULL || slash[1] == '\0') {
		snprintf(err, errlen, "%s: [agent] redis: 'sentinel://%s' needs "
		    "the master name: sentinel://host:port,.../NAME", at, spec);
		free(list);
		return -1;
	}
	*slash = '\0';
	sentinel_master = xstrdup(slash + 1);
	for (tok = strtok_r(list, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (strchr(tok, ':') == NULL) {
			snprintf(err, errlen, "%s: [agent] redis: sentinel "
			    "'%s' is not host:port", at, tok);
			free(list);
			return -1;
		}
		sentinels = xreallocarray(sentinels, n_sentinels + 1,
		    sizeof *sentinels);
		sentinels[n_sentinels++] = xstrdup(tok);
	}
	free(list);
	if (n_sentinels == 0) {
		snprintf(err, errlen, "%s: [agent] redis: no sentinels in "
		    "'sentinel://%s'", at, spec);
		return -1;
	}
	return 0;
}

/* Is the master found through sentinels? */
int
sentinel_enabled(void)
{
	return n_sentinels > 0;
}

/* Let go of the sentinel being asked; hiredis may free it later. */
static void
sentinel_leave(struct sentinel_ask *q, int free_it)
{
	redisAsyncContext	*ac = q->ac;

	ev_timer_stop(EV_DEFAULT_ &q->timer);
	q->ac = NULL;
	if (ac == NULL)
		return;
	ac->data = NULL;	/* its callbacks see nothing from now on */
	if (free_it)
		redisAsyncFree(ac);
}

/*
 * The ask is over: host (NULL when no sentinel named the master) goes to
 * the caller, and q is freed.  A connect's ask logs a failure and keeps
 * what it hands out, for the check to compare with.
 */
static void
sentinel_end(struct sentinel_ask *q, const char *host, int port)
{
	sentinel_cb	 cb = q->cb;
	void		*arg = q->arg;

	sentinel_leave(q, 1);
	if (q->locate && host != NULL) {
		free(sentinel_host);
		sentinel_host = xstrdup(host);
		sentinel_port = port;
		sentinel_located++;
	} else if (q->locate)
		log_warnx("redis: no sentinel knows master %s",
		    sentinel_master);
	free(q);
	cb(host, port, arg);
}

/* This sentinel did not name the master: on to the next one. */
static void
sentinel_next(struct sentinel_ask *q, int free_it)
{
	sentinel_leave(q, free_it);
	q->next++;
	sentinel_try(q);
}

/* The timer: the sentinel asked took too long, or none is left. */
static void
sentinel_on_timer(EV_P_ ev_timer *w, int revents)
{
	struct sentinel_ask	*q = (struct sentinel_ask *)((char *)w -
	    offsetof(struct sentinel_ask, timer));

	if (q->ac == NULL)
		sentinel_end(q, NULL, 0);
	else
		sentinel_next(q, 1);
}

/* The answer to SENTINEL get-master-addr-by-name (NULL: the link went). */
static void
sentinel_on_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct sentinel_ask	*q = ac->data;
	redisReply		*reply = r;
	char			*host;
	int			 port;

	if (q == NULL || q->ac != ac)
		return;		/* left behind: priv may be gone */
	if (reply == NULL) {
		/* hiredis is freeing the context itself */
		sentinel_next(q, 0);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->str == NULL || reply->element[1]->str == NULL) {
		sentinel_next(q, 1);
		return;
	}
	host = xstrdup(reply->element[0]->str);
	port = atoi(reply->element[1]->str);
	sentinel_end(q, host, port);
	free(host);
}

/* Connected (or not): the answer gets a timeout of its own. */
static void
sentinel_on_connect(const redisAsyncContext *ac, int status)
{
	struct sentinel_ask	*q = ac->data;

	if (q == NULL || q->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context when this returns */
		sentinel_next(q, 0);
		return;
	}
	ev_timer_stop(EV_DEFAULT_ &q->timer);
	ev_timer_set(&q->timer, q->timeout_ms / 1000.0, 0.);
	ev_timer_start(EV_DEFAULT_ &q->timer);
}

/* The sentinel closed the connection before it answered. */
static void
sentinel_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct sentinel_ask	*q = ac->data;

	if (q == NULL || q->ac != ac)
		return;
	sentinel_next(q, 0);
}

/*
 * Ask the sentinels from q->next on: connect to the first one that can
 * be, and send the question.  When none is left, the timer ends the ask
 * from the loop (never from inside the caller).
 */
static void
sentinel_try(struct sentinel_ask *q)
{
	redisAsyncContext	*ac;
	char			 host[256];
	int			 port;

	for (; q->next < n_sentinels; q->next++) {
		if (sscanf(sentinels[q->next], "%255[^:]:%d", host,
		    &port) != 2)
			continue;
		if ((ac = redisAsyncConnect(host, port)) == NULL)
			fatalx("redis: out of memory");
		if (ac->err) {
			redisAsyncFree(ac);
			continue;
		}
		/* hiredis before 1.4 leaves its socket inheritable */
		util_set_cloexec(ac->c.fd);
		ac->data = q;
		q->ac = ac;
		redisLibevAttach(EV_DEFAULT_ ac);
		redisAsyncSetConnectCallback(ac, sentinel_on_connect);
		redisAsyncSetDisconnectCallback(ac, sentinel_on_disconnect);
		if (redisAsyncCommand(ac, sentinel_on_reply, NULL,
		    "SENTINEL get-master-addr-by-name %s",
		    sentinel_master) != REDIS_OK) {
			sentinel_leave(q, 1);
			continue;
		}
		ev_timer_set(&q->timer, q->timeout_ms / 1000.0, 0.);
		ev_timer_start(EV_DEFAULT_ &q->timer);
		return;
	}
	ev_timer_set(&q->timer, 0., 0.);
	ev_timer_start(EV_DEFAULT_ &q->timer);
}

/* Start an ask; cb gets the master's address, or NULL. */
static struct sentinel_ask *
sentinel_ask(int timeout_ms, int locate, sentinel_cb cb, void *arg)
{
	struct sentinel_ask	*q;

	q = xcalloc(1, sizeof *q);
	q->timeout_ms = timeout_ms;
	q->locate = locate;
	q->cb = cb;
	q->arg = arg;
	ev_init(&q->timer, sentinel_on_timer);
	sentinel_try(q);
	return q;
}

/*
 * Where is the master, before a connect?  cb gets the address the first
 * sentinel to answer names, or NULL (logged) when none does; never before
 * this returns.  The ask is the caller's until then, to cancel.
 */
struct sentinel_ask *
sentinel_locate(sentinel_cb cb, void *arg)
{
	return sentinel_ask(LOCATE_MS, 1, cb, arg);
}

/* Drop an ask under way; its callback will not run. */
void
sentinel_cancel(struct sentinel_ask *q)
{
	if (q == NULL)
		return;
	sentinel_leave(q, 1);
	free(q);
}

/*
 * The check's answer.  If the sentinels now name another master, leave
 * the old one at once.  A demoted master goes on taking writes until the
 * sentinels reconfigure it (up to ~10 s later), and Redis discards them
 * when it resyncs: the sooner the agent moves, the less acknowledged work
 * a failover loses.  A connect that located the master meanwhile knows
 * better than this answer, which may be older.
 */
static void
sentinel_on_checked(const char *host, int port, void *arg)
{
	unsigned	located = (unsigned)(uintptr_t)arg;

	sentinel_checking = NULL;
	if (host == NULL || located != sentinel_located)
		return;
	if (sentinel_host == NULL || strcmp(host, sentinel_host) != 0 ||
	    port != sentinel_port) {
		log_notice("redis: the sentinels name %s:%d as master %s now; "
		    "reconnecting", host, port, sentinel_master);
		sentinel_on_moved();
	}
}

/* Once a second: ask again, unless the last check is still asking. */
static void
sentinel_on_check(EV_P_ ev_timer *w, int revents)
{
	if (sentinel_checking != NULL)
		return;
	sentinel_checking = sentinel_ask(CHECK_MS, 0, sentinel_on_checked,
	    (void *)(uintptr_t)sentinel_located);
}

/* Start the check; cb is told when the sentinels name another master. */
void
sentinel_watch(sentinel_moved_cb cb)
{
	sentinel_on_moved = cb;
	ev_timer_init(&sentinel_check, sentinel_on_check, CHECK_PERIOD,
	    CHECK_PERIOD);
	ev_timer_start(EV_DEFAULT_ &sentinel_check);
	ev_unref(EV_DEFAULT);
}

/* Stop the check, and its ask under way (at exit). */
void
sentinel_stop(void)
{
	if (ev_is_active(&sentinel_check)) {
		ev_ref(EV_DEFAULT);
		ev_timer_stop(EV_DEFAULT_ &sentinel_check);
	}
	sentinel_cancel(sentinel_checking);
	sentinel_checking = NULL;
}
