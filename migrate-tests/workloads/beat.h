/* Shared by the workloads: a heartbeat every 100 ms, and FAIL lines that
 * the tests look for. Each workload checks its own state every beat. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

static void fail(const char *what, long a, long b) {
    printf("FAIL %s: %ld vs %ld\n", what, a, b);
    fflush(stdout);
}

static void beat(long n) {
    printf("beat %ld\n", n);
    fflush(stdout);
}

/* Makes directory `dir` with `n` empty files e00, e01..., each
 * `drop`th one deleted again (none if 0); returns it opened. */
static inline int make_listing(const char *dir, int n, int drop) {
    char f[600];
    mkdir(dir, 0700);
    for (int i = 0; i < n; i++) {
        snprintf(f, sizeof f, "%s/e%02d", dir, i);
        close(open(f, O_WRONLY | O_CREAT, 0600));
        if (drop && i % drop == 1) unlink(f);
    }
    return open(dir, O_RDONLY | O_DIRECTORY);
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
