/* Migration benchmark workload: N MiB of resident anonymous memory
 * (poorly compressible), then writes R MiB/s of it at a steady rate,
 * page after page around the region, and checks each page it passes.
 * A heartbeat every 100 ms.
 * usage: dirty MiB MiB_per_s */
#include "../workloads/beat.h"
#include <sys/mman.h>

#define PAGE 4096UL

int main(int argc, char **argv) {
    size_t len = (size_t)strtoul(argc > 1 ? argv[1] : "256", 0, 10) << 20;
    double rate = argc > 2 ? atof(argv[2]) : 10;
    size_t pages = len / PAGE;
    unsigned long *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (m == MAP_FAILED) { fail("mmap", 0, 0); return 1; }
    for (size_t i = 0; i < len / 8; i++) m[i] = (i * 0x9E3779B97F4A7C15UL) >> (i & 15);
    for (size_t p = 0; p < pages; p++) m[p * PAGE / 8] = p;
    printf("ready\n");
    /* Pages per 10 ms tick. */
    double per_tick = rate * 1024 * 1024 / PAGE / 100, owed = 0;
    size_t next = 0;
    for (long tick = 0, n = 1;; tick++) {
        owed += per_tick;
        while (owed >= 1) {
            unsigned long *pg = m + next * PAGE / 8;
            if (pg[0] != next) { fail("page", (long)next, (long)pg[0]); return 1; }
            pg[1]++;
            next = (next + 1) % pages;
            owed -= 1;
        }
        if (tick % 10 == 0) beat(n++);
        nap_ms(10);
    }
}
