/*
 * control.c: the Unix socket that local producers and dispatchctl use.
 * Newline-delimited JSON, one request per line, replies in request order
 * on the same connection, pipelining allowed.  A bad line gets an error
 * and the connection lives on; a line over max_message gets too_large and
 * the connection is closed.  A client that goes away while its emits are in
 * flight does not lose them: the replies are simply dropped.  Each parsed
 * request goes to its op's handler: control_ops here, else admin.c's.
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

#include "dispatchd.h"

#define MAX_PENDING	1024	/* unanswered requests before we stop reading */
#define MAX_UNSENT	(1024 * 1024)	/* unread reply bytes, likewise */
#define READ_MAX	65536	/* bytes read from one client per turn */

struct conn;

/* A reply slot, in request order; filled when its answer is known. */
struct slot {
	TAILQ_ENTRY(slot) entry;
	struct conn	*conn;		/* NULL once the client is gone */
	char		*line;
	size_t		 len;
};
TAILQ_HEAD(slots, slot);

/* One client connection. */
struct conn {
	TAILQ_ENTRY(conn) entry;
	int		 fd;
	int64_t		 since;		/* accept or last complete request */
	ev_io		 rio;
	ev_io		 wio;
	char		*rbuf;
	size_t		 rlen;
	size_t		 rsize;
	char		*wbuf;
	size_t		 wlen;		/* bytes in wbuf */
	size_t		 woff;		/* of which sent */
	size_t		 wsize;		/* allocated */
	struct slots	 slots;
	int		 n_slots;
	int		 closing;	/* no more reading; close when flushed */
	int64_t		 closing_since;
	struct peer	 peer;		/* who connected */
	int		 busy;		/* inside control_on_read */
	int		 dead;		/* closed while busy: free on the way out */
};

TAILQ_HEAD(conns, conn);

static int		 control_fd = -1;
static ev_io		 control_io;
static ev_timer		 control_sweep;
static ev_timer		 control_resume;	/* accept again after EMFILE */
static struct conns	 conns = TAILQ_HEAD_INITIALIZER(conns);
static int		 n_conns;
static char		*control_path;
static size_t		 control_max;

static void	 control_close_conn(struct conn *);
static void	 control_refuse(struct conn *, const char *, const char *);
static void	 control_pace(struct conn *);
static void	 control_write(struct conn *);

/* Move the answered slots at the head into the write buffer. */
static void
control_collect(struct conn *c)
{
	struct slot	*s;

	while ((s = TAILQ_FIRST(&c->slots)) != NULL && s->line != NULL) {
		if (c->wlen + s->len > c->wsize) {
			/* drop what was sent, then grow by doubling */
			if (c->woff > 0) {
				memmove(c->wbuf, c->wbuf + c->woff,
				    c->wlen - c->woff);
				c->wlen -= c->woff;
				c->woff = 0;
			}
			while (c->wlen + s->len > c->wsize)
				c->wsize = c->wsize ? c->wsize * 2 : 4096;
			c->wbuf = xreallocarray(c->wbuf, c->wsize, 1);
		}
		memcpy(c->wbuf + c->wlen, s->line, s->len);
		c->wlen += s->len;
		TAILQ_REMOVE(&c->slots, s, entry);
		c->n_slots--;
		free(s->line);
		free(s);
	}
	if (c->dead)
		return;
	control_write(c);
}

/*
 * Read from a client only while it is not too far behind: few enough
 * unanswered requests and unread reply bytes.  A client that pipelines
 * without reading its replies is simply not read from until it does.
 */
static void
control_pace(struct conn *c)
{
	if (c->dead || c->closing)
		return;
	if (c->n_slots < MAX_PENDING && c->wlen - c->woff < MAX_UNSENT)
		ev_io_start(EV_DEFAULT_ &c->rio);
	else
		ev_io_stop(EV_DEFAULT_ &c->rio);
}

/* Fill a slot with its reply line (copied). */
static void
control_answer(struct slot *s, const char *line, size_t len)
{
	if (s->conn == NULL) {
		free(s);	/* the client left; the slot was orphaned */
		return;
	}
	s->line = xmalloc(len);
	memcpy(s->line, line, len);
	s->len = len;
	control_collect(s->conn);
}

/* Enqueue finished for a socket emit. */
static void
control_on_enqueued(int ok, const char *line, size_t len, void *arg)
{
	control_answer(arg, line, len);
}

/* Answer with a reply line (taken). */
static void
control_send(struct slot *s, char *line, size_t len)
{
	control_answer(s, line, len);
	free(line);
}

/* Answer with an error line. */
static void
control_error(struct slot *s, const char *code, const char *msg)
{
	char	*line;
	size_t	 len;

	line = proto_reply_error(code, msg, NULL, &len);
	control_send(s, line, len);
}

