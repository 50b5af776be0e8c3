/*
 * main.c: dispatchd, the agent.  Reads the configuration, opens the socket
 * and the Redis connections, and runs the event loop until SIGTERM or
 * SIGINT, then drains: no new jobs, running ones get drain_timeout to
 * finish, the rest are stopped and put back, every outcome is written,
 * exit 0.  A second signal exits at once (leases recover those jobs).
 */
#include "config.h"

#include <sys/prctl.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "dispatchd.h"

#define STOP_SLACK_S	5.0	/* after drain and kill grace: give up */


static ev_signal	 sig_term, sig_int, sig_hup;
static ev_timer		 drain_timer, stop_timer, status_timer;
static int		 stopping;
static int		 ready;		/* READY=1 sent */

static void	 main_on_claimed(void);
static void	 main_on_refused(long long);
static void	 main_on_beat(void);

/* What main decides for the heartbeat. */
static const struct heartbeat_hooks heartbeat_hooks = {
	.claimed = main_on_claimed,
	.refused = main_on_refused,
	.beat = main_on_beat,
};

/* Print usage and exit. */
static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: dispatchd [-c FILE] [-t] [-V] [-h]\n"
	    "  -c FILE  configuration (default %s/dispatchd/dispatchd.conf)\n"
	    "  -t       check the configuration and exit (0 ok, 78 bad)\n"
	    "  -V       print the version and exit\n"
	    "  -h       print this help and exit\n", SYSCONFDIR);
	exit(status);
}

/* A root agent with no user set runs its handlers as root: say so. */
static void
main_warn_root(void)
{
	size_t	i;

	for (i = 0; i < cfg->n_handlers; i++)
		if (cfg->handlers[i]->uid == 0 && cfg->handlers[i]->user ==
		    NULL && cfg->user == NULL)
			log_warnx("handler %s runs as root, since no user is "
			    "set: set [agent] user (or the handler's user) to "
			    "an unprivileged one", cfg->handlers[i]->name);
}

/* Make sure 0, 1 and 2 are open, so no socket or pipe lands there. */
static void
main_std_fds(void)
{
	int	fd;

	while ((fd = open("/dev/null", O_RDWR | O_CLOEXEC)) != -1 && fd <= 2)
		fcntl(fd, F_SETFD, 0);
	if (fd > 2)
		close(fd);
}

/* Leave the loop: the drain is over. */
static void
main_exit(void)
{
	ev_break(EV_DEFAULT_ EVBREAK_ALL);
}

/* The drain is over: give up the name, then leave the loop. */
static void
main_drained(void)
{
	log_info("all jobs finished and recorded; exiting");
	heartbeat_goodbye(main_exit);
}

/* drain_timeout passed with jobs still running: stop them. */
static void
main_on_drain_timeout(EV_P_ ev_timer *w, int revents)
{
	log_notice("drain timeout: stopping %d running jobs and putting them "
	    "back", dispatch_running());
	dispatch_drain(main_drained);
}

/* Nothing more can be done in time (Redis is down, say): exit anyway. */
static void
main_on_stop_timeout(EV_P_ ev_timer *w, int revents)
{
	log_warnx("exiting with work unrecorded; job leases will expire and "
	    "the jobs will run again");
	ev_break(EV_A_ EVBREAK_ALL);
}

/* SIGTERM or SIGINT: drain, or, the second time, exit now. */
static void
main_on_stop(EV_P_ ev_signal *w, int revents)
{
	if (stopping++) {
		log_notice("second signal: exiting now");
		ev_break(EV_A_ EVBREAK_ALL);
		return;
	}
	log_info("stopping: no new jobs; waiting up to %lld ms for %d running",
	    (long long)cfg->drain_ms, dispatch_running());
	notify_send("STOPPING=1\nSTATUS=draining %d running jobs",
	    dispatch_running());
	/* the socket stays open: producers are answered until the exit */
	ev_timer_init(&drain_timer, main_on_drain_timeout,
	    (double)cfg->drain_ms / 1000.0, 0.);
	ev_timer_start(EV_A_ &drain_timer);
	ev_timer_init(&stop_timer, main_on_stop_timeout,
	    (double)(cfg->drain_ms + cfg->kill_grace_ms) / 1000.0 + STOP_SLACK_S,
	    0.);
	ev_timer_start(EV_A_ &stop_timer);
	dispatch_drain(main_drained);
}

/*
 * SIGHUP: read the configuration again beside the one in force; swap if it
 * is valid, else keep the old one and say why.  Running jobs keep the
 * handler settings they started with (they hold a reference); the socket
 * and the Redis connections stay up.
 */
