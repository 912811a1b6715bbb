/* Socket options a program set, on a TCP listener (127.0.0.1:7910) and a
 * UDP socket (127.0.0.1:7911): keepalive, TCP_NODELAY, a receive buffer,
 * TCP_DEFER_ACCEPT, TCP_KEEPIDLE, IP_TOS on the listener; SO_BROADCAST,
 * a send buffer, IP_TTL and IP_RECVERR on the UDP socket. Every beat each
 * must read as it did once set (the kernel rounds some). */
#include "beat.h"
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

struct opt { int level, name, value; const char *what; };

static int get(int s, int level, int name) {
    int v = -1;
    socklen_t n = sizeof v;
    getsockopt(s, level, name, &v, &n);
    return v;
}

int main(void) {
    struct opt lopts[] = {
        {SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE"}, {IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"},
        {SOL_SOCKET, SO_RCVBUF, 300000, "SO_RCVBUF"}, {IPPROTO_TCP, TCP_DEFER_ACCEPT, 10, "TCP_DEFER_ACCEPT"},
        {IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE"}, {IPPROTO_IP, IP_TOS, 0x10, "IP_TOS"},
    };
    struct opt uopts[] = {
        {SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST"}, {SOL_SOCKET, SO_SNDBUF, 100000, "SO_SNDBUF"},
        {IPPROTO_IP, IP_TTL, 9, "IP_TTL"}, {IPPROTO_IP, IP_RECVERR, 1, "IP_RECVERR"},
    };
    int l = socket(AF_INET, SOCK_STREAM, 0), u = socket(AF_INET, SOCK_DGRAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7910), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int want_l[6], want_u[4];
    for (int i = 0; i < 6; i++) {
        if (setsockopt(l, lopts[i].level, lopts[i].name, &lopts[i].value, sizeof(int))) fail(lopts[i].what, errno, 0);
        want_l[i] = get(l, lopts[i].level, lopts[i].name);
    }
    for (int i = 0; i < 4; i++) {
        if (setsockopt(u, uopts[i].level, uopts[i].name, &uopts[i].value, sizeof(int))) fail(uopts[i].what, errno, 0);
        want_u[i] = get(u, uopts[i].level, uopts[i].name);
    }
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8)) fail("listen", errno, 0);
    a.sin_port = htons(7911);
    if (bind(u, (struct sockaddr *)&a, sizeof a)) fail("bind udp", errno, 0);
    a.sin_port = htons(7910);
    for (long n = 1;; n++) {
        for (int i = 0; i < 6; i++)
            if (get(l, lopts[i].level, lopts[i].name) != want_l[i]) fail(lopts[i].what, get(l, lopts[i].level, lopts[i].name), want_l[i]);
        for (int i = 0; i < 4; i++)
            if (get(u, uopts[i].level, uopts[i].name) != want_u[i]) fail(uopts[i].what, get(u, uopts[i].level, uopts[i].name), want_u[i]);
        beat(n);
        nap_ms(100);
    }
}
