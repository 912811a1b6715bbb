/* seccomp that an injected syscall must not trip over.
 *   strict:   a child in SECCOMP_MODE_STRICT blocks in read() on a pipe
 *             (checkpoint must refuse it, and the child must live on);
 *   killmmap: a filter that kills the process on mmap (carried; the
 *             checkpoint's own injected mmap must not kill it).
 * The parent beats either way. */
#include "beat.h"
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    int strict = argc > 1 && strcmp(argv[1], "strict") == 0;
    beat(1);
    if (strict) {
        int p[2];
        if (pipe(p)) return 1;
        if (fork() == 0) {
            close(p[1]);
            char c;
            syscall(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0);
            syscall(SYS_read, p[0], &c, 1);
            syscall(SYS_exit, 0);
        }
        close(p[0]);
    } else {
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {4, f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
            fail("install filter", errno, 0);
            return 1;
        }
    }
    for (long n = 2;; n++) {
        nap_ms(100);
        beat(n);
    }
}
