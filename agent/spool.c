/*
 * spool.c: events the agent accepted while Redis could not take them, kept
 * on disk until they are queued.  Each event is one file, written to a
 * temporary name, fsynced, renamed into place and the directory fsynced
 * before the producer hears "ok": a crash after the answer loses nothing.
 * Names sort in arrival order, so the spool replays in order.  It is
 * bounded by spool_max; a full spool or a full disk answers unavailable,
 * never "ok" and lost.
 *
 * The I/O goes through spool_write_fn so tests can make the disk "full".
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatchd.h"

/* One spooled event: its file name and size. */
struct spooled {
	TAILQ_ENTRY(spooled) entry;
	char		*name;
	size_t		 size;
};
TAILQ_HEAD(spooleds, spooled);

ssize_t		(*spool_write_fn)(int, const void *, size_t) = write;

static struct spooleds	 queue = TAILQ_HEAD_INITIALIZER(queue);
static char		*spool_dir;
static int		 spool_dirfd = -1;
static size_t		 spool_bytes;
static size_t		 spool_max;
static size_t		 spool_n;
static unsigned		 spool_seq;

static void	 spool_forget(const char *, int);

/* Spool files are "<13-digit ms>-<6-digit seq>.event". */
static int
spool_is_event(const struct dirent *d)
{
	size_t	len = strlen(d->d_name);

	return d->d_name[0] != '.' && len > 6 &&
	    strcmp(d->d_name + len - 6, ".event") == 0;
}

/* Name order is arrival order. */
static int
spool_order(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Add a file to the in-memory queue. */
static void
spool_enqueue(const char *name, size_t size)
{
	struct spooled	*s;

	s = xcalloc(1, sizeof *s);
	s->name = xstrdup(name);
	s->size = size;
	TAILQ_INSERT_TAIL(&queue, s, entry);
	spool_bytes += size;
	spool_n++;
}

/*
 * Open (creating if needed) the spool directory and take stock of what a
 * previous run left in it.  -1 with err on failure.
 */
int
spool_open(const char *dir, size_t max, char *err, size_t errlen)
{
	struct dirent	**list;
	struct stat	  st;
	char		 *path;
	int		  n, i;

	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "spool %s: %s", dir, strerror(errno));
		return -1;
	}
	if ((spool_dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "spool %s: %s", dir, strerror(errno));
		return -1;
	}
	if ((n = scandir(dir, &list, spool_is_event, spool_order)) == -1) {
		snprintf(err, errlen, "spool %s: %s", dir, strerror(errno));
		return -1;
	}
	spool_dir = xstrdup(dir);
	spool_max = max;
	for (i = 0; i < n; i++) {
		xasprintf(&path, "%s/%s", dir, list[i]->d_name);
		if (stat(path, &st) == 0)
			spool_enqueue(list[i]->d_name, (size_t)st.st_size);
		free(path);
		free(list[i]);
	}
	free(list);
	if (spool_n > 0)
		log_notice("spool %s: %zu events waiting from before", dir,
		    spool_n);
	return 0;
}

/* A reload changed spool_max: it bounds what is written from now on. */
void
spool_set_max(size_t max)
{
	spool_max = max;
}

/* Is there a spool? */
int
spool_enabled(void)
{
	return spool_dir != NULL;
}

/* How many events wait in the spool. */
size_t
spool_count(void)
{
	return spool_n;
}

