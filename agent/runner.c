/*
 * runner.c: run one handler process and report how it ended.
 *
 * The child gets its own session (so the whole process group can be
 * signalled), the job JSON on stdin from a memfd (no writer to block, and a
 * handler that never reads stdin is fine), pipes for stdout and stderr, a
 * clean environment, no inherited descriptors, its resource limits, and
 * its own user and groups (the drop is verified before exec).  Output is kept up to a
 * cap per stream and the rest is read and counted, so a chatty handler never
 * blocks on a full pipe.  On timeout the group gets SIGTERM, then SIGKILL
 * after the grace.  The run is over when the handler has been reaped and
 * its pipes are closed; a grandchild that holds the pipes open gets a short
 * drain and is then killed with the rest of the group.
 *
 * Where the agent has cgroups (cgroup.c), the handler joins its job's
 * cgroup before exec and every signal goes to the whole cgroup, so a
 * child that left the session (setsid, a double fork) is reached too.
 * When the handler exits and others are still in its cgroup, they get
 * SIGTERM and, after the grace, the kill (leftovers = kill), or the run
 * goes on until they are done or the timeout (leftovers = wait); the run
 * is over when the cgroup is empty and the pipes are closed.
 *
 * Without cgroups, the group is signalled through a pidfd of its leader
 * where the kernel can (Linux 6.9): the pidfd names that group itself, so
 * once the leader is reaped a signal reaches only what is left of it,
 * never a later group that got the same number.  Elsewhere kill(-pgid).
 *
 * This module knows nothing of Redis or JSON.
 */
#include "config.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "dispatchd.h"

#ifndef PIDFD_SIGNAL_PROCESS_GROUP
#define PIDFD_SIGNAL_PROCESS_GROUP	(1U << 2)	/* Linux 6.9 */
#endif

#define DRAIN_AFTER_EXIT	1.0	/* seconds to wait for pipe EOF */
#define READ_CHUNK		65536

/* One captured stream. */
struct capture {
	struct run	*run;
	int		 fd;
	char		*buf;
	size_t		 len;
	size_t		 size;		/* allocated, grows up to cap */
	size_t		 cap;
	uint64_t	 total;
	ev_io		 io;
};

/* One running handler. */
struct run {
	pid_t		 pid;		/* also the process group */
	int		 pidfd;		/* the leader's, or -1 */
	int		 status_fd;	/* child's setup error report */
	int		 reaped;
	int		 wstatus;
	int		 timed_out;
	int		 stopped;
	int64_t		 started_ms;
	int64_t		 started_mono;
	int64_t		 ended_mono;
	int64_t		 kill_grace_ms;
	struct jobcg	*cg;		/* its cgroup, or NULL */
	int		 leftovers_wait;
	int		 leftovers;	/* something outlived the handler */
	int		 cg_empty;	/* nothing is left in the cgroup */
	struct job_usage usage;		/* what the kernel counted */
	struct capture	 out;
	struct capture	 err;
	ev_child	 child;
	ev_timer	 timeout;
	ev_timer	 grace;
	ev_timer	 drain;
	run_done_cb	 done;
	void		*arg;
};

/* What the child writes to the status pipe when set-up fails. */
struct setup_report {
	int	stage;			/* enum setup_stage */
	int	error;
};

/* The steps of the child's set-up that can fail, for the error text. */
enum setup_stage {
	STAGE_CGROUP = 1,
	STAGE_LIMITS,
	STAGE_USER,
	STAGE_CHDIR,
	STAGE_EXEC,
};

static const char *const stage_names[] = {
	"", "join cgroup", "setrlimit", "switch user", "chdir", "exec"
};

static void	 runner_finish(struct run *);

static sigset_t	 runner_reset;	/* signals a child must set to default */
static int	 runner_dumpable;	/* the agent's PR_GET_DUMPABLE */
static int	 runner_pidfd_off;	/* the kernel cannot signal by pidfd */
static pid_t	 runner_self;		/* the agent's pid, asked once */
static char	*runner_stack;		/* the children's, one at a time */
static struct jobcg *volatile runner_cloning;	/* in clone: see there */

#define CHILD_STACK	(256 * 1024)

