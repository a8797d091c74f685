/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vhdx: Hyper-V VHDX images, as Microsoft's [MS-VHDX] specification
 * describes them and QEMU 7.2 reads and writes them: the file identifier
 * ("vhdxfile"), two 4 KiB headers with CRC-32C (the valid one with the
 * higher sequence number wins), the region table at 192 KiB (BAT and
 * metadata regions), the metadata table (file parameters, virtual disk
 * size, logical and physical sector size, page 83 data), the BAT (one
 * 64-bit entry per payload block, a sector bitmap entry after every
 * chunk_ratio payload entries) and the metadata log.
 *
 * Reads: payload blocks NOT_PRESENT, UNDEFINED, ZERO and UNMAPPED read as
 * zeroes, FULLY_PRESENT ones from the file.
 *
 * Writes, as QEMU 7.2's vhdx.c and vhdx-log.c: the first write of a session
 * updates both headers (new data write GUID; the file write GUID is the
 * session's); a write into a block that is not FULLY_PRESENT appends a new
 * block at the 1 MiB-aligned end of the file (the file grows by the block,
 * so the rest of the block reads as zeroes) and its BAT entry goes through
 * the log: both headers get a new log GUID, a log entry (header,
 * descriptors, data sectors, CRC-32C) is written and flushed, the BAT
 * sector is written in place and flushed, and the headers get a zero log
 * GUID again.  Header updates alternate between the two headers (they are
 * not logged, as in QEMU).  A read-write open writes the headers once.
 *
 * The log: on open, when the current header carries a log GUID, the log is
 * searched for the active sequence of valid entries as QEMU does it (the
 * same scan, the same quirks).  A read-write open replays it; a read-only
 * open of an image with valid entries is refused with QEMU's message (no
 * replay in memory); an image whose log GUID is set but whose log holds no
 * valid entry opens in both modes.
 *
 * Create: subformat=dynamic|fixed, block_state_zero, block_size, log_size
 * with QEMU 7.2's defaults, rounding and messages; the layout is QEMU's.
 *
 * Not supported: differencing images (a parent: refused at open, as QEMU
 * 7.2 refuses them too), 4 KiB logical sectors (QEMU 7.2 refuses them),
 * resize (QEMU 7.2 has none for vhdx), images of virtual size 0 (QEMU
 * creates and opens them), the UNMAPPED state of the 0.95 draft (5).  The
 * second region table is not read (QEMU does not either).  There is no
 * block-status callback: QEMU 7.2 has none for vhdx, so map reports the
 * whole disk as data, as qemu-img does.
 *
 * Hostile input: bad signatures or CRCs, equal header sequence numbers,
 * versions other than 1, more than 2047 region or metadata entries,
 * regions or metadata items past the end of the file or their table,
 * overlapping regions, duplicate or unknown required entries, block sizes
 * that are not a power of two in 1..256 MiB, logical sector sizes other
 * than 512, disk sizes of 0 or above 64 TiB, a BAT region too small for the
 * disk or above 512 MiB, and payload blocks that start in the header area,
 * overlap the log, BAT or metadata, or end past the end of the file are
 * refused at open.  The log is read one 4 KiB sector at a time (memory does
 * not depend on descriptor counts), each entry is bounded by the log's
 * length, and a replayed entry may only write below the larger of the file
 * size and its own last_file_offset (at most 128 TiB).
 */
#include <pthread.h>
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

#define VHDX_LOG_SECTOR 4096u
#define VHDX_SIG_LOGE 0x65676f6cu /* "loge" */
#define VHDX_SIG_DESC 0x63736564u /* "desc" */
#define VHDX_SIG_ZERO 0x6f72657au /* "zero" */
#define VHDX_SIG_DATA 0x61746164u /* "data" */
/* a replayed log entry writes below this (a VHDX file holds at most 64 TiB
 * of payload plus its metadata) */
#define VHDX_MAX_LOG_WRITE (128ull << 40)

/* header fields */
enum {
    H_SEQ = 8,
    H_FILE_GUID = 16,
    H_DATA_GUID = 32,
    H_LOG_GUID = 48,
    H_LOG_VERSION = 64,
    H_VERSION = 66,
    H_LOG_LEN = 68,
    H_LOG_OFF = 72,
};

/* log entry header fields (64 bytes at the start of an entry) */
enum {
    LE_SIG = 0,
    LE_CRC = 4,
    LE_LEN = 8,
    LE_TAIL = 12,
    LE_SEQ = 16,
    LE_COUNT = 24,
    LE_GUID = 32,
    LE_FLUSHED = 48,
    LE_LAST = 56,
    LE_SIZE = 64,
};

typedef struct vhdx_log_hdr {
    uint32_t checksum;
    uint32_t entry_length;
    uint32_t count;
    uint64_t seq;
    uint64_t flushed;
    uint64_t last;
    uint8_t guid[16];
} vhdx_log_hdr;

/* A window of the circular log: sectors from read up to write (exclusive). */
typedef struct vhdx_logpos {
    uint32_t read;
    uint32_t write;
} vhdx_logpos;

typedef struct vhdx_region {
    uint64_t offset;
    uint64_t length;
} vhdx_region;

typedef struct vhdx_state {
    pthread_mutex_t lock; /* BAT, headers, log */
    uint64_t *bat;
    uint64_t bat_entries;
    uint64_t bat_offset;
    uint64_t disk_size;  /* bytes, as the metadata says */
    uint64_t block_size;
    uint64_t chunk_ratio; /* payload blocks per sector bitmap block */
    uint32_t logical_sector;
    uint32_t physical_sector;
    /* both headers as read (or last written); cur is the current one */
    uint8_t hdr[2][VHDX_HEADER_SIZE];
    int cur;
    uint8_t session_guid[16];
    bool first_visible_write;
    /* the log: its place, QEMU's read/write/tail indexes, next sequence */
    uint64_t log_offset;
    uint32_t log_length;
    vhdx_logpos log;
    uint32_t log_tail;
    uint64_t log_sequence;
    bool log_replayed; /* at open: check -r reports it as a fixed corruption */
    /* a complete entry [log.read, log.write) whose replay failed: the next
     * update replays it first */
    bool log_pending;
} vhdx_state;

static uint32_t vhdx_crc_table[256];
static pthread_once_t vhdx_crc_once = PTHREAD_ONCE_INIT;

static void vhdx_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        vhdx_crc_table[i] = c;
    }
}

/* CRC-32C (Castagnoli, reflected 0x82f63b78) register update: start with
 * 0xffffffff, the checksum is the final value inverted. */
static uint32_t vhdx_crc_update(uint32_t crc, const uint8_t *p, size_t len)
{
    pthread_once(&vhdx_crc_once, vhdx_crc_init);
    for (size_t i = 0; i < len; i++) {
        crc = vhdx_crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    }
    return crc;
}

