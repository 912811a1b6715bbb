/* Holds one kind of state that migrate does not carry, named by argv[1],
 * then beats: the checkpoint must refuse it by its real name, before it
 * stops anything.
 *   tcp-unbound  a TCP socket, never bound
 *   tcp-bound    a TCP socket bound to 127.0.0.1, not listening
 *   mbind        a mapping of 4 pages bound to node 0 (mbind), its own
 *                memory policy
 *   sysv-partial a SysV shared memory segment of two pages, attached, its
 *                second page unmapped
 *   aio          an AIO ring (io_setup)
 *   uffd         a userfaultfd
 *   deleted-linked  FIFO argv[2], open, linked as argv[2].link, then removed
 *   epoll-elsewhere  an epoll (fd 3) with a registration made through an fd
 *                the process closed since, whose file only a child holds
 *   inotify-deleted  an inotify watch on file argv[2], open, then removed
 *   pidfd-reaped a pidfd of a child that exited and was reaped
 *   proc-reused  /proc/N/status of a child (fd 3) that exited and was
 *                reaped, N then given to another child (ns_last_pid)
 *   lease-breaking  a write lease on file argv[2] (fd 3), being broken by
 *                a child blocked opening the file
 *   zombie-leader  a zombie leading a process group whose other member is
 *                not its sibling (the zombie's child, orphaned to PID 1)
 *   deleted-block  a block device node argv[2] (loop0), open (O_PATH),
 *                removed
 *   shared-files a child made with CLONE_FILES (one fd table for two)
 *   shared-vm    a child made with CLONE_VM (one address space for two
 *                processes)
 *   shared-fs    a child made with CLONE_FS (one cwd, root and umask)
 *   bind-mount   directory argv[2].a bound onto argv[2].b (a mount made
 *                inside the container)
 *   own-netns    a child in a network namespace of its own
 *   scm-rights   a socketpair with an fd in flight (SCM_RIGHTS, unread),
 *                behind some bytes without one
 *   pty          a pseudo-terminal's master (posix_openpt), with input
 *   tcp-backlog  a TCP listener on 127.0.0.1:7778 with a connection not
 *                accepted yet (fd 3), and its client
 *   udp-queued   a UDP socket on 127.0.0.1:7779 (fd 3) with a datagram
 *                not read yet
 *   detached-mount  a file (fd 3) on a tmpfs mounted at argv[2].m, then
 *                detached (umount -l)
 *   thread-netns a thread (not the main one) in a network namespace of
 *                its own
 *   packet-pipe  a packet-mode pipe (O_DIRECT on its write end, fd 4) holding two
 *                messages
 *   mqueue       a POSIX message queue /odd holding a message, its fd
 *                closed
 *   mqueue-fd    a POSIX message queue /oddq held open (fd 3)
 *   many-fds     more eventfds than half the hard limit of open files:
 *                a restore could not make them all above their numbers
 *   secretmem    a memfd_secret area (fd 3)
 *   nsfs         the process's UTS namespace file held open (fd 3)
 *   peek-off     a socketpair (fds 3, 4) with bytes queued to fd 4, whose
 *                peek offset is set to 1 (SO_PEEK_OFF)
 *   unix-shutdown  a socketpair (fds 3, 4), fd 3 shut down for writing
 *   sock-filter  a UDP socket (fd 3) with a classic packet filter attached
 *   sock-ebpf    a UDP socket (fd 3) with an eBPF socket filter attached
 *   multicast    a UDP socket (fd 3) that joined group 239.1.1.1 on lo
 *   pkey         a page tagged with a memory protection key (pkey_mprotect)
 *   thread-creds a thread that changed its own uids (raw setresuid)
 *   thread-pdeathsig  a thread with a parent-death signal of its own
 *   thread-timerslack  a thread with a timer slack of its own
 *   thread-personality  a thread with a personality of its own
 *   passcred     a socketpair (fds 3, 4), fd 4 with SO_PASSCRED on
 *   inotify-queued  an inotify instance (fd 3) watching directory argv[2].d,
 *                with an event not read yet */
#include "beat.h"
#include <arpa/inet.h>
#include <linux/aio_abi.h>
#include <netinet/in.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <mqueue.h>
#include <linux/filter.h>
#include <linux/bpf.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/inotify.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