/* ping: who we are and how things stand. */
static void
control_ping(struct conn *c, struct slot *s, struct request *req)
{
	char	*line;
	size_t	 len;

	line = proto_reply(json_pack("{s:b, s:s, s:s, s:b, s:i, s:i, s:I, s:I,"
	    " s:I, s:I, s:I, s:I, s:I, s:I}",
	    "ok", 1, "agent", cfg->name, "version", DISPATCHD_VERSION,
	    "redis", redis_ready(rcmd) && heartbeat_claimed(),
	    "running", dispatch_running(),
	    "workers", cfg->workers,
	    "emitted", (json_int_t)counters.emitted,
	    "unrouted", (json_int_t)counters.unrouted,
	    "rejected", (json_int_t)counters.rejected,
	    "pubsub_rejected", (json_int_t)counters.pubsub_bad,
	    "jobs_finished", (json_int_t)counters.jobs_finished,
	    "spooled", (json_int_t)counters.spooled,
	    "replayed", (json_int_t)counters.replayed,
	    "spool_waiting", (json_int_t)spool_count()), &len);
	control_send(s, line, len);
}

/* emit: if this peer may emit this event, queue it. */
static void
control_emit(struct conn *c, struct slot *s, struct request *req)
{
	char	err[300];

	if (!access_may_emit(cfg, &c->peer, req->ev.name)) {
		snprintf(err, sizeof err, "uid %u may not emit %s",
		    (unsigned)c->peer.uid, req->ev.name);
		log_warnx("control: denied: %s", err);
		counters.rejected++;
		control_error(s, "denied", err);
	} else
		enqueue_event(&req->ev, 1, control_on_enqueued, s);
}

/* The ops served here, by op; admin.c serves the others. */
static void (*const control_ops[OP_COUNT])(struct conn *, struct slot *,
    struct request *) = {
	[OP_EMIT] = control_emit,
	[OP_PING] = control_ping,
};

/* Check that every op on the wire is served, here or in admin.c. */
static void
control_check_ops(void)
{
	int	op;

	for (op = 0; op < OP_COUNT; op++)
		if (!(proto_ops[op].flags & PROTO_LOCAL) &&
		    (control_ops[op] != NULL) == admin_serves(op))
			fatalx("control: op %s is served %s",
			    proto_ops[op].name, control_ops[op] ? "twice" :
			    "nowhere");
}

/* Handle one complete request line. */
static void
control_request(struct conn *c, const char *line, size_t len)
{
	struct request	 req;
	struct slot	*s;
	char		 err[300];
	int		 rc;

	s = xcalloc(1, sizeof *s);
	s->conn = c;
	TAILQ_INSERT_TAIL(&c->slots, s, entry);
	c->n_slots++;
	if ((rc = proto_parse(line, len, &req, err, sizeof err)) != 0) {
		counters.rejected++;
		control_error(s, rc == -2 ? "unknown_op" : "invalid", err);
		return;
	}
	if (req.admin && !access_may_admin(cfg, &c->peer)) {
		snprintf(err, sizeof err, "uid %u may not use admin ops",
		    (unsigned)c->peer.uid);
		log_warnx("control: denied: %s", err);
		counters.rejected++;
		control_error(s, "denied", err);
	} else if (control_ops[req.op] != NULL)
		control_ops[req.op](c, s, &req);
	else
		admin_request(&req, control_on_enqueued, s);
	proto_request_clear(&req);
}

/* Split the read buffer into lines and handle each. */
static void
control_lines(struct conn *c)
{
	char	*nl = NULL, *start = c->rbuf;
	size_t	 left = c->rlen, len;

	while (!c->closing && !c->dead &&
	    (nl = memchr(start, '\n', left)) != NULL) {
		len = (size_t)(nl - start);
		if (len > control_max)
			break;
		c->since = util_mono_ms();
		if (len > 0 && start[len - 1] == '\r')
			len--;
		if (len > 0)
			control_request(c, start, len);
		left -= (size_t)(nl - start) + 1;
		start = nl + 1;
	}
	if (!c->closing && !c->dead && (left > control_max ||
	    (nl != NULL && (size_t)(nl - start) > control_max))) {
		char	msg[128];

		counters.rejected++;
		snprintf(msg, sizeof msg, "a request line is limited to "
		    "%zu bytes (max_message); closing", control_max);
		control_refuse(c, "too_large", msg);
		left = 0;
	}
	memmove(c->rbuf, start, left);
	c->rlen = left;
}

