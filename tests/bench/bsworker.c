/*
 * bsworker.c: the beanstalkd peer of the throughput benchmark, a minimal
 * worker of ours.  It reserves a job, runs PROG with the job body on a pipe
 * on its stdin and a pipe on its stdout read to EOF, reaps it, and deletes
 * the job; it exits when no job is ready ("reserve-with-timeout 0").
 *
 *   bsworker unix:/path/to/socket | HOST:PORT  PROG [ARG...]
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char	buf[1 << 20];
static size_t	have;
static int	s;

/* Read until buf holds a line; return its length with the \r\n. */
static size_t
line(void)
{
	char	*e;
	ssize_t	 n;

	while ((e = memmem(buf, have, "\r\n", 2)) == NULL) {
		n = read(s, buf + have, sizeof buf - have);
		if (n <= 0) {
			fprintf(stderr, "bsworker: connection lost\n");
			exit(1);
		}
		have += (size_t)n;
	}
	return (size_t)(e - buf) + 2;
}

static void
consume(size_t n)
{
	memmove(buf, buf + n, have - n);
	have -= n;
}

static void
need(size_t n)
{
	ssize_t	r;

	while (have < n) {
		r = read(s, buf + have, sizeof buf - have);
		if (r <= 0) {
			fprintf(stderr, "bsworker: connection lost\n");
			exit(1);
		}
		have += (size_t)r;
	}
}

static void
say(const char *msg)
{
	if (write(s, msg, strlen(msg)) != (ssize_t)strlen(msg)) {
		perror("bsworker: write");
		exit(1);
	}
}

static int
run(char **prog, const char *body, size_t len)
{
	char	*envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin",
	    "HOME=/root", "LANG=C.UTF-8", NULL };
	char	 out[65536];
	int	 in[2], o[2], st;
	pid_t	 pid;
	ssize_t	 n;

	if (pipe2(in, O_CLOEXEC) == -1 || pipe2(o, O_CLOEXEC) == -1)
		return -1;
	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		if (dup2(in[0], 0) == -1 || dup2(o[1], 1) == -1)
			_exit(75);
		execve(prog[0], prog, envp);
		_exit(75);
	}
	close(in[0]);
	close(o[1]);
	n = write(in[1], body, len);	/* small: fits the pipe */
	(void)n;
	close(in[1]);
	while ((n = read(o[0], out, sizeof out)) > 0 ||
	    (n == -1 && errno == EINTR))
		;
	close(o[0]);
	while (waitpid(pid, &st, 0) == -1 && errno == EINTR)
		;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	char		 cmd[64], *colon;
	unsigned long	 id, bytes;
	size_t		 l;

	if (argc < 3) {
		fprintf(stderr, "usage: bsworker ADDR PROG [ARG...]\n");
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	if (strncmp(argv[1], "unix:", 5) == 0) {
		struct sockaddr_un	sun = { .sun_family = AF_UNIX };

		strncpy(sun.sun_path, argv[1] + 5, sizeof sun.sun_path - 1);
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&sun, sizeof sun) == -1) {
			perror(argv[1]);
			return 1;
		}
	} else {
		struct sockaddr_in	sin = { .sin_family = AF_INET };
		int			one = 1;

		if ((colon = strrchr(argv[1], ':')) == NULL)
			return 64;
		*colon = '\0';
		sin.sin_port = htons((unsigned short)atoi(colon + 1));
		inet_pton(AF_INET, argv[1], &sin.sin_addr);
		s = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (connect(s, (struct sockaddr *)&sin, sizeof sin) == -1) {
			perror(argv[1]);
			return 1;
		}
	}
	for (;;) {
		say("reserve-with-timeout 0\r\n");
		l = line();
		if (strncmp(buf, "TIMED_OUT", 9) == 0)
			return 0;
		if (sscanf(buf, "RESERVED %lu %lu", &id, &bytes) != 2) {
			fprintf(stderr, "bsworker: %.*s", (int)l, buf);
			return 1;
		}
		consume(l);
		need(bytes + 2);
		if (run(argv + 2, buf, bytes) == -1) {
			fprintf(stderr, "bsworker: handler failed\n");
			return 1;
		}
		consume(bytes + 2);
		snprintf(cmd, sizeof cmd, "delete %lu\r\n", id);
		say(cmd);
		l = line();
		if (strncmp(buf, "DELETED", 7) != 0) {
			fprintf(stderr, "bsworker: %.*s", (int)l, buf);
			return 1;
		}
		consume(l);
	}
}
