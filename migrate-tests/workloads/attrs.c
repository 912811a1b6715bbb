/* Scheduling and prctl attributes: SCHED_BATCH with nice 5, oom_score_adj
 * 500, THP disabled, a child subreaper, not dumpable, a timer slack of
 * 123456 ns, personality ADDR_NO_RANDOMIZE, I/O priority best-effort 6,
 * affinity to CPU 0; securebits NOROOT and KEEP_CAPS, rdtsc faulting
 * (PR_TSC_SIGSEGV), early machine-check kill, and where the kernel lets
 * it: store bypass speculation disabled, KSM merging of the whole address
 * space, memory-deny-write-execute; core dump filter 0x7f. Every beat each
 * must still be so. And per thread, the NUMA memory policy and the time
 * slice asked for (sched_runtime, Linux 6.12 on): the main thread
 * MPOL_PREFERRED node 0 with 3 ms, a second thread MPOL_INTERLEAVE with
 * MPOL_F_STATIC_NODES over node 0 with 7 ms, which checks its own (and
 * its timer slack and personality, the process's), and the audit login
 * uid 1000 in both, where the process may set it. And a child under
 * SCHED_DEADLINE (10 ms of every 30), which checks its parameters every
 * 100 ms. */
#define _GNU_SOURCE
#include "beat.h"
#include <errno.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <stdint.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#endif
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif
/* What the kernel let this process set (-1: not set). */
static int spec = -1, ksm = -1, mdwe = -1;

static long slack = 123456;

struct attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};
#define MPOL_PREFERRED 1
#define MPOL_INTERLEAVE 3
#define MPOL_F_STATIC_NODES (1 << 15)
/* Whether the kernel takes a time slice (-1: not known yet). */
static int slices = -1;
/* Whether this process could set its audit login uid to 1000. */
static int loginuid;

static long thread_loginuid(void) {
    long v = -1;
    FILE *f = fopen("/proc/thread-self/loginuid", "r");
    if (f && fscanf(f, "%ld", &v) != 1) v = -1;
    if (f) fclose(f);
    return v;
}

/* Asks for a time slice of `ns` for the calling thread. */
static void set_slice(uint64_t ns) {
    struct attr a = {.size = sizeof a, .policy = SCHED_BATCH, .nice = 5, .runtime = ns}, got = {0};
    if (syscall(SYS_sched_setattr, 0, &a, 0)) fail("sched_setattr", errno, 0);
    syscall(SYS_sched_getattr, 0, &got, sizeof got, 0);
    if (slices < 0) slices = got.runtime == ns;
}

/* Checks the calling thread's memory policy and time slice. */
static void check_thread(const char *who, int mode, uint64_t ns) {
    int m = -1;
    unsigned long mask = 0;
    struct attr a = {0};
    if (syscall(SYS_get_mempolicy, &m, &mask, 64, 0, 0) || m != mode || mask != 1) fail(who, m, mode);
    syscall(SYS_sched_getattr, 0, &a, sizeof a, 0);
    if (slices == 1 && a.runtime != ns) fail(who, a.runtime, ns);
    /* Per thread too, though carried for the process. */
    if (prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != slack) fail("thread's timerslack", prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0), slack);
    if (personality(0xffffffff) != ADDR_NO_RANDOMIZE) fail("thread's personality", personality(0xffffffff), ADDR_NO_RANDOMIZE);
    if (loginuid && thread_loginuid() != 1000) fail("thread's loginuid", thread_loginuid(), 1000);
}

static void *second(void *arg) {
    unsigned long node0 = 1;
    (void)arg;
    if (syscall(SYS_set_mempolicy, MPOL_INTERLEAVE | MPOL_F_STATIC_NODES, &node0, 64)) fail("set_mempolicy", errno, 0);
    set_slice(7000000);
    for (;;) {
        check_thread("second thread's memory policy or slice", MPOL_INTERLEAVE | MPOL_F_STATIC_NODES, 7000000);
        nap_ms(50);
    }
}
/* IOPRIO_CLASS_BE, level 6. */
#define IOPRIO ((2 << 13) | 6)

