/*
 * util.c: small pure helpers: strict parsing of durations, sizes and
 * numbers, word splitting for exec lines, clocks, random ids, backoff,
 * UTF-8 cleaning, name validation, Redis addresses, password files, fd
 * flags, exit classification and the host name.
 */
#include "config.h"

#include <sys/random.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dispatchd.h"

/* Parse "250ms", "30s", "15m", "2h", "1d" or bare seconds into ms. */
int
util_parse_duration(const char *s, int64_t *ms)
{
	char		*end;
	double		 v, mult;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s) || *s == '-')
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || !isfinite(v) || v < 0)
		return -1;
	if (*end == '\0' || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(end, "d") == 0)
		mult = 86400 * 1000;
	else
		return -1;
	v *= mult;
	if (v > (double)INT64_MAX / 2)
		return -1;
	*ms = (int64_t)llround(v);
	return 0;
}

/* Parse "512", "64k", "1m", "1g" (powers of 1024) into bytes. */
int
util_parse_size(const char *s, size_t *bytes)
{
	char			*end;
	unsigned long long	 v, mult = 1;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	switch (tolower((unsigned char)*end)) {
	case '\0':
		break;
	case 'k':
		mult = 1024;
		break;
	case 'm':
		mult = 1024 * 1024;
		break;
	case 'g':
		mult = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*end != '\0') {
		end++;
		if (tolower((unsigned char)*end) == 'b' ||
		    tolower((unsigned char)*end) == 'i')
			end++;
		if (tolower((unsigned char)*end) == 'b')
			end++;
		if (*end != '\0')
			return -1;
	}
	if (v > SIZE_MAX / mult)
		return -1;
	*bytes = (size_t)(v * mult);
	return 0;
}

/* Parse a whole decimal (or 0-prefixed octal) number within [min, max]. */
int
util_parse_int(const char *s, long min, long max, long *out)
{
	char	*end;
	long	 v;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtol(s, &end, 0);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * Split an exec line into words: blanks separate, single quotes keep
 * everything literally, double quotes keep all but \" and \\, a backslash
 * outside quotes escapes the next character.  No expansion of any kind.
 */
int
util_split_words(const char *s, char ***out, const char **why)
{
	char	**words = NULL, *w;
	size_t	  n = 0, len;
	char	  quote;
	int	  inword;

	w = xmalloc(strlen(s) + 1);
	for (;;) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0')
			break;
		len = 0;
		quote = 0;
		inword = 1;
		while (inword && *s != '\0') {
			if (quote == '\'') {
				if (*s == '\'')
					quote = 0;
				else
					w[len++] = *s;
			} else if (quote == '"') {
				if (*s == '"')
					quote = 0;
				else if (*s == '\\' && (s[1] == '"' ||
				    s[1] == '\\'))
					w[len++] = *++s;
				else
					w[len++] = *s;
			} else if (*s == ' ' || *s == '\t')
				inword = 0;
			else if (*s == '\'' || *s == '"')
				quote = *s;
			else if (*s == '\\' && s[1] != '\0')
				w[len++] = *++s;
			else
				w[len++] = *s;
			if (inword)
				s++;
		}
		if (quote) {
			*why = "unterminated quote";
			free(w);
			util_free_words(words);
			return -1;
		}
		words = xreallocarray(words, n + 2, sizeof *words);
		words[n++] = xstrndup(w, len);
		words[n] = NULL;
	}
	free(w);
	if (n == 0) {
		*why = "empty command";
		return -1;
	}
	*out = words;
	return 0;
}

/* Free a NULL-ended word array. */
void
util_free_words(char **words)
{
	size_t	i;

	if (words == NULL)
		return;
	for (i = 0; words[i] != NULL; i++)
		free(words[i]);
	free(words);
}

/* Monotonic milliseconds, for timers and durations. */
int64_t
util_mono_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall-clock Unix milliseconds, for what people read. */
int64_t
util_wall_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * n bytes of kernel randomness, taken from a pool filled 4 KiB at a time:
 * every event and job id needs some, and a getrandom call for each was a
 * system call or two on every job's path.  Bytes are used once.
 */
