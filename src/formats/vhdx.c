/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vhdx: Hyper-V VHDX images, as Microsoft's [MS-VHDX] specification
 * describes them and QEMU 7.2 reads them: the file identifier ("vhdxfile"),
 * two 4 KiB headers with CRC-32C (the valid one with the higher sequence
 * number wins), the region table at 192 KiB (BAT and metadata regions), the
 * metadata table (file parameters, virtual disk size, logical and physical
 * sector size, page 83 data), and the BAT: one 64-bit entry per payload
 * block, with a sector bitmap entry after every chunk_ratio payload entries.
 * Payload blocks NOT_PRESENT, UNDEFINED, ZERO and UNMAPPED read as zeroes,
 * FULLY_PRESENT ones from the file.
 *
 * Read-only.  Not supported: writing and create (a read-write open is
 * refused), differencing images (a parent: refused at open, as QEMU 7.2
 * refuses them too), log replay: an image whose header carries a log GUID
 * (left by a writer that did not close it cleanly) is refused in every
 * mode, with the advice to replay the log with qemu-img check -r all.  The
 * second region table is not read (QEMU does not either).  There is no
 * block-status callback: QEMU 7.2 has none for vhdx, so map reports the
 * whole disk as data, as qemu-img does.
 *
 * Hostile input: bad signatures or CRCs, equal header sequence numbers,
 * versions other than 1, more than 2047 region or metadata entries,
 * regions or metadata items past the end of the file or their table,
 * overlapping regions, duplicate or unknown required entries, block sizes
 * that are not a power of two in 1..256 MiB, logical sector sizes other
 * than 512 (QEMU 7.2 refuses 4096 too), disk sizes of 0 or above 64 TiB, a
 * BAT region too small for the disk or above 512 MiB, and payload blocks
 * that start in the header area, overlap the log, BAT or metadata, or end
 * past the end of the file are refused at open.
 */
#include <stdlib.h>

#include "format-io.h"
#include "internal.h"

#define VHDX_MiB (1ull << 20)
#define VHDX_KiB (1ull << 10)
#define VHDX_HEADER1 (64 * VHDX_KiB)
#define VHDX_HEADER2 (128 * VHDX_KiB)
#define VHDX_HEADER_SIZE (4 * VHDX_KiB)
#define VHDX_REGION_TABLE (192 * VHDX_KiB)
#define VHDX_TABLE_SIZE (64 * VHDX_KiB)
#define VHDX_MAX_ENTRIES 2047u
#define VHDX_MAX_DISK (64ull << 40)
#define VHDX_MAX_BAT_BYTES (512ull << 20)
#define VHDX_HEADER_AREA VHDX_MiB

#define VHDX_SIG_FILE "vhdxfile"
#define VHDX_SIG_HEAD 0x64616568u /* "head" */
#define VHDX_SIG_REGI 0x69676572u /* "regi" */
#define VHDX_SIG_META "metadata"

/* BAT entry states (bits 0-2) */
enum {
    VHDX_PAYLOAD_NOT_PRESENT = 0,
    VHDX_PAYLOAD_UNDEFINED = 1,
    VHDX_PAYLOAD_ZERO = 2,
    VHDX_PAYLOAD_UNMAPPED = 3,
    VHDX_PAYLOAD_FULLY_PRESENT = 6,
    VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
};

/* GUIDs in their on-disk byte order (first three fields little-endian) */
typedef struct vhdx_guid {
    uint8_t b[16];
} vhdx_guid;

#define VHDX_GUID(d1, d2, d3, a, b, c, d, e, f, g, h)                                  \
    {{(d1) & 0xff, ((d1) >> 8) & 0xff, ((d1) >> 16) & 0xff, ((d1) >> 24) & 0xff,          \
      (d2) & 0xff, ((d2) >> 8) & 0xff, (d3) & 0xff, ((d3) >> 8) & 0xff, a, b, c, d, e, f, \
      g, h}}

static const vhdx_guid vhdx_bat_guid =
    VHDX_GUID(0x2dc27766u, 0xf623, 0x4200, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08);
