/* Memory: a large region with a fixed pattern, a region rewritten every
 * beat, a region where each beat rewrites one page and drops another
 * (MADV_DONTNEED: it must read as zero, also when a live migration had
 * sent it earlier), a private copy-on-write file page, an anonymous
 * shared page that a child increments while the parent watches, and two
 * anonymous mappings side by side that the kernel keeps apart (each had a
 * page, its own anon_vma, before they met; the child inherits them): they
 * must stay two.
 * usage: memory [MiB]   (default 32) */
#include "beat.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

/* Whether /proc/self/maps has a mapping that starts at `at`. */
static int mapping_starts_at(void *at) {
    char want[32], line[512];
    int found = 0;
    snprintf(want, sizeof want, "%lx-", (unsigned long)at);
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    while (!found && fgets(line, sizeof line, f)) found = strncmp(line, want, strlen(want)) == 0;
    fclose(f);
    return found;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 32;
    size_t len = mib << 20, words = len / 8;
    unsigned long *big = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (big == MAP_FAILED) { fail("mmap big", 0, 0); return 1; }
    for (size_t i = 0; i < words; i++) big[i] = i * 2654435761UL;
    size_t hot_len = 1 << 20;
    unsigned long *hot = malloc(hot_len);
    int fd = open("/proc/self/exe", O_RDONLY);
    char *cow = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (cow == MAP_FAILED) { fail("mmap cow", 0, 0); return 1; }
    memcpy(cow, "COWDATA!", 8);
    volatile long *shared = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    shared[0] = 0;
    char *apart = mmap(0, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *other = mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (apart == MAP_FAILED || other == MAP_FAILED) { fail("mmap apart", 0, 0); return 1; }
    apart[0] = 'A';
    other[0] = 'B';
    munmap(apart + 2 * 4096, 2 * 4096);
    other = mremap(other, 2 * 4096, 2 * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, apart + 2 * 4096);
    if (other != apart + 2 * 4096 || mapping_starts_at(other) != 1) { fail("mappings kept apart, made", 0, 0); return 1; }
    pid_t child = fork();
    if (child == 0) {
        /* The child checks the big region it shares copy-on-write with
         * its parent, and keeps the shared page counting. */
        for (long i = 0;; i++) {
            shared[0]++;
            if (i % 25 == 0)
                for (size_t w = 0; w < words; w += 509)
                    if (big[w] != w * 2654435761UL) { fail("child's copy-on-write pattern", big[w], w); break; }
            nap_ms(20);
        }
    }
    enum { MIX = 256 };
    unsigned long *mix = mmap(0, MIX * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    static unsigned long mix_want[MIX];
    if (mix == MAP_FAILED) { fail("mmap mix", 0, 0); return 1; }
    for (size_t p = 0; p < MIX; p++) mix[p * 512] = mix_want[p] = p + 1;
    long last_shared = -1, stalled = 0;
    for (long n = 1;; n++) {
        for (size_t p = 0; p < MIX; p++)
            for (size_t w = 0; w < 512; w += 511)
                if (mix[p * 512 + w] != (w ? 0 : mix_want[p])) { fail("mixed region page", mix[p * 512 + w], p); break; }
        size_t wr = (size_t)n % MIX, drop = ((size_t)n * 7 + 3) % MIX;
        mix[wr * 512] = mix_want[wr] = (unsigned long)n << 8 | wr;
        if (drop != wr) {
            madvise(mix + drop * 512, 4096, MADV_DONTNEED);
            mix_want[drop] = 0;
        }
        for (size_t i = 0; i < words; i += 509)
            if (big[i] != i * 2654435761UL) { fail("big pattern", big[i], i); break; }
        if (n > 1)
            for (size_t i = 0; i < hot_len / 8; i += 64)
                if (hot[i] != (unsigned long)(n - 1) + i) { fail("hot region", hot[i], n - 1 + i); break; }
        for (size_t i = 0; i < hot_len / 8; i++) hot[i] = n + i;
        if (memcmp(cow, "COWDATA!", 8) != 0) fail("cow page", cow[0], 'C');
        if (apart[0] != 'A' || other[0] != 'B' || other[4096] != 0) fail("mappings kept apart", apart[0], other[0]);
        if (mapping_starts_at(other) != 1) fail("mappings kept apart are one", 0, 0);
        long s = shared[0];
        /* Three beats without a step: not a child the scheduler left behind
         * for a moment under load (a thaw does not wake all at once), but a
         * page no longer shared. */
        stalled = s <= last_shared ? stalled + 1 : 0;
        if (n > 5 && stalled >= 3) fail("shared page stopped", s, last_shared);
        last_shared = s;
        beat(n);
        nap_ms(100);
    }
}
