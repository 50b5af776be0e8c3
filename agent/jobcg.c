/*
 * jobcg.c: one job's cgroups, from before its handler starts until its
 * last process is gone.
 *
 * The child joins them itself, by writing to their cgroup.procs between
 * clone and exec (runner.c), so the handler runs no instruction outside.
 * clone3's CLONE_INTO_CGROUP would need a child that copies the agent's
 * page tables: a C function cannot run on a fresh stack after a raw
 * clone3, and the CLONE_VM child that makes spawning cheap needs one.
 *
 * Whether anything is left is read from cgroup.events; the wait for the
 * last process is an inotify watch on it, not a poll.
 */
#include "config.h"

#include <sys/inotify.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "dispatchd.h"

/* One job's cgroups. */
struct jobcg {
	char		 name[NAME_MAX + 1];
	int		 in[CG_COUNT];	/* made in that hierarchy */
	int		 procs[CG_COUNT];	/* cgroup.procs, for the child */
	int		 events;	/* v2 cgroup.events, or -1 */
	int		 wd;		/* inotify watch, or -1 */
	void		(*empty_cb)(void *);
	void		*empty_arg;
	int		 tries;		/* rmdir attempts left, once dying */
	struct jobcg	*next;		/* watched or dying */
};

static int		 inotify_fd = -1;
static ev_io		 inotify_io;
static ev_timer		 dying_timer;
static struct jobcg	*watched;	/* waiting to be empty */
static struct jobcg	*dying;		/* waiting to be removed */

#define RMDIR_TRIES	50		/* one every 100 ms */

static int	 jobcg_populated(struct jobcg *);
static void	 jobcg_unwatch(struct jobcg *);

/* The agent's v2 subtree, where every job's cgroup is. */
static const char *
jobcg_base(void)
{
	const char	*path;

	cgroup_tree(CG_V2, &path);
	return path;
}

/*
 * The path of file in the job's cgroup, relative to its hierarchy's
 * subtree: kernfs opens cost, and going through the subtree's descriptor
 * saves one for the job's directory each time.
 */
static const char *
jobcg_path(const struct jobcg *j, const char *file, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", j->name, file);
	return buf;
}

/* Write s to file of the job's cgroup in h. */
static int
jobcg_write(const struct jobcg *j, enum cgroup_hier h, const char *file,
    const char *s)
{
	char	path[PATH_MAX];

	return cgroup_write(cgroup_tree(h, NULL), jobcg_path(j, file, path,
	    sizeof path), s);
}

/* Open file of the job's cgroup in h. */
static int
jobcg_open(const struct jobcg *j, enum cgroup_hier h, const char *file,
    int flags)
{
	char	path[PATH_MAX];

	if (!j->in[h])
		return -1;
	return openat(cgroup_tree(h, NULL), jobcg_path(j, file, path,
	    sizeof path), flags | O_CLOEXEC);
}

/* Something changed in a watched job's cgroup.events. */
static void
jobcg_on_inotify(EV_P_ ev_io *w, int revents)
{
	char			 buf[4096]
	    __attribute__((aligned(__alignof__(struct inotify_event))));
	struct jobcg	**pp, *j;
	ssize_t			 n;

	while ((n = read(inotify_fd, buf, sizeof buf)) > 0)
		;
	for (pp = &watched; (j = *pp) != NULL;) {
		if (jobcg_populated(j)) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		inotify_rm_watch(inotify_fd, j->wd);
		j->wd = -1;
		j->empty_cb(j->empty_arg);
	}
}

