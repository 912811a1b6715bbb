/* SysV IPC objects in the container's IPC namespace, checked every beat:
 * - a message queue (key 7101, mode 0640, owned by 1000:100, capacity
 *   lowered to 8000) holding three messages of types 7, 1 and 42, one
 *   empty; and an empty private queue;
 * - a semaphore set (key 7102) of four values;
 * - a segment (key 7103) of three pages and a bit, its second page never
 *   touched, attached read-write (its last page made read-only by
 *   mprotect) and read-only elsewhere; a child process attached to it by
 *   inheritance writes a counter the parent must see move;
 * - a private segment attached and then removed (IPC_RMID while attached);
 * - a segment (key 7104) not attached, locked (SHM_LOCK), with data.
 * Each must keep its id, key, mode, owner, contents and attachments. */
#include "beat.h"
#include <errno.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

struct msg {
    long type;
    char text[64];
};

static const long types[3] = {7, 1, 42};
static const char *texts[3] = {"first message", "", "the third, longer message"};

static void check_queue(int q) {
    struct msqid_ds ds;
    if (msgget(7101, 0) != q) fail("queue id by key", msgget(7101, 0), q);
    if (msgctl(q, IPC_STAT, &ds)) fail("queue stat", errno, 0);
    if (ds.msg_qnum != 3) fail("queue messages", ds.msg_qnum, 3);
    if (ds.msg_qbytes != 8000) fail("queue capacity", ds.msg_qbytes, 8000);
    if ((ds.msg_perm.mode & 0777) != 0640) fail("queue mode", ds.msg_perm.mode, 0640);
    if (ds.msg_perm.uid != 1000 || ds.msg_perm.gid != 100) fail("queue owner", ds.msg_perm.uid, 1000);
    if (ds.msg_perm.cuid != 0) fail("queue creator", ds.msg_perm.cuid, 0);
    for (int i = 0; i < 3; i++) {
        struct msg m = {0};
        long n = msgrcv(q, &m, sizeof m.text, i, MSG_COPY | IPC_NOWAIT);
        if (n != (long)strlen(texts[i]) || m.type != types[i] || memcmp(m.text, texts[i], n))
            fail("queued message", n, (long)strlen(texts[i]));
    }
}