static const vhdx_guid vhdx_meta_guid =
    VHDX_GUID(0x8b7ca206u, 0x4790, 0x4b9a, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e);
static const vhdx_guid vhdx_file_params_guid =
    VHDX_GUID(0xcaa16737u, 0xfa36, 0x4d43, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b);
static const vhdx_guid vhdx_disk_size_guid =
    VHDX_GUID(0x2fa54224u, 0xcd1b, 0x4876, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8);
static const vhdx_guid vhdx_page83_guid =
    VHDX_GUID(0xbeca12abu, 0xb2e6, 0x4523, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46);
static const vhdx_guid vhdx_logical_guid =
    VHDX_GUID(0x8141bf1du, 0xa96f, 0x4709, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f);
static const vhdx_guid vhdx_physical_guid =
    VHDX_GUID(0xcda348c7u, 0x445d, 0x4471, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56);
static const vhdx_guid vhdx_parent_guid =
    VHDX_GUID(0xa8d35f2du, 0xb30b, 0x454d, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c);

typedef struct vhdx_state {
    uint64_t *bat;
    uint64_t bat_entries;
    uint64_t disk_size;  /* bytes, as the metadata says */
    uint64_t block_size;
    uint64_t chunk_ratio; /* payload blocks per sector bitmap block */
    uint32_t logical_sector;
    uint32_t physical_sector;
} vhdx_state;

/* CRC-32C (Castagnoli, reflected 0x82f63b78), as the spec's checksums. */
static uint32_t vhdx_crc32c(const uint8_t *p, size_t len)
{
    static uint32_t table[256];
    static bool ready;
    if (!ready) {
        /* idempotent: two racing threads compute the same table */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) {
                c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
            }
            table[i] = c;
        }
        __atomic_store_n(&ready, true, __ATOMIC_RELEASE);
    }
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

/* The checksum at buf+at matches the CRC-32C of buf with that field zeroed. */
static bool vhdx_checksum_ok(uint8_t *buf, size_t len, size_t at)
{
    uint32_t want = vd_ld_le32(buf + at);
    vd_st_le32(buf + at, 0);
    uint32_t got = vhdx_crc32c(buf, len);
    vd_st_le32(buf + at, want);
    return want == got;
}

static bool vhdx_guid_eq(const uint8_t *p, const vhdx_guid *g)
{
    return !memcmp(p, g->b, 16);
}

static int vhdx_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len >= 8 && !memcmp(buf, VHDX_SIG_FILE, 8)) {
        return 100;
    }
    return 0;
}

static void vhdx_close(vd_node *bs)
{
    vhdx_state *s = bs->opaque;
    free(s->bat);
    s->bat = NULL;
}

/* Read and choose the current header; fills *log_guid_set. */
static int vhdx_read_headers(vd_node *bs, bool *log_guid_set, uint64_t *log_off,
                             uint64_t *log_len, vd_error **errp)
{
    uint8_t h[2][VHDX_HEADER_SIZE];
    bool valid[2];
    uint64_t seq[2];
    int ret;

    for (int i = 0; i < 2; i++) {
        ret = vd_node_pread(bs->file, i ? VHDX_HEADER2 : VHDX_HEADER1, VHDX_HEADER_SIZE, h[i],
                            0);
        if (ret < 0) {
            return vd_error_setg_errno(errp, ret, "Could not read the VHDX header %d", i + 1);
        }
        valid[i] = vd_ld_le32(h[i]) == VHDX_SIG_HEAD &&
                   vhdx_checksum_ok(h[i], VHDX_HEADER_SIZE, 4);
        seq[i] = vd_ld_le64(h[i] + 8);
    }
    int cur;
    if (valid[0] && valid[1]) {
        if (seq[0] == seq[1]) {
            return vd_error_set(errp, EINVAL,
                                "No valid VHDX header found (both headers have sequence "
                                "number %llu)",
                                (unsigned long long)seq[0]);
        }
        cur = seq[0] > seq[1] ? 0 : 1;
    } else if (valid[0] || valid[1]) {
        cur = valid[0] ? 0 : 1;
    } else {
        return vd_error_set(errp, EINVAL,
                            "No valid VHDX header found (bad signature or CRC-32C in both)");
    }
    uint16_t version = vd_ld_le16(h[cur] + 66);
    if (version != 1) {
        return vd_error_set(errp, ENOTSUP, "Unsupported VHDX version %u", version);
    }
    static const uint8_t zero[16];
    *log_guid_set = memcmp(h[cur] + 48, zero, 16) != 0;
    *log_len = vd_ld_le32(h[cur] + 68);
    *log_off = vd_ld_le64(h[cur] + 72);
    return 0;
}

