/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The software NVMe controller of the nvme unit tests (see nvme-model.h),
 * written from the NVM Express 1.4 base specification.
 */
#include <stdio.h>
#include <stdlib.h>

#include "nvme-model.h"

#define MQ 4 /* queue identifiers 0..3 */
#define MAX_REGIONS 64

typedef struct mq {
    bool valid;
    uint64_t iova;
    uint8_t *mem;
    uint32_t size;
    uint32_t head, tail;
    uint16_t phase; /* CQ: the phase the controller writes */
    uint16_t cqid;  /* SQ: its completion queue */
} mq;

typedef struct region {
    uint64_t iova;
    uint8_t *host;
    size_t size;
} region;

struct nvme_model {
    pthread_mutex_t lock;
    nvme_model_cfg cfg;
    uint64_t cap;
    uint32_t cc, csts, aqa;
    uint64_t asq, acq;
    mq sq[MQ], cq[MQ];
    region regions[MAX_REGIONS];
    uint64_t next_iova;
    uint8_t *media;
    uint32_t lbads;
    uint64_t media_bytes;
    nvme_model_stats st;
    /* knobs */
    bool hang, never_ready, fatal, gone;
    uint8_t inj_opc;
    bool inj_admin;
    uint16_t inj_status;
    unsigned inj_count;
    int corrupt_cid;
};

static const uint8_t lbads_of_format[4] = {9, 12, 9, 13};

nvme_model *nvme_model_new(const nvme_model_cfg *cfg)
{
    nvme_model *m = calloc(1, sizeof(*m));
    if (!m) {
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->cfg = *cfg;
    if (!m->cfg.mqes) {
        m->cfg.mqes = 255;
    }
    if (!m->cfg.nn) {
        m->cfg.nn = 1;
    }
    m->lbads = lbads_of_format[m->cfg.flbas & 3];
    if (!m->cfg.nsze) {
        m->cfg.nsze = (8u << 20) >> m->lbads;
    }
    m->media_bytes = m->cfg.nsze << m->lbads;
    m->media = calloc(1, m->media_bytes);
    m->cap = m->cfg.mqes | (1ull << 16) /* CQR */ | (2ull << 24) /* TO: 1 s */ |
             ((uint64_t)m->cfg.dstrd << 32) | ((m->cfg.no_nvm_css ? 0ull : 1ull) << 37) |
             ((uint64_t)m->cfg.mpsmin << 48) | ((uint64_t)(m->cfg.mpsmin + 4) << 52);
    m->next_iova = 0x100000000ull;
    m->corrupt_cid = -1;
    if (!m->media) {
        free(m);
        return NULL;
    }
    return m;
}

void nvme_model_free(nvme_model *m)
{
    if (!m) {
        return;
    }
    for (int i = 0; i < MAX_REGIONS; i++) {
        free(m->regions[i].host);
    }
    free(m->media);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

uint8_t *nvme_model_media(nvme_model *m)
{
    return m->media;
}

nvme_model_stats nvme_model_get_stats(nvme_model *m)
{
    pthread_mutex_lock(&m->lock);
    nvme_model_stats s = m->st;
    pthread_mutex_unlock(&m->lock);
    return s;
}

#define KNOB(body)                                                                             \
    do {                                                                                       \
        pthread_mutex_lock(&m->lock);                                                          \
        body;                                                                                  \
        pthread_mutex_unlock(&m->lock);                                                        \
    } while (0)

void nvme_model_inject(nvme_model *m, uint8_t opc, bool admin, uint16_t status, unsigned count)
{
    KNOB(m->inj_opc = opc; m->inj_admin = admin; m->inj_status = status; m->inj_count = count);
}
void nvme_model_hang(nvme_model *m, bool hang)
{
    KNOB(m->hang = hang);
}
void nvme_model_never_ready(nvme_model *m, bool on)
{
    KNOB(m->never_ready = on);
}
void nvme_model_fatal_on_enable(nvme_model *m, bool on)
{
    KNOB(m->fatal = on);
}
void nvme_model_corrupt_next_cid(nvme_model *m, uint16_t cid)
{
    KNOB(m->corrupt_cid = cid);
}
void nvme_model_gone(nvme_model *m, bool gone)
{
    KNOB(m->gone = gone);
}

/* ------------------------------------------------------------------ DMA */

/* host address of [iova, iova+len) when one allocation holds it all */
static uint8_t *dma(nvme_model *m, uint64_t iova, uint64_t len)
{
    for (int i = 0; i < MAX_REGIONS; i++) {
        region *r = &m->regions[i];
        if (r->host && iova >= r->iova && len <= r->size && iova - r->iova <= r->size - len) {
            return r->host + (iova - r->iova);
        }
    }
    m->st.dma_faults++;
    return NULL;
}

static void *model_dma_alloc(void *opaque, size_t size, uint64_t *iova, vd_error **errp)
{
    nvme_model *m = opaque;
    if (size == 0 || size % NVME_PAGE) {
        vd_error_set(errp, EINVAL, "model: DMA size %zu is not a multiple of 4096", size);
        return NULL;
    }
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < MAX_REGIONS; i++) {
        region *r = &m->regions[i];
        if (!r->host) {
            r->host = aligned_alloc(NVME_PAGE, size);
            if (!r->host) {
                break;
            }
            memset(r->host, 0, size);
            r->iova = m->next_iova;
            r->size = size;
            /* a guard gap: addresses just past an allocation fault */
            m->next_iova += size + NVME_PAGE;
            m->st.allocated_bytes += (uint32_t)size;
            *iova = r->iova;
            pthread_mutex_unlock(&m->lock);
            return r->host;
        }
    }
    pthread_mutex_unlock(&m->lock);
    vd_error_set(errp, ENOMEM, "model: out of DMA memory");
    return NULL;
}

static void model_dma_free(void *opaque, void *mem, size_t size, uint64_t iova)
{
    nvme_model *m = opaque;
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < MAX_REGIONS; i++) {
        region *r = &m->regions[i];
        if (r->host == mem) {
            if (r->iova != iova || r->size != size) {
                fprintf(stderr, "model: dma_free with a wrong iova or size\n");
                abort();
            }
            free(r->host);
            r->host = NULL;
            m->st.allocated_bytes -= (uint32_t)size;
        }
    }
    pthread_mutex_unlock(&m->lock);
}

