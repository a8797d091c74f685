/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * NVMe controller and queue logic (see nvme-queue.h), written from the
 * NVM Express 1.4 base specification.  Like QEMU 7.2's block/nvme.c:
 * 4 KiB memory pages, one I/O queue pair of up to 128 entries, polled
 * completions, no metadata.  Data goes through bounce buffers that are
 * mapped for DMA once at open (QEMU maps the caller's buffers instead).
 */
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nvme-queue.h"

#define NVME_DEFAULT_QUEUE 128u
#define NVME_ADMIN_QUEUE 32u
#define NVME_DEFAULT_BOUNCE (128u * 1024u)
#define NVME_MAX_BOUNCE (2u * 1024u * 1024u) /* one PRP list page */
#define NVME_MAX_SLOTS 64u
#define NVME_DEFAULT_TIMEOUT_MS 30000u

typedef struct nvme_slot {
    uint16_t cid;
    bool busy;
    bool done;
    bool is_async;
    int ret;
    uint32_t dw0;
    uint64_t deadline;
    uint8_t *buf; /* bounce buffer, bounce_size bytes */
    uint64_t buf_iova;
    uint64_t *prp_list; /* one page */
    uint64_t prp_iova;
    void *copy_out; /* reads: where the data goes on completion */
    size_t copy_len;
    vd_nvme_cb *cb;
    void *cb_opaque;
    int next_free;
} nvme_slot;

typedef struct nvme_queue {
    uint16_t qid;
    uint32_t size;
    uint8_t *sq;
    uint64_t sq_iova;
    uint8_t *cq;
    uint64_t cq_iova;
    uint32_t sq_tail;
    uint32_t cq_head;
    uint16_t phase;
    uint32_t sq_db, cq_db;
    nvme_slot *slots;
    uint32_t nslots;
    int free_head;
    uint32_t inflight;
    uint8_t *mem; /* one allocation: SQ, CQ, then per slot PRP page + bounce */
    size_t mem_size;
    uint64_t mem_iova;
} nvme_queue;

struct vd_nvme_ctrl {
    vd_nvme_hw hw;
    vd_nvme_params p;
    vd_nvme_info info;
    pthread_mutex_t lock;
    bool dead;
    int dead_ret;
    bool enabled;
    uint32_t dstrd;
    uint64_t cap;
    uint64_t timeout_ns;
    nvme_queue admin;
    nvme_queue io;
    bool io_cq_created, io_sq_created;
    uint32_t bounce_size;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t reg_rd(vd_nvme_ctrl *c, uint32_t off)
{
    return c->hw.ops->read32(c->hw.opaque, off);
}

static void reg_wr(vd_nvme_ctrl *c, uint32_t off, uint32_t v)
{
    c->hw.ops->write32(c->hw.opaque, off, v);
}

static void hw_idle(vd_nvme_ctrl *c)
{
    if (c->hw.ops->idle) {
        c->hw.ops->idle(c->hw.opaque);
    } else {
        sched_yield();
    }
}

int vd_nvme_status_errno(uint16_t status)
{
    /* QEMU's nvme_translate_error looks at the status code only */
    switch (status & 0xff) {
    case 0:
        return 0;
    case 1: /* invalid command opcode */
        return -ENOTSUP;
    case 2: /* invalid field in command */
        return -EINVAL;
    default:
        return -EIO;
    }
}

/* ----------------------------------------------------------- queue memory */

static void queue_free(vd_nvme_ctrl *c, nvme_queue *q)
{
    if (q->mem) {
        c->hw.ops->dma_free(c->hw.opaque, q->mem, q->mem_size, q->mem_iova);
    }
    free(q->slots);
    memset(q, 0, sizeof(*q));
}

/* SQ and CQ of `size` entries and nslots slots with bounce buffers of bounce bytes */
static int queue_alloc(vd_nvme_ctrl *c, nvme_queue *q, uint16_t qid, uint32_t size,
                       uint32_t nslots, uint32_t bounce, vd_error **errp)
{
    size_t sq_bytes = VD_MAX((size_t)size * NVME_SQE_SIZE, NVME_PAGE);
    size_t cq_bytes = VD_MAX((size_t)size * NVME_CQE_SIZE, NVME_PAGE);
    sq_bytes = (sq_bytes + NVME_PAGE - 1) & ~(size_t)(NVME_PAGE - 1);
    cq_bytes = (cq_bytes + NVME_PAGE - 1) & ~(size_t)(NVME_PAGE - 1);
    size_t per_slot = NVME_PAGE + bounce;

    memset(q, 0, sizeof(*q));
    q->qid = qid;
    q->size = size;
    q->nslots = nslots;
    q->phase = 1;
    q->sq_db = NVME_REG_DBS + (2u * qid) * (4u << c->dstrd);
    q->cq_db = NVME_REG_DBS + (2u * qid + 1) * (4u << c->dstrd);
    q->mem_size = sq_bytes + cq_bytes + per_slot * nslots;
    q->slots = calloc(nslots, sizeof(*q->slots));
    if (!q->slots) {
        return vd_error_set(errp, ENOMEM, "Failed to allocate NVMe queue %u", qid);
    }
    q->mem = c->hw.ops->dma_alloc(c->hw.opaque, q->mem_size, &q->mem_iova, errp);
    if (!q->mem) {
        free(q->slots);
        q->slots = NULL;
        return -ENOMEM;
    }
    q->sq = q->mem;
    q->sq_iova = q->mem_iova;
    q->cq = q->mem + sq_bytes;
    q->cq_iova = q->mem_iova + sq_bytes;
    for (uint32_t i = 0; i < nslots; i++) {
        nvme_slot *s = &q->slots[i];
        size_t off = sq_bytes + cq_bytes + per_slot * i;
        s->cid = (uint16_t)i;
        s->prp_list = (uint64_t *)(q->mem + off);
        s->prp_iova = q->mem_iova + off;
        s->buf = q->mem + off + NVME_PAGE;
        s->buf_iova = q->mem_iova + off + NVME_PAGE;
        s->next_free = i + 1 < nslots ? (int)i + 1 : -1;
    }
    q->free_head = 0;
    return 0;
}

/* ------------------------------------------------------------ completions */

static void ctrl_kill(vd_nvme_ctrl *c, int ret)
{
    if (c->dead) {
        return;
    }
    c->dead = true;
    c->dead_ret = ret;
    /* in-flight asynchronous requests fail now; their slots are never
     * reused (the controller may still write to the buffers) */
    nvme_queue *qs[2] = {&c->admin, &c->io};
    for (int k = 0; k < 2; k++) {
        for (uint32_t i = 0; qs[k]->slots && i < qs[k]->nslots; i++) {
            nvme_slot *s = &qs[k]->slots[i];
            if (s->busy && !s->done && s->is_async) {
                s->done = true;
                s->cb(s->cb_opaque, -EIO);
            }
        }
    }
}

static void slot_release(nvme_queue *q, nvme_slot *s)
{
    s->busy = false;
    s->done = false;
    s->next_free = q->free_head;
    q->free_head = s->cid;
    q->inflight--;
}

/* Consume every new completion queue entry; lock held.  Returns how many. */
static int queue_reap(vd_nvme_ctrl *c, nvme_queue *q)
{
    int n = 0;
    if (c->dead || !q->cq) {
        return 0;
    }
    for (;;) {
        uint8_t *e = q->cq + (size_t)q->cq_head * NVME_CQE_SIZE;
        uint16_t st = __atomic_load_n((uint16_t *)(e + 14), __ATOMIC_ACQUIRE);
        st = vd_ld_le16(&st);
        if ((st & 1) != q->phase) {
            break;
        }
        uint16_t cid = vd_ld_le16(e + 12);
        uint16_t sqid = vd_ld_le16(e + 10);
        if (cid >= q->nslots || !q->slots[cid].busy || q->slots[cid].done || sqid != q->qid) {
            /* the controller completed a command we never sent */
            ctrl_kill(c, -EIO);
            return n;
        }
        if (++q->cq_head == q->size) {
            q->cq_head = 0;
            q->phase ^= 1;
        }
        nvme_slot *s = &q->slots[cid];
        s->dw0 = vd_ld_le32(e);
        s->ret = vd_nvme_status_errno((uint16_t)(st >> 1));
        s->done = true;
        if (s->ret == 0 && s->copy_out) {
            memcpy(s->copy_out, s->buf, s->copy_len);
        }
        n++;
        if (s->is_async) {
            s->cb(s->cb_opaque, s->ret);
            slot_release(q, s);
        }
    }
    if (n) {
        reg_wr(c, q->cq_db, q->cq_head);
    }
    return n;
}

/* A waiter that saw nothing: check deadlines of q's requests, then let the
 * controller run without the lock.  Returns -errno when the controller died. */
static bool queue_expired(nvme_queue *q, uint64_t t)
{
    for (uint32_t i = 0; i < q->nslots; i++) {
        nvme_slot *s = &q->slots[i];
        if (s->busy && !s->done && t > s->deadline) {
            return true;
        }
    }
    return false;
}

static int queue_idle(vd_nvme_ctrl *c, nvme_queue *q)
{
    /* the time is taken before the controller gets its turn and checked
     * after a last look at the completion queue, so that a waiter that was
     * not scheduled for a while does not blame the controller */
    uint64_t t = now_ns();
    pthread_mutex_unlock(&c->lock);
    hw_idle(c);
    pthread_mutex_lock(&c->lock);
    if (c->dead) {
        return -EIO;
    }
    if (queue_expired(q, t)) {
        queue_reap(c, q);
        if (!c->dead && queue_expired(q, t)) {
            ctrl_kill(c, -ETIMEDOUT);
            return -ETIMEDOUT;
        }
    }
    return c->dead ? -EIO : 0;
}

/* A free slot of q (polling while the queue is full); lock held. */
static int queue_get_slot(vd_nvme_ctrl *c, nvme_queue *q, nvme_slot **out)
{
    while (q->free_head < 0) {
        if (c->dead) {
            return -EIO;
        }
        if (queue_reap(c, q) == 0) {
            int ret = queue_idle(c, q);
            if (ret < 0) {
                return ret;
            }
        }
    }
    if (c->dead) {
        return -EIO;
    }
    nvme_slot *s = &q->slots[q->free_head];
    q->free_head = s->next_free;
    q->inflight++;
    s->busy = true;
    s->done = false;
    s->is_async = false;
    s->copy_out = NULL;
    s->copy_len = 0;
    s->ret = 0;
    s->dw0 = 0;
    *out = s;
    return 0;
}

/* Copy the command into the submission queue and ring the doorbell. */
static void queue_submit(vd_nvme_ctrl *c, nvme_queue *q, nvme_slot *s, uint8_t *cmd)
{
    uint32_t dw0 = vd_ld_le32(cmd);
    vd_st_le32(cmd, (dw0 & 0xffffu) | ((uint32_t)s->cid << 16));
    s->deadline = now_ns() + c->timeout_ns;
    memcpy(q->sq + (size_t)q->sq_tail * NVME_SQE_SIZE, cmd, NVME_SQE_SIZE);
    if (++q->sq_tail == q->size) {
        q->sq_tail = 0;
    }
    /* the entry is in memory before the controller hears of it (TSan does
     * not model fences; the tests' controller synchronises through its lock) */
#if defined(__SANITIZE_THREAD__)
    __asm__ __volatile__("" ::: "memory");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
    reg_wr(c, q->sq_db, q->sq_tail);
}

/* Wait for a synchronous slot's completion and release it; lock held. */
static int queue_wait(vd_nvme_ctrl *c, nvme_queue *q, nvme_slot *s, uint32_t *dw0)
{
    int ret = 0;
    while (!s->done) {
        if (c->dead) {
            return c->dead_ret == -ETIMEDOUT ? -ETIMEDOUT : -EIO; /* slot stays busy */
        }
        if (queue_reap(c, q) == 0 && !s->done) {
            ret = queue_idle(c, q);
            if (ret < 0) {
                return ret;
            }
        }
    }
    ret = s->ret;
    if (dw0) {
        *dw0 = s->dw0;
    }
    slot_release(q, s);
    return ret;
}

/* Point the command's PRP entries at the first len bytes of the slot buffer. */
static void slot_set_prps(nvme_slot *s, uint8_t *cmd, size_t len)
{
    vd_st_le64(cmd + 24, s->buf_iova);
    if (len <= NVME_PAGE) {
        vd_st_le64(cmd + 32, 0);
    } else if (len <= 2 * NVME_PAGE) {
        vd_st_le64(cmd + 32, s->buf_iova + NVME_PAGE);
    } else {
        size_t pages = (len + NVME_PAGE - 1) / NVME_PAGE;
        for (size_t i = 1; i < pages; i++) {
            vd_st_le64(&s->prp_list[i - 1], s->buf_iova + i * NVME_PAGE);
        }
        vd_st_le64(cmd + 32, s->prp_iova);
    }
}

/* One synchronous command on q: data (len bytes, <= bounce size) is copied
 * in before and out after. */
static int ctrl_cmd(vd_nvme_ctrl *c, nvme_queue *q, uint8_t *cmd, const void *in, void *out,
                    size_t len, uint32_t *dw0)
{
    nvme_slot *s;
    pthread_mutex_lock(&c->lock);
    int ret = queue_get_slot(c, q, &s);
    if (ret < 0) {
        pthread_mutex_unlock(&c->lock);
        return ret;
    }
    if (len) {
        if (in) {
            memcpy(s->buf, in, len);
        }
        slot_set_prps(s, cmd, len);
    }
    s->copy_out = out;
    s->copy_len = out ? len : 0;
    queue_submit(c, q, s, cmd);
    ret = queue_wait(c, q, s, dw0);
    pthread_mutex_unlock(&c->lock);
    return ret;
}

static int ctrl_cmd_async(vd_nvme_ctrl *c, uint8_t *cmd, const void *in, void *out, size_t len,
                          vd_nvme_cb *cb, void *opaque)
{
    nvme_slot *s;
    pthread_mutex_lock(&c->lock);
    int ret = queue_get_slot(c, &c->io, &s);
    if (ret < 0) {
        pthread_mutex_unlock(&c->lock);
        return ret;
    }
    if (in) {
        memcpy(s->buf, in, len);
    }
    slot_set_prps(s, cmd, len);
    s->copy_out = out;
    s->copy_len = out ? len : 0;
    s->is_async = true;
    s->cb = cb;
    s->cb_opaque = opaque;
    queue_submit(c, &c->io, s, cmd);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int vd_nvme_poll(vd_nvme_ctrl *c)
{
    pthread_mutex_lock(&c->lock);
    int n = queue_reap(c, &c->io);
    if (n == 0 && !c->dead && c->io.inflight) {
        int ret = queue_idle(c, &c->io);
        n = ret < 0 ? ret : queue_reap(c, &c->io);
    }
    if (c->dead) {
        n = c->dead_ret == -ETIMEDOUT ? -ETIMEDOUT : -EIO;
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}

unsigned vd_nvme_inflight(vd_nvme_ctrl *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned n = c->io.inflight;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* -------------------------------------------------------------- identify */

static void copy_ident(char *dst, const uint8_t *src, size_t n)
{
    size_t len = n;
    while (len && (src[len - 1] == ' ' || src[len - 1] == 0)) {
        len--;
    }
    for (size_t i = 0; i < len; i++) {
        dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
    }
    dst[len] = '\0';
}

int vd_nvme_parse_id_ctrl(const uint8_t *buf, vd_nvme_info *info, vd_error **errp)
{
    info->vid = vd_ld_le16(buf);
    copy_ident(info->serial, buf + 4, 20);
    copy_ident(info->model, buf + 24, 40);
    copy_ident(info->firmware, buf + 64, 8);
    uint8_t mdts = buf[77];
    /* the page size is 4 KiB (CC.MPS = 0) */
    info->mdts_bytes = (mdts == 0 || mdts > 19) ? 0 : NVME_PAGE << mdts;
    uint8_t sqes = buf[512], cqes = buf[513];
    if ((sqes & 0xf) > 6 || (sqes >> 4) < 6 || (cqes & 0xf) > 4 || (cqes >> 4) < 4) {
        return vd_error_set(errp, ENOTSUP,
                            "NVMe controller does not support 64-byte submission and "
                            "16-byte completion queue entries");
    }
    uint16_t oncs = vd_ld_le16(buf + 520);
    info->write_zeroes = oncs & (1u << 3);
    info->discard = oncs & (1u << 2);
    info->vwc = buf[525] & 1;
    return 0;
}

int vd_nvme_parse_id_ns(const uint8_t *buf, vd_nvme_info *info, vd_error **errp)
{
    uint64_t nsze = vd_ld_le64(buf);
    uint8_t nlbaf = buf[25];
    uint8_t flbas = buf[26];
    uint8_t dlfeat = buf[33];
    unsigned idx = flbas & 0xf;
    if (idx > nlbaf || idx > 15) {
        return vd_error_set(errp, EINVAL, "Invalid LBA format index %u (the namespace has %u)",
                            idx, nlbaf + 1u);
    }
    const uint8_t *lbaf = buf + 128 + 4 * idx;
    uint16_t ms = vd_ld_le16(lbaf);
    uint8_t lbads = lbaf[2];
    if (ms) {
        return vd_error_set(errp, ENOTSUP, "Namespaces with metadata are not yet supported");
    }
    if (lbads < 9 || lbads > 12) {
        return vd_error_set(errp, ENOTSUP, "Unsupported NVMe block size 2^%u", lbads);
    }
    if (nsze == 0 || nsze > ((uint64_t)INT64_MAX >> lbads)) {
        return vd_error_set(errp, EINVAL, "Invalid NVMe namespace size %" PRIu64 " blocks",
                            nsze);
    }
    info->nblocks = nsze;
    info->block_size = 1u << lbads;
    /* DLFEAT bits 2:0 = 1: deallocated blocks read as zeroes; bit 3: write
     * zeroes may deallocate */
    info->dealloc_zeroes = (dlfeat & 7) == 1;
    info->deac = dlfeat & 8;
    return 0;
}

static void cmd_init(uint8_t *cmd, uint8_t opc, uint32_t nsid)
{
    memset(cmd, 0, NVME_SQE_SIZE);
    cmd[0] = opc;
    vd_st_le32(cmd + 4, nsid);
}

static int admin_identify(vd_nvme_ctrl *c, uint32_t cns, uint32_t nsid, uint8_t *buf,
                          vd_error **errp)
{
    uint8_t cmd[NVME_SQE_SIZE];
    cmd_init(cmd, NVME_ADM_IDENTIFY, nsid);
    vd_st_le32(cmd + 40, cns);
    int ret = ctrl_cmd(c, &c->admin, cmd, NULL, buf, NVME_PAGE, NULL);
    if (ret < 0) {
        if (cns == 0 && ret != -ETIMEDOUT) {
            return vd_error_setg_errno(errp, -ret, "Failed to identify namespace %u", nsid);
        }
        return vd_error_setg_errno(errp, -ret, "Failed to identify %s",
                                   cns ? "controller" : "namespace");
    }
    return 0;
}

/* --------------------------------------------------------- enable/disable */

static int wait_csts(vd_nvme_ctrl *c, uint32_t mask, uint32_t want, uint64_t timeout_ns,
                     const char *what, vd_error **errp)
{
    uint64_t deadline = now_ns() + timeout_ns;
    for (;;) {
        uint32_t csts = reg_rd(c, NVME_REG_CSTS);
        if (csts == 0xffffffffu) {
            return vd_error_set(errp, EIO, "NVMe controller is not responding (%s)", what);
        }
        if ((csts & mask) == want) {
            return 0;
        }
        if ((csts & NVME_CSTS_CFS) && mask == NVME_CSTS_RDY && want) {
            return vd_error_set(errp, EIO, "NVMe controller fatal status while %s", what);
        }
        if (now_ns() > deadline) {
            return vd_error_set(errp, ETIMEDOUT, "Timeout while %s the NVMe controller", what);
        }
        hw_idle(c);
    }
}

static int ctrl_enable(vd_nvme_ctrl *c, vd_error **errp)
{
    c->cap = reg_rd(c, NVME_REG_CAP) | ((uint64_t)reg_rd(c, NVME_REG_CAP + 4) << 32);
    if (c->cap == UINT64_MAX) {
        return vd_error_set(errp, EIO, "NVMe controller is not responding");
    }
    if (!((c->cap >> 37) & 1)) {
        return vd_error_set(errp, ENOTSUP, "Device doesn't support NVMe command set");
    }
    if (((c->cap >> 48) & 0xf) != 0) {
        return vd_error_set(errp, ENOTSUP, "NVMe controller does not support 4 KiB pages");
    }
    c->dstrd = (uint32_t)((c->cap >> 32) & 0xf);
    /* CAP.TO is in 500 ms units: the longest a reset or enable may take */
    uint64_t to = ((c->cap >> 24) & 0xff) * 500000000ull;
    to = VD_MAX(to, c->timeout_ns);

    if (reg_rd(c, NVME_REG_CC) & NVME_CC_EN) {
        reg_wr(c, NVME_REG_CC, 0);
    }
    int ret = wait_csts(c, NVME_CSTS_RDY, 0, to, "resetting", errp);
    if (ret < 0) {
        return ret;
    }
    uint32_t mqes = (uint32_t)(c->cap & 0xffff) + 1;
    if (mqes < 2) {
        return vd_error_set(errp, EINVAL, "Invalid NVMe queue size limit (CAP.MQES = 0)");
    }
    uint32_t asize = VD_MIN(NVME_ADMIN_QUEUE, mqes);
    ret = queue_alloc(c, &c->admin, 0, asize, asize - 1, NVME_PAGE, errp);
    if (ret < 0) {
        return ret;
    }
    reg_wr(c, NVME_REG_AQA, ((asize - 1) << 16) | (asize - 1));
    reg_wr(c, NVME_REG_ASQ, (uint32_t)c->admin.sq_iova);
    reg_wr(c, NVME_REG_ASQ + 4, (uint32_t)(c->admin.sq_iova >> 32));
    reg_wr(c, NVME_REG_ACQ, (uint32_t)c->admin.cq_iova);
    reg_wr(c, NVME_REG_ACQ + 4, (uint32_t)(c->admin.cq_iova >> 32));
    /* IOCQES 16 bytes (4), IOSQES 64 bytes (6), MPS 4 KiB, NVM command set */
    reg_wr(c, NVME_REG_CC, (4u << 20) | (6u << 16) | NVME_CC_EN);
    c->enabled = true;
    return wait_csts(c, NVME_CSTS_RDY, NVME_CSTS_RDY, to, "enabling", errp);
}

static void ctrl_disable(vd_nvme_ctrl *c)
{
    if (!c->enabled) {
        return;
    }
    uint64_t to = VD_MIN(c->timeout_ns, 10000000000ull);
    if (!c->dead) {
        /* normal shutdown: the controller writes its cache out */
        uint32_t cc = reg_rd(c, NVME_REG_CC);
        reg_wr(c, NVME_REG_CC, cc | NVME_CC_SHN_NORMAL);
        wait_csts(c, NVME_CSTS_SHST_MASK, NVME_CSTS_SHST_DONE, to, "shutting down", NULL);
    }
    /* disabling stops all DMA before the queue memory is freed */
    reg_wr(c, NVME_REG_CC, 0);
    wait_csts(c, NVME_CSTS_RDY, 0, to, "disabling", NULL);
    c->enabled = false;
}

/* ---------------------------------------------------------------- open */

static int create_io_queues(vd_nvme_ctrl *c, vd_error **errp)
{
    uint8_t cmd[NVME_SQE_SIZE];
    uint32_t dw0;
    int ret;

    /* one I/O submission and one completion queue (Number of Queues, 0-based) */
    cmd_init(cmd, NVME_ADM_SET_FEATURES, 0);
    vd_st_le32(cmd + 40, 0x07);
    vd_st_le32(cmd + 44, 0);
    ret = ctrl_cmd(c, &c->admin, cmd, NULL, NULL, 0, &dw0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Failed to set the number of NVMe queues");
    }

    uint32_t mqes = (uint32_t)(c->cap & 0xffff) + 1;
    uint32_t size = c->p.queue_size ? c->p.queue_size : NVME_DEFAULT_QUEUE;
    size = VD_MAX(VD_MIN(size, mqes), 2u);
    size = VD_MIN(size, 65536u);
    uint32_t nslots = VD_MIN(size - 1, NVME_MAX_SLOTS);
    ret = queue_alloc(c, &c->io, 1, size, nslots, c->bounce_size, errp);
    if (ret < 0) {
        return ret;
    }
    c->info.io_queue_size = size;

    cmd_init(cmd, NVME_ADM_CREATE_CQ, 0);
    vd_st_le64(cmd + 24, c->io.cq_iova);
    vd_st_le32(cmd + 40, ((size - 1) << 16) | 1);
    vd_st_le32(cmd + 44, 1); /* physically contiguous, no interrupts */
    ret = ctrl_cmd(c, &c->admin, cmd, NULL, NULL, 0, NULL);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Failed to create NVMe I/O completion queue");
    }
    c->io_cq_created = true;
    cmd_init(cmd, NVME_ADM_CREATE_SQ, 0);
    vd_st_le64(cmd + 24, c->io.sq_iova);
    vd_st_le32(cmd + 40, ((size - 1) << 16) | 1);
    vd_st_le32(cmd + 44, (1u << 16) | 1); /* CQ 1, physically contiguous */
    ret = ctrl_cmd(c, &c->admin, cmd, NULL, NULL, 0, NULL);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Failed to create NVMe I/O submission queue");
    }
    c->io_sq_created = true;
    return 0;
}

int vd_nvme_open(const vd_nvme_hw *hw, const vd_nvme_params *params, vd_nvme_ctrl **out,
                 vd_error **errp)
{
    vd_nvme_ctrl *c = calloc(1, sizeof(*c));
    if (!c) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    c->hw = *hw;
    c->p = *params;
    c->admin.free_head = c->io.free_head = -1;
    pthread_mutex_init(&c->lock, NULL);
    c->timeout_ns = (c->p.timeout_ms ? c->p.timeout_ms : NVME_DEFAULT_TIMEOUT_MS) * 1000000ull;
    uint32_t bounce = c->p.bounce_size ? c->p.bounce_size : NVME_DEFAULT_BOUNCE;
    bounce = VD_MIN(bounce, NVME_MAX_BOUNCE);
    bounce = VD_MAX(bounce & ~(NVME_PAGE - 1), NVME_PAGE);
    c->bounce_size = bounce;

    uint8_t *id = NULL;
    int ret = -EINVAL;
    if (c->p.nsid == 0 || c->p.nsid == 0xffffffffu) {
        ret = vd_error_set(errp, EINVAL, "Invalid namespace %u", c->p.nsid);
        goto fail;
    }
    ret = ctrl_enable(c, errp);
    if (ret < 0) {
        goto fail;
    }
    id = malloc(NVME_PAGE);
    if (!id) {
        ret = vd_error_set(errp, ENOMEM, "Out of memory");
        goto fail;
    }
    ret = admin_identify(c, 1, 0, id, errp);
    if (ret < 0 || (ret = vd_nvme_parse_id_ctrl(id, &c->info, errp)) < 0) {
        goto fail;
    }
    uint32_t nn = vd_ld_le32(id + 516);
    if (c->p.nsid > nn) {
        ret = vd_error_set(errp, EINVAL, "Invalid namespace %u (the controller has %u)",
                           c->p.nsid, nn);
        goto fail;
    }
    ret = admin_identify(c, 0, c->p.nsid, id, errp);
    if (ret < 0 || (ret = vd_nvme_parse_id_ns(id, &c->info, errp)) < 0) {
        goto fail;
    }
    if (c->info.mdts_bytes && c->info.mdts_bytes < c->bounce_size) {
        c->bounce_size = c->info.mdts_bytes;
    }
    if (c->bounce_size < c->info.block_size) {
        ret = vd_error_set(errp, ENOTSUP, "NVMe transfer limit is below the block size");
        goto fail;
    }
    c->info.max_transfer = c->bounce_size;
    ret = create_io_queues(c, errp);
    if (ret < 0) {
        goto fail;
    }
    free(id);
    *out = c;
    return 0;

fail:
    free(id);
    vd_nvme_close(c);
    return ret;
}

void vd_nvme_close(vd_nvme_ctrl *c)
{
    if (!c) {
        return;
    }
    if (!c->dead && c->enabled) {
        uint8_t cmd[NVME_SQE_SIZE];
        if (c->io_sq_created) {
            cmd_init(cmd, NVME_ADM_DELETE_SQ, 0);
            vd_st_le32(cmd + 40, 1);
            ctrl_cmd(c, &c->admin, cmd, NULL, NULL, 0, NULL);
        }
        if (c->io_cq_created && !c->dead) {
            cmd_init(cmd, NVME_ADM_DELETE_CQ, 0);
            vd_st_le32(cmd + 40, 1);
            ctrl_cmd(c, &c->admin, cmd, NULL, NULL, 0, NULL);
        }
    }
    ctrl_disable(c);
    queue_free(c, &c->io);
    queue_free(c, &c->admin);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

const vd_nvme_info *vd_nvme_get_info(const vd_nvme_ctrl *c)
{
    return &c->info;
}

/* ------------------------------------------------------------------- I/O */

static int rw_cmd(vd_nvme_ctrl *c, uint8_t *cmd, uint8_t opc, uint64_t offset, uint64_t len,
                  bool fua)
{
    uint32_t shift = (uint32_t)vd_ctz64(c->info.block_size);
    if (len == 0 || len > c->info.max_transfer || (offset | len) & (c->info.block_size - 1) ||
        (offset >> shift) + (len >> shift) > c->info.nblocks) {
        return -EINVAL;
    }
    uint64_t slba = offset >> shift;
    cmd_init(cmd, opc, c->p.nsid);
    vd_st_le32(cmd + 40, (uint32_t)slba);
    vd_st_le32(cmd + 44, (uint32_t)(slba >> 32));
    vd_st_le32(cmd + 48, (uint32_t)((len >> shift) - 1) | (fua ? 1u << 30 : 0));
    return 0;
}

int vd_nvme_read(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, void *buf)
{
    uint8_t cmd[NVME_SQE_SIZE];
    int ret = rw_cmd(c, cmd, NVME_CMD_READ, offset, len, false);
    return ret < 0 ? ret : ctrl_cmd(c, &c->io, cmd, NULL, buf, len, NULL);
}

int vd_nvme_write(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, const void *buf, bool fua)
{
    uint8_t cmd[NVME_SQE_SIZE];
    int ret = rw_cmd(c, cmd, NVME_CMD_WRITE, offset, len, fua);
    return ret < 0 ? ret : ctrl_cmd(c, &c->io, cmd, buf, NULL, len, NULL);
}

int vd_nvme_submit_read(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, void *buf,
                        vd_nvme_cb *cb, void *opaque)
{
    uint8_t cmd[NVME_SQE_SIZE];
    int ret = rw_cmd(c, cmd, NVME_CMD_READ, offset, len, false);
    return ret < 0 ? ret : ctrl_cmd_async(c, cmd, NULL, buf, len, cb, opaque);
}

int vd_nvme_submit_write(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, const void *buf,
                         vd_nvme_cb *cb, void *opaque)
{
    uint8_t cmd[NVME_SQE_SIZE];
    int ret = rw_cmd(c, cmd, NVME_CMD_WRITE, offset, len, false);
    return ret < 0 ? ret : ctrl_cmd_async(c, cmd, buf, NULL, len, cb, opaque);
}

int vd_nvme_flush(vd_nvme_ctrl *c)
{
    uint8_t cmd[NVME_SQE_SIZE];
    cmd_init(cmd, NVME_CMD_FLUSH, c->p.nsid);
    return ctrl_cmd(c, &c->io, cmd, NULL, NULL, 0, NULL);
}

/* Check a block range for write zeroes/discard; *slba and *nlb in blocks. */
static int range_blocks(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, uint64_t *slba,
                        uint64_t *nlb)
{
    uint32_t shift = (uint32_t)vd_ctz64(c->info.block_size);
    if ((offset | len) & (c->info.block_size - 1) || (offset >> shift) > c->info.nblocks ||
        (len >> shift) > c->info.nblocks - (offset >> shift)) {
        return -EINVAL;
    }
    *slba = offset >> shift;
    *nlb = len >> shift;
    return 0;
}

int vd_nvme_write_zeroes(vd_nvme_ctrl *c, uint64_t offset, uint64_t len, bool unmap, bool fua)
{
    uint64_t slba, nlb;
    if (!c->info.write_zeroes) {
        return -ENOTSUP;
    }
    int ret = range_blocks(c, offset, len, &slba, &nlb);
    while (ret == 0 && nlb) {
        /* NLB is a 16-bit count */
        uint32_t n = (uint32_t)VD_MIN(nlb, 65536u);
        uint8_t cmd[NVME_SQE_SIZE];
        cmd_init(cmd, NVME_CMD_WRITE_ZEROES, c->p.nsid);
        vd_st_le32(cmd + 40, (uint32_t)slba);
        vd_st_le32(cmd + 44, (uint32_t)(slba >> 32));
        vd_st_le32(cmd + 48, (n - 1) | (fua ? 1u << 30 : 0) |
                                 (unmap && c->info.deac ? 1u << 25 : 0));
        ret = ctrl_cmd(c, &c->io, cmd, NULL, NULL, 0, NULL);
        slba += n;
        nlb -= n;
    }
    return ret;
}

int vd_nvme_discard(vd_nvme_ctrl *c, uint64_t offset, uint64_t len)
{
    uint64_t slba, nlb;
    if (!c->info.discard) {
        return -ENOTSUP;
    }
    int ret = range_blocks(c, offset, len, &slba, &nlb);
    while (ret == 0 && nlb) {
        /* one range per command, as QEMU; a range counts up to 2^32-1 blocks */
        uint32_t n = (uint32_t)VD_MIN(nlb, 0xffffffffu);
        uint8_t range[16] = {0};
        uint8_t cmd[NVME_SQE_SIZE];
        vd_st_le32(range + 4, n);
        vd_st_le64(range + 8, slba);
        cmd_init(cmd, NVME_CMD_DSM, c->p.nsid);
        vd_st_le32(cmd + 40, 0);       /* one range (0-based) */
        vd_st_le32(cmd + 44, 1u << 2); /* deallocate */
        ret = ctrl_cmd(c, &c->io, cmd, range, NULL, sizeof(range), NULL);
        slba += n;
        nlb -= n;
    }
    return ret;
}
