/*
 * redis.c: the connections to Redis.  hiredis 0.14 has no reconnect and no
 * command timeout, so this module owns both: each connection goes
 * DOWN -> CONNECTING -> READY, a new context for every attempt, with
 * capped exponential backoff plus jitter between attempts, and a watchdog
 * that drops a connection whose replies stop coming (a blackholed Redis
 * must never hang the agent).  On every connect it authenticates, selects
 * the database, names itself, and loads the scripts or re-subscribes.
 * With Sentinel, sentinel.c says where the master is before each connect,
 * and when it moves.
 * Scripts run with EVALSHA and fall back to EVAL on NOSCRIPT.  In a
 * Cluster, a command answered ASK, TRYAGAIN or MOVED (nothing ran) is
 * sent again (redirect.c), in order, until the slot has moved and the
 * connection is on its new owner (this file follows MOVED), for up to
 * 3 s: a slot migration is not an outage.
 * ASK is waited out rather than followed to the importing node: the
 * scripts touch keys they cannot declare (job:<id>, ready:<handler>), and
 * run there mid-migration they would see half of them.
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

#define BACKOFF_MIN_MS		100
#define BACKOFF_MAX_MS		5000
#define CONNECT_TIMEOUT_MS	5000
#define COMMAND_TIMEOUT_MS	10000
#define WATCHDOG_PERIOD		1.0

enum rstate {
	RS_DOWN,
	RS_CONNECTING,
	RS_READY,
};

/* One logical connection and its current hiredis context. */
struct rconn {
	const char		*role;		/* "cmd" or "sub", for logs */
	redisAsyncContext	*ac;
	enum rstate		 state;
	unsigned		 gen;		/* bumped per context */
	int			 setup_left;	/* setup replies awaited */
	int			 setup_failed;
	int			 was_ready;	/* logged "connected" */
	int			 backoff_ms;
	int			 pending;	/* replies awaited */
	int64_t			 progress_ms;	/* last reply or connect */
	char			 sha[SCRIPT_COUNT][41];
	redis_state_cb		 on_state;
	char			**channels;	/* subscriber only; copies */
	size_t			 n_channels;
	redis_msg_cb		 on_message;
	int64_t			 heard_ms;	/* subscriber: last message */
	ev_timer		 retry;
	ev_timer		 watchdog;
	ev_timer		 drop;		/* leave this node, from the loop */
	int			 moving;	/* MOVED: drop once replies are in */
	struct redirect_queue	*again;		/* to send again, in order */
	struct sentinel_ask	*locating;	/* asking where the master is */
};

static char	*redis_unix;		/* unix socket path, or NULL */
static char	*redis_host;
static int	 redis_port = 6379;
static int	 redis_db;
static char	*redis_password;
static struct rconn **conns;		/* every connection, for a failover */
static size_t	 n_conns;
static char	*redis_user;		/* ACL user name, or NULL */
static char	*redis_agent;		/* client name prefix (a copy) */

struct rconn	*rcmd;
struct rconn	*rsub;

static void	 redis_connect(struct rconn *);
static void	 redis_connect_to(struct rconn *);
static void	 redis_on_located(const char *, int, void *);
static void	 redis_schedule(struct rconn *);
static void	 redis_went_down(struct rconn *, const char *);
static const struct redirect_ops redis_again_ops;
static const char *redis_where(void);

/* The drop timer: leave the connection outside any hiredis callback. */
static void
redis_on_drop(EV_P_ ev_timer *w, int revents)
{
	struct rconn	*rc = (struct rconn *)((char *)w -
	    offsetof(struct rconn, drop));

	if (rc->ac != NULL)
		redis_went_down(rc, "redirected");
}

/*
 * Errors that say this node is the wrong one: a replica after a failover
 * (READONLY) or a Cluster slot that moved (MOVED host:port).  Reconnect,
 * to the named node for MOVED.
 */
