/*
 * heartbeat.c: the agent's life in Redis.  At start it claims its name
 * (refused while another live agent holds it), then every third of a
 * lease it says it is alive, renews the leases of the jobs it runs and of
 * the finishes not yet recorded, and takes or keeps the events lead; every
 * RECOVER_S it retries the jobs of agents that stopped renewing theirs; at
 * a clean exit it gives up the name.  What follows from these, a name
 * refused or claimed, main decides through the hooks it passes.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatchd.h"

#define RECOVER_S	2.0
#define RECOVER_LIMIT	500
#define RECOVER_GRACE_MS 1000

static struct heartbeat_hooks	 hooks;
static ev_timer		 beat_timer;
static ev_timer		 recover_timer;
static char		 token[128];		/* this life, in the heartbeat */
static char		 prev_token[640];	/* previous lives' */
static int		 claimed;		/* the name is ours in Redis */
static int		 claiming;		/* the claim is under way */
static int		 leader;		/* we hold the events lead */
static int64_t		 leader_mono;		/* when Redis last said so */
static void		(*goodbye_done)(void);

/* The lead is competed for only by agents that take pub/sub events. */
static int64_t
heartbeat_lead_ttl(void)
{
	return cfg->subscribe[0] != '\0' ? cfg->lease_ms : 0;
}

/* Add one lease to renew: a job id and its attempt. */
static void
heartbeat_add_lease(const char *jid, long attempt, void *arg)
{
	struct call	*c = arg;

	call_arg(c, "jid", jid);
	call_int(c, "attempt", attempt);
}

/*
 * The extend script answered {leader, the jobs whose lease we lost, the
 * jobs we hold that an administrator cancelled}.
 */
static void
heartbeat_on_extended(const struct redisReply *reply, void *arg)
{
	int64_t			*asked = arg;
	const redisReply	*lost, *cancel;
	size_t			 i;
	int			 lead;

	if (!call_reply_is(reply, "iaa") ||
	    !call_reply_strings(reply->element[1]) ||
	    !call_reply_strings(reply->element[2])) {
		free(asked);
		return;
	}
	lead = reply->element[0]->integer != 0;
	if (lead)
		leader_mono = *asked;
	if (leader != lead) {
		leader = lead;
		log_info("%s the events lead: pub/sub events without an id are "
		    "%s here", leader ? "took" : "lost", leader ? "queued" :
		    "left to the leader");
	}
	lost = reply->element[1];
	for (i = 0; i < lost->elements; i++)
		dispatch_lease_lost(lost->element[i]->str);
	/* the notify hint may have been lost: the mark is in Redis */
	cancel = reply->element[2];
	for (i = 0; i < cancel->elements; i++)
		dispatch_cancel(cancel->element[i]->str,
		    "reported by the heartbeat");
	/* the leases of the others run from when we asked */
	dispatch_leases_renewed(*asked);
	free(asked);
}

/* Say we are alive and renew the leases of running jobs. */
static void
heartbeat_on_beat(EV_P_ ev_timer *w, int revents)
{
	struct call	*c;
	int64_t		*asked;

	dispatch_guard_leases();
	if (!claimed)
		return;
	c = call_start(SCRIPT_EXTEND);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_AGENT, cfg->name);
	call_key(c, KEY_AGENTS, NULL);
	call_key(c, KEY_INFO, cfg->name);
	call_key(c, KEY_RUNNING, cfg->name);
	call_key(c, KEY_RESULTS, NULL);
	call_key(c, KEY_LOCK_EVENTS, NULL);
	call_arg(c, "P", cfg->prefix);
	call_arg(c, "agent", cfg->name);
	call_int(c, "lease_ms", cfg->lease_ms);
	call_int(c, "heartbeat_ttl_ms", cfg->lease_ms);
	call_arg(c, "token", token);
	call_arg(c, "version", DISPATCHD_VERSION);
	call_arg(c, "host", util_hostname());
	/* a fetch in flight holds a job we do not know of yet */
	call_arg(c, "reconcile", dispatch_fetching() ? "0" : "1");
	call_int(c, "results_max", cfg->results_max);
	call_int(c, "leader_ttl_ms", heartbeat_lead_ttl());
	dispatch_each_lease(heartbeat_add_lease, c);
	/* a finished job keeps its lease until its finish is recorded */
	finish_each(heartbeat_add_lease, c);
	if (hooks.beat != NULL)
		hooks.beat();
	asked = xmalloc(sizeof *asked);
	*asked = util_mono_ms();
	if (call_send_free(c, heartbeat_on_extended, asked) == -1)
		free(asked);
}

