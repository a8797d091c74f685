/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Image locking, compatible with QEMU 7.2 (block/file-posix.c): a process
 * using an image holds a shared (read) lock on byte 100 + bit for each
 * permission it takes and on byte 200 + bit for each permission it does
 * not share with others (bits: VD_PERM_*, the same as BLK_PERM_*).
 * Before relying on a permission we test, with an exclusive F_OFD_GETLK
 * probe, that no other open file holds the 200+bit byte; before refusing
 * one to others, that nobody holds its 100+bit byte.  Locks are taken
 * first and tested second, so two processes racing both see each other.
 *
 * Open file description (OFD) locks are used so that two opens of the same
 * image in one process conflict too and closing another descriptor of the
 * file does not drop them; POSIX locks are only a fallback for locking=on
 * on a kernel without them (as QEMU does).
 */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "file.h"

const char *vd_perm_name(unsigned perm_bit)
{
    switch (perm_bit) {
    case VD_PERM_CONSISTENT_READ:
        return "consistent read";
    case VD_PERM_WRITE:
        return "write";
    case VD_PERM_WRITE_UNCHANGED:
        return "write unchanged";
    case VD_PERM_RESIZE:
        return "resize";
    }
    return "unknown";
}

bool vd_file_lock_ofd_supported(int fd)
{
    struct flock fl = {
        .l_type = F_WRLCK,
        .l_whence = SEEK_SET,
        .l_start = 0,
        .l_len = 0,
    };
    return fcntl(fd, F_OFD_GETLK, &fl) == 0 || errno != EINVAL;
}

static int lock_byte(const vd_file_lock *l, int off, short type)
{
    struct flock fl = {
        .l_type = type,
        .l_whence = SEEK_SET,
        .l_start = off,
        .l_len = 1,
    };
    int ret;
    do {
        ret = fcntl(l->fd, l->ofd ? F_OFD_SETLK : F_SETLK, &fl);
    } while (ret == -1 && errno == EINTR);
    return ret == -1 ? -errno : 0;
}

/* 0 when an exclusive lock on the byte could be taken, -EAGAIN when another
 * open file holds it, other -errno on failure. */
static int test_byte(const vd_file_lock *l, int off)
{
    struct flock fl = {
        .l_type = F_WRLCK,
        .l_whence = SEEK_SET,
        .l_start = off,
        .l_len = 1,
    };
    int ret;
    do {
        ret = fcntl(l->fd, l->ofd ? F_OFD_GETLK : F_GETLK, &fl);
    } while (ret == -1 && errno == EINTR);
    if (ret == -1) {
        return -errno;
    }
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

static int lock_error(vd_error **errp, int err, const char *what, int off)
{
    /* EAGAIN/EACCES just mean "someone else holds it" */
    if (err == -EAGAIN || err == -EACCES) {
        return vd_error_set(errp, err, "Failed to %s byte %d", what, off);
    }
    return vd_error_setg_errno(errp, err, "Failed to %s byte %d", what, off);
}

static int apply_set(vd_file_lock *l, int base, unsigned want, unsigned *held, bool unlock,
                     vd_error **errp)
{
    for (unsigned i = 0; i < VD_PERM_COUNT; i++) {
        unsigned bit = 1u << i;
        int off = base + (int)i;
        int ret;
        if ((want & bit) && !(*held & bit)) {
            ret = lock_byte(l, off, F_RDLCK);
            if (ret < 0) {
                return lock_error(errp, ret, "lock", off);
            }
            *held |= bit;
        } else if (unlock && (*held & bit) && !(want & bit)) {
            ret = lock_byte(l, off, F_UNLCK);
            if (ret < 0) {
                return lock_error(errp, ret, "unlock", off);
            }
            *held &= ~bit;
        }
    }
    return 0;
}

int vd_file_lock_apply(vd_file_lock *l, unsigned perm_bits, unsigned unshared_bits, bool unlock,
                       vd_error **errp)
{
    int ret =
        apply_set(l, VD_LOCK_PERM_BASE, perm_bits & VD_PERM_ALL, &l->locked_perm, unlock, errp);
    if (ret < 0) {
        return ret;
    }
    return apply_set(l, VD_LOCK_SHARED_BASE, unshared_bits & VD_PERM_ALL, &l->locked_unshared,
                     unlock, errp);
}

int vd_file_lock_check(const vd_file_lock *l, unsigned perm, unsigned shared,
                       const char *filename, vd_error **errp)
{
    for (unsigned i = 0; i < VD_PERM_COUNT; i++) {
        unsigned bit = 1u << i;
        if (perm & bit) {
            int ret = test_byte(l, VD_LOCK_SHARED_BASE + (int)i);
            if (ret == -EAGAIN || ret == -EACCES) {
                /* QEMU's message and hint (iotests 153, 182) */
                vd_error_set(errp, EAGAIN, "Failed to get \"%s\" lock", vd_perm_name(bit));
                vd_error_append_hint(errp, "Is another process using the image [%s]?\n",
                                     filename);
                return -EAGAIN;
            } else if (ret < 0) {
                return vd_error_setg_errno(errp, ret, "Failed to get \"%s\" lock on '%s'",
                                           vd_perm_name(bit), filename);
            }
        }
    }
    for (unsigned i = 0; i < VD_PERM_COUNT; i++) {
        unsigned bit = 1u << i;
        if (!(shared & bit)) {
            int ret = test_byte(l, VD_LOCK_PERM_BASE + (int)i);
            if (ret == -EAGAIN || ret == -EACCES) {
                vd_error_set(errp, EAGAIN, "Failed to get shared \"%s\" lock",
                             vd_perm_name(bit));
                vd_error_append_hint(errp, "Is another process using the image [%s]?\n",
                                     filename);
                return -EAGAIN;
            } else if (ret < 0) {
                return vd_error_setg_errno(errp, ret,
                                           "Failed to get shared \"%s\" lock on '%s'",
                                           vd_perm_name(bit), filename);
            }
        }
    }
    return 0;
}

int vd_file_lock_update(vd_file_lock *l, unsigned old_perm, unsigned old_shared, unsigned perm,
                        unsigned shared, const char *filename, vd_error **errp)
{
    int ret = 0;

    /* Nothing new to take or to refuse: only releases, which cannot conflict. */
    if ((old_perm | perm) != old_perm || (old_shared & shared) != old_shared) {
        ret = vd_file_lock_apply(l, old_perm | perm, ~old_shared | ~shared, false, errp);
        if (ret == 0) {
            ret = vd_file_lock_check(l, perm, shared, filename, errp);
        }
        if (ret < 0) {
            /* back to the old set; unlocking cannot fail in practice */
            (void)vd_file_lock_apply(l, old_perm, ~old_shared, true, NULL);
            return ret;
        }
    }
    (void)vd_file_lock_apply(l, perm, ~shared, true, NULL);
    return 0;
}
