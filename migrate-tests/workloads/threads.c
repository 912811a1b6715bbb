/* Threads: four workers, each with a thread-local counter and its TID;
 * the main thread checks that every worker keeps counting and keeps its
 * TID, and that the workers' FPU/SSE state survives. */
#include "beat.h"
#include <pthread.h>
#include <sys/syscall.h>

#define N 4
static volatile long count[N];
static volatile pid_t tids[N];
static __thread long local;

static void *worker(void *arg) {
    long id = (long)arg;
    tids[id] = gettid();
    double acc = id;
    local = id * 1000;
    for (long i = 0;; i++) {
        if (local != id * 1000 + i) fail("thread-local", local, id * 1000 + i);
        if (gettid() != tids[id]) fail("tid changed", gettid(), tids[id]);
        acc = acc * 1.0000001 + 0.5;
        if (acc != acc) fail("fpu", 0, 0);
        local++;
        count[id]++;
        nap_ms(10);
    }
    return 0;
}

int main(void) {
    pthread_t t[N];
    for (long i = 0; i < N; i++) pthread_create(&t[i], 0, worker, (void *)i);
    long last[N] = {0};
    for (long n = 1;; n++) {
        nap_ms(100);
        for (int i = 0; i < N; i++) {
            if (n > 2 && count[i] <= last[i]) fail("thread stalled", i, count[i]);
            last[i] = count[i];
        }
        beat(n);
    }
}
