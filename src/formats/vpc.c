/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vpc: Microsoft Virtual Hard Disk (VHD), following Microsoft's "Virtual
 * Hard Disk Image Format Specification" 1.0 (hard disk footer, dynamic
 * disk header, block allocation table, per-block sector bitmaps, CHS
 * geometry) and QEMU 7.2's block/vpc.c for everything the specification
 * leaves to the implementation:
 *  - the virtual size comes from the CHS geometry unless the creator is
 *    one that uses current_size (Hyper-V "win ", "qem2", "d2v ", "CTXS",
 *    "tap\0") or the geometry is the maximum 65535/16/255; the open option
 *    force_size_calc=chs|current_size overrides the table;
 *  - create rounds the size up to a CHS geometry unless force_size=on
 *    (then creator "qem2"); 2 MiB blocks; footer copy at offset 0, dynamic
 *    header at 512, BAT at 1536;
 *  - sector bitmaps of dynamic disks are ignored on read and set to all
 *    ones on write; the footer's checksum is verified, the dynamic header's
 *    is not (as QEMU).
 * Beyond QEMU: differencing disks read their parent (found through the
 * W2ru/W2ku/MacX parent locators, else the parent's unicode name) and
 * honour the sector bitmaps; writes to them set bitmap bits.
 *
 * Not supported: fixed disks are only recognised when the format is given
 * (the probe, like QEMU's, looks at offset 0 only); resize; check; a BAT
 * larger than 64 MiB (QEMU allows 2 GiB).
 */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "format-io.h"
#include "internal.h"

#define VHD_FOOTER_SIZE 512u
#define VHD_DYN_SIZE 1024u
#define VHD_SECTOR 512u
#define VHD_FIXED 2u
#define VHD_DYNAMIC 3u
#define VHD_DIFFERENCING 4u
#define VHD_TIMESTAMP_BASE 946684800u /* 2000-01-01 00:00:00 UTC */
#define VHD_CHS_MAX_C 65535u
#define VHD_CHS_MAX_H 16u
#define VHD_CHS_MAX_S 255u
#define VHD_MAX_GEOMETRY ((uint64_t)VHD_CHS_MAX_C * VHD_CHS_MAX_H * VHD_CHS_MAX_S)
#define VHD_MAX_SECTORS 0xff000000ull /* 2040 GiB */
#define VHD_DEFAULT_BLOCK (2u << 20)
/* no writer uses more (Hyper-V's largest is 256 MiB); bounds the bitmap
 * buffer and the file growth of one block allocation */
#define VHD_MAX_BLOCK (256u << 20)
#define VHD_BAT_UNUSED 0xffffffffu
/* Our bound on the BAT kept in memory. */
#define VHD_BAT_MAX_BYTES (64u << 20)
#define VHD_LOCATOR_MAX 4096u

/* Footer offsets (big-endian). */
enum {
    F_COOKIE = 0,
    F_FEATURES = 8,
    F_VERSION = 12,
    F_DATA_OFFSET = 16,
    F_TIMESTAMP = 24,
    F_CREATOR_APP = 28,
    F_CREATOR_VER = 32,
    F_CREATOR_OS = 36,
    F_ORIG_SIZE = 40,
    F_CUR_SIZE = 48,
    F_CYLS = 56,
    F_HEADS = 58,
    F_SECS = 59,
    F_TYPE = 60,
    F_CHECKSUM = 64,
    F_UUID = 68,
};

/* Dynamic disk header offsets (big-endian). */
enum {
    D_COOKIE = 0,
    D_DATA_OFFSET = 8,
    D_TABLE_OFFSET = 16,
    D_VERSION = 24,
    D_MAX_ENTRIES = 28,
    D_BLOCK_SIZE = 32,
    D_CHECKSUM = 36,
    D_PARENT_UUID = 40,
    D_PARENT_TS = 56,
    D_PARENT_NAME = 64,
    D_LOCATORS = 576,
};

typedef struct vpc_state {
    pthread_mutex_t lock;
    bool lock_ready;
    uint8_t footer[VHD_FOOTER_SIZE];
    uint32_t disk_type;
    uint64_t size;
    uint32_t block_size;
    uint32_t bitmap_size;
    uint32_t max_table_entries;
    uint32_t *bat;
    uint64_t bat_offset;
    uint64_t free_data_block_offset;
    uint64_t file_len;
    /* dynamic: one bit per block, "its sector bitmap is all ones on disk" */
    uint8_t *bitmap_full;
    /* differencing: the sector bitmap of one block */
    uint8_t *bm;
    uint32_t bm_block;
    bool bm_valid;
} vpc_state;

static const vd_opt_desc vpc_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"subformat", VD_OPT_STRING,
     "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} ",
     NULL},
    {"force_size", VD_OPT_BOOL,
     "Force disk size calculation to use the actual size specified, rather than using the "
     "nearest CHS-based calculation",
     NULL},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc vpc_open_opts[] = {
    {"force_size_calc", VD_OPT_STRING,
     "Force disk size calculation to use either CHS geometry, or use the disk current_size "
     "specified in the VHD footer. {chs, current_size}",
     NULL},
    {NULL, 0, NULL, NULL},
};

static uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t skip_at)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < len; i++) {
        if (i >= skip_at && i < skip_at + 4) {
            continue;
        }
        sum += buf[i];
    }
    return ~sum;
}