typedef struct vhdx_region {
    uint64_t offset;
    uint64_t length;
} vhdx_region;

static bool vhdx_overlap(vhdx_region a, vhdx_region b)
{
    return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

static int vhdx_read_regions(vd_node *bs, uint64_t file_len, vhdx_region *bat,
                             vhdx_region *meta, vd_error **errp)
{
    uint8_t *t = vd_malloc(VHDX_TABLE_SIZE);
    bool have_bat = false, have_meta = false;
    int ret;

    if (!t) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the VHDX region table");
    }
    ret = vd_node_pread(bs->file, VHDX_REGION_TABLE, VHDX_TABLE_SIZE, t, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the VHDX region table");
        goto out;
    }
    if (vd_ld_le32(t) != VHDX_SIG_REGI || !vhdx_checksum_ok(t, VHDX_TABLE_SIZE, 4)) {
        ret = vd_error_set(errp, EINVAL, "VHDX region table has a bad signature or CRC-32C");
        goto out;
    }
    uint32_t count = vd_ld_le32(t + 8);
    if (count > VHDX_MAX_ENTRIES) {
        ret = vd_error_set(errp, EINVAL, "VHDX region table has %u entries (at most %u)",
                           count, VHDX_MAX_ENTRIES);
        goto out;
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = t + 16 + (size_t)i * 32;
        vhdx_region r = {vd_ld_le64(e + 16), vd_ld_le32(e + 24)};
        bool required = vd_ld_le32(e + 28) & 1;
        bool is_bat = vhdx_guid_eq(e, &vhdx_bat_guid);
        bool is_meta = vhdx_guid_eq(e, &vhdx_meta_guid);
        if (!is_bat && !is_meta) {
            if (required) {
                ret = vd_error_set(errp, ENOTSUP,
                                   "VHDX region table entry %u is an unknown required region",
                                   i);
                goto out;
            }
            continue;
        }
        if ((is_bat && have_bat) || (is_meta && have_meta)) {
            ret = vd_error_set(errp, EINVAL, "VHDX region table has a duplicate %s region",
                               is_bat ? "BAT" : "metadata");
            goto out;
        }
        if (r.offset < VHDX_HEADER_AREA || r.length == 0 || r.offset > file_len ||
            r.length > file_len - r.offset) {
            ret = vd_error_set(errp, EINVAL,
                               "VHDX %s region (offset %llu, length %llu) is outside the file "
                               "(%llu bytes)",
                               is_bat ? "BAT" : "metadata", (unsigned long long)r.offset,
                               (unsigned long long)r.length, (unsigned long long)file_len);
            goto out;
        }
        if (is_bat) {
            *bat = r;
            have_bat = true;
        } else {
            *meta = r;
            have_meta = true;
        }
    }
    if (!have_bat || !have_meta) {
        ret = vd_error_set(errp, EINVAL, "VHDX region table has no %s region",
                           have_bat ? "metadata" : "BAT");
        goto out;
    }
    if (vhdx_overlap(*bat, *meta)) {
        ret = vd_error_set(errp, EINVAL, "VHDX BAT and metadata regions overlap");
        goto out;
    }
    ret = 0;
out:
    free(t);
    return ret;
}