static uint32_t vhdx_crc32c(const uint8_t *p, size_t len)
{
    return ~vhdx_crc_update(0xffffffffu, p, len);
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

static void vhdx_checksum_set(uint8_t *buf, size_t len, size_t at)
{
    vd_st_le32(buf + at, 0);
    vd_st_le32(buf + at, vhdx_crc32c(buf, len));
}

static bool vhdx_guid_eq(const uint8_t *p, const vhdx_guid *g)
{
    return !memcmp(p, g->b, 16);
}

static bool vhdx_guid_zero(const uint8_t *p)
{
    return vd_buffer_is_zero(p, 16);
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
    pthread_mutex_destroy(&s->lock);
}

/* Read both headers and choose the current one. */
static int vhdx_read_headers(vd_node *bs, vhdx_state *s, vd_error **errp)
{
    bool valid[2];
    uint64_t seq[2];
    int ret;

    for (int i = 0; i < 2; i++) {
        ret = vd_node_pread(bs->file, i ? VHDX_HEADER2 : VHDX_HEADER1, VHDX_HEADER_SIZE,
                            s->hdr[i], 0);
        if (ret < 0) {
            return vd_error_setg_errno(errp, ret, "Could not read the VHDX header %d", i + 1);
        }
        valid[i] = vd_ld_le32(s->hdr[i]) == VHDX_SIG_HEAD &&
                   vhdx_checksum_ok(s->hdr[i], VHDX_HEADER_SIZE, 4);
        seq[i] = vd_ld_le64(s->hdr[i] + H_SEQ);
    }
    int cur;
    if (valid[0] && valid[1]) {
        /* Equal sequence numbers are invalid, except for two identical
         * headers: Microsoft's Disk2VHD writes those (QEMU accepts them too,
         * iotest 070) */
        if (seq[0] == seq[1] && memcmp(s->hdr[0], s->hdr[1], VHDX_HEADER_SIZE) != 0) {
            return vd_error_set(errp, EINVAL,
                                "No valid VHDX header found (both headers have sequence "
                                "number %llu)",
                                (unsigned long long)seq[0]);
        }
        cur = seq[0] >= seq[1] ? 0 : 1;
    } else if (valid[0] || valid[1]) {
        cur = valid[0] ? 0 : 1;
    } else {
        return vd_error_set(errp, EINVAL,
                            "No valid VHDX header found (bad signature or CRC-32C in both)");
    }
    uint16_t version = vd_ld_le16(s->hdr[cur] + H_VERSION);
    if (version != 1) {
        return vd_error_set(errp, ENOTSUP, "Unsupported VHDX version %u", version);
    }
    s->cur = cur;
    return 0;
}

/*
 * Write the non-current header as the new current one: sequence number + 1,
 * the session's file write GUID, a new data write GUID when asked, the given
 * log GUID.  QEMU updates the other header's own copy; vdisk starts from the
 * current header, so that a corrupt second header cannot come back to life
 * (the two are equal in every image QEMU or vdisk wrote).
 */
static int vhdx_update_header(vd_node *bs, bool new_data_guid, const uint8_t *log_guid)
{
    vhdx_state *s = bs->opaque;
    int idx = !s->cur;
    uint8_t *h = s->hdr[idx];

    memcpy(h, s->hdr[s->cur], VHDX_HEADER_SIZE);
    vd_st_le64(h + H_SEQ, vd_ld_le64(s->hdr[s->cur] + H_SEQ) + 1);
    memcpy(h + H_FILE_GUID, s->session_guid, 16);
    if (new_data_guid) {
        vd_uuid_generate(h + H_DATA_GUID);
    }
    if (log_guid) {
        memcpy(h + H_LOG_GUID, log_guid, 16);
    }
    vhdx_checksum_set(h, VHDX_HEADER_SIZE, 4);
    vd_node_event(bs->file, VD_EV_HEADER_UPDATE);
    int ret = vd_node_pwrite(bs->file, idx ? VHDX_HEADER2 : VHDX_HEADER1, VHDX_HEADER_SIZE, h, 0);
    if (ret == 0) {
        ret = vd_node_flush(bs->file);
    }
    if (ret < 0) {
        /* the header on disk may be either: the current one stays */
        memcpy(h, s->hdr[s->cur], VHDX_HEADER_SIZE);
        return ret;
    }
    s->cur = idx;
    return 0;
}

/* Both headers, as QEMU: flush the data first, then one header after the
 * other, so that a crash leaves at least one valid. */
static int vhdx_update_headers(vd_node *bs, bool new_data_guid, const uint8_t *log_guid)
{
    int ret = vd_node_flush(bs->file);
    if (ret == 0) {
        ret = vhdx_update_header(bs, new_data_guid, log_guid);
    }
    if (ret == 0) {
        ret = vhdx_update_header(bs, new_data_guid, log_guid);
    }
    return ret;
}

/* Before the first change a reader could see: a new data write GUID. */
static int vhdx_user_visible_write(vd_node *bs)
{
    vhdx_state *s = bs->opaque;
    if (!s->first_visible_write) {
        return 0;
    }
    s->first_visible_write = false;
    return vhdx_update_headers(bs, true, NULL);
}

/* ------------------------------------------------------------------ log */

static uint32_t vhdx_log_inc(vhdx_state *s, uint32_t idx)
{
    uint64_t n = (uint64_t)idx + VHDX_LOG_SECTOR;
    return n >= s->log_length ? 0 : (uint32_t)n;
}

/* Descriptor sectors of an entry: the 64-byte header takes two slots of
 * the first sector, 128 descriptors of 32 bytes fill one. */
static uint32_t vhdx_log_desc_sectors(uint32_t count)
{
    return (uint32_t)(((uint64_t)count + 2 + 127) / 128);
}

/* Read len bytes of the file at off; zeroes past its end (as QEMU's file
 * driver reads there). */
static int vhdx_read_file(vd_node *bs, uint64_t off, size_t len, uint8_t *buf)
{
    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        return (int)flen;
    }
    memset(buf, 0, len);
    if (off >= (uint64_t)flen) {
        return 0;
    }
    return vd_node_pread(bs->file, off, VD_MIN(len, (uint64_t)flen - off), buf, 0);
}