/*
 * Move len bytes between data and the memory the PRP entries describe
 * (to_host: into that memory).  Returns a status, 0 on success.
 */
static uint16_t prp_xfer(nvme_model *m, uint64_t prp1, uint64_t prp2, uint8_t *data, size_t len,
                         bool to_host)
{
    size_t pos = 0;
    uint64_t cur = prp1;
    uint64_t *list = NULL;
    uint64_t list_iova = 0;
    unsigned li = 0, ln = 0;
    bool used_list = false;
    while (pos < len) {
        size_t n = NVME_PAGE - (cur & (NVME_PAGE - 1));
        if (n > len - pos) {
            n = len - pos;
        }
        if (pos > 0 && (cur & (NVME_PAGE - 1))) {
            return 0x13; /* PRP offset invalid */
        }
        uint8_t *p = dma(m, cur, n);
        if (!p) {
            return 0x04; /* data transfer error */
        }
        if (to_host) {
            memcpy(p, data + pos, n);
        } else {
            memcpy(data + pos, p, n);
        }
        pos += n;
        if (pos >= len) {
            break;
        }
        if (pos == n) { /* after the first entry: prp2 */
            if (len - pos <= NVME_PAGE) {
                cur = prp2;
                continue;
            }
            if (prp2 & 7) {
                return 0x13;
            }
            list_iova = prp2;
            ln = (unsigned)((NVME_PAGE - (prp2 & (NVME_PAGE - 1))) / 8);
            list = (uint64_t *)dma(m, list_iova, ln * 8u);
            li = 0;
            used_list = true;
            if (!list) {
                return 0x04;
            }
        }
        /* next list entry; the last one of a list page chains when more follows */
        if (li == ln - 1 && len - pos > NVME_PAGE) {
            list_iova = vd_ld_le64(&list[li]);
            if (list_iova & (NVME_PAGE - 1)) {
                return 0x13;
            }
            ln = NVME_PAGE / 8;
            list = (uint64_t *)dma(m, list_iova, NVME_PAGE);
            li = 0;
            if (!list) {
                return 0x04;
            }
        }
        cur = vd_ld_le64(&list[li++]);
    }
    if (used_list) {
        m->st.prp_list_cmds++;
    }
    return 0;
}