static int vhdx_read_metadata(vd_node *bs, vhdx_state *s, vhdx_region meta, vd_error **errp)
{
    enum { M_PARAMS = 1, M_SIZE = 2, M_PAGE83 = 4, M_LOGICAL = 8, M_PHYSICAL = 16 };
    uint8_t *t = vd_malloc(VHDX_TABLE_SIZE);
    unsigned present = 0;
    uint32_t block_size = 0, params_bits = 0;
    int ret;

    if (!t) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the VHDX metadata table");
    }
    if (meta.length < VHDX_TABLE_SIZE) {
        ret = vd_error_set(errp, EINVAL, "VHDX metadata region is too small (%llu bytes)",
                           (unsigned long long)meta.length);
        goto out;
    }
    ret = vd_node_pread(bs->file, meta.offset, VHDX_TABLE_SIZE, t, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the VHDX metadata table");
        goto out;
    }
    if (memcmp(t, VHDX_SIG_META, 8)) {
        ret = vd_error_set(errp, EINVAL, "VHDX metadata table has a bad signature");
        goto out;
    }
    uint16_t count = vd_ld_le16(t + 10);
    if (count > VHDX_MAX_ENTRIES) {
        ret = vd_error_set(errp, EINVAL, "VHDX metadata table has %u entries (at most %u)",
                           count, VHDX_MAX_ENTRIES);
        goto out;
    }
    for (unsigned i = 0; i < count; i++) {
        const uint8_t *e = t + 32 + (size_t)i * 32;
        uint32_t off = vd_ld_le32(e + 16);
        uint32_t len = vd_ld_le32(e + 20);
        bool required = (vd_ld_le32(e + 24) >> 2) & 1;
        static const struct {
            const vhdx_guid *guid;
            unsigned bit;
            uint32_t size;
            const char *name;
        } known[] = {
            {&vhdx_file_params_guid, M_PARAMS, 8, "file parameters"},
            {&vhdx_disk_size_guid, M_SIZE, 8, "virtual disk size"},
            {&vhdx_page83_guid, M_PAGE83, 16, "page 83 data"},
            {&vhdx_logical_guid, M_LOGICAL, 4, "logical sector size"},
            {&vhdx_physical_guid, M_PHYSICAL, 4, "physical sector size"},
        };
        if (vhdx_guid_eq(e, &vhdx_parent_guid)) {
            continue; /* checked through the has_parent bit below */
        }
        size_t k;
        for (k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
            if (vhdx_guid_eq(e, known[k].guid)) {
                break;
            }
        }
        if (k == sizeof(known) / sizeof(known[0])) {
            if (required) {
                ret = vd_error_set(errp, ENOTSUP,
                                   "VHDX metadata entry %u is an unknown required item", i);
                goto out;
            }
            continue;
        }
        if (present & known[k].bit) {
            ret = vd_error_set(errp, EINVAL, "VHDX metadata has a duplicate %s item",
                               known[k].name);
            goto out;
        }
        /* the length field is not checked: QEMU reads the item's size */
        (void)len;
        if (off < VHDX_TABLE_SIZE || off > meta.length ||
            known[k].size > meta.length - off) {
            ret = vd_error_set(errp, EINVAL,
                               "VHDX metadata item %s (offset %u, length %u) is outside the "
                               "metadata region",
                               known[k].name, off, len);
            goto out;
        }
        uint8_t v[16];
        ret = vd_node_pread(bs->file, meta.offset + off, known[k].size, v, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not read the VHDX %s", known[k].name);
            goto out;
        }
        switch (known[k].bit) {
        case M_PARAMS:
            block_size = vd_ld_le32(v);
            params_bits = vd_ld_le32(v + 4);
            break;
        case M_SIZE:
            s->disk_size = vd_ld_le64(v);
            break;
        case M_LOGICAL:
            s->logical_sector = vd_ld_le32(v);
            break;
        case M_PHYSICAL:
            s->physical_sector = vd_ld_le32(v);
            break;
        default:
            break;
        }
        present |= known[k].bit;
    }
    if (present != (M_PARAMS | M_SIZE | M_PAGE83 | M_LOGICAL | M_PHYSICAL)) {
        ret = vd_error_set(errp, ENOTSUP, "VHDX metadata lacks a required item");
        goto out;
    }
    if (params_bits & 2) {
        ret = vd_error_set(errp, ENOTSUP,
                           "VHDX differencing images (with a parent) are not supported");
        goto out;
    }
    if (block_size < VHDX_MiB || block_size > 256 * VHDX_MiB || !vd_is_pow2(block_size)) {
        ret = vd_error_set(errp, EINVAL,
                           "VHDX block size %u is invalid (a power of two, 1 to 256 MiB)",
                           block_size);
        goto out;
    }
    /* QEMU 7.2 opens only 512-byte logical sectors and does not check the
     * physical sector size (which only advises) */
    if (s->logical_sector != 512) {
        ret = vd_error_set(errp, ENOTSUP,
                           "VHDX logical sector size %u is not supported (only 512)",
                           s->logical_sector);
        goto out;
    }
    if (s->disk_size == 0 || s->disk_size > VHDX_MAX_DISK) {
        ret = vd_error_set(errp, EINVAL, "VHDX virtual disk size %llu is invalid",
                           (unsigned long long)s->disk_size);
        goto out;
    }
    s->block_size = block_size;
    /* 2^23 sectors per sector bitmap block */
    s->chunk_ratio = ((uint64_t)1 << 23) * s->logical_sector / block_size;
    ret = 0;