/* The entry header at pos->read (QEMU's vhdx_log_peek_hdr). */
static int vhdx_log_peek(vd_node *bs, vhdx_state *s, const vhdx_logpos *pos, vhdx_log_hdr *h)
{
    uint8_t b[LE_SIZE];
    uint32_t r = pos->read;
    if (r % VHDX_LOG_SECTOR) {
        return -EFAULT;
    }
    if ((uint64_t)r + LE_SIZE > s->log_length) {
        r = 0;
    }
    if (r == pos->write) {
        return -EINVAL;
    }
    int ret = vhdx_read_file(bs, s->log_offset + r, LE_SIZE, b);
    if (ret < 0) {
        return ret;
    }
    if (vd_ld_le32(b + LE_SIG) != VHDX_SIG_LOGE) {
        h->entry_length = UINT32_MAX; /* marks "no entry" for vhdx_log_hdr_ok */
        return 0;
    }
    h->checksum = vd_ld_le32(b + LE_CRC);
    h->entry_length = vd_ld_le32(b + LE_LEN);
    h->seq = vd_ld_le64(b + LE_SEQ);
    h->count = vd_ld_le32(b + LE_COUNT);
    memcpy(h->guid, b + LE_GUID, 16);
    h->flushed = vd_ld_le64(b + LE_FLUSHED);
    h->last = vd_ld_le64(b + LE_LAST);
    return 0;
}

static bool vhdx_log_hdr_ok(vhdx_state *s, const vhdx_log_hdr *h)
{
    return h->entry_length != UINT32_MAX && h->entry_length <= s->log_length &&
           h->entry_length % VHDX_LOG_SECTOR == 0 && h->seq != 0 &&
           !memcmp(h->guid, s->hdr[s->cur] + H_LOG_GUID, 16) &&
           (uint64_t)h->count * 32 <= h->entry_length;
}

/* One sector at pos->read into buf, advancing; *got false when the window
 * is empty. */
static int vhdx_log_read_sector(vd_node *bs, vhdx_state *s, vhdx_logpos *pos, uint8_t *buf,
                                bool *got)
{
    *got = false;
    if (pos->read == pos->write) {
        return 0;
    }
    int ret = vhdx_read_file(bs, s->log_offset + pos->read, VHDX_LOG_SECTOR, buf);
    if (ret < 0) {
        return ret;
    }
    pos->read = vhdx_log_inc(s, pos->read);
    *got = true;
    return 0;
}

typedef struct vhdx_log_desc {
    uint32_t sig;
    uint32_t trailing;  /* raw bytes 4092..4095 of a data sector */
    uint64_t leading;   /* raw bytes 0..7 of a data sector; zero: the length */
    uint64_t file_offset;
    uint64_t seq;
} vhdx_log_desc;

static void vhdx_log_desc_parse(const uint8_t *p, vhdx_log_desc *d)
{
    d->sig = vd_ld_le32(p);
    d->trailing = vd_ld_le32(p + 4);
    d->leading = vd_ld_le64(p + 8);
    d->file_offset = vd_ld_le64(p + 16);
    d->seq = vd_ld_le64(p + 24);
}

static bool vhdx_log_desc_ok(const vhdx_log_desc *d, const vhdx_log_hdr *h)
{
    if (d->seq != h->seq || d->file_offset % VHDX_LOG_SECTOR) {
        return false;
    }
    if (d->sig == VHDX_SIG_ZERO) {
        return d->leading % VHDX_LOG_SECTOR == 0;
    }
    return d->sig == VHDX_SIG_DESC;
}

/*
 * QEMU's vhdx_validate_log_entry: is there a valid entry at pos->read (that
 * follows prev_seq when prev_seq > 0)?  An entry whose header is not one
 * moves pos on by one sector; one that is read moves pos past it.  An
 * invalid descriptor in an entry with a valid header is an error (-EINVAL),
 * as in QEMU.
 */
static int vhdx_log_validate(vd_node *bs, vhdx_state *s, vhdx_logpos *pos, uint64_t prev_seq,
                             bool *valid, vhdx_log_hdr *h, uint8_t *sec)
{
    bool got;
    int ret;

    *valid = false;
    ret = vhdx_log_peek(bs, s, pos, h);
    if (ret < 0 || !vhdx_log_hdr_ok(s, h) || (prev_seq > 0 && h->seq != prev_seq + 1)) {
        pos->read = vhdx_log_inc(s, pos->read);
        return ret;
    }
    uint32_t desc_sectors = vhdx_log_desc_sectors(h->count);
    uint32_t total = h->entry_length / VHDX_LOG_SECTOR;
    uint32_t crc = 0xffffffffu;
    for (uint32_t k = 0; k < desc_sectors; k++) {
        ret = vhdx_log_read_sector(bs, s, pos, sec, &got);
        if (ret < 0) {
            return ret;
        }
        if (!got) {
            return -EINVAL;
        }
        for (uint32_t slot = k ? 0 : 2; slot < 128; slot++) {
            uint64_t i = (uint64_t)k * 128 + slot - 2;
            if (i >= h->count) {
                break;
            }
            vhdx_log_desc d;
            vhdx_log_desc_parse(sec + slot * 32, &d);
            if (!vhdx_log_desc_ok(&d, h)) {
                return -EINVAL;
            }
        }
        if (k == 0) {
            vd_st_le32(sec + LE_CRC, 0);
        }
        crc = vhdx_crc_update(crc, sec, VHDX_LOG_SECTOR);
    }
    for (uint32_t k = desc_sectors; k < total; k++) {
        ret = vhdx_log_read_sector(bs, s, pos, sec, &got);
        if (ret < 0 || !got) {
            return ret;
        }
        crc = vhdx_crc_update(crc, sec, VHDX_LOG_SECTOR);
    }
    *valid = ~crc == h->checksum;
    return 0;
}

typedef struct vhdx_log_seq {
    bool valid;
    vhdx_logpos pos;
    uint32_t count;
    vhdx_log_hdr hdr; /* of its first entry */
} vhdx_log_seq;

/* QEMU's vhdx_log_search: the sequence of valid entries whose first entry
 * has the highest sequence number. */
static int vhdx_log_search(vd_node *bs, vhdx_state *s, vhdx_log_seq *out, uint8_t *sec)
{
    vhdx_logpos cur = {0, s->log_length}; /* the whole log, as if full */
    vhdx_log_seq cand = {0};
    vhdx_log_hdr h;
    bool valid;
    int ret;

    for (;;) {
        uint64_t curr_seq = 0;
        vhdx_log_seq seq = {0};
        uint32_t tail = cur.read;

        ret = vhdx_log_validate(bs, s, &cur, curr_seq, &valid, &h, sec);
        if (ret < 0) {
            return ret;
        }
        if (valid) {
            seq.valid = true;
            seq.pos.read = tail;
            seq.pos.write = cur.read;
            seq.count = 1;
            seq.hdr = h;
            for (;;) {
                ret = vhdx_log_validate(bs, s, &cur, curr_seq, &valid, &h, sec);
                if (ret < 0) {
                    return ret;
                }
                if (!valid) {
                    break;
                }
                seq.pos.write = cur.read;
                seq.count++;
                curr_seq = h.seq;
            }
        }
        if (seq.valid && (!cand.valid || seq.hdr.seq > cand.hdr.seq)) {
            cand = seq;
        }
        if (cur.read < tail) {
            break;
        }
    }
    *out = cand;
    if (cand.valid) {
        s->log_sequence = cand.hdr.seq + 1;
    }
    return 0;
}

