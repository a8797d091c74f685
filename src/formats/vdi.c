/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdi: VirtualBox Virtual Disk Image, version 1.1, as VirtualBox's
 * VDICore.h lays it out and as QEMU 7.2 reads and writes it: a 512-byte
 * little-endian header, a block map of 32-bit entries (block index in the
 * data area, 0xffffffff free, 0xfffffffe zero/discarded) and 1 MiB data
 * blocks appended in allocation order.
 *
 * Supported: dynamic and static (static=on, the whole data area
 * preallocated) images, allocation on write, discard of whole blocks (the
 * last block moves into the hole so the data area stays dense, as VirtualBox
 * compacts), block status, check (no repair, exit codes as qemu-img).
 *
 * Not supported (refused at open, as QEMU does): versions other than 1.1,
 * block sizes other than 1 MiB, sector sizes other than 512, differencing
 * images (non-null parent or link UUID), more than 0x1fffff80 blocks
 * (512 TiB less 128 MiB, QEMU's limit).  No resize.
 */
#include <pthread.h>
#include <stdlib.h>

#include "format-io.h"
#include "internal.h"

#define VDI_TEXT "<<< QEMU VM Virtual Disk Image >>>\n"
#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_TYPE_DYNAMIC 1u
#define VDI_TYPE_STATIC 2u
#define VDI_UNALLOCATED 0xffffffffu
#define VDI_DISCARDED 0xfffffffeu
#define VDI_IS_ALLOCATED(x) ((x) < VDI_DISCARDED)
#define VDI_SECTOR 512u
#define VDI_BLOCK_SIZE (1u << 20)
/* QEMU's limit: the map, rounded up to a sector, must fit in an int. */
#define VDI_BLOCKS_MAX ((0x80000000u - VDI_SECTOR) / 4)
#define VDI_DISK_SIZE_MAX ((uint64_t)VDI_BLOCKS_MAX * VDI_BLOCK_SIZE)
#define VDI_HEADER_BYTES 512u
/* The in-memory block map: leaves of 1024 entries, made on first use. */
#define VDI_LEAF_SHIFT 10u
#define VDI_LEAF_ENTRIES (1u << VDI_LEAF_SHIFT)
/* A map the file holds only in part is written out whole before the first
 * allocation when it is at most this big; a larger one (a header claiming
 * up to 2 GiB of map for a small file) only sector by sector. */
#define VDI_FILL_MAX (64u << 20)

/* Header field offsets (all little-endian). */
enum {
    VDI_H_SIGNATURE = 0x40,
    VDI_H_VERSION = 0x44,
    VDI_H_HEADER_SIZE = 0x48,
    VDI_H_IMAGE_TYPE = 0x4c,
    VDI_H_OFFSET_BMAP = 0x154,
    VDI_H_OFFSET_DATA = 0x158,
    VDI_H_SECTOR_SIZE = 0x168,
    VDI_H_DISK_SIZE = 0x170,
    VDI_H_BLOCK_SIZE = 0x178,
    VDI_H_BLOCKS_IN_IMAGE = 0x180,
    VDI_H_BLOCKS_ALLOCATED = 0x184,
    VDI_H_UUID_IMAGE = 0x188,
    VDI_H_UUID_LAST_SNAP = 0x198,
    VDI_H_UUID_LINK = 0x1a8,
    VDI_H_UUID_PARENT = 0x1b8,
};

typedef struct vdi_state {
    /* Readers and in-place writers share it; allocation and discard take it
     * exclusively, so a block never moves under a running request. */
    pthread_rwlock_t lock;
    uint8_t header[VDI_HEADER_BYTES]; /* as on disk, kept up to date */
    /* The block map in host order, as leaves of VDI_LEAF_ENTRIES entries:
     * a NULL leaf, and every entry at or past nleaves * VDI_LEAF_ENTRIES,
     * is unallocated.  Only leaves with an entry that says something
     * exist, and the leaf table covers only the entries the file holds
     * (grown when a write allocates past it), so a header claiming 2^29
     * blocks costs neither memory nor time unless the file backs it. */
    uint32_t **leaves;
    uint32_t nleaves;
    uint64_t bmap_in_file; /* bytes of the map the file holds (less if truncated) */
    uint32_t blocks_in_image;
    uint32_t blocks_allocated;
    uint32_t block_size;
    uint32_t image_type;
    uint64_t offset_bmap;
    uint64_t offset_data;
    uint64_t disk_size;
    bool lock_ready;
} vdi_state;

static inline uint32_t bm_get(const vdi_state *s, uint64_t i)
{
    uint64_t l = i >> VDI_LEAF_SHIFT;
    if (l >= s->nleaves || !s->leaves[l]) {
        return VDI_UNALLOCATED;
    }
    return s->leaves[l][i & (VDI_LEAF_ENTRIES - 1)];
}

/* Set entry i, making its leaf (and growing the leaf table) when needed. */
static int bm_set(vdi_state *s, uint64_t i, uint32_t entry)
{
    uint64_t l = i >> VDI_LEAF_SHIFT;
    if (l >= s->nleaves || !s->leaves[l]) {
        if (entry == VDI_UNALLOCATED) {
            return 0;
        }
        if (i >= s->blocks_in_image) {
            return -EIO;
        }
    }
    if (l >= s->nleaves) {
        /* doubling, up to the leaves the header's block count needs */
        uint64_t most = vd_div_round_up(s->blocks_in_image, VDI_LEAF_ENTRIES);
        uint64_t n = VD_MIN(VD_MAX(l + 1, (uint64_t)s->nleaves * 2), most);
        uint32_t **t = realloc(s->leaves, n * sizeof(*t));
        if (!t) {
            return -ENOMEM;
        }
        memset(t + s->nleaves, 0, (n - s->nleaves) * sizeof(*t));
        s->leaves = t;
        s->nleaves = (uint32_t)n;
    }
    if (!s->leaves[l]) {
        uint32_t *leaf = vd_malloc(VDI_LEAF_ENTRIES * sizeof(*leaf));
        if (!leaf) {
            return -ENOMEM;
        }
        memset(leaf, 0xff, VDI_LEAF_ENTRIES * sizeof(*leaf));
        s->leaves[l] = leaf;
    }
    s->leaves[l][i & (VDI_LEAF_ENTRIES - 1)] = entry;
    return 0;
}

/*
 * The first entry at or after i that may be allocated, or blocks_in_image:
 * missing leaves and everything past the leaf table are skipped in one
 * step, so walks over the map cost what the file holds, not what the
 * header claims.
 */
static uint64_t bm_skip(const vdi_state *s, uint64_t i)
{
    while (i < s->blocks_in_image) {
        uint64_t l = i >> VDI_LEAF_SHIFT;
        if (l >= s->nleaves) {
            break;
        }
        if (s->leaves[l]) {
            return i;
        }
        i = (l + 1) << VDI_LEAF_SHIFT;
    }
    return s->blocks_in_image;
}

static const vd_opt_desc vdi_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"static", VD_OPT_BOOL, "VDI static (pre-allocated) image", "off"},
    {NULL, 0, NULL, NULL},
};

