/*
 * state.c: what must outlive a crash of the agent, kept in a small file in
 * its runtime directory: the token of this life (written to the heartbeat
 * key, so a restart can tell its own previous life from another live agent
 * of the same name) and the process groups of the running handlers (so a
 * restart can make sure they are gone before their jobs are reclaimed).
 * Each group is recorded with its leader's start time, so a recycled pid
 * is never signalled.
 *
 * A group is appended as the handler starts (one write, no rename: this is
 * on every job's path); the file is rewritten whole, with only the groups
 * still running, when it grows long, and at a claim.
 *
 * Beside it, a lock file held for the agent's whole life: the state file
 * kills whatever groups it names, so only the one live agent of that name
 * on this host may read it.
 */
#include "config.h"

#include <sys/file.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dispatchd.h"

#define STATE_PREV	3	/* lives remembered until a claim succeeds */
#define STATE_SLACK	10	/* ticks between our clock read and the clone */
#define STATE_LINES_MAX	4096	/* then the file is rewritten */

static char	*state_path;
static char	*state_token;		/* this life's */
static char	*state_tmp;
static char	 state_prev[STATE_PREV][200];	/* newest first */
static int	 state_claimed;
static int	 state_fd = -1;		/* open for appending groups */
static int	 state_lines;

/* The start time of a process (clock ticks since boot), or 0 if gone. */
unsigned long long
state_start_time(int pid)
{
	char			 path[64], buf[1024], *p;
	unsigned long long	 t = 0;
	FILE			*fp;
	size_t			 n;
	int			 field;

	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	if ((fp = fopen(path, "re")) == NULL)
		return 0;
	n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	/* the command name may hold spaces and parentheses: skip past it */
	if ((p = strrchr(buf, ')')) == NULL)
		return 0;
	for (field = 2; field < 22 && p != NULL; field++)
		p = strchr(p + 1, ' ');
	if (p != NULL)
		t = strtoull(p + 1, NULL, 10);
	return t;
}

/* Clock ticks since boot now: what /proc says a process started at. */
unsigned long long
state_ticks_now(void)
{
	struct timespec	ts;
	long		hz = sysconf(_SC_CLK_TCK);

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (unsigned long long)ts.tv_sec * (unsigned long long)hz +
	    (unsigned long long)ts.tv_nsec * (unsigned long long)hz /
	    1000000000ULL;
}

/* Kill one recorded group, unless its pid now belongs to someone else. */
static int
state_kill_group(int pgid, unsigned long long started)
{
	unsigned long long	now = state_start_time(pgid);

	/*
	 * If the leader is gone, the kernel does not hand its pid out again
	 * while the group still has members, so the group id is still ours.
	 * The start time was taken by the agent right after the clone: a
	 * few ticks of slack.
	 */
	if (now != 0 && (now + STATE_SLACK < started ||
	    now > started + STATE_SLACK))
		return 0;
	if (kill(-pgid, SIGKILL) == -1)
		return 0;
	return 1;
}

/*
 * Take the name on this host: lock dir/dispatchd-<name>.lock for as long
 * as the agent lives (the descriptor stays open; it is close-on-exec, so a
 * handler that outlives the agent does not keep it).  0 on success; -1 with
 * err set when another live agent holds it or the file cannot be made.
 */
int
state_lock(const char *dir, const char *name, char *err, size_t errlen)
{
	char	*path, pid[32];
	ssize_t	 n;
	int	 fd, len;

	xasprintf(&path, "%s/dispatchd-%s.lock", dir, name);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK) {
			n = pread(fd, pid, sizeof pid - 1, 0);
			pid[n > 0 ? n : 0] = '\0';
			pid[strcspn(pid, "\n")] = '\0';
			snprintf(err, errlen, "another agent named '%s' runs on "
			    "this host (pid %s, it holds %s): two agents must "
			    "not share a name; set [agent] name", name,
			    pid[0] != '\0' ? pid : "unknown", path);
		} else
			snprintf(err, errlen, "%s: flock: %s", path,
			    strerror(errno));
		close(fd);
		free(path);
		return -1;
	}
	/* the pid is for the message above, and for people */
	len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
	if (ftruncate(fd, 0) == -1 || pwrite(fd, pid, (size_t)len, 0) != len)
		log_warn("state: %s", path);
	free(path);
	return 0;
}

