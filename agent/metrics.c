/*
 * metrics.c: Prometheus text exposition.  The agent's own numbers come
 * from counters.c (jobs by handler and outcome, a duration histogram,
 * events, rejects, spool, reconnects, recoveries); queue depths are read from Redis at scrape time
 * with the status script.  Served by `dispatchctl metrics` over the socket
 * and, with metrics_listen, by a tiny HTTP/1.0 listener (GET /metrics).
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "dispatchd.h"

#define HTTP_MAX	4096
#define HTTP_TIMEOUT_S	5.0

/* A text being built. */
struct text {
	char	*buf;
	size_t	 len;
	size_t	 size;
};

/* A render waiting for queue depths. */
struct render {
	metrics_cb	 cb;
	void		*arg;
};

/* An HTTP client of the listener. */
struct http {
	int		 fd;
	char		 buf[HTTP_MAX];
	size_t		 len;
	ev_io		 io;
	ev_timer	 timer;
};

static int			 listen_fd = -1;
static ev_io			 listen_io;

/* Append printf-style text. */
static void __attribute__((format(printf, 2, 3)))
text_add(struct text *t, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->size - t->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < t->size - t->len) {
			t->len += (size_t)n;
			return;
		}
		t->size = t->size ? t->size * 2 : 8192;
		t->buf = xreallocarray(t->buf, t->size, 1);
	}
}

