/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vmdk: VMware Virtual Disk, following VMware's "Virtual Disk Format 5.0"
 * technical note (text descriptor, hosted sparse extents with grain
 * directory / grain tables, stream-optimized compressed grains with
 * markers, footer) and QEMU 7.2's block/vmdk.c for what the note leaves to
 * the implementation, so that images written by either side read the same:
 *  - create writes QEMU's layout and descriptor template byte for byte
 *    (monolithicSparse: embedded descriptor at sector 1, redundant grain
 *    directory, every grain table preallocated, 64 KiB grains; split
 *    subformats name their extents NAME-s001.vmdk / NAME-f001.vmdk,
 *    monolithicFlat NAME-flat.vmdk); streamOptimized is QEMU's layout too
 *    (grain tables up front, header version 3) with each grain stored
 *    deflated behind a grain marker; vdisk also appends a footer and an
 *    end-of-stream marker when it closes a stream it wrote to, as the
 *    VMware note asks (QEMU ignores them: its header's GD offset is valid);
 *  - a sparse extent's size is its header's capacity (not the descriptor's
 *    count), as in QEMU; "RW" and "RDONLY" extent lines are used, others
 *    are skipped (QEMU also skips RDONLY: vdisk serves it read-only);
 *  - the CID is renewed on the first write after each open, and a child
 *    whose parentCID does not match its parent's CID refuses to read from
 *    the parent (QEMU's vmdk_is_cid_valid);
 *  - version 3 sparse headers open read-only unless compressed; seSparse
 *    and VMFSSPARSE ("COWD") extents are read-only.
 * Differences from QEMU: ZERO extents are honoured (QEMU skips the line,
 * which shifts the extents after it); extent names with a "json:" or a
 * protocol prefix are refused (QEMU would open them); relative names
 * resolve against the descriptor's directory; a grain table whose grain
 * directory entry is zero is allocated on write (QEMU fails the write);
 * grain tables are not flushed after each update (QEMU flushes per grain).
 *
 * Limits (hostile images): descriptor <= 1 MiB, <= 4096 extents, grain
 * <= 16 MiB, grain directory <= 8 Mi entries per extent and <= 128 MiB
 * of tables in memory per image, grain tables of <= 4096 entries; tables
 * must lie inside their file.
 *
 * Not supported: writing seSparse/VMFSSPARSE extents, check -r (as QEMU),
 * resize (as QEMU), the seSparse journal (an image that needs a replay is
 * refused, as QEMU does).
 *
 * The per-request loops are small functions (vmdk_map_chunk to find where
 * a range lives, vmdk_read_chunk / vmdk_write_alloc to act on it) so they
 * can move to the shared map-then-read and copy-on-write helpers.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <libdeflate.h>
#include <zlib.h>
#include <json-c/json.h>

#include "internal.h"

#define VMDK_SECTOR 512u
#define VMDK4_MAGIC 0x4b444d56u /* "KDMV" read big-endian */
#define VMDK3_MAGIC 0x434f5744u /* "COWD" */
#define VMDK4_FLAG_NL_DETECT (1u << 0)
#define VMDK4_FLAG_RGD (1u << 1)
#define VMDK4_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK4_FLAG_COMPRESS (1u << 16)
#define VMDK4_FLAG_MARKER (1u << 17)
#define VMDK4_GD_AT_END UINT64_MAX
#define VMDK_COMPRESS_DEFLATE 1u
#define VMDK_GTE_ZEROED 1u
#define VMDK_DESC_MAX ((1u << 20) - 1)
#define VMDK_DESC_EMBED_SECTORS 20u
#define VMDK_MAX_EXTENTS 4096u
#define VMDK_MAX_GRAIN (16u << 20)
#define VMDK_MAX_GD_ENTRIES (8u << 20)
#define VMDK_MAX_TABLE_BYTES (128ull << 20)
#define VMDK_GT_CACHE 16
#define VMDK_ALLOC_LIMIT (1ull << 32) /* sectors a 32-bit grain table entry reaches */
#define VMDK_SPLIT_SIZE 0x80000000ull
#define SES_CONST_MAGIC 0xcafebabeull
#define SES_VOLATILE_MAGIC 0xcafecafeull

enum { MARKER_EOS = 0, MARKER_GT = 1, MARKER_GD = 2, MARKER_FOOTER = 3 };

/* VMDK4 header, offsets from the start of the file (little-endian). */
enum {
    H_MAGIC = 0,
    H_VERSION = 4,
    H_FLAGS = 8,
    H_CAPACITY = 12,
    H_GRANULARITY = 20,
    H_DESC_OFFSET = 28,
    H_DESC_SIZE = 36,
    H_NUM_GTES = 44,
    H_RGD_OFFSET = 48,
    H_GD_OFFSET = 56,
    H_GRAIN_OFFSET = 64,
    H_UNCLEAN = 72,
    H_CHECK_BYTES = 73,
    H_COMPRESS = 77,
};

typedef enum vmdk_kind {
    VMDK_EXT_FLAT,
    VMDK_EXT_ZERO,
    VMDK_EXT_SPARSE,   /* hosted sparse, "KDMV" */
    VMDK_EXT_COWD,     /* VMFSSPARSE / ESX 2 sparse, "COWD" */
    VMDK_EXT_SESPARSE, /* ESXi seSparse */
} vmdk_kind;

typedef struct vmdk_extent {
    vd_node *file;
    bool own_file; /* this extent closes file (others may share it) */
    char *path;    /* as opened, for sharing one node between extents */
    vmdk_kind kind;
    char type[16]; /* the descriptor's word, "" for a sparse file opened as such */
    bool read_only;
    bool compressed;
    bool has_marker;
    bool zero_grain;
    bool gd64; /* seSparse: 64-bit directory and table entries */
    uint32_t version;
    uint64_t start; /* virtual bytes */
    uint64_t size;
    uint64_t flat_offset; /* bytes */
    uint64_t grain;       /* bytes */
    uint32_t gt_entries;
    uint32_t gd_entries;
    uint64_t gd_offset;  /* bytes */
    uint64_t rgd_offset; /* bytes, 0 = none */
    uint32_t *gd;        /* decoded; for seSparse the table sector (0 none) */
    uint32_t *rgd;
    uint64_t se_gt_base;    /* seSparse: sector of the grain tables */
    uint64_t se_grain_base; /* seSparse: sector of the grains */
    uint64_t next_alloc; /* bytes: where the next grain or table goes */
    uint64_t file_len;
    bool stream_dirty;   /* compressed grains written: footer at close */
    uint8_t header[512]; /* VMDK4: the header sector (footer copy) */
    /* grain table cache: VMDK_GT_CACHE tables of gt_entries decoded entries */
    uint64_t *gtc;
    uint64_t gtc_sector[VMDK_GT_CACHE];
    uint64_t gtc_used[VMDK_GT_CACHE];
    uint64_t gtc_clock;
} vmdk_extent;

typedef struct vmdk_state {
    pthread_mutex_t lock;
    bool lock_ready;
    vmdk_extent *ext;
    size_t n_ext;
    size_t cap_ext; /* allocated entries of ext */
    uint64_t size;
    uint64_t table_bytes; /* memory held by grain directories */
    uint64_t desc_offset; /* where the descriptor text lives in bs->file */
    uint64_t desc_space;  /* bytes it may take there (embedded), 0 = its file */
    uint32_t cid;
    uint32_t parent_cid;
    bool cid_updated;
    bool cid_checked;
    char *create_type;
} vmdk_state;

static const vd_opt_desc vmdk_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"adapter_type", VD_OPT_STRING,
     "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX",
     NULL},
    {"backing_file", VD_OPT_STRING, "File name of a base image", NULL},
    {"backing_fmt", VD_OPT_STRING, "Must be 'vmdk' if present", NULL},
    {"compat6", VD_OPT_BOOL, "VMDK version 6 image", "off"},
    {"hwversion", VD_OPT_STRING, "VMDK hardware version", "undefined"},
    {"toolsversion", VD_OPT_STRING, "VMware guest tools version", NULL},
    {"subformat", VD_OPT_STRING,
     "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | "
     "twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} ",
     NULL},
    {"zeroed_grain", VD_OPT_BOOL, "Enable efficient zero writes using the zeroed-grain GTE feature",
     NULL},
    {NULL, 0, NULL, NULL},
};

/* ------------------------------------------------------------------ probe */

static int vmdk_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len < 4) {
        return 0;
    }
    uint32_t magic = vd_ld_be32(buf);
    if (magic == VMDK4_MAGIC || magic == VMDK3_MAGIC) {
        return 100;
    }
    /* a descriptor: comments and blank lines, then "version=N" */
    size_t i = 0;
    while (i < len) {
        if (buf[i] == '#') {
            while (i < len && buf[i] != '\n') {
                i++;
            }
            i++;
            continue;
        }
        if (buf[i] == ' ') {
            while (i < len && buf[i] == ' ') {
                i++;
            }
            if (i < len && buf[i] == '\r') {
                i++;
            }
            if (i >= len || buf[i] != '\n') {
                return 0;
            }
            i++;
            continue;
        }
        if (len - i >= 10 && !memcmp(buf + i, "version=", 8) && buf[i + 8] >= '1' &&
            buf[i + 8] <= '3' &&
            (buf[i + 9] == '\n' || (len - i >= 11 && buf[i + 9] == '\r' && buf[i + 10] == '\n'))) {
            return 100;
        }
        return 0;
    }
    return 0;
}

/* -------------------------------------------------------- descriptor text */

/* The value of "key=value" / key = "value" lines; malloc'ed, NULL if absent. */
static char *vmdk_desc_value(const char *desc, const char *key)
{
    size_t klen = strlen(key);
    for (const char *p = desc; *p;) {
        const char *eol = strchr(p, '\n');
        size_t llen = eol ? (size_t)(eol - p) : strlen(p);
        const char *q = p;
        while (q < p + llen && (*q == ' ' || *q == '\t')) {
            q++;
        }
        if ((size_t)(p + llen - q) > klen && !strncmp(q, key, klen)) {
            const char *v = q + klen;
            while (v < p + llen && (*v == ' ' || *v == '\t')) {
                v++;
            }
            if (v < p + llen && *v == '=') {
                v++;
                while (v < p + llen && (*v == ' ' || *v == '\t')) {
                    v++;
                }
                const char *end = p + llen;
                while (end > v && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t')) {
                    end--;
                }
                if (end - v >= 2 && *v == '"' && end[-1] == '"') {
                    v++;
                    end--;
                } else if (end > v && *v == '"') {
                    /* an opening quote without its closing one */
                    return NULL;
                }
                char *out = vd_malloc((size_t)(end - v) + 1);
                if (out) {
                    memcpy(out, v, (size_t)(end - v));
                    out[end - v] = '\0';
                }
                return out;
            }
        }
        p = eol ? eol + 1 : p + llen;
    }
    return NULL;
}

static bool vmdk_parse_hex32(const char *s, uint32_t *out)
{
    if (!s || !*s) {
        return false;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 16);
    if (errno || end == s || v > UINT32_MAX) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* One parsed extent line. */
typedef struct vmdk_desc_extent {
    bool rdonly;
    uint64_t sectors;
    char type[16];
    char *name; /* NULL for ZERO without a name */
    uint64_t offset;
    bool has_offset;
} vmdk_desc_extent;

static const char *vmdk_skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    return p;
}

static bool vmdk_parse_u64(const char **pp, const char *end, uint64_t *out)
{
    const char *p = *pp;
    uint64_t v = 0;
    if (p >= end || *p < '0' || *p > '9') {
        return false;
    }
    while (p < end && *p >= '0' && *p <= '9') {
        if (vd_mul_overflow(v, 10, &v) || vd_add_overflow(v, (uint64_t)(*p - '0'), &v)) {
            return false;
        }
        p++;
    }
    *pp = p;
    *out = v;
    return true;
}

/*
 * Parse one line as an extent line.  Returns 1 when it is one (*x filled,
 * x->name malloc'ed), 0 when the line is something else, -EINVAL when it
 * starts like an extent line but is malformed.
 */
