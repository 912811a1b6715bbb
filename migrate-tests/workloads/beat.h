/* Shared by the workloads: a heartbeat every 100 ms, and FAIL lines that
 * the tests look for. Each workload checks its own state every beat. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

static void fail(const char *what, long a, long b) {
    printf("FAIL %s: %ld vs %ld\n", what, a, b);
    fflush(stdout);
}

static void beat(long n) {
    printf("beat %ld\n", n);
    fflush(stdout);
}

/* Reads `n` entries of directory `d`, one at a time (names of up to 16
 * bytes: room for one entry, not two); nonzero if it has fewer. */
static inline int skip_entries(int d, int n) {
    char buf[40];
    for (int i = 0; i < n; i++)
        if (getdents64(d, buf, sizeof buf) <= 0) return 1;
    return 0;
}

/* The name of the next entry of directory `d`, its offset left as it was. */
static inline void next_entry(int d, char *name, size_t len) {
    char buf[512];
    off_t pos = lseek(d, 0, SEEK_CUR);
    long n = getdents64(d, buf, sizeof buf);
    name[0] = 0;
    if (n > 0) snprintf(name, len, "%.255s", ((struct dirent64 *)buf)->d_name);
    lseek(d, pos, SEEK_SET);
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
}