/* The client sent something, or closed. */
static void
control_on_read(EV_P_ ev_io *w, int revents)
{
	struct conn	*c = w->data;
	ssize_t		 n;
	size_t		 room;

	/*
	 * Room for one line over the limit, so too_large can be told; but at
	 * most READ_MAX a turn, so one busy client cannot hold up the others.
	 */
	room = control_max + 2 > c->rlen ? control_max + 2 - c->rlen : 1;
	if (room > READ_MAX)
		room = READ_MAX;
	if (c->rsize < c->rlen + room) {
		c->rsize = c->rlen + room;
		c->rbuf = xreallocarray(c->rbuf, c->rsize, 1);
	}
	n = read(c->fd, c->rbuf + c->rlen, room);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	/* replies may complete, and the connection close, while we work */
	c->busy = 1;
	if (n <= 0) {
		/* end of requests: answer what is pending, then close */
		c->closing = 1;
		c->closing_since = util_mono_ms();
		ev_io_stop(EV_A_ w);
		control_write(c);
	} else {
		c->rlen += (size_t)n;
		control_lines(c);
		control_pace(c);
	}
	c->busy = 0;
	if (c->dead)
		control_close_conn(c);
}

/* Write what is buffered; close a finished connection. */
static void
control_write(struct conn *c)
{
	ssize_t	n;

	if (c->dead)
		return;
	while (c->woff < c->wlen) {
		n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN) {
			ev_io_start(EV_DEFAULT_ &c->wio);
			control_pace(c);
			return;
		}
		if (n == -1) {
			control_close_conn(c);
			return;
		}
		c->woff += (size_t)n;
	}
	c->woff = c->wlen = 0;
	ev_io_stop(EV_DEFAULT_ &c->wio);
	if (c->closing && c->n_slots == 0)
		control_close_conn(c);
	else
		control_pace(c);
}

/* The socket can take more output. */
static void
control_on_write(EV_P_ ev_io *w, int revents)
{
	control_write(w->data);
}

/* Close a client; its unanswered slots are orphaned, not lost. */
static void
control_close_conn(struct conn *c)
{
	struct slot	*s;

	if (c->busy) {
		c->dead = 1;
		ev_io_stop(EV_DEFAULT_ &c->rio);
		ev_io_stop(EV_DEFAULT_ &c->wio);
		return;
	}
	while ((s = TAILQ_FIRST(&c->slots)) != NULL) {
		TAILQ_REMOVE(&c->slots, s, entry);
		if (s->line != NULL) {
			free(s->line);
			free(s);
		} else
			s->conn = NULL;	/* freed when its answer comes */
	}
	ev_io_stop(EV_DEFAULT_ &c->rio);
	ev_io_stop(EV_DEFAULT_ &c->wio);
	close(c->fd);
	free(c->rbuf);
	free(c->wbuf);
	free(c->peer.groups);
	TAILQ_REMOVE(&conns, c, entry);
	n_conns--;
	free(c);
}

/* Answer one line on a connection we are about to close. */
static void
control_refuse(struct conn *c, const char *code, const char *msg)
{
	struct slot	*s;

	s = xcalloc(1, sizeof *s);
	s->conn = c;
	TAILQ_INSERT_TAIL(&c->slots, s, entry);
	c->n_slots++;
	c->closing = 1;
	c->closing_since = util_mono_ms();
	ev_io_stop(EV_DEFAULT_ &c->rio);
	control_error(s, code, msg);
}

/*
 * Once a second: close clients that have sent no complete request for
 * client_timeout while we owe them nothing (idle, or a slow partial line),
 * and those whose last answers have not drained for as long: a refused
 * client that never reads must not keep its descriptor and slot.
 */
static void
control_on_sweep(EV_P_ ev_timer *w, int revents)
{
	struct conn	*c, *next;
	int64_t		 now = util_mono_ms();
	char		 msg[128];

	for (c = TAILQ_FIRST(&conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->closing && !c->dead &&
		    now - c->closing_since >= cfg->client_timeout_ms) {
			log_warnx("control: a client (uid %d) has not read its "
			    "last answers in %lld ms; dropping it",
			    (int)c->peer.uid, (long long)cfg->client_timeout_ms);
			control_close_conn(c);
			continue;
		}
		if (c->closing || c->n_slots > 0 ||
		    now - c->since < cfg->client_timeout_ms)
			continue;
		snprintf(msg, sizeof msg, "no complete request for %lld ms "
		    "(client_timeout); closing",
		    (long long)cfg->client_timeout_ms);
		control_refuse(c, "timeout", msg);
	}
}

/*
 * Who is on the other end: the credentials the kernel recorded at
 * connect(2), and their supplementary groups.  Unknown means nobody.
 */
static void
control_peer(int fd, struct peer *p)
{
	struct ucred	cred;
	socklen_t	len = sizeof cred;
	gid_t		groups[256];

	p->uid = p->gid = (uint32_t)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		p->uid = cred.uid;
		p->gid = cred.gid;
	}
	len = sizeof groups;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0 &&
	    len > 0) {
		p->n_groups = (int)(len / sizeof groups[0]);
		p->groups = xcalloc((size_t)p->n_groups, sizeof *p->groups);
		memcpy(p->groups, groups, len);
	}
}

