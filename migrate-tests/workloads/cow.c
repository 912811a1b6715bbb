/* Pages shared copy-on-write: the parent fills 64 pages of a private
 * anonymous mapping and a 16-page heap-like second one, then forks; the
 * child rewrites pages 0-15 of the first (its own copies now) and leaves
 * the rest as the parent wrote them (still the parent's pages); page 63
 * is never touched by either after the fork, pages 60-62 were never
 * written at all (read, they map the kernel's zero page). Both check every page every beat. Prints
 * "region ADDR" for the test, which compares which pages the two share
 * (/proc/PID/pagemap) before and after. */
#include "beat.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGES 64
#define PG 4096

static unsigned char *region;

static void check(int child) {
    for (int i = 0; i < PAGES; i++) {
        unsigned char want = (i >= 60 && i < 63) ? 0 : (child && i < 16) ? (unsigned char)(0x80 + i) : (unsigned char)(i + 1);
        for (int k = 0; k < PG; k += 512)
            if (region[i * PG + k] != want) fail(child ? "child page" : "parent page", i, region[i * PG + k]);
    }
}

int main(void) {
    region = mmap(NULL, PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) fail("mmap", 0, 0);
    for (int i = 0; i < PAGES; i++)
        if (i < 60 || i == 63) memset(region + i * PG, i + 1, PG);
    printf("region %p\n", (void *)region);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        for (int i = 0; i < 16; i++) memset(region + i * PG, 0x80 + i, PG);
        for (;;) {
            check(1);
            nap_ms(100);
        }
    }
    for (long n = 1;; n++) {
        check(0);
        int st;
        if (waitpid(c, &st, WNOHANG) == c) fail("child exited", st, 0);
        beat(n);
        nap_ms(100);
    }
}
