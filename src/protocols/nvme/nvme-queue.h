/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The NVMe controller and queue logic of the nvme protocol, independent of
 * how the controller is reached: controller reset and enable, the admin
 * queue pair, identify controller/namespace, one I/O queue pair, and
 * read/write/flush/write zeroes/dataset management (deallocate) commands
 * with PRP lists, phase bits, doorbells, status translation and timeouts.
 *
 * The hardware is an ops table (registers, DMA memory, a hook run while
 * waiting): vfio.c implements it over a PCI function bound to vfio-pci,
 * the unit tests over a software controller (tests/unit/nvme-model.c).
 *
 * Threads: every function may be called from many threads at once (one
 * mutex per controller; waiting threads poll the completion queue).
 */
#ifndef VD_NVME_QUEUE_H
#define VD_NVME_QUEUE_H

#include "internal.h"

/* controller registers (NVMe 1.4 section 3.1) */
#define NVME_REG_CAP 0x00u
#define NVME_REG_VS 0x08u
#define NVME_REG_CC 0x14u
#define NVME_REG_CSTS 0x1cu
#define NVME_REG_AQA 0x24u
#define NVME_REG_ASQ 0x28u
#define NVME_REG_ACQ 0x30u
#define NVME_REG_DBS 0x1000u

#define NVME_CC_EN 1u
#define NVME_CC_SHN_NORMAL (1u << 14)
#define NVME_CSTS_RDY 1u
#define NVME_CSTS_CFS 2u
#define NVME_CSTS_SHST_MASK (3u << 2)
#define NVME_CSTS_SHST_DONE (2u << 2)

/* admin opcodes */
#define NVME_ADM_DELETE_SQ 0x00
#define NVME_ADM_CREATE_SQ 0x01
#define NVME_ADM_DELETE_CQ 0x04
#define NVME_ADM_CREATE_CQ 0x05
#define NVME_ADM_IDENTIFY 0x06
#define NVME_ADM_SET_FEATURES 0x09
/* NVM command set opcodes */
#define NVME_CMD_FLUSH 0x00
#define NVME_CMD_WRITE 0x01
#define NVME_CMD_READ 0x02
#define NVME_CMD_WRITE_ZEROES 0x08
#define NVME_CMD_DSM 0x09

#define NVME_SQE_SIZE 64
#define NVME_CQE_SIZE 16
#define NVME_PAGE 4096u

/* What the driver needs from the controller's transport. */
typedef struct vd_nvme_hw_ops {
    /* 32-bit register access at a byte offset of BAR 0 */
    uint32_t (*read32)(void *opaque, uint32_t off);
    void (*write32)(void *opaque, uint32_t off, uint32_t val);
    /* size bytes (a multiple of 4096) of zeroed, page-aligned memory the
     * controller reaches at bus address *iova; NULL with a message */
    void *(*dma_alloc)(void *opaque, size_t size, uint64_t *iova, vd_error **errp);
    void (*dma_free)(void *opaque, void *mem, size_t size, uint64_t iova);
    /* called (without the controller lock) while a waiter found nothing
     * new in the completion queue: a software controller runs here,
     * hardware pauses briefly.  May be NULL. */
    void (*idle)(void *opaque);
} vd_nvme_hw_ops;

typedef struct vd_nvme_hw {
    const vd_nvme_hw_ops *ops;
    void *opaque;
} vd_nvme_hw;

typedef struct vd_nvme_params {
    uint32_t nsid;        /* namespace, 1.. */
    uint32_t queue_size;  /* I/O queue entries wanted; 0: 128 (clamped to CAP.MQES+1) */
    uint32_t bounce_size; /* largest request in bytes; 0: 128 KiB (clamped by MDTS) */
    uint64_t timeout_ms;  /* per command and for reset/ready; 0: 30000 */
} vd_nvme_params;