static int vmdk_parse_extent_line(const char *p, const char *end, vmdk_desc_extent *x)
{
    memset(x, 0, sizeof(*x));
    p = vmdk_skip_ws(p, end);
    const char *w = p;
    while (p < end && *p != ' ' && *p != '\t') {
        p++;
    }
    size_t wl = (size_t)(p - w);
    if (wl == 2 && !memcmp(w, "RW", 2)) {
        x->rdonly = false;
    } else if (wl == 6 && !memcmp(w, "RDONLY", 6)) {
        x->rdonly = true;
    } else {
        return 0; /* not an extent line (or NOACCESS: skipped, as QEMU) */
    }
    p = vmdk_skip_ws(p, end);
    if (p >= end || *p < '0' || *p > '9') {
        return 0;
    }
    if (!vmdk_parse_u64(&p, end, &x->sectors)) {
        return -EINVAL; /* digits that overflow */
    }
    p = vmdk_skip_ws(p, end);
    w = p;
    while (p < end && *p != ' ' && *p != '\t' && *p != '\r') {
        p++;
    }
    wl = (size_t)(p - w);
    if (wl == 0 || wl >= sizeof(x->type)) {
        return wl == 0 ? 0 : -EINVAL;
    }
    memcpy(x->type, w, wl);
    x->type[wl] = '\0';
    p = vmdk_skip_ws(p, end);
    if (p < end && *p == '"') {
        const char *q = ++p;
        while (p < end && *p != '"') {
            p++;
        }
        if (p >= end) {
            return -EINVAL;
        }
        x->name = vd_malloc((size_t)(p - q) + 1);
        if (!x->name) {
            return -ENOMEM;
        }
        memcpy(x->name, q, (size_t)(p - q));
        x->name[p - q] = '\0';
        p++;
        p = vmdk_skip_ws(p, end);
        if (p < end && *p >= '0' && *p <= '9') {
            if (!vmdk_parse_u64(&p, end, &x->offset)) {
                free(x->name);
                x->name = NULL;
                return -EINVAL;
            }
            x->has_offset = true;
            p = vmdk_skip_ws(p, end);
        }
    } else if (strcmp(x->type, "ZERO") != 0) {
        return 0; /* QEMU needs a quoted name: anything else is not an extent */
    }
    while (p < end && (*p == '\r' || *p == ' ' || *p == '\t')) {
        p++;
    }
    if (p != end) {
        free(x->name);
        x->name = NULL;
        return -EINVAL;
    }
    return 1;
}

/* ---------------------------------------------------------------- extents */

static void vmdk_extent_free(vmdk_extent *e)
{
    free(e->gd);
    free(e->rgd);
    free(e->gtc);
    free(e->path);
    if (e->own_file) {
        vd_node_close(e->file);
    }
    memset(e, 0, sizeof(*e));
}

static void vmdk_close(vd_node *bs)
{
    vmdk_state *s = bs->opaque;
    for (size_t i = 0; i < s->n_ext; i++) {
        vmdk_extent_free(&s->ext[i]);
    }
    free(s->ext);
    s->ext = NULL;
    s->n_ext = 0;
    s->cap_ext = 0;
    free(s->create_type);
    s->create_type = NULL;
    if (s->lock_ready) {
        pthread_mutex_destroy(&s->lock);
        s->lock_ready = false;
    }
}

static vmdk_extent *vmdk_new_extent(vmdk_state *s, vd_error **errp, const char *fn)
{
    if (s->n_ext >= VMDK_MAX_EXTENTS) {
        vd_error_set(errp, EFBIG, "VMDK image '%s' has more than %u extents", fn,
                     VMDK_MAX_EXTENTS);
        return NULL;
    }
    vmdk_extent *n = s->ext;
    if (s->n_ext + 1 > s->cap_ext) {
        /* doubling: thousands of extents must not copy the array each time */
        size_t cap = s->cap_ext ? s->cap_ext * 2 : 4;
        n = realloc(s->ext, cap * sizeof(*n));
        if (!n) {
            vd_error_set(errp, ENOMEM, "out of memory");
            return NULL;
        }
        s->ext = n;
        s->cap_ext = cap;
    }
    memset(&n[s->n_ext], 0, sizeof(*n));
    return &n[s->n_ext];
}