/* Every handler's limits can be enforced here; else -1 with err. */
static int
main_check_limits(const struct config *conf, char *err, size_t errlen)
{
	size_t	i;

	for (i = 0; i < conf->n_handlers; i++)
		if (cgroup_check(&conf->handlers[i]->limits,
		    conf->handlers[i]->name, err, errlen) == -1)
			return -1;
	return 0;
}

static void
main_on_hup(EV_P_ ev_signal *w, int revents)
{
	struct config	*next;
	char		 err[1024];

	notify_send("RELOADING=1");
	if ((next = config_load(cfg->path, err, sizeof err)) == NULL ||
	    main_check_limits(next, err, sizeof err) == -1) {
		config_free(next);
		log_errx("reload: %s; keeping the configuration in force", err);
		notify_send("READY=1\nSTATUS=reload failed: %s", err);
		return;
	}
	config_keep_fixed(next, cfg);
	config_free(cfg);
	cfg = next;
	log_set_level(cfg->log_level);
	main_warn_root();
	control_set_max(cfg->max_message);
	spool_set_max(cfg->spool_max);
	inbox_reconfigure();
	heartbeat_reconfigure();
	dispatch_kick();		/* new handlers to fetch for */
	if (heartbeat_claimed())
		routes_publish();
	log_info("reload: %s: %zu handlers, %d workers", cfg->path,
	    cfg->n_handlers, cfg->workers);
	notify_send("READY=1");
}

/* Tell systemd how things stand; the first call also says READY=1. */
static void
main_status(void)
{
	notify_send("%sSTATUS=%d of %d workers busy, Redis %s%s", ready++ ?
	    "" : "READY=1\n", dispatch_running(), cfg->workers,
	    redis_ready(rcmd) ? "connected" : "unreachable",
	    spool_count() ? ", events waiting in the spool" : "");
}

/*
 * The status timer keeps the status line current; its first run, 5 s
 * after start, says READY=1 even without Redis: the agent still accepts
 * events then, and spools them.
 */
static void
main_on_status(EV_P_ ev_timer *w, int revents)
{
	main_status();
}

/*
 * Redis is back and the name is ours: renew the leases at once, send the
 * finishes it missed, re-arm the promote timer, fetch, and queue what the
 * spool kept.
 */
static void
main_redis_back(void)
{
	heartbeat_beat();
	finish_flush();
	promote_kick();
	dispatch_kick();
	enqueue_replay();
}

/* Redis came up or went down; the first time up, claim the name first. */
static void
main_on_redis(int up)
{
	if (!up)
		return;
	if (!heartbeat_claimed())
		heartbeat_claim();
	else
		main_redis_back();
}

/*
 * The claim succeeded: the agent holds its name in Redis.  It writes its
 * routes, so every other agent knows its handlers, and starts working;
 * READY=1 unless sent already.
 */
static void
main_on_claimed(void)
{
	char	err[1024];

	/*
	 * Only now, with the name held in Redis, may the agent take its
	 * cgroup subtree: a twin refused the name must not sweep the jobs
	 * of the agent that holds it.
	 */
	cgroup_init(cfg->name, cfg->socket, cfg->cgroup, 0);
	if (main_check_limits(cfg, err, sizeof err) == -1) {
		log_errx("%s", err);
		exit(EXIT_CONFIG);
	}
	state_claim_done();
	dispatch_open();
	inbox_claim_start();
	redis_check_durability(rcmd);
	routes_publish();
	routes_refresh();
	log_info("ready: Redis connected, events accepted on %s",
	    cfg->socket);
	if (!ready)
		main_status();
	main_redis_back();
}

/*
 * Another live agent has this name: two must not share one.  Exit without
 * touching the socket file, which is not ours to leave.
 */
static void
main_on_refused(long long ttl_ms)
{
	log_errx("another agent named '%s' is alive (its heartbeat expires in "
	    "%lld ms): two agents must not share a name; set [agent] name",
	    cfg->name, ttl_ms);
	control_close();
	exit(EXIT_UNAVAILABLE);
}

/* Each heartbeat also reads the other agents' routes again. */
static void
main_on_beat(void)
{
	routes_refresh();
}

/* Print the version and the libraries it was built with. */
static void
main_version(void)
{
	printf("dispatchd %s\n", DISPATCHD_VERSION);
	printf("hiredis %d.%d.%d, libev %d.%d, jansson %s\n", HIREDIS_MAJOR,
	    HIREDIS_MINOR, HIREDIS_PATCH, ev_version_major(),
	    ev_version_minor(), JANSSON_VERSION);
}