/* The recover script answered: how many jobs it put back. */
static void
heartbeat_on_recovered(const struct redisReply *reply, void *arg)
{
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
	    reply->integer > 0) {
		counters.recovered += (uint64_t)reply->integer;
		log_notice("recovered %lld jobs whose lease had expired",
		    reply->integer);
	}
	else if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		log_warnx("recover: %s", reply->str);
}

/* Recover jobs whose agent stopped renewing their leases. */
static void
heartbeat_on_recover(EV_P_ ev_timer *w, int revents)
{
	struct call	*c;

	c = call_start(SCRIPT_RECOVER);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_DELAYED, NULL);
	call_key(c, KEY_DEAD, NULL);
	call_key(c, KEY_RESULTS, NULL);
	call_key(c, KEY_LOCK_RECOVER, NULL);
	call_arg(c, "P", cfg->prefix);
	/* held a little less than the period, so the next run may take it */
	call_int(c, "lock_ms", (int)(RECOVER_S * 1000) - 100);
	call_int(c, "limit", RECOVER_LIMIT);
	call_int(c, "grace_ms", RECOVER_GRACE_MS);
	call_int(c, "backoff_base_ms", 5000);
	call_int(c, "backoff_cap_ms", 3600 * 1000);
	call_int(c, "results_max", cfg->results_max);
	call_int(c, "dead_ttl_s", SCHEMA_DEAD_TTL_S);
	call_key_arg(c, "notify_channel", KEY_NOTIFY, NULL);
	call_send_free(c, heartbeat_on_recovered, NULL);
}

/* The claim script answered: the name is ours, or another agent's. */
static void
heartbeat_on_claimed(const struct redisReply *reply, void *arg)
{
	long long	n;

	claiming = 0;
	if (reply == NULL)
		return;		/* lost the connection: claim again on return */
	/* {reclaimed, "", 0, leader}, or {-1, the other token, its ttl} */
	if (!call_reply_is(reply, "i*") || !call_reply_is(reply,
	    reply->element[0]->integer < 0 ? "isi" : "isii")) {
		/* MOVED: a Cluster node that does not hold the keys; we move */
		log_msg(reply->type == REDIS_REPLY_ERROR &&
		    strncmp(reply->str, "MOVED", 5) == 0 ? LOG_INFO : LOG_ERR,
		    "claim: %s", reply->type == REDIS_REPLY_ERROR ?
		    reply->str : "unexpected reply");
		return;
	}
	n = reply->element[0]->integer;
	if (n < 0) {
		hooks.refused(reply->element[2]->integer);
		return;
	}
	claimed = 1;
	leader = reply->element[3]->integer != 0;
	if (leader)
		leader_mono = util_mono_ms();
	/* before the promote and fetch of main's Redis-up sequence */
	if (n > 0) {
		log_notice("reclaimed %lld jobs this agent was running when it "
		    "stopped; they will be retried", n);
		heartbeat_on_recover(EV_DEFAULT_ &recover_timer, 0);
	}
	hooks.claimed();
}