static int vpc_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= 8 && !memcmp(buf, "conectix", 8) ? 100 : 0;
}

/*
 * The geometry algorithm of the VHD specification (appendix), with QEMU's
 * clamp to the largest geometry.  It may round total_sectors down.
 */
static void vpc_calc_geometry(uint64_t total_sectors, uint16_t *cyls, uint8_t *heads,
                              uint8_t *secs)
{
    uint64_t cth;
    uint32_t h, sp;

    total_sectors = VD_MIN(total_sectors, VHD_MAX_GEOMETRY);
    if (total_sectors >= 65535ull * 16 * 63) {
        sp = 255;
        h = 16;
        cth = total_sectors / sp;
    } else {
        sp = 17;
        cth = total_sectors / sp;
        h = (uint32_t)vd_div_round_up(cth, 1024);
        if (h < 4) {
            h = 4;
        }
        if (cth >= (uint64_t)h * 1024 || h > 16) {
            sp = 31;
            h = 16;
            cth = total_sectors / sp;
        }
        if (cth >= (uint64_t)h * 1024) {
            sp = 63;
            h = 16;
            cth = total_sectors / sp;
        }
    }
    *cyls = (uint16_t)(cth / h);
    *heads = (uint8_t)h;
    *secs = (uint8_t)sp;
}

