/* A process tree: PID 1 with a child that has a grandchild, and a zombie
 * child (exit status 7) that is never reaped. Everyone checks its PID and
 * parent every beat. */
#include "beat.h"
#include <signal.h>
#include <sys/wait.h>

static void watch_parent(pid_t me, pid_t parent) {
    for (;;) {
        if (getpid() != me) fail("pid changed", getpid(), me);
        if (getppid() != parent) fail("ppid changed", getppid(), parent);
        nap_ms(100);
    }
}

int main(void) {
    pid_t zombie = fork();
    if (zombie == 0) _exit(7);
    pid_t child = fork();
    if (child == 0) {
        pid_t me = getpid(), parent = getppid();
        setpgid(0, 0); /* a process group of its own */
        pid_t grandchild = fork();
        if (grandchild == 0) watch_parent(getpid(), me);
        watch_parent(me, parent);
    }
    pid_t me = getpid();
    /* Start checking once the tree is complete. */
    siginfo_t first = {0};
    waitid(P_PID, zombie, &first, WEXITED | WNOWAIT);
    while (getpgid(child) != child) nap_ms(5);
    for (long n = 1;; n++) {
        if (getpid() != me) fail("pid 1 changed", getpid(), me);
        siginfo_t si = {0};
        if (waitid(P_PID, zombie, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != zombie || si.si_status != 7)
            fail("zombie lost", si.si_pid, zombie);
        if (kill(child, 0) != 0) fail("child gone", child, 0);
        if (getpgid(child) != child) fail("child pgid", getpgid(child), child);
        beat(n);
        nap_ms(100);
    }
}
