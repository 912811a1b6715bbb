/* A locked region (mlock) of 64 KiB: every beat it must still be locked
 * (VmLck in /proc/self/status) and hold its pattern. */
#include "beat.h"
#include <sys/mman.h>

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
    for (long n = 1;; n++) {
        if (locked_kb() < 64) fail("locked kB", locked_kb(), 64);
        for (size_t i = 0; i < len; i += 4093)
            if (p[i] != (unsigned char)(i * 7)) fail("pattern", p[i], (unsigned char)(i * 7));
        beat(n);
        nap_ms(100);
    }
}
