/* The machine's own limits, for the benchmark: single-thread memcpy
 * bandwidth, /proc/PID/mem read bandwidth from another process, and how
 * fast the kernel hands out fresh memory (mmap with MAP_POPULATE of pages
 * never touched before: what an image on tmpfs and a restored process
 * must pay for every page).
 * usage: limits MiB   -> prints "memcpy_gbps X\nfresh_gbps Z\nprocmem_gbps Y" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    size_t len = (size_t)strtoul(argc > 1 ? argv[1] : "256", 0, 10) << 20;
    char *a = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    char *b = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    memset(a, 1, len);
    memset(b, 2, len);
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        double t = now();
        memcpy(b, a, len);
        t = now() - t;
        if (t < best) best = t;
    }
    printf("memcpy_gbps %.3f\n", len / best / 1e9);
    double t = now();
    char *fresh = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    t = now() - t;
    if (fresh == MAP_FAILED) return 1;
    printf("fresh_gbps %.3f\n", len / t / 1e9);
    munmap(fresh, len);
    fflush(stdout);
    /* A child reads our memory through /proc/PID/mem in 1 MiB reads, as
     * the dumper does. */
    int pfd[2];
    if (pipe(pfd) != 0) return 1;
    pid_t parent = getpid();
    if (fork() == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/mem", parent);
        int fd = open(path, O_RDONLY);
        char *buf = malloc(1 << 20);
        memset(buf, 0, 1 << 20);
        double bestr = 1e9;
        for (int r = 0; r < 3; r++) {
            double t = now();
            for (size_t off = 0; off < len; off += 1 << 20)
                if (pread(fd, buf, 1 << 20, (off_t)(unsigned long)(a + off)) != 1 << 20) _exit(2);
            t = now() - t;
            if (t < bestr) bestr = t;
        }
        dprintf(pfd[1], "procmem_gbps %.3f\n", len / bestr / 1e9);
        _exit(0);
    }
    close(pfd[1]);
    wait(0);
    char out[64] = {0};
    if (read(pfd[0], out, sizeof out - 1) <= 0) return 1;
    fputs(out, stdout);
    return 0;
}