static void
redis_check_redirect(struct rconn *rc, const redisReply *reply)
{
	char	 host[256];
	int	 port;

	if (reply == NULL || reply->type != REDIS_REPLY_ERROR)
		return;
	if (strncmp(reply->str, "MOVED ", 6) == 0 &&
	    sscanf(reply->str, "MOVED %*d %255[^:]:%d", host, &port) == 2 &&
	    redis_unix == NULL) {
		if (rc->moving)
			return;
		log_notice("redis %s: the keys moved to %s:%d", rc->role, host,
		    port);
		free(redis_host);
		redis_host = xstrdup(host);
		redis_port = port;
		/* what is under way is answered here first: MOVED, sent again */
		rc->moving = 1;
		if (rc->pending > 0)
			return;
	} else if (strncmp(reply->str, "READONLY", 8) == 0)
		log_notice("redis %s: %s is a replica now; reconnecting",
		    rc->role, redis_where());
	else
		return;
	if (!ev_is_active(&rc->drop)) {
		ev_timer_set(&rc->drop, 0., 0.);
		ev_timer_start(EV_DEFAULT_ &rc->drop);
	}
}

/* The sentinels name another master: leave the old one at once. */
static void
redis_on_master(void)
{
	size_t	i;

	for (i = 0; i < n_conns; i++)
		if (conns[i]->ac != NULL) {
			ev_timer_set(&conns[i]->drop, 0., 0.);
			ev_timer_start(EV_DEFAULT_ &conns[i]->drop);
		}
}

/*
 * Take the address from the config: "unix:/path", "/path", "host:port",
 * "[v6]:port", "redis://host:port/db" or
 * "sentinel://host:port,host:port/MASTER".
 */
int
redis_setup(const struct config *c, char *err, size_t errlen)
{
	const char	*s = c->redis;
	char		 msg[300];

	/* kept for every reconnect: a copy, since a reload frees c */
	free(redis_agent);
	redis_agent = xstrdup(c->name);
	if (strncmp(s, "sentinel://", 11) == 0) {
		/* (redis_user is not used with Sentinel) */
		if (sentinel_setup(s + 11, c->redis_at, err, errlen) == -1)
			return -1;
		redis_host = xstrdup("");
	} else if (util_parse_redis_addr(s, &redis_unix, &redis_host,
	    &redis_port, &redis_db, msg, sizeof msg) == -1) {
		snprintf(err, errlen, "%s: [agent] redis: %s", c->redis_at, msg);
		return -1;
	} else if (c->redis_user != NULL && c->redis_user[0] != '\0')
		redis_user = xstrdup(c->redis_user);
	if (c->password_file != NULL && c->password_file[0] != '\0')
		return util_read_secret(c->password_file, &redis_password, err,
		    errlen);
	if (redis_user != NULL) {
		snprintf(err, errlen, "%s: [agent] redis_user needs "
		    "redis_password_file", c->path);
		return -1;
	}
	return 0;
}

/* The address, for log lines. */
static const char *
redis_where(void)
{
	static char	buf[300];

	if (redis_unix != NULL)
		return redis_unix;
	snprintf(buf, sizeof buf, "%s:%d", redis_host, redis_port);
	return buf;
}

/* The reconnect timer fired. */
static void
redis_on_retry(EV_P_ ev_timer *w, int revents)
{
	struct rconn	*rc = (struct rconn *)((char *)w -
	    offsetof(struct rconn, retry));

	redis_connect(rc);
}

/*
 * Watchdog: a connection that does not complete its connect, or has
 * replies outstanding with no progress, is dropped and reconnected.
 */
static void
redis_on_watchdog(EV_P_ ev_timer *w, int revents)
{
	struct rconn	*rc = (struct rconn *)((char *)w -
	    offsetof(struct rconn, watchdog));
	int64_t		 idle = util_mono_ms() - rc->progress_ms;

	if (rc->ac == NULL)
		return;
	if ((rc->state == RS_CONNECTING && idle > CONNECT_TIMEOUT_MS) ||
	    (rc->pending > 0 && idle > COMMAND_TIMEOUT_MS)) {
		log_warnx("redis %s: no answer from %s for %lld ms, "
		    "reconnecting", rc->role, redis_where(), (long long)idle);
		redis_went_down(rc, NULL);
	}
}

