/* Kinds of process and file state that one container checks together,
 * every beat (files in directory argv[1], /tmp by default):
 * - a POSIX write lock on bytes 10-19 of a file and a read lock from byte
 *   50 to EOF (an OFD probe through another open file sees both, owned by
 *   this process); an OFD write lock on a second file; flock LOCK_SH on a
 *   third (another open of it can not take LOCK_EX); a read lease on a
 *   fourth file (F_SETLEASE; files.c holds a write lease);
 * - a pipe whose read end signals this thread (F_SETOWN_EX F_OWNER_TID,
 *   O_ASYNC) with SIGRTMIN+1 (F_SETSIG): a byte written must raise it;
 * - membarrier registered for private expedited barriers (which fail
 *   with EPERM otherwise);
 * - mlockall(MCL_FUTURE | MCL_ONFAULT): a new mapping is locked (VmLck
 *   grows) and not populated;
 * - a guard region (MADV_GUARD_INSTALL) between two pages of data;
 * - mappings advised MADV_SEQUENTIAL (VmFlags sr), MADV_RANDOM (rr) and
 *   MADV_MERGEABLE (mg), each between two unadvised ones, which must keep
 *   their advice (and stay mappings of their own);
 * - a MAP_DROPPABLE mapping (VmFlags dp) and a MADV_WIPEONFORK one (wf)
 *   with their data;
 * - a read-only shared mapping of the POSIX-locked file, opened for
 *   writing: it may be made writable (mprotect), and the restore's reopen
 *   of the mapped file must not drop the lock;
 * - a child stopped by SIGSTOP stays stopped, its stop taken by waitpid
 *   (not reported again), and a child of its own process group stopped
 *   by SIGTSTP whose stop is not taken (still reported, with SIGTSTP);
 *   no stop sends this process a SIGCHLD again;
 * - a child in a chroot (a directory with a marker file) stays in it;
 * - this process's working directory was deleted, and stays so;
 * - pidfds of the stopped child (alive: signal 0 reaches it, and fdinfo
 *   names it) and of a zombie child, both in one epoll: only the zombie's
 *   is readable, with its data; and an epoll with a lower fd number
 *   watching that epoll; a duplicate of the first pidfd, and a child that
 *   inherited both pidfds: each the same open file description (kcmp);
 * - an orphan in a process group whose leader exited, and a daemon (a
 *   double fork) in a session whose leader exited, each checking its own
 *   group, session and parent (PID 1, this process);
 * - private mappings of a deleted file and of a closed memfd, with their
 *   data, and a child running an executable deleted since (its exe link
 *   says so, and it runs on);
 * - a tmpfs mounted by the container itself at argv[1]/tmpfs, with a file
 *   held open: still a tmpfs, the file's bytes there by path and by fd; and
 *   a directory there of 20 files, every third deleted, read part-way,
 *   whose next entry and offset must stay the same (the tmpfs is made
 *   again: its entries get their numbers back), and a directory of entries
 *   made out of name order, some removed, listed in the same order. */
#define _GNU_SOURCE
#include "beat.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <linux/kcmp.h>
#include <linux/membarrier.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

/* The VmFlags line of the mapping at `addr`. */
static int has_vmflag(void *addr, const char *flag) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512], want[32];
    int in = 0, found = 0;
    snprintf(want, sizeof want, "%lx-", (unsigned long)addr);
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, want, strlen(want))) in = 1;
        else if (in && !strncmp(line, "VmFlags:", 8)) {
            char pat[8];
            snprintf(pat, sizeof pat, " %s", flag);
            found = strstr(line, pat) != NULL;
            break;
        }
    }
    if (f) fclose(f);
    return found;
}

static int is_guard(void *addr) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    unsigned long long e = 0;
    if (fd < 0 || pread(fd, &e, 8, (off_t)((unsigned long)addr / 4096) * 8) != 8) e = 0;
    if (fd >= 0) close(fd);
    return (e >> 58) & 1;
}

#define PIDFD_NONBLOCK_FLAG O_NONBLOCK

/* The PID fdinfo names for pidfd `fd`. */
static long pidfd_pid(int fd) {
    char path[64], line[128];
    long pid = -2;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pid: %ld", &pid) == 1) break;
    if (f) fclose(f);
    return pid;
}