/* The pause after a failed accept is over. */
static void
control_on_resume(EV_P_ ev_timer *w, int revents)
{
	ev_io_start(EV_A_ &control_io);
}

/* A client connected. */
static void
control_on_accept(EV_P_ ev_io *w, int revents)
{
	struct conn	*c;
	int		 fd;

	fd = accept4(control_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd == -1) {
		if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
			return;
		/*
		 * Out of descriptors or memory: the connection stays queued
		 * and the socket readable, so pause instead of spinning.
		 */
		log_warn("control: accept (pausing 100 ms)");
		ev_io_stop(EV_A_ w);
		ev_timer_set(&control_resume, 0.1, 0.);	/* fired: set again */
		ev_timer_start(EV_A_ &control_resume);
		return;
	}
	c = xcalloc(1, sizeof *c);
	c->fd = fd;
	c->since = util_mono_ms();
	control_peer(fd, &c->peer);
	TAILQ_INIT(&c->slots);
	TAILQ_INSERT_TAIL(&conns, c, entry);
	n_conns++;
	ev_io_init(&c->rio, control_on_read, fd, EV_READ);
	c->rio.data = c;
	ev_io_init(&c->wio, control_on_write, fd, EV_WRITE);
	c->wio.data = c;
	ev_io_start(EV_A_ &c->rio);
	if (n_conns > cfg->max_clients) {
		log_warnx("control: %d clients connected (max_clients); "
		    "refusing one", n_conns - 1);
		counters.rejected++;
		control_refuse(c, "unavailable", "too many clients "
		    "(max_clients); try again later");
	}
}

/* Start accepting on fd. */
static void
control_start(int fd, size_t max_message)
{
	control_check_ops();
	control_fd = fd;
	control_max = max_message;
	ev_io_init(&control_io, control_on_accept, fd, EV_READ);
	ev_io_start(EV_DEFAULT_ &control_io);
	ev_timer_init(&control_resume, control_on_resume, 0.1, 0.);
	ev_timer_init(&control_sweep, control_on_sweep, 1., 1.);
	ev_timer_start(EV_DEFAULT_ &control_sweep);
}

/*
 * Listen on path.  A live agent already there is an error; a stale socket
 * file is replaced; anything else at the path is left alone.
 */
int
control_listen(const char *path, int mode, size_t max_message)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	struct group		*gr;
	mode_t			 old;
	char			*dir, *slash;
	int			 fd, probe;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun.sun_path) {
		log_errx("control: socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	dir = xstrdup(path);
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) == 0)
			log_info("control: created %s", dir);
	}
	free(dir);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_errx("control: %s exists and is not a socket",
			    path);
			return -1;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe != -1 && connect(probe, (struct sockaddr *)&sun,
		    sizeof sun) == 0) {
			close(probe);
			log_errx("control: another agent is listening on %s",
			    path);
			return -1;
		}
		if (probe != -1)
			close(probe);
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("control: socket");
		return -1;
	}
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		umask(old);
		log_warn("control: bind %s", path);
		close(fd);
		return -1;
	}
	umask(old);
	if (chmod(path, (mode_t)mode) == -1)
		log_warn("control: chmod %s", path);
	if (cfg->socket_group != NULL &&
	    ((gr = getgrnam(cfg->socket_group)) == NULL ||
	    chown(path, (uid_t)-1, gr->gr_gid) == -1))
		log_warn("control: chown %s to group %s", path,
		    cfg->socket_group);
	if (listen(fd, 128) == -1) {
		log_warn("control: listen %s", path);
		close(fd);
		return -1;
	}
	control_path = xstrdup(path);
	control_start(fd, max_message);
	log_info("control: listening on %s", path);
	return 0;
}

/*
 * Serve a listening socket passed in by the service manager (socket
 * activation); it owns the socket file, so it is not removed at exit.
 */
int
control_adopt(int fd, const char *path, size_t max_message)
{
	control_start(fd, max_message);
	log_info("control: serving the socket passed by systemd (%s)", path);
	return 0;
}

/* A new max_message (reload); buffers grow to it as they are used. */
void
control_set_max(size_t max_message)
{
	control_max = max_message;
}

/* Stop listening and remove the socket file. */
void
control_close(void)
{
	if (control_fd == -1)
		return;
	ev_io_stop(EV_DEFAULT_ &control_io);
	ev_timer_stop(EV_DEFAULT_ &control_sweep);
	ev_timer_stop(EV_DEFAULT_ &control_resume);
	close(control_fd);
	if (control_path != NULL) {
		unlink(control_path);
		free(control_path);
		control_path = NULL;
	}
	control_fd = -1;
}