int
main(int argc, char **argv)
{
	const char	*path = SYSCONFDIR "/dispatchd/dispatchd.conf";
	char		 err[1024], rundir[PATH_MAX], *slash;
	int		 ch, fd, check = 0;

	while ((ch = getopt(argc, argv, "c:tVh")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'V':
			main_version();
			return 0;
		case 'h':
			usage(0);
		default:
			usage(EXIT_USAGE);
		}
	}
	if (optind != argc)
		usage(EXIT_USAGE);

	log_init(6);
	if ((cfg = config_load(path, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		return EXIT_CONFIG;
	}
	if (redis_setup(cfg, err, sizeof err) == -1) {
		fprintf(stderr, "%s\n", err);
		return EXIT_CONFIG;
	}
	if (check) {
		/* what this host can enforce, found without changing it */
		cgroup_init(cfg->name, cfg->socket, cfg->cgroup, 1);
		if (main_check_limits(cfg, err, sizeof err) == -1) {
			fprintf(stderr, "%s\n", err);
			return EXIT_CONFIG;
		}
		printf("%s: configuration OK (%zu handlers)\n", path,
		    cfg->n_handlers);
		return 0;
	}
	log_set_level(cfg->log_level);
	main_warn_root();
	main_std_fds();
	signal(SIGPIPE, SIG_IGN);
	json_object_seed(0);

	if (ev_default_loop(EVFLAG_AUTO) == NULL)
		fatalx("cannot initialise the event loop");
	/* the socket's directory holds the agent's runtime state */
	snprintf(rundir, sizeof rundir, "%s", cfg->socket);
	if ((slash = strrchr(rundir, '/')) != NULL && slash != rundir)
		*slash = '\0';
	else
		strcpy(rundir, ".");
	/* before the socket: a refused twin must not touch the live one's */
	if (state_lock(rundir, cfg->name, err, sizeof err) == -1) {
		log_errx("%s", err);
		return EXIT_UNAVAILABLE;
	}
	/* what this host can enforce; the cgroups come with the claim */
	cgroup_init(cfg->name, cfg->socket, cfg->cgroup, 1);
	if (main_check_limits(cfg, err, sizeof err) == -1) {
		log_errx("%s", err);
		return EXIT_CONFIG;
	}
	notify_init();
	if ((fd = notify_listen_fd()) != -1)
		control_adopt(fd, cfg->socket, cfg->max_message);
	else if (control_listen(cfg->socket, cfg->socket_mode,
	    cfg->max_message) == -1)
		return EXIT_UNAVAILABLE;
	if (cfg->spool != NULL &&
	    spool_open(cfg->spool, cfg->spool_max, err, sizeof err) == -1) {
		log_errx("%s", err);
		return EXIT_CANTCREAT;
	}
	if (cfg->metrics_listen != NULL && cfg->metrics_listen[0] != '\0' &&
	    metrics_listen(cfg->metrics_listen) == -1)
		return EXIT_UNAVAILABLE;
	/* orphaned grandchildren of handlers are reparented here and reaped */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) == -1)
		log_warn("prctl PR_SET_CHILD_SUBREAPER");
	heartbeat_start(rundir, &heartbeat_hooks);
	dispatch_start();
	enqueue_init(dispatch_kick);
	rcmd = redis_open("cmd", main_on_redis);
	subscribe_start();
	inbox_start();
	promote_start(dispatch_kick);

	ev_signal_init(&sig_term, main_on_stop, SIGTERM);
	ev_signal_start(EV_DEFAULT_ &sig_term);
	ev_signal_init(&sig_int, main_on_stop, SIGINT);
	ev_signal_start(EV_DEFAULT_ &sig_int);
	ev_signal_init(&sig_hup, main_on_hup, SIGHUP);
	ev_signal_start(EV_DEFAULT_ &sig_hup);
	ev_timer_init(&status_timer, main_on_status, 5., 5.);
	ev_timer_start(EV_DEFAULT_ &status_timer);
	/* now that every signal of the agent is set: children reset them */
	runner_init();

	log_info("dispatchd %s: agent %s, %zu handlers, %d workers, redis %s",
	    DISPATCHD_VERSION, cfg->name, cfg->n_handlers, cfg->workers,
	    cfg->redis);
	ev_run(EV_DEFAULT_ 0);

	control_close();
	promote_stop();
	inbox_stop();
	redis_close(rsub);
	redis_close(rcmd);
	cgroup_exit();
	config_free(cfg);
	return 0;
}
