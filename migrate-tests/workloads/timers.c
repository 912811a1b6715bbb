/* Interval timers and the alternate signal stack: a 20 ms ITIMER_REAL
 * whose SIGALRM handler runs on an alternate stack and counts; every beat
 * the count must have grown, the handler must have run on the alternate
 * stack, and sigaltstack must report the same stack. Also a periodic POSIX
 * timer (SIGRTMIN, 30 ms) whose count must grow and whose ID must still
 * answer timer_gettime. */
#include "beat.h"
#include <signal.h>
#include <sys/time.h>
#include <time.h>

static volatile long alarms, rt_ticks;
static void on_rt(int sig) { (void)sig; rt_ticks++; }
static volatile int off_stack;
static char altstack[65536];

static void on_alarm(int sig) {
    (void)sig;
    char here;
    if (&here < altstack || &here >= altstack + sizeof altstack) off_stack = 1;
    alarms++;
}

int main(void) {
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigaction(SIGALRM, &sa, 0);
    struct itimerval it = {{0, 20000}, {0, 20000}};
    setitimer(ITIMER_REAL, &it, 0);
    struct sigaction rt = {0};
    rt.sa_handler = on_rt;
    rt.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN, &rt, 0);
    struct sigevent sev = {0};
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGRTMIN;
    timer_t tm;
    if (timer_create(CLOCK_MONOTONIC, &sev, &tm) != 0) { fail("timer_create", 0, 0); return 1; }
    struct itimerspec its = {{0, 30000000}, {0, 30000000}};
    timer_settime(tm, 0, &its, 0);
    long last = 0, last_rt = 0;
    for (long n = 1;; n++) {
        nap_ms(100);
        long a = alarms;
        if (a <= last) fail("timer stopped", a, last);
        last = a;
        if (off_stack) { fail("handler off the alternate stack", 0, 0); off_stack = 0; }
        stack_t cur;
        sigaltstack(0, &cur);
        if (cur.ss_sp != altstack || cur.ss_size != sizeof altstack) fail("sigaltstack", (long)cur.ss_size, sizeof altstack);
        struct itimerval now;
        getitimer(ITIMER_REAL, &now);
        if (now.it_interval.tv_usec != 20000) fail("itimer interval", now.it_interval.tv_usec, 20000);
        long r = rt_ticks;
        if (r <= last_rt) fail("POSIX timer stopped", r, last_rt);
        last_rt = r;
        struct itimerspec cur_rt;
        if (timer_gettime(tm, &cur_rt) != 0 || cur_rt.it_interval.tv_nsec != 30000000) fail("POSIX timer lost", (long)cur_rt.it_interval.tv_nsec, 30000000);
        beat(n);
    }
}
