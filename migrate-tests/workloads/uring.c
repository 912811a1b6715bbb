/* Holds an io_uring fd (a kind the engine refuses) and beats.
 * usage: uring [perf]   (perf: a perf event fd instead) */
#include "beat.h"
#include <linux/perf_event.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    int fd;
    if (argc > 1) {
        struct perf_event_attr a = {0};
        a.type = PERF_TYPE_SOFTWARE;
        a.size = sizeof a;
        a.config = PERF_COUNT_SW_TASK_CLOCK;
        fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
    } else {
        char params[120] = {0};
        fd = syscall(425 /* io_uring_setup */, 4, params);
    }
    if (fd < 0) { fail("open", fd, 0); return 1; }
    for (long n = 1;; n++) {
        beat(n);
        nap_ms(100);
    }
}