/* ------------------------------------------------------------- commands */

static void fill_id_ctrl(nvme_model *m, uint8_t *id)
{
    memset(id, 0, NVME_PAGE);
    vd_st_le16(id, 0x1b36);
    memcpy(id + 4, "MODEL-SERIAL-0001   ", 20);
    memcpy(id + 24, "vdisk test NVMe controller model        ", 40);
    memcpy(id + 64, "1.0     ", 8);
    id[77] = m->cfg.mdts;
    id[512] = m->cfg.sqes_128 ? 0x77 : 0x66;
    id[513] = 0x44;
    vd_st_le32(id + 516, m->cfg.nn);
    vd_st_le16(id + 520, m->cfg.oncs);
    id[525] = m->cfg.vwc ? 1 : 0;
}

static void fill_id_ns(nvme_model *m, uint8_t *id)
{
    memset(id, 0, NVME_PAGE);
    vd_st_le64(id, m->cfg.nsze);
    vd_st_le64(id + 8, m->cfg.nsze);
    id[25] = 3; /* four formats */
    id[26] = m->cfg.flbas;
    id[33] = m->cfg.dlfeat;
    for (int i = 0; i < 4; i++) {
        vd_st_le16(id + 128 + 4 * i, i == 2 ? 8 : 0);
        id[128 + 4 * i + 2] = lbads_of_format[i];
    }
}

#define SC(sct, sc) (uint16_t)(((sct) << 8) | (sc))

static uint16_t admin_cmd(nvme_model *m, const uint8_t *c, uint32_t *dw0)
{
    uint8_t opc = c[0];
    uint32_t nsid = vd_ld_le32(c + 4);
    uint64_t prp1 = vd_ld_le64(c + 24), prp2 = vd_ld_le64(c + 32);
    uint32_t cdw10 = vd_ld_le32(c + 40), cdw11 = vd_ld_le32(c + 44);
    uint16_t qid = (uint16_t)cdw10;
    uint32_t qsize = (cdw10 >> 16) + 1;
    uint8_t id[NVME_PAGE];

    switch (opc) {
    case NVME_ADM_IDENTIFY:
        if ((cdw10 & 0xff) == 1) {
            fill_id_ctrl(m, id);
        } else if ((cdw10 & 0xff) == 0) {
            if (nsid == 0 || nsid > m->cfg.nn) {
                return SC(0, 0x0b); /* invalid namespace */
            }
            fill_id_ns(m, id);
        } else {
            return SC(0, 0x02);
        }
        return prp_xfer(m, prp1, prp2, id, NVME_PAGE, true);
    case NVME_ADM_SET_FEATURES:
        if ((cdw10 & 0xff) != 7) {
            return SC(0, 0x02);
        }
        *dw0 = (VD_MIN(cdw11 & 0xffff, MQ - 2u)) | (VD_MIN(cdw11 >> 16, MQ - 2u) << 16);
        return 0;
    case NVME_ADM_CREATE_CQ:
    case NVME_ADM_CREATE_SQ: {
        bool is_cq = opc == NVME_ADM_CREATE_CQ;
        mq *q = is_cq ? m->cq : m->sq;
        if (qid == 0 || qid >= MQ || q[qid].valid) {
            return SC(1, 0x01); /* invalid queue identifier */
        }
        if (qsize < 2 || qsize > m->cfg.mqes + 1u) {
            return SC(1, 0x02); /* invalid queue size */
        }
        if (!(cdw11 & 1) || (prp1 & (NVME_PAGE - 1))) {
            return SC(0, 0x02);
        }
        if (!is_cq && (cdw11 >> 16 >= MQ || !m->cq[cdw11 >> 16].valid)) {
            return SC(1, 0x00); /* completion queue invalid */
        }
        uint8_t *mem = dma(m, prp1, (uint64_t)qsize * (is_cq ? NVME_CQE_SIZE : NVME_SQE_SIZE));
        if (!mem) {
            return SC(0, 0x04);
        }
        q[qid] = (mq){.valid = true, .iova = prp1, .mem = mem, .size = qsize, .phase = 1,
                      .cqid = (uint16_t)(cdw11 >> 16)};
        if (qid == 1 && is_cq) {
            m->st.io_queue_size = qsize;
        }
        return 0;
    }
    case NVME_ADM_DELETE_SQ:
        if (qid == 0 || qid >= MQ || !m->sq[qid].valid) {
            return SC(1, 0x01);
        }
        m->sq[qid].valid = false;
        return 0;
    case NVME_ADM_DELETE_CQ:
        if (qid == 0 || qid >= MQ || !m->cq[qid].valid) {
            return SC(1, 0x01);
        }
        for (int i = 1; i < MQ; i++) {
            if (m->sq[i].valid && m->sq[i].cqid == qid) {
                return SC(1, 0x0c); /* invalid queue deletion */
            }
        }
        m->cq[qid].valid = false;
        return 0;
    default:
        return SC(0, 0x01);
    }
}

