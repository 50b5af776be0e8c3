/*
 * tap.h: a tiny TAP producer for the C unit tests.  ok() prints one test
 * line; done() prints the plan and returns the exit status.
 */
#ifndef TAP_H
#define TAP_H

#include <stdio.h>

static int	tap_n, tap_failed;

/* cond is evaluated once: it may have side effects. */
#define ok(cond, ...) do {						\
	int tap_ok = (cond) != 0;					\
									\
	tap_n++;							\
	if (!tap_ok)							\
		tap_failed++;						\
	printf("%sok %d - ", tap_ok ? "" : "not ", tap_n);		\
	printf(__VA_ARGS__);						\
	printf("\n");							\
	if (!tap_ok)							\
		printf("#   failed at %s:%d\n", __FILE__, __LINE__);	\
	fflush(stdout);							\
} while (0)

/* Print the plan; the exit status is non-zero if anything failed. */
static inline int
done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed != 0;
}

#endif