/* Read a table of n 32-bit (or 64-bit) little-endian entries at off. */
static int vmdk_read_table(vd_node *bs, vmdk_extent *e, uint64_t off, uint32_t n, bool wide,
                           uint32_t **out, const char *what, vd_error **errp)
{
    vmdk_state *s = bs->opaque;
    size_t esz = wide ? 8 : 4;
    uint64_t bytes = (uint64_t)n * esz;
    if (off > e->file_len || e->file_len - off < bytes) {
        return vd_error_set(errp, EINVAL,
                            "VMDK extent '%s': the %s (offset %llu, %llu bytes) lies past "
                            "the end of the file",
                            e->file->filename, what, (unsigned long long)off,
                            (unsigned long long)bytes);
    }
    if (s->table_bytes + bytes > VMDK_MAX_TABLE_BYTES) {
        return vd_error_set(errp, EFBIG,
                            "VMDK image '%s': grain directories need more than %llu MiB",
                            bs->filename, VMDK_MAX_TABLE_BYTES >> 20);
    }
    uint8_t *raw = vd_malloc(bytes ? bytes : 1);
    uint32_t *t = vd_calloc(n ? n : 1, sizeof(uint32_t));
    if (!raw || !t) {
        free(raw);
        free(t);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    int ret = bytes ? vd_node_pread(e->file, off, bytes, raw, 0) : 0;
    if (ret < 0) {
        free(raw);
        free(t);
        return vd_error_setg_errno(errp, ret, "Could not read the %s of VMDK extent '%s'", what,
                                   e->file->filename);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (wide) {
            /* seSparse: 0 = none, 0x1000_0000_xxxx_xxxx = table number x */
            uint64_t v = vd_ld_le64(raw + 8 * (size_t)i);
            if (v == 0) {
                t[i] = 0;
            } else if ((v >> 32) != 0x10000000u || (v & 0xffffffffu) >= 0xfffffffeu) {
                t[i] = UINT32_MAX; /* invalid: reads fail */
            } else {
                t[i] = (uint32_t)(v & 0xffffffffu) + 1;
            }
        } else {
            t[i] = vd_ld_le32(raw + 4 * (size_t)i);
        }
    }
    free(raw);
    s->table_bytes += bytes;
    *out = t;
    return 0;
}

/* Shared checks of a sparse extent's geometry. */
static int vmdk_sparse_geometry(vd_node *bs, vmdk_extent *e, uint64_t capacity,
                                uint64_t granularity, uint64_t gt_entries, vd_error **errp)
{
    const char *fn = e->file->filename;
    /* QEMU's bounds and words first (iotest 059), then vdisk's tighter ones */
    if (granularity > 0x200000) {
        return vd_error_set(errp, EFBIG, "Invalid granularity, image may be corrupt");
    }
    if (granularity && gt_entries && gt_entries <= 4096 &&
        vd_div_round_up(capacity, gt_entries * granularity) > 32u * 1024 * 1024) {
        return vd_error_set(errp, EFBIG, "L1 size too big");
    }
    if (granularity == 0 || granularity > VMDK_MAX_GRAIN / VMDK_SECTOR) {
        return vd_error_set(errp, EINVAL,
                            "VMDK extent '%s': invalid grain size of %llu sectors (1 to %u "
                            "allowed)",
                            fn, (unsigned long long)granularity, VMDK_MAX_GRAIN / VMDK_SECTOR);
    }
    if (gt_entries == 0 || gt_entries > 4096) {
        return vd_error_set(errp, EINVAL,
                            "VMDK extent '%s': invalid grain table size of %llu entries", fn,
                            (unsigned long long)gt_entries);
    }
    if (capacity > (INT64_MAX / VMDK_SECTOR) / 2) {
        return vd_error_set(errp, EFBIG, "VMDK extent '%s': capacity %llu sectors is too large",
                            fn, (unsigned long long)capacity);
    }
    uint64_t per_gt = gt_entries * granularity; /* sectors */
    uint64_t gd = vd_div_round_up(capacity, per_gt);
    if (gd > VMDK_MAX_GD_ENTRIES) {
        return vd_error_set(errp, EFBIG,
                            "VMDK extent '%s': grain directory of %llu entries is too large "
                            "(at most %u)",
                            fn, (unsigned long long)gd, VMDK_MAX_GD_ENTRIES);
    }
    e->size = capacity * VMDK_SECTOR;
    e->grain = granularity * VMDK_SECTOR;
    e->gt_entries = (uint32_t)gt_entries;
    e->gd_entries = (uint32_t)gd;
    (void)bs;
    return 0;
}

/* Does the file end with footer marker, footer, end-of-stream marker? */
static bool vmdk_has_footer(vmdk_extent *e, uint8_t *footer)
{
    uint8_t b[1536];
    if (e->file_len < 1536 + 1024 ||
        vd_node_pread(e->file, e->file_len - 1536, sizeof(b), b, 0) < 0) {
        return false;
    }
    if (vd_ld_le32(b + 8) != 0 || vd_ld_le32(b + 12) != MARKER_FOOTER ||
        vd_ld_be32(b + 512) != VMDK4_MAGIC || vd_ld_le64(b + 1024) != 0 ||
        vd_ld_le32(b + 1032) != 0 || vd_ld_le32(b + 1036) != MARKER_EOS) {
        return false;
    }
    if (footer) {
        memcpy(footer, b + 512, 512);
    }
    return true;
}

static int vmdk_open_desc_text(vd_node *bs, const char *desc, vd_error **errp);

static int vmdk_open_vmdk4(vd_node *bs, vmdk_extent *e, bool top, vd_error **errp)
{
    vmdk_state *s = bs->opaque;
    uint8_t *h = e->header;
    const char *fn = e->file->filename;
    int ret = vd_node_pread(e->file, 0, 512, h, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read the header of '%s'", fn);
    }
    uint64_t capacity = vd_ld_le64(h + H_CAPACITY);
    if (top && capacity == 0 && vd_ld_le64(h + H_DESC_OFFSET)) {
        /* a descriptor that describes other extents, stored in a sparse file */
        uint64_t doff;
        if (vd_mul_overflow(vd_ld_le64(h + H_DESC_OFFSET), VMDK_SECTOR, &doff) ||
            doff >= e->file_len) {
            return vd_error_set(errp, EINVAL, "'%s': the descriptor lies past the end", fn);
        }
        size_t n = (size_t)VD_MIN(e->file_len - doff, VMDK_DESC_MAX);
        char *d = vd_malloc(n + 1);
        if (!d) {
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        ret = vd_node_pread(e->file, doff, n, d, 0);
        if (ret < 0) {
            free(d);
            return vd_error_setg_errno(errp, ret, "Could not read the descriptor of '%s'", fn);
        }
        d[n] = '\0';
        s->desc_offset = doff;
        s->desc_space = vd_ld_le64(h + H_DESC_SIZE) * VMDK_SECTOR;
        ret = vmdk_open_desc_text(bs, d, errp);
        free(d);
        return ret == 0 ? 1 : ret;
    }
    if (vd_ld_le64(h + H_GD_OFFSET) == VMDK4_GD_AT_END) {
        /* a stream: the footer at the end has the real header */
        uint8_t footer[512];
        if (!vmdk_has_footer(e, footer)) {
            return vd_error_set(errp, EINVAL, "Invalid footer");
        }
        memcpy(h, footer, 512);
        capacity = vd_ld_le64(h + H_CAPACITY);
    }
    e->version = vd_ld_le32(h + H_VERSION);
    uint32_t flags = vd_ld_le32(h + H_FLAGS);
    e->compressed = vd_ld_le16(h + H_COMPRESS) == VMDK_COMPRESS_DEFLATE;
    if (e->version > 3) {
        return vd_error_set(errp, ENOTSUP, "Unsupported VMDK version %u", e->version);
    }
    if (e->version == 3 && !e->compressed) {
        /* version 3 adds changed block tracking, which a writer would have
         * to keep up to date: read-only, as QEMU */
        if (bs->flags & VD_NODE_RDWR) {
            return vd_error_set(errp, EINVAL, "VMDK version 3 must be read only");
        }
        e->read_only = true;
    }
    if (vd_ld_le32(h + H_NUM_GTES) > 512) {
        return vd_error_set(errp, EINVAL, "L2 table size too big");
    }
    /* QEMU keeps grain table entries x grain size in 32 bits */
    if ((uint32_t)(vd_ld_le32(h + H_NUM_GTES) * vd_ld_le64(h + H_GRANULARITY)) == 0) {
        return vd_error_set(errp, EINVAL, "L1 entry size is invalid");
    }
    uint64_t grain_off = vd_ld_le64(h + H_GRAIN_OFFSET);
    if (grain_off > vd_div_round_up(e->file_len, VMDK_SECTOR)) {
        return vd_error_set(errp, EINVAL, "File truncated, expecting at least %lld bytes",
                            (long long)(grain_off * VMDK_SECTOR));
    }
    ret = vmdk_sparse_geometry(bs, e, capacity, vd_ld_le64(h + H_GRANULARITY),
                               vd_ld_le32(h + H_NUM_GTES), errp);
    if (ret < 0) {
        return ret;
    }
    e->has_marker = flags & VMDK4_FLAG_MARKER;
    e->zero_grain = flags & VMDK4_FLAG_ZERO_GRAIN;
    uint64_t gd = vd_ld_le64(h + H_GD_OFFSET), rgd = vd_ld_le64(h + H_RGD_OFFSET);
    if (gd > UINT64_MAX / VMDK_SECTOR || rgd > UINT64_MAX / VMDK_SECTOR) {
        return vd_error_set(errp, EINVAL, "'%s': grain directory offset out of range", fn);
    }
    e->gd_offset = gd * VMDK_SECTOR;
    ret = vmdk_read_table(bs, e, e->gd_offset, e->gd_entries, false, &e->gd,
                          "grain directory", errp);
    if (ret < 0) {
        return ret;
    }
    if ((flags & VMDK4_FLAG_RGD) && rgd) {
        e->rgd_offset = rgd * VMDK_SECTOR;
        ret = vmdk_read_table(bs, e, e->rgd_offset, e->gd_entries, false, &e->rgd,
                              "redundant grain directory", errp);
        if (ret < 0) {
            return ret;
        }
    }
    e->kind = VMDK_EXT_SPARSE;
    /* grains are appended; an old stream's footer is overwritten */
    uint64_t end = e->file_len;
    if (e->compressed && vmdk_has_footer(e, NULL)) {
        end -= 1536;
    }
    if (e->compressed) {
        e->next_alloc = vd_div_round_up(end, VMDK_SECTOR) * VMDK_SECTOR;
    } else {
        e->next_alloc = vd_div_round_up(end, e->grain) * e->grain;
    }
    return 0;
}

static int vmdk_open_cowd(vd_node *bs, vmdk_extent *e, vd_error **errp)
{
    uint8_t h[44];
    int ret = vd_node_pread(e->file, 0, sizeof(h), h, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read the header of '%s'",
                                   e->file->filename);
    }
    /* magic, version, flags, disk_sectors, granularity, l1dir_offset, l1dir_size */
    uint64_t capacity = vd_ld_le32(h + 12);
    uint32_t granularity = vd_ld_le32(h + 16);
    uint32_t gd_entries = vd_ld_le32(h + 24);
    /* QEMU takes the directory's size from l1dir_size and bounds it so */
    if (granularity <= 0x200000 && gd_entries > 32u * 1024 * 1024) {
        return vd_error_set(errp, EFBIG, "L1 size too big");
    }
    ret = vmdk_sparse_geometry(bs, e, capacity, granularity, 4096, errp);
    if (ret < 0) {
        return ret;
    }
    if (gd_entries < e->gd_entries) {
        /* fewer entries than the capacity needs: reads past the last
         * one fail, as in QEMU (vmdk_lookup); more are never looked at */
        e->gd_entries = gd_entries;
    }
    e->gd_offset = (uint64_t)vd_ld_le32(h + 20) * VMDK_SECTOR;
    ret = vmdk_read_table(bs, e, e->gd_offset, e->gd_entries, false, &e->gd,
                          "grain directory", errp);
    if (ret < 0) {
        return ret;
    }
    e->kind = VMDK_EXT_COWD;
    e->read_only = true;
    return 0;
}

static int vmdk_open_sesparse(vd_node *bs, vmdk_extent *e, vd_error **errp)
{
    uint8_t h[512], v[512];
    const char *fn = e->file->filename;
    if (bs->flags & VD_NODE_RDWR) {
        /* as QEMU: only a read-only open (qemu-io -r, convert's source) */
        return vd_error_set(errp, EPERM, "No write support for seSparse images available");
    }
    int ret = vd_node_pread(e->file, 0, 512, h, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read the header of '%s'", fn);
    }
    if (vd_ld_le64(h) != SES_CONST_MAGIC) {
        return vd_error_set(errp, EINVAL, "'%s': bad seSparse header magic", fn);
    }
    if (vd_ld_le64(h + 8) != 0x0000000200000001ull) {
        return vd_error_set(errp, ENOTSUP, "'%s': unsupported seSparse version 0x%llx", fn,
                            (unsigned long long)vd_ld_le64(h + 8));
    }
    if (vd_ld_le64(h + 24) != 8 || vd_ld_le64(h + 32) != 64 || vd_ld_le64(h + 40) != 0) {
        return vd_error_set(errp, ENOTSUP,
                            "'%s': unsupported seSparse grain size, table size or flags", fn);
    }
    if (!vd_buffer_is_zero(h + 48, 32) || !vd_buffer_is_zero(h + 208, 304)) {
        return vd_error_set(errp, ENOTSUP, "'%s': unsupported seSparse reserved fields", fn);
    }
    uint64_t voff = vd_ld_le64(h + 80);
    if (voff > e->file_len / VMDK_SECTOR) {
        return vd_error_set(errp, EINVAL, "'%s': volatile header past the end", fn);
    }
    ret = vd_node_pread(e->file, voff * VMDK_SECTOR, 512, v, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read the volatile header of '%s'", fn);
    }
    if (vd_ld_le64(v) != SES_VOLATILE_MAGIC) {
        return vd_error_set(errp, EINVAL, "'%s': bad seSparse volatile header magic", fn);
    }
    if (vd_ld_le64(v + 24)) {
        /* QEMU's words */
        return vd_error_set(errp, ENOTSUP, "Image is dirty, Replaying journal not supported");
    }
    if (!vd_buffer_is_zero(v + 32, 480)) {
        return vd_error_set(errp, ENOTSUP, "'%s': non-zero seSparse volatile header padding",
                            fn);
    }
    uint64_t capacity = vd_ld_le64(h + 16);
    ret = vmdk_sparse_geometry(bs, e, capacity, 8, 4096, errp);
    if (ret < 0) {
        return ret;
    }
    uint64_t gd_bytes;
    if (vd_mul_overflow(vd_ld_le64(h + 136), VMDK_SECTOR, &gd_bytes) ||
        gd_bytes / 8 > VMDK_MAX_GD_ENTRIES) {
        return vd_error_set(errp, EFBIG, "'%s': seSparse grain directory too large", fn);
    }
    /* the directory's own size rules, as in QEMU */
    e->gd_entries = (uint32_t)(gd_bytes / 8);
    if (vd_ld_le64(h + 128) > UINT64_MAX / VMDK_SECTOR) {
        return vd_error_set(errp, EINVAL, "'%s': grain directory offset out of range", fn);
    }
    e->gd_offset = vd_ld_le64(h + 128) * VMDK_SECTOR;
    e->se_gt_base = vd_ld_le64(h + 144);
    e->se_grain_base = vd_ld_le64(h + 192);
    if (e->se_gt_base > UINT64_MAX / 1024 || e->se_grain_base > UINT64_MAX / 1024) {
        return vd_error_set(errp, EINVAL, "'%s': seSparse offsets out of range", fn);
    }
    e->gd64 = true;
    ret = vmdk_read_table(bs, e, e->gd_offset, e->gd_entries, true, &e->gd,
                          "grain directory", errp);
    if (ret < 0) {
        return ret;
    }
    e->kind = VMDK_EXT_SESPARSE;
    e->read_only = true;
    return 0;
}

/* Open the sparse extent in e->file: VMDK4, COWD, or seSparse when se. */
static int vmdk_open_sparse(vd_node *bs, vmdk_extent *e, bool top, bool se, vd_error **errp)
{
    int64_t len = vd_node_get_length(e->file);
    if (len < 0) {
        return vd_error_setg_errno(errp, (int)len, "Could not get the size of '%s'",
                                   e->file->filename);
    }
    e->file_len = (uint64_t)len;
    if (se) {
        return vmdk_open_sesparse(bs, e, errp);
    }
    uint8_t m[4];
    if (e->file_len < 4) {
        return vd_error_set(errp, EINVAL, "'%s': file is too small, not a valid image",
                            e->file->filename);
    }
    int ret = vd_node_pread(e->file, 0, 4, m, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read '%s'", e->file->filename);
    }
    switch (vd_ld_be32(m)) {
    case VMDK4_MAGIC:
        return vmdk_open_vmdk4(bs, e, top, errp);
    case VMDK3_MAGIC:
        return vmdk_open_cowd(bs, e, errp);
    default:
        return vd_error_set(errp, EINVAL, "'%s' is not a VMDK sparse extent", e->file->filename);
    }
}

/*
 * The path of an extent file named in the descriptor: relative to the
 * descriptor's directory; names that would select a protocol or an option
 * graph are refused.
 */
static char *vmdk_extent_path(vd_node *bs, const char *name, vd_error **errp)
{
    if (!name[0]) {
        vd_error_set(errp, EINVAL, "VMDK descriptor '%s' names an extent with an empty name",
                     bs->filename);
        return NULL;
    }
    if (!strncmp(name, "json:", 5)) {
        vd_error_set(errp, EPERM,
                     "VMDK descriptor '%s' names an extent with a json: description; "
                     "refusing to follow it",
                     bs->filename);
        return NULL;
    }
    if (vd_driver_find_protocol(name)) {
        vd_error_set(errp, EPERM,
                     "VMDK descriptor '%s' names an extent with a protocol prefix ('%s'); "
                     "refusing to follow it",
                     bs->filename, name);
        return NULL;
    }
    if (name[0] == '/') {
        return vd_strdup(name);
    }
    /* the descriptor's directory, through filters (blkdebug:...:x.vmdk
     * names its extents relative to x.vmdk, as QEMU's bdrv_dirname) */
    const vd_node *f = bs->file;
    while (f && f->drv->is_filter && f->file) {
        f = f->file;
    }
    if (!f || !f->exact_filename || strcmp(f->drv->name, "file") != 0) {
        /* QEMU's words, with its bdrv_dirname error (iotest 059) */
        vd_error_set(errp, EINVAL,
                     "Cannot use relative paths with VMDK descriptor file '%s': "
                     "Cannot generate a base directory for %s nodes",
                     bs->file ? bs->file->filename : bs->filename,
                     f ? f->drv->name : "unknown");
        return NULL;
    }
    return vd_path_combine(f->exact_filename, name);
}

static vd_node *vmdk_open_extent_file(vd_node *bs, const char *path, bool rdonly,
                                      vd_error **errp)
{
    vd_opts *o = vd_opts_new();
    if (!o) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    vd_opts_set(o, "driver", "file");
    static const char *const inherited[] = {"cache.direct", "cache.no-flush", "locking",
                                            "aio"};
    for (size_t i = 0; bs->file && bs->file->options && i < VD_ARRAY_SIZE(inherited); i++) {
        const char *v = vd_opts_get(bs->file->options, inherited[i]);
        if (v) {
            vd_opts_set(o, inherited[i], v);
        }
    }
    unsigned flags = (bs->flags & ~(VD_NODE_NO_BACKING | VD_NODE_UNDER_FORMAT)) |
                     VD_NODE_PROTOCOL | VD_NODE_UNDER_FORMAT;
    if (rdonly) {
        flags &= ~VD_NODE_RDWR;
    }
    vd_node *n = vd_node_open_file(path, o, flags, errp);
    vd_opts_free(o);
    if (n) {
        n->parent = bs;
    }
    return n;
}

/* QEMU's words for an extent line it cannot use: the line itself (bounded) */
static int vmdk_invalid_line(const char *line, const char *end, vd_error **errp)
{
    return vd_error_set(errp, EINVAL, "Invalid extent line: %.*s",
                        (int)VD_MIN(end - line, 1024), line);
}

static int vmdk_add_desc_extent(vd_node *bs, const vmdk_desc_extent *x, const char *line,
                                const char *end, vd_error **errp)
{
    vmdk_state *s = bs->opaque;
    bool flat = !strcmp(x->type, "FLAT") || !strcmp(x->type, "VMFS");
    bool zero = !strcmp(x->type, "ZERO");
    bool sparse = !strcmp(x->type, "SPARSE") || !strcmp(x->type, "VMFSSPARSE");
    bool se = !strcmp(x->type, "SESPARSE");

    if (!flat && !zero && !sparse && !se) {
        return 0; /* QEMU skips extent kinds it does not know */
    }
    if (x->sectors == 0) {
        return 0; /* as QEMU */
    }
    /* FLAT needs an offset; VMFS, SPARSE and the others take none */
    if (!strcmp(x->type, "FLAT") != x->has_offset) {
        return vmdk_invalid_line(line, end, errp);
    }
    if (x->sectors > (uint64_t)INT64_MAX / VMDK_SECTOR ||
        x->offset > (uint64_t)INT64_MAX / VMDK_SECTOR) {
        return vd_error_set(errp, EFBIG, "Extent of %llu sectors in '%s' is too large",
                            (unsigned long long)x->sectors, bs->filename);
    }
    vmdk_extent *e = vmdk_new_extent(s, errp, bs->filename);
    if (!e) {
        return -EFBIG;
    }
    snprintf(e->type, sizeof(e->type), "%s", x->type);
    e->read_only = x->rdonly;
    if (zero) {
        e->kind = VMDK_EXT_ZERO;
        e->size = x->sectors * VMDK_SECTOR;
    } else {
        if (!x->name) {
            return vmdk_invalid_line(line, end, errp);
        }
        char *path = vmdk_extent_path(bs, x->name, errp);
        if (!path) {
            return -EPERM;
        }
        /* extents in one file share its node (one descriptor may name a
         * file thousands of times) */
        vmdk_extent *sharer = NULL;
        for (size_t i = 0; i < s->n_ext; i++) {
            if (s->ext[i].path && !strcmp(s->ext[i].path, path)) {
                sharer = &s->ext[i];
                e->file = sharer->file;
                break;
            }
        }
        /* two extents that allocate in one sparse file would hand out the
         * same space twice: such files are only read */
        if (sharer && (sharer->kind != VMDK_EXT_FLAT || !flat)) {
            for (size_t i = 0; i < s->n_ext; i++) {
                if (s->ext[i].file == sharer->file) {
                    s->ext[i].read_only = true;
                }
            }
            e->read_only = true;
        }
        if (!e->file) {
            e->file = vmdk_open_extent_file(bs, path, x->rdonly || se, errp);
            if (!e->file) {
                free(path);
                return -EIO;
            }
            e->own_file = true;
        }
        e->path = path;
        if (flat) {
            e->kind = VMDK_EXT_FLAT;
            e->size = x->sectors * VMDK_SECTOR;
            e->flat_offset = x->offset * VMDK_SECTOR;
        } else {
            int ret = vmdk_open_sparse(bs, e, false, se, errp);
            if (ret < 0) {
                vmdk_extent_free(e);
                return ret;
            }
            snprintf(e->type, sizeof(e->type), "%s", x->type);
            e->read_only = e->read_only || x->rdonly || e->kind != VMDK_EXT_SPARSE;
        }
    }
    uint64_t start = s->size;
    if (vd_add_overflow(start, e->size, &s->size) || s->size > (uint64_t)INT64_MAX / 2) {
        vmdk_extent_free(e);
        return vd_error_set(errp, EFBIG, "VMDK image '%s' is too large", bs->filename);
    }
    e->start = start;
    s->n_ext++;
    return 0;
}

static int vmdk_open_desc_text(vd_node *bs, const char *desc, vd_error **errp)
{
    vmdk_state *s = bs->opaque;
    char *ct = vmdk_desc_value(desc, "createType");
    if (!ct) {
        return vd_error_set(errp, EINVAL, "invalid VMDK image descriptor in '%s': no createType",
                            bs->filename);
    }
    static const char *const types[] = {"monolithicFlat",       "vmfs",
                                        "vmfsSparse",           "seSparse",
                                        "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                                        "monolithicSparse",     "streamOptimized",
                                        "vmfsRaw",              "vmfsThin",
                                        "vmfsPreallocated",     "vmfsEagerZeroedThick",
                                        "custom",               NULL};
    bool known = false;
    for (size_t i = 0; types[i]; i++) {
        known = known || !strcmp(types[i], ct);
    }
    if (!known) {
        vd_error_set(errp, ENOTSUP, "'%s': unsupported VMDK image type '%s'", bs->filename, ct);
        free(ct);
        return -ENOTSUP;
    }
    free(s->create_type);
    s->create_type = ct;

    for (const char *p = desc; *p;) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol : p + strlen(p);
        vmdk_desc_extent x;
        int r = vmdk_parse_extent_line(p, end, &x);
        if (r < 0) {
            return vmdk_invalid_line(p, end, errp);
        }
        if (r > 0) {
            int ret = vmdk_add_desc_extent(bs, &x, p, end, errp);
            free(x.name);
            if (ret < 0) {
                return ret;
            }
        }
        p = eol ? eol + 1 : end;
    }
    return 0;
}

