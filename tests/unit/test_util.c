/*
 * test_util.c: durations, sizes, numbers, exec word splitting, backoff,
 * UTF-8 cleaning, names, Redis addresses, the password file and the exit
 * classification of the handler contract.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../agent/dispatchd.h"
#include "tap.h"

static int
dur(const char *s, int64_t want)
{
	int64_t	ms = -1;

	return util_parse_duration(s, &ms) == 0 && ms == want;
}

static int
dur_bad(const char *s)
{
	int64_t	ms;

	return util_parse_duration(s, &ms) == -1;
}

static int
size_is(const char *s, size_t want)
{
	size_t	n = 0;

	return util_parse_size(s, &n) == 0 && n == want;
}

static int
size_bad(const char *s)
{
	size_t	n;

	return util_parse_size(s, &n) == -1;
}

/* Split and compare with the expected words, NULL-ended. */
static int
words(const char *line, const char **want)
{
	char		**w;
	const char	 *why;
	size_t		  i;
	int		  same = 1;

	if (util_split_words(line, &w, &why) == -1)
		return want == NULL;
	if (want == NULL) {
		util_free_words(w);
		return 0;
	}
	for (i = 0; want[i] != NULL || w[i] != NULL; i++)
		if (want[i] == NULL || w[i] == NULL || strcmp(want[i], w[i])) {
			same = 0;
			break;
		}
	util_free_words(w);
	return same;
}

/* Parse a Redis address; compare with what is wanted ("" for NULL). */
static int
addr(const char *s, const char *path, const char *host, int port, int db)
{
	char	*p, *h, err[128];
	int	 pt, d, ok;

	if (util_parse_redis_addr(s, &p, &h, &pt, &d, err, sizeof err) == -1)
		return 0;
	ok = strcmp(p ? p : "", path) == 0 && strcmp(h ? h : "", host) == 0 &&
	    pt == port && d == db;
	free(p);
	free(h);
	return ok;
}

/* A bad address, and the start of the reason given. */
static int
addr_bad(const char *s, const char *why)
{
	char	*p, *h, err[128];
	int	 pt, d;

	return util_parse_redis_addr(s, &p, &h, &pt, &d, err, sizeof err) ==
	    -1 && strncmp(err, why, strlen(why)) == 0;
}

/* util_read_secret over a file holding text. */
static int
secret(const char *text, const char *want)
{
	char	 path[] = "/tmp/test_util.XXXXXX", *out = NULL, err[256];
	FILE	*fp;
	int	 fd, ok;

	if ((fd = mkstemp(path)) == -1 || (fp = fdopen(fd, "w")) == NULL)
		return 0;
	fputs(text, fp);
	fclose(fp);
	ok = util_read_secret(path, &out, err, sizeof err) == 0 ?
	    want != NULL && strcmp(out, want) == 0 : want == NULL;
	unlink(path);
	free(out);
	return ok;
}