/* Remember a previous life's token, newest first, once. */
static void
state_remember(const char *tok)
{
	int	i;

	for (i = 0; i < STATE_PREV; i++)
		if (strcmp(state_prev[i], tok) == 0)
			return;
	memmove(state_prev[1], state_prev[0],
	    sizeof state_prev[0] * (STATE_PREV - 1));
	snprintf(state_prev[0], sizeof state_prev[0], "%s", tok);
}

/*
 * Open the state file for the agent called name in dir, for the life
 * with token: kill the handler groups a previous life left behind, and
 * return in prev the tokens of the previous lives that may still hold the
 * name's heartbeat, separated by
 * blanks (empty if none): the last one, and those before it that never
 * completed a claim.  Returns the number of groups killed.
 */
int
state_open(const char *dir, const char *name, const char *token, char *prev,
    size_t prevlen)
{
	FILE			*fp;
	char			 line[256], tok[200], olds[STATE_PREV][200];
	unsigned long long	 started;
	int			 pgid, killed = 0, n_olds = 0, i;

	xasprintf(&state_path, "%s/dispatchd-%s.state", dir, name);
	xasprintf(&state_tmp, "%s.tmp", state_path);
	state_token = xstrdup(token);
	prev[0] = '\0';
	if ((fp = fopen(state_path, "re")) == NULL)
		return 0;
	while (fgets(line, sizeof line, fp) != NULL) {
		if (sscanf(line, "token %199s", tok) == 1)
			state_remember(tok);
		else if (sscanf(line, "prev %199s", tok) == 1 &&
		    n_olds < STATE_PREV)
			snprintf(olds[n_olds++], sizeof olds[0], "%s", tok);
		else if (sscanf(line, "group %d %llu", &pgid, &started) == 2 &&
		    pgid > 1)
			killed += state_kill_group(pgid, started);
	}
	fclose(fp);
	/* the file's "prev" lines are older than its "token" */
	for (i = 0; i < n_olds && i + 1 < STATE_PREV; i++)
		snprintf(state_prev[i + 1], sizeof state_prev[0], "%.199s",
		    olds[i]);
	for (i = 0; i < STATE_PREV && state_prev[i][0] != '\0'; i++)
		snprintf(prev + strlen(prev), prevlen - strlen(prev), "%s%s",
		    i ? " " : "", state_prev[i]);
	return killed;
}

/* The claim succeeded: the previous lives need not be remembered. */
void
state_claim_done(void)
{
	state_claimed = 1;
}

/*
 * Write the file whole: this life's token, the previous lives' until the
 * claim is done, and the running groups (pgids[i] with started[i]); then
 * keep it open for appending.  /run is memory: no fsync.
 */
void
state_save(const int *pgids, const unsigned long long *started, size_t n)
{
	FILE	*fp;
	size_t	 i;

	if (state_path == NULL)
		return;
	if ((fp = fopen(state_tmp, "we")) == NULL) {
		log_warn("state: %s", state_tmp);
		return;
	}
	fprintf(fp, "token %s\n", state_token);
	for (i = 0; !state_claimed && i < STATE_PREV; i++)
		if (state_prev[i][0] != '\0')
			fprintf(fp, "prev %s\n", state_prev[i]);
	for (i = 0; i < n; i++)
		fprintf(fp, "group %d %llu\n", pgids[i], started[i]);
	if (fclose(fp) != 0 || rename(state_tmp, state_path) == -1) {
		log_warn("state: %s", state_path);
		return;
	}
	if (state_fd != -1)
		close(state_fd);
	state_fd = open(state_path, O_WRONLY | O_APPEND | O_CLOEXEC);
	state_lines = (int)n;
}

/*
 * Record a handler that just started.  Returns 1 when the file has grown
 * long and should be written whole again (state_save), else 0.
 */
int
state_add(int pgid, unsigned long long started)
{
	char	line[64];
	int	len;

	if (state_fd == -1)
		return 1;
	len = snprintf(line, sizeof line, "group %d %llu\n", pgid, started);
	if (write(state_fd, line, (size_t)len) != len)
		log_warn("state: %s", state_path);
	return ++state_lines > STATE_LINES_MAX;
}
