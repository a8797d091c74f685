/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * host_cdrom's media helpers (src/protocols/file.c: vd_cdrom_is_inserted,
 * vd_cdrom_eject, vd_cdrom_lock_medium) where no CD-ROM drive exists: on a
 * loop device, which has no CD-ROM ioctls, host_cdrom opens, reports no
 * medium, I/O fails with ENOMEDIUM ("No medium found", as QEMU), and eject
 * and door lock fail with the ioctl's error instead of pretending to work;
 * on file and host_device nodes the helpers answer ENOTSUP.  Needs root and
 * losetup for the loop device (skips otherwise).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/protocols/file.h"
#include "internal.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static char loopdev[64];

static void detach(void)
{
    if (loopdev[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "losetup -d %s", loopdev);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not detach %s\n", loopdev);
        }
    }
}

static vd_node *open_as(const char *path, const char *drv, unsigned flags)
{
    vd_opts *o = vd_opts_new();
    vd_opts_set(o, "driver", drv);
    vd_error *err = NULL;
    vd_node *bs = vd_node_open(path, drv, o, flags, &err);
    vd_opts_free(o);
    CHECK(bs, "open %s as %s: %s", path, drv, err ? err->msg : "?");
    return bs;
}

int main(void)
{
    char img[] = "/tmp/vdisk-host-drives.XXXXXX";
    int fd = mkstemp(img);
    CHECK(fd >= 0, "mkstemp");
    CHECK(ftruncate(fd, 1 << 20) == 0, "truncate");
    close(fd);

    /* file nodes: not a CD-ROM */
    vd_node *f = open_as(img, "file", VD_NODE_RDWR);
    CHECK(!vd_cdrom_is_inserted(f), "file inserted");
    CHECK(vd_cdrom_eject(f, true) == -ENOTSUP, "file eject");
    CHECK(vd_cdrom_lock_medium(f, true) == -ENOTSUP, "file lock");
    vd_node_close(f);

    if (getuid() != 0) {
        unlink(img);
        printf("needs root for losetup\n");
        return 77;
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "losetup -f --show %s", img);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(loopdev, sizeof(loopdev), p) || pclose(p) != 0) {
        loopdev[0] = '\0';
        unlink(img);
        printf("losetup failed (no loop devices here)\n");
        return 77;
    }
    loopdev[strcspn(loopdev, "\n")] = '\0';
    atexit(detach);

    /* host_device on the loop device: the helpers answer ENOTSUP */
    vd_node *h = open_as(loopdev, "host_device", 0);
    CHECK(vd_cdrom_eject(h, true) == -ENOTSUP, "host_device eject");
    CHECK(vd_cdrom_lock_medium(h, false) == -ENOTSUP, "host_device lock");
    vd_node_close(h);

    /* host_cdrom on a drive without the CD-ROM ioctls */
    vd_node *c = open_as(loopdev, "host_cdrom", 0);
    CHECK(!vd_cdrom_is_inserted(c), "a loop device has no disc");
    uint8_t buf[512];
    int ret = vd_node_pread(c, 0, 512, buf, 0);
    CHECK(ret == -ENOMEDIUM, "read: %d", ret);
    ret = vd_cdrom_eject(c, true);
    CHECK(ret < 0 && ret != -ENOTSUP, "eject: %d", ret);
    printf("eject on %s: %s\n", loopdev, strerror(-ret));
    ret = vd_cdrom_eject(c, false);
    CHECK(ret < 0 && ret != -ENOTSUP, "close tray: %d", ret);
    ret = vd_cdrom_lock_medium(c, true);
    CHECK(ret < 0 && ret != -ENOTSUP, "lock: %d", ret);
    printf("door lock on %s: %s\n", loopdev, strerror(-ret));
    vd_node_close(c);

    unlink(img);
    printf("host drive tests passed\n");
    return 0;
}