static uint16_t io_cmd(nvme_model *m, const uint8_t *c)
{
    uint8_t opc = c[0];
    uint32_t nsid = vd_ld_le32(c + 4);
    uint64_t prp1 = vd_ld_le64(c + 24), prp2 = vd_ld_le64(c + 32);
    uint64_t slba = vd_ld_le32(c + 40) | ((uint64_t)vd_ld_le32(c + 44) << 32);
    uint32_t cdw12 = vd_ld_le32(c + 48);
    uint64_t nlb = (cdw12 & 0xffff) + 1ull;

    if (nsid == 0 || nsid > m->cfg.nn) {
        return SC(0, 0x0b);
    }
    m->st.last_cdw12 = cdw12;
    switch (opc) {
    case NVME_CMD_FLUSH:
        m->st.flushes++;
        return 0;
    case NVME_CMD_READ:
    case NVME_CMD_WRITE: {
        uint64_t bytes = nlb << m->lbads;
        if (m->cfg.mdts && bytes > ((uint64_t)NVME_PAGE << m->cfg.mdts)) {
            return SC(0, 0x02);
        }
        if (slba + nlb > m->cfg.nsze) {
            return SC(0, 0x80); /* LBA out of range */
        }
        if (opc == NVME_CMD_READ) {
            m->st.reads++;
        } else {
            m->st.writes++;
        }
        return prp_xfer(m, prp1, prp2, m->media + (slba << m->lbads), bytes,
                        opc == NVME_CMD_READ);
    }
    case NVME_CMD_WRITE_ZEROES:
        if (!(m->cfg.oncs & 8)) {
            return SC(0, 0x01);
        }
        if (slba + nlb > m->cfg.nsze) {
            return SC(0, 0x80);
        }
        m->st.write_zeroes++;
        memset(m->media + (slba << m->lbads), 0, nlb << m->lbads);
        return 0;
    case NVME_CMD_DSM: {
        if (!(m->cfg.oncs & 4)) {
            return SC(0, 0x01);
        }
        uint32_t nr = (vd_ld_le32(c + 40) & 0xff) + 1;
        uint32_t cdw11 = vd_ld_le32(c + 44);
        uint8_t ranges[256 * 16];
        m->st.dsms++;
        m->st.last_dsm_cdw11 = cdw11;
        uint16_t s = prp_xfer(m, prp1, prp2, ranges, nr * 16u, false);
        if (s) {
            return s;
        }
        for (uint32_t i = 0; i < nr; i++) {
            uint64_t n = vd_ld_le32(ranges + 16 * i + 4);
            uint64_t lba = vd_ld_le64(ranges + 16 * i + 8);
            if (lba > m->cfg.nsze || n > m->cfg.nsze - lba) {
                return SC(0, 0x80);
            }
            if ((cdw11 & 4) && (m->cfg.dlfeat & 7) == 1) {
                memset(m->media + (lba << m->lbads), 0, n << m->lbads);
            }
        }
        return 0;
    }
    default:
        return SC(0, 0x01);
    }
}

/* Run the commands waiting in SQ qid (at most *budget); false when the
 * completion queue is full. */
