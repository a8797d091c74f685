/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * A software NVMe controller for the tests of the nvme queue logic
 * (src/protocols/nvme/queue.c): registers (CAP, CC, CSTS, AQA, ASQ, ACQ,
 * doorbells), admin commands (identify, set features number of queues,
 * create/delete I/O queues) and NVM commands (read, write, flush, write
 * zeroes, dataset management) on an in-memory namespace, with PRP lists,
 * phase bits, a completion queue that fills up, and knobs for the failures
 * a real controller shows: error statuses, a controller that stops
 * answering, one that never becomes ready, a fatal status, bogus command
 * identifiers, a device that reads as all ones.
 *
 * DMA memory lives at IOVAs above 4 GiB with gaps between allocations, so a
 * driver that hands the controller a wrong address gets a data transfer
 * error (and stats.dma_faults counts it) instead of silently working.
 */
#ifndef NVME_MODEL_H
#define NVME_MODEL_H

#include "../../src/protocols/nvme/nvme-queue.h"

typedef struct nvme_model_cfg {
    uint16_t mqes;  /* CAP.MQES, 0-based; 0: 255 */
    uint8_t dstrd;  /* doorbell stride 4 << dstrd */
    uint8_t mdts;   /* 0: no limit */
    uint8_t flbas;  /* LBA format: 0 = 512 bytes, 1 = 4096, 2 = 512 + 8 bytes metadata,
                       3 = 2^13 bytes */
    uint64_t nsze;  /* blocks; 0: 8 MiB worth */
    uint32_t nn;    /* namespaces (all the same media); 0: 1 */
    uint16_t oncs;  /* optional NVM commands: bit 2 DSM, bit 3 write zeroes */
    uint8_t dlfeat;
    bool vwc;
    bool no_nvm_css; /* CAP.CSS without the NVM command set */
    uint8_t mpsmin;
    bool sqes_128;   /* identify says 128-byte SQ entries only */
    bool process_on_doorbell; /* run commands in the doorbell write (default: in idle) */
    unsigned batch;  /* commands per idle call; 0 = all */
} nvme_model_cfg;

typedef struct nvme_model_stats {
    uint64_t cmds;        /* commands completed, admin + I/O */
    uint64_t io_cmds;
    uint64_t reads, writes, flushes, write_zeroes, dsms;
    uint64_t cq_wraps;    /* I/O completion queue phase flips */
    uint64_t dma_faults;  /* addresses outside any DMA allocation */
    uint64_t bad_doorbells;
    uint64_t prp_list_cmds; /* commands whose data went through a PRP list */
    uint32_t max_sq_occupancy; /* entries waiting in the I/O SQ at a doorbell */
    uint32_t cq_full_stalls;
    uint32_t last_cdw12;
    uint32_t last_dsm_cdw11;
    uint32_t io_queue_size;
    uint32_t allocated_bytes;  /* DMA memory currently allocated */
    bool shutdown_seen;
} nvme_model_stats;

typedef struct nvme_model nvme_model;

nvme_model *nvme_model_new(const nvme_model_cfg *cfg);
void nvme_model_free(nvme_model *m);
void nvme_model_hw(nvme_model *m, vd_nvme_hw *hw);
/* the namespace's bytes (nsze << lbads) */
uint8_t *nvme_model_media(nvme_model *m);
nvme_model_stats nvme_model_get_stats(nvme_model *m);

/* the next count I/O commands (admin too with admin) with opcode opc
 * (0xff: any) complete with status (SCT << 8 | SC) without being executed */
void nvme_model_inject(nvme_model *m, uint8_t opc, bool admin, uint16_t status,
                       unsigned count);
/* stop fetching commands (true) or resume */
void nvme_model_hang(nvme_model *m, bool hang);
/* CSTS.RDY never rises after CC.EN */
void nvme_model_never_ready(nvme_model *m, bool on);
/* CSTS.CFS set at the next enable */
void nvme_model_fatal_on_enable(nvme_model *m, bool on);
/* the next completion carries command identifier cid instead */
void nvme_model_corrupt_next_cid(nvme_model *m, uint16_t cid);
/* every register reads as all ones (surprise removal) */
void nvme_model_gone(nvme_model *m, bool gone);

#endif
