/* The harness's default workload: a heartbeat every 100 ms with the
 * container's CLOCK_MONOTONIC and CLOCK_BOOTTIME. It prints FAIL if either
 * goes back, or jumps forward by more than 5 s between beats: across a
 * migration between two kernels booted at different times, the time
 * namespace must make them continue. Built static for the VMs. */
#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
    double mono = now(CLOCK_MONOTONIC), boot = now(CLOCK_BOOTTIME);
    for (long n = 1;; n++) {
        double m = now(CLOCK_MONOTONIC), b = now(CLOCK_BOOTTIME);
        if (m < mono || m - mono > 5) printf("FAIL monotonic %.3f -> %.3f\n", mono, m);
        if (b < boot || b - boot > 5) printf("FAIL boottime %.3f -> %.3f\n", boot, b);
        mono = m;
        boot = b;
        printf("beat %ld mono=%.3f\n", n, m);
        fflush(stdout);
        struct timespec ts = {0, 100000000};
        while (nanosleep(&ts, &ts) != 0) {}
    }
}