static void check(void) {
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    if (nice != 5) fail("nice", nice, 5);
    if (sched_getscheduler(0) != SCHED_BATCH) fail("policy", sched_getscheduler(0), SCHED_BATCH);
    if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1) fail("thp disable", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), 1);
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) fail("dumpable", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    if (prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != slack) fail("timerslack", prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0), slack);
    int sub = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0);
    if (sub != 1) fail("subreaper", sub, 1);
    FILE *f = fopen("/proc/self/oom_score_adj", "r");
    int adj = 0;
    if (!f || fscanf(f, "%d", &adj) != 1 || adj != 500) fail("oom_score_adj", adj, 500);
    if (f) fclose(f);
    if (personality(0xffffffff) != ADDR_NO_RANDOMIZE) fail("personality", personality(0xffffffff), ADDR_NO_RANDOMIZE);
    long io = syscall(SYS_ioprio_get, 1, 0);
    if (io != IOPRIO) fail("ioprio", io, IOPRIO);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) || CPU_COUNT(&set) != 1 || !CPU_ISSET(0, &set)) fail("CPU affinity", CPU_COUNT(&set), 1);
    FILE *cf = fopen("/proc/self/coredump_filter", "r");
    unsigned filter = 0;
    if (!cf || fscanf(cf, "%x", &filter) != 1 || filter != 0x7f) fail("coredump_filter", filter, 0x7f);
    if (cf) fclose(cf);
    int bits = prctl(PR_GET_SECUREBITS), tsc = 0;
    if (bits != (SECBIT_NOROOT | SECBIT_KEEP_CAPS)) fail("securebits", bits, SECBIT_NOROOT | SECBIT_KEEP_CAPS);
    if (prctl(PR_GET_TSC, &tsc) || tsc != PR_TSC_SIGSEGV) fail("TSC mode", tsc, PR_TSC_SIGSEGV);
    int mce = prctl(PR_MCE_KILL_GET, 0, 0, 0, 0);
    if (mce != PR_MCE_KILL_EARLY) fail("machine-check kill", mce, PR_MCE_KILL_EARLY);
    int s = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);
    if (spec >= 0 && s != spec) fail("store bypass control", s, spec);
    if (ksm >= 0 && prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) != ksm) fail("KSM merge", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0), ksm);
    if (mdwe >= 0 && prctl(PR_GET_MDWE, 0, 0, 0, 0) != mdwe) fail("MDWE", prctl(PR_GET_MDWE, 0, 0, 0, 0), mdwe);
}

/* A child under SCHED_DEADLINE, forked before the rest is set. */
static void deadline_child(void) {
    if (fork() != 0) return;
    struct attr a = {.size = sizeof a, .policy = 6, .runtime = 10000000, .deadline = 30000000, .period = 30000000};
    if (syscall(SYS_sched_setattr, 0, &a, 0)) fail("SCHED_DEADLINE", errno, 0);
    for (;;) {
        struct attr got = {0};
        if (syscall(SYS_sched_getattr, 0, &got, sizeof got, 0) || got.policy != 6 || got.runtime != a.runtime ||
            got.deadline != a.deadline || got.period != a.period)
            fail("SCHED_DEADLINE parameters", got.policy, got.runtime);
        nap_ms(100);
    }
}

int main(void) {
    deadline_child();
    struct sched_param p = {0};
    FILE *f = fopen("/proc/self/oom_score_adj", "w");
    if (!f || fprintf(f, "500\n") < 0 || fclose(f)) fail("set oom_score_adj", errno, 0);
    if (sched_setscheduler(0, SCHED_BATCH, &p) || setpriority(PRIO_PROCESS, 0, 5) ||
        prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) ||
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) || prctl(PR_SET_TIMERSLACK, slack, 0, 0, 0) ||
        personality(ADDR_NO_RANDOMIZE) < 0 || syscall(SYS_ioprio_set, 1, 0, IOPRIO)) {
        fail("set attributes", errno, 0);
        return 1;
    }
    FILE *cw = fopen("/proc/self/coredump_filter", "w");
    if (!cw || fprintf(cw, "0x7f\n") < 0 || fclose(cw)) fail("set coredump_filter", errno, 0);
    if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_KEEP_CAPS) || prctl(PR_SET_TSC, PR_TSC_SIGSEGV) ||
        prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0)) {
        fail("set prctl state", errno, 0);
        return 1;
    }
    if (!prctl(PR_SET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, PR_SPEC_DISABLE, 0, 0))
        spec = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);
    if (!prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0)) ksm = 1;
    if (!prctl(PR_SET_MDWE, 1, 0, 0, 0)) mdwe = 1;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof one, &one)) {
        fail("set attributes", errno, 0);
        return 1;
    }
    FILE *lu = fopen("/proc/self/loginuid", "w");
    loginuid = lu && fprintf(lu, "1000") > 0 && !fclose(lu);
    unsigned long node0 = 1;
    if (syscall(SYS_set_mempolicy, MPOL_PREFERRED, &node0, 64)) fail("set_mempolicy", errno, 0);
    set_slice(3000000);
    pthread_t t;
    if (pthread_create(&t, NULL, second, NULL)) fail("pthread_create", 0, 0);
    for (long n = 1;; n++) {
        check();
        check_thread("memory policy or slice", MPOL_PREFERRED, 3000000);
        beat(n);
        nap_ms(100);
    }
}