/*
 * Write the entries of seq to their places in the file (QEMU's
 * vhdx_log_flush), then empty the log (a zero log GUID in both headers).
 * Returns 0 or -errno; *where names what failed for a message.
 */
static int vhdx_log_replay(vd_node *bs, vhdx_log_seq *seq, const char **where)
{
    vhdx_state *s = bs->opaque;
    uint8_t *sec = vd_malloc(VHDX_LOG_SECTOR);
    uint8_t *data = vd_malloc(VHDX_LOG_SECTOR);
    uint8_t *out = vd_malloc(VHDX_LOG_SECTOR);
    vhdx_logpos pos = seq->pos;
    bool got;
    int ret;

    *where = "";
    if (!sec || !data || !out) {
        ret = -ENOMEM;
        goto out;
    }
    ret = vhdx_user_visible_write(bs);
    if (ret < 0) {
        *where = "header update";
        goto out;
    }
    for (uint32_t e = 0; e < seq->count; e++) {
        vhdx_log_hdr h;
        ret = vhdx_log_peek(bs, s, &pos, &h);
        if (ret == 0 && !vhdx_log_hdr_ok(s, &h)) {
            ret = -EINVAL;
        }
        if (ret < 0) {
            *where = "entry header";
            goto out;
        }
        int64_t flen = vd_node_get_length(bs->file);
        if (flen < 0) {
            ret = (int)flen;
            goto out;
        }
        if (h.flushed > (uint64_t)flen) {
            /* the file was truncated after the log was written */
            *where = "flushed file offset past the end of the file";
            ret = -EINVAL;
            goto out;
        }
        if (h.last > VHDX_MAX_LOG_WRITE) {
            *where = "last file offset too large";
            ret = -EINVAL;
            goto out;
        }
        uint64_t limit = VD_MAX((uint64_t)flen, h.last);
        uint32_t desc_sectors = vhdx_log_desc_sectors(h.count);
        vhdx_logpos dpos = pos; /* descriptors */
        for (uint32_t k = 0; k < desc_sectors; k++) {
            ret = vhdx_log_read_sector(bs, s, &pos, sec, &got);
            if (ret == 0 && !got) {
                ret = -EINVAL;
            }
            if (ret < 0) {
                *where = "descriptors";
                goto out;
            }
        }
        /* pos is at the data sectors now; dpos walks the descriptors */
        uint32_t loaded = UINT32_MAX;
        for (uint64_t i = 0; i < h.count; i++) {
            uint32_t k = (uint32_t)((i + 2) / 128);
            if (k != loaded) {
                /* k grows one by one: the next descriptor sector */
                ret = vhdx_log_read_sector(bs, s, &dpos, sec, &got);
                if (ret == 0 && !got) {
                    ret = -EINVAL;
                }
                if (ret < 0) {
                    *where = "descriptors";
                    goto out;
                }
                loaded = k;
            }
            vhdx_log_desc d;
            vhdx_log_desc_parse(sec + ((i + 2) % 128) * 32, &d);
            if (!vhdx_log_desc_ok(&d, &h)) {
                *where = "descriptor";
                ret = -EINVAL;
                goto out;
            }
            uint64_t len = d.sig == VHDX_SIG_ZERO ? d.leading : VHDX_LOG_SECTOR;
            uint64_t end;
            if (vd_add_overflow(d.file_offset, len, &end) || end > limit) {
                *where = "descriptor writing past the end of the file";
                ret = -EINVAL;
                goto out;
            }
            if (d.sig == VHDX_SIG_DESC) {
                ret = vhdx_log_read_sector(bs, s, &pos, data, &got);
                if (ret == 0 && !got) {
                    ret = -EINVAL;
                }
                if (ret < 0) {
                    *where = "data sector";
                    goto out;
                }
                uint64_t dseq = (uint64_t)vd_ld_le32(data + 4) << 32 | vd_ld_le32(data + 4092);
                if (dseq != d.seq) {
                    *where = "data sector sequence number";
                    ret = -EINVAL;
                    goto out;
                }
                vd_st_le64(out, d.leading);
                memcpy(out + 8, data + 8, 4084);
                vd_st_le32(out + 4092, d.trailing);
                /* the in-place write of a logged sector (a BAT sector when
                 * vdisk or QEMU wrote the log) */
                vd_node_event(bs->file, VD_EV_BAT_UPDATE);
                ret = vd_node_pwrite(bs->file, d.file_offset, VHDX_LOG_SECTOR, out, 0);
            } else if (len) {
                ret = vd_node_pwrite_zeroes(bs->file, d.file_offset, len, 0);
            }
            if (ret == 0) {
                ret = vd_node_flush(bs->file);
            }
            if (ret < 0) {
                *where = "write";
                goto out;
            }
        }
        if ((uint64_t)flen < h.last && h.last % VHDX_MiB) {
            /* QEMU grows the file only when last_file_offset is not 1 MiB
             * aligned (and rounds it up) */
            ret = vd_node_truncate(bs->file, (h.last + VHDX_MiB - 1) & ~(VHDX_MiB - 1), false,
                                   VD_PREALLOC_OFF, NULL);
            if (ret < 0) {
                *where = "file growth";
                goto out;
            }
        }
    }
    ret = vd_node_flush(bs->file);
    if (ret == 0) {
        static const uint8_t zero[16];
        ret = vhdx_update_headers(bs, false, zero);
        if (ret < 0) {
            *where = "header update";
        } else {
            s->log.read = s->log.write = 0;
        }
    }
    seq->pos = pos;
out:
    free(sec);
    free(data);
    free(out);
    return ret;
}

/*
 * QEMU's vhdx_parse_log: check the log fields of the current header, find
 * the active sequence, replay it on a read-write open, refuse a read-only
 * one when there is something to replay.
 */
