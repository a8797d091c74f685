/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The POSIX file protocols (file, host_device, host_cdrom): helpers shared
 * by file.c, file-lock.c and file-uring.c, and the few entry points the
 * core may call.
 */
#ifndef VD_PROTOCOLS_FILE_H
#define VD_PROTOCOLS_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"

/* ------------------------------------------------------ for the core */

/*
 * The protocol driver QEMU picks for a filename without a protocol prefix:
 * host_cdrom for a block device that answers the CD-ROM status ioctl,
 * host_device for any other block or character device, file otherwise
 * (also when the name does not exist yet).
 */
const vd_driver *vd_file_protocol_for(const char *filename);

/*
 * Change the permissions a file/host_device/host_cdrom node holds (QEMU's
 * check_perm + set_perm): the new lock bytes are taken first and checked
 * against other processes, and only then are the bytes no longer needed
 * released, so a failure leaves the old locks in place.  Updates
 * bs->perm / bs->shared_perm.  Returns 0 for nodes of other drivers.
 */
int vd_file_set_perm(vd_node *bs, unsigned perm, unsigned shared, vd_error **errp);

/* host_cdrom helpers (QEMU's bdrv_is_inserted / bdrv_eject /
 * bdrv_lock_medium).  Return -ENOTSUP for nodes of other drivers. */
bool vd_cdrom_is_inserted(vd_node *bs);
int vd_cdrom_eject(vd_node *bs, bool eject);
int vd_cdrom_lock_medium(vd_node *bs, bool locked);

/* ---------------------------------------------- image locking (file-lock.c) */

/* Lock byte offsets, the same as QEMU's: byte 100 + bit for each
 * permission held, 200 + bit for each permission not shared. */
#define VD_LOCK_PERM_BASE 100
#define VD_LOCK_SHARED_BASE 200

typedef struct vd_file_lock {
    int fd;
    bool ofd;                 /* open file description locks (else POSIX) */
    unsigned locked_perm;     /* bits whose 100+bit byte we hold */
    unsigned locked_unshared; /* bits whose 200+bit byte we hold */
} vd_file_lock;

/* True when the kernel supports F_OFD_SETLK on fd. */
bool vd_file_lock_ofd_supported(int fd);

/*
 * Take a shared lock on the bytes of perm_bits (100+) and unshared_bits
 * (200+) not held yet; with unlock, also release held bytes that are not
 * in the sets.  l->locked_* track what is held.
 */
int vd_file_lock_apply(vd_file_lock *l, unsigned perm_bits, unsigned unshared_bits, bool unlock,
                       vd_error **errp);

/*
 * Check that no other open file holds a byte conflicting with taking perm
 * while sharing shared: 200+bit for each bit of perm ("Failed to get
 * \"write\" lock"), 100+bit for each bit not in shared ("Failed to get
 * shared \"write\" lock").  filename is named in the message.
 */
int vd_file_lock_check(const vd_file_lock *l, unsigned perm, unsigned shared,
                       const char *filename, vd_error **errp);

/*
 * The whole transaction: take perm/~shared on top of what is held, check,
 * then drop what is no longer needed; on failure, return to the old set
 * (old_perm/old_shared).
 */
int vd_file_lock_update(vd_file_lock *l, unsigned old_perm, unsigned old_shared, unsigned perm,
                        unsigned shared, const char *filename, vd_error **errp);

/* "consistent read", "write", "write unchanged", "resize" */
const char *vd_perm_name(unsigned perm_bit);

/* ------------------------------------------------ io_uring (file-uring.c) */

typedef struct vd_uring_pool vd_uring_pool;

enum { VD_URING_READ, VD_URING_WRITE, VD_URING_FDATASYNC };

/* A small pool of rings, each used by one thread at a time. */
int vd_uring_pool_new(vd_uring_pool **out);
void vd_uring_pool_free(vd_uring_pool *pool);
/* One read/write/fdatasync; returns bytes transferred (maybe short) or
 * -errno, like pread/pwrite. */
ssize_t vd_uring_submit(vd_uring_pool *pool, int op, int fd, void *buf, size_t len,
                        uint64_t offset);

#endif /* VD_PROTOCOLS_FILE_H */