int
main(void)
{
	const char	*w1[] = { "/bin/echo", "a", "b c", NULL };
	const char	*w2[] = { "/x", "it's", "$HOME", "a\"b", NULL };
	const char	*w3[] = { "/x", "a b", "", NULL };
	char		*clean;
	size_t		 n;
	long		 v;
	int		 i, in_range;

	ok(dur("250ms", 250), "250ms");
	ok(dur("30s", 30000), "30s");
	ok(dur("15m", 900000), "15m");
	ok(dur("2h", 7200000), "2h");
	ok(dur("1d", 86400000), "1d");
	ok(dur("1.5s", 1500), "1.5s");
	ok(dur("10", 10000), "bare number is seconds");
	ok(dur("0", 0), "zero");
	ok(dur_bad(""), "empty duration rejected");
	ok(dur_bad("-1s"), "negative duration rejected");
	ok(dur_bad("5 s"), "blank inside rejected");
	ok(dur_bad("5x"), "unknown unit rejected");
	ok(dur_bad("s"), "unit alone rejected");
	ok(dur_bad("nan"), "nan rejected");

	ok(size_is("512", 512), "512");
	ok(size_is("64k", 65536), "64k");
	ok(size_is("1m", 1048576), "1m");
	ok(size_is("1M", 1048576), "1M");
	ok(size_is("2g", 2147483648UL), "2g");
	ok(size_is("64KiB", 65536), "64KiB");
	ok(size_bad("-1"), "negative size rejected");
	ok(size_bad("1t"), "unknown size unit rejected");
	ok(size_bad("k"), "unit alone rejected");

	ok(util_parse_int("4", 1, 10, &v) == 0 && v == 4, "int in range");
	ok(util_parse_int("0660", 0, 0777, &v) == 0 && v == 0660, "octal");
	ok(util_parse_int("11", 1, 10, &v) == -1, "int over max rejected");
	ok(util_parse_int("4x", 1, 10, &v) == -1, "trailing junk rejected");

	ok(words("/bin/echo a \"b c\"", w1), "double quotes group words");
	ok(words("/x \"it's\" '$HOME' 'a\"b'", w2), "quotes keep text literal");
	ok(words("/x a\\ b ''", w3), "backslash and empty word");
	ok(words("/x 'open", NULL), "unterminated quote rejected");
	ok(words("   ", NULL), "empty command rejected");

	ok(util_backoff_ms(1000, 60000, 1, 0.5) == 1000, "first backoff is base");
	ok(util_backoff_ms(1000, 60000, 3, 0.5) == 4000, "doubles per failure");
	ok(util_backoff_ms(1000, 60000, 30, 0.5) == 60000, "capped");
	ok(util_backoff_ms(1000, 60000, 1, 0.0) == 1000,
	    "jitter never goes below base");
	ok(util_backoff_ms(1000, 60000, 30, 0.99) == 60000,
	    "jitter never goes above cap");
	in_range = 1;
	for (i = 0; i < 1000; i++) {
		int64_t	b = util_backoff_ms(1000, 60000, 2,
		    util_random01());
		int64_t	c = util_backoff_ms(100, 200, 3, util_random01());
		if (b < 1000 || b >= 3000 || c < 100 || c > 200)
			in_range = 0;
	}
	ok(in_range, "jittered backoff stays within [0.5x, 1.5x) and the "
	    "bounds");

	clean = util_utf8_clean("ok \xc3\xa9", 5, &n);
	ok(n == 5 && memcmp(clean, "ok \xc3\xa9", 5) == 0, "valid UTF-8 kept");
	free(clean);
	clean = util_utf8_clean("a\xff" "b\0c", 5, &n);
	ok(n == 9 && strcmp(clean, "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c") == 0,
	    "invalid byte and NUL become U+FFFD");
	free(clean);
	clean = util_utf8_clean("\xed\xa0\x80", 3, &n);
	ok(n == 9, "surrogates are not valid UTF-8");
	free(clean);

	ok(util_utf8_trim("ab\xe2\x82", 4) == 2, "cut euro sign trimmed");
	ok(util_utf8_trim("ab\xe2\x82\xac", 5) == 5, "whole euro sign kept");
	ok(util_utf8_trim("ab\xf0", 3) == 2, "lone 4-byte lead trimmed");
	ok(util_utf8_trim("abc", 3) == 3, "ASCII untouched");

	ok(util_valid_event_name("order.paid"), "event name");
	ok(util_valid_event_name("a:b-c_d.e"), "event name punctuation");
	ok(!util_valid_event_name(""), "empty event name");
	ok(!util_valid_event_name("a b"), "blank in event name");
	ok(!util_valid_event_name("a*"), "glob in event name");
	ok(util_valid_handler_name("sms-2.x_y"), "handler name");
	ok(!util_valid_handler_name("a:b"), "colon in handler name");

	ok(util_exit_class(1, 0, 0, 0) == EXIT_CLASS_OK, "exit 0 done");
	ok(util_exit_class(1, 75, 0, 0) == EXIT_CLASS_FAIL, "exit 75 retry");
	ok(util_exit_class(1, 65, 0, 0) == EXIT_CLASS_FATAL, "exit 65 dead");
	ok(util_exit_class(1, 64, 0, 0) == EXIT_CLASS_FATAL, "exit 64 dead");
	ok(util_exit_class(1, 78, 0, 0) == EXIT_CLASS_FATAL, "exit 78 dead");
	ok(util_exit_class(1, 1, 0, 0) == EXIT_CLASS_FAIL, "exit 1 retry");
	ok(util_exit_class(1, 79, 0, 0) == EXIT_CLASS_FAIL, "exit 79 retry");
	ok(util_exit_class(0, 0, 1, 0) == EXIT_CLASS_FAIL, "signal retry");
	ok(util_exit_class(1, 0, 0, 1) == EXIT_CLASS_FAIL,
	    "timeout retry even if it then exited 0");
	ok(addr("unix:/run/redis.sock", "/run/redis.sock", "", 6379, 0),
	    "unix: address");
	ok(addr("unix:///run/r.sock", "/run/r.sock", "", 6379, 0),
	    "unix:// address");
	ok(addr("/run/r.sock", "/run/r.sock", "", 6379, 0), "bare path");
	ok(addr("10.0.0.5", "", "10.0.0.5", 6379, 0), "host, default port");
	ok(addr("10.0.0.5:6380", "", "10.0.0.5", 6380, 0), "host:port");
	ok(addr("redis://r1:7000/3", "", "r1", 7000, 3), "redis://host:port/db");
	ok(addr("redis://r1/", "", "r1", 6379, 0), "empty database");
	ok(addr("[::1]:6390", "", "::1", 6390, 0), "[v6]:port");
	ok(addr_bad("r1:0", "bad port '0'"), "port 0 rejected");
	ok(addr_bad("r1:x", "bad port"), "port not a number");
	ok(addr_bad("r1/1001", "bad database number"), "database over 1000");
	ok(addr_bad("redis://:6379", "no host in 'redis://:6379'"),
	    "no host");

	ok(secret("pa ss\nmore\n", "pa ss"), "secret: the first line");
	ok(secret("pw\r\n", "pw"), "secret: CRLF cut");
	ok(secret("\nlater\n", NULL), "secret: empty first line refused");
	ok(secret("", NULL), "secret: empty file refused");
	{
		char	*out = NULL, err[256];

		ok(util_read_secret("/nonexistent/pw", &out, err, sizeof err) ==
		    -1 && strstr(err, "/nonexistent/pw") != NULL,
		    "secret: a missing file names itself");
	}
	{
		char	*name = util_client_name("web 1", "cmd-ask");

		ok(strcmp(name, "dispatchd:web_1:cmd-ask") == 0,
		    "client name without blanks");
		free(name);
	}
	return done();
}
