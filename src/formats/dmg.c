/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * dmg: Apple UDIF disk images, as QEMU 7.2 and dmg2img read them: a
 * 512-byte big-endian "koly" trailer at the end of the file points at the
 * block tables, either in an XML property list (blkx entries whose <data>
 * is a base64 "mish" block) or in a classic resource fork (resources of
 * "mish" blocks).  Each mish block lists chunks of 40 bytes: type, sector,
 * sector count, offset and length in the data fork.  Chunk types: zero
 * fill (0), raw (1), ignore (2, reads zeroes), zlib (0x80000005) and bzip2
 * (0x80000006); comments and the terminator are skipped.
 *
 * Read-only.  Not supported: lzfse chunks (0x80000007; Debian has no lzfse
 * library) and ADC chunks (0x80000004), whose reads fail with ENOTSUP;
 * segmented images, checksums (not verified), writing of any kind.  Sectors
 * no chunk covers fail to read with EIO, as in QEMU.
 *
 * The plist is not parsed as XML: like QEMU, a bounded scanner takes every
 * <data>...</data> element of the (at most 16 MiB) plist, base64-decodes it
 * and keeps those that are mish blocks.  A real XML parser would add a
 * dependency and attack surface for no gain on the subset UDIF writes.
 *
 * Hostile input: the trailer's fork offsets and lengths must lie before the
 * trailer; a chunk's compressed length may be at most 64 MiB and a data
 * chunk's sector count at most 64 MiB / 512 (QEMU's caps, which bound the
 * two chunk buffers); at most 1 Mi chunks in all; chunk data must lie
 * within the file, sector ranges must not overflow or overlap.
 */
#include <bzlib.h>
#include <nettle/base64.h>
#include <pthread.h>
#include <stdlib.h>
#include <zlib.h>

#include "internal.h"

#define DMG_KOLY_SIZE 512u
#define DMG_MAX_LENGTH (64u << 20)
#define DMG_MAX_SECTORS (DMG_MAX_LENGTH / 512)
#define DMG_MAX_CHUNKS (1u << 20)
#define DMG_MAX_PLIST (16u << 20)
#define DMG_MISH_MAGIC 0x6d697368u
#define DMG_MISH_HEADER 204u
#define DMG_CHUNK_BYTES 40u

enum {
    DMG_ZERO = 0,
    DMG_RAW = 1,
    DMG_IGNORE = 2,
    DMG_ADC = 0x80000004u,
    DMG_ZLIB = 0x80000005u,
    DMG_BZIP2 = 0x80000006u,
    DMG_LZFSE = 0x80000007u,
    DMG_COMMENT = 0x7ffffffeu,
    DMG_END = 0xffffffffu,
};

typedef struct dmg_chunk {
    uint64_t sector; /* first virtual sector */
    uint64_t count;  /* sectors */
    uint64_t offset; /* in the file */
    uint64_t length; /* bytes in the file */
    uint32_t type;
} dmg_chunk;

typedef struct dmg_state {
    pthread_mutex_t lock; /* guards the chunk cache and the streams */
    bool lock_ready;
    dmg_chunk *chunks; /* sorted by sector */
    size_t n_chunks;
    size_t cap_chunks;
    uint64_t total_sectors;
    uint64_t file_len;
    uint64_t koly_off;
    uint64_t data_fork_offset;
    /* one decompressed chunk */
    uint8_t *in_buf;
    uint8_t *out_buf;
    uint64_t in_cap, out_cap;
    size_t cached; /* chunk held in out_buf, n_chunks when none */
} dmg_state;

static int dmg_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)buf;
    (void)len;
    /* the magic is at the end of the file: QEMU goes by the name */
    size_t n = filename ? strlen(filename) : 0;
    return n > 4 && !strcmp(filename + n - 4, ".dmg") ? 2 : 0;
}

static void dmg_close(vd_node *bs)
{
    dmg_state *s = bs->opaque;
    free(s->chunks);
    free(s->in_buf);
    free(s->out_buf);
    s->chunks = NULL;
    s->in_buf = s->out_buf = NULL;
    if (s->lock_ready) {
        pthread_mutex_destroy(&s->lock);
        s->lock_ready = false;
    }
}