/*
 * AddressSanitizer cannot follow a child running on a stack it does not
 * know (the clone below): sanitizer builds fork instead.
 */
#if defined(__SANITIZE_ADDRESS__)
#define RUNNER_FORK	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RUNNER_FORK	1
#endif
#endif

/* Report a set-up failure on fd to the parent and exit 75 (tempfail). */
static void __attribute__((noreturn))
runner_child_fail_to(int fd, int stage)
{
	struct setup_report	r = { stage, errno };
	ssize_t			n;

	n = write(fd, &r, sizeof r);
	(void)n;
	_exit(EXIT_TEMPFAIL);
}

/* Report a set-up failure once the status pipe is fd 3. */
static void __attribute__((noreturn))
runner_child_fail(int stage)
{
	runner_child_fail_to(3, stage);
}

/* Set one resource limit, soft and hard, if asked for. */
static int
runner_limit(int resource, rlim_t soft, rlim_t hard)
{
	struct rlimit	rl;

	rl.rlim_cur = soft;
	rl.rlim_max = hard;
	return setrlimit(resource, &rl);
}

/* The handler's resource limits (in the child). */
static int
runner_child_limits(const struct run_spec *spec)
{
	rlim_t	cpu;

	if (spec->limit_nofile > 0 && runner_limit(RLIMIT_NOFILE,
	    (rlim_t)spec->limit_nofile, (rlim_t)spec->limit_nofile) == -1)
		return -1;
	if (spec->limit_nproc > 0 && runner_limit(RLIMIT_NPROC,
	    (rlim_t)spec->limit_nproc, (rlim_t)spec->limit_nproc) == -1)
		return -1;
	if (spec->limit_as > 0 && runner_limit(RLIMIT_AS,
	    (rlim_t)spec->limit_as, (rlim_t)spec->limit_as) == -1)
		return -1;
	if (spec->limit_cpu_ms > 0) {
		/* SIGXCPU at the limit, SIGKILL a few seconds later */
		cpu = (rlim_t)((spec->limit_cpu_ms + 999) / 1000);
		if (runner_limit(RLIMIT_CPU, cpu, cpu + 5) == -1)
			return -1;
	}
	return 0;
}

/* What the child needs, passed through clone(2). */
struct child_args {
	const struct run_spec	*spec;
	int			 in_fd;
	int			 out_fd;
	int			 err_fd;
	int			 status_fd;
	int			 cg_procs[CG_COUNT];	/* to join */
	int			 n_cg_procs;
	pid_t			 parent;
};

/*
 * The child, between clone and exec.  It shares the agent's memory
 * (CLONE_VM, the agent is suspended until the exec: CLONE_VFORK), so it
 * only makes system calls and writes nothing but its own stack; the ids
 * are changed with raw system calls, because the C library's wrappers
 * would try to change them in every thread of the agent too.
 *
 * The order matters: own session and cgroups first, then the descriptors,
 * the limits,
 * the groups before the user, the parent-death signal after them (a change
 * of ids clears it), then the signal state, then exec.
 */
