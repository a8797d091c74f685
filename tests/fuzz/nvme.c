/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The nvme driver's untrusted input is what the controller writes: the
 * identify data (parsed on the raw bytes here) and the completion queue
 * (status codes, command identifiers).  The rest of the input configures
 * the software controller of tests/unit/nvme-model.c (queue size, MDTS,
 * LBA format, doorbell stride, optional commands) and drives requests,
 * injected error statuses and bogus completions through the queue logic.
 */
#include <stddef.h>
#include <stdint.h>

#include "../unit/nvme-model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void done_cb(void *opaque, int ret)
{
    (*(int *)opaque)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t page[NVME_PAGE];
    vd_nvme_info info = {0};
    vd_error *err = NULL;
    memset(page, 0, sizeof(page));
    memcpy(page, data, size < sizeof(page) ? size : sizeof(page));
    (void)vd_nvme_parse_id_ctrl(page, &info, &err);
    vd_error_free(err);
    err = NULL;
    (void)vd_nvme_parse_id_ns(page, &info, &err);
    vd_error_free(err);
    err = NULL;

    if (size < 8) {
        return 0;
    }
    nvme_model_cfg cfg = {
        .mqes = (uint16_t)(1 + data[0] % 16),
        .mdts = (uint8_t)(data[1] % 8),
        .flbas = (uint8_t)(data[2] % 4),
        .dstrd = (uint8_t)(data[3] % 4),
        .oncs = (uint16_t)(data[4] & 0xc),
        .dlfeat = data[5],
        .batch = data[6] % 4u,
        .process_on_doorbell = data[7] & 1,
        .nsze = 16 + (data[7] >> 1),
    };
    nvme_model *m = nvme_model_new(&cfg);
    if (!m) {
        return 0;
    }
    vd_nvme_hw hw;
    nvme_model_hw(m, &hw);
    vd_nvme_params p = {.nsid = 1, .timeout_ms = 100, .bounce_size = 16384};
    vd_nvme_ctrl *c = NULL;
    if (vd_nvme_open(&hw, &p, &c, &err) < 0) {
        vd_error_free(err);
        nvme_model_free(m);
        return 0;
    }
    const vd_nvme_info *in = vd_nvme_get_info(c);
    static uint8_t buf[8][16384];
    for (size_t i = 8; i + 4 <= size; i += 4) {
        const uint8_t *o = data + i;
        uint64_t max_blocks = in->max_transfer / in->block_size;
        uint64_t nb = 1 + o[2] % max_blocks;
        if (nb > in->nblocks) {
            nb = in->nblocks;
        }
        uint64_t off = (o[1] % (in->nblocks - nb + 1)) * in->block_size;
        uint64_t len = nb * in->block_size;
        int done = 0, n;
        switch (o[0] % 9) {
        case 0:
            vd_nvme_read(c, off, len, buf[0]);
            break;
        case 1:
            memset(buf[0], o[3], len);
            vd_nvme_write(c, off, len, buf[0], o[3] & 1);
            break;
        case 2:
            vd_nvme_write_zeroes(c, off, len, o[3] & 1, o[3] & 2);
            break;
        case 3:
            vd_nvme_discard(c, off, len);
            break;
        case 4:
            vd_nvme_flush(c);
            break;
        case 5:
            nvme_model_inject(m, o[3] & 1 ? 0xff : NVME_CMD_READ, false,
                              (uint16_t)((o[1] << 8 | o[2]) & 0x7fff), 1 + o[3] % 3);
            break;
        case 6:
            nvme_model_corrupt_next_cid(m, (uint16_t)(o[1] << 8 | o[2]));
            break;
        case 7:
            n = 1 + o[3] % 8;
            for (int k = 0; k < n; k++) {
                if (vd_nvme_submit_read(c, off, len, buf[k], done_cb, &done) < 0) {
                    n = k;
                    break;
                }
            }
            while (done < n && vd_nvme_poll(c) >= 0) {
            }
            break;
        default:
            vd_nvme_read(c, (uint64_t)o[1] * 512, (uint64_t)o[2] * 512, buf[0]);
            break;
        }
    }
    /* asynchronous requests left by a dead controller were failed already */
    vd_nvme_close(c);
    nvme_model_free(m);
    return 0;
}
