/*
 * notify.c: the systemd service protocols, spoken directly so the agent
 * needs no libsystemd: readiness, status and watchdog datagrams to
 * $NOTIFY_SOCKET, and a listening socket passed in by socket activation
 * ($LISTEN_FDS).  Outside systemd every call here does nothing.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "dispatchd.h"

static int		 notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t	 notify_len;
static ev_timer		 notify_watchdog;

/* Send one datagram to the service manager, if there is one. */
void
notify_send(const char *fmt, ...)
{
	char	msg[512];
	va_list	ap;
	int	n;

	if (notify_fd == -1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
	    (struct sockaddr *)&notify_addr, notify_len) == -1)
		log_debug("notify: %s", strerror(errno));
}

/* The watchdog timer: tell systemd the loop is alive. */
static void
notify_on_watchdog(EV_P_ ev_timer *w, int revents)
{
	notify_send("WATCHDOG=1");
}

/*
 * Read $NOTIFY_SOCKET (and $WATCHDOG_USEC) and unset them, so handlers
 * never inherit them (their environment is built from scratch anyway).
 */
void
notify_init(void)
{
	const char	*path = getenv("NOTIFY_SOCKET");
	const char	*wd = getenv("WATCHDOG_USEC");
	const char	*wdpid = getenv("WATCHDOG_PID");
	size_t		 len;
	double		 usec;

	if (path != NULL && (path[0] == '/' || path[0] == '@') &&
	    (len = strlen(path)) < sizeof notify_addr.sun_path) {
		memset(&notify_addr, 0, sizeof notify_addr);
		notify_addr.sun_family = AF_UNIX;
		memcpy(notify_addr.sun_path, path, len);
		if (path[0] == '@')
			notify_addr.sun_path[0] = '\0';	/* abstract */
		notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path)
		    + len);
		notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	}
	if (notify_fd != -1 && wd != NULL &&
	    (wdpid == NULL || atoi(wdpid) == getpid()) &&
	    (usec = strtod(wd, NULL)) > 0) {
		ev_timer_init(&notify_watchdog, notify_on_watchdog,
		    usec / 2e6, usec / 2e6);
		ev_timer_start(EV_DEFAULT_ &notify_watchdog);
		ev_unref(EV_DEFAULT);
	}
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

/*
 * The listening socket passed by socket activation, or -1.  Only one is
 * expected, at fd 3; it is made close-on-exec so handlers don't get it.
 */
int
notify_listen_fd(void)
{
	const char	*fds = getenv("LISTEN_FDS");
	const char	*pid = getenv("LISTEN_PID");
	int		 fd = -1;

	if (fds != NULL && pid != NULL && atoi(pid) == getpid() &&
	    atoi(fds) >= 1) {
		fd = 3;
		util_set_cloexec(fd);
		util_set_nonblock(fd);
		if (atoi(fds) > 1)
			log_warnx("socket activation: %s sockets passed, only "
			    "the first is used", fds);
	}
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDNAMES");
	return fd;
}