static int vdi_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len < VDI_HEADER_BYTES) {
        return 0;
    }
    return vd_ld_le32(buf + VDI_H_SIGNATURE) == VDI_SIGNATURE ? 100 : 0;
}

static bool vdi_uuid_is_null(const uint8_t *u)
{
    return vd_buffer_is_zero(u, 16);
}

/*
 * A random (version 4) UUID in VDI's byte order: the first three fields
 * are stored little-endian.
 */
static void vdi_uuid_generate(uint8_t *out)
{
    uint8_t u[16];
    vd_uuid_generate(u);
    out[0] = u[3];
    out[1] = u[2];
    out[2] = u[1];
    out[3] = u[0];
    out[4] = u[5];
    out[5] = u[4];
    out[6] = u[7];
    out[7] = u[6];
    memcpy(out + 8, u + 8, 8);
}

/* Bytes of the block map as stored (entries rounded up to whole sectors). */
static uint64_t vdi_bmap_bytes(uint32_t blocks)
{
    return vd_div_round_up((uint64_t)blocks * 4, VDI_SECTOR) * VDI_SECTOR;
}

static int vdi_write_header(vdi_state *s, vd_node *bs)
{
    vd_st_le32(s->header + VDI_H_BLOCKS_ALLOCATED, s->blocks_allocated);
    vd_node_event(bs->file, VD_EV_HEADER_UPDATE);
    return vd_node_pwrite(bs->file, 0, VDI_HEADER_BYTES, s->header, 0);
}

/*
 * Write the sectors of the block map holding entries [first, last].  A map
 * that the file holds only in part (truncated) is written out whole first
 * when it is at most VDI_FILL_MAX, so that no hole in the file reads as
 * entries pointing at block 0 in QEMU.  A larger one (a hostile header: up
 * to 2 GiB of map) gets only the sectors written to; the holes left read
 * as all-zero sectors, which vdisk reads as unallocated (vdi_load_bmap).
 */
static int vdi_write_bmap(vdi_state *s, vd_node *bs, uint32_t first, uint32_t last)
{
    uint64_t start = (uint64_t)first * 4 / VDI_SECTOR * VDI_SECTOR;
    uint64_t end = vd_div_round_up(((uint64_t)last + 1) * 4, VDI_SECTOR) * VDI_SECTOR;
    uint64_t whole = vdi_bmap_bytes(s->blocks_in_image);
    if (s->bmap_in_file < whole && whole <= VDI_FILL_MAX) {
        /* the data area follows the map: the file will grow past it */
        start = VD_MIN(start, s->bmap_in_file / VDI_SECTOR * VDI_SECTOR);
        end = whole;
    }
    const uint64_t chunk = 1u << 20;
    uint8_t *buf = vd_malloc(VD_MIN(chunk, end - start));
    if (!buf) {
        return -ENOMEM;
    }
    vd_node_event(bs->file, VD_EV_BAT_UPDATE);
    int ret = 0;
    for (uint64_t off = start; off < end && ret == 0; off += chunk) {
        uint64_t len = VD_MIN(chunk, end - off);
        memset(buf, 0, len);
        for (uint64_t i = off / 4; i < (off + len) / 4 && i < s->blocks_in_image; i++) {
            vd_st_le32(buf + (i * 4 - off), bm_get(s, (uint32_t)i));
        }
        ret = vd_node_pwrite(bs->file, s->offset_bmap + off, len, buf, 0);
    }
    free(buf);
    if (ret == 0 && end > s->bmap_in_file) {
        s->bmap_in_file = VD_MIN(end, whole);
    }
    return ret;
}