/* One metric's HELP and TYPE lines. */
static void
metrics_head(struct text *t, const char *name, const char *type,
    const char *help)
{
	text_add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A counter or gauge without labels. */
static void
metrics_one(struct text *t, const char *name, const char *type,
    const char *help, double v)
{
	metrics_head(t, name, type, help);
	text_add(t, "%s %.17g\n", name, v);
}

/* Everything the agent counts itself. */
static void
metrics_counters(struct text *t)
{
	const struct handler_stats	*stats;
	uint64_t			 cum;
	size_t				 i, j, n_stats;

	stats = counters_handlers(&n_stats);
	metrics_head(t, "dispatchd_jobs_total", "counter",
	    "Job attempts finished on this agent, by handler and outcome.");
	for (i = 0; i < n_stats; i++)
		for (j = 0; j < JOB_NFATES; j++)
			text_add(t, "dispatchd_jobs_total{handler=\"%s\","
			    "outcome=\"%s\"} %llu\n", stats[i].name,
			    job_fate_name((enum job_fate)j),
			    (unsigned long long)stats[i].fate[j]);
	metrics_head(t, "dispatchd_job_duration_seconds", "histogram",
	    "How long handlers ran, by handler.");
	for (i = 0; i < n_stats; i++) {
		cum = 0;
		for (j = 0; j < COUNTERS_BUCKETS; j++) {
			cum += stats[i].bucket[j];
			text_add(t, "dispatchd_job_duration_seconds_bucket{"
			    "handler=\"%s\",le=\"%g\"} %llu\n", stats[i].name,
			    counters_bucket_s[j], (unsigned long long)cum);
		}
		text_add(t, "dispatchd_job_duration_seconds_bucket{handler="
		    "\"%s\",le=\"+Inf\"} %llu\n", stats[i].name,
		    (unsigned long long)stats[i].count);
		text_add(t, "dispatchd_job_duration_seconds_sum{handler=\"%s\"}"
		    " %.17g\n", stats[i].name, stats[i].sum_s);
		text_add(t, "dispatchd_job_duration_seconds_count{handler="
		    "\"%s\"} %llu\n", stats[i].name,
		    (unsigned long long)stats[i].count);
	}
	metrics_one(t, "dispatchd_running_jobs", "gauge",
	    "Handlers running now on this agent.", dispatch_running());
	metrics_one(t, "dispatchd_workers", "gauge",
	    "Worker slots on this agent.", cfg->workers);
	metrics_one(t, "dispatchd_events_emitted_total", "counter",
	    "Events queued by this agent.", (double)counters.emitted);
	metrics_one(t, "dispatchd_events_unrouted_total", "counter",
	    "Events no handler is configured for.", (double)counters.unrouted);
	metrics_one(t, "dispatchd_socket_rejected_total", "counter",
	    "Socket requests refused: invalid, too large, denied, too many "
	    "clients.", (double)counters.rejected);
	metrics_one(t, "dispatchd_pubsub_rejected_total", "counter",
	    "Bad pub/sub messages.", (double)counters.pubsub_bad);
	metrics_one(t, "dispatchd_events_spooled_total", "counter",
	    "Events written to the spool while Redis could not take them.",
	    (double)counters.spooled);
	metrics_one(t, "dispatchd_spool_events", "gauge",
	    "Events waiting in the spool.", (double)spool_count());
	metrics_one(t, "dispatchd_inbox_entries_total", "counter",
	    "Inbox entries taken by this agent.", (double)counters.inbox_read);
	metrics_one(t, "dispatchd_inbox_rejected_total", "counter",
	    "Inbox entries dropped because they can never be queued.",
	    (double)counters.inbox_bad);
	metrics_one(t, "dispatchd_events_leader", "gauge",
	    "1 when this agent queues pub/sub events that carry no id.",
	    heartbeat_is_leader());
	metrics_one(t, "dispatchd_leases_recovered_total", "counter",
	    "Jobs whose lease expired, recovered by this agent.",
	    (double)counters.recovered);
	metrics_one(t, "dispatchd_redis_reconnects_total", "counter",
	    "Times a Redis connection was lost.",
	    (double)counters.redis_lost);
	metrics_one(t, "dispatchd_redis_up", "gauge",
	    "1 when the agent is connected to Redis.", redis_ready(rcmd));
}

/* Hand the text over and free the render. */
static void
metrics_finish(struct render *r, struct text *t)
{
	r->cb(t->buf, t->len, r->arg);
	free(t->buf);
	free(r);
}

/* The status script answered: add queue depths, then hand over. */
static void
metrics_on_status(const struct redisReply *reply, void *arg)
{
	struct render		*r = arg;
	struct text		 t = { NULL, 0, 0 };
	const redisReply	*h;
	size_t			 i;

	metrics_counters(&t);
	if (call_reply_is(reply, "iaaiii")) {
		metrics_head(&t, "dispatchd_queue_ready", "gauge",
		    "Jobs ready to run, by handler.");
		for (i = 0; i < reply->element[1]->elements; i++) {
			h = reply->element[1]->element[i];
			if (!call_reply_is(h, "si*"))
				continue;
			text_add(&t, "dispatchd_queue_ready{handler=\"%s\"} "
			    "%lld\n", h->element[0]->str,
			    h->element[1]->integer);
		}
		metrics_head(&t, "dispatchd_handler_paused", "gauge",
		    "1 while the handler is paused (dispatchctl pause).");
		for (i = 0; i < reply->element[1]->elements; i++) {
			h = reply->element[1]->element[i];
			if (!call_reply_is(h, "s???????i*"))
				continue;
			text_add(&t, "dispatchd_handler_paused{handler=\"%s\"} "
			    "%d\n", h->element[0]->str,
			    h->element[8]->integer >= 0);
		}
		metrics_one(&t, "dispatchd_queue_delayed", "gauge",
		    "Jobs waiting for their due time (delays and retries).",
		    (double)reply->element[4]->integer);
		metrics_one(&t, "dispatchd_queue_dead", "gauge",
		    "Jobs that failed for good.",
		    (double)reply->element[5]->integer);
	}
	metrics_finish(r, &t);
}

/* Render the exposition; cb gets the text, possibly before this returns. */
void
metrics_render(metrics_cb cb, void *arg)
{
	struct render	*r;
	struct text	 t = { NULL, 0, 0 };
	struct call	*c;
	size_t		 i;

	r = xcalloc(1, sizeof *r);
	r->cb = cb;
	r->arg = arg;
	c = call_start(SCRIPT_STATUS);
	call_key(c, KEY_DELAYED, NULL);
	call_key(c, KEY_LEASES, NULL);
	call_key(c, KEY_DEAD, NULL);
	call_key(c, KEY_RESULTS, NULL);
	call_key(c, KEY_AGENTS, NULL);
	call_key(c, KEY_PAUSED, NULL);
	call_arg(c, "P", cfg->prefix);
	call_arg(c, "limit", "1");	/* depths only: scan as little as can be */
	for (i = 0; i < cfg->n_handlers; i++)
		call_arg(c, "handler", cfg->handlers[i]->name);
	if (call_send_free(c, metrics_on_status, r) == -1) {
		metrics_counters(&t);
		metrics_finish(r, &t);
	}
}

/* Close an HTTP client. */
static void
metrics_http_close(struct http *h)
{
	ev_io_stop(EV_DEFAULT_ &h->io);
	ev_timer_stop(EV_DEFAULT_ &h->timer);
	close(h->fd);
	free(h);
}

/* Write a whole HTTP response (small; the socket buffer takes it). */
static void
metrics_http_write(struct http *h, const char *status, const char *body,
    size_t len)
{
	char	head[256];
	int	n;

	n = snprintf(head, sizeof head, "HTTP/1.0 %s\r\nContent-Type: "
	    "text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: %zu"
	    "\r\nConnection: close\r\n\r\n", status, len);
	if (write(h->fd, head, (size_t)n) == n && len > 0)
		(void)!write(h->fd, body, len);
	metrics_http_close(h);
}

/* The text for an HTTP scrape is ready. */
static void
metrics_on_http_text(const char *text, size_t len, void *arg)
{
	struct http	*h = arg;
	struct timeval	 tv = { 1, 0 };

	/*
	 * One blocking write of a few kilobytes, bounded by a send timeout
	 * so a scraper that never reads cannot hold the agent.
	 */
	fcntl(h->fd, F_SETFL, fcntl(h->fd, F_GETFL) & ~O_NONBLOCK);
	setsockopt(h->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	metrics_http_write(h, "200 OK", text, len);
}

/* Request bytes arrived. */
static void
metrics_on_http_read(EV_P_ ev_io *w, int revents)
{
	struct http	*h = w->data;
	ssize_t		 n;

	n = read(h->fd, h->buf + h->len, sizeof h->buf - 1 - h->len);
	if (n <= 0) {
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		metrics_http_close(h);
		return;
	}
	h->len += (size_t)n;
	h->buf[h->len] = '\0';
	if (strstr(h->buf, "\r\n\r\n") == NULL &&
	    strstr(h->buf, "\n\n") == NULL) {
		if (h->len >= sizeof h->buf - 1)
			metrics_http_write(h, "431 Request Header Fields Too "
			    "Large", "", 0);
		return;
	}
	ev_io_stop(EV_A_ w);
	if (strncmp(h->buf, "GET /metrics ", 13) == 0 ||
	    strncmp(h->buf, "GET /metrics?", 13) == 0)
		metrics_render(metrics_on_http_text, h);
	else
		metrics_http_write(h, "404 Not Found", "try /metrics\n", 13);
}

/* A slow HTTP client ran out of time. */
static void
metrics_on_http_timeout(EV_P_ ev_timer *w, int revents)
{
	metrics_http_close(w->data);
}

/* A scraper connected. */
static void
metrics_on_accept(EV_P_ ev_io *w, int revents)
{
	struct http	*h;
	int		 fd;

	fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd == -1)
		return;
	h = xcalloc(1, sizeof *h);
	h->fd = fd;
	ev_io_init(&h->io, metrics_on_http_read, fd, EV_READ);
	h->io.data = h;
	ev_io_start(EV_A_ &h->io);
	ev_timer_init(&h->timer, metrics_on_http_timeout, HTTP_TIMEOUT_S, 0.);
	h->timer.data = h;
	ev_timer_start(EV_A_ &h->timer);
}

/* Listen for scrapes on "ADDR:PORT" (IPv4, or [IPv6]:PORT). */
int
metrics_listen(const char *where)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	char			 host[128], *colon;
	long			 port;
	int			 fd, one = 1;
	socklen_t		 len;

	snprintf(host, sizeof host, "%s", where);
	if ((colon = strrchr(host, ':')) == NULL ||
	    util_parse_int(colon + 1, 1, 65535, &port) == -1) {
		log_errx("metrics_listen: '%s' is not ADDRESS:PORT", where);
		return -1;
	}
	*colon = '\0';
	memset(&ss, 0, sizeof ss);
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		host[strlen(host) - 1] = '\0';
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &sin6->sin6_addr) != 1)
			goto bad;
		len = sizeof *sin6;
	} else {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			goto bad;
		len = sizeof *sin;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
	    sizeof one) == -1 || bind(fd, (struct sockaddr *)&ss, len) == -1 ||
	    listen(fd, 16) == -1) {
		log_warn("metrics_listen %s", where);
		if (fd != -1)
			close(fd);
		return -1;
	}
	listen_fd = fd;
	ev_io_init(&listen_io, metrics_on_accept, fd, EV_READ);
	ev_io_start(EV_DEFAULT_ &listen_io);
	log_info("metrics: listening on http://%s/metrics", where);
	return 0;
bad:
	log_errx("metrics_listen: '%s' is not a numeric address", where);
	return -1;
}
