/* fd kinds whose flags matter: two memfds made to allow sealing, one
 * sealed against shrinking, growing and writing, one with no seal yet
 * (sealing must stay possible); a plain memfd stays sealed against
 * sealing; an O_PATH fd on a directory stays O_PATH; a file deleted while
 * open keeps its mode (0751) and owner (123:456); a sparse file deleted
 * while open (4 bytes at 0 and at 1 MiB) keeps its hole. Every beat: the
 * seals, the contents, the flags, the mode and owner, the hole.
 * A memfd is one object with its fds and mappings: the sealable one is
 * mapped shared and opened a second time (/proc/self/fd); a write through
 * either fd shows in the mapping and the other, and the reverse; the
 * second open's position is its own. The write-sealed one is mapped
 * read-only (it may not be made writable); a third, sealed with
 * F_SEAL_FUTURE_WRITE after it was mapped writable, is still written
 * through that mapping, but not through its fd or a new mapping. A memfd
 * closed while mapped shared keeps its name (the state differ reads it). */
#define _GNU_SOURCE
#include "beat.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

int main(void) {
    int sealed = memfd_create("sealed", MFD_ALLOW_SEALING);
    int open_ = memfd_create("sealable", MFD_ALLOW_SEALING);
    int plain = memfd_create("plain", 0);
    int path = open("/", O_PATH | O_DIRECTORY);
    char ghost_name[64];
    snprintf(ghost_name, sizeof ghost_name, "/tmp/fdkinds-ghost-%d", getpid());
    int ghost = open(ghost_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (ghost < 0 || fchown(ghost, 123, 456) || fchmod(ghost, 0751) || unlink(ghost_name)) {
        fail("ghost file", 0, 0);
        return 1;
    }
    snprintf(ghost_name, sizeof ghost_name, "/tmp/fdkinds-sparse-%d", getpid());
    int sparse = open(ghost_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (sparse < 0 || pwrite(sparse, "head", 4, 0) != 4 || pwrite(sparse, "tail", 4, 1 << 20) != 4 ||
        unlink(ghost_name)) {
        fail("sparse file", 0, 0);
        return 1;
    }
    int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
    if (write(sealed, "sealed\n", 7) != 7 || fcntl(sealed, F_ADD_SEALS, want)) {
        fail("seal", 0, 0);
        return 1;
    }
    if (ftruncate(open_, 4096)) { fail("size", 0, 0); return 1; }
    char name[64];
    snprintf(name, sizeof name, "/proc/self/fd/%d", open_);
    int again = open(name, O_RDWR);
    char *om = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, open_, 0);
    const char *sm = mmap(0, 4096, PROT_READ, MAP_SHARED, sealed, 0);
    int future = memfd_create("future", MFD_ALLOW_SEALING);
    char *fm = future < 0 || ftruncate(future, 4096) ? MAP_FAILED
             : mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, future, 0);
    if (again < 0 || om == MAP_FAILED || sm == MAP_FAILED || fm == MAP_FAILED ||
        fcntl(future, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) || lseek(again, 5, SEEK_SET) != 5) {
        fail("memfd mappings", 0, 0);
        return 1;
    }
    int closed = memfd_create("closed-shared", 0);
    char *cm = closed < 0 || ftruncate(closed, 8192) ? MAP_FAILED
             : mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, closed, 0);
    if (cm == MAP_FAILED || close(closed)) { fail("closed memfd mapping", 0, 0); return 1; }
    for (long n = 1;; n++) {
        if (n > 1 && cm[4096] != (char)(n - 1)) fail("closed memfd's mapping", cm[4096], n - 1);
        cm[4096] = (char)n;
        long v = n, got = 0;
        if (pwrite(open_, &v, sizeof v, 0) != sizeof v || memcmp(om, &v, sizeof v)) fail("memfd write, seen mapped", *(long *)om, n);
        om[8] = (char)n;
        if (pread(again, &got, 1, 8) != 1 || (char)got != (char)n) fail("mapped write, seen by the second open", got, n);
        if (lseek(again, 0, SEEK_CUR) != 5 || lseek(open_, 0, SEEK_CUR) != 0) fail("memfd positions", lseek(again, 0, SEEK_CUR), 5);
        if (memcmp(sm, "sealed\n", 7)) fail("write-sealed memfd mapped", sm[0], 's');
        if (mprotect((void *)sm, 4096, PROT_READ | PROT_WRITE) == 0) fail("write-sealed mapping made writable", 0, 0);
        fm[0] = (char)n;
        if (pwrite(future, "x", 1, 1) != -1) fail("write through F_SEAL_FUTURE_WRITE", 1, -1);
        if (pread(future, &got, 1, 0) != 1 || (char)got != (char)n) fail("F_SEAL_FUTURE_WRITE memfd's mapping", got, n);
        if (mmap(0, 4096, PROT_WRITE, MAP_SHARED, future, 0) != MAP_FAILED) fail("new writable mapping of a sealed memfd", 0, 0);
        if (fcntl(future, F_GET_SEALS) != F_SEAL_FUTURE_WRITE) fail("future seals", fcntl(future, F_GET_SEALS), F_SEAL_FUTURE_WRITE);
        if (fcntl(sealed, F_GET_SEALS) != want) fail("seals", fcntl(sealed, F_GET_SEALS), want);
        if (fcntl(open_, F_GET_SEALS) != 0) fail("no seals", fcntl(open_, F_GET_SEALS), 0);
        if (fcntl(plain, F_GET_SEALS) != F_SEAL_SEAL) fail("plain seals", fcntl(plain, F_GET_SEALS), F_SEAL_SEAL);
        char buf[8] = {0};
        if (pread(sealed, buf, 7, 0) != 7 || memcmp(buf, "sealed\n", 7)) fail("contents", 0, 0);
        if (pwrite(sealed, "x", 1, 0) != -1) fail("write through a write seal", 1, -1);
        if (!(fcntl(path, F_GETFL) & O_PATH)) fail("O_PATH", fcntl(path, F_GETFL), O_PATH);
        struct stat st;
        if (fstat(ghost, &st) || (st.st_mode & 07777) != 0751) fail("ghost mode", st.st_mode & 07777, 0751);
        if (st.st_uid != 123 || st.st_gid != 456) fail("ghost owner", st.st_uid, st.st_gid);
        char hd[4], tl[4];
        if (fstat(sparse, &st) || st.st_size != (1 << 20) + 4) fail("sparse size", st.st_size, (1 << 20) + 4);
        if (st.st_blocks * 512 > 64 << 10) fail("sparse file's hole (bytes allocated)", st.st_blocks * 512, 64 << 10);
        if (pread(sparse, hd, 4, 0) != 4 || memcmp(hd, "head", 4) || pread(sparse, tl, 4, 1 << 20) != 4 ||
            memcmp(tl, "tail", 4))
            fail("sparse data", 0, 0);
        beat(n);
        nap_ms(100);
    }
}