typedef struct vd_nvme_info {
    uint64_t nblocks;       /* namespace size in logical blocks (NSZE) */
    uint32_t block_size;    /* bytes per logical block */
    uint32_t max_transfer;  /* bytes per read/write request */
    uint32_t io_queue_size; /* entries of the I/O queue pair */
    uint32_t mdts_bytes;    /* 0: no limit */
    bool write_zeroes;      /* ONCS bit 3 */
    bool discard;           /* ONCS bit 2 (dataset management) */
    bool dealloc_zeroes;    /* DLFEAT: deallocated blocks read as zeroes */
    bool deac;              /* write zeroes may deallocate (DLFEAT bit 3) */
    bool vwc;               /* volatile write cache present */
    uint16_t vid;
    char serial[21];
    char model[41];
    char firmware[9];
} vd_nvme_info;

typedef struct vd_nvme_ctrl vd_nvme_ctrl;

/* Reset and enable the controller, identify it and the namespace, create
 * the I/O queue pair.  The hw must stay valid until vd_nvme_close. */
int vd_nvme_open(const vd_nvme_hw *hw, const vd_nvme_params *params, vd_nvme_ctrl **out,
                 vd_error **errp);
/* Shut the controller down (normal shutdown, then disable) and free its
 * memory.  No request may be in flight. */
void vd_nvme_close(vd_nvme_ctrl *c);
const vd_nvme_info *vd_nvme_get_info(const vd_nvme_ctrl *c);

/*
 * Requests: offset and len multiples of the block size, len <= max_transfer
 * for read and write.  Return 0 or -errno: the status translated as QEMU
 * does (invalid opcode -ENOSYS, invalid field -EINVAL, other errors -EIO),
 * -ENOTSUP for write zeroes/discard the controller lacks, -ETIMEDOUT when the
 * controller does not answer in time (after which the controller is dead and
 * every request fails with -EIO).
 */
int vd_nvme_read(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, void *buf);
int vd_nvme_write(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, const void *buf, bool fua);
int vd_nvme_flush(vd_nvme_ctrl *c);
int vd_nvme_write_zeroes(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, bool unmap, bool fua);
int vd_nvme_discard(vd_nvme_ctrl *c, uint64_t offset, uint64_t len);

/*
 * Asynchronous reads and writes (queue depth > 1 from one thread): submit
 * returns once the command is in the submission queue (polling for a free
 * slot when the queue is full); cb runs from vd_nvme_poll (or from a later
 * submit or a synchronous request) with the controller lock held, so it
 * must not call into the controller.
 */
typedef void vd_nvme_cb(void *opaque, int ret);
int vd_nvme_submit_read(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, void *buf,
                        vd_nvme_cb *cb, void *opaque);
int vd_nvme_submit_write(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, const void *buf,
                         vd_nvme_cb *cb, void *opaque);
/* Reap completions (runs the idle hook once when there are none): the
 * number of requests completed, or -ETIMEDOUT / -EIO on a dead controller. */
int vd_nvme_poll(vd_nvme_ctrl *c);
/* Requests in flight. */
unsigned vd_nvme_inflight(vd_nvme_ctrl *c);

/* Identify data parsers (untrusted input: fuzzed). */
int vd_nvme_parse_id_ctrl(const uint8_t *buf, vd_nvme_info *info, vd_error **errp);
int vd_nvme_parse_id_ns(const uint8_t *buf, vd_nvme_info *info, vd_error **errp);

/*
 * How the nvme driver (nvme.c) reaches a controller: VFIO (vfio.c) unless
 * a test put its software controller here.  open fills *hw and a handle
 * that close releases after vd_nvme_close.
 */
typedef struct vd_nvme_transport {
    int (*open)(const char *device, vd_nvme_hw *hw, void **handle, vd_error **errp);
    void (*close)(void *handle);
} vd_nvme_transport;
extern const vd_nvme_transport *vd_nvme_transport_override;

/* Map a completion status field (CQE DW3 bits 31:17) to 0 / -errno. */
int vd_nvme_status_errno(uint16_t status);

#endif