static void sleep_forever(void) {
    for (;;) nap_ms(1000);
}

/* A thread that gives itself state of its own (mode `arg`), then waits. */
static void *own_state_thread(void *arg) {
    const char *what = arg;
    long r = -1;
    if (!strcmp(what, "thread-netns")) r = unshare(CLONE_NEWNET);
    else if (!strcmp(what, "thread-creds")) r = syscall(SYS_setresuid, 1000, 1000, 1000);
    else if (!strcmp(what, "thread-pdeathsig")) r = prctl(PR_SET_PDEATHSIG, SIGUSR1);
    else if (!strcmp(what, "thread-timerslack")) r = prctl(PR_SET_TIMERSLACK, 123456);
    else if (!strcmp(what, "thread-personality")) r = personality(ADDR_NO_RANDOMIZE) < 0;
    if (r) fail(what, errno, 0);
    for (;;) pause();
    return NULL;
}

static int sleeper(void *arg) {
    (void)arg;
    sleep_forever();
    return 0;
}

static char stack[1 << 16];

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "tcp-unbound") || !strcmp(what, "tcp-bound")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (!strcmp(what, "tcp-bound")) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7777)};
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (bind(s, (struct sockaddr *)&a, sizeof a)) fail("bind", 0, 0);
        }
    } else if (!strcmp(what, "tcp-backlog") || !strcmp(what, "udp-queued")) {
        int tcp = !strcmp(what, "tcp-backlog");
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(tcp ? 7778 : 7779)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int s = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        int c = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        if (bind(s, (struct sockaddr *)&a, sizeof a) || (tcp && listen(s, 4)) ||
            (tcp ? connect(c, (struct sockaddr *)&a, sizeof a)
                 : (sendto(c, "dgram", 5, 0, (struct sockaddr *)&a, sizeof a) != 5)))
            fail(what, errno, 0);
    } else if (!strcmp(what, "mbind")) {
        unsigned long node0 = 1;
        char *p = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED || syscall(SYS_mbind, p, 4 * 4096, 2 /* MPOL_BIND */, &node0, 64, 0)) fail(what, errno, 0);
        else p[0] = 1;
    } else if (!strcmp(what, "sysv-partial")) {
        int id = shmget(IPC_PRIVATE, 2 * 4096, IPC_CREAT | 0600);
        char *p = shmat(id, NULL, 0);
        if (p == (void *)-1 || munmap(p + 4096, 4096)) fail(what, errno, 0);
    } else if (!strcmp(what, "aio")) {
        aio_context_t ctx = 0;
        if (syscall(SYS_io_setup, 8, &ctx)) fail("io_setup", 0, 0);
    } else if (!strcmp(what, "pidfd-reaped")) {
        pid_t c = fork();
        if (c == 0) _exit(0);
        int pfd = (int)syscall(SYS_pidfd_open, c, 0);
        if (pfd < 0 || waitpid(c, NULL, 0) != c) fail("pidfd", errno, 0);
    } else if (!strcmp(what, "proc-reused")) {
        pid_t c = fork();
        if (c == 0) _exit(0);
        char path[64], last[32];
        snprintf(path, sizeof path, "/proc/%d/status", (int)c);
        int st = open(path, O_RDONLY);
        int n = snprintf(last, sizeof last, "%d", (int)c - 1);
        int lp = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
        if (st != 3 || waitpid(c, NULL, 0) != c || lp < 0 || write(lp, last, n) != n || close(lp)) fail("proc-reused", errno, 0);
        pid_t again = fork();
        if (again == 0) for (;;) pause();
        if (again != c) fail("proc-reused: pid not reused", again, c);
    } else if (!strcmp(what, "inotify-deleted")) {
        int in = inotify_init1(0);
        int keep = open(argv[2], O_RDWR | O_CREAT, 0600);
        if (in < 0 || keep < 0 || inotify_add_watch(in, argv[2], IN_MODIFY) < 0 || unlink(argv[2])) fail("inotify", errno, 0);
    } else if (!strcmp(what, "epoll-elsewhere")) {
        int ep = epoll_create1(0), p[2];
        struct epoll_event ev = {.events = EPOLLIN};
        if (ep != 3 || pipe(p) || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev)) fail("epoll", errno, 0);
        pid_t child = fork();
        if (child == 0) {
            close(ep);
            for (;;) pause();
        }
        if (child < 0 || close(p[0])) fail("epoll", errno, 0);
    } else if (!strcmp(what, "deleted-linked")) {
        char other[300];
        snprintf(other, sizeof other, "%s.link", argv[2]);
        if (mkfifo(argv[2], 0600) || open(argv[2], O_RDWR) < 0 || link(argv[2], other) || unlink(argv[2]))
            fail("link", errno, 0);
    } else if (!strcmp(what, "uffd")) {
        if (syscall(SYS_userfaultfd, 0) < 0) fail("userfaultfd", 0, 0);
    } else if (!strcmp(what, "lease-breaking")) {
        signal(SIGIO, SIG_IGN);
        int fd = open(argv[2], O_RDWR | O_CREAT, 0600);
        if (fd < 0 || fcntl(fd, F_SETLEASE, F_WRLCK)) fail(what, fd, errno);
        if (fork() == 0) {
            open(argv[2], O_RDONLY);
            for (;;) pause();
        }
        nap_ms(200);
    } else if (!strcmp(what, "zombie-leader")) {
        if (fork() == 0) {
            pid_t lead = fork();
            if (lead == 0) {
                setpgid(0, 0);
                if (fork() == 0)
                    for (;;) pause();
                _exit(0);
            }
            for (;;) pause();
        }
        nap_ms(200);
    } else if (!strcmp(what, "deleted-block")) {
        if (mknod(argv[2], S_IFBLK | 0600, makedev(7, 0)) || open(argv[2], O_PATH) < 0 || unlink(argv[2]))
            fail("block", errno, 0);
    } else if (!strcmp(what, "shared-files")) {
        if (clone(sleeper, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL) < 0) fail("clone", errno, 0);
    } else if (!strcmp(what, "shared-vm") || !strcmp(what, "shared-fs")) {
        int flag = !strcmp(what, "shared-vm") ? CLONE_VM : CLONE_FS;
        if (clone(sleeper, stack + sizeof stack, flag | SIGCHLD, NULL) < 0) fail("clone", errno, 0);
    } else if (!strcmp(what, "bind-mount")) {
        char a[4096], b[4096];
        snprintf(a, sizeof a, "%s.a", argv[2]);
        snprintf(b, sizeof b, "%s.b", argv[2]);
        mkdir(a, 0700);
        mkdir(b, 0700);
        if (mount(a, b, NULL, MS_BIND, NULL)) fail("bind", errno, 0);
    } else if (!strcmp(what, "scm-rights")) {
        int sv[2], pass = open("/dev/null", O_RDONLY);
        char byte = 'x', cbuf[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {&byte, 1};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass, sizeof(int));
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || write(sv[0], "plain", 5) != 5 || sendmsg(sv[0], &m, 0) != 1)
            fail("scm", errno, 0);
        close(pass);
    } else if (!strcmp(what, "pty")) {
        int m = posix_openpt(O_RDWR | O_NOCTTY);
        if (m < 0 || grantpt(m) || unlockpt(m) || write(m, "typed\n", 6) != 6) fail("pty", errno, 0);
    } else if (!strcmp(what, "detached-mount")) {
        char m[4096], f[4200];
        snprintf(m, sizeof m, "%s.m", argv[2]);
        snprintf(f, sizeof f, "%s/f", m);
        mkdir(m, 0700);
        if (mount("none", m, "tmpfs", 0, "size=1m") || open(f, O_RDWR | O_CREAT, 0600) != 3 || umount2(m, MNT_DETACH))
            fail(what, errno, 0);
    } else if (!strcmp(what, "packet-pipe")) {
        int pp[2];
        if (pipe2(pp, O_DIRECT) || write(pp[1], "aaa", 3) != 3 || write(pp[1], "bbbbb", 5) != 5) fail(what, errno, 0);
    } else if (!strncmp(what, "thread-", 7)) {
        pthread_t t;
        if (pthread_create(&t, NULL, own_state_thread, (void *)what)) fail("pthread_create", 0, 0);
        nap_ms(200);
    } else if (!strcmp(what, "mqueue")) {
        mqd_t q = mq_open("/odd", O_RDWR | O_CREAT, 0600, NULL);
        if (q == (mqd_t)-1 || mq_send(q, "queued", 6, 1) || mq_close(q)) fail(what, errno, 0);
    } else if (!strcmp(what, "many-fds")) {
        struct rlimit r;
        if (getrlimit(RLIMIT_NOFILE, &r)) fail(what, errno, 0);
        r.rlim_cur = r.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &r)) fail(what, errno, 0);
        for (rlim_t i = 0; i < r.rlim_max / 2 + 64; i++)
            if (eventfd(0, 0) < 0) fail(what, errno, (long)i);
    } else if (!strcmp(what, "mqueue-fd")) {
        /* The queue held open: named by its fd first. */
        if (mq_open("/oddq", O_RDWR | O_CREAT, 0600, NULL) == (mqd_t)-1) fail(what, errno, 0);
    } else if (!strcmp(what, "secretmem")) {
        int fd = (int)syscall(447 /* memfd_secret */, 0);
        if (fd < 0 || ftruncate(fd, 4096)) fail(what, errno, 0);
    } else if (!strcmp(what, "nsfs")) {
        if (open("/proc/self/ns/uts", O_RDONLY) < 0) fail(what, errno, 0);
    } else if (!strcmp(what, "peek-off")) {
        int sv[2], one = 1;
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || write(sv[0], "abc", 3) != 3 ||
            setsockopt(sv[1], SOL_SOCKET, SO_PEEK_OFF, &one, sizeof one))
            fail(what, errno, 0);
    } else if (!strcmp(what, "unix-shutdown")) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || shutdown(sv[0], SHUT_WR)) fail(what, errno, 0);
    } else if (!strcmp(what, "sock-filter")) {
        struct sock_filter accept_all = {0x06, 0, 0, 0xffffffff}; /* BPF_RET|BPF_K */
        struct sock_fprog prog = {1, &accept_all};
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (s != 3 || setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog)) fail(what, errno, s);
    } else if (!strcmp(what, "sock-ebpf")) {
        struct bpf_insn prog[] = {
            {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = -1}, /* r0 = keep all */
            {.code = BPF_JMP | BPF_EXIT},
        };
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insn_cnt = 2;
        attr.insns = (unsigned long)prog;
        attr.license = (unsigned long)"GPL";
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        int p = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
        if (s != 3 || p < 0 || setsockopt(s, SOL_SOCKET, SO_ATTACH_BPF, &p, sizeof p)) fail(what, errno, s);
        close(p);
    } else if (!strcmp(what, "pkey")) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        int key = pkey_alloc(0, 0);
        if (p == MAP_FAILED || key < 0 || pkey_mprotect(p, 4096, PROT_READ | PROT_WRITE, key)) fail(what, errno, key);
    } else if (!strcmp(what, "multicast")) {
        struct ip_mreqn m = {.imr_multiaddr.s_addr = inet_addr("239.1.1.1"), .imr_ifindex = 1};
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (s != 3 || setsockopt(s, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m)) fail(what, errno, s);
    } else if (!strcmp(what, "passcred")) {
        int sv[2], one = 1;
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one))
            fail(what, errno, 0);
    } else if (!strcmp(what, "inotify-queued")) {
        char d[4096], f[4200];
        snprintf(d, sizeof d, "%s.d", argv[2]);
        snprintf(f, sizeof f, "%s/f", d);
        mkdir(d, 0700);
        int in = inotify_init1(0);
        if (in != 3 || inotify_add_watch(in, d, IN_CREATE) < 0 || close(open(f, O_RDWR | O_CREAT, 0600)))
            fail(what, errno, 0);
    } else if (!strcmp(what, "own-netns")) {
        if (clone(sleeper, stack + sizeof stack, CLONE_NEWNET | SIGCHLD, NULL) < 0) fail("clone", errno, 0);
    }
    for (long n = 1;; n++) {
        beat(n);
        nap_ms(100);
    }
}
