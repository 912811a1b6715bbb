/* A seccomp filter (with no_new_privs): getppid fails with errno 42, every
 * other syscall is allowed. Every beat the filter must still be in force. */
#include "beat.h"
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

int main(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 42),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {4, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        fail("install filter", errno, 0);
        return 1;
    }
    for (long n = 1;; n++) {
        errno = 0;
        long r = syscall(SYS_getppid);
        if (r != -1 || errno != 42) fail("seccomp filter gone", r, errno);
        if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != 2) fail("seccomp mode", prctl(PR_GET_SECCOMP, 0, 0, 0, 0), 2);
        if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) fail("no_new_privs", 0, 1);
        beat(n);
        nap_ms(100);
    }
}