/* Write a limit, as the hierarchy spells it, into a job's cgroup dir. */
static int
jobcg_limit(const struct jobcg *j, enum cgroup_hier h,
    const struct job_limits *l, enum limit_kind kind)
{
	char	v[64];

	switch (kind) {
	case LIMIT_MEMORY:
		snprintf(v, sizeof v, "%zu", l->memory_max);
		return jobcg_write(j, h, h == CG_V2 ? "memory.max" :
		    "memory.limit_in_bytes", v);
	case LIMIT_SWAP:
		if (h == CG_V2) {
			snprintf(v, sizeof v, "%zu", l->swap_max);
			return jobcg_write(j, h, "memory.swap.max", v);
		}
		/* v1 limits memory and swap together */
		snprintf(v, sizeof v, "%zu", l->memory_max + l->swap_max);
		return jobcg_write(j, h, "memory.memsw.limit_in_bytes", v);
	case LIMIT_TASKS:
		snprintf(v, sizeof v, "%ld", l->tasks_max);
		return jobcg_write(j, h, "pids.max", v);
	case LIMIT_CPU:
		if (h == CG_V2) {
			snprintf(v, sizeof v, "%d 100000", l->cpu_pct * 1000);
			return jobcg_write(j, h, "cpu.max", v);
		}
		snprintf(v, sizeof v, "%d", l->cpu_pct * 1000);
		if (jobcg_write(j, h, "cpu.cfs_period_us", "100000") == -1)
			return -1;
		return jobcg_write(j, h, "cpu.cfs_quota_us", v);
	case LIMIT_IO:
		if (h == CG_V2) {
			snprintf(v, sizeof v, "default %d", l->io_weight);
			return jobcg_write(j, h, "io.weight", v);
		}
		/* v1 weights go from 1 to 1000 */
		snprintf(v, sizeof v, "%d", l->io_weight >= 10 ?
		    l->io_weight / 10 : 1);
		if (jobcg_write(j, h, "blkio.bfq.weight", v) == 0)
			return 0;
		return jobcg_write(j, h, "blkio.weight", v);
	default:
		return 0;
	}
}

/* Make the job's cgroup in hierarchy h; -1 with errno if not. */
static int
jobcg_make(struct jobcg *j, enum cgroup_hier h)
{
	int	rc;

	/* a v1 memory cgroup takes long enough to make for SIGCHLD to come */
	while ((rc = mkdirat(cgroup_tree(h, NULL), j->name, 0755)) == -1 &&
	    errno == EINTR)
		;
	/*
	 * EEXIST too: the same attempt of a job cannot run twice, and the
	 * refusal puts the job back for a fresh attempt with another name.
	 */
	if (rc == -1)
		return -1;
	j->in[h] = 1;
	return 0;
}

/* Remove the job's cgroups; 0 when all are gone. */
static int
jobcg_remove(struct jobcg *j)
{
	enum cgroup_hier	h;
	int		left = 0, rc;

	for (h = 0; h < CG_COUNT; h++) {
		if (!j->in[h])
			continue;
		while ((rc = unlinkat(cgroup_tree(h, NULL), j->name,
		    AT_REMOVEDIR)) == -1 && errno == EINTR)
			;
		if (rc == 0 || errno == ENOENT)
			j->in[h] = 0;
		else
			left++;
	}
	return left == 0 ? 0 : -1;
}

/* Free a job's cgroup record (its cgroups are gone or given up). */
static void
jobcg_release(struct jobcg *j)
{
	enum cgroup_hier	h;

	for (h = 0; h < CG_COUNT; h++)
		if (j->procs[h] != -1)
			close(j->procs[h]);
	if (j->events != -1)
		close(j->events);
	free(j);
}

/*
 * Make a job's cgroups, named from name (a job id and attempt), with the
 * limits of l.  NULL with err if it cannot: the job must not run without.
 */
struct jobcg *
jobcg_new(const char *name, const struct job_limits *l, char *err,
    size_t errlen)
{
	struct jobcg		*j;
	enum limit_kind		 kind;
	enum cgroup_hier	 h;
	int			 saved;
	size_t			 i;

	j = xcalloc(1, sizeof *j);
	snprintf(j->name, sizeof j->name, "%s", name);
	for (i = 0; j->name[i] != '\0'; i++)
		if (j->name[i] == '/' || j->name[i] == '\n')
			j->name[i] = '_';
	for (h = 0; h < CG_COUNT; h++)
		j->procs[h] = -1;
	j->events = j->wd = -1;
	if (jobcg_make(j, CG_V2) == -1)
		goto fail;
	for (kind = 0; kind < LIMIT_LEFTOVERS; kind++) {
		if (!(l->set & (1U << kind)) ||
		    (h = cgroup_where(kind)) == CG_COUNT)
			continue;
		if (!j->in[h] && jobcg_make(j, h) == -1)
			goto fail;
		/* v1 memory+swap is one limit: write memory's first */
		if ((kind == LIMIT_SWAP && h == CG_MEMORY &&
		    jobcg_limit(j, h, l, LIMIT_MEMORY) == -1) ||
		    jobcg_limit(j, h, l, kind) == -1) {
			saved = errno;
			snprintf(err, errlen, "cgroup: %s (%s): %s",
			    limits_name(kind), l->at[kind], strerror(saved));
			goto undo;
		}
	}
	for (h = 0; h < CG_COUNT; h++)
		if (j->in[h] && (j->procs[h] = jobcg_open(j, h,
		    "cgroup.procs", O_WRONLY)) == -1)
			goto fail;
	return j;
fail:
	saved = errno;
	snprintf(err, errlen, "cgroup %s/%s: %s", jobcg_base(), j->name,
	    strerror(saved));
undo:
	jobcg_remove(j);
	jobcg_release(j);
	errno = saved;
	return NULL;
}

