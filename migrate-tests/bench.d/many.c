/* Benchmark workload: N processes (default 100) of 1 MiB of resident
 * anonymous memory each: the parent and N-1 children. Each child checks
 * its memory every 100 ms and exits with FAIL on damage; the parent prints
 * a heartbeat and FAIL if a child is gone.
 * usage: many [N] */
#include "../workloads/beat.h"
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MIB (1UL << 20)

static unsigned long *fill(unsigned long seed) {
    unsigned long *m = mmap(0, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    for (size_t i = 0; i < MIB / 8; i++) m[i] = (i + seed) * 0x9E3779B97F4A7C15UL;
    return m;
}

static int intact(unsigned long *m, unsigned long seed) {
    for (size_t i = 0; i < MIB / 8; i += 511)
        if (m[i] != (i + seed) * 0x9E3779B97F4A7C15UL) return 0;
    return 1;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    for (int k = 1; k < n; k++) {
        if (fork() == 0) {
            unsigned long *m = fill(k);
            for (;;) {
                if (!intact(m, k)) { fail("child memory", k, 0); _exit(1); }
                nap_ms(100);
            }
        }
    }
    unsigned long *m = fill(0);
    printf("ready\n");
    for (long b = 1;; b++) {
        if (!intact(m, 0)) fail("parent memory", 0, 0);
        int st;
        pid_t gone = waitpid(-1, &st, WNOHANG);
        if (gone > 0) fail("a child exited", gone, st);
        beat(b);
        nap_ms(100);
    }
}