int main(void) {
    /* The queues. */
    int q = msgget(7101, IPC_CREAT | 0640);
    int empty = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (q < 0 || empty < 0) fail("msgget", errno, 0);
    for (int i = 0; i < 3; i++) {
        struct msg m = {types[i], ""};
        strcpy(m.text, texts[i]);
        if (msgsnd(q, &m, strlen(texts[i]), 0)) fail("msgsnd", errno, 0);
    }
    struct msqid_ds mds;
    msgctl(q, IPC_STAT, &mds);
    mds.msg_qbytes = 8000;
    mds.msg_perm.uid = 1000;
    mds.msg_perm.gid = 100;
    if (msgctl(q, IPC_SET, &mds)) fail("msgctl IPC_SET", errno, 0);

    /* The semaphores. */
    int s = semget(7102, 4, IPC_CREAT | 0600);
    unsigned short vals[4] = {0, 1, 300, 32767}, got[4];
    if (s < 0 || semctl(s, 0, SETALL, vals)) fail("semaphores", errno, 0);

    /* The segment, attached twice, and a child sharing it. */
    size_t size = 3 * 4096 + 100;
    int id = shmget(7103, size, IPC_CREAT | 0600);
    unsigned char *rw = shmat(id, NULL, 0), *ro = shmat(id, NULL, SHM_RDONLY);
    if (id < 0 || rw == (void *)-1 || ro == (void *)-1) fail("shmat", errno, 0);
    for (size_t i = 0; i < 4096; i++) rw[i] = (unsigned char)(i * 3);
    for (size_t i = 2 * 4096; i < size; i++) rw[i] = (unsigned char)(i * 5);
    if (mprotect(rw + 3 * 4096, 4096, PROT_READ)) fail("mprotect", errno, 0);
    volatile long *counter = (volatile long *)(rw + 2 * 4096 + 8);
    *counter = 0;
    pid_t child = fork();
    if (child == 0) {
        for (;;) {
            (*counter)++;
            nap_ms(20);
        }
    }

    /* A segment removed while attached. */
    int gone = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    unsigned char *g = shmat(gone, NULL, 0);
    if (gone < 0 || g == (void *)-1) fail("shmat private", errno, 0);
    g[100] = 77;
    if (shmctl(gone, IPC_RMID, NULL)) fail("IPC_RMID", errno, 0);

    /* A segment not attached, locked, with data. */
    int kept = shmget(7104, 8192, IPC_CREAT | 0600);
    unsigned char *k = shmat(kept, NULL, 0);
    if (kept < 0 || k == (void *)-1) fail("shmat kept", errno, 0);
    k[8191] = 99;
    shmdt(k);
    if (shmctl(kept, SHM_LOCK, NULL)) fail("SHM_LOCK", errno, 0);

    long last = -1;
    for (long n = 1;; n++) {
        check_queue(q);
        struct msqid_ds e;
        if (msgctl(empty, IPC_STAT, &e) || e.msg_qnum != 0) fail("empty queue", errno, 0);
        if (semget(7102, 0, 0) != s) fail("semaphores id by key", semget(7102, 0, 0), s);
        if (semctl(s, 0, GETALL, got) || memcmp(got, vals, sizeof vals)) fail("semaphore values", got[3], vals[3]);

        if (shmget(7103, 0, 0) != id) fail("segment id by key", shmget(7103, 0, 0), id);
        for (size_t i = 0; i < 4096; i += 7)
            if (rw[i] != (unsigned char)(i * 3) || ro[i] != rw[i]) fail("segment page 0", rw[i], (unsigned char)(i * 3));
        for (size_t i = 4096; i < 2 * 4096; i++)
            if (ro[i]) fail("untouched page", ro[i], 0);
        for (size_t i = 3 * 4096; i < size; i++)
            if (ro[i] != (unsigned char)(i * 5)) fail("segment tail", ro[i], (unsigned char)(i * 5));
        rw[5000] = (unsigned char)n; /* written through one, read through the other */
        if (ro[5000] != (unsigned char)n) fail("attachments share", ro[5000], (unsigned char)n);
        rw[5000] = 0;
        struct shmid_ds ds;
        if (shmctl(id, IPC_STAT, &ds) || ds.shm_nattch != 6 || ds.shm_segsz != size)
            fail("segment attachments", ds.shm_nattch, 6); /* rw split in two, ro, and the child's three */
        if ((ds.shm_perm.mode & 0777) != 0600) fail("segment mode", ds.shm_perm.mode, 0600);
        if (mprotect(ro, 4096, PROT_READ | PROT_WRITE) == 0 || errno != EACCES) fail("read-only attachment", errno, EACCES);
        if (*counter == last) fail("child's counter stopped", *counter, last);
        last = *counter;

        if (g[100] != 77) fail("removed segment", g[100], 77);
        if (shmctl(gone, IPC_STAT, &ds) || !(ds.shm_perm.mode & SHM_DEST) || ds.shm_nattch != 1)
            fail("removed segment state", ds.shm_perm.mode, SHM_DEST);
        if (shmctl(kept, IPC_STAT, &ds) || !(ds.shm_perm.mode & SHM_LOCKED) || ds.shm_nattch != 0)
            fail("locked segment state", ds.shm_perm.mode, SHM_LOCKED);
        k = shmat(kept, NULL, SHM_RDONLY);
        if (k == (void *)-1 || k[8191] != 99 || k[0]) fail("unattached segment", errno, 0);
        shmdt(k);
        beat(n);
        nap_ms(100);
    }
}