/* Parse one mish block of len bytes and append its chunks. */
static int dmg_read_mish(vd_node *bs, const uint8_t *b, uint64_t len, vd_error **errp)
{
    dmg_state *s = bs->opaque;
    if (len < DMG_MISH_HEADER || vd_ld_be32(b) != DMG_MISH_MAGIC) {
        /* not a block table (other plist data): skipped, as QEMU does */
        return 0;
    }
    uint64_t first_sector = vd_ld_be64(b + 8);
    uint64_t data_offset = vd_ld_be64(b + 0x18);
    uint64_t declared = vd_ld_be32(b + 200);
    uint64_t room = (len - DMG_MISH_HEADER) / DMG_CHUNK_BYTES;
    uint64_t n = VD_MIN(declared, room);
    uint64_t base;
    if (vd_add_overflow(s->data_fork_offset, data_offset, &base)) {
        return vd_error_set(errp, EINVAL, "dmg block table data offset %llu is invalid",
                            (unsigned long long)data_offset);
    }
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *e = b + DMG_MISH_HEADER + i * DMG_CHUNK_BYTES;
        dmg_chunk c;
        c.type = vd_ld_be32(e);
        if (c.type == DMG_COMMENT || c.type == DMG_END) {
            continue;
        }
        uint64_t sector = vd_ld_be64(e + 8);
        c.count = vd_ld_be64(e + 16);
        uint64_t off = vd_ld_be64(e + 24);
        c.length = vd_ld_be64(e + 32);
        if (c.count == 0) {
            continue;
        }
        if (vd_add_overflow(first_sector, sector, &c.sector) ||
            c.sector > UINT64_MAX / 512 - c.count) {
            return vd_error_set(errp, EINVAL, "dmg chunk %llu has an invalid sector range",
                                (unsigned long long)(s->n_chunks));
        }
        bool zero = c.type == DMG_ZERO || c.type == DMG_IGNORE;
        if (!zero && c.count > DMG_MAX_SECTORS) {
            return vd_error_set(errp, EINVAL,
                                "sector count %llu for chunk %zu is larger than max (%u)",
                                (unsigned long long)c.count, s->n_chunks, DMG_MAX_SECTORS);
        }
        if (c.length > DMG_MAX_LENGTH) {
            return vd_error_set(errp, EINVAL,
                                "length %llu for chunk %zu is larger than max (%u)",
                                (unsigned long long)c.length, s->n_chunks, DMG_MAX_LENGTH);
        }
        uint64_t end;
        if (vd_add_overflow(base, off, &c.offset) ||
            vd_add_overflow(c.offset, c.length, &end) || (!zero && end > s->file_len)) {
            return vd_error_set(errp, EINVAL,
                                "dmg chunk %zu (%llu bytes at %llu) lies past the end of the "
                                "file",
                                s->n_chunks, (unsigned long long)c.length,
                                (unsigned long long)c.offset);
        }
        if (s->n_chunks == DMG_MAX_CHUNKS) {
            return vd_error_set(errp, EFBIG, "dmg image has more than %u chunks",
                                DMG_MAX_CHUNKS);
        }
        if (s->n_chunks == s->cap_chunks) {
            size_t cap = s->cap_chunks ? s->cap_chunks * 2 : 64;
            dmg_chunk *nc = realloc(s->chunks, cap * sizeof(*nc));
            if (!nc) {
                return vd_error_set(errp, ENOMEM, "Could not allocate the dmg chunk table");
            }
            s->chunks = nc;
            s->cap_chunks = cap;
        }
        s->chunks[s->n_chunks++] = c;
    }
    return 0;
}