/* Read the descriptor text at s->desc_offset (NUL-terminated, malloc'ed). */
static char *vmdk_read_desc(vd_node *bs, size_t *lenp, vd_error **errp)
{
    vmdk_state *s = bs->opaque;
    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        vd_error_setg_errno(errp, (int)flen, "Could not get the size of '%s'", bs->filename);
        return NULL;
    }
    uint64_t n = (uint64_t)flen > s->desc_offset ? (uint64_t)flen - s->desc_offset : 0;
    if (s->desc_space) {
        n = VD_MIN(n, s->desc_space);
    }
    n = VD_MIN(n, VMDK_DESC_MAX);
    char *d = vd_malloc(n + 1);
    if (!d) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    int ret = n ? vd_node_pread(bs->file, s->desc_offset, n, d, 0) : 0;
    if (ret < 0) {
        free(d);
        vd_error_setg_errno(errp, ret, "Could not read the descriptor of '%s'", bs->filename);
        return NULL;
    }
    d[n] = '\0';
    if (lenp) {
        *lenp = strlen(d);
    }
    return d;
}

static int vmdk_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    vmdk_state *s = bs->opaque;
    int ret;
    (void)opts;

    pthread_mutex_init(&s->lock, NULL);
    s->lock_ready = true;

    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        ret = vd_error_setg_errno(errp, (int)flen, "Could not get the size of '%s'",
                                  bs->filename);
        goto fail;
    }
    if (flen < 4) {
        ret = vd_error_set(errp, EINVAL, "'%s': file is too small, not a valid image",
                           bs->filename);
        goto fail;
    }
    uint8_t m[4];
    ret = vd_node_pread(bs->file, 0, 4, m, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read '%s'", bs->filename);
        goto fail;
    }
    if (vd_ld_be32(m) == VMDK4_MAGIC || vd_ld_be32(m) == VMDK3_MAGIC) {
        vmdk_extent top;
        memset(&top, 0, sizeof(top));
        top.file = bs->file;
        ret = vmdk_open_sparse(bs, &top, true, false, errp);
        if (ret < 0) {
            vmdk_extent_free(&top);
            goto fail;
        }
        if (ret == 0) {
            /* the sparse file is the disk; its embedded descriptor (if any)
             * holds the CIDs and the parent */
            vmdk_extent *e = vmdk_new_extent(s, errp, bs->filename);
            if (!e) {
                vmdk_extent_free(&top);
                ret = -ENOMEM;
                goto fail;
            }
            *e = top;
            s->n_ext = 1;
            s->size = e->size;
            s->desc_offset = 0x200;
            s->desc_space = VMDK_DESC_EMBED_SECTORS * VMDK_SECTOR;
            if (e->kind == VMDK_EXT_SPARSE) {
                uint64_t doff = vd_ld_le64(e->header + H_DESC_OFFSET);
                uint64_t dsz = vd_ld_le64(e->header + H_DESC_SIZE);
                if (doff && doff < UINT64_MAX / VMDK_SECTOR && dsz && dsz < VMDK_DESC_MAX) {
                    s->desc_offset = doff * VMDK_SECTOR;
                    s->desc_space = dsz * VMDK_SECTOR;
                }
            }
            if (e->kind != VMDK_EXT_COWD) {
                /* QEMU names no create type for a bare COWD extent */
                s->create_type =
                    vd_strdup(e->compressed ? "streamOptimized" : "monolithicSparse");
            }
        }
        ret = 0;
    } else {
        s->desc_offset = 0;
        s->desc_space = 0;
        char *d = vmdk_read_desc(bs, NULL, errp);
        if (!d) {
            ret = -EIO;
            goto fail;
        }
        ret = vmdk_open_desc_text(bs, d, errp);
        free(d);
        if (ret < 0) {
            goto fail;
        }
    }

    /* CIDs and the parent come from the descriptor text, as in QEMU */
    char *d = vmdk_read_desc(bs, NULL, errp);
    if (!d) {
        ret = -EIO;
        goto fail;
    }
    char *cid = vmdk_desc_value(d, "CID");
    char *pcid = vmdk_desc_value(d, "parentCID");
    char *parent = vmdk_desc_value(d, "parentFileNameHint");
    free(d);
    bool cid_ok = vmdk_parse_hex32(cid, &s->cid);
    bool pcid_ok = vmdk_parse_hex32(pcid, &s->parent_cid);
    free(cid);
    free(pcid);
    if (!cid_ok || !pcid_ok) {
        free(parent);
        ret = vd_error_set(errp, EINVAL, "'%s': the VMDK descriptor has no valid %s",
                           bs->filename, cid_ok ? "parentCID" : "CID");
        goto fail;
    }
    if (parent && parent[0]) {
        bs->backing_file = parent;
        bs->backing_format = vd_strdup("vmdk");
    } else {
        free(parent);
    }

    bool all_ro = true;
    for (size_t i = 0; i < s->n_ext; i++) {
        vmdk_extent *e = &s->ext[i];
        all_ro = all_ro && e->read_only;
        if (e->kind != VMDK_EXT_FLAT && e->kind != VMDK_EXT_ZERO && !e->compressed) {
            bs->pwrite_zeroes_alignment =
                (uint32_t)VD_MAX(bs->pwrite_zeroes_alignment, e->grain);
        }
    }
    (void)all_ro;
    bs->request_alignment = VMDK_SECTOR;
    bs->has_zero_init = true;
    for (size_t i = 0; i < s->n_ext; i++) {
        if (s->ext[i].kind == VMDK_EXT_FLAT) {
            bs->has_zero_init = s->ext[i].file->has_zero_init;
        }
    }
    return 0;

fail:
    vmdk_close(bs);
    return ret;
}

static int64_t vmdk_get_length(vd_node *bs)
{
    vmdk_state *s = bs->opaque;
    return (int64_t)s->size;
}

/* ---------------------------------------------------------- grain lookup */

typedef enum vmdk_where {
    VMDK_UNALLOC, /* this layer does not have it */
    VMDK_ZEROED,  /* reads zeroes (zeroed grain, ZERO extent) */
    VMDK_DATA,    /* at host in e->file */
} vmdk_where;

typedef struct vmdk_map {
    vmdk_extent *e;
    vmdk_where where;
    uint64_t host;       /* DATA: byte offset of the grain (compressed: its marker) */
    uint64_t in_grain;   /* offset of the request inside the grain */
    uint64_t n;          /* bytes this answer covers */
    uint32_t gd_index;
    uint32_t gt_index;
    uint64_t gt_sector;  /* 0 = no grain table */
} vmdk_map;

static vmdk_extent *vmdk_find_extent(vmdk_state *s, uint64_t offset)
{
    size_t lo = 0, hi = s->n_ext;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (offset < s->ext[mid].start) {
            hi = mid;
        } else if (offset >= s->ext[mid].start + s->ext[mid].size) {
            lo = mid + 1;
        } else {
            return &s->ext[mid];
        }
    }
    return NULL;
}

