/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * cloop: the Linux compressed loopback format, version 2.0, as
 * create_compressed_fs (cloop-utils) writes it and QEMU 7.2 reads it: a
 * 128-byte shell preamble, a big-endian block size and block count at 128,
 * then count + 1 big-endian 64-bit file offsets (block i is the zlib stream
 * between offsets[i] and offsets[i + 1]), then the compressed blocks.
 *
 * Read-only.  Not supported: the version 3/4 layouts with the offset table
 * at the end of the file and non-zlib compression (the header is not one
 * QEMU reads either), writing of any kind.
 *
 * Hostile input: the block size must be a non-zero multiple of 512 and at
 * most 64 MiB (QEMU's limit); the offset table may hold at most 64 MiB
 * (8 Mi blocks, QEMU allows 512 MiB); offsets must increase, no compressed
 * block may exceed twice the block size plus zlib's worst-case overhead, and
 * the table must end within the file.  A block must inflate to exactly the
 * block size or the read fails with EIO.
 */
#include <pthread.h>
#include <stdlib.h>
#include <zlib.h>

#include "internal.h"

#define CLOOP_HEADER 128u
#define CLOOP_MAX_BLOCK_SIZE (64u << 20)
#define CLOOP_MAX_OFFSETS_BYTES (64u << 20)

typedef struct cloop_state {
    /* guards the one-block cache and the zlib stream: reads of a compressed
     * format are CPU-bound in inflate anyway */
    pthread_mutex_t lock;
    bool lock_ready;
    bool zstream_ready;
    uint32_t block_size;
    uint32_t n_blocks;
    uint64_t *offsets; /* n_blocks + 1 */
    uint32_t max_compressed;
    uint8_t *compressed;
    uint8_t *block;
    uint32_t cached; /* block in `block`, n_blocks when none */
    z_stream zs;
} cloop_state;

static const char cloop_magic[] = "#!/bin/sh\n#V2.0 Format\n"
                                  "modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";

static int cloop_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    size_t n = VD_MIN(len, sizeof(cloop_magic) - 1);
    /* same weak score as QEMU: the magic is only a shell preamble */
    return n > 0 && !memcmp(buf, cloop_magic, n) ? 2 : 0;
}

static void cloop_close(vd_node *bs)
{
    cloop_state *s = bs->opaque;
    free(s->offsets);
    free(s->compressed);
    free(s->block);
    s->offsets = NULL;
    s->compressed = s->block = NULL;
    if (s->zstream_ready) {
        inflateEnd(&s->zs);
        s->zstream_ready = false;
    }
    if (s->lock_ready) {
        pthread_mutex_destroy(&s->lock);
        s->lock_ready = false;
    }
}