/* UTF-16 (le or be) to UTF-8, stopping at NUL; NULL on bad input. */
static char *vpc_utf16_to_utf8(const uint8_t *in, size_t len, bool be)
{
    char *out = vd_malloc(len / 2 * 3 + 1);
    size_t o = 0;
    if (!out) {
        return NULL;
    }
    for (size_t i = 0; i + 1 < len; i += 2) {
        uint32_t c = be ? vd_ld_be16(in + i) : vd_ld_le16(in + i);
        if (c == 0) {
            break;
        }
        if (c >= 0xd800 && c <= 0xdfff) {
            /* surrogate pairs: decode the pair, reject lone halves */
            if (c >= 0xdc00 || i + 3 >= len) {
                free(out);
                return NULL;
            }
            uint32_t lo = be ? vd_ld_be16(in + i + 2) : vd_ld_le16(in + i + 2);
            if (lo < 0xdc00 || lo > 0xdfff) {
                free(out);
                return NULL;
            }
            c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
            out = realloc(out, len / 2 * 4 + 1);
            if (!out) {
                return NULL;
            }
        }
        if (c < 0x80) {
            out[o++] = (char)c;
        } else if (c < 0x800) {
            out[o++] = (char)(0xc0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            out[o++] = (char)(0xe0 | (c >> 12));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | (c >> 18));
            out[o++] = (char)(0x80 | ((c >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    out[o] = '\0';
    return out;
}

/* Windows path to a POSIX one: backslashes become slashes, ".\" goes. */
static char *vpc_fix_path(char *p, bool relative)
{
    for (char *c = p; *c; c++) {
        if (*c == '\\') {
            *c = '/';
        }
    }
    if (relative) {
        while (p[0] == '.' && p[1] == '/') {
            memmove(p, p + 2, strlen(p + 2) + 1);
        }
    }
    return p;
}

/*
 * The parent of a differencing disk: the first usable locator in order of
 * preference (relative Windows path, POSIX URL, absolute Windows path),
 * else the parent's unicode name from the header.
 */
static char *vpc_parent_name(vd_node *bs, const uint8_t *dyn)
{
    static const struct {
        uint32_t code;
        int kind; /* 0 utf-16le relative, 1 utf-8 url, 2 utf-16le absolute */
    } prefs[] = {
        {0x57327275u /* W2ru */, 0},
        {0x4d616358u /* MacX */, 1},
        {0x57326b75u /* W2ku */, 2},
    };
    vpc_state *s = bs->opaque;

    for (size_t p = 0; p < VD_ARRAY_SIZE(prefs); p++) {
        for (int i = 0; i < 8; i++) {
            const uint8_t *loc = dyn + D_LOCATORS + i * 24;
            if (vd_ld_be32(loc) != prefs[p].code) {
                continue;
            }
            uint32_t len = vd_ld_be32(loc + 8);
            uint64_t off = vd_ld_be64(loc + 16);
            if (len == 0 || len > VHD_LOCATOR_MAX || off > s->file_len ||
                s->file_len - off < len) {
                continue;
            }
            uint8_t *raw = vd_malloc(len + 1);
            if (!raw) {
                return NULL;
            }
            if (vd_node_pread(bs->file, off, len, raw, 0) < 0) {
                free(raw);
                continue;
            }
            char *name;
            if (prefs[p].kind == 1) {
                raw[len] = 0;
                const char *u = (const char *)raw;
                if (!strncmp(u, "file://", 7)) {
                    u += 7;
                    if (!strncmp(u, "localhost/", 10)) {
                        u += 9;
                    }
                }
                name = vd_strdup(u);
                if (name) {
                    vpc_fix_path(name, name[0] != '/');
                }
            } else {
                name = vpc_utf16_to_utf8(raw, len, false);
                if (name) {
                    vpc_fix_path(name, prefs[p].kind == 0);
                }
            }
            free(raw);
            if (name && name[0]) {
                return name;
            }
            free(name);
        }
    }
    char *name = vpc_utf16_to_utf8(dyn + D_PARENT_NAME, 512, true);
    if (name && !name[0]) {
        free(name);
        name = NULL;
    }
    return name ? vpc_fix_path(name, true) : NULL;
}

static void vpc_close(vd_node *bs)
{
    vpc_state *s = bs->opaque;
    free(s->bat);
    free(s->bitmap_full);
    free(s->bm);
    s->bat = NULL;
    s->bitmap_full = NULL;
    s->bm = NULL;
    if (s->lock_ready) {
        pthread_mutex_destroy(&s->lock);
        s->lock_ready = false;
    }
}

static int vpc_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    vpc_state *s = bs->opaque;
    uint8_t *f = s->footer;
    uint8_t dyn[VHD_DYN_SIZE];
    int calc = 0;
    int ret;

    pthread_mutex_init(&s->lock, NULL);
    s->lock_ready = true;

    const char *calc_str = vd_opts_get(opts, "force_size_calc");
    if (calc_str) {
        if (!strcmp(calc_str, "chs")) {
            calc = 1;
        } else if (!strcmp(calc_str, "current_size")) {
            calc = 2;
        } else {
            ret = vd_error_set(errp, EINVAL, "Invalid size calculation mode: '%s'", calc_str);
            goto fail;
        }
    }

    int64_t file_len = vd_node_get_length(bs->file);
    if (file_len < 0) {
        ret = vd_error_setg_errno(errp, (int)file_len, "Could not get the file size");
        goto fail;
    }
    s->file_len = (uint64_t)file_len;

    ret = vd_node_pread(bs->file, 0, VHD_FOOTER_SIZE, f, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the VHD footer");
        goto fail;
    }
    s->disk_type = VHD_DYNAMIC;
    if (memcmp(f + F_COOKIE, "conectix", 8)) {
        if (s->file_len < VHD_FOOTER_SIZE) {
            ret = vd_error_set(errp, EINVAL, "File too small for a VHD header");
            goto fail;
        }
        /* a fixed disk has its footer only at the end */
        ret = vd_node_pread(bs->file, s->file_len - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, f, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not read the VHD footer");
            goto fail;
        }
        if (memcmp(f + F_COOKIE, "conectix", 8) || vd_ld_be32(f + F_TYPE) != VHD_FIXED) {
            ret = vd_error_set(errp, EINVAL, "invalid VPC image");
            goto fail;
        }
        s->disk_type = VHD_FIXED;
    } else if (vd_ld_be32(f + F_TYPE) == VHD_DIFFERENCING) {
        s->disk_type = VHD_DIFFERENCING;
    }
    if (vpc_checksum(f, VHD_FOOTER_SIZE, F_CHECKSUM) != vd_ld_be32(f + F_CHECKSUM)) {
        ret = vd_error_set(errp, EINVAL, "Incorrect header checksum");
        goto fail;
    }

    uint64_t total = (uint64_t)vd_ld_be16(f + F_CYLS) * f[F_HEADS] * f[F_SECS];
    const uint8_t *app = f + F_CREATOR_APP;
    bool use_chs =
        (memcmp(app, "win ", 4) && memcmp(app, "qem2", 4) && memcmp(app, "d2v ", 4) &&
         memcmp(app, "CTXS", 4) && memcmp(app, "tap\0", 4)) ||
        calc == 1;
    if (!use_chs || total == VHD_MAX_GEOMETRY || calc == 2) {
        total = vd_ld_be64(f + F_CUR_SIZE) / VHD_SECTOR;
    }
    if (total > VHD_MAX_SECTORS) {
        ret = vd_error_set(errp, EFBIG, "VHD image is too large (%llu bytes, at most 2040 GiB)",
                           (unsigned long long)total * VHD_SECTOR);
        goto fail;
    }
    s->size = total * VHD_SECTOR;

    if (s->disk_type == VHD_FIXED) {
        bs->has_zero_init = true;
        return 0;
    }

    uint64_t dyn_off = vd_ld_be64(f + F_DATA_OFFSET);
    if (dyn_off > s->file_len || s->file_len - dyn_off < VHD_DYN_SIZE) {
        ret = vd_error_set(errp, EINVAL, "Error reading dynamic VHD header");
        goto fail;
    }
    ret = vd_node_pread(bs->file, dyn_off, VHD_DYN_SIZE, dyn, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Error reading dynamic VHD header");
        goto fail;
    }
    if (memcmp(dyn + D_COOKIE, "cxsparse", 8)) {
        ret = vd_error_set(errp, EINVAL, "Invalid header magic");
        goto fail;
    }
    s->block_size = vd_ld_be32(dyn + D_BLOCK_SIZE);
    if (!vd_is_pow2(s->block_size) || s->block_size < VHD_SECTOR ||
        s->block_size > VHD_MAX_BLOCK) {
        ret = vd_error_set(errp, EINVAL, "Invalid block size %u", s->block_size);
        goto fail;
    }
    s->bitmap_size =
        (uint32_t)vd_div_round_up(s->block_size / (8 * VHD_SECTOR), VHD_SECTOR) * VHD_SECTOR;
    s->max_table_entries = vd_ld_be32(dyn + D_MAX_ENTRIES);
    if (s->size / s->block_size > 0xffffffffu) {
        ret = vd_error_set(errp, EINVAL, "Too many blocks");
        goto fail;
    }
    if ((uint64_t)s->max_table_entries * s->block_size < s->size) {
        ret = vd_error_set(errp, EINVAL, "Page table too small");
        goto fail;
    }
    uint64_t bat_bytes = (uint64_t)s->max_table_entries * 4;
    if (bat_bytes > VHD_BAT_MAX_BYTES) {
        ret = vd_error_set(errp, EINVAL, "Max Table Entries too large (%u)",
                           s->max_table_entries);
        goto fail;
    }
    s->bat_offset = vd_ld_be64(dyn + D_TABLE_OFFSET);
    if (s->bat_offset > s->file_len || s->file_len - s->bat_offset < bat_bytes) {
        ret = vd_error_set(errp, EINVAL,
                           "Error reading pagetable: the block allocation table extends past "
                           "the end of the file");
        goto fail;
    }
    s->bat = vd_malloc(bat_bytes);
    if (!s->bat) {
        ret = vd_error_set(errp, ENOMEM, "Could not allocate the block allocation table");
        goto fail;
    }
    if (bat_bytes) {
        ret = vd_node_pread(bs->file, s->bat_offset, bat_bytes, s->bat, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Error reading pagetable");
            goto fail;
        }
    }
    s->free_data_block_offset =
        vd_div_round_up(s->bat_offset + bat_bytes, VHD_SECTOR) * VHD_SECTOR;
    for (uint32_t i = 0; i < s->max_table_entries; i++) {
        s->bat[i] = vd_ld_be32(&s->bat[i]);
        if (s->bat[i] != VHD_BAT_UNUSED) {
            uint64_t next = (uint64_t)s->bat[i] * VHD_SECTOR + s->bitmap_size + s->block_size;
            s->free_data_block_offset = VD_MAX(s->free_data_block_offset, next);
        }
    }
    if (s->free_data_block_offset > s->file_len) {
        ret = vd_error_set(errp, EINVAL,
                           "block-vpc: free_data_block_offset points after the end of file. "
                           "The image has been truncated.");
        goto fail;
    }
    s->bitmap_full = calloc(1, s->max_table_entries / 8 + 1);
    if (!s->bitmap_full) {
        ret = vd_error_set(errp, ENOMEM, "Out of memory");
        goto fail;
    }
    if (s->disk_type == VHD_DIFFERENCING) {
        s->bm = vd_malloc(s->bitmap_size);
        if (!s->bm) {
            ret = vd_error_set(errp, ENOMEM, "Out of memory");
            goto fail;
        }
        char *parent = vpc_parent_name(bs, dyn);
        if (!parent) {
            ret = vd_error_set(errp, EINVAL,
                               "differencing VHD image names no usable parent (no parent "
                               "locator and no parent name)");
            goto fail;
        }
        bs->backing_file = parent;
        bs->backing_format = vd_strdup("vpc");
        /* bitmap bits are per sector */
        bs->request_alignment = VHD_SECTOR;
    }
    bs->has_zero_init = true;
    return 0;

fail:
    vpc_close(bs);
    return ret;
}

static int64_t vpc_get_length(vd_node *bs)
{
    vpc_state *s = bs->opaque;
    return (int64_t)s->size;
}

/* Lock held.  Load the sector bitmap of block b (differencing disks). */
static int vpc_load_bitmap(vd_node *bs, uint32_t b)
{
    vpc_state *s = bs->opaque;
    if (s->bm_valid && s->bm_block == b) {
        return 0;
    }
    s->bm_valid = false;
    int ret =
        vd_node_pread(bs->file, (uint64_t)s->bat[b] * VHD_SECTOR, s->bitmap_size, s->bm, 0);
    if (ret < 0) {
        return ret;
    }
    s->bm_block = b;
    s->bm_valid = true;
    return 0;
}

static bool vpc_bit(const uint8_t *bm, uint64_t sector)
{
    /* the first sector is the most significant bit of the first byte */
    return (bm[sector / 8] >> (7 - sector % 8)) & 1;
}

/* Number of sectors from `sector` on (at most max) sharing its bit. */
static uint64_t vpc_bit_run(const uint8_t *bm, uint64_t sector, uint64_t max, bool *set)
{
    *set = vpc_bit(bm, sector);
    uint64_t n = 1;
    while (n < max && vpc_bit(bm, sector + n) == *set) {
        n++;
    }
    return n;
}

static uint64_t vpc_block_data(const vpc_state *s, uint32_t b)
{
    return (uint64_t)s->bat[b] * VHD_SECTOR + s->bitmap_size;
}

/*
 * vd_fmt_read's map (dynamic and differencing disks): a free block reads as
 * zeroes (dynamic) or from the parent (differencing); in an allocated block
 * of a differencing disk the sector bitmap says, run by run, which.  The
 * data is read outside the lock: blocks never move, and a bitmap bit is set
 * only after its data is written.
 */
static int vpc_map(vd_node *bs, void *opaque, uint64_t offset, uint64_t max, void *buf,
                   vd_fmt_extent *ext)
{
    vpc_state *s = bs->opaque;
    uint64_t b = offset / s->block_size;
    uint64_t in_block = offset % s->block_size;
    int ret = 0;
    (void)opaque;
    (void)buf;

    ext->len = VD_MIN(max, s->block_size - in_block);
    pthread_mutex_lock(&s->lock);
    uint32_t entry = b < s->max_table_entries ? s->bat[b] : VHD_BAT_UNUSED;
    if (entry == VHD_BAT_UNUSED) {
        ext->kind = s->disk_type == VHD_DIFFERENCING ? VD_FMT_MAP_BACKING : VD_FMT_MAP_ZERO;
    } else if (s->disk_type == VHD_DYNAMIC) {
        ext->kind = VD_FMT_MAP_DATA;
        ext->host = vpc_block_data(s, (uint32_t)b) + in_block;
    } else {
        ret = vpc_load_bitmap(bs, (uint32_t)b);
        if (ret == 0) {
            bool set;
            uint64_t skew = in_block % VHD_SECTOR;
            uint64_t run = vpc_bit_run(s->bm, in_block / VHD_SECTOR,
                                       vd_div_round_up(ext->len + skew, VHD_SECTOR), &set);
            ext->len = VD_MIN(ext->len, run * VHD_SECTOR - skew);
            ext->kind = set ? VD_FMT_MAP_DATA : VD_FMT_MAP_BACKING;
            ext->host = vpc_block_data(s, (uint32_t)b) + in_block;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int vpc_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    vpc_state *s = bs->opaque;
    (void)flags;

    if (s->disk_type == VHD_FIXED) {
        return vd_node_pread(bs->file, offset, len, buf, 0);
    }
    return vd_fmt_read(bs, offset, len, buf, vpc_map, NULL);
}

/* Lock held.  Append a new block for BAT index b; returns 0 or -errno. */
static int vpc_alloc_block(vd_node *bs, uint32_t b)
{
    vpc_state *s = bs->opaque;
    uint64_t start = s->free_data_block_offset;
    uint64_t new_end = start + s->bitmap_size + s->block_size;
    int ret;

    if (start / VHD_SECTOR > 0xfffffffeu) {
        return -EFBIG;
    }
    uint8_t *bm = vd_malloc(s->bitmap_size);
    if (!bm) {
        return -ENOMEM;
    }
    /* dynamic: every sector present (QEMU does the same); differencing:
     * every sector still in the parent */
    memset(bm, s->disk_type == VHD_DIFFERENCING ? 0 : 0xff, s->bitmap_size);
    vd_node_event(bs->file, VD_EV_CLUSTER_ALLOC);
    ret = vd_node_pwrite(bs->file, start, s->bitmap_size, bm, 0);
    free(bm);
    if (ret < 0) {
        return ret;
    }
    if (s->file_len > start + s->bitmap_size) {
        /* stale bytes (an old footer, trailing garbage) must read as zero */
        ret = vd_node_pwrite_zeroes(bs->file, start + s->bitmap_size,
                                    VD_MIN(s->block_size, s->file_len - start - s->bitmap_size),
                                    0);
        if (ret < 0) {
            return ret;
        }
    }
    /* the footer moves to the new end of the file */
    vd_node_event(bs->file, VD_EV_FOOTER_UPDATE);
    ret = vd_node_pwrite(bs->file, new_end, VHD_FOOTER_SIZE, s->footer, 0);
    if (ret < 0) {
        return ret;
    }
    uint8_t be[4];
    vd_st_be32(be, (uint32_t)(start / VHD_SECTOR));
    vd_node_event(bs->file, VD_EV_BAT_UPDATE);
    ret = vd_node_pwrite(bs->file, s->bat_offset + (uint64_t)b * 4, 4, be, 0);
    if (ret < 0) {
        return ret;
    }
    s->bat[b] = (uint32_t)(start / VHD_SECTOR);
    s->free_data_block_offset = new_end;
    s->file_len = VD_MAX(s->file_len, new_end + VHD_FOOTER_SIZE);
    if (s->disk_type == VHD_DYNAMIC) {
        s->bitmap_full[b / 8] |= (uint8_t)(1u << (b % 8));
    }
    return 0;
}

/* Lock held.  Make sure block b's bitmap says "all present" (dynamic). */
static int vpc_fill_bitmap(vd_node *bs, uint32_t b)
{
    vpc_state *s = bs->opaque;
    if (s->bitmap_full[b / 8] & (1u << (b % 8))) {
        return 0;
    }
    uint8_t *bm = vd_malloc(s->bitmap_size);
    if (!bm) {
        return -ENOMEM;
    }
    uint64_t off = (uint64_t)s->bat[b] * VHD_SECTOR;
    int ret = vd_node_pread(bs->file, off, s->bitmap_size, bm, 0);
    if (ret == 0) {
        bool full = true;
        for (uint32_t i = 0; i < s->bitmap_size && full; i++) {
            full = bm[i] == 0xff;
        }
        if (!full) {
            memset(bm, 0xff, s->bitmap_size);
            vd_node_event(bs->file, VD_EV_BLOCK_BITMAP_UPDATE);
            ret = vd_node_pwrite(bs->file, off, s->bitmap_size, bm, 0);
        }
    }
    free(bm);
    if (ret == 0) {
        s->bitmap_full[b / 8] |= (uint8_t)(1u << (b % 8));
    }
    return ret;
}

/* Lock held.  Differencing: mark sectors [first, first+count) present. */
static int vpc_set_bits(vd_node *bs, uint32_t b, uint64_t first, uint64_t count)
{
    vpc_state *s = bs->opaque;
    int ret = vpc_load_bitmap(bs, b);
    if (ret < 0) {
        return ret;
    }
    bool changed = false;
    for (uint64_t i = first; i < first + count; i++) {
        uint8_t bit = (uint8_t)(1u << (7 - i % 8));
        if (!(s->bm[i / 8] & bit)) {
            s->bm[i / 8] |= bit;
            changed = true;
        }
    }
    if (!changed) {
        return 0;
    }
    uint64_t lo = first / 8 / VHD_SECTOR * VHD_SECTOR;
    uint64_t hi = vd_div_round_up((first + count + 7) / 8, VHD_SECTOR) * VHD_SECTOR;
    hi = VD_MIN(hi, s->bitmap_size);
    vd_node_event(bs->file, VD_EV_BLOCK_BITMAP_UPDATE);
    ret =
        vd_node_pwrite(bs->file, (uint64_t)s->bat[b] * VHD_SECTOR + lo, hi - lo, s->bm + lo, 0);
    if (ret < 0) {
        s->bm_valid = false;
    }
    return ret;
}

static int vpc_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    vpc_state *s = bs->opaque;
    const uint8_t *p = buf;
    int ret = 0;
    (void)flags;

    if (s->disk_type == VHD_FIXED) {
        return vd_node_pwrite(bs->file, offset, len, buf, 0);
    }
    while (len > 0 && ret == 0) {
        uint64_t b = offset / s->block_size;
        uint64_t in_block = offset % s->block_size;
        uint64_t n = VD_MIN(len, s->block_size - in_block);
        if (b >= s->max_table_entries) {
            return -EIO;
        }
        pthread_mutex_lock(&s->lock);
        if (s->bat[b] == VHD_BAT_UNUSED) {
            ret = vpc_alloc_block(bs, (uint32_t)b);
        } else if (s->disk_type == VHD_DYNAMIC) {
            ret = vpc_fill_bitmap(bs, (uint32_t)b);
        }
        if (ret == 0 && s->disk_type == VHD_DIFFERENCING) {
            /* bitmap after data, both under the lock */
            vd_node_event(bs->file, VD_EV_WRITE_AIO);
            ret = vd_node_pwrite(bs->file, vpc_block_data(s, (uint32_t)b) + in_block, n, p, 0);
            if (ret == 0) {
                ret = vpc_set_bits(bs, (uint32_t)b, in_block / VHD_SECTOR, n / VHD_SECTOR);
            }
            pthread_mutex_unlock(&s->lock);
        } else {
            uint64_t host = ret == 0 ? vpc_block_data(s, (uint32_t)b) + in_block : 0;
            pthread_mutex_unlock(&s->lock);
            if (ret == 0) {
                vd_node_event(bs->file, VD_EV_WRITE_AIO);
                ret = vd_node_pwrite(bs->file, host, n, p, 0);
            }
        }
        offset += n;
        len -= n;
        p += n;
    }
    return ret;
}

static int vpc_flush(vd_node *bs)
{
    return vd_node_flush(bs->file);
}

static int vpc_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                            uint64_t *pnum, uint64_t *map, vd_node **file)
{
    vpc_state *s = bs->opaque;
    (void)want_zero;

    if (s->disk_type == VHD_FIXED) {
        *pnum = len;
        *map = offset;
        *file = bs->file;
        /* as QEMU: data, plus "zero" over holes of the file */
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID | VD_BLOCK_PROBE_ZERO;
    }
    pthread_mutex_lock(&s->lock);
    uint64_t b = offset / s->block_size;
    uint64_t in_block = offset % s->block_size;
    uint64_t n = VD_MIN(len, s->block_size - in_block);
    uint32_t entry = b < s->max_table_entries ? s->bat[b] : VHD_BAT_UNUSED;
    int ret;
    if (entry == VHD_BAT_UNUSED) {
        /* merge the following unallocated blocks */
        while (n < len) {
            uint64_t nb = (offset + n) / s->block_size;
            if (nb < s->max_table_entries && s->bat[nb] != VHD_BAT_UNUSED) {
                break;
            }
            n = VD_MIN(len, n + s->block_size);
        }
        /* QEMU answers "zero" for free blocks of a dynamic disk */
        ret = s->disk_type == VHD_DIFFERENCING ? 0 : VD_BLOCK_ZERO;
    } else if (s->disk_type == VHD_DIFFERENCING) {
        ret = vpc_load_bitmap(bs, (uint32_t)b);
        if (ret == 0) {
            bool set;
            uint64_t first = in_block / VHD_SECTOR;
            uint64_t max = vd_div_round_up(n + in_block % VHD_SECTOR, VHD_SECTOR);
            uint64_t run =
                vpc_bit_run(s->bm, first, max, &set) * VHD_SECTOR - in_block % VHD_SECTOR;
            n = VD_MIN(n, run);
            if (set) {
                *map = vpc_block_data(s, (uint32_t)b) + in_block;
                *file = bs->file;
                ret = VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
            }
        }
    } else {
        *map = vpc_block_data(s, (uint32_t)b) + in_block;
        *file = bs->file;
        ret = VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    }
    pthread_mutex_unlock(&s->lock);
    *pnum = n;
    return ret;
}

static int vpc_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    vpc_state *s = bs->opaque;
    (void)errp;
    info->cluster_size = s->disk_type == VHD_FIXED ? 0 : s->block_size;
    return 0;
}

static uint32_t vpc_cluster_size(vd_node *bs)
{
    vpc_state *s = bs->opaque;
    return s->disk_type == VHD_FIXED ? 0 : s->block_size;
}

static int vpc_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    static const char *const subformats[] = {"dynamic", "fixed", NULL};
    uint64_t total_size;
    bool force_size;
    int sub;
    int ret;

    ret = vd_opts_get_size(opts, "size", 0, &total_size, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vd_opts_get_enum(opts, "subformat", subformats, 0, &sub, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vd_opts_get_bool(opts, "force_size", false, &force_size, errp);
    if (ret < 0) {
        return ret;
    }
    if (total_size > VHD_MAX_SECTORS * VHD_SECTOR + VHD_SECTOR) {
        return vd_error_set(errp, EFBIG, "The image size is too large for file format 'vpc'");
    }
    total_size = vd_div_round_up(total_size, VHD_SECTOR) * VHD_SECTOR;

    uint16_t cyls = 0;
    uint8_t heads = 0, secs = 0;
    uint64_t total_sectors;
    if (force_size) {
        cyls = VHD_CHS_MAX_C;
        heads = VHD_CHS_MAX_H;
        secs = VHD_CHS_MAX_S;
    } else {
        /* round up to the next size a CHS geometry can express */
        total_sectors = VD_MIN(VHD_MAX_GEOMETRY, total_size / VHD_SECTOR);
        for (uint64_t i = 0; total_sectors > (uint64_t)cyls * heads * secs; i++) {
            vpc_calc_geometry(total_sectors + i, &cyls, &heads, &secs);
        }
    }
    if ((uint64_t)cyls * heads * secs == VHD_MAX_GEOMETRY) {
        total_sectors = total_size / VHD_SECTOR;
        if (total_sectors > VHD_MAX_SECTORS) {
            return vd_error_set(errp, EFBIG,
                                "The image size is too large for file format 'vpc'");
        }
    } else {
        total_sectors = (uint64_t)cyls * heads * secs;
        total_size = total_sectors * VHD_SECTOR;
    }

    uint8_t footer[VHD_FOOTER_SIZE];
    memset(footer, 0, sizeof(footer));
    memcpy(footer + F_COOKIE, "conectix", 8);
    vd_st_be32(footer + F_FEATURES, 2);
    vd_st_be32(footer + F_VERSION, 0x00010000);
    vd_st_be64(footer + F_DATA_OFFSET, sub == 0 ? VHD_FOOTER_SIZE : UINT64_MAX);
    vd_st_be32(footer + F_TIMESTAMP, (uint32_t)((uint64_t)time(NULL) - VHD_TIMESTAMP_BASE));
    memcpy(footer + F_CREATOR_APP, force_size ? "qem2" : "qemu", 4);
    vd_st_be16(footer + F_CREATOR_VER, 5);
    vd_st_be16(footer + F_CREATOR_VER + 2, 3);
    memcpy(footer + F_CREATOR_OS, "Wi2k", 4);
    vd_st_be64(footer + F_ORIG_SIZE, total_size);
    vd_st_be64(footer + F_CUR_SIZE, total_size);
    vd_st_be16(footer + F_CYLS, cyls);
    footer[F_HEADS] = heads;
    footer[F_SECS] = secs;
    vd_st_be32(footer + F_TYPE, sub == 0 ? VHD_DYNAMIC : VHD_FIXED);
    vd_uuid_generate(footer + F_UUID);
    vd_st_be32(footer + F_CHECKSUM, vpc_checksum(footer, sizeof(footer), F_CHECKSUM));

    vd_node *file;
    ret = vd_create_open_file(filename, opts, &file, errp);
    if (ret < 0) {
        return ret;
    }
    if (sub == 1) {
        /* fixed: the data, then the footer */
        ret = vd_node_truncate(file, total_size + VHD_FOOTER_SIZE, true, VD_PREALLOC_OFF, errp);
        if (ret == 0) {
            ret = vd_node_pwrite(file, total_size, VHD_FOOTER_SIZE, footer, 0);
        }
    } else {
        uint64_t entries = vd_div_round_up(total_sectors, VHD_DEFAULT_BLOCK / VHD_SECTOR);
        uint64_t bat_bytes = vd_div_round_up(entries * 4, VHD_SECTOR) * VHD_SECTOR;
        uint8_t dyn[VHD_DYN_SIZE];
        memset(dyn, 0, sizeof(dyn));
        memcpy(dyn + D_COOKIE, "cxsparse", 8);
        /* the specification says 0xFFFFFFFF, Microsoft's tools want all 64 bits */
        vd_st_be64(dyn + D_DATA_OFFSET, UINT64_MAX);
        vd_st_be64(dyn + D_TABLE_OFFSET, 3 * VHD_SECTOR);
        vd_st_be32(dyn + D_VERSION, 0x00010000);
        vd_st_be32(dyn + D_MAX_ENTRIES, (uint32_t)entries);
        vd_st_be32(dyn + D_BLOCK_SIZE, VHD_DEFAULT_BLOCK);
        vd_st_be32(dyn + D_CHECKSUM, vpc_checksum(dyn, sizeof(dyn), D_CHECKSUM));

        ret = vd_node_pwrite(file, 0, VHD_FOOTER_SIZE, footer, 0);
        if (ret == 0) {
            ret = vd_node_pwrite(file, VHD_FOOTER_SIZE, VHD_DYN_SIZE, dyn, 0);
        }
        uint8_t *bat = ret == 0 && bat_bytes ? vd_malloc(bat_bytes) : NULL;
        if (ret == 0 && bat_bytes) {
            if (!bat) {
                ret = -ENOMEM;
            } else {
                memset(bat, 0xff, bat_bytes);
                ret = vd_node_pwrite(file, 3 * VHD_SECTOR, bat_bytes, bat, 0);
            }
        }
        free(bat);
        if (ret == 0) {
            ret = vd_node_pwrite(file, 3 * VHD_SECTOR + bat_bytes, VHD_FOOTER_SIZE, footer, 0);
        }
    }
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Unable to create or write VHD header");
    }
    return vd_create_close_file(file, ret, "Could not flush the new image", errp);
}

const vd_driver vd_drv_vpc = {
    .name = "vpc",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(vpc_state),
    .create_opts = vpc_create_opts,
    .open_opts = vpc_open_opts,
    .supports_backing = true,
    .probe = vpc_probe,
    .open = vpc_open,
    .close = vpc_close,
    .create = vpc_create,
    .get_length = vpc_get_length,
    .pread = vpc_pread,
    .pwrite = vpc_pwrite,
    .flush = vpc_flush,
    .block_status = vpc_block_status,
    .get_info = vpc_get_info,
    .cluster_size = vpc_cluster_size,
};
