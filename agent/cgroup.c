/*
 * cgroup.c: the agent's subtree of cgroups, where jobs get theirs.
 *
 * The agent keeps its jobs in a subtree of its own, dispatchd.NAME.HASH,
 * made beside itself: under its own cgroup v2 (the packaged unit has
 * Delegate=yes), where it first moves itself into the leaf "agent" (a
 * cgroup with processes may not give its children controllers).  A job's
 * cgroup is job-<id>-<attempt> in that subtree, made before the handler
 * starts and removed when the run is over.
 *
 * Containment (the kill that reaches every process, "is anything left?")
 * needs only the v2 hierarchy, which hosts with the older layout mount
 * without controllers at /sys/fs/cgroup/unified.  Limits and the memory
 * and task figures need controllers: v2 ones where they are delegated,
 * else the v1 hierarchy of each controller, in a subtree of the same
 * name.  A v1 cgroup is made for a job only where the job has a limit of
 * that controller (memory also for its peak), because each costs about as
 * much as the v2 one.  Without a writable v2 hierarchy there are no job
 * cgroups at all: runner.c keeps process groups, and the mode says why.
 * jobcg.c makes, kills, reads and removes one job's cgroups.
 */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dispatchd.h"

static const char *const hier_names[CG_COUNT] = {
	"v2", "memory", "pids", "cpu", "blkio"
};

/* One hierarchy's subtree of the agent's. */
struct tree {
	char	*mount;			/* where it is mounted, or NULL */
	char	*own;			/* the agent's cgroup in it, from / */
	char	*base;			/* the subtree, a full path */
	int	 fd;			/* the subtree, open; -1: not used */
};

/* The controller of each limit: its v2 name, and its v1 hierarchy. */
static const struct {
	const char		*name;
	enum cgroup_hier	 v1;
} limit_ctl[LIMIT_LEFTOVERS] = {
	[LIMIT_MEMORY] = { "memory", CG_MEMORY },
	[LIMIT_SWAP] = { "memory", CG_MEMORY },
	[LIMIT_TASKS] = { "pids", CG_PIDS },
	[LIMIT_CPU] = { "cpu", CG_CPU },
	[LIMIT_IO] = { "io", CG_BLKIO },
};

static struct tree	 trees[CG_COUNT];
static unsigned		 v2_ctl;	/* 1 << kind, enforced through v2 */
static unsigned		 v1_ctl;	/* 1 << kind, through v1 */
static int		 on;
static char		 mode[512] = "off";
static int		 dry;		/* dispatchd -t: look, change nothing */

