/*
 * promote.c: move delayed jobs and retries to their ready lists when they
 * come due.  The timer sleeps until the next due time that the promote
 * script reports (both on Redis's clock), never a fixed poll; a wake-up
 * hint from an enqueue of a delayed job runs it at once so that it can
 * re-arm for a sooner job.  A 1 s cap covers hints lost while pub/sub was
 * down.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatchd.h"

#define PROMOTE_LIMIT	500
#define PROMOTE_MAX_S	1.0

static ev_timer	 promote_timer;
static int	 promote_busy;		/* a script call is in flight */
static int	 promote_again;		/* a kick came while busy */
static void	(*promote_moved)(void);	/* main's: jobs became ready */

static void	 promote_run(void);

/* Arm the timer to fire after s seconds. */
static void
promote_arm(double s)
{
	if (s > PROMOTE_MAX_S)
		s = PROMOTE_MAX_S;
	if (s < 0)
		s = 0;
	ev_timer_stop(EV_DEFAULT_ &promote_timer);
	ev_timer_set(&promote_timer, s, 0.);
	ev_timer_start(EV_DEFAULT_ &promote_timer);
}

/* The promote script answered {moved, next_due, now}. */
static void
promote_on_reply(const struct redisReply *reply, void *arg)
{
	long long	moved, next, now;

	promote_busy = 0;
	if (!call_reply_is(reply, "iii")) {
		if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
			log_warnx("promote: %s", reply->str);
		promote_arm(PROMOTE_MAX_S);
		return;
	}
	moved = reply->element[0]->integer;
	next = reply->element[1]->integer;
	now = reply->element[2]->integer;
	if (moved > 0) {
		log_debug("promote: %lld jobs due", moved);
		promote_moved();
	}
	if (moved >= PROMOTE_LIMIT || promote_again) {
		promote_again = 0;
		promote_run();
	} else if (next < 0)
		promote_arm(PROMOTE_MAX_S);
	else
		promote_arm((double)(next - now) / 1000.0);
}

/* Run the promote script now, unless a run is in flight. */
static void
promote_run(void)
{
	struct call	*c;

	if (promote_busy) {
		promote_again = 1;
		return;
	}
	c = call_start(SCRIPT_PROMOTE);
	call_key(c, KEY_DELAYED, NULL);
	call_arg(c, "P", cfg->prefix);
	call_int(c, "limit", PROMOTE_LIMIT);
	call_key_arg(c, "notify_channel", KEY_NOTIFY, NULL);
	if (call_send_free(c, promote_on_reply, NULL) == 0)
		promote_busy = 1;
	else
		promote_arm(PROMOTE_MAX_S);
}

/* The timer fired. */
static void
promote_on_timer(EV_P_ ev_timer *w, int revents)
{
	promote_run();
}

/* Start promoting; moved is called when jobs became ready. */
void
promote_start(void (*moved)(void))
{
	promote_moved = moved;
	ev_init(&promote_timer, promote_on_timer);
	promote_arm(0);
}

/* Run soon: a delayed job was queued or Redis came back. */
void
promote_kick(void)
{
	promote_run();
}

/* Stop the timer (exit). */
void
promote_stop(void)
{
	ev_timer_stop(EV_DEFAULT_ &promote_timer);
}