/* Take the agent's name in Redis (once a life) before it works. */
void
heartbeat_claim(void)
{
	struct call	*c;

	if (claiming || claimed)
		return;
	c = call_start(SCRIPT_CLAIM);
	call_key(c, KEY_AGENT, cfg->name);
	call_key(c, KEY_RUNNING, cfg->name);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_AGENTS, NULL);
	call_key(c, KEY_LOCK_EVENTS, NULL);
	call_arg(c, "token", token);
	call_arg(c, "previous_tokens", prev_token);
	call_int(c, "heartbeat_ttl_ms", cfg->lease_ms);
	call_arg(c, "name", cfg->name);
	call_int(c, "leader_ttl_ms", heartbeat_lead_ttl());
	if (call_send_free(c, heartbeat_on_claimed, NULL) == 0)
		claiming = 1;
}

/* Send a heartbeat now (Redis is back). */
void
heartbeat_beat(void)
{
	heartbeat_on_beat(EV_DEFAULT_ &beat_timer, 0);
}

/*
 * Make this life's token, kill what a previous life left running (from
 * the state file in rundir), and start the timers.  The claim waits for
 * Redis: main calls heartbeat_claim when it is up.
 */
void
heartbeat_start(const char *rundir, const struct heartbeat_hooks *h)
{
	char	nonce[17];
	int	killed;

	hooks = *h;
	util_random_hex(nonce, 8);
	snprintf(token, sizeof token, "%s:%d:%s", util_hostname(),
	    (int)getpid(), nonce);
	if ((killed = state_open(rundir, cfg->name, token, prev_token,
	    sizeof prev_token)) > 0)
		log_notice("killed %d handler process groups left by this "
		    "agent's previous run", killed);
	state_save(NULL, NULL, 0);
	ev_timer_init(&beat_timer, heartbeat_on_beat,
	    (double)cfg->lease_ms / 3000.0, (double)cfg->lease_ms / 3000.0);
	ev_timer_start(EV_DEFAULT_ &beat_timer);
	ev_timer_init(&recover_timer, heartbeat_on_recover, RECOVER_S,
	    RECOVER_S);
	ev_timer_start(EV_DEFAULT_ &recover_timer);
}

/* The configuration changed: beat at the new lease's pace. */
void
heartbeat_reconfigure(void)
{
	ev_timer_stop(EV_DEFAULT_ &beat_timer);
	ev_timer_set(&beat_timer, (double)cfg->lease_ms / 3000.0,
	    (double)cfg->lease_ms / 3000.0);
	ev_timer_start(EV_DEFAULT_ &beat_timer);
}

/* The goodbye was answered (or the connection is gone): done. */
static void
heartbeat_on_goodbye(const struct redisReply *reply, void *arg)
{
	goodbye_done();
}

/*
 * At a clean exit, give up the name at once (rather than when the
 * heartbeat expires), so status shows the agent not alive and a new
 * agent of that name may start; then call done.
 */
void
heartbeat_goodbye(void (*done)(void))
{
	const char	*argv[2];
	char		*hb;
	int		 rc;

	/*
	 * The agent stays in the agents set: its routes keep their grace, so
	 * events for its handlers still queue while it is away.
	 */
	hb = schema_key(KEY_AGENT, cfg->name);
	argv[0] = "DEL";
	argv[1] = hb;
	goodbye_done = done;
	rc = redis_command(rcmd, heartbeat_on_goodbye, NULL, 2, argv, NULL);
	free(hb);
	if (rc == -1)
		done();
}

/* Has the agent taken its name in Redis (so it may work)? */
int
heartbeat_claimed(void)
{
	return claimed;
}

/*
 * Do we enqueue pub/sub events that carry no id?  Only while Redis
 * confirmed the lead recently: the lock expires a lease after its last
 * renewal, and an agent that was paused (or cut off) longer than that
 * must not act on a lead another agent may hold by now.
 */
int
heartbeat_is_leader(void)
{
	return leader &&
	    util_mono_ms() - leader_mono < cfg->lease_ms * 2 / 3;
}
