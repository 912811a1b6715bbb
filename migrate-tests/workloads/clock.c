/* Time: CLOCK_MONOTONIC and CLOCK_BOOTTIME never go back, and never jump
 * forward between beats by more than a second (so not by the time spent
 * checkpointed either), or by argv[1] ms if given (a slow machine's
 * downtime). */
#include "beat.h"

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long max_ms = argc > 1 ? atol(argv[1]) : 1000;
    double max = max_ms / 1000.0;
    double mono = now(CLOCK_MONOTONIC), boot = now(CLOCK_BOOTTIME);
    for (long n = 1;; n++) {
        nap_ms(100);
        double m = now(CLOCK_MONOTONIC), b = now(CLOCK_BOOTTIME);
        if (m < mono) fail("monotonic went back (ms)", (long)(mono * 1000), (long)(m * 1000));
        if (b < boot) fail("boottime went back (ms)", (long)(boot * 1000), (long)(b * 1000));
        if (m - mono > max) fail("monotonic jumped forward (ms)", (long)((m - mono) * 1000), max_ms);
        if (b - boot > max) fail("boottime jumped forward (ms)", (long)((b - boot) * 1000), max_ms);
        mono = m;
        boot = b;
        beat(n);
    }
}