/*
 * After allocations: the block count (header) and map entries [first,
 * last].  When the map follows the header (every image vdisk and QEMU
 * create) and the range is near, both go in one write, so that a failed
 * write leaves the old, consistent pair on disk instead of a count that
 * disagrees with the map (which qemu-img check reports as corruption).
 */
#define VDI_ONE_WRITE_MAX (1u << 20)
static int vdi_write_alloc_metadata(vdi_state *s, vd_node *bs, uint32_t first, uint32_t last)
{
    uint64_t end = vd_div_round_up(((uint64_t)last + 1) * 4, VDI_SECTOR) * VDI_SECTOR;
    if (s->offset_bmap != VDI_HEADER_BYTES || end > VDI_ONE_WRITE_MAX || end > s->bmap_in_file) {
        int ret = vdi_write_header(s, bs);
        return ret < 0 ? ret : vdi_write_bmap(s, bs, first, last);
    }
    (void)first;
    uint8_t *buf = vd_malloc(VDI_HEADER_BYTES + end);
    if (!buf) {
        return -ENOMEM;
    }
    vd_st_le32(s->header + VDI_H_BLOCKS_ALLOCATED, s->blocks_allocated);
    memcpy(buf, s->header, VDI_HEADER_BYTES);
    memset(buf + VDI_HEADER_BYTES, 0, end);
    for (uint64_t i = 0; i < end / 4 && i < s->blocks_in_image; i++) {
        vd_st_le32(buf + VDI_HEADER_BYTES + i * 4, bm_get(s, i));
    }
    vd_node_event(bs->file, VD_EV_HEADER_UPDATE);
    vd_node_event(bs->file, VD_EV_BAT_UPDATE);
    int ret = vd_node_pwrite(bs->file, 0, VDI_HEADER_BYTES + end, buf, 0);
    free(buf);
    return ret;
}

/*
 * The byte of the map where its last sector starts when that sector holds a
 * single entry (which may validly be 0, pointing at data block 0), else
 * UINT64_MAX.
 */
static uint64_t vdi_lone_sector(const vdi_state *s)
{
    uint32_t per = VDI_SECTOR / 4;
    if (s->blocks_in_image % per != 1) {
        return UINT64_MAX;
    }
    return (uint64_t)(s->blocks_in_image - 1) * 4;
}

/*
 * Store the entries of a map chunk read from byte `pos` of the map
 * (sector-aligned).  A sector whose entries are all zero reads as
 * unallocated: of two or more entries, at most one could validly point at
 * data block 0, and zeroes are what a hole in the file reads as (a map the
 * file does not reach also reads as unallocated).  A lone entry in the last
 * sector is taken as it is.
 */
static int vdi_load_chunk(vdi_state *s, uint64_t pos, const uint8_t *buf, uint64_t n)
{
    for (uint64_t sec = 0; sec < n; sec += VDI_SECTOR) {
        uint64_t len = VD_MIN(VDI_SECTOR, n - sec);
        if (pos + sec != vdi_lone_sector(s) && vd_buffer_is_zero(buf + sec, len)) {
            continue;
        }
        for (uint64_t j = 0; j + 4 <= len; j += 4) {
            uint64_t i = (pos + sec + j) / 4;
            uint32_t e = vd_ld_le32(buf + sec + j);
            if (i >= s->blocks_in_image) {
                return 0;
            }
            if (e != VDI_UNALLOCATED) {
                int ret = bm_set(s, i, e);
                if (ret < 0) {
                    return ret;
                }
            }
        }
    }
    return 0;
}

/*
 * Reads the block map: only the part the file holds, skipping its holes
 * (and, through vdi_load_chunk, sectors of zeroes), and keeping leaves only
 * for entries that say something, so that time and memory follow the file,
 * not the header's block count.  A map that extends past the end of the file
 * (a truncated image) reads as unallocated there; QEMU reads zeroes, which
 * would alias every such block to data block 0.
 */