static void
util_random_bytes(void *out, size_t n)
{
	static unsigned char	pool[4096];
	static size_t		left;

	if (n > left) {
		if (getrandom(pool, sizeof pool, 0) != (ssize_t)sizeof pool)
			fatal("getrandom");
		left = sizeof pool;
	}
	memcpy(out, pool + sizeof pool - left, n);
	/* what was handed out is not kept */
	memset(pool + sizeof pool - left, 0, n);
	left -= n;
}

/* Fill buf with 2*nbytes hex digits of kernel randomness and a NUL. */
void
util_random_hex(char *buf, size_t nbytes)
{
	static const char	 hex[] = "0123456789abcdef";
	unsigned char		 raw[64];
	size_t			 i;

	if (nbytes > sizeof raw)
		nbytes = sizeof raw;
	util_random_bytes(raw, nbytes);
	for (i = 0; i < nbytes; i++) {
		buf[2 * i] = hex[raw[i] >> 4];
		buf[2 * i + 1] = hex[raw[i] & 15];
	}
	buf[2 * nbytes] = '\0';
}

/* A uniform random number in [0, 1). */
double
util_random01(void)
{
	uint32_t	r;

	util_random_bytes(&r, sizeof r);
	return r / 4294967296.0;
}

/*
 * Backoff before attempt n+1 after n failures: base * 2^(n-1), scaled by a
 * jitter factor in [0.5, 1.5) so retries of a burst spread out, and kept
 * within [base, cap]: the bounds the configuration promises.
 */
int64_t
util_backoff_ms(int64_t base, int64_t cap, int failures, double rand01)
{
	double	d = (double)base;
	int	i;

	for (i = 1; i < failures && d < (double)cap; i++)
		d *= 2;
	d *= 0.5 + rand01;
	if (d > (double)cap)
		d = (double)cap;
	if (d < (double)base)
		d = (double)base;
	return (int64_t)d;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid. */
static size_t
util_utf8_seq(const unsigned char *s, size_t left)
{
	size_t		n, i;
	uint32_t	cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n > left)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/*
 * Copy bytes into valid UTF-8: each invalid byte and each NUL becomes
 * U+FFFD, so binary output is stored safely and visibly.
 */
char *
util_utf8_clean(const char *in, size_t len, size_t *outlen)
{
	const unsigned char	*s = (const unsigned char *)in;
	char			*out, *o;
	size_t			 i = 0, n;

	o = out = xmalloc(len * 3 + 1);
	while (i < len) {
		n = s[i] == 0 ? 0 : util_utf8_seq(s + i, len - i);
		if (n == 0) {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(o, s + i, n);
		o += n;
		i += n;
	}
	*o = '\0';
	*outlen = (size_t)(o - out);
	return out;
}

/*
 * Length of buf without an incomplete UTF-8 sequence at its end: output
 * cut at a cap may end inside a character, which would otherwise become a
 * replacement character and take the text over the cap.
 */
size_t
util_utf8_trim(const char *buf, size_t len)
{
	const unsigned char	*s = (const unsigned char *)buf;
	size_t			 i, need;

	for (i = 1; i <= 3 && i <= len; i++) {
		unsigned char	c = s[len - i];

		if ((c & 0xc0) == 0x80)
			continue;	/* a continuation byte: look further */
		if (c >= 0xf0)
			need = 4;
		else if (c >= 0xe0)
			need = 3;
		else if (c >= 0xc0)
			need = 2;
		else
			return len;
		return need > i ? len - i : len;
	}
	return len;
}

/* Event names: 1-200 characters of [A-Za-z0-9._:-]. */
int
util_valid_event_name(const char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++)
		if (!isalnum((unsigned char)s[n]) && strchr("._:-", s[n]) == NULL)
			return 0;
	return n >= 1 && n <= EVENT_NAME_MAX;
}

/* Handler names: 1-100 characters of [A-Za-z0-9._-]. */
int
util_valid_handler_name(const char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++)
		if (!isalnum((unsigned char)s[n]) && strchr("._-", s[n]) == NULL)
			return 0;
	return n >= 1 && n <= HANDLER_NAME_MAX;
}

/*
 * Parse a Redis address: "unix:/path" or "/path" (a unix socket, into
 * *path), else "[redis://]host[:port][/db]", with "[v6]:port" for IPv6
 * (into *host, *port, default 6379, and *db, default 0).  -1, with what
 * is wrong in err, if it is not one.
 */
