/* Socket options a program set, on a TCP listener (127.0.0.1:7910) and a
 * UDP socket (127.0.0.1:7911): keepalive, TCP_NODELAY, a receive buffer,
 * TCP_DEFER_ACCEPT, TCP_KEEPIDLE, IP_TOS and a receive timeout on the
 * listener; SO_BROADCAST, a send buffer, IP_TTL and IP_RECVERR on the UDP
 * socket; buffers, timeouts and SO_TIMESTAMPNS on both ends of a unix
 * socketpair. With "tcp", also on both ends of a loopback connection
 * (127.0.0.1:7912; checkpoint it with --tcp-established): keepalive
 * timing, TCP_NODELAY, IP_TOS, TCP_USER_TIMEOUT and timeouts. Every beat
 * each must read as it did once set (the kernel rounds some). */
#include "beat.h"
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

struct opt { int level, name, value; const char *what; };

static long get(int s, int level, int name) {
    if (name == SO_RCVTIMEO || name == SO_SNDTIMEO) {
        struct timeval tv = {-1, -1};
        socklen_t n = sizeof tv;
        getsockopt(s, level, name, &tv, &n);
        return tv.tv_sec * 1000000L + tv.tv_usec;
    }
    int v = -1;
    socklen_t n = sizeof v;
    getsockopt(s, level, name, &v, &n);
    return v;
}

static void set(int s, const struct opt *o) {
    int r;
    if (o->name == SO_RCVTIMEO || o->name == SO_SNDTIMEO) {
        struct timeval tv = {o->value / 1000000, o->value % 1000000};
        r = setsockopt(s, o->level, o->name, &tv, sizeof tv);
    } else {
        r = setsockopt(s, o->level, o->name, &o->value, sizeof(int));
    }
    if (r) fail(o->what, errno, 0);
}

/* A socket and the options set on it, with what each read once set. */
struct sock { int fd; const struct opt *opts; int n; long want[16]; };

static void setup(struct sock *s) {
    for (int i = 0; i < s->n; i++) {
        set(s->fd, &s->opts[i]);
        s->want[i] = get(s->fd, s->opts[i].level, s->opts[i].name);
    }
}

static void check(const struct sock *s) {
    for (int i = 0; i < s->n; i++) {
        long now = get(s->fd, s->opts[i].level, s->opts[i].name);
        if (now != s->want[i]) fail(s->opts[i].what, now, s->want[i]);
    }
}

#define N(a) (int)(sizeof a / sizeof a[0])

int main(int argc, char **argv) {
    static const struct opt lopts[] = {
        {SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE"}, {IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"},
        {SOL_SOCKET, SO_RCVBUF, 300000, "SO_RCVBUF"}, {IPPROTO_TCP, TCP_DEFER_ACCEPT, 10, "TCP_DEFER_ACCEPT"},
        {IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE"}, {IPPROTO_IP, IP_TOS, 0x10, "IP_TOS"},
        {SOL_SOCKET, SO_RCVTIMEO, 2500000, "listener SO_RCVTIMEO"},
    };
    static const struct opt uopts[] = {
        {SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST"}, {SOL_SOCKET, SO_SNDBUF, 100000, "SO_SNDBUF"},
        {IPPROTO_IP, IP_TTL, 9, "IP_TTL"}, {IPPROTO_IP, IP_RECVERR, 1, "IP_RECVERR"},
    };
    static const struct opt unix_opts[] = {
        {SOL_SOCKET, SO_SNDBUF, 50000, "unix SO_SNDBUF"}, {SOL_SOCKET, SO_RCVBUF, 70000, "unix SO_RCVBUF"},
        {SOL_SOCKET, SO_RCVTIMEO, 1500000, "unix SO_RCVTIMEO"}, {SOL_SOCKET, SO_SNDTIMEO, 3000000, "unix SO_SNDTIMEO"},
        {SOL_SOCKET, SO_TIMESTAMPNS, 1, "unix SO_TIMESTAMPNS"},
    };
    static const struct opt conn_opts[] = {
        {SOL_SOCKET, SO_KEEPALIVE, 1, "conn SO_KEEPALIVE"}, {IPPROTO_TCP, TCP_KEEPIDLE, 300, "conn TCP_KEEPIDLE"},
        {IPPROTO_TCP, TCP_KEEPINTVL, 100, "conn TCP_KEEPINTVL"}, {IPPROTO_TCP, TCP_KEEPCNT, 3, "conn TCP_KEEPCNT"},
        {IPPROTO_TCP, TCP_NODELAY, 1, "conn TCP_NODELAY"}, {IPPROTO_IP, IP_TOS, 0x08, "conn IP_TOS"},
        {IPPROTO_TCP, TCP_USER_TIMEOUT, 4000, "conn TCP_USER_TIMEOUT"},
        {SOL_SOCKET, SO_SNDTIMEO, 700000, "conn SO_SNDTIMEO"},
    };
    struct sock socks[6] = {
        {socket(AF_INET, SOCK_STREAM, 0), lopts, N(lopts)},
        {socket(AF_INET, SOCK_DGRAM, 0), uopts, N(uopts)},
    };
    int pair[2], one = 1, n = 4;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair)) fail("socketpair", errno, 0);
    socks[2] = (struct sock){pair[0], unix_opts, N(unix_opts)};
    socks[3] = (struct sock){pair[1], unix_opts, 3};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7910), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(socks[0].fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    for (int i = 0; i < n; i++) setup(&socks[i]);
    if (bind(socks[0].fd, (struct sockaddr *)&a, sizeof a) || listen(socks[0].fd, 8)) fail("listen", errno, 0);
    a.sin_port = htons(7911);
    if (bind(socks[1].fd, (struct sockaddr *)&a, sizeof a)) fail("bind udp", errno, 0);
    if (argc > 1 && !strcmp(argv[1], "tcp")) {
        int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
        a.sin_port = htons(7912);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1)) fail("listen 7912", errno, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof a)) fail("connect 7912", errno, 0);
        int s = accept(l, NULL, NULL);
        if (s < 0) fail("accept 7912", errno, 0);
        close(l);
        socks[n++] = (struct sock){c, conn_opts, N(conn_opts)};
        socks[n++] = (struct sock){s, conn_opts, N(conn_opts)};
        setup(&socks[4]);
        setup(&socks[5]);
    }
    for (long b = 1;; b++) {
        for (int i = 0; i < n; i++) check(&socks[i]);
        beat(b);
        nap_ms(100);
    }
}
