/* fd kinds whose flags matter: two memfds made to allow sealing, one
 * sealed against shrinking, growing and writing, one with no seal yet
 * (sealing must stay possible); a plain memfd stays sealed against
 * sealing; an O_PATH fd on a directory stays O_PATH. Every beat: the
 * seals, the contents, the flags. */
#define _GNU_SOURCE
#include "beat.h"
#include <fcntl.h>
#include <sys/mman.h>

int main(void) {
    int sealed = memfd_create("sealed", MFD_ALLOW_SEALING);
    int open_ = memfd_create("sealable", MFD_ALLOW_SEALING);
    int plain = memfd_create("plain", 0);
    int path = open("/", O_PATH | O_DIRECTORY);
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
        beat(n);
        nap_ms(100);
    }
}