static char state_of(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    if (n <= 0) return '?';
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] ? p[2] : '?';
}

static long locked_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static char path[3][256];
static int probes[2];
static volatile sig_atomic_t got_sig;

static void on_sig(int sig) { got_sig = sig; }
static volatile sig_atomic_t child_stops;
static void on_chld(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    if (si->si_code == CLD_STOPPED) child_stops++;
}

/* What an OFD probe through another open file sees at [start,
 * start+len). (The probes stay open: closing any fd of a file drops the
 * process's POSIX locks on it.) */
static int probe(int which, short type, off_t start, off_t len, pid_t *pid) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(probes[which], F_OFD_GETLK, &fl)) fl.l_type = -1;
    *pid = fl.l_pid;
    return fl.l_type;
}

/* The names of directory `dir` as readdir lists them, space-separated. */
static void list_order(const char *dir, char *out, size_t len) {
    DIR *d = opendir(dir);
    struct dirent *e;
    out[0] = 0;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') snprintf(out + strlen(out), len - strlen(out), "%s ", e->d_name);
    if (d) closedir(d);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    int fds[3];
    for (int i = 0; i < 3; i++) {
        snprintf(path[i], sizeof path[i], "%s/kinds-%d", dir, i);
        fds[i] = open(path[i], O_RDWR | O_CREAT, 0600);
        char buf[100] = {0};
        if (fds[i] < 0 || write(fds[i], buf, sizeof buf) != sizeof buf) {
            fail("open", i, 0);
            return 1;
        }
    }
    char tmpfs[300], in_tmpfs[320];
    snprintf(tmpfs, sizeof tmpfs, "%s/tmpfs", dir);
    snprintf(in_tmpfs, sizeof in_tmpfs, "%s/held", tmpfs);
    mkdir(tmpfs, 0700);
    int held = -1;
    if (mount("none", tmpfs, "tmpfs", 0, "size=1m,mode=700") ||
        (held = open(in_tmpfs, O_RDWR | O_CREAT, 0640)) < 0 || write(held, "in-tmpfs", 8) != 8) {
        fail("tmpfs", errno, 0);
        return 1;
    }
    char list[340], want_next[512], next[512];
    snprintf(list, sizeof list, "%s/list", tmpfs);
    int listing = make_listing(list, 20, 3);
    if (listing < 0 || skip_entries(listing, 7)) {
        fail("tmpfs directory", errno, 0);
        return 1;
    }
    next_entry(listing, want_next, sizeof want_next);
    off_t want_pos = lseek(listing, 0, SEEK_CUR);
    char mixed[360], want_order[256], order[256];
    snprintf(mixed, sizeof mixed, "%s/mixed", tmpfs);
    mkdir(mixed, 0700);
    const char *in_mixed[] = {"zz", "aa", "gone", "mm", "bb"};
    for (int i = 0; i < 5; i++) {
        char f[400];
        snprintf(f, sizeof f, "%s/%s", mixed, in_mixed[i]);
        close(open(f, O_WRONLY | O_CREAT, 0600));
        if (i == 2) unlink(f);
    }
    list_order(mixed, want_order, sizeof want_order);
    probes[0] = open(path[0], O_RDWR);
    probes[1] = open(path[1], O_RDWR);
    struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 10};
    struct flock r = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 0};
    struct flock ofd = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fds[0], F_SETLK, &w) || fcntl(fds[0], F_SETLK, &r) || fcntl(fds[1], F_OFD_SETLK, &ofd) ||
        flock(fds[2], LOCK_SH | LOCK_NB)) {
        fail("lock", errno, 0);
        return 1;
    }
    char lease_path[300];
    snprintf(lease_path, sizeof lease_path, "%s/leased", dir);
    int made = open(lease_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (made < 0 || close(made)) fail("lease file", errno, 0);
    int lease = open(lease_path, O_RDONLY);
    if (lease < 0 || fcntl(lease, F_SETLEASE, F_RDLCK)) {
        fail("lease", errno, 0);
        return 1;
    }
    int p[2];
    struct f_owner_ex own = {.type = F_OWNER_TID, .pid = (pid_t)syscall(SYS_gettid)};
    signal(SIGRTMIN + 1, on_sig);
    if (pipe(p) || fcntl(p[0], F_SETOWN_EX, &own) || fcntl(p[0], F_SETSIG, SIGRTMIN + 1) ||
        fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_ASYNC | O_NONBLOCK)) {
        fail("owner", errno, 0);
        return 1;
    }
    struct sigaction chld = {.sa_sigaction = on_chld, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGCHLD, &chld, NULL);
    pid_t stopped = fork();
    if (stopped == 0) {
        raise(SIGSTOP);
        for (;;) pause();
    }
    int ws;
    if (stopped < 0 || waitpid(stopped, &ws, WUNTRACED) != stopped || !WIFSTOPPED(ws)) {
        fail("stopped child", errno, 0);
        return 1;
    }
    pid_t tstopped = fork();
    if (tstopped == 0) {
        /* A group of its own in this session: not orphaned, so SIGTSTP
         * stops it. */
        setpgid(0, 0);
        raise(SIGTSTP);
        for (;;) pause();
    }
    siginfo_t tsi = {0};
    if (tstopped < 0 || waitid(P_PID, tstopped, &tsi, WSTOPPED | WNOWAIT) || tsi.si_status != SIGTSTP) {
        fail("child stopped by SIGTSTP", errno, tsi.si_status);
        return 1;
    }
    /* The handler has run for both stops by now (or once for both). */
    long stops_seen = child_stops;
    pid_t zombie = fork();
    if (zombie == 0) _exit(7);
    siginfo_t si;
    if (zombie < 0 || waitid(P_PID, zombie, &si, WEXITED | WNOWAIT)) return 1;
    /* A group whose leader exits, and a session whose leader exits. */
    for (int kind = 0; kind < 2; kind++) {
        pid_t leader = fork();
        if (leader == 0) {
            if (kind == 0 ? setpgid(0, 0) : setsid() < 0) fail("leader", errno, 0);
            if (fork() == 0) {
                pid_t pg = getpgrp(), sid = getsid(0);
                while (getppid() != 1) nap_ms(1);
                for (;;) {
                    if (getpgrp() != pg || getsid(0) != sid) fail(kind == 0 ? "orphan's group" : "daemon's session", getpgrp(), pg);
                    if (getppid() != 1) fail("orphan's parent", getppid(), 1);
                    nap_ms(100);
                }
            }
            _exit(0);
        }
        if (leader < 0 || waitpid(leader, NULL, 0) != leader) fail("leader", errno, 0);
    }
    char lib[300], exe[300];
    snprintf(lib, sizeof lib, "%s/kinds-lib", dir);
    snprintf(exe, sizeof exe, "%s/kinds-sleep", dir);
    int lf = open(lib, O_RDWR | O_CREAT | O_TRUNC, 0700);
    int mf = memfd_create("kinds-jit", 0);
    unsigned char pattern[8192];
    for (int i = 0; i < 8192; i++) pattern[i] = (unsigned char)(i * 13);
    if (lf < 0 || mf < 0 || write(lf, pattern, 8192) != 8192 || write(mf, pattern, 8192) != 8192) return 1;
    unsigned char *dl = mmap(NULL, 8192, PROT_READ | PROT_EXEC, MAP_PRIVATE, lf, 0);
    unsigned char *dm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, mf, 0);
    if (dl == MAP_FAILED || dm == MAP_FAILED || close(lf) || close(mf) || unlink(lib)) return 1;
    dm[1] = 0xee; /* a private page of its own */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cp /bin/sleep %s", exe);
    if (system(cmd)) return 1;
    pid_t sleeper = fork();
    if (sleeper == 0) {
        execl(exe, "kinds-sleep", "100000", (char *)NULL);
        _exit(1);
    }
    for (int i = 0; i < 1000 && state_of(sleeper) != 'S'; i++) nap_ms(1);
    nap_ms(20);
    if (unlink(exe)) return 1;
    char jail[256], marker[300], gone[256], want_cwd[300];
    snprintf(jail, sizeof jail, "%s/kinds-jail", dir);
    snprintf(marker, sizeof marker, "%s/marker", jail);
    if (mkdir(jail, 0755) || close(open(marker, O_CREAT | O_WRONLY, 0600))) {
        fail("jail", errno, 0);
        return 1;
    }
    int ready[2];
    if (pipe(ready)) return 1;
    pid_t jailed = fork();
    if (jailed == 0) {
        if (chroot(jail) || chdir("/")) fail("chroot", errno, 0);
        close(ready[1]);
        for (;;) {
            if (access("/marker", F_OK)) fail("not in the chroot any more", errno, 0);
            nap_ms(100);
        }
    }
    char c;
    close(ready[1]);
    if (read(ready[0], &c, 1) != 0) return 1;
    close(ready[0]);
    /* pidfds and epolls last: only the heir below inherits them. */
    int ep_outer = epoll_create1(0);
    int pfd_alive = (int)syscall(SYS_pidfd_open, stopped, 0);
    int pfd_zombie = (int)syscall(SYS_pidfd_open, zombie, PIDFD_NONBLOCK_FLAG);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev1 = {.events = EPOLLIN, .data.u64 = 42}, ev2 = {.events = EPOLLIN, .data.u64 = 43};
    if (pfd_alive < 0 || pfd_zombie < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, pfd_alive, &ev1) ||
        epoll_ctl(ep, EPOLL_CTL_ADD, pfd_zombie, &ev2) || ep_outer < 0 || ep_outer > ep ||
        epoll_ctl(ep_outer, EPOLL_CTL_ADD, ep, &(struct epoll_event){.events = EPOLLIN, .data.u64 = 99})) {
        fail("pidfd", errno, 0);
        return 1;
    }
    /* A duplicate of a pidfd, and a child that inherits the pidfds (and
     * the epolls): one open file description each, as they are here. */
    int pfd_dup = dup(pfd_alive);
    pid_t heir = fork();
    if (heir == 0)
        for (;;) pause();
    if (pfd_dup < 0 || heir < 0) {
        fail("pidfd heir", errno, 0);
        return 1;
    }
    snprintf(gone, sizeof gone, "%s/kinds-cwd", dir);
    snprintf(want_cwd, sizeof want_cwd, "%s (deleted)", gone);
    if (mkdir(gone, 0700) || chdir(gone) || rmdir(gone)) {
        fail("deleted cwd", errno, 0);
        return 1;
    }
    unsigned char *g = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *drop = mmap(NULL, 4096, PROT_READ | PROT_WRITE, 0x08 /* MAP_DROPPABLE */ | MAP_ANONYMOUS, -1, 0);
    unsigned char *wipe = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *shared = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fds[0], 0);
    if (g == MAP_FAILED || drop == MAP_FAILED || wipe == MAP_FAILED || shared == MAP_FAILED) {
        fail("mmap", errno, 0);
        return 1;
    }
    memset(g, 0x5a, 3 * 4096);
    memset(wipe, 0x77, 4096);
    drop[0] = 1;
    /* Seven pages: advised at 1, 3 and 5. */
    unsigned char *adv = mmap(NULL, 7 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    static const int advice[3] = {MADV_SEQUENTIAL, MADV_RANDOM, MADV_MERGEABLE};
    static const char *const advised[3] = {"sr", "rr", "mg"};
    for (int i = 0; i < 3 && adv != MAP_FAILED; i++)
        if (madvise(adv + (2 * i + 1) * 4096, 4096, advice[i])) adv = MAP_FAILED;
    if (adv == MAP_FAILED || madvise(g + 4096, 4096, 102 /* MADV_GUARD_INSTALL */) ||
        madvise(wipe, 4096, MADV_WIPEONFORK)) {
        fail("madvise", errno, 0);
        return 1;
    }
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) ||
        mlockall(MCL_FUTURE | MCL_ONFAULT)) {
        fail("membarrier or mlockall", errno, 0);
        return 1;
    }
    for (long n = 1;; n++) {
        pid_t pid;
        struct statfs sf;
        char by_fd[9] = {0}, by_path[9] = {0};
        int again = open(in_tmpfs, O_RDONLY);
        if (statfs(tmpfs, &sf) || sf.f_type != TMPFS_MAGIC || pread(held, by_fd, 8, 0) != 8 || strcmp(by_fd, "in-tmpfs") ||
            again < 0 || read(again, by_path, 8) != 8 || strcmp(by_path, "in-tmpfs"))
            fail("the container's own tmpfs", (long)sf.f_type, TMPFS_MAGIC);
        if (again >= 0) close(again);
        next_entry(listing, next, sizeof next);
        if (strcmp(next, want_next)) {
            printf("FAIL tmpfs directory: next entry %s, was %s\n", next, want_next);
            fflush(stdout);
        }
        if (lseek(listing, 0, SEEK_CUR) != want_pos) fail("tmpfs directory offset", lseek(listing, 0, SEEK_CUR), want_pos);
        list_order(mixed, order, sizeof order);
        if (strcmp(order, want_order)) {
            printf("FAIL tmpfs directory order: %s, was %s\n", order, want_order);
            fflush(stdout);
        }
        long regs = syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
        if (regs != MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) fail("membarrier registrations", regs, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
        if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0)) fail("private expedited barrier", errno, 0);
        long before = locked_kb();
        unsigned char *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        unsigned char resident = 1;
        if (q == MAP_FAILED || locked_kb() < before + 4) fail("mlockall(MCL_FUTURE)", locked_kb(), before + 4);
        if (q != MAP_FAILED && (mincore(q, 4096, &resident) || resident)) fail("MCL_ONFAULT", resident, 0);
        if (q != MAP_FAILED) munmap(q, 4096);
        /* Stopped, or on its way back into the stop (detached after a
         * failed migration, it runs in the kernel for a moment). */
        if (state_of(stopped) != 'T' || state_of(tstopped) != 'T') {
            nap_ms(50);
            if (state_of(stopped) != 'T') fail("stopped child's state", state_of(stopped), 'T');
            if (state_of(tstopped) != 'T') fail("SIGTSTP child's state", state_of(tstopped), 'T');
        }
        if (child_stops != stops_seen) fail("SIGCHLD for a stop again", child_stops, stops_seen);
        memset(&tsi, 0, sizeof tsi);
        if (waitid(P_PID, stopped, &tsi, WSTOPPED | WNOHANG | WNOWAIT) || tsi.si_pid != 0)
            fail("a stop taken is reported again", tsi.si_pid, tsi.si_status);
        memset(&tsi, 0, sizeof tsi);
        if (waitid(P_PID, tstopped, &tsi, WSTOPPED | WNOHANG | WNOWAIT) || tsi.si_pid != tstopped || tsi.si_status != SIGTSTP)
            fail("a stop not taken is not reported, or not as SIGTSTP", tsi.si_pid, tsi.si_status);
        if (memcmp(dl, pattern, 8192)) fail("deleted file's private mapping", dl[0], pattern[0]);
        if (dm[1] != 0xee || memcmp(dm + 2, pattern + 2, 8190) || dm[0] != pattern[0]) fail("memfd's private mapping", dm[1], 0xee);
        char exe_link[400] = {0}, exe_proc[64];
        snprintf(exe_proc, sizeof exe_proc, "/proc/%d/exe", sleeper);
        size_t el = strlen("kinds-sleep (deleted)");
        if (readlink(exe_proc, exe_link, sizeof exe_link - 1) < (ssize_t)el ||
            strcmp(exe_link + strlen(exe_link) - el, "kinds-sleep (deleted)") ||
            (state_of(sleeper) != 'S' && state_of(sleeper) != 'R'))
            fail("deleted executable", state_of(sleeper), 'S');
        if (syscall(SYS_pidfd_send_signal, pfd_alive, 0, NULL, 0)) fail("pidfd of the stopped child", errno, 0);
        if (pidfd_pid(pfd_alive) != stopped) fail("pidfd names", pidfd_pid(pfd_alive), stopped);
        if (pidfd_pid(pfd_zombie) != zombie) fail("zombie's pidfd names", pidfd_pid(pfd_zombie), zombie);
        pid_t me = getpid();
        if (syscall(SYS_kcmp, me, me, KCMP_FILE, pfd_alive, pfd_dup) != 0) fail("a pidfd's duplicate is one open file", pfd_dup, 0);
        if (syscall(SYS_kcmp, me, heir, KCMP_FILE, pfd_alive, pfd_alive) != 0 || syscall(SYS_kcmp, me, heir, KCMP_FILE, pfd_zombie, pfd_zombie) != 0)
            fail("an inherited pidfd is one open file", heir, 0);
        if (!(fcntl(pfd_zombie, F_GETFL) & O_NONBLOCK)) fail("PIDFD_NONBLOCK", fcntl(pfd_zombie, F_GETFL), O_NONBLOCK);
        struct epoll_event evs[4];
        int ready = epoll_wait(ep, evs, 4, 0);
        if (ready != 1 || evs[0].data.u64 != 43) fail("epoll of pidfds", ready, ready > 0 ? (long)evs[0].data.u64 : -1);
        ready = epoll_wait(ep_outer, evs, 4, 0);
        if (ready != 1 || evs[0].data.u64 != 99) fail("epoll of an epoll", ready, ready > 0 ? (long)evs[0].data.u64 : -1);
        char link[300] = {0}, proc[64];
        snprintf(proc, sizeof proc, "/proc/%d/root", jailed);
        if (readlink(proc, link, sizeof link - 1) < 0 || strcmp(link, jail)) fail("chroot of the child", 0, 0);
        memset(link, 0, sizeof link);
        if (readlink("/proc/self/cwd", link, sizeof link - 1) < 0 || strcmp(link, want_cwd)) fail("deleted cwd", 0, 0);
        if (!is_guard(g + 4096) || is_guard(g) || g[0] != 0x5a || g[2 * 4096 + 4095] != 0x5a) fail("guard region", is_guard(g + 4096), g[0]);
        if (!has_vmflag(drop, "dp")) fail("MAP_DROPPABLE", 0, 1);
        for (int i = 0; i < 3; i++)
            if (!has_vmflag(adv + (2 * i + 1) * 4096, advised[i]) || has_vmflag(adv + 2 * i * 4096, advised[i])) {
                printf("FAIL madvise %s: lost, or merged with its neighbour\n", advised[i]);
                fflush(stdout);
            }
        if (!has_vmflag(wipe, "wf") || wipe[0] != 0x77 || wipe[4095] != 0x77) fail("MADV_WIPEONFORK", wipe[0], 0x77);
        if (mprotect(shared, 4096, PROT_READ | PROT_WRITE)) fail("mprotect shared file mapping writable", errno, 0);
        else {
            shared[4000] = (unsigned char)n;
            if (mprotect(shared, 4096, PROT_READ)) fail("mprotect back", errno, 0);
        }
        int t = probe(0, F_WRLCK, 10, 10, &pid);
        if (t != F_WRLCK || pid != getpid()) fail("posix write lock", t, pid);
        t = probe(0, F_WRLCK, 1000, 1, &pid);
        if (t != F_RDLCK || pid != getpid()) fail("posix read lock to EOF", t, pid);
        t = probe(0, F_WRLCK, 0, 10, &pid);
        if (t != F_UNLCK) fail("posix unlocked bytes", t, F_UNLCK);
        t = probe(1, F_RDLCK, 0, 0, &pid);
        if (t != F_WRLCK || pid != -1) fail("ofd lock", t, pid);
        int other = open(path[2], O_RDONLY);
        errno = 0;
        if (other < 0 || flock(other, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) fail("flock", errno, EWOULDBLOCK);
        if (other >= 0) close(other);
        if (fcntl(lease, F_GETLEASE) != F_RDLCK) fail("read lease", fcntl(lease, F_GETLEASE), F_RDLCK);
        struct f_owner_ex got = {0};
        if (fcntl(p[0], F_GETOWN_EX, &got) || got.type != F_OWNER_TID || got.pid != own.pid) fail("owner", got.type, got.pid);
        if (fcntl(p[0], F_GETSIG) != SIGRTMIN + 1) fail("F_GETSIG", fcntl(p[0], F_GETSIG), SIGRTMIN + 1);
        got_sig = 0;
        char c = 'x';
        if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1) fail("pipe", errno, 0);
        for (int i = 0; i < 100 && !got_sig; i++) nap_ms(1);
        if (got_sig != SIGRTMIN + 1) fail("SIGIO as SIGRTMIN+1", got_sig, SIGRTMIN + 1);
        beat(n);
        nap_ms(100);
    }
}