/* Lock held.  The grain table at sector gt (decoded), from the cache. */
static int vmdk_load_gt(vmdk_extent *e, uint64_t gt, uint64_t **out)
{
    if (!e->gtc) {
        e->gtc = vd_calloc((size_t)VMDK_GT_CACHE * e->gt_entries, sizeof(uint64_t));
        if (!e->gtc) {
            return -ENOMEM;
        }
    }
    int victim = 0;
    for (int i = 0; i < VMDK_GT_CACHE; i++) {
        if (e->gtc_used[i] && e->gtc_sector[i] == gt) {
            e->gtc_used[i] = ++e->gtc_clock;
            *out = e->gtc + (size_t)i * e->gt_entries;
            return 0;
        }
        if (e->gtc_used[i] < e->gtc_used[victim]) {
            victim = i;
        }
    }
    size_t esz = e->gd64 ? 8 : 4;
    size_t bytes = (size_t)e->gt_entries * esz;
    uint64_t off;
    if (vd_mul_overflow(gt, VMDK_SECTOR, &off) || off > e->file_len ||
        e->file_len - off < bytes) {
        return -EIO; /* a table past the end of the file */
    }
    uint8_t *raw = vd_malloc(bytes);
    if (!raw) {
        return -ENOMEM;
    }
    vd_node_event(e->file, VD_EV_L2_LOAD);
    int ret = vd_node_pread(e->file, off, bytes, raw, 0);
    if (ret < 0) {
        free(raw);
        return ret;
    }
    uint64_t *t = e->gtc + (size_t)victim * e->gt_entries;
    for (uint32_t i = 0; i < e->gt_entries; i++) {
        t[i] = e->gd64 ? vd_ld_le64(raw + 8 * (size_t)i) : vd_ld_le32(raw + 4 * (size_t)i);
    }
    free(raw);
    e->gtc_sector[victim] = gt;
    e->gtc_used[victim] = ++e->gtc_clock;
    *out = t;
    return 0;
}

/* Lock held.  Where the grain holding extent offset off lives. */
static int vmdk_lookup(vmdk_extent *e, uint64_t off, vmdk_map *m)
{
    uint64_t g = off / e->grain;
    m->in_grain = off % e->grain;
    m->gd_index = (uint32_t)(g / e->gt_entries);
    m->gt_index = (uint32_t)(g % e->gt_entries);
    m->gt_sector = 0;
    m->where = VMDK_UNALLOC;
    if (g / e->gt_entries >= e->gd_entries) {
        return -EIO;
    }
    uint32_t gde = e->gd[m->gd_index];
    if (gde == 0) {
        return 0;
    }
    if (e->kind == VMDK_EXT_SESPARSE) {
        if (gde == UINT32_MAX) {
            return -EIO;
        }
        /* table number gde-1, each table 4096 * 8 bytes = 64 sectors */
        m->gt_sector = e->se_gt_base + (uint64_t)(gde - 1) * 64;
    } else {
        m->gt_sector = gde;
    }
    uint64_t *gt;
    int ret = vmdk_load_gt(e, m->gt_sector, &gt);
    if (ret < 0) {
        return ret;
    }
    uint64_t v = gt[m->gt_index];
    if (e->kind == VMDK_EXT_SESPARSE) {
        switch (v >> 60) {
        case 0:
            if (v) {
                return -EIO;
            }
            return 0;
        case 1: /* unmapped */
        case 2: /* zero */
            m->where = VMDK_ZEROED;
            return 0;
        case 3: {
            uint64_t idx = ((v & 0x0fff000000000000ull) >> 48) | ((v & 0x0000ffffffffffffull) << 12);
            uint64_t sec;
            if (vd_mul_overflow(idx, 8, &sec) || vd_add_overflow(sec, e->se_grain_base, &sec) ||
                sec > UINT64_MAX / VMDK_SECTOR) {
                return -EIO;
            }
            m->host = sec * VMDK_SECTOR;
            m->where = VMDK_DATA;
            return 0;
        }
        default:
            return -EIO;
        }
    }
    if (v == 0) {
        return 0;
    }
    if (e->zero_grain && v == VMDK_GTE_ZEROED) {
        m->where = VMDK_ZEROED;
        return 0;
    }
    m->host = v * VMDK_SECTOR;
    m->where = VMDK_DATA;
    return 0;
}

/*
 * Where [offset, offset+len) begins: fills m for the first piece (at most
 * to the end of its grain or extent).  Takes the lock for sparse extents.
 */
static int vmdk_map_chunk(vd_node *bs, uint64_t offset, uint64_t len, vmdk_map *m)
{
    vmdk_state *s = bs->opaque;
    vmdk_extent *e = vmdk_find_extent(s, offset);
    if (!e) {
        return -EIO;
    }
    uint64_t off = offset - e->start;
    uint64_t left = VD_MIN(len, e->size - off);
    m->e = e;
    switch (e->kind) {
    case VMDK_EXT_FLAT:
        m->where = VMDK_DATA;
        m->host = e->flat_offset + off;
        m->in_grain = 0;
        m->n = left;
        return 0;
    case VMDK_EXT_ZERO:
        m->where = VMDK_ZEROED;
        m->n = left;
        return 0;
    default:
        break;
    }
    pthread_mutex_lock(&s->lock);
    int ret = vmdk_lookup(e, off, m);
    pthread_mutex_unlock(&s->lock);
    m->n = VD_MIN(left, e->grain - m->in_grain);
    return ret;
}

/* ----------------------------------------------------------------- reads */

/* Read a whole compressed grain at host into out (e->grain bytes); *outlen
 * is how many bytes it inflated to. */
static int vmdk_read_compressed(vmdk_extent *e, uint64_t host, uint8_t *out, size_t *outlen)
{
    uint8_t hdr[12];
    uint64_t data_off = host;
    uint64_t clen = e->grain;
    int ret;
    if (e->has_marker) {
        ret = vd_node_pread(e->file, host, sizeof(hdr), hdr, 0);
        if (ret < 0) {
            return ret;
        }
        clen = vd_ld_le32(hdr + 8);
        data_off = host + 12;
    }
    if (clen == 0 || clen > 2 * e->grain || data_off > e->file_len) {
        return -EIO;
    }
    clen = VD_MIN(clen, e->file_len - data_off);
    uint8_t *in = vd_malloc(clen);
    if (!in) {
        return -ENOMEM;
    }
    ret = vd_node_pread(e->file, data_off, clen, in, 0);
    if (ret < 0) {
        free(in);
        return ret;
    }
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit(&z) != Z_OK) {
        free(in);
        return -ENOMEM;
    }
    z.next_in = in;
    z.avail_in = (uInt)clen;
    z.next_out = out;
    z.avail_out = (uInt)e->grain;
    int zr = inflate(&z, Z_FINISH);
    *outlen = e->grain - z.avail_out;
    inflateEnd(&z);
    free(in);
    if (zr != Z_STREAM_END) {
        return -EIO;
    }
    return 0;
}

/* Read the piece m describes into buf (offset: its virtual offset). */
static int vmdk_read_chunk(vd_node *bs, const vmdk_map *m, uint64_t offset, uint8_t *buf)
{
    vmdk_state *s = bs->opaque;
    vmdk_extent *e = m->e;
    switch (m->where) {
    case VMDK_ZEROED:
        memset(buf, 0, m->n);
        return 0;
    case VMDK_UNALLOC:
        if (bs->backing) {
            if (!s->cid_checked) {
                bool ok = true;
                if (bs->backing->drv == bs->drv) {
                    vmdk_state *ps = bs->backing->opaque;
                    ok = ps->cid == s->parent_cid;
                }
                if (!ok) {
                    return -EINVAL;
                }
                s->cid_checked = true;
            }
            return vd_node_read_backing(bs, offset, m->n, buf);
        }
        memset(buf, 0, m->n);
        return 0;
    case VMDK_DATA:
        break;
    }
    if (!e->compressed) {
        vd_node_event(e->file, VD_EV_READ_AIO);
        return vd_node_pread(e->file, m->host + m->in_grain, m->n, buf, 0);
    }
    uint8_t *g = vd_malloc(e->grain);
    if (!g) {
        return -ENOMEM;
    }
    size_t glen = 0;
    vd_node_event(e->file, VD_EV_READ_COMPRESSED);
    int ret = vmdk_read_compressed(e, m->host, g, &glen);
    if (ret == 0 && m->in_grain + m->n > glen) {
        ret = -EIO;
    }
    if (ret == 0) {
        memcpy(buf, g + m->in_grain, m->n);
    }
    free(g);
    return ret;
}

static int vmdk_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    uint8_t *p = buf;
    (void)flags;
    while (len > 0) {
        vmdk_map m;
        int ret = vmdk_map_chunk(bs, offset, len, &m);
        if (ret == 0) {
            ret = vmdk_read_chunk(bs, &m, offset, p);
        }
        if (ret < 0) {
            return ret;
        }
        offset += m.n;
        len -= m.n;
        p += m.n;
    }
    return 0;
}

/* ---------------------------------------------------------------- writes */

/* Lock held.  Store v in the grain table entry m points at (and its copy). */
static int vmdk_set_gte(vmdk_extent *e, const vmdk_map *m, uint32_t v)
{
    uint8_t le[4];
    vd_st_le32(le, v);
    vd_node_event(e->file, VD_EV_L2_UPDATE);
    int ret = vd_node_pwrite(e->file, m->gt_sector * VMDK_SECTOR + (uint64_t)m->gt_index * 4, 4,
                             le, 0);
    if (ret < 0) {
        return ret;
    }
    if (e->rgd && e->rgd[m->gd_index]) {
        ret = vd_node_pwrite(e->file,
                             (uint64_t)e->rgd[m->gd_index] * VMDK_SECTOR +
                                 (uint64_t)m->gt_index * 4,
                             4, le, 0);
        if (ret < 0) {
            return ret;
        }
    }
    for (int i = 0; i < VMDK_GT_CACHE; i++) {
        if (e->gtc_used[i] && e->gtc_sector[i] == m->gt_sector) {
            e->gtc[(size_t)i * e->gt_entries + m->gt_index] = v;
        }
    }
    return 0;
}

/* Lock held.  Reserve bytes (grain-aligned for uncompressed extents). */
static int vmdk_reserve(vmdk_extent *e, uint64_t bytes, uint64_t *at)
{
    uint64_t start = e->next_alloc, end;
    if (vd_add_overflow(start, bytes, &end) || end / VMDK_SECTOR > VMDK_ALLOC_LIMIT) {
        return -EFBIG;
    }
    *at = start;
    e->next_alloc = e->compressed ? vd_div_round_up(end, VMDK_SECTOR) * VMDK_SECTOR
                                  : vd_div_round_up(end, e->grain) * e->grain;
    e->file_len = VD_MAX(e->file_len, e->next_alloc);
    return 0;
}

/*
 * Lock held.  Give grain directory entry m->gd_index a new (zeroed) table.
 * The zeroes reach the disk before the directory entry that points at them
 * (a flush between, except in stream extents, which are not crash safe).
 */
static int vmdk_alloc_gt(vmdk_extent *e, vmdk_map *m)
{
    uint64_t bytes = vd_div_round_up((uint64_t)e->gt_entries * 4, VMDK_SECTOR) * VMDK_SECTOR;
    int copies = e->rgd ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        uint64_t at;
        int ret = vmdk_reserve(e, bytes, &at);
        if (ret < 0) {
            return ret;
        }
        vd_node_event(e->file, VD_EV_L2_ALLOC_WRITE);
        ret = vd_node_pwrite_zeroes(e->file, at, bytes, 0);
        if (ret == 0 && !e->compressed) {
            ret = vd_node_flush(e->file);
        }
        if (ret < 0) {
            return ret;
        }
        uint32_t sec = (uint32_t)(at / VMDK_SECTOR);
        uint8_t le[4];
        vd_st_le32(le, sec);
        uint64_t dir = c == 0 ? e->gd_offset : e->rgd_offset;
        vd_node_event(e->file, VD_EV_L1_UPDATE);
        ret = vd_node_pwrite(e->file, dir + (uint64_t)m->gd_index * 4, 4, le, 0);
        if (ret < 0) {
            return ret;
        }
        (c == 0 ? e->gd : e->rgd)[m->gd_index] = sec;
    }
    m->gt_sector = e->gd[m->gd_index];
    return 0;
}

/*
 * Lock held.  A first write into an unallocated (or zeroed) grain: the
 * whole grain is written at once, the caller's bytes over what shows
 * through from below (the backing file, or zeroes), then its table entry.
 * A flush between the two: a disk cache must not keep the entry and lose
 * the grain it points at (a grain past the end of the file, or one that
 * reads as zeroes where the backing file had data).
 */