static int vdi_load_bmap(vdi_state *s, vd_node *bs, uint64_t file_len, vd_error **errp)
{
    uint64_t whole = vdi_bmap_bytes(s->blocks_in_image);
    uint64_t in_file = file_len > s->offset_bmap ? file_len - s->offset_bmap : 0;
    in_file = VD_MIN(in_file, whole);
    s->bmap_in_file = in_file;
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = NULL;
    uint64_t data_end = 0; /* the file holds data (no hole) up to here */
    int ret = 0;
    for (uint64_t pos = 0; pos < in_file;) {
        if (pos >= data_end) {
            uint64_t pnum = 0, map = 0;
            vd_node *file = NULL;
            int st = vd_node_block_status(bs->file, true, s->offset_bmap + pos, in_file - pos,
                                          &pnum, &map, &file);
            if (st < 0 || pnum == 0) {
                /* no answer: read everything */
                data_end = in_file;
            } else if (!(st & VD_BLOCK_DATA) && (st & VD_BLOCK_ZERO)) {
                /* a hole: skip its whole sectors (but a lone last entry) */
                uint64_t skip = (pos + pnum) / VDI_SECTOR * VDI_SECTOR;
                if (pos <= vdi_lone_sector(s)) {
                    skip = VD_MIN(skip, vdi_lone_sector(s));
                }
                if (skip > pos) {
                    pos = skip;
                    continue;
                }
                data_end = pos + VDI_SECTOR;
            } else {
                data_end = pos + pnum;
            }
        }
        if (!buf) {
            buf = vd_malloc(CHUNK);
            if (!buf) {
                return vd_error_set(errp, ENOMEM, "Could not allocate the VDI block map");
            }
        }
        uint64_t n = vd_div_round_up(data_end - pos, VDI_SECTOR) * VDI_SECTOR;
        n = VD_MIN(VD_MIN(n, (uint64_t)CHUNK), in_file - pos);
        ret = vd_node_pread(bs->file, s->offset_bmap + pos, n, buf, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not read the VDI block map");
            break;
        }
        ret = vdi_load_chunk(s, pos, buf, n);
        if (ret < 0) {
            vd_error_set(errp, -ret, "Could not allocate the VDI block map");
            break;
        }
        pos += n;
    }
    free(buf);
    return ret < 0 ? ret : 0;
}

static void vdi_close(vd_node *bs)
{
    vdi_state *s = bs->opaque;
    for (uint32_t l = 0; l < s->nleaves; l++) {
        free(s->leaves[l]);
    }
    free(s->leaves);
    s->leaves = NULL;
    s->nleaves = 0;
    if (s->lock_ready) {
        pthread_rwlock_destroy(&s->lock);
        s->lock_ready = false;
    }
}

static int vdi_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    vdi_state *s = bs->opaque;
    uint8_t *h = s->header;
    int ret;
    (void)opts;

    pthread_rwlock_init(&s->lock, NULL);
    s->lock_ready = true;
    ret = vd_node_pread(bs->file, 0, VDI_HEADER_BYTES, h, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read VDI header");
    }
    uint32_t signature = vd_ld_le32(h + VDI_H_SIGNATURE);
    uint32_t version = vd_ld_le32(h + VDI_H_VERSION);
    uint64_t disk_size = vd_ld_le64(h + VDI_H_DISK_SIZE);
    uint32_t offset_bmap = vd_ld_le32(h + VDI_H_OFFSET_BMAP);
    uint32_t offset_data = vd_ld_le32(h + VDI_H_OFFSET_DATA);
    uint32_t sector_size = vd_ld_le32(h + VDI_H_SECTOR_SIZE);
    uint32_t block_size = vd_ld_le32(h + VDI_H_BLOCK_SIZE);
    uint32_t blocks = vd_ld_le32(h + VDI_H_BLOCKS_IN_IMAGE);
    uint32_t allocated = vd_ld_le32(h + VDI_H_BLOCKS_ALLOCATED);

    if (signature != VDI_SIGNATURE) {
        ret = vd_error_set(errp, EINVAL, "Image not in VDI format (bad signature %08x)",
                           signature);
        goto fail;
    }
    if (version != VDI_VERSION_1_1) {
        ret = vd_error_set(errp, ENOTSUP, "unsupported VDI image (version %u.%u)",
                           version >> 16, version & 0xffff);
        goto fail;
    }
    if (disk_size > VDI_DISK_SIZE_MAX) {
        ret =
            vd_error_set(errp, ENOTSUP,
                         "Unsupported VDI image size (size is 0x%llx, max supported is "
                         "0x%llx)",
                         (unsigned long long)disk_size, (unsigned long long)VDI_DISK_SIZE_MAX);
        goto fail;
    }
    /* VBoxManage convertfromraw writes odd sizes: round up like QEMU. */
    disk_size = vd_div_round_up(disk_size, VDI_SECTOR) * VDI_SECTOR;
    if (offset_bmap % VDI_SECTOR) {
        ret = vd_error_set(errp, ENOTSUP,
                           "unsupported VDI image (unaligned block map offset 0x%x)",
                           offset_bmap);
        goto fail;
    }
    if (offset_data % VDI_SECTOR) {
        ret = vd_error_set(errp, ENOTSUP, "unsupported VDI image (unaligned data offset 0x%x)",
                           offset_data);
        goto fail;
    }
    if (sector_size != VDI_SECTOR) {
        ret = vd_error_set(errp, ENOTSUP, "unsupported VDI image (sector size %u is not %u)",
                           sector_size, VDI_SECTOR);
        goto fail;
    }
    if (block_size != VDI_BLOCK_SIZE) {
        ret = vd_error_set(errp, ENOTSUP, "unsupported VDI image (block size %u is not %u)",
                           block_size, VDI_BLOCK_SIZE);
        goto fail;
    }
    if (disk_size > (uint64_t)blocks * block_size) {
        ret = vd_error_set(errp, ENOTSUP,
                           "unsupported VDI image (disk size %llu, image bitmap has room "
                           "for %llu)",
                           (unsigned long long)disk_size,
                           (unsigned long long)blocks * block_size);
        goto fail;
    }
    if (!vdi_uuid_is_null(h + VDI_H_UUID_LINK)) {
        ret = vd_error_set(errp, ENOTSUP, "unsupported VDI image (non-NULL link UUID)");
        goto fail;
    }
    if (!vdi_uuid_is_null(h + VDI_H_UUID_PARENT)) {
        ret = vd_error_set(errp, ENOTSUP, "unsupported VDI image (non-NULL parent UUID)");
        goto fail;
    }
    if (blocks > VDI_BLOCKS_MAX) {
        ret =
            vd_error_set(errp, ENOTSUP, "unsupported VDI image (too many blocks %u, max is %u)",
                         blocks, VDI_BLOCKS_MAX);
        goto fail;
    }
    int64_t file_len = vd_node_get_length(bs->file);
    if (file_len < 0) {
        ret = vd_error_setg_errno(errp, (int)file_len, "Could not get the file size");
        goto fail;
    }

    s->blocks_in_image = blocks;
    s->blocks_allocated = allocated;
    s->block_size = block_size;
    s->offset_bmap = offset_bmap;
    s->offset_data = offset_data;
    s->disk_size = disk_size;
    s->image_type = vd_ld_le32(h + VDI_H_IMAGE_TYPE);

    ret = vdi_load_bmap(s, bs, (uint64_t)file_len, errp);
    if (ret < 0) {
        goto fail;
    }

    bs->has_zero_init = true;
    bs->request_alignment = 1;
    return 0;

