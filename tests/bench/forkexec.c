/*
 * forkexec.c: the baseline for the dispatch-throughput benchmarks.
 *
 *   forkexec N PARALLEL JOBFILE PROG [ARG...]
 *
 * Runs PROG N times, PARALLEL at a time.  Each run gets the contents of
 * JOBFILE (the job JSON) written to a pipe on its stdin, a pipe on its
 * stdout that is read to EOF, and an environment of the same shape as the
 * one dispatchd gives a handler.  This is the least any job runner must do
 * per job: fork, exec, feed stdin, drain stdout, reap.  Prints
 * "jobs N seconds S rate R" with S from the first fork to the last reap.
 */
#define _GNU_SOURCE
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXPAR	64

struct slot {
	pid_t	pid;
	int	out;		/* read end of the child's stdout, -1 when free */
};

static char	 job[65536];
static size_t	 joblen;
static char	**prog;
static char	*envp[] = {
	"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8",
	"DISPATCH_JOB_ID=0123456789abcdef0123456789abcdef",
	"DISPATCH_EVENT=bench.run",
	"DISPATCH_EVENT_ID=0123456789abcdef0123456789abcdef",
	"DISPATCH_HANDLER=bench", "DISPATCH_ATTEMPT=1",
	"DISPATCH_MAX_ATTEMPTS=5", NULL
};

static double
now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
start(struct slot *s)
{
	int	in[2], out[2];
	pid_t	pid;
	size_t	off = 0;
	ssize_t	n;

	if (pipe2(in, O_CLOEXEC) == -1 || pipe2(out, O_CLOEXEC) == -1) {
		perror("pipe2");
		exit(1);
	}
	pid = fork();
	if (pid == -1) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		if (dup2(in[0], 0) == -1 || dup2(out[1], 1) == -1)
			_exit(75);
		execve(prog[0], prog, envp);
		_exit(75);
	}
	close(in[0]);
	close(out[1]);
	while (off < joblen) {		/* the job JSON fits the pipe */
		n = write(in[1], job + off, joblen - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			break;		/* EPIPE: the handler did not read */
		off += (size_t)n;
	}
	close(in[1]);
	s->pid = pid;
	s->out = out[0];
}

/* The stdout pipe is readable: drain it; at EOF reap the child. */
static int
service(struct slot *s)
{
	char	buf[65536];
	ssize_t	n;
	int	st;

	n = read(s->out, buf, sizeof buf);
	if (n > 0 || (n == -1 && errno == EINTR))
		return 0;
	close(s->out);
	s->out = -1;
	while (waitpid(s->pid, &st, 0) == -1 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "forkexec: handler failed (status %d)\n", st);
		exit(1);
	}
	return 1;
}

int
main(int argc, char **argv)
{
	struct slot	slots[MAXPAR];
	struct pollfd	pfd[MAXPAR];
	long		n, par, started = 0, done = 0;
	double		t0, t1;
	int		i, fd;
	ssize_t		r;

	if (argc < 5) {
		fprintf(stderr, "usage: forkexec N PARALLEL JOBFILE PROG "
		    "[ARG...]\n");
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	n = atol(argv[1]);
	par = atol(argv[2]);
	if (par < 1 || par > MAXPAR || n < 1)
		return 64;
	if ((fd = open(argv[3], O_RDONLY)) == -1 ||
	    (r = read(fd, job, sizeof job)) < 0) {
		perror(argv[3]);
		return 1;
	}
	joblen = (size_t)r;
	close(fd);
	prog = argv + 4;
	for (i = 0; i < par; i++)
		slots[i].out = -1;
	t0 = now();
	while (done < n) {
		int	k = 0;

		for (i = 0; i < par; i++) {
			if (slots[i].out == -1 && started < n) {
				start(&slots[i]);
				started++;
			}
			if (slots[i].out != -1) {
				pfd[k].fd = slots[i].out;
				pfd[k].events = POLLIN;
				k++;
			}
		}
		if (poll(pfd, (nfds_t)k, -1) == -1 && errno != EINTR) {
			perror("poll");
			return 1;
		}
		for (i = 0; i < par; i++) {
			int	j;

			if (slots[i].out == -1)
				continue;
			for (j = 0; j < k; j++)
				if (pfd[j].fd == slots[i].out)
					break;
			if (j < k && pfd[j].revents != 0 && service(&slots[i]))
				done++;
		}
	}
	t1 = now();
	printf("jobs %ld seconds %.6f rate %.1f\n", n, t1 - t0,
	    (double)n / (t1 - t0));
	return 0;
}