/* Read a small file at dir/name into buf; -1 if it cannot. */
int
cgroup_read(int dir, const char *name, char *buf, size_t size)
{
	ssize_t	n;
	int	fd;

	if ((fd = openat(dir, name, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

/* Write s to dir/name; -1 with errno if it cannot. */
int
cgroup_write(int dir, const char *name, const char *s)
{
	ssize_t	n;
	int	fd, saved;

	if ((fd = openat(dir, name, O_WRONLY | O_CLOEXEC)) == -1)
		return -1;
	while ((n = write(fd, s, strlen(s))) == -1 && errno == EINTR)
		;
	saved = errno;
	close(fd);
	errno = saved;
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* The number after "key " in a flat keyed file's text, or -1. */
long long
cgroup_keyed(const char *text, const char *key)
{
	size_t		 len = strlen(key);
	const char	*p;

	for (p = text; p != NULL && *p != '\0'; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, key, len) == 0 && p[len] == ' ')
			return strtoll(p + len + 1, NULL, 10);
	}
	return -1;
}

/* Where each hierarchy is mounted, from /proc/self/mountinfo. */
static void
cgroup_find_mounts(void)
{
	FILE		*fp;
	char		 line[4096], *sep, *fields[6], *opts, *tok, *save;
	enum cgroup_hier	 h;
	int		 n;

	if ((fp = fopen("/proc/self/mountinfo", "re")) == NULL)
		return;
	while (fgets(line, sizeof line, fp) != NULL) {
		/* id parent dev root mountpoint opts ... - type source sopts */
		if ((sep = strstr(line, " - ")) == NULL)
			continue;
		*sep = '\0';
		n = 0;
		for (tok = strtok_r(line, " ", &save); tok && n < 6;
		    tok = strtok_r(NULL, " ", &save))
			fields[n++] = tok;
		if (n < 5 || strcmp(fields[3], "/") != 0)
			continue;	/* a bind mount of a part: not ours */
		if (strncmp(sep + 3, "cgroup2 ", 8) == 0) {
			if (trees[CG_V2].mount == NULL)
				trees[CG_V2].mount = xstrdup(fields[4]);
			continue;
		}
		if (strncmp(sep + 3, "cgroup ", 7) != 0)
			continue;
		/* the super options, last, name the v1 controllers */
		if ((opts = strrchr(sep + 3, ' ')) == NULL)
			continue;
		opts[strcspn(opts, "\n")] = '\0';
		for (tok = strtok_r(opts + 1, ",", &save); tok != NULL;
		    tok = strtok_r(NULL, ",", &save))
			for (h = CG_MEMORY; h < CG_COUNT; h++)
				if (strcmp(tok, hier_names[h]) == 0 &&
				    trees[h].mount == NULL)
					trees[h].mount = xstrdup(fields[4]);
	}
	fclose(fp);
}

/* The agent's own cgroup in each hierarchy, from /proc/self/cgroup. */
static void
cgroup_find_own(void)
{
	FILE		*fp;
	char		 line[4096], *ctl, *path, *tok, *save;
	enum cgroup_hier	 h;
	size_t		 len;

	if ((fp = fopen("/proc/self/cgroup", "re")) == NULL)
		return;
	while (fgets(line, sizeof line, fp) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		/* id:controllers:path */
		if ((ctl = strchr(line, ':')) == NULL ||
		    (path = strchr(ctl + 1, ':')) == NULL)
			continue;
		*path++ = '\0';
		ctl++;
		if (*ctl == '\0') {
			/*
			 * systemd runs a delegated unit's ExecStartPre= (our
			 * own -t) in its .control child: the unit's cgroup is
			 * the one the agent will have.
			 */
			len = strlen(path);
			if (len > 9 && strcmp(path + len - 9, "/.control") == 0)
				path[len - 9] = '\0';
			free(trees[CG_V2].own);
			trees[CG_V2].own = xstrdup(path);
			continue;
		}
		for (tok = strtok_r(ctl, ",", &save); tok != NULL;
		    tok = strtok_r(NULL, ",", &save))
			for (h = CG_MEMORY; h < CG_COUNT; h++)
				if (strcmp(tok, hier_names[h]) == 0) {
					free(trees[h].own);
					trees[h].own = xstrdup(path);
				}
	}
	fclose(fp);
}

/*
 * The subtree's path in hierarchy h.  An agent already in the "agent"
 * leaf of its own subtree (it was started from a shell inside it, say)
 * takes that subtree rather than nesting another.
 */
static char *
cgroup_subtree(enum cgroup_hier h, const char *name)
{
	const struct tree	*t = &trees[h];
	char			*path, *tail;
	size_t			 len;

	xasprintf(&tail, "/%s/agent", name);
	len = strlen(t->own);
	if (len > strlen(tail) && strcmp(t->own + len - strlen(tail), tail)
	    == 0)
		xasprintf(&path, "%s%.*s", t->mount,
		    (int)(len - strlen("/agent")), t->own);
	else
		xasprintf(&path, "%s%s/%s", t->mount,
		    strcmp(t->own, "/") == 0 ? "" : t->own, name);
	free(tail);
	return path;
}

/*
 * Make directory path (its parent exists) and open it; -1 if not.  A dry
 * run opens the parent instead, if the agent could make path in it.
 */
static int
cgroup_open_dir(const char *path)
{
	char	*parent;
	int	 fd;

	if (dry) {
		parent = xstrdup(path);
		*strrchr(parent, '/') = '\0';
		fd = access(parent, W_OK) == 0 ? open(parent, O_RDONLY |
		    O_DIRECTORY | O_CLOEXEC) : -1;
		free(parent);
		return fd;
	}
	if (mkdir(path, 0755) == -1 && errno != EEXIST)
		return -1;
	return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/*
 * Give the subtree's children the v2 controllers its parent can: the
 * parent is the agent's own cgroup, which now holds no process of ours
 * (for another's processes there, the kernel refuses; we do without).
 */
static void
cgroup_v2_controllers(const char *own_path, int base)
{
	char		 have[512], word[32], procs[64];
	enum limit_kind	 kind;
	int		 own, shared;

	if ((own = open(own_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return;
	/*
	 * A dry look cannot move the agent out, so it asks the question the
	 * kernel will: does the agent's cgroup (unless the root) hold other
	 * processes, which would keep its children from getting controllers?
	 */
	snprintf(word, sizeof word, "%ld\n", (long)getpid());
	shared = dry && strcmp(trees[CG_V2].own, "/") != 0 &&
	    cgroup_read(own, "cgroup.procs", procs, sizeof procs) == 0 &&
	    strcmp(procs, word) != 0 && strcmp(procs, "") != 0;
	if (shared || cgroup_read(own, "cgroup.controllers", have,
	    sizeof have) == -1)
		have[0] = '\0';
	for (kind = 0; kind < LIMIT_LEFTOVERS; kind++) {
		/* memory and swap share a controller: enabled once */
		if (kind > 0 && strcmp(limit_ctl[kind].name,
		    limit_ctl[kind - 1].name) == 0) {
			if (v2_ctl & (1U << (kind - 1)))
				v2_ctl |= 1U << kind;
			continue;
		}
		if (strstr(have, limit_ctl[kind].name) == NULL)
			continue;
		snprintf(word, sizeof word, "+%s", limit_ctl[kind].name);
		if (dry)
			v2_ctl |= 1U << kind;	/* could be enabled */
		else {
			cgroup_write(own, "cgroup.subtree_control", word);
			if (cgroup_write(base, "cgroup.subtree_control", word) ==
			    0)
				v2_ctl |= 1U << kind;
		}
	}
	close(own);
}

/* Use v1 hierarchy h for the limits kinds, if the agent may write there. */
static void
cgroup_v1_tree(enum cgroup_hier h, const char *name, unsigned kinds)
{
	struct tree	*t = &trees[h];
	char		*path;

	if (t->mount == NULL || t->own == NULL || (v2_ctl & kinds) == kinds)
		return;
	path = cgroup_subtree(h, name);
	if ((t->fd = cgroup_open_dir(path)) == -1) {
		log_info("cgroup: no %s controller (%s: %s)", hier_names[h],
		    path, strerror(errno));
		free(path);
		return;
	}
	/* weights need the bfq scheduler's file, or the old one */
	if (h == CG_BLKIO && faccessat(t->fd, "blkio.bfq.weight", F_OK, 0) ==
	    -1 && faccessat(t->fd, "blkio.weight", F_OK, 0) == -1) {
		close(t->fd);
		t->fd = -1;
		free(path);
		return;
	}
	t->base = path;
	v1_ctl |= kinds & ~v2_ctl;
	/* swap limits need the kernel's swap accounting */
	if (h == CG_MEMORY && faccessat(t->fd, "memory.memsw.limit_in_bytes",
	    F_OK, 0) == -1)
		v1_ctl &= ~(1U << LIMIT_SWAP);
}

/* Kill and remove what a previous life of this agent left in tree h. */
static void
cgroup_sweep(enum cgroup_hier h)
{
	struct tree	*t = &trees[h];
	int		 kill_first = h == CG_V2;
	struct dirent	*de;
	DIR		*dir;
	int		 fd, i;

	if ((fd = dup(t->fd)) == -1 || (dir = fdopendir(fd)) == NULL)
		return;
	while ((de = readdir(dir)) != NULL) {
		if (strncmp(de->d_name, "job-", 4) != 0 &&
		    strncmp(de->d_name, "run-", 4) != 0)
			continue;
		if (kill_first &&
		    (fd = openat(t->fd, de->d_name, O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) != -1) {
			log_notice("cgroup: killing what a previous run left "
			    "in %s/%s", t->base, de->d_name);
			cgroup_write(fd, "cgroup.kill", "1");
			close(fd);
		}
		/* the killed take a moment to go: up to a second */
		for (i = 0; i < 100; i++) {
			if (unlinkat(t->fd, de->d_name, AT_REMOVEDIR) == 0 ||
			    errno != EBUSY)
				break;
			nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 },
			    NULL);
		}
	}
	closedir(dir);
}

/*
 * The subtree's name: dispatchd.NAME.HASH, HASH from the socket's path
 * (FNV-1a), so that two agents of one name on a host (for two Redis
 * servers, say) never meet, while a restart finds its previous life's.
 */
static char *
cgroup_tree_name(const char *agent, const char *socket)
{
	uint32_t	 hash = 2166136261u;
	const char	*p;
	char		*name;

	for (p = socket; *p != '\0'; p++)
		hash = (hash ^ (unsigned char)*p) * 16777619u;
	xasprintf(&name, "dispatchd.%s.%08x", agent, hash);
	return name;
}

/*
 * Set up at start: find the hierarchies, make the subtree, move in, and
 * clear what a previous life left.  Returns 1 if jobs get cgroups, 0 if
 * not (mode says why); want 0 is `cgroup = off`.  With check set, only
 * find out what the agent could do, for `dispatchd -t`.
 */
int
cgroup_init(const char *agent, const char *socket, int want, int check)
{
	struct tree	*t = &trees[CG_V2];
	char		 pid[32], *leaf = NULL, *own_path = NULL, *name;
	int		 agent_fd = -1;
	enum cgroup_hier	 h;
	enum limit_kind	 kind;
	unsigned	 kinds;

	if (on && !dry)
		return 1;		/* once a life */
	/* a dry look may come first: start afresh */
	for (h = 0; h < CG_COUNT; h++) {
		/* fd is 0 before the first call: base says it is open */
		if (trees[h].base != NULL && trees[h].fd != -1)
			close(trees[h].fd);
		free(trees[h].mount);
		free(trees[h].own);
		free(trees[h].base);
		memset(&trees[h], 0, sizeof trees[h]);
		trees[h].fd = -1;
	}
	v2_ctl = v1_ctl = 0;
	on = 0;
	dry = check;
	if (!want) {
		snprintf(mode, sizeof mode, "off (cgroup = off): jobs are "
		    "process groups");
		if (!check)
			log_notice("cgroup: %s", mode);
		return 0;
	}
	cgroup_find_mounts();
	cgroup_find_own();
	name = cgroup_tree_name(agent, socket);
	if (t->mount == NULL || t->own == NULL) {
		snprintf(mode, sizeof mode, "off: no cgroup v2 hierarchy is "
		    "mounted; jobs are process groups");
		goto off;
	}
	t->base = cgroup_subtree(CG_V2, name);
	xasprintf(&leaf, "%s/agent", t->base);
	if ((t->fd = cgroup_open_dir(t->base)) == -1 || (!dry &&
	    ((agent_fd = cgroup_open_dir(leaf)) == -1 ||
	    (snprintf(pid, sizeof pid, "%ld", (long)getpid()),
	    cgroup_write(agent_fd, "cgroup.procs", pid)) == -1))) {
		snprintf(mode, sizeof mode, "off: cannot make or enter %s "
		    "(%s); jobs are process groups", t->fd == -1 ? t->base :
		    leaf, strerror(errno));
		goto off;
	}
	if (agent_fd != -1)
		close(agent_fd);
	free(leaf);
	leaf = NULL;
	xasprintf(&own_path, "%s%s", t->mount, t->own);
	cgroup_v2_controllers(own_path, t->fd);
	free(own_path);
	for (h = CG_MEMORY; h < CG_COUNT; h++) {
		kinds = 0;
		for (kind = 0; kind < LIMIT_LEFTOVERS; kind++)
			if (limit_ctl[kind].v1 == h)
				kinds |= 1U << kind;
		cgroup_v1_tree(h, name, kinds);
	}
	for (h = 0; h < CG_COUNT && !dry; h++)
		if (trees[h].fd != -1)
			cgroup_sweep(h);
	on = 1;
	snprintf(mode, sizeof mode, "%s", t->base);
	if (v2_ctl != 0 || v1_ctl != 0) {
		strncat(mode, "; limits:", sizeof mode - strlen(mode) - 1);
		for (kind = 0; kind < LIMIT_LEFTOVERS; kind++)
			if ((v2_ctl | v1_ctl) & (1U << kind))
				snprintf(mode + strlen(mode), sizeof mode -
				    strlen(mode), " %s%s", limits_name(kind),
				    v1_ctl & (1U << kind) ? " (v1)" : "");
	} else
		strncat(mode, "; no controllers, so no limits", sizeof mode -
		    strlen(mode) - 1);
	if (!dry)
		log_info("cgroup: jobs in %s", mode);
	free(name);
	return 1;
off:
	free(leaf);
	if (agent_fd != -1)
		close(agent_fd);
	if (t->fd != -1) {
		close(t->fd);
		t->fd = -1;
	}
	if (!dry)
		log_notice("cgroup: %s", mode);
	free(name);
	return 0;
}

/* The agent's subtree in hierarchy h, open, or -1; and its path. */
int
cgroup_tree(enum cgroup_hier h, const char **path)
{
	if (path != NULL)
		*path = trees[h].base;
	return trees[h].fd;
}

/* 1 if kind is enforced through the v2 hierarchy. */
int
cgroup_in_v2(enum limit_kind kind)
{
	return (v2_ctl & (1U << kind)) != 0;
}

/* Where jobs run, for status and the log. */
const char *
cgroup_mode(void)
{
	return mode;
}

/* 1 if jobs get cgroups. */
int
cgroup_on(void)
{
	return on;
}

/*
 * The limits of l this host cannot enforce: "" if none, else the first's
 * "file:line: [handler NAME] key: why".  Also for `dispatchd -t`, which
 * calls cgroup_init the same way the agent does.
 */
int
cgroup_check(const struct job_limits *l, const char *handler, char *err,
    size_t errlen)
{
	enum limit_kind	kind;
	unsigned	can = v2_ctl | v1_ctl;

	for (kind = 0; kind < LIMIT_LEFTOVERS; kind++) {
		if (!(l->set & (1U << kind)))
			continue;
		if (!on) {
			snprintf(err, errlen, "%s: [handler %s] %s: cannot be "
			    "enforced: %s", l->at[kind], handler,
			    limits_name(kind), mode);
			return -1;
		}
		if (!(can & (1U << kind))) {
			snprintf(err, errlen, "%s: [handler %s] %s: cannot be "
			    "enforced: the kernel gives this agent no %s "
			    "controller", l->at[kind], handler,
			    limits_name(kind), limit_ctl[kind].name);
			return -1;
		}
	}
	if ((l->set & (1U << LIMIT_SWAP)) && (v1_ctl & (1U << LIMIT_SWAP)) &&
	    !(l->set & (1U << LIMIT_MEMORY))) {
		snprintf(err, errlen, "%s: [handler %s] memory_swap_max: needs "
		    "memory_max with the v1 memory controller this host has",
		    l->at[LIMIT_SWAP], handler);
		return -1;
	}
	return 0;
}

/* The hierarchy that enforces kind: CG_V2, a v1 one, or CG_COUNT (none). */
enum cgroup_hier
cgroup_where(enum limit_kind kind)
{
	if (v2_ctl & (1U << kind))
		return CG_V2;
	if (!(v1_ctl & (1U << kind)))
		return CG_COUNT;
	return limit_ctl[kind].v1;
}

/*
 * At exit: leave the subtree to the agent's own cgroup and remove it.
 * Running jobs were stopped before; what refuses to go stays for the
 * next start's sweep.
 */
void
cgroup_exit(void)
{
	char	*path, pid[32];
	int	 own;
	enum cgroup_hier h;

	if (!on || dry)
		return;
	xasprintf(&path, "%s%s", trees[CG_V2].mount, trees[CG_V2].own);
	snprintf(pid, sizeof pid, "%ld", (long)getpid());
	if ((own = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1 &&
	    cgroup_write(own, "cgroup.procs", pid) == 0)
		unlinkat(trees[CG_V2].fd, "agent", AT_REMOVEDIR);
	if (own != -1)
		close(own);
	free(path);
	for (h = 0; h < CG_COUNT; h++)
		if (trees[h].fd != -1 && trees[h].base != NULL)
			rmdir(trees[h].base);
}