fail:
    vdi_close(bs);
    return ret;
}

static int64_t vdi_get_length(vd_node *bs)
{
    vdi_state *s = bs->opaque;
    return (int64_t)s->disk_size;
}

static uint64_t vdi_data_offset(const vdi_state *s, uint32_t entry, uint64_t in_block)
{
    return s->offset_data + (uint64_t)entry * s->block_size + in_block;
}

/* vd_fmt_read's map, read lock held: one block, data or zeroes. */
static int vdi_map(vd_node *bs, void *opaque, uint64_t offset, uint64_t max, void *buf,
                   vd_fmt_extent *ext)
{
    vdi_state *s = bs->opaque;
    uint64_t block = offset / s->block_size;
    uint64_t in_block = offset % s->block_size;
    uint32_t entry = block < s->blocks_in_image ? bm_get(s, block) : VDI_UNALLOCATED;
    (void)opaque;
    (void)buf;

    ext->len = VD_MIN(max, s->block_size - in_block);
    if (VDI_IS_ALLOCATED(entry)) {
        ext->kind = VD_FMT_MAP_DATA;
        ext->host = vdi_data_offset(s, entry, in_block);
    } else {
        ext->kind = VD_FMT_MAP_ZERO;
    }
    return 0;
}

static int vdi_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    vdi_state *s = bs->opaque;
    (void)flags;

    /* held throughout: discard moves blocks */
    pthread_rwlock_rdlock(&s->lock);
    int ret = vd_fmt_read(bs, offset, len, buf, vdi_map, NULL);
    pthread_rwlock_unlock(&s->lock);
    return ret;
}

/*
 * Allocate data block `block` (exclusive lock held) and write `n` bytes at
 * in_block into it; the rest of the block is zeroed on disk.
 */
static int vdi_alloc_write(vd_node *bs, uint64_t block, uint64_t in_block, uint64_t n,
                           const uint8_t *data)
{
    vdi_state *s = bs->opaque;
    int ret;

    if (s->blocks_allocated >= s->blocks_in_image) {
        /* a consistent image always has room; a corrupt count would make
         * the new block overlap another one */
        return -EIO;
    }
    uint32_t idx = s->blocks_allocated;
    uint64_t host = vdi_data_offset(s, idx, 0);
    uint64_t map_end = s->offset_bmap + vdi_bmap_bytes(s->blocks_in_image);
    if (host < VDI_HEADER_BYTES || (host < map_end && s->offset_bmap < host + s->block_size)) {
        /* a hostile header: the data area overlaps the header or the map */
        return -EIO;
    }
    /* the entry first: making its leaf may fail, and nothing is written yet */
    ret = bm_set(s, block, idx);
    if (ret < 0) {
        return ret;
    }
    /* the rest of the block must read as zeroes: the file may hold old
     * bytes there (a block moved away by discard, a longer file) */
    vd_node_event(bs->file, VD_EV_CLUSTER_ALLOC);
    ret = vd_fmt_cow_write(bs->file, host, s->block_size, block * s->block_size + in_block, n,
                           data, NULL, NULL);
    if (ret < 0) {
        bm_set(s, block, VDI_UNALLOCATED);
        return ret;
    }
    s->blocks_allocated++;
    return 0;
}

