/* fd kinds whose flags matter: two memfds made to allow sealing, one
 * sealed against shrinking, growing and writing, one with no seal yet
 * (sealing must stay possible); a plain memfd stays sealed against
 * sealing; an O_PATH fd on a directory stays O_PATH; a file deleted while
 * open keeps its mode (0751) and owner (123:456); a sparse file deleted
 * while open (4 bytes at 0 and at 1 MiB) keeps its hole. Every beat: the
 * seals, the contents, the flags, the mode and owner, the hole. */
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
    for (long n = 1;; n++) {
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