/* The cgroup.procs files the child writes itself into; their count. */
int
jobcg_procs(const struct jobcg *j, int *fds, int max)
{
	enum cgroup_hier	h;
	int		n = 0;

	for (h = 0; h < CG_COUNT && n < max; h++)
		if (j->procs[h] != -1)
			fds[n++] = j->procs[h];
	return n;
}

/* The child has joined: the agent needs the procs files no more. */
void
jobcg_started(struct jobcg *j)
{
	enum cgroup_hier	h;

	for (h = 0; h < CG_COUNT; h++)
		if (j->procs[h] != -1) {
			close(j->procs[h]);
			j->procs[h] = -1;
		}
}

/* 1 if any process is still in the job's cgroup. */
static int
jobcg_populated(struct jobcg *j)
{
	char	buf[256];
	ssize_t	n;

	if (!j->in[CG_V2])
		return 0;
	/* opened only once a job leaves something behind */
	if (j->events == -1 && (j->events = jobcg_open(j, CG_V2,
	    "cgroup.events", O_RDONLY)) == -1)
		return 0;
	if ((n = pread(j->events, buf, sizeof buf - 1, 0)) <= 0)
		return 0;
	buf[n] = '\0';
	return cgroup_keyed(buf, "populated") == 1;
}

/*
 * Signal every process of the job.  SIGKILL goes through cgroup.kill,
 * which also stops forks in flight; without it (before Linux 5.14) the
 * cgroup is frozen while each member is killed, so none forks meanwhile.
 */
void
jobcg_signal(struct jobcg *j, int sig)
{
	char	 buf[8192], *p, *end;
	int	 fd, frozen = 0;
	ssize_t	 n;
	long	 pid;

	if (!j->in[CG_V2])
		return;
	if (sig == SIGKILL && jobcg_write(j, CG_V2, "cgroup.kill", "1") == 0)
		return;
	if (sig == SIGKILL)
		frozen = jobcg_write(j, CG_V2, "cgroup.freeze", "1") == 0;
	if ((fd = jobcg_open(j, CG_V2, "cgroup.procs", O_RDONLY)) != -1) {
		while ((n = read(fd, buf, sizeof buf - 1)) > 0) {
			buf[n] = '\0';
			for (p = buf; *p != '\0'; p = end) {
				pid = strtol(p, &end, 10);
				if (end == p)
					break;
				if (pid > 0 && kill((pid_t)pid, sig) == -1 &&
				    errno != ESRCH)
					log_warn("cgroup: kill %d to %ld", sig,
					    pid);
				while (*end == '\n')
					end++;
			}
		}
		close(fd);
	}
	if (frozen)
		jobcg_write(j, CG_V2, "cgroup.freeze", "0");
}

/*
 * Call cb(arg) once the job's cgroup is empty and return 0; return 1
 * (and call nothing) if it is empty already.
 */
int
jobcg_on_empty(struct jobcg *j, void (*cb)(void *), void *arg)
{
	char	*path;

	if (!jobcg_populated(j))
		return 1;
	if (inotify_fd == -1) {
		if ((inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) ==
		    -1)
			fatal("cgroup: inotify_init1");
		ev_io_init(&inotify_io, jobcg_on_inotify, inotify_fd, EV_READ);
		ev_io_start(EV_DEFAULT_ &inotify_io);
		ev_unref(EV_DEFAULT);	/* a watch keeps nothing running */
	}
	if (j->wd == -1) {
		xasprintf(&path, "%s/%s/cgroup.events", jobcg_base(),
		    j->name);
		j->wd = inotify_add_watch(inotify_fd, path, IN_MODIFY);
		free(path);
		if (j->wd == -1) {
			log_warn("cgroup: inotify_add_watch %s", j->name);
			return 1;
		}
		j->next = watched;
		watched = j;
	}
	j->empty_cb = cb;
	j->empty_arg = arg;
	/* it may have emptied before the watch was there */
	if (!jobcg_populated(j)) {
		jobcg_unwatch(j);
		return 1;
	}
	return 0;
}

