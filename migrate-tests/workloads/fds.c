/* File descriptors that keep state in the kernel, checked every beat:
 * - a pipe and a stream socketpair, each always holding 64 queued records
 *   (one written and one read per beat: the sequence must continue with
 *   nothing lost or reordered),
 * - a datagram socketpair doing the same with message boundaries,
 * - an eventfd whose count must equal what was added minus what was read,
 * - a periodic timerfd that must keep expiring,
 * - a signalfd for SIGUSR1 (blocked) that must see the signal sent to self,
 * - an epoll over all of them that must report the readable ones,
 * - a child holding the other ends of a second pipe, writing to it, which
 *   shares the epoll (inherited) and registers its write end in it: the
 *   parent, which closed that end, must see it reported (one instance),
 * - two absolute timerfds an hour away: on the real-time clock, cancelled
 *   if the clock is set (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET), and
 *   on the monotonic clock (TFD_TIMER_ABSTIME); each must keep its flags
 *   (fdinfo) and its deadline (now plus what is left);
 * - a pipe shrunk to one page and one grown to 256 KiB (F_SETPIPE_SZ),
 *   which must keep their sizes;
 * - an epoll watching a pipe through an fd number closed since and taken
 *   by another file (the pipe held at another number): it must report the
 *   pipe readable, and know the registration by its old number only. */
#include "beat.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#define DEPTH 64
static long wseq[3], rseq_[3];

static void put(int fd, int k) {
    char rec[32];
    int n = snprintf(rec, sizeof rec, "rec %08ld\n", wseq[k]++);
    if (write(fd, rec, n) != n) fail("write record", k, errno);
}

static void take(int fd, int k) {
    char rec[32] = {0};
    int want = 13;
    int got = 0;
    while (got < want) {
        int n = read(fd, rec + got, want - got);
        if (n <= 0) { fail("read record", k, n); return; }
        got += n;
        if (k == 2) break; /* datagram: one read, one message */
    }
    long v = -1;
    if (got != 13 || sscanf(rec, "rec %ld", &v) != 1 || v != rseq_[k]) fail("record order", v, rseq_[k]);
    rseq_[k]++;
}