out:
    free(t);
    return ret;
}

static int vhdx_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    vhdx_state *s = bs->opaque;
    bool log_set = false;
    vhdx_region bat_r = {0, 0}, meta_r = {0, 0};
    uint8_t sig[8];
    int ret;
    (void)opts;

    if (!bs->read_only) {
        return vd_error_set(errp, EROFS,
                            "vdisk supports VHDX read-only: open the image read-only");
    }
    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        return vd_error_setg_errno(errp, (int)flen, "Could not get the file size");
    }
    uint64_t file_len = (uint64_t)flen;
    if (file_len < VHDX_HEADER_AREA) {
        return vd_error_set(errp, EINVAL,
                            "File too small for a VHDX header area (%llu bytes, at least 1 "
                            "MiB)",
                            (unsigned long long)file_len);
    }
    ret = vd_node_pread(bs->file, 0, 8, sig, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read the VHDX file identifier");
    }
    if (memcmp(sig, VHDX_SIG_FILE, 8)) {
        return vd_error_set(errp, EINVAL, "Image not in VHDX format");
    }
    uint64_t log_off = 0, log_len = 0;
    ret = vhdx_read_headers(bs, &log_set, &log_off, &log_len, errp);
    if (ret < 0) {
        return ret;
    }
    if (log_set) {
        return vd_error_set(errp, ENOTSUP,
                            "VHDX image '%s' has a log that may need to be replayed, which "
                            "vdisk does not do; replay it with: qemu-img check -r all '%s'",
                            bs->filename, bs->filename);
    }
    ret = vhdx_read_regions(bs, file_len, &bat_r, &meta_r, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vhdx_read_metadata(bs, s, meta_r, errp);
    if (ret < 0) {
        return ret;
    }

    uint64_t blocks = vd_div_round_up(s->disk_size, s->block_size);
    s->bat_entries = blocks + (blocks - 1) / s->chunk_ratio;
    if (s->bat_entries * 8 > bat_r.length) {
        return vd_error_set(errp, EINVAL,
                            "VHDX BAT region (%llu bytes) is too small for %llu entries",
                            (unsigned long long)bat_r.length,
                            (unsigned long long)s->bat_entries);
    }
    if (s->bat_entries * 8 > VHDX_MAX_BAT_BYTES) {
        return vd_error_set(errp, EFBIG, "VHDX BAT of %llu entries is too large",
                            (unsigned long long)s->bat_entries);
    }
    s->bat = vd_malloc(s->bat_entries * 8);
    if (!s->bat) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the VHDX BAT");
    }
    ret = vd_node_pread(bs->file, bat_r.offset, s->bat_entries * 8, s->bat, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the VHDX BAT");
        goto fail;
    }
    for (uint64_t b = 0; b < blocks; b++) {
        uint64_t i = b + b / s->chunk_ratio;
        uint64_t e = vd_ld_le64(&s->bat[i]);
        s->bat[i] = e;
        unsigned state = e & 7;
        uint64_t off = e & ~(VHDX_MiB - 1);
        uint64_t need = VD_MIN(s->block_size, s->disk_size - b * s->block_size);
        switch (state) {
        case VHDX_PAYLOAD_NOT_PRESENT:
        case VHDX_PAYLOAD_UNDEFINED:
        case VHDX_PAYLOAD_ZERO:
        case VHDX_PAYLOAD_UNMAPPED:
            break;
        case VHDX_PAYLOAD_FULLY_PRESENT:
            if (off < VHDX_HEADER_AREA || off > file_len || need > file_len - off ||
                vhdx_overlap((vhdx_region){off, s->block_size}, bat_r) ||
                vhdx_overlap((vhdx_region){off, s->block_size}, meta_r) ||
                vhdx_overlap((vhdx_region){off, s->block_size},
                             (vhdx_region){log_off, log_len})) {
                ret = vd_error_set(errp, EINVAL,
                                   "VHDX BAT entry %llu (block at %llu) points past the end "
                                   "of the file (%llu bytes) or into the header area, the "
                                   "log, the BAT or the metadata; the image is corrupt or "
                                   "truncated",
                                   (unsigned long long)i, (unsigned long long)off,
                                   (unsigned long long)file_len);
                goto fail;
            }
            break;
        case VHDX_PAYLOAD_PARTIALLY_PRESENT:
            ret = vd_error_set(errp, EINVAL,
                               "VHDX BAT entry %llu is partially present, which only a "
                               "differencing image may use",
                               (unsigned long long)i);
            goto fail;
        default:
            ret = vd_error_set(errp, EINVAL, "VHDX BAT entry %llu has invalid state %u",
                               (unsigned long long)i, state);
            goto fail;
        }
    }
    bs->request_alignment = 512;
    return 0;

