/* Holds one kind of state that migrate does not carry, named by argv[1],
 * then beats: the checkpoint must refuse it by its real name, before it
 * stops anything.
 *   tcp-unbound  a TCP socket, never bound
 *   tcp-bound    a TCP socket bound to 127.0.0.1, not listening
 *   sysv         a SysV shared memory segment, attached
 *   aio          an AIO ring (io_setup)
 *   uffd         a userfaultfd */
#include "beat.h"
#include <arpa/inet.h>
#include <linux/aio_abi.h>
#include <netinet/in.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "tcp-unbound") || !strcmp(what, "tcp-bound")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (!strcmp(what, "tcp-bound")) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7777)};
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (bind(s, (struct sockaddr *)&a, sizeof a)) fail("bind", 0, 0);
        }
    } else if (!strcmp(what, "sysv")) {
        int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
        char *p = shmat(id, NULL, 0);
        if (p == (void *)-1) fail("shmat", 0, 0);
        else p[0] = 1;
    } else if (!strcmp(what, "aio")) {
        aio_context_t ctx = 0;
        if (syscall(SYS_io_setup, 8, &ctx)) fail("io_setup", 0, 0);
    } else if (!strcmp(what, "uffd")) {
        if (syscall(SYS_userfaultfd, 0) < 0) fail("userfaultfd", 0, 0);
    }
    for (long n = 1;; n++) {
        beat(n);
        nap_ms(100);
    }
}
