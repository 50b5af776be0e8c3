/*
 * redirect.c: commands a Redis Cluster node answered with ASK.  While the
 * slot of the agent's keys migrates, keys already moved live on the
 * importing node, and a command that needs them may be sent there, one at
 * a time, after ASKING.  The agent's connections stay on the slot's owner
 * (ASK is not MOVED); the importing node gets one side connection, opened
 * when first needed and closed when idle or when it stops answering.  A
 * migration has one target, so one side connection is enough: another
 * target replaces it.
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

#define SIDE_IDLE_MS		10000	/* close an unused side connection */
#define SIDE_TIMEOUT_MS		5000	/* replies owed this long: give up */

/* The side connection to the importing node. */
struct side {
	char			*host;
	int			 port;
	redisAsyncContext	*ac;
	int			 pending;
	int64_t			 progress_ms;
};

/* One command sent there: the caller's callback. */
struct asked {
	redis_cb	 cb;
	void		*arg;
};

static struct side	*side;
static ev_timer		 side_timer;
static const char	*auth_user;	/* the redis module's, kept for life */
static const char	*auth_password;

/* Forget the side connection; what it owed is answered NULL by hiredis. */
static void
redirect_close(void)
{
	struct side		*s = side;
	redisAsyncContext	*ac;

	if (s == NULL)
		return;
	side = NULL;
	ev_timer_stop(EV_DEFAULT_ &side_timer);
	ac = s->ac;
	free(s->host);
	free(s);
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
}

/* hiredis closed it (the node went away): forget it. */
static void
redirect_on_disconnect(const redisAsyncContext *ac, int status)
{
	if (side != NULL && side->ac == ac) {
		side->ac = NULL;	/* hiredis frees it */
		redirect_close();
	}
}

/* Connected, or not. */
static void
redirect_on_connect(const redisAsyncContext *ac, int status)
{
	if (status != REDIS_OK && side != NULL && side->ac == ac) {
		log_notice("redis: cannot reach %s:%d for an ASK redirection",
		    side->host, side->port);
		side->ac = NULL;
		redirect_close();
	}
}

/* Once a second: close the side connection if idle, or if stuck. */
static void
redirect_on_timer(EV_P_ ev_timer *w, int revents)
{
	int64_t	idle;

	if (side == NULL)
		return;
	idle = util_mono_ms() - side->progress_ms;
	if ((side->pending == 0 && idle > SIDE_IDLE_MS) ||
	    (side->pending > 0 && idle > SIDE_TIMEOUT_MS)) {
		if (side->pending > 0)
			log_warnx("redis: no answer from %s:%d after ASK for "
			    "%lld ms", side->host, side->port, (long long)idle);
		redirect_close();
	}
}

/* Open the side connection to host:port, authenticated as the others. */
static int
redirect_open(const char *host, int port)
{
	redisAsyncContext	*ac;
	const char		*argv[3];
	int			 n = 0;

	redirect_close();
	if ((ac = redisAsyncConnect(host, port)) == NULL)
		fatalx("redis: out of memory");
	if (ac->err) {
		redisAsyncFree(ac);
		return -1;
	}
	util_set_cloexec(ac->c.fd);
	side = xcalloc(1, sizeof *side);
	side->host = xstrdup(host);
	side->port = port;
	side->ac = ac;
	side->progress_ms = util_mono_ms();
	redisLibevAttach(EV_DEFAULT_ ac);
	redisAsyncSetConnectCallback(ac, redirect_on_connect);
	redisAsyncSetDisconnectCallback(ac, redirect_on_disconnect);
	if (auth_password != NULL) {
		argv[n++] = "AUTH";
		if (auth_user != NULL)
			argv[n++] = auth_user;
		argv[n++] = auth_password;
		redisAsyncCommandArgv(ac, NULL, NULL, n, argv, NULL);
	}
	ev_timer_init(&side_timer, redirect_on_timer, 1., 1.);
	ev_timer_start(EV_DEFAULT_ &side_timer);
	ev_unref(EV_DEFAULT);
	log_info("redis: following ASK to %s:%d (the slot is migrating)", host,
	    port);
	return 0;
}

/* The importing node answered. */
static void
redirect_on_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct asked	*a = priv;

	if (side != NULL && side->ac == ac) {
		side->pending--;
		side->progress_ms = util_mono_ms();
	}
	a->cb(r, a->arg);
	free(a);
}

/* Where the migration is going, and who may log in there. */
void
redirect_setup(const char *user, const char *password)
{
	auth_user = user;
	auth_password = password;
}

/*
 * Send the command to host:port after ASKING; cb gets the reply, or NULL
 * if that node cannot be reached, exactly once, never before this
 * returns.  -1 (and no callback) when it cannot be sent at all.
 */
int
redirect_ask(const char *host, int port, int argc, const char **argv,
    const size_t *lens, redis_cb cb, void *arg)
{
	const char	*asking[1] = { "ASKING" };
	struct asked	*a;

	if ((side == NULL || side->ac == NULL || side->port != port ||
	    strcmp(side->host, host) != 0) && redirect_open(host, port) == -1)
		return -1;
	a = xmalloc(sizeof *a);
	a->cb = cb;
	a->arg = arg;
	if (redisAsyncCommandArgv(side->ac, NULL, NULL, 1, asking, NULL) !=
	    REDIS_OK || redisAsyncCommandArgv(side->ac, redirect_on_reply, a,
	    argc, argv, lens) != REDIS_OK) {
		free(a);
		return -1;
	}
	if (side->pending++ == 0)
		side->progress_ms = util_mono_ms();
	return 0;
}

/* The migration is over (MOVED) or the agent exits: close the side. */
void
redirect_done(void)
{
	if (side != NULL && side->pending == 0)
		redirect_close();
}