static int vdi_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    vdi_state *s = bs->opaque;
    const uint8_t *p = buf;
    int ret = 0;
    bool exclusive = false;
    uint32_t bmap_first = UINT32_MAX, bmap_last = 0;
    uint32_t old_allocated = 0;
    (void)flags;

    pthread_rwlock_rdlock(&s->lock);
    while (len > 0) {
        uint64_t block = offset / s->block_size;
        uint64_t in_block = offset % s->block_size;
        uint64_t n = VD_MIN(len, s->block_size - in_block);
        if (block >= s->blocks_in_image) {
            ret = -EIO;
            break;
        }
        if (!VDI_IS_ALLOCATED(bm_get(s, block)) && !exclusive) {
            /* upgrade: another writer may allocate it meanwhile, so look again */
            pthread_rwlock_unlock(&s->lock);
            pthread_rwlock_wrlock(&s->lock);
            exclusive = true;
            old_allocated = s->blocks_allocated;
        }
        uint32_t entry = bm_get(s, block);
        if (VDI_IS_ALLOCATED(entry)) {
            vd_node_event(bs->file, VD_EV_WRITE_AIO);
            ret = vd_node_pwrite(bs->file, vdi_data_offset(s, entry, in_block), n, p, 0);
        } else {
            ret = vdi_alloc_write(bs, block, in_block, n, p);
            if (ret == 0) {
                bmap_first = VD_MIN(bmap_first, (uint32_t)block);
                bmap_last = VD_MAX(bmap_last, (uint32_t)block);
            }
        }
        if (ret < 0) {
            break;
        }
        offset += n;
        len -= n;
        p += n;
    }
    if (bmap_first != UINT32_MAX) {
        /* Data first, then the map and the count, as QEMU orders them. */
        int r = vdi_write_alloc_metadata(s, bs, bmap_first, bmap_last);
        if (r < 0) {
            /* The request fails: forget its new blocks, so that the next
             * allocation reuses them and writes a count matching the map
             * on disk. */
            for (uint64_t i = bmap_first; i <= bmap_last; i++) {
                if (VDI_IS_ALLOCATED(bm_get(s, i)) && bm_get(s, i) >= old_allocated) {
                    /* the leaf exists: cannot fail */
                    bm_set(s, i, VDI_UNALLOCATED);
                }
            }
            s->blocks_allocated = old_allocated;
            vd_st_le32(s->header + VDI_H_BLOCKS_ALLOCATED, s->blocks_allocated);
        }
        if (ret == 0) {
            ret = r;
        }
    }
    pthread_rwlock_unlock(&s->lock);
    return ret;
}

/* The bmap index whose entry is data block idx, or UINT32_MAX. */
static uint32_t vdi_find_owner(const vdi_state *s, uint32_t idx)
{
    for (uint64_t i = bm_skip(s, 0); i < s->blocks_in_image; i = bm_skip(s, i + 1)) {
        if (bm_get(s, i) == idx) {
            return (uint32_t)i;
        }
    }
    return UINT32_MAX;
}

/*
 * Free data block of map entry `block`: the last data block moves into the
 * hole so that blocks_allocated keeps counting a dense data area, which is
 * what QEMU's allocation (append at index blocks_allocated) relies on.
 */
static int vdi_free_block(vd_node *bs, uint32_t block, uint8_t *tmp)
{
    vdi_state *s = bs->opaque;
    uint32_t idx = bm_get(s, block);
    uint32_t last = s->blocks_allocated - 1;
    int ret;

    bm_set(s, block, VDI_UNALLOCATED);
    ret = vdi_write_bmap(s, bs, block, block);
    if (ret < 0) {
        return ret;
    }
    if (idx != last) {
        uint32_t owner = vdi_find_owner(s, last);
        if (owner != UINT32_MAX) {
            ret = vd_node_pread(bs->file, vdi_data_offset(s, last, 0), s->block_size, tmp, 0);
            if (ret == 0) {
                ret =
                    vd_node_pwrite(bs->file, vdi_data_offset(s, idx, 0), s->block_size, tmp, 0);
            }
            if (ret < 0) {
                return ret;
            }
            bm_set(s, owner, idx); /* allocated, so its leaf exists */
            ret = vdi_write_bmap(s, bs, owner, owner);
            if (ret < 0) {
                return ret;
            }
        }
    }
    s->blocks_allocated = last;
    return vdi_write_header(s, bs);
}