/* Create the logical connection and start connecting. */
struct rconn *
redis_open(const char *role, redis_state_cb on_state)
{
	struct rconn	*rc;

	rc = xcalloc(1, sizeof *rc);
	rc->role = role;
	rc->on_state = on_state;
	rc->backoff_ms = BACKOFF_MIN_MS;
	ev_init(&rc->retry, redis_on_retry);
	ev_init(&rc->drop, redis_on_drop);
	rc->again = redirect_queue_new(&redis_again_ops, rc);
	ev_timer_init(&rc->watchdog, redis_on_watchdog, WATCHDOG_PERIOD,
	    WATCHDOG_PERIOD);
	ev_timer_start(EV_DEFAULT_ &rc->watchdog);
	ev_unref(EV_DEFAULT);
	/* connect from the loop, once the caller has finished setting up */
	ev_timer_set(&rc->retry, 0., 0.);
	ev_timer_start(EV_DEFAULT_ &rc->retry);
	conns = xreallocarray(conns, n_conns + 1, sizeof *conns);
	conns[n_conns++] = rc;
	if (sentinel_enabled() && n_conns == 1)
		sentinel_watch(redis_on_master);
	return rc;
}

/* Make rc a subscriber to channels, now and after every reconnect. */
void
redis_subscribe(struct rconn *rc, const char *const *channels, size_t n,
    redis_msg_cb on_message)
{
	size_t	i;

	rc->channels = xcalloc(n, sizeof *rc->channels);
	for (i = 0; i < n; i++)
		rc->channels[i] = xstrdup(channels[i]);
	rc->n_channels = n;
	rc->on_message = on_message;
}

/* Is the connection ready for commands? */
int
redis_ready(const struct rconn *rc)
{
	return rc != NULL && rc->state == RS_READY;
}

/* The reply callback of the connections: count progress, then answer. */
static void
redis_on_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct redirect_req	*q = priv;
	struct rconn		*rc = q->rc;

	if (q->gen == rc->gen) {
		rc->pending--;
		rc->progress_ms = util_mono_ms();
		redis_check_redirect(rc, r);
		if (rc->moving && rc->pending == 0 &&
		    !ev_is_active(&rc->drop)) {
			ev_timer_set(&rc->drop, 0., 0.);
			ev_timer_start(EV_DEFAULT_ &rc->drop);
		}
	}
	redirect_answer(q, r);
}

/* Send q on its connection now; the callback runs once unless -1. */
static int
redis_send(struct redirect_req *q)
{
	struct rconn	*rc = q->rc;

	if (rc->ac == NULL)
		return -1;
	q->gen = rc->gen;
	if (redisAsyncCommandArgv(rc->ac, redis_on_reply, q, q->argc, q->argv,
	    q->lens) != REDIS_OK)
		return -1;
	if (rc->pending++ == 0)
		rc->progress_ms = util_mono_ms();
	return 0;
}

/* Can rc send now: ready, and not about to leave its node? */
static int
redis_can_send(struct rconn *rc)
{
	return rc->state == RS_READY && !rc->moving;
}

/* A request waited past its deadline: reconnect, as after a loss. */
static void
redis_give_up(struct rconn *rc)
{
	redis_went_down(rc, "redirections did not end in time");
}

/* What rc's queue of requests to send again may do to rc. */
static const struct redirect_ops redis_again_ops = {
	redis_can_send, redis_send, redis_give_up,
};

/* A request for rc, with a copy of argv after npre empty slots. */
static struct redirect_req *
redis_new_req(struct rconn *rc, redis_cb cb, void *arg, int script,
    int npre, int argc, const char **argv, const size_t *lens)
{
	struct redirect_req	*q;

	q = redirect_req_new(rc->again, script, npre, argc, argv, lens);
	q->cb = cb;
	q->arg = arg;
	return q;
}

/*
 * Run a command; cb (which may be NULL) gets the reply.  -1, and no
 * callback, when the connection is not ready.
 */
int
redis_command(struct rconn *rc, redis_cb cb, void *arg, int argc,
    const char **argv, const size_t *lens)
{
	struct redirect_req	*q;

	if (!redis_ready(rc))
		return -1;
	q = redis_new_req(rc, cb, arg, -1, 0, argc, argv, lens);
	if (redirect_submit(q) == -1) {
		redirect_req_free(q);
		return -1;
	}
	return 0;
}