static int dmg_read_rsrc(vd_node *bs, uint64_t begin, uint64_t length, vd_error **errp)
{
    uint8_t h[12];
    int ret = vd_node_pread(bs->file, begin, sizeof(h), h, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read the dmg resource fork");
    }
    uint64_t data_off = vd_ld_be32(h);
    uint64_t count = vd_ld_be32(h + 8);
    if (data_off > length || count == 0 || data_off + count > length) {
        return vd_error_set(errp, EINVAL,
                            "dmg resource fork data (%llu bytes at %llu) does not fit the "
                            "fork of %llu bytes",
                            (unsigned long long)count, (unsigned long long)data_off,
                            (unsigned long long)length);
    }
    uint64_t off = begin + data_off;
    uint64_t end = off + count;
    uint8_t *buf = NULL;
    while (off < end) {
        uint8_t l[4];
        ret = vd_node_pread(bs->file, off, 4, l, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not read the dmg resource fork");
            break;
        }
        uint64_t n = vd_ld_be32(l);
        off += 4;
        if (n == 0 || off > end || n > end - off) {
            ret = vd_error_set(errp, EINVAL,
                               "dmg resource of %llu bytes at %llu does not fit the resource "
                               "data",
                               (unsigned long long)n, (unsigned long long)(off - 4));
            break;
        }
        free(buf);
        buf = vd_malloc(n);
        if (!buf) {
            ret = vd_error_set(errp, ENOMEM, "Could not allocate a dmg resource");
            break;
        }
        ret = vd_node_pread(bs->file, off, n, buf, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not read the dmg resource fork");
            break;
        }
        ret = dmg_read_mish(bs, buf, n, errp);
        if (ret < 0) {
            break;
        }
        off += n;
    }
    free(buf);
    return ret;
}

/* Find needle in [p, end) (no NUL termination needed). */
static const char *dmg_find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    while ((size_t)(end - p) >= n) {
        const char *q = memchr(p, needle[0], (size_t)(end - p) - n + 1);
        if (!q) {
            return NULL;
        }
        if (!memcmp(q, needle, n)) {
            return q;
        }
        p = q + 1;
    }
    return NULL;
}

static int dmg_read_plist(vd_node *bs, uint64_t begin, uint64_t length, vd_error **errp)
{
    if (length == 0 || length > DMG_MAX_PLIST) {
        return vd_error_set(errp, EINVAL, "dmg property list length %llu is invalid (at most %u)",
                            (unsigned long long)length, DMG_MAX_PLIST);
    }
    char *xml = vd_malloc(length);
    uint8_t *mish = NULL;
    if (!xml) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the dmg property list");
    }
    int ret = vd_node_pread(bs->file, begin, length, xml, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the dmg property list");
        goto out;
    }
    const char *p = xml, *end = xml + length;
    for (;;) {
        const char *d = dmg_find(p, end, "<data>");
        if (!d) {
            break;
        }
        d += 6;
        const char *e = dmg_find(d, end, "</data>");
        if (!e) {
            ret = vd_error_set(errp, EINVAL, "dmg property list is malformed (no </data>)");
            goto out;
        }
        size_t in_len = (size_t)(e - d);
        size_t out_len = BASE64_DECODE_LENGTH(in_len);
        free(mish);
        mish = vd_malloc(out_len + 1);
        if (!mish) {
            ret = vd_error_set(errp, ENOMEM, "Could not allocate a dmg block table");
            goto out;
        }
        struct base64_decode_ctx ctx;
        base64_decode_init(&ctx);
        /* nettle skips the whitespace plists put inside <data> */
        if (!base64_decode_update(&ctx, &out_len, mish, in_len, d) ||
            !base64_decode_final(&ctx)) {
            ret = vd_error_set(errp, EINVAL, "dmg property list has invalid base64 data");
            goto out;
        }
        ret = dmg_read_mish(bs, mish, out_len, errp);
        if (ret < 0) {
            goto out;
        }
        p = e + 7;
    }
    ret = 0;
out:
    free(mish);
    free(xml);
    return ret;
}

static int dmg_cmp_chunk(const void *a, const void *b)
{
    const dmg_chunk *x = a, *y = b;
    return x->sector < y->sector ? -1 : x->sector > y->sector;
}