int
util_parse_redis_addr(const char *s, char **path, char **host, int *port,
    int *db, char *err, size_t errlen)
{
	const char	*all = s;
	char		*h, *colon, *slash, *end;
	long		 v;

	*path = *host = NULL;
	*port = 6379;
	*db = 0;
	if (strncmp(s, "unix:", 5) == 0 || s[0] == '/') {
		s += s[0] == '/' ? 0 : 5;
		while (s[0] == '/' && s[1] == '/')
			s++;
		*path = xstrdup(s);
		return 0;
	}
	if (strncmp(s, "redis://", 8) == 0)
		s += 8;
	h = xstrdup(s);
	if ((slash = strchr(h, '/')) != NULL) {
		*slash++ = '\0';
		if (*slash != '\0' && util_parse_int(slash, 0, 1000, &v) == -1) {
			snprintf(err, errlen, "bad database number '%s'", slash);
			goto bad;
		}
		*db = *slash ? (int)v : 0;
	}
	if (h[0] == '[' && (end = strchr(h, ']')) != NULL) {
		*end = '\0';
		colon = end[1] == ':' ? end + 1 : NULL;
		memmove(h, h + 1, strlen(h + 1) + 1);
	} else
		colon = strrchr(h, ':');
	if (colon != NULL) {
		*colon++ = '\0';
		if (util_parse_int(colon, 1, 65535, &v) == -1) {
			snprintf(err, errlen, "bad port '%s'", colon);
			goto bad;
		}
		*port = (int)v;
	}
	if (h[0] == '\0') {
		snprintf(err, errlen, "no host in '%s'", all);
		goto bad;
	}
	*host = h;
	return 0;
bad:
	free(h);
	return -1;
}

/*
 * Read a secret (a password) from the first line of the file path, into
 * *out; the copy on the stack is wiped.  -1, with the reason in err, if
 * it cannot be read or is empty.
 */
int
util_read_secret(const char *path, char **out, char *err, size_t errlen)
{
	FILE	*fp;
	char	 buf[1024];
	size_t	 n;

	if ((fp = fopen(path, "re")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		snprintf(err, errlen, "%s: the password file is empty", path);
		return -1;
	}
	*out = xstrdup(buf);
	memset(buf, 0, sizeof buf);
	return 0;
}

/* The name a connection gives itself: dispatchd:AGENT:ROLE, no blanks. */
char *
util_client_name(const char *agent, const char *role)
{
	char	*name;
	size_t	 i;

	xasprintf(&name, "dispatchd:%s:%s", agent, role);
	for (i = 0; name[i] != '\0'; i++)
		if (name[i] == ' ')
			name[i] = '_';
	return name;
}

/* Set FD_CLOEXEC. */
int
util_set_cloexec(int fd)
{
	int	flags;

	if ((flags = fcntl(fd, F_GETFD)) == -1)
		return -1;
	return fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

/* Set O_NONBLOCK. */
int
util_set_nonblock(int fd)
{
	int	flags;

	if ((flags = fcntl(fd, F_GETFL)) == -1)
		return -1;
	return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/*
 * The handler contract: exit 0 is done; 75 (EX_TEMPFAIL) retries; the other
 * sysexits codes 64-78 are permanent; anything else, a signal or a timeout
 * retries until the attempts run out.
 */
enum exit_class
util_exit_class(int exited, int code, int signaled, int timed_out)
{
	if (timed_out || signaled || !exited)
		return EXIT_CLASS_FAIL;
	if (code == 0)
		return EXIT_CLASS_OK;
	if (code == EXIT_TEMPFAIL)
		return EXIT_CLASS_FAIL;
	if (code >= 64 && code <= 78)
		return EXIT_CLASS_FATAL;
	return EXIT_CLASS_FAIL;
}

/* This host's name, read once ("localhost" if the kernel will not say). */
const char *
util_hostname(void)
{
	static char	host[256];

	if (host[0] == '\0' && gethostname(host, sizeof host) == -1)
		strcpy(host, "localhost");
	host[sizeof host - 1] = '\0';
	return host;
}
