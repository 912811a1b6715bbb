/* Time: CLOCK_MONOTONIC and CLOCK_BOOTTIME never go back, and never jump
 * forward by more than a second between beats (so not by the time spent
 * checkpointed either). */
#include "beat.h"

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
    double mono = now(CLOCK_MONOTONIC), boot = now(CLOCK_BOOTTIME);
    for (long n = 1;; n++) {
        nap_ms(100);
        double m = now(CLOCK_MONOTONIC), b = now(CLOCK_BOOTTIME);
        if (m < mono) fail("monotonic went back (ms)", (long)(mono * 1000), (long)(m * 1000));
        if (b < boot) fail("boottime went back (ms)", (long)(boot * 1000), (long)(b * 1000));
        if (m - mono > 1.0) fail("monotonic jumped forward (ms)", (long)((m - mono) * 1000), 1000);
        if (b - boot > 1.0) fail("boottime jumped forward (ms)", (long)((b - boot) * 1000), 1000);
        mono = m;
        boot = b;
        beat(n);
    }
}