static int vdi_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    vdi_state *s = bs->opaque;
    int ret = 0;
    bool freed = false;

    if (s->image_type == VDI_TYPE_STATIC) {
        /* the data area of a static image stays preallocated */
        return 0;
    }
    uint64_t first, end;
    if (vd_align_up_overflow(offset, s->block_size, &first)) {
        return 0;
    }
    end = vd_align_down(offset + len, s->block_size);
    /* the last block may be partial: discarding up to the end covers it */
    if (offset + len >= s->disk_size) {
        end = (uint64_t)s->blocks_in_image * s->block_size;
    }
    if (first >= end) {
        return 0;
    }
    uint8_t *tmp = vd_malloc(s->block_size);
    if (!tmp) {
        return -ENOMEM;
    }
    pthread_rwlock_wrlock(&s->lock);
    for (uint64_t b = bm_skip(s, first / s->block_size); b < end / s->block_size;
         b = bm_skip(s, b + 1)) {
        if (!VDI_IS_ALLOCATED(bm_get(s, b)) || s->blocks_allocated == 0) {
            continue;
        }
        ret = vdi_free_block(bs, (uint32_t)b, tmp);
        if (ret < 0) {
            break;
        }
        freed = true;
    }
    if (freed && ret == 0) {
        uint64_t data_end = vdi_data_offset(s, s->blocks_allocated, 0);
        int64_t file_len = vd_node_get_length(bs->file);
        if (file_len > (int64_t)data_end) {
            vd_error *err = NULL;
            /* shrinking the file is best effort: the image is consistent either way */
            vd_node_truncate(bs->file, data_end, false, VD_PREALLOC_OFF, &err);
            vd_error_free(err);
        }
    }
    pthread_rwlock_unlock(&s->lock);
    free(tmp);
    return ret;
}

static int vdi_flush(vd_node *bs)
{
    return vd_node_flush(bs->file);
}

static int vdi_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                            uint64_t *pnum, uint64_t *map, vd_node **file)
{
    vdi_state *s = bs->opaque;
    (void)want_zero;

    pthread_rwlock_rdlock(&s->lock);
    uint64_t block = offset / s->block_size;
    uint64_t in_block = offset % s->block_size;
    uint32_t entry = block < s->blocks_in_image ? bm_get(s, block) : VDI_UNALLOCATED;
    bool alloc = VDI_IS_ALLOCATED(entry);
    uint64_t n = VD_MIN(len, s->block_size - in_block);
    /* merge neighbouring unallocated blocks into one answer, skipping
     * missing leaves (and the map past what the file holds) at once */
    while (!alloc && n < len) {
        uint64_t b = bm_skip(s, (offset + n) / s->block_size);
        if (b >= s->blocks_in_image) {
            n = len;
            break;
        }
        if (b * s->block_size >= offset + len) {
            n = len;
            break;
        }
        if (b * s->block_size > offset + n) {
            n = b * s->block_size - offset;
            continue;
        }
        if (VDI_IS_ALLOCATED(bm_get(s, b))) {
            break;
        }
        n = VD_MIN(len, n + s->block_size);
    }
    pthread_rwlock_unlock(&s->lock);
    *pnum = n;
    if (!alloc) {
        /* QEMU answers "zero" (not "unallocated") for free VDI blocks */
        return VD_BLOCK_ZERO;
    }
    *map = vdi_data_offset(s, entry, in_block);
    *file = bs->file;
    /* static images: data, plus "zero" where the file has holes (QEMU's
     * BDRV_BLOCK_RECURSE) */
    return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID |
           (s->image_type == VDI_TYPE_STATIC ? VD_BLOCK_PROBE_ZERO : 0);
}

static int vdi_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int vdi_check(vd_node *bs, vd_check_res *res, unsigned fix, vd_error **errp)
{
    vdi_state *s = bs->opaque;
    uint32_t count = 0, cap = 0;
    uint32_t *used = NULL;
    int ret = 0;

    if (fix) {
        return vd_error_set(errp, ENOTSUP, "This image format does not support checks");
    }
    /* The data blocks the map uses, sorted: a data block used twice shows
     * as equal neighbours.  Costs what the map holds (the leaves), not
     * what the header's block count claims. */
    pthread_rwlock_rdlock(&s->lock);
    for (uint64_t b = bm_skip(s, 0); b < s->blocks_in_image; b = bm_skip(s, b + 1)) {
        uint32_t e = bm_get(s, b);
        if (!VDI_IS_ALLOCATED(e)) {
            continue;
        }
        if (e >= s->blocks_in_image) {
            /* block index too large */
            res->corruptions++;
            continue;
        }
        if (count == cap) {
            uint32_t n = cap ? cap * 2 : 1024;
            uint32_t *t = realloc(used, (size_t)n * sizeof(*t));
            if (!t) {
                res->check_errors++;
                ret = vd_error_set(errp, ENOMEM, "Could not allocate memory for the check");
                break;
            }
            used = t;
            cap = n;
        }
        used[count++] = e;
    }
    pthread_rwlock_unlock(&s->lock);
    if (ret == 0) {
        if (count > 1) {
            qsort(used, count, sizeof(*used), vdi_cmp_u32);
        }
        for (uint32_t i = 1; i < count; i++) {
            if (used[i] == used[i - 1]) {
                /* two map entries share one data block */
                res->corruptions++;
            }
        }
        if (count != s->blocks_allocated) {
            res->corruptions++;
        }
    }
    free(used);
    return ret;
}