static int vmdk_write_alloc(vd_node *bs, vmdk_map *m, uint64_t offset, const uint8_t *buf)
{
    vmdk_state *s = bs->opaque;
    vmdk_extent *e = m->e;
    int ret;
    if (m->gt_sector == 0) {
        ret = vmdk_alloc_gt(e, m);
        if (ret < 0) {
            return ret;
        }
    }
    uint8_t *g = vd_aligned_alloc(4096, e->grain);
    if (!g) {
        return -ENOMEM;
    }
    uint64_t gstart = offset - m->in_grain;
    uint64_t glen = VD_MIN(e->grain, e->start + e->size - gstart);
    if (m->where == VMDK_UNALLOC && bs->backing && (m->in_grain || m->n < glen)) {
        if (bs->backing->drv == bs->drv && !s->cid_checked) {
            vmdk_state *ps = bs->backing->opaque;
            if (ps->cid != s->parent_cid) {
                free(g);
                return -EINVAL;
            }
            s->cid_checked = true;
        }
        vd_node_event(e->file, VD_EV_COW_READ);
        ret = vd_node_read_backing(bs, gstart, glen, g);
        if (ret < 0) {
            free(g);
            return ret;
        }
    } else {
        memset(g, 0, glen);
    }
    memset(g + glen, 0, e->grain - glen);
    memcpy(g + m->in_grain, buf, m->n);
    uint64_t at;
    vd_node_event(e->file, VD_EV_CLUSTER_ALLOC);
    ret = vmdk_reserve(e, e->grain, &at);
    if (ret == 0) {
        vd_node_event(e->file, VD_EV_WRITE_AIO);
        ret = vd_node_pwrite(e->file, at, e->grain, g, 0);
    }
    free(g);
    if (ret == 0) {
        ret = vd_node_flush(e->file);
    }
    if (ret == 0) {
        ret = vmdk_set_gte(e, m, (uint32_t)(at / VMDK_SECTOR));
    }
    return ret;
}

/* Lock held.  A new CID on the first write after open, as QEMU does. */
static int vmdk_update_cid(vd_node *bs)
{
    vmdk_state *s = bs->opaque;
    if (s->cid_updated) {
        return 0;
    }
    vd_error *err = NULL;
    size_t len;
    char *d = vmdk_read_desc(bs, &len, &err);
    vd_error_free(err);
    if (!d) {
        return -EIO;
    }
    /* find the line "CID=..." */
    char *line = NULL;
    for (char *p = d; *p;) {
        char *q = p;
        while (*q == ' ' || *q == '\t') {
            q++;
        }
        if (!strncmp(q, "CID", 3)) {
            char *v = q + 3;
            while (*v == ' ' || *v == '\t') {
                v++;
            }
            if (*v == '=') {
                line = p;
                break;
            }
        }
        char *eol = strchr(p, '\n');
        if (!eol) {
            break;
        }
        p = eol + 1;
    }
    if (!line) {
        free(d);
        return -EINVAL;
    }
    uint8_t u[16];
    vd_uuid_generate(u);
    uint32_t cid = vd_ld_le32(u);
    char *eol = strchr(line, '\n');
    char *nd = vd_asprintf("%.*sCID=%x\n%s", (int)(line - d), d, cid, eol ? eol + 1 : "");
    free(d);
    if (!nd) {
        return -ENOMEM;
    }
    size_t nlen = strlen(nd);
    int ret;
    vd_node_event(bs->file, VD_EV_HEADER_UPDATE);
    if (s->desc_space) {
        /* embedded: the same space, padded with zeroes */
        if (nlen > s->desc_space) {
            free(nd);
            return -ENOSPC;
        }
        char *pad = vd_calloc(1, s->desc_space);
        if (!pad) {
            free(nd);
            return -ENOMEM;
        }
        memcpy(pad, nd, nlen);
        /* only up to the old text's end or the new one's, whichever is later */
        size_t wl = VD_MIN((size_t)s->desc_space, VD_MAX(nlen, len));
        wl = vd_div_round_up(wl, VMDK_SECTOR) * VMDK_SECTOR;
        wl = VD_MIN(wl, (size_t)s->desc_space);
        ret = vd_node_pwrite(bs->file, s->desc_offset, wl, pad, 0);
        free(pad);
    } else {
        ret = vd_node_pwrite(bs->file, s->desc_offset, nlen, nd, 0);
        if (ret == 0 && nlen < len) {
            ret = vd_node_truncate(bs->file, s->desc_offset + nlen, true, VD_PREALLOC_OFF, NULL);
        }
    }
    free(nd);
    if (ret == 0) {
        /* s->cid keeps the CID the image was opened with: QEMU's info
         * shows that one until the image is opened again */
        s->cid_updated = true;
    }
    return ret;
}

/*
 * Per-thread compressor (libdeflate: whole-buffer zlib streams, about twice
 * zlib's speed at the same level; allocating one per grain made the
 * allocator return and refault its memory each time).  A pthread key frees
 * it when the thread ends.
 */
typedef struct vmdk_zctx {
    struct libdeflate_compressor *c;
    uint8_t *out;
    size_t out_cap;
} vmdk_zctx;

static pthread_key_t vmdk_zkey;
static pthread_once_t vmdk_zonce = PTHREAD_ONCE_INIT;

static void vmdk_zctx_free(void *p)
{
    vmdk_zctx *c = p;
    libdeflate_free_compressor(c->c);
    free(c->out);
    free(c);
}

static void vmdk_zkey_init(void)
{
    (void)pthread_key_create(&vmdk_zkey, vmdk_zctx_free);
}