static int
runner_child(void *arg)
{
	const struct child_args	*a = arg;
	const struct run_spec	*spec = a->spec;
	struct sigaction	 sa;
	sigset_t		 none;
	int			 sig, status_fd = a->status_fd;

	setsid();
	/* "0" is the writer itself: a process can only move as a whole */
	for (sig = 0; sig < a->n_cg_procs; sig++)
		if (write(a->cg_procs[sig], "0", 1) != 1)
			runner_child_fail_to(status_fd, STAGE_CGROUP);
	/* move the status pipe out of the way of 0-2 before the dup2s */
	if (status_fd < 3) {
		status_fd = fcntl(status_fd, F_DUPFD_CLOEXEC, 3);
		if (status_fd == -1)
			_exit(EXIT_TEMPFAIL);
	}
	if (dup2(a->in_fd, 0) == -1 || dup2(a->out_fd, 1) == -1 ||
	    dup2(a->err_fd, 2) == -1)
		_exit(EXIT_TEMPFAIL);
	if (status_fd != 3 && (dup2(status_fd, 3) == -1 ||
	    fcntl(3, F_SETFD, FD_CLOEXEC) == -1))
		_exit(EXIT_TEMPFAIL);
	if (syscall(SYS_close_range, 4U, ~0U, 0) == -1)
		for (sig = 4; sig < 1024; sig++)
			close(sig);
	if (runner_child_limits(spec) == -1)
		runner_child_fail(STAGE_LIMITS);
	if (spec->set_user) {
		if (syscall(SYS_setgroups, (size_t)spec->n_groups,
		    spec->groups) == -1 ||
		    syscall(SYS_setresgid, spec->gid, spec->gid, spec->gid) ==
		    -1 ||
		    syscall(SYS_setresuid, spec->uid, spec->uid, spec->uid) ==
		    -1)
			runner_child_fail(STAGE_USER);
		/* verify the drop: no way back to root, ids as asked */
		if ((spec->uid != 0 && syscall(SYS_setresuid, 0, 0, 0) != -1) ||
		    getuid() != spec->uid || geteuid() != spec->uid ||
		    getgid() != spec->gid || getegid() != spec->gid) {
			errno = EPERM;
			runner_child_fail(STAGE_USER);
		}
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != a->parent)
		_exit(EXIT_TEMPFAIL);
	/*
	 * Every signal the agent ignores or catches goes back to default
	 * before the mask opens: an ignored one would survive execve, and a
	 * caught one would run the agent's handler here, in its memory,
	 * taking a signal meant for the handler (a stop of the whole cgroup).
	 */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_DFL;
	for (sig = 1; sig < NSIG; sig++)
		if (sigismember(&runner_reset, sig) == 1)
			sigaction(sig, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (chdir(spec->workdir) == -1)
		runner_child_fail(STAGE_CHDIR);
	execve(spec->argv[0], spec->argv, spec->envp);
	runner_child_fail(STAGE_EXEC);
	return 0;
}

/*
 * Note which signals the agent ignores or catches, so a child resets just
 * those, and whether the agent may dump core.  Call once every signal
 * watcher and disposition of the agent is in place.
 */
void
runner_init(void)
{
	struct sigaction	sa;
	int			sig;

	sigemptyset(&runner_reset);
	for (sig = 1; sig < NSIG; sig++)
		if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL)
			sigaddset(&runner_reset, sig);
	sigaddset(&runner_reset, SIGPIPE);
	runner_dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	runner_self = getpid();
}

