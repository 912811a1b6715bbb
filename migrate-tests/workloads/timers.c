/* Interval timers and the alternate signal stack: a 20 ms ITIMER_REAL
 * whose SIGALRM handler runs on an alternate stack and counts; every beat
 * the count must have grown, the handler must have run on the alternate
 * stack, and sigaltstack must report the same stack. */
#include "beat.h"
#include <signal.h>
#include <sys/time.h>

static volatile long alarms;
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
    long last = 0;
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
        beat(n);
    }
}