/*
 * Run a script with nkeys keys among argc arguments; -1 (and no callback)
 * when the connection is not ready.
 */
int
redis_script(struct rconn *rc, enum script_id id, redis_cb cb, void *arg,
    int nkeys, int argc, const char **argv, const size_t *lens)
{
	struct redirect_req	*q;
	char		*p;

	if (!redis_ready(rc))
		return -1;
	q = redis_new_req(rc, cb, arg, id, 3, argc, argv, lens);
	p = q->data;
	q->argv[0] = "EVALSHA";
	q->lens[0] = 7;
	memcpy(p, rc->sha[id], sizeof rc->sha[id]);
	q->argv[1] = p;
	q->lens[1] = strlen(p);
	p += sizeof rc->sha[id];
	q->lens[2] = (size_t)snprintf(p, 16, "%d", nkeys);
	q->argv[2] = p;
	if (redirect_submit(q) == -1) {
		redirect_req_free(q);
		return -1;
	}
	return 0;
}

/* A setup reply (AUTH, SELECT, SCRIPT LOAD, ...) arrived. */
static void
redis_on_setup(const struct redisReply *reply, void *arg)
{
	struct rconn	*rc = arg;

	if (rc->state != RS_CONNECTING)
		return;
	if (reply == NULL)
		return;		/* the disconnect path handles it */
	if (reply->type == REDIS_REPLY_ERROR) {
		log_errx("redis %s: %s: setup failed: %s", rc->role,
		    redis_where(), reply->str);
		rc->setup_failed = 1;
	}
	if (--rc->setup_left > 0)
		return;
	if (rc->setup_failed) {
		redis_went_down(rc, NULL);
		return;
	}
	rc->state = RS_READY;
	rc->heard_ms = util_mono_ms();
	rc->backoff_ms = BACKOFF_MIN_MS;
	log_info("redis %s: connected to %s", rc->role, redis_where());
	rc->was_ready = 1;
	/* what waited goes first: its owner does not know it is not lost */
	redirect_flush(rc->again);
	if (rc->state == RS_READY && rc->on_state != NULL)
		rc->on_state(1);
}

/* A SCRIPT LOAD reply: keep the sha, then count it as a setup reply. */
static void
redis_on_script_loaded(const struct redisReply *reply, void *arg)
{
	struct rreq_sha { struct rconn *rc; int id; } *s = arg;

	if (reply != NULL && reply->type == REDIS_REPLY_STRING &&
	    reply->len == 40)
		memcpy(s->rc->sha[s->id], reply->str, 41);
	redis_on_setup(reply, s->rc);
	free(s);
}

/* Deliver pub/sub messages; the setup counts the subscribe replies. */
static void
redis_on_sub(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn	*rc = priv;
	redisReply	*reply = r;

	if (reply == NULL || rc->ac != ac)
		return;
	rc->progress_ms = rc->heard_ms = util_mono_ms();
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
		return;
	if (strcmp(reply->element[0]->str, "subscribe") == 0) {
		if (rc->state == RS_CONNECTING)
			redis_on_setup(reply, rc);
		return;
	}
	if (strcmp(reply->element[0]->str, "message") == 0 &&
	    reply->element[2]->type == REDIS_REPLY_STRING)
		rc->on_message(reply->element[1]->str, reply->element[2]->str,
		    reply->element[2]->len);
}

/* Queue one setup command with a plain setup callback. */
static void
redis_setup_cmd(struct rconn *rc, redis_cb cb, void *arg, int argc,
    const char **argv)
{
	struct redirect_req	*q;

	q = redis_new_req(rc, cb, arg, -1, 0, argc, argv, NULL);
	if (redis_send(q) == -1) {
		redirect_req_free(q);
		return;
	}
	rc->setup_left++;
}

/* Connected (or not): in 0.14 a failed connect never calls onDisconnect. */
static void
redis_on_connect(const redisAsyncContext *ac, int status)
{
	struct rconn	*rc = ac->data;

	if (rc == NULL || rc->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context when this returns */
		rc->ac = NULL;
		redis_went_down(rc, ac->errstr);
		return;
	}
	rc->progress_ms = util_mono_ms();
	if (redis_unix == NULL)
		redisEnableKeepAlive((redisContext *)&ac->c);
}

