/* inotify: watches on a directory (IN_CREATE, wd 1) and on a file
 * (IN_MODIFY, wd 3: wd 2 was removed, leaving a gap). Every beat a file is
 * created in the directory and the watched file is modified; the events
 * must come with these watch descriptors and none other, at once: they
 * are read right after they are made, so that none waits in the queue at
 * a checkpoint (a checkpoint refuses events queued but not read), and
 * every beat must see both. A subdirectory holding a file this process
 * maps is watched for opens, reads and changes (wd 4): nothing happens
 * there, so no event may come, not even from a restore that opens the file
 * to map it again.
 * usage: inotify DIR */
#include "beat.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char file[512], other[512], made[600];
    snprintf(file, sizeof file, "%s/watched.txt", dir);
    snprintf(other, sizeof other, "%s/other.txt", dir);
    close(open(file, O_CREAT | O_WRONLY, 0644));
    close(open(other, O_CREAT | O_WRONLY, 0644));
    int in = inotify_init1(IN_NONBLOCK);
    int wd_dir = inotify_add_watch(in, dir, IN_CREATE);
    int gap = inotify_add_watch(in, other, IN_MODIFY);
    int wd_file = inotify_add_watch(in, file, IN_MODIFY);
    inotify_rm_watch(in, gap);
    char quiet[512], lib[600];
    snprintf(quiet, sizeof quiet, "%s/quiet", dir);
    snprintf(lib, sizeof lib, "%s/lib", quiet);
    mkdir(quiet, 0755);
    int l = open(lib, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (l < 0 || write(l, "mapped", 6) != 6) fail("lib", errno, 0);
    if (mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, l, 0) == MAP_FAILED) fail("mmap lib", errno, 0);
    close(l);
    /* (Not closes: after a migration on one host, the source's mapping
     * of the file is closed as it ends, which the watch would see.) */
    if (inotify_add_watch(in, quiet, IN_OPEN | IN_ACCESS | IN_ATTRIB | IN_MODIFY) != 4) fail("wd 4", 0, 0);
    char buf[4096];
    while (read(in, buf, sizeof buf) > 0) {} /* the IN_IGNORED of the removal */
    for (long n = 1;; n++) {
        snprintf(made, sizeof made, "%s/made-%ld", dir, n);
        close(open(made, O_CREAT | O_WRONLY, 0644));
        unlink(made);
        int fd = open(file, O_WRONLY | O_APPEND);
        if (write(fd, "x", 1) != 1) fail("write", 0, 0);
        close(fd);
        int got_dir = 0, got_file = 0;
        ssize_t len = read(in, buf, sizeof buf);
        for (char *p = buf; len > 0 && p < buf + len;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (e->wd == wd_dir && (e->mask & IN_CREATE)) got_dir = 1;
            else if (e->wd == wd_file && (e->mask & IN_MODIFY)) got_file = 1;
            /* Nothing else, an IN_IGNORED neither: the restore steps the
             * watch numbers past the gap by removing watches of its own,
             * whose IN_IGNORED events it must not leave behind. */
            else fail("event on an unknown wd", e->wd, e->mask);
            p += sizeof *e + e->len;
        }
        if (!got_dir || !got_file) fail("no events on wds", wd_dir, wd_file);
        beat(n);
        nap_ms(100);
    }
}