static int vhdx_parse_log(vd_node *bs, vd_error **errp)
{
    vhdx_state *s = bs->opaque;
    const uint8_t *h = s->hdr[s->cur];
    uint64_t off = vd_ld_le64(h + H_LOG_OFF);
    uint32_t len = vd_ld_le32(h + H_LOG_LEN);

    s->log_offset = off;
    s->log_length = len;
    if (off < VHDX_MiB || off % VHDX_MiB) {
        return vd_error_set(errp, EINVAL, "VHDX log offset %llu is invalid",
                            (unsigned long long)off);
    }
    if (vd_ld_le16(h + H_LOG_VERSION) != 0) {
        return vd_error_set(errp, EINVAL, "VHDX log version %u is not supported",
                            vd_ld_le16(h + H_LOG_VERSION));
    }
    if (vhdx_guid_zero(h + H_LOG_GUID) || len == 0) {
        return 0;
    }
    if (len % VHDX_MiB) {
        return vd_error_set(errp, EINVAL, "VHDX log length %u is not a multiple of 1 MiB",
                            len);
    }
    if (off > VHDX_MAX_LOG_WRITE) {
        return vd_error_set(errp, EINVAL, "VHDX log offset %llu is invalid",
                            (unsigned long long)off);
    }
    uint8_t *sec = vd_malloc(VHDX_LOG_SECTOR);
    if (!sec) {
        return vd_error_set(errp, ENOMEM, "Could not allocate a VHDX log buffer");
    }
    vhdx_log_seq seq;
    int ret = vhdx_log_search(bs, s, &seq, sec);
    free(sec);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "VHDX log of '%s' has an invalid entry",
                                   bs->filename);
    }
    if (!seq.valid) {
        return 0;
    }
    if (bs->read_only) {
        int r = vd_error_set(errp, EPERM,
                             "VHDX image file '%s' opened read-only, but contains a log that "
                             "needs to be replayed",
                             bs->filename);
        vd_error_append_hint(errp, "To replay the log, run:\n%s check -r all '%s'\n",
                             vd_image_tool_name(), bs->filename);
        return r;
    }
    const char *where;
    ret = vhdx_log_replay(bs, &seq, &where);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not replay the VHDX log of '%s'%s%s%s",
                                   bs->filename, *where ? " (" : "", where, *where ? ")" : "");
    }
    s->log_replayed = true;
    return 0;
}

/*
 * QEMU's vhdx_log_write_and_flush for one metadata update: data (len bytes
 * for file offset off) becomes a log entry -- one descriptor and data
 * sector per 4 KiB sector it touches, merged with the sector's bytes on
 * disk -- written after a new log GUID, flushed, then replayed into place
 * and the log emptied.  Lock held.
 *
 * Unlike QEMU (which answers every later update with ENOTSUP once one
 * failed between setting the log GUID and emptying the log), a failed
 * update leaves the driver able to go on: an entry that was written
 * completely stays pending and is replayed before the next one; an entry
 * written partly (its checksum cannot match) is overwritten by the next,
 * under the log GUID already in the headers.  *logged: this update's
 * entry is complete in the log (on failure too: it is then pending, and
 * the next update or the next open writes it into place).
 */
static int vhdx_log_write_and_flush(vd_node *bs, const void *data, uint32_t len, uint64_t off,
                                    bool *logged)
{
    vhdx_state *s = bs->opaque;
    int ret;

    *logged = false;

    ret = vd_node_flush(bs->file);
    if (ret < 0) {
        return ret;
    }
    if (len > s->log_length) {
        return -EINVAL; /* no log */
    }
    const char *where;
    if (s->log_pending) {
        if (!vhdx_guid_zero(s->hdr[s->cur] + H_LOG_GUID)) {
            /* an earlier update's entry is complete: write it into place */
            vhdx_log_seq old = {.valid = true, .pos = s->log, .count = 1};
            ret = vhdx_log_replay(bs, &old, &where);
            if (ret < 0) {
                return ret;
            }
        }
        /* else the replay failed in its second header write: the current
         * header has an empty log already */
        s->log.read = s->log.write;
        s->log_pending = false;
    }
    if (vhdx_guid_zero(s->hdr[s->cur] + H_LOG_GUID)) {
        uint8_t guid[16];
        vd_uuid_generate(guid);
        ret = vhdx_update_headers(bs, false, guid);
        if (ret < 0) {
            return ret;
        }
    }
    if (s->log_sequence == 0) {
        s->log_sequence = 1;
    }
    uint64_t first = vd_align_down(off, VHDX_LOG_SECTOR);
    uint32_t sectors = (uint32_t)((off + len - first + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR);
    uint32_t desc_sectors = vhdx_log_desc_sectors(sectors);
    uint32_t total = desc_sectors + sectors;
    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        return (int)flen;
    }
    uint8_t *buf = vd_calloc(total, VHDX_LOG_SECTOR);
    uint8_t *sec = vd_malloc(VHDX_LOG_SECTOR);
    if (!buf || !sec) {
        free(buf);
        free(sec);
        return -ENOMEM;
    }
    uint64_t seqn = s->log_sequence;
    vd_st_le32(buf + LE_SIG, VHDX_SIG_LOGE);
    vd_st_le32(buf + LE_LEN, total * VHDX_LOG_SECTOR);
    vd_st_le32(buf + LE_TAIL, s->log_tail);
    vd_st_le64(buf + LE_SEQ, seqn);
    vd_st_le32(buf + LE_COUNT, sectors);
    memcpy(buf + LE_GUID, s->hdr[s->cur] + H_LOG_GUID, 16);
    vd_st_le64(buf + LE_FLUSHED, (uint64_t)flen);
    vd_st_le64(buf + LE_LAST, (uint64_t)flen);
    const uint8_t *p = data;
    for (uint32_t i = 0; i < sectors && ret == 0; i++) {
        uint64_t so = first + (uint64_t)i * VHDX_LOG_SECTOR;
        ret = vhdx_read_file(bs, so, VHDX_LOG_SECTOR, sec);
        uint64_t lo = VD_MAX(so, off), hi = VD_MIN(so + VHDX_LOG_SECTOR, off + len);
        memcpy(sec + (lo - so), p + (lo - off), hi - lo);
        uint8_t *d = buf + LE_SIZE + (size_t)i * 32;
        vd_st_le32(d, VHDX_SIG_DESC);
        memcpy(d + 4, sec + 4092, 4);
        memcpy(d + 8, sec, 8);
        vd_st_le64(d + 16, so);
        vd_st_le64(d + 24, seqn);
        uint8_t *ds = buf + (size_t)(desc_sectors + i) * VHDX_LOG_SECTOR;
        vd_st_le32(ds, VHDX_SIG_DATA);
        vd_st_le32(ds + 4, (uint32_t)(seqn >> 32));
        memcpy(ds + 8, sec + 8, 4084);
        vd_st_le32(ds + 4092, (uint32_t)seqn);
    }
    free(sec);
    if (ret < 0) {
        free(buf);
        return ret;
    }
    vhdx_checksum_set(buf, (size_t)total * VHDX_LOG_SECTOR, LE_CRC);
    ret = vhdx_user_visible_write(bs);
    vhdx_logpos start = s->log;
    uint32_t written = 0;
    uint32_t w = s->log.write;
    while (ret == 0 && written < total) {
        uint64_t at = s->log_offset + w;
        w = vhdx_log_inc(s, w);
        if (w == s->log.read) {
            break; /* full */
        }
        ret = vd_node_pwrite(bs->file, at, VHDX_LOG_SECTOR, buf + (size_t)written * VHDX_LOG_SECTOR,
                             0);
        if (ret == 0) {
            s->log.write = w;
            written++;
        }
    }
    free(buf);
    if (ret == 0 && written != total) {
        ret = -EINVAL;
    }
    if (ret < 0) {
        s->log.write = start.write; /* the next entry goes over this one */
        return ret;
    }
    s->log_sequence++;
    s->log_tail = s->log.write;
    s->log_pending = true;
    *logged = true;
    ret = vd_node_flush(bs->file);
    if (ret < 0) {
        return ret;
    }
    vhdx_log_seq seq = {.valid = true, .pos = {start.read, s->log.write}, .count = 1};
    ret = vhdx_log_replay(bs, &seq, &where);
    if (ret < 0) {
        return ret;
    }
    s->log_pending = false;
    /* QEMU keeps the replayed window: the next entry follows this one */
    s->log.read = s->log.write = seq.pos.read;
    return 0;
}