/* The connection closed: by the server, an error, or our own free. */
static void
redis_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rconn	*rc = ac->data;

	if (rc == NULL || rc->ac != ac)
		return;
	rc->ac = NULL;
	redis_went_down(rc, status == REDIS_OK ? NULL : ac->errstr);
}

/*
 * Leave the current context behind: free it if we still hold it (its
 * pending callbacks then get NULL), tell the owner, schedule a retry.
 */
static void
redis_went_down(struct rconn *rc, const char *why)
{
	redisAsyncContext	*ac = rc->ac;
	int			 was = rc->state == RS_READY;

	rc->state = RS_DOWN;
	rc->gen++;
	rc->pending = 0;
	rc->ac = NULL;
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
	if (was || rc->was_ready) {
		counters.redis_lost++;
		log_warnx("redis %s: lost %s%s%s", rc->role, redis_where(),
		    why ? ": " : "", why ? why : "");
		rc->was_ready = 0;
	} else
		log_debug("redis %s: cannot connect to %s%s%s", rc->role,
		    redis_where(), why ? ": " : "", why ? why : "");
	if (was && rc->on_state != NULL)
		rc->on_state(0);
	redis_schedule(rc);
}

/* Arm the reconnect timer: capped exponential backoff with jitter. */
static void
redis_schedule(struct rconn *rc)
{
	double	delay;

	delay = rc->backoff_ms * (0.5 + util_random01()) / 1000.0;
	rc->backoff_ms *= 2;
	if (rc->backoff_ms > BACKOFF_MAX_MS)
		rc->backoff_ms = BACKOFF_MAX_MS;
	ev_timer_stop(EV_DEFAULT_ &rc->retry);
	ev_timer_set(&rc->retry, delay, 0.);
	ev_timer_start(EV_DEFAULT_ &rc->retry);
}

/* Connect; with Sentinel, once the sentinels have said where to. */
static void
redis_connect(struct rconn *rc)
{
	if (!sentinel_enabled())
		redis_connect_to(rc);
	else if (rc->locating == NULL)
		rc->locating = sentinel_locate(redis_on_located, rc);
}

/* The sentinels named the master (host NULL: none did): connect there. */
static void
redis_on_located(const char *host, int port, void *arg)
{
	struct rconn	*rc = arg;

	rc->locating = NULL;
	if (host == NULL) {
		redis_schedule(rc);
		return;
	}
	free(redis_host);
	redis_host = xstrdup(host);
	redis_port = port;
	redis_connect_to(rc);
}

/* Open a new context and queue the setup commands behind the connect. */
static void
redis_connect_to(struct rconn *rc)
{
	redisAsyncContext	*ac;
	const char		*argv[4];
	char			*name, db[16];
	size_t			 i;
	int			 id;

	if (redis_unix != NULL)
		ac = redisAsyncConnectUnix(redis_unix);
	else
		ac = redisAsyncConnect(redis_host, redis_port);
	if (ac == NULL)
		fatalx("redis: out of memory");
	if (ac->err) {
		log_debug("redis %s: cannot connect to %s: %s", rc->role,
		    redis_where(), ac->errstr);
		redisAsyncFree(ac);
		redis_schedule(rc);
		return;
	}
	/* hiredis before 1.4 leaves its socket inheritable */
	util_set_cloexec(ac->c.fd);
	rc->ac = ac;
	rc->gen++;
	rc->moving = 0;
	rc->state = RS_CONNECTING;
	rc->setup_left = 0;
	rc->setup_failed = 0;
	rc->pending = 0;
	rc->progress_ms = util_mono_ms();
	ac->data = rc;
	redisLibevAttach(EV_DEFAULT_ ac);
	redisAsyncSetConnectCallback(ac, redis_on_connect);
	redisAsyncSetDisconnectCallback(ac, redis_on_disconnect);

	if (redis_password != NULL) {
		/* the first command: nothing else runs unauthenticated */
		argv[0] = "AUTH";
		if (redis_user != NULL) {
			argv[1] = redis_user;
			argv[2] = redis_password;
			redis_setup_cmd(rc, redis_on_setup, rc, 3, argv);
		} else {
			argv[1] = redis_password;
			redis_setup_cmd(rc, redis_on_setup, rc, 2, argv);
		}
	}
	if (redis_db != 0) {
		snprintf(db, sizeof db, "%d", redis_db);
		argv[0] = "SELECT";
		argv[1] = db;
		redis_setup_cmd(rc, redis_on_setup, rc, 2, argv);
	}
	name = util_client_name(redis_agent, rc->role);
	argv[0] = "CLIENT";
	argv[1] = "SETNAME";
	argv[2] = name;
	redis_setup_cmd(rc, redis_on_setup, rc, 3, argv);
	free(name);
	if (rc->channels != NULL) {
		for (i = 0; i < rc->n_channels; i++) {
			argv[0] = "SUBSCRIBE";
			argv[1] = rc->channels[i];
			if (redisAsyncCommand(ac, redis_on_sub, rc,
			    "SUBSCRIBE %s", rc->channels[i]) == REDIS_OK)
				rc->setup_left++;
		}
		return;
	}
	for (id = 0; id < SCRIPT_COUNT; id++) {
		struct rreq_sha { struct rconn *rc; int id; } *s;

		s = xmalloc(sizeof *s);
		s->rc = rc;
		s->id = id;
		argv[0] = "SCRIPT";
		argv[1] = "LOAD";
		argv[2] = scripts[id].body;
		redis_setup_cmd(rc, redis_on_script_loaded, s, 3, argv);
	}
}