static int dmg_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    dmg_state *s = bs->opaque;
    uint8_t k[DMG_KOLY_SIZE];
    int ret;
    (void)opts;

    if (!bs->read_only) {
        return vd_error_set(errp, EROFS,
                            "The dmg format is read-only: open the image read-only");
    }
    pthread_mutex_init(&s->lock, NULL);
    s->lock_ready = true;
    int64_t file_len = vd_node_get_length(bs->file);
    if (file_len < 0) {
        ret = vd_error_setg_errno(errp, (int)file_len, "Could not get the file size");
        goto fail;
    }
    if (file_len < 512) {
        ret = vd_error_set(errp, EINVAL, "dmg file must be at least 512 bytes long");
        goto fail;
    }
    s->file_len = (uint64_t)file_len;
    /* The trailer is the last 512 bytes; odd-sized files (rounded up by
     * some protocols) put "koly" anywhere in the last 515 bytes before it,
     * which is where QEMU looks too. */
    uint64_t win_off = s->file_len > 1023 ? s->file_len - 1023 : 0;
    uint8_t win[515];
    uint64_t win_len = VD_MIN(515, s->file_len);
    ret = vd_node_pread(bs->file, win_off, win_len, win, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Failed while reading UDIF trailer");
        goto fail;
    }
    const char *kp = dmg_find((const char *)win, (const char *)win + win_len, "koly");
    if (!kp) {
        ret = vd_error_set(errp, EINVAL, "Could not locate UDIF trailer in dmg file");
        goto fail;
    }
    s->koly_off = win_off + (uint64_t)((const uint8_t *)kp - win);
    /* past the end of the file reads zeroes */
    ret = vd_node_pread(bs->file, s->koly_off, sizeof(k), k, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Failed while reading UDIF trailer");
        goto fail;
    }
    s->data_fork_offset = vd_ld_be64(k + 0x18);
    uint64_t rsrc_off = vd_ld_be64(k + 0x28);
    uint64_t rsrc_len = vd_ld_be64(k + 0x30);
    uint64_t xml_off = vd_ld_be64(k + 0xd8);
    uint64_t xml_len = vd_ld_be64(k + 0xe0);
    s->total_sectors = vd_ld_be64(k + 0x1ec);
    if (s->data_fork_offset > s->koly_off) {
        ret = vd_error_set(errp, EINVAL, "dmg data fork offset %llu lies past the trailer",
                           (unsigned long long)s->data_fork_offset);
        goto fail;
    }
    if (rsrc_off >= s->koly_off || rsrc_len > s->koly_off - rsrc_off) {
        ret = vd_error_set(errp, EINVAL,
                           "dmg resource fork (%llu bytes at %llu) does not lie before the "
                           "trailer",
                           (unsigned long long)rsrc_len, (unsigned long long)rsrc_off);
        goto fail;
    }
    if (xml_off >= s->koly_off || xml_len > s->koly_off - xml_off) {
        ret = vd_error_set(errp, EINVAL,
                           "dmg property list (%llu bytes at %llu) does not lie before the "
                           "trailer",
                           (unsigned long long)xml_len, (unsigned long long)xml_off);
        goto fail;
    }
    if (s->total_sectors > (uint64_t)INT64_MAX / 512) {
        ret = vd_error_set(errp, EINVAL, "dmg sector count %llu is too large",
                           (unsigned long long)s->total_sectors);
        goto fail;
    }
    if (rsrc_len) {
        ret = dmg_read_rsrc(bs, rsrc_off, rsrc_len, errp);
    } else if (xml_len) {
        ret = dmg_read_plist(bs, xml_off, xml_len, errp);
    } else {
        ret = vd_error_set(errp, EINVAL, "dmg trailer has neither a resource fork nor a "
                                         "property list");
    }
    if (ret < 0) {
        goto fail;
    }
    if (s->n_chunks) {
        qsort(s->chunks, s->n_chunks, sizeof(dmg_chunk), dmg_cmp_chunk);
    }
    for (size_t i = 1; i < s->n_chunks; i++) {
        if (s->chunks[i - 1].sector + s->chunks[i - 1].count > s->chunks[i].sector) {
            ret = vd_error_set(errp, EINVAL, "dmg chunks overlap at sector %llu",
                               (unsigned long long)s->chunks[i].sector);
            goto fail;
        }
    }
    s->cached = s->n_chunks;
    bs->request_alignment = 512;
    return 0;

fail:
    dmg_close(bs);
    return ret;
}

static int64_t dmg_get_length(vd_node *bs)
{
    dmg_state *s = bs->opaque;
    return (int64_t)(s->total_sectors * 512);
}