static bool vhdx_overlap(vhdx_region a, vhdx_region b)
{
    if (!a.length || !b.length) {
        return false;
    }
    return a.offset >= b.offset ? a.offset - b.offset < b.length
                                : b.offset - a.offset < a.length;
}

static int vhdx_read_regions(vd_node *bs, uint64_t file_len, vhdx_region log,
                             vhdx_region *bat, vhdx_region *meta, vd_error **errp)
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
        if (log.length && vhdx_overlap(r, log)) {
            ret = vd_error_set(errp, EINVAL, "VHDX %s region overlaps the log",
                               is_bat ? "BAT" : "metadata");
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
    vhdx_region bat_r = {0, 0}, meta_r = {0, 0};
    uint8_t sig[8];
    int ret;
    (void)opts;

    pthread_mutex_init(&s->lock, NULL);
    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        ret = vd_error_setg_errno(errp, (int)flen, "Could not get the file size");
        goto fail;
    }
    if ((uint64_t)flen < VHDX_HEADER_AREA) {
        ret = vd_error_set(errp, EINVAL,
                           "File too small for a VHDX header area (%llu bytes, at least 1 "
                           "MiB)",
                           (unsigned long long)flen);
        goto fail;
    }
    ret = vd_node_pread(bs->file, 0, 8, sig, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the VHDX file identifier");
        goto fail;
    }
    if (memcmp(sig, VHDX_SIG_FILE, 8)) {
        ret = vd_error_set(errp, EINVAL, "Image not in VHDX format");
        goto fail;
    }
    /* a new file write GUID for this session's first header update */
    vd_uuid_generate(s->session_guid);
    s->first_visible_write = true;
    ret = vhdx_read_headers(bs, s, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = vhdx_parse_log(bs, errp);
    if (ret < 0) {
        goto fail;
    }
    /* the replay may have grown the file */
    flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        ret = vd_error_setg_errno(errp, (int)flen, "Could not get the file size");
        goto fail;
    }
    uint64_t file_len = (uint64_t)flen;
    vhdx_region log_r = {s->log_offset, s->log_length};
    ret = vhdx_read_regions(bs, file_len, log_r, &bat_r, &meta_r, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = vhdx_read_metadata(bs, s, meta_r, errp);
    if (ret < 0) {
        goto fail;
    }

    uint64_t blocks = vd_div_round_up(s->disk_size, s->block_size);
    s->bat_entries = blocks + (blocks - 1) / s->chunk_ratio;
    s->bat_offset = bat_r.offset;
    if (s->bat_entries * 8 > bat_r.length) {
        ret = vd_error_set(errp, EINVAL,
                           "VHDX BAT region (%llu bytes) is too small for %llu entries",
                           (unsigned long long)bat_r.length,
                           (unsigned long long)s->bat_entries);
        goto fail;
    }
    if (s->bat_entries * 8 > VHDX_MAX_BAT_BYTES) {
        ret = vd_error_set(errp, EFBIG, "VHDX BAT of %llu entries is too large",
                           (unsigned long long)s->bat_entries);
        goto fail;
    }
    s->bat = vd_malloc(s->bat_entries * 8);
    if (!s->bat) {
        ret = vd_error_set(errp, ENOMEM, "Could not allocate the VHDX BAT");
        goto fail;
    }
    ret = vd_node_pread(bs->file, bat_r.offset, s->bat_entries * 8, s->bat, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the VHDX BAT");
        goto fail;
    }
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        s->bat[i] = vd_ld_le64(&s->bat[i]);
    }
    for (uint64_t b = 0; b < blocks; b++) {
        uint64_t i = b + b / s->chunk_ratio;
        uint64_t e = s->bat[i];
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
                vhdx_overlap((vhdx_region){off, s->block_size}, log_r)) {
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
    if (!bs->read_only) {
        /* QEMU writes the headers on every read-write open */
        ret = vhdx_update_headers(bs, false, NULL);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not update the VHDX headers");
            goto fail;
        }
    }
    /* as QEMU's has_zero_init: a fixed image reads what its file holds */
    bs->has_zero_init = (s->bat[0] & 7) != VHDX_PAYLOAD_FULLY_PRESENT || bs->file->has_zero_init;
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

/* vd_fmt_read's map: one block at a time, under the lock (an allocating
 * write changes entries). */
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
    pthread_mutex_lock(&s->lock);
    uint64_t e = i < s->bat_entries ? s->bat[i] : 0;
    pthread_mutex_unlock(&s->lock);
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

/*
 * Lock held.  Block b (BAT index i) is not present: append it at the 1 MiB
 * aligned end of the file (growing the file by the whole block, so that the
 * bytes the write does not cover read as zeroes, whatever the state said),
 * write the data, then log the BAT entry.
 */
static int vhdx_alloc_write(vd_node *bs, uint64_t i, uint64_t in_block, uint64_t n,
                            const uint8_t *p)
{
    vhdx_state *s = bs->opaque;
    int64_t flen = vd_node_get_length(bs->file);
    uint64_t host;
    int ret;

    if (flen < 0) {
        return (int)flen;
    }
    if (vd_align_up_overflow((uint64_t)flen, VHDX_MiB, &host) || host > INT64_MAX - s->block_size) {
        return -EINVAL;
    }
    if (host < VHDX_HEADER_AREA) {
        return -EFAULT;
    }
    vd_node_event(bs->file, VD_EV_CLUSTER_ALLOC);
    ret = vd_node_truncate(bs->file, host + s->block_size, false, VD_PREALLOC_OFF, NULL);
    if (ret == -ENOTSUP) {
        /* a file that cannot be resized (a filter such as blklogwrites)
         * grows by a zero write instead */
        ret = vd_node_pwrite_zeroes(bs->file, (uint64_t)flen, host + s->block_size - (uint64_t)flen,
                                    0);
    }
    if (ret < 0) {
        return ret;
    }
    uint64_t old = s->bat[i];
    s->bat[i] = host | VHDX_PAYLOAD_FULLY_PRESENT;
    vd_node_event(bs->file, VD_EV_WRITE_AIO);
    ret = vd_node_pwrite(bs->file, host + in_block, n, p, 0);
    if (ret < 0) {
        s->bat[i] = old;
        return ret;
    }
    uint8_t le[8];
    vd_st_le64(le, s->bat[i]);
    /* QEMU leaves the entry in memory whatever failed; vdisk only when its
     * log entry is complete (then the file gets it when the log is
     * replayed): a later update of the same BAT sector must not lose it,
     * nor may a later write to the block go where the file does not say */
    bool logged;
    ret = vhdx_log_write_and_flush(bs, le, 8, s->bat_offset + i * 8, &logged);
    if (ret < 0 && !logged) {
        s->bat[i] = old;
    }
    return ret;
}