/*
 * How long since the subscriber last heard anything: the heartbeat the
 * agent publishes to itself proves the subscription end to end (hiredis
 * 0.14 cannot PING a subscribed connection).  -1 when not subscribed.
 */
int64_t
redis_silence_ms(const struct rconn *rc)
{
	if (rc->state != RS_READY)
		return -1;
	return util_mono_ms() - rc->heard_ms;
}

/* Drop and reconnect (a subscriber that went deaf). */
void
redis_reconnect(struct rconn *rc, const char *why)
{
	if (rc->ac != NULL)
		redis_went_down(rc, why);
}

/* CONFIG GET answered: warn in plain words when jobs could be lost. */
static void
redis_on_config(const struct redisReply *reply, void *arg)
{
	const char	*name, *value;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != 2)
		return;		/* CONFIG may be renamed or denied: fine */
	name = reply->element[0]->str;
	value = reply->element[1]->str;
	if (strcmp(name, "maxmemory-policy") == 0 &&
	    strcmp(value, "noeviction") != 0)
		log_warnx("redis: maxmemory-policy is %s: when Redis fills up "
		    "it will silently delete queued jobs; set it to "
		    "noeviction", value);
	if (strcmp(name, "appendonly") == 0 && strcmp(value, "yes") != 0)
		log_warnx("redis: appendonly is off: jobs queued since the last "
		    "snapshot are lost if Redis restarts; set appendonly yes");
}

/* Ask the server how it keeps data, once per start. */
void
redis_check_durability(struct rconn *rc)
{
	const char	*argv[3] = { "CONFIG", "GET", NULL };

	argv[2] = "maxmemory-policy";
	redis_command(rc, redis_on_config, NULL, 3, argv, NULL);
	argv[2] = "appendonly";
	redis_command(rc, redis_on_config, NULL, 3, argv, NULL);
}

/* Close for good (at exit). */
void
redis_close(struct rconn *rc)
{
	redisAsyncContext	*ac = rc->ac;
	size_t			 i;

	ev_timer_stop(EV_DEFAULT_ &rc->retry);
	rc->state = RS_DOWN;	/* callbacks below cannot send on it */
	redirect_queue_free(rc->again);
	rc->again = NULL;
	ev_timer_stop(EV_DEFAULT_ &rc->drop);
	sentinel_cancel(rc->locating);
	rc->locating = NULL;
	sentinel_stop();
	ev_ref(EV_DEFAULT);
	ev_timer_stop(EV_DEFAULT_ &rc->watchdog);
	rc->on_state = NULL;
	rc->state = RS_DOWN;
	rc->ac = NULL;
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
	for (i = 0; i < rc->n_channels; i++)
		free(rc->channels[i]);
	free(rc->channels);
	free(rc);
}
