/*
 * redirect.c: commands sent again.  Every command redis.c sends is a
 * redirect_req, holding a copy of its argv (strings in one block), so
 * that nothing is lost when Redis answers without running it: a script
 * whose sha the server does not know (NOSCRIPT) is sent again at once as
 * EVAL; in a Cluster, a command answered ASK, TRYAGAIN or MOVED is sent
 * again a little later, on the same connection, until REDIRECT_MS after
 * it was first sent.  (ASK is waited out rather than followed: see
 * redis.c.)  Each connection has a queue of what waits to be sent again,
 * kept in order: a new command queues behind it, and it goes first once
 * the connection is ready, before its owner is told.  A request still
 * waiting at its deadline is answered NULL and the connection made again,
 * as after any lost connection.  The queue reaches its connection only
 * through the redirect_ops redis.c gives it.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatchd.h"

#define REDIRECT_MS	3000	/* ASK, TRYAGAIN, MOVED: keep trying */
#define TRYAGAIN_S	0.025

/* What waits on one connection to be sent again, in order. */
struct redirect_queue {
	struct redirect_req	 *head;
	struct redirect_req	**tailp;
	ev_timer		  timer;
	const struct redirect_ops *ops;
	struct rconn		 *rc;
};

static void	 redirect_on_timer(struct ev_loop *, ev_timer *, int);

/* A queue for the connection rc, reached through ops. */
struct redirect_queue *
redirect_queue_new(const struct redirect_ops *ops, struct rconn *rc)
{
	struct redirect_queue	*w;

	w = xcalloc(1, sizeof *w);
	w->tailp = &w->head;
	w->ops = ops;
	w->rc = rc;
	ev_init(&w->timer, redirect_on_timer);
	return w;
}

/* Is anything waiting? */
static int
redirect_waiting(const struct redirect_queue *w)
{
	return w->head != NULL;
}

/* Take the first request waiting off the queue. */
static struct redirect_req *
redirect_shift(struct redirect_queue *w)
{
	struct redirect_req	*q = w->head;

	if (q != NULL && (w->head = q->next) == NULL)
		w->tailp = &w->head;
	return q;
}

/* Send q again after delay seconds, behind the others waiting. */
static void
redirect_again(struct redirect_req *q, double delay)
{
	struct redirect_queue	*w = q->queue;

	q->next = NULL;
	*w->tailp = q;
	w->tailp = &q->next;
	if (!ev_is_active(&w->timer)) {
		ev_timer_set(&w->timer, delay, 0.);
		ev_timer_start(EV_DEFAULT_ &w->timer);
	}
}

/*
 * A request on queue w for the connection rc, with a copy of argv after
 * npre empty slots (a script's EVALSHA head, whose strings fit in the
 * block's first REDIRECT_HEAD_ROOM bytes).  Its sender sets cb and arg.
 */
struct redirect_req *
redirect_req_new(struct redirect_queue *w, int script, int npre, int argc,
    const char **argv, const size_t *lens)
{
	struct redirect_req	*q;
	char			*p;
	size_t			 total = 0;
	int			 i;

	q = xcalloc(1, sizeof *q);
	q->queue = w;
	q->rc = w->rc;
	q->script = script;
	q->deadline_ms = util_mono_ms() + REDIRECT_MS;
	q->argc = npre + argc;
	q->argv = xcalloc((size_t)q->argc, sizeof *q->argv);
	q->lens = xcalloc((size_t)q->argc, sizeof *q->lens);
	for (i = 0; i < argc; i++) {
		q->lens[npre + i] = lens ? lens[i] : strlen(argv[i]);
		total += q->lens[npre + i];
	}
	q->data = xmalloc(REDIRECT_HEAD_ROOM + total);
	p = q->data + REDIRECT_HEAD_ROOM;
	for (i = 0; i < argc; i++) {
		memcpy(p, argv[i], q->lens[npre + i]);
		q->argv[npre + i] = p;
		p += q->lens[npre + i];
	}
	return q;
}

/* Free a request record. */
void
redirect_req_free(struct redirect_req *q)
{
	free(q->argv);
	free(q->lens);
	free(q->data);
	free(q);
}

/*
 * Send a new request now, or behind those waiting to be sent again (or
 * until the connection has moved).  -1 when it could not be sent.
 */
int
redirect_submit(struct redirect_req *q)
{
	struct redirect_queue	*w = q->queue;

	if (!w->ops->can_send(w->rc) || redirect_waiting(w)) {
		/* after the reconnect, or after the ones before it */
		redirect_again(q, TRYAGAIN_S);
		return 0;
	}
	return w->ops->send(q);
}

/*
 * A reply for q: send a script again as EVAL once on NOSCRIPT, and any
 * command again on ASK, TRYAGAIN and MOVED (nothing ran); else hand the
 * reply, or NULL when the connection went away with the outcome unknown,
 * to the caller, and free q.
 */
void
redirect_answer(struct redirect_req *q, const struct redisReply *reply)
{
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
		if (q->script >= 0 && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
			log_notice("redis: script %s not loaded, sending it "
			    "again", scripts[q->script].name);
			q->argv[0] = "EVAL";
			q->argv[1] = scripts[q->script].body;
			q->lens[0] = 4;
			q->lens[1] = strlen(q->argv[1]);
			q->script = -1;
			redirect_again(q, 0.);
			return;
		}
		if (util_mono_ms() < q->deadline_ms &&
		    (strncmp(reply->str, "ASK ", 4) == 0 ||
		    strncmp(reply->str, "TRYAGAIN", 8) == 0 ||
		    strncmp(reply->str, "MOVED ", 6) == 0)) {
			redirect_again(q, TRYAGAIN_S);
			return;
		}
	}
	if (q->cb != NULL)
		q->cb(reply, q->arg);
	redirect_req_free(q);
}

/*
 * Send what waits to be sent again, in order, while the connection can.
 * A request past its deadline is answered NULL, and the connection made
 * again, so that its owner redoes its work as after any lost connection.
 */
void
redirect_flush(struct redirect_queue *w)
{
	struct redirect_req	*q;
	int			 expired = 0;

	while ((q = w->head) != NULL) {
		if (!w->ops->can_send(w->rc)) {
			if (util_mono_ms() < q->deadline_ms)
				break;
			redirect_shift(w);
			redirect_answer(q, NULL);
			expired = 1;
			continue;
		}
		redirect_shift(w);
		if (w->ops->send(q) == -1)
			redirect_answer(q, NULL);
	}
	if (redirect_waiting(w) && !ev_is_active(&w->timer)) {
		ev_timer_set(&w->timer, TRYAGAIN_S, 0.);
		ev_timer_start(EV_DEFAULT_ &w->timer);
	}
	if (expired && w->ops->can_send(w->rc))
		w->ops->give_up(w->rc);
}

/* The queue's timer fired. */
static void
redirect_on_timer(EV_P_ ev_timer *t, int revents)
{
	redirect_flush((struct redirect_queue *)((char *)t -
	    offsetof(struct redirect_queue, timer)));
}

/*
 * Stop the timer; answer NULL what waits (at close: the connection must
 * no longer be able to send); free the queue.
 */
void
redirect_queue_free(struct redirect_queue *w)
{
	struct redirect_req	*q;

	ev_timer_stop(EV_DEFAULT_ &w->timer);
	while ((q = redirect_shift(w)) != NULL)
		redirect_answer(q, NULL);
	free(w);
}
