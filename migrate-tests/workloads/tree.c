/* A process tree: PID 1 with a child that has a grandchild, and a zombie
 * child (exit status 7) that is never reaped, which had ignored SIGUSR1 and
 * caught SIGUSR2 (the state differ compares a zombie's dispositions), and
 * a zombie killed by SIGTERM that had ignored SIGINT. Everyone checks its PID and
 * parent every beat. Besides, as a shell's jobs leave them: a zombie that
 * leads its process group (status 3) with a member still running (the
 * first command of a pipeline ended); a zombie (status 4) in the group of
 * a running sibling; a zombie (status 5) that made a session of its own.
 * PID 1 checks every group, session and status every beat. */
#include "beat.h"
#include <signal.h>
#include <sys/wait.h>

static void on_signal(int sig) { (void)sig; }

static void watch_parent(pid_t me, pid_t parent) {
    for (;;) {
        if (getpid() != me) fail("pid changed", getpid(), me);
        if (getppid() != parent) fail("ppid changed", getppid(), parent);
        nap_ms(100);
    }
}

int main(void) {
    pid_t zombie = fork();
    if (zombie == 0) {
        signal(SIGUSR1, SIG_IGN);
        signal(SIGUSR2, on_signal);
        _exit(7);
    }
    int forked[2];
    if (pipe(forked)) return 1;
    pid_t child = fork();
    if (child == 0) {
        pid_t me = getpid(), parent = getppid();
        setpgid(0, 0); /* a process group of its own */
        pid_t grandchild = fork();
        if (grandchild == 0) watch_parent(getpid(), me);
        if (write(forked[1], "g", 1) != 1) _exit(1);
        watch_parent(me, parent);
    }
    /* The grandchild is PID 4 (tests name it), the jobs come after. */
    char g;
    if (read(forked[0], &g, 1) != 1) return 1;
    pid_t killed = fork();
    if (killed == 0) {
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, on_signal);
        raise(SIGTERM);
        _exit(1);
    }
    pid_t parent = getpid();
    pid_t lead = fork();
    if (lead == 0) {
        setpgid(0, 0);
        _exit(3);
    }
    setpgid(lead, lead);
    siginfo_t gone = {0};
    waitid(P_PID, lead, &gone, WEXITED | WNOWAIT);
    pid_t member = fork();
    if (member == 0) {
        setpgid(0, lead);
        watch_parent(getpid(), parent);
    }
    setpgid(member, lead);
    pid_t runner = fork();
    if (runner == 0) {
        setpgid(0, 0);
        watch_parent(getpid(), parent);
    }
    setpgid(runner, runner);
    pid_t joined = fork();
    if (joined == 0) {
        setpgid(0, runner);
        _exit(4);
    }
    setpgid(joined, runner);
    waitid(P_PID, joined, &gone, WEXITED | WNOWAIT);
    pid_t alone = fork();
    if (alone == 0) {
        setsid();
        _exit(5);
    }
    waitid(P_PID, alone, &gone, WEXITED | WNOWAIT);
    pid_t me = getpid();
    /* Start checking once the tree is complete. */
    siginfo_t first = {0};
    waitid(P_PID, zombie, &first, WEXITED | WNOWAIT);
    waitid(P_PID, killed, &first, WEXITED | WNOWAIT);
    while (getpgid(child) != child) nap_ms(5);
    for (long n = 1;; n++) {
        if (getpid() != me) fail("pid 1 changed", getpid(), me);
        siginfo_t si = {0};
        if (waitid(P_PID, zombie, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != zombie || si.si_status != 7)
            fail("zombie lost", si.si_pid, zombie);
        si.si_pid = 0;
        if (waitid(P_PID, killed, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_code != CLD_KILLED || si.si_status != SIGTERM)
            fail("killed zombie lost", si.si_code, si.si_status);
        if (kill(child, 0) != 0) fail("child gone", child, 0);
        if (getpgid(child) != child) fail("child pgid", getpgid(child), child);
        pid_t zs[] = {lead, joined, alone};
        int st[] = {3, 4, 5};
        for (int i = 0; i < 3; i++) {
            si.si_pid = 0;
            if (waitid(P_PID, zs[i], &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != zs[i] || si.si_status != st[i])
                fail("zombie of a job lost", zs[i], st[i]);
        }
        if (getpgid(lead) != lead || getpgid(member) != lead) fail("zombie's group", getpgid(member), lead);
        if (getpgid(runner) != runner || getpgid(joined) != runner) fail("zombie in a sibling's group", getpgid(joined), runner);
        if (getsid(alone) != alone || getpgid(alone) != alone) fail("zombie's session", getsid(alone), alone);
        if (getsid(member) != getsid(0) || getsid(lead) != getsid(0)) fail("job's session", getsid(member), getsid(0));
        beat(n);
        nap_ms(100);
    }
}