static int cloop_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    cloop_state *s = bs->opaque;
    uint8_t h[8];
    int ret;
    (void)opts;

    if (!bs->read_only) {
        return vd_error_set(errp, EROFS,
                            "The cloop format is read-only: open the image read-only");
    }
    pthread_mutex_init(&s->lock, NULL);
    s->lock_ready = true;

    int64_t file_len = vd_node_get_length(bs->file);
    if (file_len < 0) {
        ret = vd_error_setg_errno(errp, (int)file_len, "Could not get the file size");
        goto fail;
    }
    ret = vd_node_pread(bs->file, CLOOP_HEADER, sizeof(h), h, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the cloop header");
        goto fail;
    }
    s->block_size = vd_ld_be32(h);
    s->n_blocks = vd_ld_be32(h + 4);
    if (s->block_size == 0) {
        ret = vd_error_set(errp, EINVAL, "block_size cannot be zero");
        goto fail;
    }
    if (s->block_size % 512) {
        ret = vd_error_set(errp, EINVAL, "block_size %u must be a multiple of 512",
                           s->block_size);
        goto fail;
    }
    if (s->block_size > CLOOP_MAX_BLOCK_SIZE) {
        ret = vd_error_set(errp, EINVAL, "block_size %u must be %u MB or less", s->block_size,
                           CLOOP_MAX_BLOCK_SIZE >> 20);
        goto fail;
    }
    /* QEMU's messages (iotest 075 compares them); vdisk's own table limit
     * is lower than QEMU's 512 MiB */
    if (s->n_blocks > (UINT32_MAX - 1) / 8) {
        ret = vd_error_set(errp, EINVAL, "n_blocks %u must be %u or less", s->n_blocks,
                           (UINT32_MAX - 1) / 8);
        goto fail;
    }
    uint64_t offsets_bytes = ((uint64_t)s->n_blocks + 1) * 8;
    if (offsets_bytes > CLOOP_MAX_OFFSETS_BYTES) {
        ret = vd_error_set(errp, EINVAL,
                           "image requires too many offsets, try increasing block size");
        goto fail;
    }
    uint64_t table_end = CLOOP_HEADER + 8 + offsets_bytes;
    if (table_end > (uint64_t)file_len) {
        ret = vd_error_set(errp, EINVAL,
                           "cloop offset table (%u blocks) extends past the end of the file; "
                           "the image is truncated",
                           s->n_blocks);
        goto fail;
    }
    s->offsets = vd_malloc(offsets_bytes);
    if (!s->offsets) {
        ret = vd_error_set(errp, ENOMEM, "Could not allocate offsets table");
        goto fail;
    }
    ret = vd_node_pread(bs->file, CLOOP_HEADER + 8, offsets_bytes, s->offsets, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the cloop offset table");
        goto fail;
    }
    /* zlib's bound on a stored stream of block_size bytes, doubled like QEMU's
     * "compression performed poorly" allowance */
    uint64_t max_size = 2 * (uint64_t)compressBound(s->block_size);
    uint32_t max_compressed = 1;
    for (uint64_t i = 0; i <= s->n_blocks; i++) {
        s->offsets[i] = vd_ld_be64(&s->offsets[i]);
        if (i == 0) {
            continue;
        }
        if (s->offsets[i] < s->offsets[i - 1]) {
            ret = vd_error_set(errp, EINVAL,
                               "offsets not monotonically increasing at index %llu, image "
                               "file is corrupt",
                               (unsigned long long)i);
            goto fail;
        }
        uint64_t size = s->offsets[i] - s->offsets[i - 1];
        if (size > max_size) {
            ret = vd_error_set(errp, EINVAL,
                               "invalid compressed block size at index %llu, image file is "
                               "corrupt",
                               (unsigned long long)i);
            goto fail;
        }
        max_compressed = VD_MAX(max_compressed, (uint32_t)size);
    }
    if (s->n_blocks && s->offsets[s->n_blocks] > (uint64_t)file_len) {
        ret = vd_error_set(errp, EINVAL,
                           "cloop block %u ends at %llu, past the end of the file (%lld "
                           "bytes); the image is truncated",
                           s->n_blocks - 1, (unsigned long long)s->offsets[s->n_blocks],
                           (long long)file_len);
        goto fail;
    }
    s->max_compressed = max_compressed;
    s->compressed = vd_malloc(max_compressed);
    s->block = vd_malloc(s->block_size);
    if (!s->compressed || !s->block) {
        ret = vd_error_set(errp, ENOMEM, "Could not allocate the cloop block buffers");
        goto fail;
    }
    memset(&s->zs, 0, sizeof(s->zs));
    if (inflateInit(&s->zs) != Z_OK) {
        ret = vd_error_set(errp, ENOMEM, "Could not initialise zlib");
        goto fail;
    }
    s->zstream_ready = true;
    s->cached = s->n_blocks;
    bs->request_alignment = 512;
    return 0;

fail:
    cloop_close(bs);
    return ret;
}

static int64_t cloop_get_length(vd_node *bs)
{
    cloop_state *s = bs->opaque;
    return (int64_t)((uint64_t)s->n_blocks * s->block_size);
}

/* Make block n the cached one (lock held). */
static int cloop_load_block(vd_node *bs, uint32_t n)
{
    cloop_state *s = bs->opaque;
    if (s->cached == n) {
        return 0;
    }
    uint32_t bytes = (uint32_t)(s->offsets[n + 1] - s->offsets[n]);
    s->cached = s->n_blocks;
    if (bytes) {
        int ret = vd_node_pread(bs->file, s->offsets[n], bytes, s->compressed, 0);
        if (ret < 0) {
            return ret;
        }
    }
    if (inflateReset(&s->zs) != Z_OK) {
        return -EIO;
    }
    s->zs.next_in = s->compressed;
    s->zs.avail_in = bytes;
    s->zs.next_out = s->block;
    s->zs.avail_out = s->block_size;
    int zr = inflate(&s->zs, Z_FINISH);
    if (zr != Z_STREAM_END || s->zs.total_out != s->block_size) {
        return -EIO;
    }
    s->cached = n;
    return 0;
}

static int cloop_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    cloop_state *s = bs->opaque;
    uint8_t *p = buf;
    int ret = 0;
    (void)flags;

    pthread_mutex_lock(&s->lock);
    while (len > 0) {
        uint32_t n = (uint32_t)(offset / s->block_size);
        uint64_t in_block = offset % s->block_size;
        uint64_t chunk = VD_MIN(len, s->block_size - in_block);
        ret = cloop_load_block(bs, n);
        if (ret < 0) {
            break;
        }
        memcpy(p, s->block + in_block, chunk);
        p += chunk;
        offset += chunk;
        len -= chunk;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

const vd_driver vd_drv_cloop = {
    .name = "cloop",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(cloop_state),
    .probe = cloop_probe,
    .open = cloop_open,
    .close = cloop_close,
    .get_length = cloop_get_length,
    .pread = cloop_pread,
};