static int vhdx_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                       unsigned flags)
{
    vhdx_state *s = bs->opaque;
    const uint8_t *p = buf;
    int ret;
    (void)flags;

    pthread_mutex_lock(&s->lock);
    ret = vhdx_user_visible_write(bs);
    while (ret == 0 && len > 0) {
        uint64_t b = offset / s->block_size;
        uint64_t in_block = offset % s->block_size;
        uint64_t n = VD_MIN(len, s->block_size - in_block);
        uint64_t i = b + b / s->chunk_ratio;
        if (i >= s->bat_entries) {
            ret = -EIO;
            break;
        }
        uint64_t e = s->bat[i];
        switch (e & 7) {
        case VHDX_PAYLOAD_NOT_PRESENT:
        case VHDX_PAYLOAD_UNDEFINED:
        case VHDX_PAYLOAD_ZERO:
        case VHDX_PAYLOAD_UNMAPPED:
            ret = vhdx_alloc_write(bs, i, in_block, n, p);
            break;
        case VHDX_PAYLOAD_FULLY_PRESENT: {
            uint64_t host = (e & ~(VHDX_MiB - 1)) + in_block;
            if (host < VHDX_HEADER_AREA) {
                ret = -EFAULT;
                break;
            }
            /* the block stays where it is: the data goes outside the lock */
            pthread_mutex_unlock(&s->lock);
            vd_node_event(bs->file, VD_EV_WRITE_AIO);
            ret = vd_node_pwrite(bs->file, host, n, p, 0);
            pthread_mutex_lock(&s->lock);
            break;
        }
        default:
            ret = -EIO;
            break;
        }
        offset += n;
        len -= n;
        p += n;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int vhdx_flush(vd_node *bs)
{
    return vd_node_flush(bs->file);
}

static int vhdx_check(vd_node *bs, vd_check_res *res, unsigned fix, vd_error **errp)
{
    vhdx_state *s = bs->opaque;
    (void)fix;
    (void)errp;
    /* as QEMU: a log replayed by this (read-write) open counts as a
     * repaired corruption; the BAT entries were all checked at open (QEMU
     * checks the same: FULLY_PRESENT blocks inside the file) */
    if (s->log_replayed) {
        res->corruptions_fixed++;
    }
    return 0;
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

/* ---------------------------------------------------------------- create */

static const vd_opt_desc vhdx_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size; max of 64TB.", NULL},
    {"log_size", VD_OPT_SIZE, "Log size; min 1MB.", "1048576"},
    {"block_size", VD_OPT_SIZE,
     "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.", "0"},
    {"subformat", VD_OPT_STRING,
     "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.", NULL},
    {"block_state_zero", VD_OPT_BOOL,
     "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to "
     "'off' when using 'qemu-img convert' with subformat=dynamic.",
     NULL},
    {NULL, 0, NULL, NULL},
};

static int vhdx_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    static const char *const subformats[] = {"dynamic", "fixed", NULL};
    uint64_t size, log_size, block_size;
    bool zero_blocks;
    int sub;
    int ret;

    ret = vd_opts_get_size(opts, "size", 0, &size, errp);
    if (ret == 0) {
        ret = vd_opts_get_size(opts, "log_size", VHDX_MiB, &log_size, errp);
    }
    if (ret == 0) {
        ret = vd_opts_get_size(opts, "block_size", 0, &block_size, errp);
    }
    if (ret == 0) {
        ret = vd_opts_get_enum(opts, "subformat", subformats, 0, &sub, errp);
    }
    if (ret == 0) {
        ret = vd_opts_get_bool(opts, "block_state_zero", true, &zero_blocks, errp);
    }
    if (ret < 0) {
        return ret;
    }
    /* QEMU's silent rounding: the size to sectors, the log and block sizes
     * to MiB, the block size down to 256 MiB */
    if (size > VHDX_MAX_DISK) {
        return vd_error_set(errp, EINVAL, "Image size too large; max of 64TB");
    }
    size = (size + 511) & ~511ull;
    if (log_size > UINT32_MAX) {
        return vd_error_set(errp, EINVAL, "Log size must be smaller than 4 GB");
    }
    log_size = (log_size + VHDX_MiB - 1) & ~(VHDX_MiB - 1);
    if (block_size > 256 * VHDX_MiB) {
        block_size = 256 * VHDX_MiB;
    }
    block_size = (block_size + VHDX_MiB - 1) & ~(VHDX_MiB - 1);
    if (log_size < VHDX_MiB || log_size > UINT32_MAX) {
        return vd_error_set(errp, EINVAL, "Log size must be a multiple of 1 MB");
    }
    if (block_size == 0) {
        if (size > 32 * (1ull << 40)) {
            block_size = 64 * VHDX_MiB;
        } else if (size > 100 * (1ull << 30)) {
            block_size = 32 * VHDX_MiB;
        } else if (size > (1ull << 30)) {
            block_size = 16 * VHDX_MiB;
        } else {
            block_size = 8 * VHDX_MiB;
        }
    }
    if (!vd_is_pow2(block_size)) {
        return vd_error_set(errp, EINVAL, "Block size must be a power of two");
    }
    if (size == 0) {
        /* QEMU writes a 64 MiB BAT for no block; vdisk does not open those */
        return vd_error_set(errp, EINVAL, "vdisk does not create VHDX images of size 0");
    }

    uint64_t chunk_ratio = (1ull << 23) * 512 / block_size;
    uint64_t blocks = vd_div_round_up(size, block_size);
    uint64_t bat_entries = blocks + (blocks - 1) / chunk_ratio;
    uint64_t bat_off = (VHDX_HEADER_AREA + log_size + VHDX_MiB - 1) & ~(VHDX_MiB - 1);
    uint64_t bat_len = (bat_entries * 8 + VHDX_MiB - 1) & ~(VHDX_MiB - 1);
    uint64_t meta_off = bat_off + bat_len;
    uint64_t data_off = bat_off + bat_len + 5 * VHDX_MiB;
    if (bat_len > VHDX_MAX_BAT_BYTES) {
        return vd_error_set(errp, EFBIG, "The VHDX BAT would be too large");
    }

    uint8_t *buf = vd_calloc(1, VHDX_TABLE_SIZE);
    uint8_t *bat = vd_calloc(1, bat_len);
    if (!buf || !bat) {
        free(buf);
        free(bat);
        return vd_error_set(errp, ENOMEM, "Could not allocate the VHDX metadata");
    }
    vd_node *file;
    ret = vd_create_open_file(filename, opts, &file, errp);
    if (ret < 0) {
        free(buf);
        free(bat);
        return ret;
    }
    const char *what = "Failed to write file signature";
    /* file identifier and creator (UTF-16LE) */
    static const char creator[] = "vdisk";
    memcpy(buf, VHDX_SIG_FILE, 8);
    for (size_t i = 0; i < sizeof(creator) - 1; i++) {
        buf[8 + 2 * i] = (uint8_t)creator[i];
    }
    ret = vd_node_pwrite(file, 0, 8 + 2 * (sizeof(creator) - 1), buf, 0);

    /* the two headers, sequence numbers n and n + 1 */
    if (ret == 0) {
        what = "Failed to write image headers";
        uint8_t seed[16];
        vd_uuid_generate(seed);
        memset(buf, 0, VHDX_HEADER_SIZE);
        vd_st_le32(buf, VHDX_SIG_HEAD);
        vd_st_le64(buf + H_SEQ, vd_ld_le32(seed));
        vd_uuid_generate(buf + H_FILE_GUID);
        vd_uuid_generate(buf + H_DATA_GUID);
        vd_st_le16(buf + H_VERSION, 1);
        vd_st_le32(buf + H_LOG_LEN, (uint32_t)log_size);
        vd_st_le64(buf + H_LOG_OFF, VHDX_HEADER_AREA);
        vhdx_checksum_set(buf, VHDX_HEADER_SIZE, 4);
        ret = vd_node_pwrite(file, VHDX_HEADER1, VHDX_HEADER_SIZE, buf, 0);
        if (ret == 0) {
            vd_st_le64(buf + H_SEQ, vd_ld_le64(buf + H_SEQ) + 1);
            vhdx_checksum_set(buf, VHDX_HEADER_SIZE, 4);
            ret = vd_node_pwrite(file, VHDX_HEADER2, VHDX_HEADER_SIZE, buf, 0);
        }
    }

    /* the file's extent, then the BAT (all zeroes, NOT_PRESENT, is not
     * written: the file reads zeroes) */
    if (ret == 0) {
        what = "Could not resize the image file";
        ret = vd_node_truncate(file, sub == 1 ? data_off + size : data_off, true,
                               VD_PREALLOC_OFF, errp);
    }
    if (ret == 0 && (sub == 1 || zero_blocks || !file->has_zero_init)) {
        what = "Failed to write the BAT";
        unsigned state = sub == 1 ? VHDX_PAYLOAD_FULLY_PRESENT : VHDX_PAYLOAD_NOT_PRESENT;
        if (zero_blocks) {
            state = VHDX_PAYLOAD_ZERO;
        }
        for (uint64_t b = 0; b < blocks; b++) {
            uint64_t e = state;
            if (state == VHDX_PAYLOAD_FULLY_PRESENT) {
                e |= data_off + b * block_size;
            }
            vd_st_le64(bat + (b + b / chunk_ratio) * 8, e);
        }
        ret = vd_node_pwrite(file, bat_off, bat_len, bat, 0);
    }

    /* the region table and its copy */
    if (ret == 0) {
        what = "Failed to write first region table";
        memset(buf, 0, VHDX_TABLE_SIZE);
        vd_st_le32(buf, VHDX_SIG_REGI);
        vd_st_le32(buf + 8, 2);
        memcpy(buf + 16, vhdx_bat_guid.b, 16);
        vd_st_le64(buf + 32, bat_off);
        vd_st_le32(buf + 40, (uint32_t)bat_len);
        memcpy(buf + 48, vhdx_meta_guid.b, 16);
        vd_st_le64(buf + 64, meta_off);
        vd_st_le32(buf + 72, (uint32_t)VHDX_MiB);
        vhdx_checksum_set(buf, VHDX_TABLE_SIZE, 4);
        ret = vd_node_pwrite(file, VHDX_REGION_TABLE, VHDX_TABLE_SIZE, buf, 0);
        if (ret == 0) {
            what = "Failed to write second region table";
            ret = vd_node_pwrite(file, VHDX_REGION_TABLE + VHDX_TABLE_SIZE, VHDX_TABLE_SIZE, buf,
                                 0);
        }
    }

    /* the metadata table and its five items */
    if (ret == 0) {
        what = "Failed to initialize metadata";
        static const struct {
            const vhdx_guid *guid;
            uint32_t off, len, flags;
        } items[] = {
            {&vhdx_file_params_guid, 0, 8, 4},
            {&vhdx_disk_size_guid, 8, 8, 6},
            {&vhdx_page83_guid, 16, 16, 6},
            {&vhdx_logical_guid, 32, 4, 6},
            {&vhdx_physical_guid, 36, 4, 6},
        };
        memset(buf, 0, VHDX_TABLE_SIZE);
        memcpy(buf, VHDX_SIG_META, 8);
        vd_st_le16(buf + 10, 5);
        for (size_t k = 0; k < 5; k++) {
            uint8_t *e = buf + 32 + k * 32;
            memcpy(e, items[k].guid->b, 16);
            vd_st_le32(e + 16, (uint32_t)VHDX_TABLE_SIZE + items[k].off);
            vd_st_le32(e + 20, items[k].len);
            vd_st_le32(e + 24, items[k].flags);
        }
        ret = vd_node_pwrite(file, meta_off, VHDX_TABLE_SIZE, buf, 0);
        uint8_t v[40];
        memset(v, 0, sizeof(v));
        vd_st_le32(v, (uint32_t)block_size);
        vd_st_le32(v + 4, sub == 1 ? 1 : 0); /* leave blocks allocated */
        vd_st_le64(v + 8, size);
        vd_uuid_generate(v + 16);
        vd_st_le32(v + 32, 512);
        vd_st_le32(v + 36, 512);
        if (ret == 0) {
            ret = vd_node_pwrite(file, meta_off + VHDX_TABLE_SIZE, sizeof(v), v, 0);
        }
    }
    free(buf);
    free(bat);
    if (ret < 0 && !(errp && *errp)) {
        vd_error_setg_errno(errp, ret, "%s", what);
    }
    return vd_create_close_file(file, ret, "Could not flush the new image", errp);
}

const vd_driver vd_drv_vhdx = {
    .name = "vhdx",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(vhdx_state),
    .create_opts = vhdx_create_opts,
    .probe = vhdx_probe,
    .open = vhdx_open,
    .close = vhdx_close,
    .create = vhdx_create,
    .get_length = vhdx_get_length,
    .pread = vhdx_pread,
    .pwrite = vhdx_pwrite,
    .flush = vhdx_flush,
    .check = vhdx_check,
    .get_info = vhdx_get_info,
    .cluster_size = vhdx_cluster_size,
};