fail:
    vhdx_close(bs);
    return ret;
}

static int64_t vhdx_get_length(vd_node *bs)
{
    vhdx_state *s = bs->opaque;
    /* QEMU 7.2 counts whole 512-byte sectors */
    return (int64_t)vd_align_down(s->disk_size, 512);
}

/* vd_fmt_read's map: the BAT never changes while open (read-only). */
static int vhdx_map(vd_node *bs, void *opaque, uint64_t offset, uint64_t max, void *buf,
                    vd_fmt_extent *ext)
{
    vhdx_state *s = bs->opaque;
    uint64_t b = offset / s->block_size;
    uint64_t in_block = offset % s->block_size;
    (void)opaque;
    (void)buf;

    ext->len = VD_MIN(max, s->block_size - in_block);
    uint64_t i = b + b / s->chunk_ratio;
    uint64_t e = i < s->bat_entries ? s->bat[i] : 0;
    if ((e & 7) == VHDX_PAYLOAD_FULLY_PRESENT) {
        ext->kind = VD_FMT_MAP_DATA;
        ext->host = (e & ~(VHDX_MiB - 1)) + in_block;
    } else {
        ext->kind = VD_FMT_MAP_ZERO;
    }
    return 0;
}

static int vhdx_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    (void)flags;
    return vd_fmt_read(bs, offset, len, buf, vhdx_map, NULL);
}

static int vhdx_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    vhdx_state *s = bs->opaque;
    (void)errp;
    info->cluster_size = s->block_size;
    return 0;
}

static uint32_t vhdx_cluster_size(vd_node *bs)
{
    vhdx_state *s = bs->opaque;
    return (uint32_t)s->block_size;
}

const vd_driver vd_drv_vhdx = {
    .name = "vhdx",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(vhdx_state),
    .probe = vhdx_probe,
    .open = vhdx_open,
    .close = vhdx_close,
    .get_length = vhdx_get_length,
    .pread = vhdx_pread,
    .get_info = vhdx_get_info,
    .cluster_size = vhdx_cluster_size,
};
