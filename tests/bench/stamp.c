/*
 * stamp.c: a handler for the latency benchmarks.  It prints the wall clock
 * (Unix microseconds) at which it started running, then exits 0; dispatchd
 * stores the line in the results stream's stdout field.
 */
#include <stdio.h>
#include <time.h>

int
main(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	printf("%lld\n", (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
	return 0;
}
