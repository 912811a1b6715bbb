/* A locked region (mlock) of 64 KiB: every beat it must still be locked
 * (VmLck in /proc/self/status) and hold its pattern. And, where the kernel
 * has mseal(2), a sealed read-only page: every beat mprotect must still be
 * refused (EPERM) and the page read the same. */
#include "beat.h"
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static long locked_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

int main(void) {
    size_t len = 64 << 10;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mlock(p, len)) {
        fail("mlock", 0, 0);
        return 1;
    }
    for (size_t i = 0; i < len; i++) p[i] = (unsigned char)(i * 7);
    char *sealed = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sealed == MAP_FAILED) fail("mmap", errno, 0);
    sealed[0] = 42;
    int seal = !mprotect(sealed, 4096, PROT_READ) && !syscall(462, sealed, 4096, 0);
    for (long n = 1;; n++) {
        if (locked_kb() < 64) fail("locked kB", locked_kb(), 64);
        if (seal && (mprotect(sealed, 4096, PROT_READ | PROT_WRITE) == 0 || errno != EPERM)) fail("sealed page was unsealed", errno, EPERM);
        if (sealed[0] != 42) fail("sealed page", sealed[0], 42);
        for (size_t i = 0; i < len; i += 4093)
            if (p[i] != (unsigned char)(i * 7)) fail("pattern", p[i], (unsigned char)(i * 7));
        beat(n);
        nap_ms(100);
    }
}