/* Write all of buf, through the seam. */
static int
spool_write_all(int fd, const char *buf, size_t len)
{
	ssize_t	n;

	while (len > 0) {
		n = spool_write_fn(fd, buf, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0) {
			errno = ENOSPC;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Store one event (a JSON line) durably.  0 once it is safe on disk;
 * -1 with err (spool full, disk full, I/O error) and nothing left behind.
 */
int
spool_put(const char *line, size_t len, char *err, size_t errlen)
{
	char	 name[64], tmp[80], *path, *tpath;
	int	 fd, saved;

	if (spool_bytes + len > spool_max) {
		snprintf(err, errlen, "the spool is full (%zu events, "
		    "spool_max %zu bytes)", spool_n, spool_max);
		return -1;
	}
	snprintf(name, sizeof name, "%013lld-%06u.event",
	    (long long)util_wall_ms(), spool_seq++ % 1000000);
	snprintf(tmp, sizeof tmp, ".%s.tmp", name);
	xasprintf(&path, "%s/%s", spool_dir, name);
	xasprintf(&tpath, "%s/%s", spool_dir, tmp);
	fd = open(tpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1 || spool_write_all(fd, line, len) == -1 ||
	    fsync(fd) == -1) {
		saved = errno;
		if (fd != -1) {
			close(fd);
			unlink(tpath);
		}
		snprintf(err, errlen, "cannot write to the spool: %s",
		    strerror(saved));
		free(path);
		free(tpath);
		return -1;
	}
	if (close(fd) == -1 || rename(tpath, path) == -1 ||
	    fsync(spool_dirfd) == -1) {
		saved = errno;
		unlink(tpath);
		unlink(path);
		snprintf(err, errlen, "cannot write to the spool: %s",
		    strerror(saved));
		free(path);
		free(tpath);
		return -1;
	}
	free(path);
	free(tpath);
	spool_enqueue(name, len);
	return 0;
}

/*
 * The oldest spooled event's line, malloc'ed, with its length in *len and
 * *name, its file name (borrowed until spool_remove).  NULL when empty,
 * or with *later set when the file cannot be read for now (out of
 * descriptors or memory): try again later.  A file that cannot be read
 * for good is moved aside as .bad and skipped.
 */
char *
spool_oldest(const char **name, size_t *len, int *later)
{
	struct spooled	*s;
	struct stat	 st;
	char		*path, *buf;
	ssize_t		 n;
	int		 fd, e;

	*later = 0;
	while ((s = TAILQ_FIRST(&queue)) != NULL) {
		xasprintf(&path, "%s/%s", spool_dir, s->name);
		buf = NULL;
		e = 0;
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
			e = errno;
		else if (fstat(fd, &st) == -1)
			e = errno;
		else {
			buf = xmalloc((size_t)st.st_size + 1);
			n = read(fd, buf, (size_t)st.st_size);
			if (n != st.st_size) {
				e = n == -1 ? errno : EIO;
				free(buf);
				buf = NULL;
			} else {
				buf[n] = '\0';
				*len = (size_t)n;
			}
		}
		if (fd != -1)
			close(fd);
		free(path);
		if (buf != NULL) {
			*name = s->name;
			return buf;
		}
		if (e == EMFILE || e == ENFILE || e == ENOMEM || e == EINTR) {
			log_warnx("spool: cannot read %s now: %s; will retry",
			    s->name, strerror(e));
			*later = 1;
			return NULL;
		}
		log_warnx("spool: cannot read %s: %s", s->name, strerror(e));
		spool_reject(s->name);
	}
	return NULL;
}

/*
 * Move a spooled event that cannot be queued aside, as .bad, for a person
 * to look at.  If even that fails the file stays as it is (and is read
 * again at the next start): only forgotten here, never deleted.
 */
void
spool_reject(const char *name)
{
	char	*path, *bad;
	int	 moved;

	xasprintf(&path, "%s/%s", spool_dir, name);
	xasprintf(&bad, "%s.bad", path);
	if ((moved = rename(path, bad)) == -1)
		log_warn("spool: rename %s; left in place", path);
	else
		log_warnx("spool: %s cannot be queued; moved to %s", path, bad);
	free(path);
	free(bad);
	spool_forget(name, moved == 0);
}

/* Drop name from the queue; delete its file too if unlink_it. */
static void
spool_forget(const char *name, int unlink_it)
{
	struct spooled	*s;
	char		*path;

	TAILQ_FOREACH(s, &queue, entry)
		if (strcmp(s->name, name) == 0)
			break;
	if (s == NULL)
		return;
	if (unlink_it) {
		xasprintf(&path, "%s/%s", spool_dir, s->name);
		unlink(path);
		free(path);
	}
	TAILQ_REMOVE(&queue, s, entry);
	spool_bytes -= s->size;
	spool_n--;
	free(s->name);
	free(s);
}

/* Forget a spooled event whose enqueue succeeded, and delete its file. */
void
spool_remove(const char *name)
{
	spool_forget(name, 1);
}