int main(void) {
    int p[2], s[2], d[2], c[2];
    if (pipe(p) || socketpair(AF_UNIX, SOCK_STREAM, 0, s) || socketpair(AF_UNIX, SOCK_DGRAM, 0, d) || pipe(c)) return 1;
    int ev = eventfd(0, EFD_NONBLOCK);
    int tf = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec its = {{0, 50000000}, {0, 50000000}};
    timerfd_settime(tf, 0, &its, 0);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigprocmask(SIG_BLOCK, &m, 0);
    int sf = signalfd(-1, &m, SFD_NONBLOCK);
    int ep = epoll_create1(0);
    int watched[] = {p[0], s[0], d[0], ev, tf, sf, c[0]};
    for (int i = 0; i < 7; i++) {
        struct epoll_event e = {EPOLLIN, {.u64 = 1000 + i}};
        epoll_ctl(ep, EPOLL_CTL_ADD, watched[i], &e);
    }
    if (fork() == 0) {
        close(c[0]);
        struct epoll_event e = {EPOLLOUT, {.u64 = 1010}};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c[1], &e)) _exit(1);
        for (long i = 0;; i++) {
            char b[16];
            int n = snprintf(b, sizeof b, "c%08ld\n", i);
            if (write(c[1], b, n) != n) _exit(1);
            nap_ms(100);
        }
    }
    close(c[1]);
    for (int i = 0; i < DEPTH; i++) {
        put(p[1], 0);
        put(s[1], 1);
        put(d[1], 2);
    }
    int tabs[2];
    struct timespec deadline[2];
    clockid_t clocks[2] = {CLOCK_REALTIME, CLOCK_MONOTONIC};
    int tflags[2] = {TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, TFD_TIMER_ABSTIME};
    for (int i = 0; i < 2; i++) {
        tabs[i] = timerfd_create(clocks[i], TFD_NONBLOCK);
        clock_gettime(clocks[i], &deadline[i]);
        deadline[i].tv_sec += 3600;
        struct itimerspec at = {{0, 0}, deadline[i]};
        if (tabs[i] < 0 || timerfd_settime(tabs[i], tflags[i], &at, 0)) fail("absolute timerfd", i, errno);
    }
    unsigned long added = 0, taken = 0;
    long child_next = 0;
    /* Made last, so that the other fds keep their numbers. A pipe shrunk to one page and one grown to 256 KiB (F_SETPIPE_SZ). */
    int small[2], big[2];
    if (pipe(small) || pipe(big) || fcntl(small[1], F_SETPIPE_SZ, 4096) != 4096 ||
        fcntl(big[0], F_SETPIPE_SZ, 262144) != 262144 || write(small[1], "s", 1) != 1)
        return 1;
    int ep2 = epoll_create1(0), q[2];
    if (ep2 < 0 || pipe(q)) return 1;
    int q_old = q[0], q_held = dup(q[0]);
    struct epoll_event e2 = {EPOLLIN, {.u64 = 77}};
    if (q_held < 0 || epoll_ctl(ep2, EPOLL_CTL_ADD, q_old, &e2) || close(q_old)) return 1;
    if (eventfd(0, 0) != q_old) return 1;
    for (long n = 1;; n++) {
        if (write(q[1], "q", 1) != 1) fail("ep2 pipe write", errno, 0);
        struct epoll_event got;
        if (epoll_wait(ep2, &got, 1, 0) != 1 || got.data.u64 != 77) fail("epoll through a closed number", got.data.u64, 77);
        char qb;
        if (read(q_held, &qb, 1) != 1) fail("ep2 pipe read", errno, 0);
        /* Known by the number it was made through, not by the file's
         * number now. */
        if (epoll_ctl(ep2, EPOLL_CTL_MOD, q_held, &e2) != -1 || errno != ENOENT) fail("epoll key", errno, ENOENT);
        if (epoll_ctl(ep2, EPOLL_CTL_MOD, q_old, &e2) != -1 || errno != ENOENT) fail("epoll key (reused)", errno, ENOENT);
        if (fcntl(small[0], F_GETPIPE_SZ) != 4096) fail("shrunk pipe's size", fcntl(small[0], F_GETPIPE_SZ), 4096);
        if (fcntl(big[1], F_GETPIPE_SZ) != 262144) fail("grown pipe's size", fcntl(big[1], F_GETPIPE_SZ), 262144);
        /* Every object is ready: epoll must say so for the queues. */
        struct epoll_event out[8];
        uint64_t ev_val = 3;
        write(ev, &ev_val, 8);
        added += 3;
        kill(getpid(), SIGUSR1);
        nap_ms(100);
        int k = epoll_wait(ep, out, 8, 0);
        int seen = 0;
        for (int i = 0; i < k; i++) seen |= 1 << (out[i].data.u64 - 1000);
        if ((seen & 0x3f) != 0x3f) fail("epoll readiness", seen, 0x3f);
        if (n > 1 && !(seen & 1 << 10)) fail("the child's registration in the shared epoll", seen, 1 << 10);
        uint64_t v;
        if (read(ev, &v, 8) != 8) fail("eventfd read", 0, 0);
        taken += v;
        if (taken != added) fail("eventfd count", taken, added);
        uint64_t ticks = 0;
        if (read(tf, &ticks, 8) != 8 || ticks == 0) fail("timerfd stopped", ticks, 0);
        for (int i = 0; i < 2; i++) {
            char path[64], info[512];
            snprintf(path, sizeof path, "/proc/self/fdinfo/%d", tabs[i]);
            FILE *f = fopen(path, "r");
            size_t got = f ? fread(info, 1, sizeof info - 1, f) : 0;
            if (f) fclose(f);
            info[got] = 0;
            char *sf_ = strstr(info, "settime flags:");
            int flags = sf_ ? (int)strtol(sf_ + 14, NULL, 8) : -1;
            if (flags != tflags[i]) fail("absolute timerfd settime flags", i, flags);
            struct itimerspec left;
            struct timespec now;
            timerfd_gettime(tabs[i], &left);
            clock_gettime(clocks[i], &now);
            long end = now.tv_sec + left.it_value.tv_sec + (now.tv_nsec + left.it_value.tv_nsec) / 1000000000;
            if (end < deadline[i].tv_sec - 1 || end > deadline[i].tv_sec + 1) fail("absolute timerfd deadline", i, end - deadline[i].tv_sec);
        }
        struct signalfd_siginfo si;
        if (read(sf, &si, sizeof si) != sizeof si || si.ssi_signo != SIGUSR1) fail("signalfd", si.ssi_signo, SIGUSR1);
        take(p[0], 0);
        take(s[0], 1);
        take(d[0], 2);
        put(p[1], 0);
        put(s[1], 1);
        put(d[1], 2);
        char cb[64];
        int cn = read(c[0], cb, sizeof cb - 1);
        if (cn > 0) {
            cb[cn] = 0;
            for (char *q = cb; (q = strchr(q, 'c')); q++) {
                long x = strtol(q + 1, 0, 10);
                if (x != child_next) fail("child pipe order", x, child_next);
                child_next = x + 1;
            }
        }
        beat(n);
    }
}
