/*
 * tap.h: a tiny TAP producer for the C unit tests.  ok() prints one test
 * line; done() prints the plan and returns the exit status.
 */
#ifndef TAP_H
#define TAP_H

#include <stdio.h>

static int	tap_n, tap_failed;

#define ok(cond, ...) do {						\
	tap_n++;							\
	if (!(cond))							\
		tap_failed++;						\
	printf("%sok %d - ", (cond) ? "" : "not ", tap_n);		\
	printf(__VA_ARGS__);						\
	printf("\n");							\
	if (!(cond))							\
		printf("#   failed at %s:%d\n", __FILE__, __LINE__);	\
} while (0)

/* Print the plan; the exit status is non-zero if anything failed. */
static inline int
done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed != 0;
}

#endif
