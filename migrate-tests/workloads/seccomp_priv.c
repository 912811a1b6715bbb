/* A seccomp filter installed with CAP_SYS_ADMIN and without
 * no_new_privs, then the process drops to nobody: the restore must put the
 * filter back although the restored process could not install it itself.
 * getppid fails with errno 43 under the filter. */
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
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 43),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {4, f};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) || setresgid(65534, 65534, 65534) ||
        setresuid(65534, 65534, 65534)) {
        fail("install filter and drop privileges", errno, 0);
        return 1;
    }
    for (long n = 1;; n++) {
        errno = 0;
        long r = syscall(SYS_getppid);
        if (r != -1 || errno != 43) fail("seccomp filter gone", r, errno);
        if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0) fail("no_new_privs", 1, 0);
        if (getuid() != 65534) fail("uid", getuid(), 65534);
        beat(n);
        nap_ms(100);
    }
}
