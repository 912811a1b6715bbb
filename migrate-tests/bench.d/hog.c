/* Benchmark workload: N MiB of resident anonymous memory (poorly
 * compressible, like real heaps), written in bulk, then a heartbeat.
 * usage: hog MiB */
#include "../workloads/beat.h"
#include <sys/mman.h>

int main(int argc, char **argv) {
    size_t len = (size_t)strtoul(argc > 1 ? argv[1] : "64", 0, 10) << 20;
    unsigned long *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (m == MAP_FAILED) { fail("mmap", 0, 0); return 1; }
    for (size_t i = 0; i < len / 8; i++) m[i] = (i * 0x9E3779B97F4A7C15UL) >> (i & 15);
    printf("ready\n");
    for (long n = 1;; n++) {
        for (size_t i = 0; i < len / 8; i += 4099)
            if (m[i] != (i * 0x9E3779B97F4A7C15UL) >> (i & 15)) { fail("pattern", i, 0); break; }
        beat(n);
        nap_ms(100);
    }
}