/* Stop waiting for the job's cgroup to empty. */
static void
jobcg_unwatch(struct jobcg *j)
{
	struct jobcg	**pp;

	if (j->wd == -1)
		return;
	for (pp = &watched; *pp != NULL; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	inotify_rm_watch(inotify_fd, j->wd);
	j->wd = -1;
}

/* The number after key in the file name of the job's cgroup in h, or -1. */
static long long
jobcg_stat(const struct jobcg *j, enum cgroup_hier h, const char *name,
    const char *key)
{
	char	 buf[4096], path[PATH_MAX];

	if (!j->in[h] || cgroup_read(cgroup_tree(h, NULL), jobcg_path(j, name,
	    path, sizeof path), buf, sizeof buf) == -1)
		return -1;
	return key ? cgroup_keyed(buf, key) : strtoll(buf, NULL, 10);
}

/* What the kernel counted for the job; -1 for what it did not count. */
void
jobcg_usage(const struct jobcg *j, struct job_usage *u)
{
	enum cgroup_hier	h;
	char			buf[4096], path[PATH_MAX];

	/* one read for both figures */
	u->cpu_user_us = u->cpu_system_us = -1;
	if (cgroup_read(cgroup_tree(CG_V2, NULL), jobcg_path(j, "cpu.stat",
	    path, sizeof path), buf, sizeof buf) == 0) {
		u->cpu_user_us = cgroup_keyed(buf, "user_usec");
		u->cpu_system_us = cgroup_keyed(buf, "system_usec");
	}
	u->memory_peak = u->oom_kills = u->tasks_peak = -1;
	if (cgroup_in_v2(LIMIT_MEMORY)) {
		u->memory_peak = jobcg_stat(j, CG_V2, "memory.peak", NULL);
		u->oom_kills = jobcg_stat(j, CG_V2, "memory.events",
		    "oom_kill");
	} else if (j->in[CG_MEMORY]) {
		u->memory_peak = jobcg_stat(j, CG_MEMORY,
		    "memory.max_usage_in_bytes", NULL);
		u->oom_kills = jobcg_stat(j, CG_MEMORY, "memory.oom_control",
		    "oom_kill");
	}
	h = cgroup_in_v2(LIMIT_TASKS) ? CG_V2 : CG_PIDS;
	if (j->in[h])
		u->tasks_peak = jobcg_stat(j, h, "pids.peak", NULL);
}

/* Try again to remove the cgroups of jobs whose last process lingered. */
static void
jobcg_on_dying(EV_P_ ev_timer *w, int revents)
{
	struct jobcg	**pp, *j;

	for (pp = &dying; (j = *pp) != NULL;) {
		if (jobcg_populated(j) && j->tries % 10 == 0)
			jobcg_signal(j, SIGKILL);
		if (jobcg_remove(j) == 0 || --j->tries <= 0) {
			if (j->tries <= 0)
				log_warn("cgroup: cannot remove %s/%s: still "
				    "busy; left in place", jobcg_base(),
				    j->name);
			*pp = j->next;
			jobcg_release(j);
		} else
			pp = &j->next;
	}
	if (dying == NULL)
		ev_timer_stop(EV_A_ w);
}

/*
 * The handler has exited: if nothing else is in the job's cgroup, read
 * what the kernel counted into u, remove the cgroups, free j and return
 * 1.  Else return 0 and change nothing.  The removal is the test: the
 * kernel refuses to remove a cgroup that has processes, and one system
 * call less per job is worth it.
 */
int
jobcg_done(struct jobcg *j, struct job_usage *u)
{
	int	rc;

	jobcg_usage(j, u);
	while ((rc = unlinkat(cgroup_tree(CG_V2, NULL), j->name,
	    AT_REMOVEDIR)) == -1 && errno == EINTR)
		;
	if (rc == -1 && errno == EBUSY)
		return 0;
	if (rc == 0 || errno == ENOENT)
		j->in[CG_V2] = 0;
	jobcg_free(j);
	return 1;
}

/*
 * The run is over: kill whatever is left and remove the cgroups, now or,
 * if the kernel is still taking the last processes away, a little later.
 */
void
jobcg_free(struct jobcg *j)
{
	jobcg_unwatch(j);
	jobcg_started(j);
	if (j->in[CG_V2] && jobcg_populated(j))
		jobcg_signal(j, SIGKILL);
	if (jobcg_remove(j) == 0) {
		jobcg_release(j);
		return;
	}
	j->tries = RMDIR_TRIES;
	j->next = dying;
	dying = j;
	if (!ev_is_active(&dying_timer)) {
		ev_timer_init(&dying_timer, jobcg_on_dying, 0.1, 0.1);
		ev_timer_start(EV_DEFAULT_ &dying_timer);
		ev_unref(EV_DEFAULT);
	}
}