static vmdk_zctx *vmdk_zctx_get(void)
{
    pthread_once(&vmdk_zonce, vmdk_zkey_init);
    vmdk_zctx *c = pthread_getspecific(vmdk_zkey);
    if (c) {
        return c;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    /* zlib's default level, as QEMU's compress() */
    c->c = libdeflate_alloc_compressor(6);
    if (!c->c || pthread_setspecific(vmdk_zkey, c) != 0) {
        vmdk_zctx_free(c);
        return NULL;
    }
    return c;
}

/* Compress one grain (len bytes) into a marker + zlib record padded to a
 * sector; returns its length or -errno.  *out points into a per-thread
 * buffer, valid until the thread's next call. */
static int64_t vmdk_compress_grain(const uint8_t *data, uint64_t len, uint64_t lba,
                                   const uint8_t **out)
{
    vmdk_zctx *c = vmdk_zctx_get();
    if (!c) {
        return -ENOMEM;
    }
    size_t bound = libdeflate_zlib_compress_bound(c->c, (size_t)len);
    size_t need = vd_div_round_up(12 + bound, VMDK_SECTOR) * VMDK_SECTOR;
    if (need > c->out_cap) {
        uint8_t *o = realloc(c->out, need);
        if (!o) {
            return -ENOMEM;
        }
        c->out = o;
        c->out_cap = need;
    }
    uint64_t clen = libdeflate_zlib_compress(c->c, data, (size_t)len, c->out + 12,
                                             c->out_cap - 12);
    if (clen == 0) {
        return -EIO;
    }
    vd_st_le64(c->out, lba);
    vd_st_le32(c->out + 8, (uint32_t)clen);
    uint64_t used = vd_div_round_up(12 + clen, VMDK_SECTOR) * VMDK_SECTOR;
    memset(c->out + 12 + clen, 0, used - 12 - clen);
    *out = c->out;
    return (int64_t)used;
}

/*
 * Write grains of a stream-optimized extent: each whole grain (or the last,
 * short one of the extent) once, compressed outside the lock.
 */
static int vmdk_write_compressed_chunk(vd_node *bs, vmdk_map *m, uint64_t offset,
                                       const uint8_t *buf)
{
    vmdk_state *s = bs->opaque;
    vmdk_extent *e = m->e;
    if (m->in_grain || (m->n < e->grain && offset + m->n != e->start + e->size)) {
        return -EINVAL; /* only whole grains, as QEMU */
    }
    if (m->where == VMDK_DATA) {
        return -EIO; /* a stream grain is written once */
    }
    const uint8_t *rec;
    int64_t rlen = vmdk_compress_grain(buf, m->n, (offset - e->start) / VMDK_SECTOR, &rec);
    if (rlen < 0) {
        return (int)rlen;
    }
    pthread_mutex_lock(&s->lock);
    vmdk_map again;
    int ret = vmdk_lookup(e, offset - e->start, &again);
    if (ret == 0 && again.where == VMDK_DATA) {
        ret = -EIO;
    }
    if (ret == 0 && again.gt_sector == 0) {
        ret = vmdk_alloc_gt(e, &again);
    }
    uint64_t at = 0;
    if (ret == 0) {
        vd_node_event(e->file, VD_EV_CLUSTER_ALLOC);
        ret = vmdk_reserve(e, (uint64_t)rlen, &at);
    }
    if (ret == 0) {
        vd_node_event(e->file, VD_EV_WRITE_COMPRESSED);
        ret = vd_node_pwrite(e->file, at, (uint64_t)rlen, rec, 0);
    }
    if (ret == 0) {
        ret = vmdk_set_gte(e, &again, (uint32_t)(at / VMDK_SECTOR));
    }
    if (ret == 0) {
        e->stream_dirty = true;
        ret = vmdk_update_cid(bs);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int vmdk_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                       unsigned flags)
{
    vmdk_state *s = bs->opaque;
    const uint8_t *p = buf;
    (void)flags;
    while (len > 0) {
        vmdk_map m;
        int ret = vmdk_map_chunk(bs, offset, len, &m);
        if (ret < 0) {
            return ret;
        }
        vmdk_extent *e = m.e;
        if (e->read_only || e->kind == VMDK_EXT_ZERO || e->kind == VMDK_EXT_COWD ||
            e->kind == VMDK_EXT_SESPARSE) {
            return -EACCES;
        }
        if (e->compressed) {
            ret = vmdk_write_compressed_chunk(bs, &m, offset, p);
        } else if (m.where == VMDK_DATA) {
            vd_node_event(e->file, VD_EV_WRITE_AIO);
            ret = vd_node_pwrite(e->file, m.host + m.in_grain, m.n, p, 0);
            if (ret == 0 && !s->cid_updated) {
                pthread_mutex_lock(&s->lock);
                ret = vmdk_update_cid(bs);
                pthread_mutex_unlock(&s->lock);
            }
        } else {
            pthread_mutex_lock(&s->lock);
            /* someone may have allocated it meanwhile */
            vmdk_map again = m;
            ret = vmdk_lookup(e, offset - e->start, &again);
            again.n = m.n;
            if (ret == 0 && again.where == VMDK_DATA) {
                pthread_mutex_unlock(&s->lock);
                vd_node_event(e->file, VD_EV_WRITE_AIO);
                ret = vd_node_pwrite(e->file, again.host + again.in_grain, m.n, p, 0);
                pthread_mutex_lock(&s->lock);
            } else if (ret == 0) {
                ret = vmdk_write_alloc(bs, &again, offset, p);
            }
            if (ret == 0) {
                ret = vmdk_update_cid(bs);
            }
            pthread_mutex_unlock(&s->lock);
        }
        if (ret < 0) {
            return ret;
        }
        offset += m.n;
        len -= m.n;
        p += m.n;
    }
    return 0;
}

static int vmdk_pwrite_compressed(vd_node *bs, uint64_t offset, uint64_t len, const void *buf)
{
    vmdk_state *s = bs->opaque;
    const uint8_t *p = buf;
    while (len > 0) {
        vmdk_map m;
        int ret = vmdk_map_chunk(bs, offset, len, &m);
        if (ret < 0) {
            return ret;
        }
        if (!m.e->compressed || m.e->read_only) {
            /* QEMU writes normally to extents that are not compressed */
            ret = vmdk_pwrite(bs, offset, m.n, p, 0);
        } else {
            ret = vmdk_write_compressed_chunk(bs, &m, offset, p);
        }
        if (ret < 0) {
            return ret;
        }
        offset += m.n;
        len -= m.n;
        p += m.n;
    }
    (void)s;
    return 0;
}

/* Zero whole grains through the zeroed-grain entry (QEMU's zeroed write). */
static int vmdk_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    vmdk_state *s = bs->opaque;
    (void)flags;
    /* dry run first: every piece must be a whole grain of a zeroed-grain extent */
    for (uint64_t o = offset, l = len; l > 0;) {
        vmdk_extent *e = vmdk_find_extent(s, o);
        if (!e || e->kind != VMDK_EXT_SPARSE || !e->zero_grain || e->compressed ||
            e->read_only) {
            return -ENOTSUP;
        }
        uint64_t in = (o - e->start) % e->grain;
        if (in || l < e->grain || e->size - (o - e->start) < e->grain) {
            return -ENOTSUP;
        }
        o += e->grain;
        l -= e->grain;
    }
    pthread_mutex_lock(&s->lock);
    int ret = 0;
    while (len > 0 && ret == 0) {
        vmdk_extent *e = vmdk_find_extent(s, offset);
        vmdk_map m;
        m.e = e;
        ret = vmdk_lookup(e, offset - e->start, &m);
        if (ret == 0 && m.where != VMDK_ZEROED) {
            if (m.gt_sector == 0) {
                ret = vmdk_alloc_gt(e, &m);
            }
            if (ret == 0) {
                ret = vmdk_set_gte(e, &m, VMDK_GTE_ZEROED);
            }
        }
        if (ret == 0) {
            ret = vmdk_update_cid(bs);
        }
        offset += e->grain;
        len -= e->grain;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* A stream extent that got grains: footer marker, footer, end of stream. */
static int vmdk_write_footer(vmdk_extent *e)
{
    uint8_t b[1536];
    memset(b, 0, sizeof(b));
    vd_st_le64(b, 1);
    vd_st_le32(b + 12, MARKER_FOOTER);
    memcpy(b + 512, e->header, 512);
    uint64_t at = vd_div_round_up(e->next_alloc, VMDK_SECTOR) * VMDK_SECTOR;
    vd_node_event(e->file, VD_EV_FOOTER_UPDATE);
    int ret = vd_node_pwrite(e->file, at, sizeof(b), b, 0);
    if (ret == 0) {
        int64_t len = vd_node_get_length(e->file);
        if (len > 0 && (uint64_t)len > at + sizeof(b)) {
            ret = vd_node_truncate(e->file, at + sizeof(b), true, VD_PREALLOC_OFF, NULL);
        }
    }
    if (ret == 0) {
        e->stream_dirty = false;
        e->file_len = at + sizeof(b);
    }
    return ret;
}

static int vmdk_flush(vd_node *bs)
{
    vmdk_state *s = bs->opaque;
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_ext; i++) {
        vmdk_extent *e = &s->ext[i];
        if (e->stream_dirty) {
            int r = vmdk_write_footer(e);
            ret = ret ? ret : r;
        }
        if (e->own_file && e->file && (e->file->flags & VD_NODE_RDWR)) {
            int r = vd_node_flush(e->file);
            ret = ret ? ret : r;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* ----------------------------------------------------------- block status */

static int vmdk_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                             uint64_t *pnum, uint64_t *map, vd_node **file)
{
    (void)want_zero;
    vmdk_map m;
    int ret = vmdk_map_chunk(bs, offset, len, &m);
    if (ret < 0) {
        return ret;
    }
    vmdk_extent *e = m.e;
    *pnum = m.n;
    if (e->kind == VMDK_EXT_FLAT) {
        *map = m.host;
        *file = e->file;
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID | VD_BLOCK_PROBE_ZERO;
    }
    if (e->kind == VMDK_EXT_ZERO) {
        return VD_BLOCK_ZERO;
    }
    int flags = 0;
    if (m.where == VMDK_ZEROED) {
        flags = VD_BLOCK_ZERO;
    } else if (m.where == VMDK_DATA) {
        flags = VD_BLOCK_DATA;
        *file = e->file;
        if (e->compressed) {
            flags |= VD_BLOCK_COMPRESSED;
        } else {
            flags |= VD_BLOCK_OFFSET_VALID;
            *map = m.host + m.in_grain;
        }
    }
    /* merge the following grains with the same answer (not data: its host
     * offsets need not be contiguous), under one lock, a grain table at a
     * time where the directory has none */
    vmdk_state *s = bs->opaque;
    uint64_t done = m.n;
    pthread_mutex_lock(&s->lock);
    while (m.where != VMDK_DATA && done < len) {
        uint64_t off = offset + done - e->start;
        if (off >= e->size) {
            break;
        }
        uint64_t g = off / e->grain;
        uint64_t gdi = g / e->gt_entries;
        uint64_t step;
        if (gdi < e->gd_entries && e->gd[gdi] == 0) {
            if (m.where != VMDK_UNALLOC) {
                break;
            }
            step = (gdi + 1) * e->gt_entries * e->grain - off;
        } else {
            vmdk_map nx;
            if (vmdk_lookup(e, off, &nx) < 0 || nx.where != m.where) {
                break;
            }
            step = e->grain - nx.in_grain;
        }
        done += VD_MIN(step, VD_MIN(len - done, e->size - off));
    }
    pthread_mutex_unlock(&s->lock);
    *pnum = done;
    return flags;
}

/* ------------------------------------------------------------ info, check */

static bool vmdk_extents_alike(const vmdk_extent *a, const vmdk_extent *b)
{
    bool fa = a->kind == VMDK_EXT_FLAT || a->kind == VMDK_EXT_ZERO;
    bool fb = b->kind == VMDK_EXT_FLAT || b->kind == VMDK_EXT_ZERO;
    return fa == fb && a->compressed == b->compressed && (fa || a->grain == b->grain);
}

static uint32_t vmdk_cluster_size(vd_node *bs)
{
    vmdk_state *s = bs->opaque;
    if (s->n_ext == 0) {
        return 0;
    }
    for (size_t i = 1; i < s->n_ext; i++) {
        if (!vmdk_extents_alike(&s->ext[0], &s->ext[i])) {
            return 0;
        }
    }
    const vmdk_extent *e = &s->ext[0];
    return e->kind == VMDK_EXT_FLAT || e->kind == VMDK_EXT_ZERO ? 0 : (uint32_t)e->grain;
}

static int vmdk_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    vmdk_state *s = bs->opaque;
    /* built with json-c: linear in the number of extents (up to thousands) */
    json_object *root = json_object_new_object();
    json_object *data = json_object_new_object();
    json_object *exts = json_object_new_array();
    if (!root || !data || !exts) {
        json_object_put(root);
        json_object_put(data);
        json_object_put(exts);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    json_object_object_add(root, "type", json_object_new_string("vmdk"));
    json_object_object_add(root, "data", data);
    json_object_object_add(data, "cid", json_object_new_int64(s->cid));
    json_object_object_add(data, "parent-cid", json_object_new_int64(s->parent_cid));
    json_object_object_add(data, "create-type",
                           json_object_new_string(s->create_type ? s->create_type : ""));
    json_object_object_add(data, "extents", exts);
    int64_t actual = 0;
    if (bs->file && bs->file->drv->get_allocated_size) {
        actual = bs->file->drv->get_allocated_size(bs->file);
    }
    for (size_t i = 0; i < s->n_ext; i++) {
        const vmdk_extent *e = &s->ext[i];
        json_object *x = json_object_new_object();
        if (!x) {
            json_object_put(root);
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        if (e->compressed) {
            json_object_object_add(x, "compressed", json_object_new_boolean(1));
        }
        json_object_object_add(x, "virtual-size", json_object_new_int64((int64_t)e->size));
        json_object_object_add(x, "filename",
                               json_object_new_string(e->file ? e->file->filename : ""));
        if (e->kind != VMDK_EXT_FLAT && e->kind != VMDK_EXT_ZERO) {
            json_object_object_add(x, "cluster-size", json_object_new_int64((int64_t)e->grain));
        }
        json_object_object_add(x, "format", json_object_new_string(e->type));
        json_object_array_add(exts, x);
        if (e->own_file && e->file && e->file->drv->get_allocated_size && actual >= 0) {
            int64_t a = e->file->drv->get_allocated_size(e->file);
            actual = a >= 0 ? actual + a : -1;
        }
    }
    char *j = vd_strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
    json_object_put(root);
    if (!j) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    free(info->format_specific_json);
    info->format_specific_json = j;
    if (actual >= 0 && bs->file && bs->file->drv->get_allocated_size) {
        info->actual_size = actual;
    }
    info->cluster_size = vmdk_cluster_size(bs);
    return 0;
}

static int64_t vmdk_get_allocated_size(vd_node *bs)
{
    vd_info info;
    memset(&info, 0, sizeof(info));
    info.actual_size = -1;
    if (vmdk_get_info(bs, &info, NULL) < 0) {
        return -ENOTSUP;
    }
    free(info.format_specific_json);
    return info.actual_size;
}

/*
 * As QEMU's check: every grain table and grain an extent points at must lie
 * inside its file.  vdisk goes on after the first problem and counts them
 * (the library prints nothing: QEMU's ERROR lines are not repeated).
 */
static int vmdk_check(vd_node *bs, vd_check_res *res, unsigned fix, vd_error **errp)
{
    vmdk_state *s = bs->opaque;
    if (fix) {
        return vd_error_set(errp, ENOTSUP, "vmdk images cannot be repaired");
    }
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_ext; i++) {
        vmdk_extent *e = &s->ext[i];
        if (e->kind == VMDK_EXT_FLAT || e->kind == VMDK_EXT_ZERO) {
            continue;
        }
        int64_t flen = vd_node_get_length(e->file);
        if (flen < 0) {
            res->check_errors++;
            continue;
        }
        for (uint32_t d = 0; d < e->gd_entries; d++) {
            if (!e->gd[d]) {
                continue;
            }
            for (uint32_t t = 0; t < e->gt_entries; t++) {
                uint64_t off = ((uint64_t)d * e->gt_entries + t) * e->grain;
                if (off >= e->size) {
                    break;
                }
                vmdk_map m;
                int ret = vmdk_lookup(e, off, &m);
                if (ret < 0) {
                    /* its grain table cannot be read */
                    res->corruptions++;
                    break;
                }
                if (m.where == VMDK_DATA) {
                    res->allocated_clusters++;
                    if (e->compressed) {
                        res->compressed_clusters++;
                    }
                    if (m.host >= (uint64_t)flen) {
                        /* QEMU's "cluster offset points after EOF" */
                        res->corruptions++;
                    }
                }
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* ---------------------------------------------------------------- create */

static const char *const vmdk_subformats[] = {"monolithicSparse", "monolithicFlat",
                                              "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                                              "streamOptimized", NULL};
enum { SUB_MONO_SPARSE, SUB_MONO_FLAT, SUB_2G_SPARSE, SUB_2G_FLAT, SUB_STREAM };

static const char *const vmdk_adapters[] = {"ide", "buslogic", "lsilogic", "legacyESX", NULL};

/* The header and tables of a new sparse extent of size bytes. */
static int vmdk_init_sparse(vd_node *file, uint64_t size, bool compress, bool zeroed_grain,
                            vd_error **errp)
{
    uint64_t capacity = size / VMDK_SECTOR;
    uint64_t granularity = 128, gtes = 512;
    uint64_t grains = vd_div_round_up(capacity, granularity);
    uint64_t gt_sectors = vd_div_round_up(gtes * 4, VMDK_SECTOR);
    uint64_t gt_count = vd_div_round_up(grains, gtes);
    uint64_t gd_sectors = vd_div_round_up(gt_count * 4, VMDK_SECTOR);
    if (gt_count > UINT32_MAX / 4 || gt_count > VMDK_MAX_GD_ENTRIES) {
        return vd_error_set(errp, EFBIG, "The image size is too large for a VMDK sparse extent");
    }
    uint64_t desc_offset = 1, desc_size = VMDK_DESC_EMBED_SECTORS;
    uint64_t rgd = desc_offset + desc_size;
    uint64_t gd = rgd + gd_sectors + gt_sectors * gt_count;
    uint64_t grain_off = gd + gd_sectors + gt_sectors * gt_count;
    grain_off = vd_div_round_up(grain_off, granularity) * granularity;
    if (grain_off > UINT32_MAX) {
        return vd_error_set(errp, EFBIG, "The image size is too large for a VMDK sparse extent");
    }

    uint8_t h[512];
    memset(h, 0, sizeof(h));
    vd_st_be32(h + H_MAGIC, VMDK4_MAGIC);
    vd_st_le32(h + H_VERSION, compress ? 3 : zeroed_grain ? 2 : 1);
    vd_st_le32(h + H_FLAGS, VMDK4_FLAG_RGD | VMDK4_FLAG_NL_DETECT |
                                (compress ? VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER : 0) |
                                (zeroed_grain ? VMDK4_FLAG_ZERO_GRAIN : 0));
    vd_st_le64(h + H_CAPACITY, capacity);
    vd_st_le64(h + H_GRANULARITY, granularity);
    vd_st_le64(h + H_DESC_OFFSET, desc_offset);
    vd_st_le64(h + H_DESC_SIZE, desc_size);
    vd_st_le32(h + H_NUM_GTES, (uint32_t)gtes);
    vd_st_le64(h + H_RGD_OFFSET, rgd);
    vd_st_le64(h + H_GD_OFFSET, gd);
    vd_st_le64(h + H_GRAIN_OFFSET, grain_off);
    h[H_CHECK_BYTES] = 0xa;
    h[H_CHECK_BYTES + 1] = 0x20;
    h[H_CHECK_BYTES + 2] = 0xd;
    h[H_CHECK_BYTES + 3] = 0xa;
    vd_st_le16(h + H_COMPRESS, compress ? VMDK_COMPRESS_DEFLATE : 0);

    int ret = vd_node_pwrite(file, 0, sizeof(h), h, 0);
    if (ret == 0) {
        ret = vd_node_truncate(file, grain_off * VMDK_SECTOR, false, VD_PREALLOC_OFF, errp);
        if (ret < 0) {
            return ret;
        }
    }
    uint64_t gd_bytes = gd_sectors * VMDK_SECTOR;
    uint8_t *buf = ret == 0 ? vd_calloc(1, gd_bytes ? gd_bytes : 1) : NULL;
    if (ret == 0 && !buf) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    for (int copy = 0; ret == 0 && copy < 2; copy++) {
        uint64_t dir = copy == 0 ? rgd : gd;
        for (uint64_t i = 0; i < gt_count; i++) {
            vd_st_le32(buf + 4 * i, (uint32_t)(dir + gd_sectors + i * gt_sectors));
        }
        ret = gd_bytes ? vd_node_pwrite(file, dir * VMDK_SECTOR, gd_bytes, buf, 0) : 0;
    }
    free(buf);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not write the VMDK header");
    }
    return 0;
}

/* The CID of the vmdk image at path (a backing file). */
static int vmdk_backing_cid(const char *image, const char *backing, uint32_t *cid,
                            vd_error **errp)
{
    char *full = backing[0] == '/' ? vd_strdup(backing) : vd_path_combine(image, backing);
    if (!full) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    vd_error *err = NULL;
    vd_node *b = vd_node_open(full, NULL, NULL, VD_NODE_NO_BACKING | VD_NODE_NO_PROBE_RAW, &err);
    if (!b) {
        int e = err ? err->err : EIO;
        vd_error_set(errp, e, "Could not open backing file '%s': %s", full,
                     err ? err->msg : "error");
        vd_error_free(err);
        free(full);
        return -e;
    }
    free(full);
    int ret = 0;
    if (strcmp(b->drv->name, "vmdk") != 0) {
        ret = vd_error_set(errp, EINVAL, "Invalid backing file format: %s. Must be vmdk",
                           b->drv->name);
    } else {
        *cid = ((vmdk_state *)b->opaque)->cid;
    }
    vd_node_close(b);
    return ret;
}

/* Create one extent file and, when sparse, its header and tables. */
static int vmdk_create_extent(const char *path, const vd_opts *opts, uint64_t size, bool flat,
                              bool compress, bool zeroed_grain, vd_node **keep, vd_error **errp)
{
    vd_node *f;
    int ret = vd_create_open_file(path, opts, &f, errp);
    if (ret < 0) {
        return ret;
    }
    if (flat) {
        ret = vd_node_truncate(f, size, false, VD_PREALLOC_OFF, errp);
    } else {
        ret = vmdk_init_sparse(f, size, compress, zeroed_grain, errp);
    }
    if (keep && ret == 0) {
        *keep = f;
        return 0;
    }
    return vd_create_close_file(f, ret, "Could not write the VMDK extent", errp);
}

static int vmdk_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    uint64_t size;
    int sub, adapter;
    bool compat6, zeroed_grain;
    int ret = vd_opts_get_size(opts, "size", 0, &size, errp);
    if (ret < 0) {
        return ret;
    }
    size = vd_div_round_up(size, VMDK_SECTOR) * VMDK_SECTOR;
    const char *fmt = vd_opts_get(opts, "subformat");
    sub = SUB_MONO_SPARSE;
    if (fmt) {
        for (sub = 0; vmdk_subformats[sub] && strcmp(vmdk_subformats[sub], fmt); sub++) {
        }
        if (!vmdk_subformats[sub]) {
            return vd_error_set(errp, EINVAL, "Parameter 'subformat' does not accept value '%s'",
                                fmt);
        }
    }
    const char *ad = vd_opts_get(opts, "adapter_type");
    adapter = 0;
    if (ad) {
        for (adapter = 0; vmdk_adapters[adapter] && strcmp(vmdk_adapters[adapter], ad);
             adapter++) {
        }
        if (!vmdk_adapters[adapter]) {
            return vd_error_set(errp, EINVAL, "Parameter 'adapter_type' does not accept value '%s'",
                                ad);
        }
    }
    if ((ret = vd_opts_get_bool(opts, "compat6", false, &compat6, errp)) < 0 ||
        (ret = vd_opts_get_bool(opts, "zeroed_grain", false, &zeroed_grain, errp)) < 0) {
        return ret;
    }
    const char *backing_fmt = vd_opts_get(opts, "backing_fmt");
    if (backing_fmt && strcmp(backing_fmt, "vmdk") != 0) {
        return vd_error_set(errp, EINVAL, "backing_file must be a vmdk image");
    }
    const char *backing = vd_opts_get(opts, "backing_file");
    const char *hw = vd_opts_get(opts, "hwversion");
    if (hw && !strcmp(hw, "undefined")) {
        hw = NULL;
    }
    if (compat6) {
        if (hw) {
            return vd_error_set(errp, EINVAL, "compat6 cannot be enabled with hwversion set");
        }
        hw = "6";
    }
    if (!hw) {
        hw = "4";
    }
    const char *tools = vd_opts_get(opts, "toolsversion");
    if (!tools) {
        tools = "2147483647";
    }
    bool split = sub == SUB_2G_SPARSE || sub == SUB_2G_FLAT;
    bool flat = sub == SUB_MONO_FLAT || sub == SUB_2G_FLAT;
    bool compress = sub == SUB_STREAM;
    if (flat && backing) {
        return vd_error_set(errp, ENOTSUP, "Flat image can't have backing file");
    }
    if (flat && zeroed_grain) {
        return vd_error_set(errp, ENOTSUP, "Flat image can't enable zeroed grain");
    }
    for (const char *c = hw; *c; c++) {
        if (*c == '"' || *c == '\n') {
            return vd_error_set(errp, EINVAL, "Invalid hwversion '%s'", hw);
        }
    }
    for (const char *c = tools; *c; c++) {
        if (*c == '"' || *c == '\n') {
            return vd_error_set(errp, EINVAL, "Invalid toolsversion '%s'", tools);
        }
    }
    if (backing && (strchr(backing, '"') || strchr(backing, '\n'))) {
        return vd_error_set(errp, EINVAL, "Invalid backing file name '%s'", backing);
    }

    uint32_t parent_cid = 0xffffffffu;
    if (backing) {
        ret = vmdk_backing_cid(filename, backing, &parent_cid, errp);
        if (ret < 0) {
            return ret;
        }
    }

    /* names: DIR/PREFIX.POSTFIX -> PREFIX-s001.POSTFIX, PREFIX-flat.POSTFIX */
    const char *base = strrchr(filename, '/');
    base = base ? base + 1 : filename;
    const char *dot = strrchr(base, '.');
    int dirlen = (int)(base - filename);
    int prelen = dot ? (int)(dot - base) : (int)strlen(base);
    const char *postfix = dot ? dot : "";

    char *lines = vd_strdup("");
    vd_node *desc_file = NULL;
    if (!lines) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    if (!split && !flat) {
        ret = vmdk_create_extent(filename, opts, size, false, compress, zeroed_grain, &desc_file,
                                 errp);
        if (ret == 0) {
            char *l = vd_asprintf("RW %llu SPARSE \"%s\"\n",
                                  (unsigned long long)(size / VMDK_SECTOR), base);
            free(lines);
            lines = l;
        }
    } else {
        ret = vd_create_open_file(filename, opts, &desc_file, errp);
        uint64_t done = 0;
        for (int idx = 1; ret == 0 && lines && done < size; idx++) {
            uint64_t cur = split ? VD_MIN(size - done, VMDK_SPLIT_SIZE) : size - done;
            char *rel = split ? vd_asprintf("%.*s-%c%03d%s", prelen, base, flat ? 'f' : 's', idx,
                                            postfix)
                              : vd_asprintf("%.*s-flat%s", prelen, base, postfix);
            char *path = rel ? vd_asprintf("%.*s%s", dirlen, filename, rel) : NULL;
            if (!path) {
                free(rel);
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                break;
            }
            ret = vmdk_create_extent(path, opts, cur, flat, false, zeroed_grain, NULL, errp);
            free(path);
            if (ret == 0) {
                char *l = flat ? vd_asprintf("%sRW %llu FLAT \"%s\" 0\n", lines,
                                             (unsigned long long)(cur / VMDK_SECTOR), rel)
                               : vd_asprintf("%sRW %llu SPARSE \"%s\"\n", lines,
                                             (unsigned long long)(cur / VMDK_SECTOR), rel);
                free(lines);
                lines = l;
            }
            free(rel);
            done += cur;
        }
    }
    if (ret < 0 || !lines) {
        free(lines);
        if (desc_file) {
            vd_create_close_file(desc_file, -EIO, "", NULL);
        }
        return ret < 0 ? ret : vd_error_set(errp, ENOMEM, "out of memory");
    }

    uint8_t rnd[16];
    vd_uuid_generate(rnd);
    uint32_t heads = adapter == 0 ? 16 : 255;
    char *parent_line = backing ? vd_asprintf("parentFileNameHint=\"%s\"\n", backing) : NULL;
    char *desc = vd_asprintf("# Disk DescriptorFile\n"
                             "version=1\n"
                             "CID=%x\n"
                             "parentCID=%x\n"
                             "createType=\"%s\"\n"
                             "%s"
                             "\n"
                             "# Extent description\n"
                             "%s"
                             "\n"
                             "# The Disk Data Base\n"
                             "#DDB\n"
                             "\n"
                             "ddb.virtualHWVersion = \"%s\"\n"
                             "ddb.geometry.cylinders = \"%llu\"\n"
                             "ddb.geometry.heads = \"%u\"\n"
                             "ddb.geometry.sectors = \"63\"\n"
                             "ddb.adapterType = \"%s\"\n"
                             "ddb.toolsVersion = \"%s\"\n",
                             vd_ld_le32(rnd), parent_cid, vmdk_subformats[sub],
                             parent_line ? parent_line : "", lines, hw,
                             (unsigned long long)(size / (63ull * heads * VMDK_SECTOR)), heads,
                             vmdk_adapters[adapter], tools);
    free(parent_line);
    free(lines);
    if (!desc) {
        vd_create_close_file(desc_file, -ENOMEM, "", NULL);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    size_t dlen = strlen(desc);
    uint64_t doff = (!split && !flat) ? 0x200 : 0;
    if (doff && dlen > VMDK_DESC_EMBED_SECTORS * VMDK_SECTOR) {
        ret = vd_error_set(errp, EINVAL, "The VMDK descriptor is too long (%zu bytes)", dlen);
    } else {
        ret = vd_node_pwrite(desc_file, doff, dlen, desc, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not write description");
        }
    }
    free(desc);
    return vd_create_close_file(desc_file, ret, "Could not write the VMDK descriptor", errp);
}

static bool vmdk_needs_compressed_writes(vd_node *bs)
{
    vmdk_state *s = bs->opaque;
    return s->n_ext > 0 && s->ext[0].compressed && vmdk_cluster_size(bs) != 0;
}

const vd_driver vd_drv_vmdk = {
    .name = "vmdk",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(vmdk_state),
    .create_opts = vmdk_create_opts,
    .supports_backing = true,
    .probe = vmdk_probe,
    .open = vmdk_open,
    .close = vmdk_close,
    .create = vmdk_create,
    .get_length = vmdk_get_length,
    .get_allocated_size = vmdk_get_allocated_size,
    .pread = vmdk_pread,
    .pwrite = vmdk_pwrite,
    .pwrite_zeroes = vmdk_pwrite_zeroes,
    .pwrite_compressed = vmdk_pwrite_compressed,
    .flush = vmdk_flush,
    .block_status = vmdk_block_status,
    .check = vmdk_check,
    .get_info = vmdk_get_info,
    .cluster_size = vmdk_cluster_size,
    .needs_compressed_writes = vmdk_needs_compressed_writes,
};