static void run_sq(nvme_model *m, uint16_t qid, unsigned *budget)
{
    mq *sq = &m->sq[qid];
    while (sq->valid && sq->head != sq->tail && *budget) {
        mq *cq = &m->cq[sq->cqid];
        if (!cq->valid) {
            return;
        }
        if ((cq->tail + 1) % cq->size == cq->head) {
            m->st.cq_full_stalls++;
            return;
        }
        uint8_t cmd[NVME_SQE_SIZE];
        memcpy(cmd, sq->mem + (size_t)sq->head * NVME_SQE_SIZE, NVME_SQE_SIZE);
        sq->head = (sq->head + 1) % sq->size;
        (*budget)--;

        uint32_t dw0 = 0;
        uint16_t status;
        uint8_t opc = cmd[0];
        if (m->inj_count && (m->inj_opc == 0xff || m->inj_opc == opc) &&
            (qid != 0 || m->inj_admin)) {
            m->inj_count--;
            status = m->inj_status;
        } else {
            status = qid == 0 ? admin_cmd(m, cmd, &dw0) : io_cmd(m, cmd);
        }
        m->st.cmds++;
        if (qid) {
            m->st.io_cmds++;
        }
        uint16_t cid = vd_ld_le16(cmd + 2);
        if (m->corrupt_cid >= 0) {
            cid = (uint16_t)m->corrupt_cid;
            m->corrupt_cid = -1;
        }
        uint8_t *e = cq->mem + (size_t)cq->tail * NVME_CQE_SIZE;
        vd_st_le32(e, dw0);
        vd_st_le32(e + 4, 0);
        vd_st_le16(e + 8, (uint16_t)sq->head);
        vd_st_le16(e + 10, qid);
        vd_st_le16(e + 12, cid);
        uint8_t sw[2];
        vd_st_le16(sw, (uint16_t)((status << 1) | cq->phase));
        uint16_t swv;
        memcpy(&swv, sw, 2);
        /* the phase bit last: the driver may be reading this entry */
        __atomic_store_n((uint16_t *)(e + 14), swv, __ATOMIC_RELEASE);
        if (++cq->tail == cq->size) {
            cq->tail = 0;
            cq->phase ^= 1;
            if (qid) {
                m->st.cq_wraps++;
            }
        }
    }
}

static void run_all(nvme_model *m, unsigned budget)
{
    if (m->hang || !(m->csts & NVME_CSTS_RDY)) {
        return;
    }
    if (!budget) {
        budget = ~0u;
    }
    for (uint16_t q = 0; q < MQ; q++) {
        run_sq(m, q, &budget);
    }
}

/* ------------------------------------------------------------ registers */

static void reset(nvme_model *m)
{
    memset(m->sq, 0, sizeof(m->sq));
    memset(m->cq, 0, sizeof(m->cq));
    m->csts = 0;
}

static void write_cc(nvme_model *m, uint32_t v)
{
    uint32_t old = m->cc;
    m->cc = v;
    if ((old & NVME_CC_EN) && !(v & NVME_CC_EN)) {
        reset(m);
        return;
    }
    if (!(old & NVME_CC_EN) && (v & NVME_CC_EN)) {
        if (m->fatal) {
            m->csts |= NVME_CSTS_CFS;
            return;
        }
        if (m->never_ready) {
            return;
        }
        uint32_t asqs = (m->aqa & 0xfff) + 1, acqs = ((m->aqa >> 16) & 0xfff) + 1;
        uint8_t *sq = dma(m, m->asq, (uint64_t)asqs * NVME_SQE_SIZE);
        uint8_t *cq = dma(m, m->acq, (uint64_t)acqs * NVME_CQE_SIZE);
        if (asqs < 2 || acqs < 2 || !sq || !cq || ((v >> 16) & 0xf) != 6 ||
            ((v >> 20) & 0xf) != 4 || ((v >> 7) & 0xf) != m->cfg.mpsmin) {
            m->csts |= NVME_CSTS_CFS;
            return;
        }
        m->sq[0] = (mq){.valid = true, .iova = m->asq, .mem = sq, .size = asqs};
        m->cq[0] = (mq){.valid = true, .iova = m->acq, .mem = cq, .size = acqs, .phase = 1};
        m->csts |= NVME_CSTS_RDY;
    }
    if ((v >> 14) & 3) {
        m->st.shutdown_seen = true;
        m->csts = (m->csts & ~NVME_CSTS_SHST_MASK) | NVME_CSTS_SHST_DONE;
    }
}