/* Read what a stream has; keep up to the cap, count and drop the rest. */
static int
runner_read(struct capture *c)
{
	char	scratch[READ_CHUNK];
	ssize_t	n;
	size_t	room;

	for (;;) {
		room = c->cap - c->len;
		if (room > 0 && c->len == c->size) {
			/* most handlers print little: grow as output comes */
			c->size = c->size ? c->size * 2 : 4096;
			if (c->size > c->cap)
				c->size = c->cap;
			c->buf = xreallocarray(c->buf, c->size, 1);
		}
		if (room > 0)
			n = read(c->fd, c->buf + c->len, c->size - c->len);
		else
			n = read(c->fd, scratch, sizeof scratch);
		if (n > 0) {
			if (room > 0)
				c->len += (size_t)n;
			c->total += (uint64_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return 0;
		return -1;	/* EOF or error: the stream is done */
	}
}

/* Stop watching a stream and close it. */
static void
runner_close_capture(struct capture *c)
{
	if (c->fd == -1)
		return;
	ev_io_stop(EV_DEFAULT_ &c->io);
	close(c->fd);
	c->fd = -1;
}

/* Output arrived on stdout or stderr. */
static void
runner_on_output(EV_P_ ev_io *w, int revents)
{
	struct capture	*c = w->data;
	struct run	*r = c->run;

	if (runner_read(c) == 0)
		return;
	runner_close_capture(c);
	if (r->reaped && r->out.fd == -1 && r->err.fd == -1 &&
	    (r->cg == NULL || r->cg_empty))
		runner_finish(r);
}

/* Signal the handler's whole process group, by pidfd where possible. */
static void
runner_signal(struct run *r, int sig)
{
	if (r->cg != NULL) {
		jobcg_signal(r->cg, sig);
		return;
	}
#ifdef SYS_pidfd_send_signal
	if (r->pidfd != -1 && !runner_pidfd_off) {
		if (syscall(SYS_pidfd_send_signal, r->pidfd, sig, NULL,
		    PIDFD_SIGNAL_PROCESS_GROUP) == 0 || errno == ESRCH)
			return;
		if (errno != EINVAL && errno != ENOSYS) {
			log_warn("runner: signal %d to group %d", sig,
			    (int)r->pid);
			return;
		}
		runner_pidfd_off = 1;	/* before Linux 6.9 */
	}
#endif
	if (kill(-r->pid, sig) == -1 && errno != ESRCH)
		log_warn("runner: kill %d to group %d", sig, (int)r->pid);
}

/* The grace after SIGTERM is over. */
static void
runner_on_grace(EV_P_ ev_timer *w, int revents)
{
	struct run	*r = w->data;

	runner_signal(r, SIGKILL);
}

/* Begin the end: SIGTERM the group now, SIGKILL after the grace. */
static void
runner_terminate(struct run *r)
{
	if (ev_is_active(&r->grace) || (r->reaped && (r->cg == NULL ||
	    r->cg_empty)))
		return;
	runner_signal(r, SIGTERM);
	ev_timer_set(&r->grace, (double)r->kill_grace_ms / 1000.0, 0.);
	ev_timer_start(EV_DEFAULT_ &r->grace);
}

/* The handler ran out of time. */
static void
runner_on_timeout(EV_P_ ev_timer *w, int revents)
{
	struct run	*r = w->data;

	r->timed_out = 1;
	runner_terminate(r);
}

/* Something left in the group still holds the pipes: kill it, finish. */
static void
runner_on_drain(EV_P_ ev_timer *w, int revents)
{
	struct run	*r = w->data;

	runner_signal(r, SIGKILL);
	if (r->out.fd != -1)
		runner_read(&r->out);
	if (r->err.fd != -1)
		runner_read(&r->err);
	runner_close_capture(&r->out);
	runner_close_capture(&r->err);
	runner_finish(r);
}

/* Nothing is left in the job's cgroup (or there is none): end the run. */
static void
runner_on_empty(void *arg)
{
	struct run	*r = arg;

	r->cg_empty = 1;
	/* what outlived the handler was part of the run: so is its time */
	if (r->leftovers)
		r->ended_mono = util_mono_ms();
	ev_timer_stop(EV_DEFAULT_ &r->timeout);
	ev_timer_stop(EV_DEFAULT_ &r->grace);
	if (r->out.fd == -1 && r->err.fd == -1) {
		runner_finish(r);
		return;
	}
	/* held open from outside the cgroup, or by a group without one */
	ev_timer_set(&r->drain, DRAIN_AFTER_EXIT, 0.);
	ev_timer_start(EV_DEFAULT_ &r->drain);
}

/*
 * The handler process was reaped.  What it left in its cgroup is told to
 * go, or, with leftovers = wait, waited for within the timeout.
 */
static void
runner_on_child(EV_P_ ev_child *w, int revents)
{
	struct run	*r = w->data;

	ev_child_stop(EV_A_ w);
	r->reaped = 1;
	r->wstatus = w->rstatus;
	r->ended_mono = util_mono_ms();
	if (r->cg != NULL && jobcg_done(r->cg, &r->usage))
		r->cg = NULL;		/* gone with nothing left in it */
	if (r->cg == NULL || jobcg_on_empty(r->cg, runner_on_empty, r)) {
		runner_on_empty(r);
		return;
	}
	r->leftovers = 1;
	if (!r->leftovers_wait && !r->stopped && !r->timed_out) {
		ev_timer_stop(EV_A_ &r->grace);
		runner_terminate(r);
	}
}

/*
 * Report and free.  Whatever the handler left in its process group is
 * killed: a job's processes do not outlive the job.
 */
static void
runner_finish(struct run *r)
{
	struct run_result	 res;
	struct setup_report	 rep;
	ssize_t			 n;

	memset(&res, 0, sizeof res);
	ev_timer_stop(EV_DEFAULT_ &r->drain);
	ev_timer_stop(EV_DEFAULT_ &r->timeout);
	ev_timer_stop(EV_DEFAULT_ &r->grace);
	if (r->cg != NULL) {
		jobcg_usage(r->cg, &r->usage);
		jobcg_free(r->cg);	/* and whatever is in it */
		r->cg = NULL;
	} else
		runner_signal(r, SIGKILL);
	res.usage = r->usage;
	if (r->pidfd != -1)
		close(r->pidfd);
	n = read(r->status_fd, &rep, sizeof rep);
	close(r->status_fd);
	if (n == (ssize_t)sizeof rep && rep.stage >= STAGE_CGROUP &&
	    rep.stage <= STAGE_EXEC) {
		res.setup_errno = rep.error;
		res.setup_stage = stage_names[rep.stage];
	}
	if (WIFEXITED(r->wstatus)) {
		res.exited = 1;
		res.code = WEXITSTATUS(r->wstatus);
	} else if (WIFSIGNALED(r->wstatus)) {
		res.signaled = 1;
		res.signo = WTERMSIG(r->wstatus);
	}
	res.timed_out = r->timed_out;
	res.stopped = r->stopped;
	res.started_ms = r->started_ms;
	res.duration_ms = r->ended_mono - r->started_mono;
	res.out = r->out.buf;
	res.out_len = r->out.len;
	res.err = r->err.buf;
	res.err_len = r->err.len;
	res.output_bytes = r->out.total + r->err.total;
	res.truncated = r->out.total > r->out.len ||
	    r->err.total > r->err.len;
	res.leftovers = r->leftovers;
	r->done(&res, r->arg);
	free(r->out.buf);
	free(r->err.buf);
	free(r);
}

/* Set up one capture on the read end of a pipe. */
static void
runner_watch(struct run *r, struct capture *c, int fd, size_t cap)
{
	c->run = r;
	c->fd = fd;
	c->cap = cap;
	/* a pipe's read end has no other status flag to keep */
	fcntl(fd, F_SETFL, O_NONBLOCK);
	ev_io_init(&c->io, runner_on_output, fd, EV_READ);
	c->io.data = c;
	ev_io_start(EV_DEFAULT_ &c->io);
}

/* Put the input in an anonymous file positioned at its start. */
static int
runner_input(const char *input, size_t len)
{
	int	fd;
	ssize_t	n;
	off_t	off = 0;

	if ((fd = memfd_create("dispatchd-job", MFD_CLOEXEC)) == -1)
		return -1;
	/* pwrite leaves the offset at 0, where the handler starts reading */
	while (len > 0) {
		if ((n = pwrite(fd, input, len, off)) == -1) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		input += n;
		len -= (size_t)n;
		off += n;
	}
	return fd;
}

/*
 * Start a handler.  done is called once when it is over, with a result
 * whose buffers live only for that call.  NULL with err on failure to
 * start (no descriptors, no processes).
 */
struct run *
runner_start(const struct run_spec *spec, run_done_cb done, void *arg,
    char *err, size_t errlen)
{
	struct run		*r;
	struct child_args	 ca;
	int		 in_fd, out[2] = { -1, -1 }, errp[2] = { -1, -1 };
	int		 st[2] = { -1, -1 }, saved, pidfd = -1;
	sigset_t	 all, old;
	pid_t		 pid, parent = runner_self ? runner_self : getpid();
	struct jobcg	*cg = NULL;

	if (cgroup_on() && spec->limits != NULL &&
	    (cg = jobcg_new(spec->cgroup_name, spec->limits, err, errlen)) ==
	    NULL)
		return NULL;
	if ((in_fd = runner_input(spec->input, spec->input_len)) == -1) {
		snprintf(err, errlen, "memfd: %s", strerror(errno));
		if (cg != NULL)
			jobcg_free(cg);
		return NULL;
	}
	if (pipe2(out, O_CLOEXEC) == -1 || pipe2(errp, O_CLOEXEC) == -1 ||
	    pipe2(st, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (runner_stack == NULL) {
		runner_stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
		if (runner_stack == MAP_FAILED)
			fatal("runner: mmap");
	}
	ca.spec = spec;
	ca.in_fd = in_fd;
	ca.out_fd = out[1];
	ca.err_fd = errp[1];
	ca.status_fd = st[1];
	ca.n_cg_procs = cg ? jobcg_procs(cg, ca.cg_procs, CG_COUNT) : 0;
	ca.parent = parent;
	/*
	 * No signal handler of the agent may run in the child.  The child
	 * borrows the agent's memory until it execs: far cheaper than
	 * copying the page tables with fork, and the agent waits meanwhile.
	 */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	/*
	 * Under valgrind the child is a copy running on its own stack, and
	 * a child that fails to exec would report the cgroup record, known
	 * only to this frame, as leaked: a static holds it meanwhile.
	 */
	runner_cloning = cg;
#ifdef RUNNER_FORK
	if ((pid = fork()) == 0)
		runner_child(&ca);
#ifdef SYS_pidfd_open
	/* not reaped before the loop runs again: the pid is still ours */
	if (pid > 0 && !runner_pidfd_off)
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
#else
	/* the pidfd comes with the clone, at no cost (Linux 5.2) */
	pid = clone(runner_child, runner_stack + CHILD_STACK, CLONE_VM |
	    CLONE_VFORK | (runner_pidfd_off ? 0 : CLONE_PIDFD) | SIGCHLD, &ca,
	    &pidfd);
	if (pid == -1 && errno == EINVAL && !runner_pidfd_off) {
		runner_pidfd_off = 1;
		pidfd = -1;
		pid = clone(runner_child, runner_stack + CHILD_STACK,
		    CLONE_VM | CLONE_VFORK | SIGCHLD, &ca);
	}
#endif
	saved = errno;
	runner_cloning = NULL;
	/*
	 * A change of ids marks the memory the child shared with us as not
	 * dumpable, for as long as the child had it: until its exec, which
	 * has happened now.  Put the agent's own setting back.
	 */
	if (spec->set_user && runner_dumpable > 0)
		prctl(PR_SET_DUMPABLE, runner_dumpable, 0, 0, 0);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid == -1) {
		snprintf(err, errlen, "clone: %s", strerror(saved));
		goto fail;
	}
	close(in_fd);
	close(out[1]);
	close(errp[1]);
	close(st[1]);
	fcntl(st[0], F_SETFL, O_NONBLOCK);
	if (cg != NULL)
		jobcg_started(cg);

	r = xcalloc(1, sizeof *r);
	r->pid = pid;
	r->pidfd = pidfd;	/* close-on-exec, as the kernel makes it */
	r->status_fd = st[0];
	r->started_ms = util_wall_ms();
	r->started_mono = util_mono_ms();
	r->kill_grace_ms = spec->kill_grace_ms;
	r->cg = cg;
	r->usage.cpu_user_us = r->usage.cpu_system_us = -1;
	r->usage.memory_peak = r->usage.oom_kills = r->usage.tasks_peak = -1;
	r->leftovers_wait = spec->limits != NULL &&
	    spec->limits->leftovers_wait;
	r->done = done;
	r->arg = arg;
	runner_watch(r, &r->out, out[0], spec->output_max);
	runner_watch(r, &r->err, errp[0], spec->output_max);
	ev_child_init(&r->child, runner_on_child, pid, 0);
	r->child.data = r;
	ev_child_start(EV_DEFAULT_ &r->child);
	ev_timer_init(&r->timeout, runner_on_timeout,
	    (double)spec->timeout_ms / 1000.0, 0.);
	r->timeout.data = r;
	ev_timer_start(EV_DEFAULT_ &r->timeout);
	ev_init(&r->grace, runner_on_grace);
	r->grace.data = r;
	ev_init(&r->drain, runner_on_drain);
	r->drain.data = r;
	return r;
fail:
	if (cg != NULL)
		jobcg_free(cg);
	close(in_fd);
	if (out[0] != -1) {
		close(out[0]);
		close(out[1]);
	}
	if (errp[0] != -1) {
		close(errp[0]);
		close(errp[1]);
	}
	if (st[0] != -1) {
		close(st[0]);
		close(st[1]);
	}
	return NULL;
}

/* Stop a handler early (lost lease, drain): SIGTERM, grace, SIGKILL. */
void
runner_stop(struct run *r)
{
	r->stopped = 1;
	runner_terminate(r);
}

/* The handler's process id (and process group). */
int
runner_pid(const struct run *r)
{
	return (int)r->pid;
}
