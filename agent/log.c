/*
 * log.c: one line per message on stderr.  Under journald (not a terminal)
 * each line starts with a <N> syslog priority prefix that journald turns
 * into the entry's priority; on a terminal it gets a time and a level name.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "dispatchd.h"

static int	 log_threshold = LOG_INFO;
static int	 log_tty;

static const char *const log_names[] = {
	"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"
};

static void	 log_vmsg(int, const char *, const char *, va_list)
	    __attribute__((format(printf, 3, 0)));

/* Choose the line format and the first threshold. */
void
log_init(int level)
{
	log_tty = isatty(STDERR_FILENO) && getenv("JOURNAL_STREAM") == NULL;
	log_threshold = level;
}

/* Change the threshold (config load). */
void
log_set_level(int level)
{
	log_threshold = level;
}

/* Map a syslog level name to its number; -1 when unknown. */
int
log_level_parse(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof log_names / sizeof log_names[0]; i++)
		if (strcasecmp(name, log_names[i]) == 0)
			return (int)i;
	if (strcasecmp(name, "error") == 0)
		return LOG_ERR;
	if (strcasecmp(name, "warn") == 0)
		return LOG_WARNING;
	return -1;
}

/* Format and write one line; errno survives. */
static void
log_vmsg(int prio, const char *suffix, const char *fmt, va_list ap)
{
	char		 line[2048], stamp[32];
	int		 saved = errno;
	time_t		 now;
	struct tm	 tm;

	if (prio > log_threshold)
		return;
	vsnprintf(line, sizeof line, fmt, ap);
	if (log_tty) {
		now = time(NULL);
		localtime_r(&now, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
		fprintf(stderr, "%s %s: %s%s%s\n", stamp, log_names[prio], line,
		    suffix ? ": " : "", suffix ? suffix : "");
	} else
		fprintf(stderr, "<%d>%s%s%s\n", prio, line,
		    suffix ? ": " : "", suffix ? suffix : "");
	errno = saved;
}

/* Log at any priority. */
void
log_msg(int prio, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vmsg(prio, NULL, fmt, ap);
	va_end(ap);
}

#define LOG_FN(fn, prio)					\
void								\
fn(const char *fmt, ...)					\
{								\
	va_list	ap;						\
								\
	va_start(ap, fmt);					\
	log_vmsg(prio, NULL, fmt, ap);				\
	va_end(ap);						\
}

LOG_FN(log_debug, LOG_DEBUG)
LOG_FN(log_info, LOG_INFO)
LOG_FN(log_notice, LOG_NOTICE)
LOG_FN(log_warnx, LOG_WARNING)
LOG_FN(log_errx, LOG_ERR)

/* Log a warning with strerror(errno) appended. */
void
log_warn(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vmsg(LOG_WARNING, strerror(errno), fmt, ap);
	va_end(ap);
}

/* Log a critical error and exit: startup and broken invariants only. */
void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vmsg(LOG_CRIT, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

/* As fatalx, with strerror(errno) appended. */
void
fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vmsg(LOG_CRIT, strerror(errno), fmt, ap);
	va_end(ap);
	exit(1);
}