/* Index of the chunk holding sector, or n_chunks. */
static size_t dmg_search(const dmg_state *s, uint64_t sector)
{
    size_t lo = 0, hi = s->n_chunks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dmg_chunk *c = &s->chunks[mid];
        if (sector < c->sector) {
            hi = mid;
        } else if (sector - c->sector >= c->count) {
            lo = mid + 1;
        } else {
            return mid;
        }
    }
    return s->n_chunks;
}

static int dmg_grow(uint8_t **buf, uint64_t *cap, uint64_t need)
{
    if (*cap >= need) {
        return 0;
    }
    uint8_t *n = vd_malloc(need);
    if (!n) {
        return -ENOMEM;
    }
    free(*buf);
    *buf = n;
    *cap = need;
    return 0;
}

/* Decompress chunk i into out_buf (lock held). */
static int dmg_load_chunk(vd_node *bs, size_t i)
{
    dmg_state *s = bs->opaque;
    const dmg_chunk *c = &s->chunks[i];
    uint64_t out_len = c->count * 512;
    int ret;

    if (s->cached == i) {
        return 0;
    }
    s->cached = s->n_chunks;
    ret = dmg_grow(&s->out_buf, &s->out_cap, out_len);
    if (ret < 0) {
        return ret;
    }
    if (c->type == DMG_RAW) {
        uint64_t n = VD_MIN(c->length, out_len);
        ret = n ? vd_node_pread(bs->file, c->offset, n, s->out_buf, 0) : 0;
        if (ret < 0) {
            return ret;
        }
        memset(s->out_buf + n, 0, out_len - n);
        s->cached = i;
        return 0;
    }
    ret = dmg_grow(&s->in_buf, &s->in_cap, c->length ? c->length : 1);
    if (ret == 0 && c->length) {
        ret = vd_node_pread(bs->file, c->offset, c->length, s->in_buf, 0);
    }
    if (ret < 0) {
        return ret;
    }
    if (c->type == DMG_ZLIB) {
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        if (inflateInit(&zs) != Z_OK) {
            return -ENOMEM;
        }
        zs.next_in = s->in_buf;
        zs.avail_in = (uInt)c->length;
        zs.next_out = s->out_buf;
        zs.avail_out = (uInt)out_len;
        int zr = inflate(&zs, Z_FINISH);
        bool ok = zr == Z_STREAM_END && zs.total_out == out_len;
        inflateEnd(&zs);
        if (!ok) {
            return -EIO;
        }
    } else {
        unsigned int dlen = (unsigned int)out_len;
        int br = BZ2_bzBuffToBuffDecompress((char *)s->out_buf, &dlen, (char *)s->in_buf,
                                            (unsigned int)c->length, 0, 0);
        if (br == BZ_MEM_ERROR) {
            return -ENOMEM;
        }
        if (br != BZ_OK || dlen != out_len) {
            return -EIO;
        }
    }
    s->cached = i;
    return 0;
}

static int dmg_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    dmg_state *s = bs->opaque;
    uint8_t *p = buf;
    int ret = 0;
    (void)flags;

    pthread_mutex_lock(&s->lock);
    while (len > 0) {
        uint64_t sector = offset / 512;
        size_t i = dmg_search(s, sector);
        if (i == s->n_chunks) {
            /* no chunk covers it: QEMU fails the read too */
            ret = -EIO;
            break;
        }
        const dmg_chunk *c = &s->chunks[i];
        uint64_t in_chunk = offset - c->sector * 512;
        uint64_t n = VD_MIN(len, c->count * 512 - in_chunk);
        switch (c->type) {
        case DMG_ZERO:
        case DMG_IGNORE:
            memset(p, 0, n);
            break;
        case DMG_RAW:
        case DMG_ZLIB:
        case DMG_BZIP2:
            ret = dmg_load_chunk(bs, i);
            if (ret == 0) {
                memcpy(p, s->out_buf + in_chunk, n);
            }
            break;
        default:
            /* ADC, lzfse, unknown */
            ret = -ENOTSUP;
            break;
        }
        if (ret < 0) {
            break;
        }
        offset += n;
        len -= n;
        p += n;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

const vd_driver vd_drv_dmg = {
    .name = "dmg",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(dmg_state),
    .probe = dmg_probe,
    .open = dmg_open,
    .close = dmg_close,
    .get_length = dmg_get_length,
    .pread = dmg_pread,
};