static void doorbell(nvme_model *m, uint32_t off, uint32_t v)
{
    uint32_t idx = (off - NVME_REG_DBS) / (4u << m->cfg.dstrd);
    uint32_t qid = idx / 2;
    if ((off - NVME_REG_DBS) % (4u << m->cfg.dstrd) || qid >= MQ) {
        m->st.bad_doorbells++;
        return;
    }
    mq *q = idx % 2 ? &m->cq[qid] : &m->sq[qid];
    if (!q->valid || v >= q->size) {
        m->st.bad_doorbells++;
        return;
    }
    if (idx % 2) {
        q->head = v;
        return;
    }
    q->tail = v;
    if (qid) {
        uint32_t occ = (q->tail + q->size - q->head) % q->size;
        if (occ > m->st.max_sq_occupancy) {
            m->st.max_sq_occupancy = occ;
        }
    }
    if (m->cfg.process_on_doorbell) {
        run_all(m, 0);
    }
}

static uint32_t model_read32(void *opaque, uint32_t off)
{
    nvme_model *m = opaque;
    uint32_t v = 0;
    pthread_mutex_lock(&m->lock);
    switch (off) {
    case NVME_REG_CAP:
        v = (uint32_t)m->cap;
        break;
    case NVME_REG_CAP + 4:
        v = (uint32_t)(m->cap >> 32);
        break;
    case NVME_REG_VS:
        v = 0x00010400;
        break;
    case NVME_REG_CC:
        v = m->cc;
        break;
    case NVME_REG_CSTS:
        v = m->csts;
        break;
    case NVME_REG_AQA:
        v = m->aqa;
        break;
    case NVME_REG_ASQ:
        v = (uint32_t)m->asq;
        break;
    case NVME_REG_ASQ + 4:
        v = (uint32_t)(m->asq >> 32);
        break;
    case NVME_REG_ACQ:
        v = (uint32_t)m->acq;
        break;
    case NVME_REG_ACQ + 4:
        v = (uint32_t)(m->acq >> 32);
        break;
    }
    if (m->gone) {
        v = 0xffffffffu;
    }
    pthread_mutex_unlock(&m->lock);
    return v;
}

static void model_write32(void *opaque, uint32_t off, uint32_t v)
{
    nvme_model *m = opaque;
    pthread_mutex_lock(&m->lock);
    if (m->gone) {
        pthread_mutex_unlock(&m->lock);
        return;
    }
    switch (off) {
    case NVME_REG_CC:
        write_cc(m, v);
        break;
    case NVME_REG_AQA:
        m->aqa = v;
        break;
    case NVME_REG_ASQ:
        m->asq = (m->asq & ~0xffffffffull) | v;
        break;
    case NVME_REG_ASQ + 4:
        m->asq = (m->asq & 0xffffffffull) | ((uint64_t)v << 32);
        break;
    case NVME_REG_ACQ:
        m->acq = (m->acq & ~0xffffffffull) | v;
        break;
    case NVME_REG_ACQ + 4:
        m->acq = (m->acq & 0xffffffffull) | ((uint64_t)v << 32);
        break;
    default:
        if (off >= NVME_REG_DBS) {
            doorbell(m, off, v);
        }
    }
    pthread_mutex_unlock(&m->lock);
}

static void model_idle(void *opaque)
{
    nvme_model *m = opaque;
    pthread_mutex_lock(&m->lock);
    run_all(m, m->cfg.batch);
    pthread_mutex_unlock(&m->lock);
}

static const vd_nvme_hw_ops model_ops = {
    .read32 = model_read32,
    .write32 = model_write32,
    .dma_alloc = model_dma_alloc,
    .dma_free = model_dma_free,
    .idle = model_idle,
};

void nvme_model_hw(nvme_model *m, vd_nvme_hw *hw)
{
    hw->ops = &model_ops;
    hw->opaque = m;
}
