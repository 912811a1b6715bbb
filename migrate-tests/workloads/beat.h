/* Shared by the workloads: a heartbeat every 100 ms, and FAIL lines that
 * the tests look for. Each workload checks its own state every beat. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *what, long a, long b) {
    printf("FAIL %s: %ld vs %ld\n", what, a, b);
    fflush(stdout);
}

static void beat(long n) {
    printf("beat %ld\n", n);
    fflush(stdout);
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
}
