/* Regular files: a file written through two fds that share one open file
 * description (dup) and a child that inherited it, all appending in turn
 * at one shared offset; a file deleted while open whose contents must
 * survive; a memfd with contents; a read-only file read at an offset; a
 * directory of 40 files read part-way (getdents64), whose next entry must
 * stay the same; a FIFO grown to 128 KiB holding records; a FIFO (holding
 * bytes, open at both ends), a directory and a device node (null), each
 * deleted while open, which must stay what they were; O_PATH fds on a
 * symlink itself (O_NOFOLLOW), a unix socket's node and a file; a file
 * deleted under the name it was opened by and still linked under another,
 * which must stay that one file (a write through the fd is read by the
 * other name); /proc/N/status of a child that has exited and been reaped
 * since, which must fail to read with ESRCH; with argv[2]
 * "lease", a write lease (F_SETLEASE) on a file nothing else opens (not
 * on a migration to the same host: the source keeps the file open). */
#define _GNU_SOURCE
#include "beat.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char path[512];
    snprintf(path, sizeof path, "%s/shared.txt", dir);
    int a = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int b = dup(a);
    snprintf(path, sizeof path, "%s/gone.txt", dir);
    int g = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (write(g, "deleted but open\n", 17) != 17) return 1;
    unlink(path);
    int m = memfd_create("workload-memfd", 0);
    if (write(m, "memfd contents\n", 15) != 15) return 1;
    snprintf(path, sizeof path, "%s/ro.txt", dir);
    int w = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (write(w, "0123456789", 10) != 10) return 1;
    close(w);
    int ro = open(path, O_RDONLY);
    lseek(ro, 4, SEEK_SET);
    /* A FIFO holding 32 queued records, one taken and one added a beat. */
    snprintf(path, sizeof path, "%s/fifo", dir);
    unlink(path);
    mkfifo(path, 0600);
    int fr = open(path, O_RDONLY | O_NONBLOCK);
    int fw = open(path, O_WRONLY);
    /* Grown past a pipe's default (F_SETPIPE_SZ): it must keep its size. */
    if (fcntl(fw, F_SETPIPE_SZ, 131072) != 131072) return 1;
    long fifo_w = 0, fifo_r = 0;
    for (int i = 0; i < 32; i++) {
        char rec[16];
        snprintf(rec, sizeof rec, "f%08ld\n", fifo_w++);
        if (write(fw, rec, 10) != 10) return 1;
    }
    snprintf(path, sizeof path, "%s/gone-fifo", dir);
    unlink(path);
    if (mkfifo(path, 0640)) return 1;
    int gfr = open(path, O_RDONLY | O_NONBLOCK), gfw = open(path, O_WRONLY);
    unlink(path);
    if (gfr < 0 || gfw < 0 || write(gfw, "ghost fifo\n", 11) != 11) return 1;
    snprintf(path, sizeof path, "%s/gone-dir", dir);
    rmdir(path);
    if (mkdir(path, 0751)) return 1;
    int gd = open(path, O_RDONLY | O_DIRECTORY);
    rmdir(path);
    snprintf(path, sizeof path, "%s/gone-null", dir);
    unlink(path);
    if (mknod(path, S_IFCHR | 0604, makedev(1, 3))) return 1;
    int gn = open(path, O_WRONLY);
    unlink(path);
    if (gd < 0 || gn < 0) return 1;
    snprintf(path, sizeof path, "%s/link", dir);
    unlink(path);
    if (symlink("ro.txt", path)) return 1;
    int o_link = open(path, O_PATH | O_NOFOLLOW);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s/sock", dir);
    unlink(un.sun_path);
    int sk = socket(AF_UNIX, SOCK_STREAM, 0);
    if (sk < 0 || bind(sk, (struct sockaddr *)&un, sizeof un) || close(sk)) return 1;
    int o_sock = open(un.sun_path, O_PATH);
    snprintf(path, sizeof path, "%s/ro.txt", dir);
    int o_file = open(path, O_PATH);
    if (o_link < 0 || o_sock < 0 || o_file < 0) return 1;
    pid_t gone = fork();
    if (gone == 0) _exit(0);
    char gone_path[64];
    snprintf(gone_path, sizeof gone_path, "/proc/%d/status", (int)gone);
    int of_gone = open(gone_path, O_RDONLY);
    if (of_gone < 0 || waitpid(gone, NULL, 0) != gone) return 1;
    char other_name[512];
    snprintf(path, sizeof path, "%s/first-name", dir);
    snprintf(other_name, sizeof other_name, "%s/second-name", dir);
    unlink(other_name);
    int hl = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
    if (hl < 0 || link(path, other_name) || unlink(path)) return 1;
    snprintf(path, sizeof path, "%s/leased", dir);
    int leased = argc > 2 && !strcmp(argv[2], "lease");
    int lease = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (lease < 0 || (leased && fcntl(lease, F_SETLEASE, F_WRLCK))) return 1;
    snprintf(path, sizeof path, "%s/listing", dir);
    int d = make_listing(path, 40, 0);
    char want_next[512], next[512];
    if (d < 0 || skip_entries(d, 11)) return 1;
    next_entry(d, want_next, sizeof want_next);
    int toparent[2];
    if (pipe(toparent)) return 1;
    /* The child appends "c" each time it reads a token; both append through
     * the same offset, so the file grows by exactly 2 bytes a beat. */
    pid_t child = fork();
    if (child == 0) {
        for (;;) {
            char t;
            if (read(toparent[0], &t, 1) != 1) _exit(1);
            if (write(a, "c", 1) != 1) _exit(1);
        }
    }
    for (long n = 1;; n++) {
        off_t before = lseek(b, 0, SEEK_CUR);
        if (write(b, "p", 1) != 1) fail("write", 0, 0);
        if (write(toparent[1], "t", 1) != 1) fail("token", 0, 0);
        nap_ms(100);
        off_t after = lseek(a, 0, SEEK_CUR);
        if (after != before + 2) fail("shared offset", after, before + 2);
        char buf[32] = {0};
        if (pread(g, buf, 17, 0) != 17 || memcmp(buf, "deleted but open\n", 17)) fail("deleted file", 0, 0);
        if (pread(m, buf, 15, 0) != 15 || memcmp(buf, "memfd contents\n", 15)) fail("memfd", 0, 0);
        if (lseek(ro, 0, SEEK_CUR) != 4) fail("ro offset", lseek(ro, 0, SEEK_CUR), 4);
        if (fcntl(fr, F_GETPIPE_SZ) != 131072) fail("fifo size", fcntl(fr, F_GETPIPE_SZ), 131072);
        struct stat sr, sw, sd, sn;
        if (fstat(gfr, &sr) || fstat(gfw, &sw) || fstat(gd, &sd) || fstat(gn, &sn)) fail("fstat ghosts", errno, 0);
        if (!S_ISFIFO(sr.st_mode) || sr.st_nlink || (sr.st_mode & 07777) != 0640) fail("deleted fifo", sr.st_mode, sr.st_nlink);
        if (sr.st_ino != sw.st_ino || sr.st_dev != sw.st_dev) fail("deleted fifo ends", sr.st_ino, sw.st_ino);
        if (read(gfr, buf, 11) != 11 || memcmp(buf, "ghost fifo\n", 11)) fail("deleted fifo bytes", 0, 0);
        if (write(gfw, "ghost fifo\n", 11) != 11) fail("deleted fifo write", errno, 0);
        if (!S_ISDIR(sd.st_mode) || sd.st_nlink || (sd.st_mode & 07777) != 0751) fail("deleted dir", sd.st_mode, sd.st_nlink);
        if (!S_ISCHR(sn.st_mode) || sn.st_rdev != makedev(1, 3) || sn.st_nlink || (sn.st_mode & 07777) != 0604)
            fail("deleted null", sn.st_mode, sn.st_rdev);
        if (write(gn, "x", 1) != 1) fail("deleted null write", errno, 0);
        if (leased && fcntl(lease, F_GETLEASE) != F_WRLCK) fail("write lease", fcntl(lease, F_GETLEASE), F_WRLCK);
        char gone_buf[64];
        errno = 0;
        if (pread(of_gone, gone_buf, sizeof gone_buf, 0) != -1 || errno != ESRCH) fail("/proc/N of a reaped child", errno, ESRCH);
        char mark[16], seen[16] = {0};
        int mark_len = snprintf(mark, sizeof mark, "%ld", n);
        if (pwrite(hl, mark, mark_len, 0) != mark_len) fail("hard-linked write", errno, 0);
        int by_name = open(other_name, O_RDONLY);
        if (by_name < 0 || pread(by_name, seen, mark_len, 0) != mark_len || memcmp(seen, mark, mark_len))
            fail("hard-linked file is another file now", errno, n);
        if (by_name >= 0) close(by_name);
        struct stat sh;
        if (fstat(hl, &sh) || sh.st_nlink != 1) fail("hard-linked file's links", sh.st_nlink, 1);
        int kinds[] = {S_IFLNK, S_IFSOCK, S_IFREG}, opath[] = {o_link, o_sock, o_file};
        for (int i = 0; i < 3; i++) {
            struct stat so;
            if (fstatat(opath[i], "", &so, AT_EMPTY_PATH) || (so.st_mode & S_IFMT) != kinds[i]) fail("O_PATH fd's file", i, so.st_mode);
            if (!(fcntl(opath[i], F_GETFL) & O_PATH)) fail("O_PATH", i, fcntl(opath[i], F_GETFL));
        }
        next_entry(d, next, sizeof next);
        if (strcmp(next, want_next)) {
            printf("FAIL directory: next entry %s, was %s\n", next, want_next);
            fflush(stdout);
        }
        char rec[16] = {0};
        long v = -1;
        if (read(fr, rec, 10) != 10 || sscanf(rec, "f%ld", &v) != 1 || v != fifo_r) fail("fifo order", v, fifo_r);
        fifo_r++;
        snprintf(rec, sizeof rec, "f%08ld\n", fifo_w++);
        if (write(fw, rec, 10) != 10) fail("fifo write", 0, 0);
        beat(n);
    }
}