static int vdi_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    vdi_state *s = bs->opaque;
    (void)errp;
    info->cluster_size = s->block_size;
    return 0;
}

static uint32_t vdi_cluster_size(vd_node *bs)
{
    vdi_state *s = bs->opaque;
    return s->block_size;
}

static int vdi_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    uint64_t size;
    bool is_static;
    int ret;

    ret = vd_opts_get_size(opts, "size", 0, &size, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vd_opts_get_bool(opts, "static", false, &is_static, errp);
    if (ret < 0) {
        return ret;
    }
    if (size > VDI_DISK_SIZE_MAX) {
        return vd_error_set(errp, ENOTSUP,
                            "Unsupported VDI image size (size is 0x%llx, max supported is "
                            "0x%llx)",
                            (unsigned long long)size, (unsigned long long)VDI_DISK_SIZE_MAX);
    }
    size = vd_div_round_up(size, VDI_SECTOR) * VDI_SECTOR;
    uint32_t blocks = (uint32_t)vd_div_round_up(size, VDI_BLOCK_SIZE);
    uint64_t bmap_bytes = vdi_bmap_bytes(blocks);

    uint8_t h[VDI_HEADER_BYTES];
    memset(h, 0, sizeof(h));
    memcpy(h, VDI_TEXT, strlen(VDI_TEXT));
    vd_st_le32(h + VDI_H_SIGNATURE, VDI_SIGNATURE);
    vd_st_le32(h + VDI_H_VERSION, VDI_VERSION_1_1);
    vd_st_le32(h + VDI_H_HEADER_SIZE, 0x180);
    vd_st_le32(h + VDI_H_IMAGE_TYPE, is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC);
    vd_st_le32(h + VDI_H_OFFSET_BMAP, VDI_HEADER_BYTES);
    vd_st_le32(h + VDI_H_OFFSET_DATA, (uint32_t)(VDI_HEADER_BYTES + bmap_bytes));
    vd_st_le32(h + VDI_H_SECTOR_SIZE, VDI_SECTOR);
    vd_st_le64(h + VDI_H_DISK_SIZE, size);
    vd_st_le32(h + VDI_H_BLOCK_SIZE, VDI_BLOCK_SIZE);
    vd_st_le32(h + VDI_H_BLOCKS_IN_IMAGE, blocks);
    vd_st_le32(h + VDI_H_BLOCKS_ALLOCATED, is_static ? blocks : 0);
    vdi_uuid_generate(h + VDI_H_UUID_IMAGE);
    vdi_uuid_generate(h + VDI_H_UUID_LAST_SNAP);

    vd_node *file;
    ret = vd_create_open_file(filename, opts, &file, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vd_node_pwrite(file, 0, sizeof(h), h, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not write the VDI header");
        goto out;
    }
    /* The block map, written in bounded chunks. */
    const uint64_t chunk = 1u << 20;
    uint8_t *buf = vd_malloc(chunk);
    if (!buf) {
        ret = vd_error_set(errp, ENOMEM, "Out of memory");
        goto out;
    }
    for (uint64_t off = 0; off < bmap_bytes && ret == 0; off += chunk) {
        uint64_t n = VD_MIN(chunk, bmap_bytes - off);
        memset(buf, 0, n);
        for (uint64_t i = off / 4; i < (off + n) / 4 && i < blocks; i++) {
            vd_st_le32(buf + (i * 4 - off), is_static ? (uint32_t)i : VDI_UNALLOCATED);
        }
        ret = vd_node_pwrite(file, VDI_HEADER_BYTES + off, n, buf, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not write the VDI block map");
        }
    }
    free(buf);
    if (ret == 0 && is_static) {
        ret = vd_node_truncate(
            file, VDI_HEADER_BYTES + bmap_bytes + (uint64_t)blocks * VDI_BLOCK_SIZE, true,
            VD_PREALLOC_OFF, errp);
    }
out:
    /* every failure so far has its message: what names the flush */
    return vd_create_close_file(file, ret, "Could not flush the new image", errp);
}

const vd_driver vd_drv_vdi = {
    .name = "vdi",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(vdi_state),
    .create_opts = vdi_create_opts,
    .probe = vdi_probe,
    .open = vdi_open,
    .close = vdi_close,
    .create = vdi_create,
    .get_length = vdi_get_length,
    .pread = vdi_pread,
    .pwrite = vdi_pwrite,
    .discard = vdi_discard,
    .flush = vdi_flush,
    .block_status = vdi_block_status,
    .check = vdi_check,
    .get_info = vdi_get_info,
    .cluster_size = vdi_cluster_size,
};
