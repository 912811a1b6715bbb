/* Prints a numbered line every 100 us straight to stdout (the container's
 * log), with one write each: a line lost or repeated at a migration shows
 * as a gap in the numbers. */
#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    char buf[32];
    for (long i = 1;; i++) {
        int n = snprintf(buf, sizeof buf, "line %ld\n", i);
        if (write(1, buf, n) != n) return 1;
        struct timespec ts = {0, 100000L};
        while (nanosleep(&ts, &ts) != 0) {}
    }
}
