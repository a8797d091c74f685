/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Virtual FAT (QEMU 7.2 block/vvfat.c, read-only part): a host directory
 * tree presented as a FAT disk, built at open time and read lazily.
 *
 * Filenames "fat:[floppy:][rw:][12:|16:|32:]DIR" (parsed as QEMU does:
 * substrings ":floppy:", ":rw:", ":12:"...; DIR is what follows the last
 * colon, or a DOS drive "C:..."), or driver=vvfat with dir, fat-type,
 * floppy, label, rw.
 *
 * Layout, as QEMU computes it (so that `qemu-img convert fat:DIR` and
 * `vdisk convert fat:DIR` give the same bytes):
 *  - hard disk: 16 heads, 63 sectors, 64 cylinders (FAT12) or 1024
 *    (FAT16/32); MBR in sector 0, the partition from sector 63; floppy:
 *    80 cylinders, 2 heads, 36 sectors (default, FAT12 2.88 MB; fat-type 16
 *    also) or 18 (fat-type 12, 1.44 MB), no MBR;
 *  - clusters of 16 sectors (QEMU sets that after choosing the floppy
 *    values, which it overrides), one reserved sector, two FATs, a root
 *    directory of 512 entries that counts as clusters 0 and 1;
 *  - the clusters handed out in the order of a breadth-first walk over
 *    the tree in readdir order: a directory's entries, then, for each of
 *    its subdirectories and non-empty files, their clusters;
 *  - every name gets VFAT long-name entries (UTF-16) and a short name made
 *    as QEMU makes it (upper case, invalid characters dropped, "~N" tail on
 *    lossy conversion or collision); times from stat() in local time.
 *
 * Deliberate differences (docs/vvfat.md): the slack after a file's end in
 * its last cluster reads as zeroes (QEMU leaves whatever its cluster buffer
 * held before); a file that cannot be read fails the read with EIO (QEMU
 * returns zeroes); a name that is not valid UTF-8 fails the open (QEMU
 * drops its long name and makes a short name from the bytes); rw is an
 * implementation of its own (see the rw section below).  The FAT32
 * variant is QEMU's: a FAT16-style boot sector over 32-bit FAT entries,
 * which QEMU itself calls untested.
 */
#include <dirent.h>
#include <fcntl.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wctype.h>

#include "internal.h"

enum {
    SECTOR = 512,
    DIRENT = 32,
    FIRST_SECTORS = 0x40, /* MBR + gap + boot sector of a disk */
};

typedef struct vv_mapping {
    uint32_t begin, end;      /* clusters [begin, end) */
    uint32_t dir_index;       /* the short entry in the directory array */
    uint32_t first_dir_index; /* directories: their first entry */
    int parent;               /* directories: the parent's mapping, -1 root */
    bool is_dir;
    uint64_t size; /* files: bytes */
    int up;        /* the directory holding it, -1 for the root */
    char *name;    /* its name there; the root: DIR (memory stays
                    * linear in the names, not in the depth) */
} vv_mapping;

typedef struct vv_state {
    pthread_mutex_t lock; /* the current file descriptor */
    int fat_type;
    uint32_t offset_to_bootsector, offset_to_fat, offset_to_root_dir;
    uint32_t sectors_per_cluster, cluster_size, sectors_per_fat;
    uint32_t root_entries, sector_count, cluster_count, max_fat_value;
    uint64_t total_sectors;
    char label[11];

    uint8_t first_sectors[FIRST_SECTORS * SECTOR];
    uint8_t *fat;
    size_t fat_size;
    uint8_t *dir; /* all directory entries, DIRENT bytes each */
    size_t dir_n, dir_cap;
    vv_mapping *map;
    size_t map_n, map_cap;

    int cur_fd;
    size_t cur_map;
    bool lock_init;

    /* rw: written sectors live in an unlinked temporary file */
    bool rw;
    pthread_mutex_t rw_lock; /* the whole of each request */
    bool rw_lock_init;
    int ov_fd;
    uint8_t *ov_bits;     /* sectors held by the overlay */
    uint8_t *dirty;       /* clusters written since the last commit */
    struct vv_tree *base; /* the tree as last committed */
} vv_state;

struct vv_tree;
static void vv_tree_free(struct vv_tree *t);

/* ------------------------------------------------------------ options */

typedef struct vv_params {
    char *dir;
    int fat_type;
    bool floppy, rw;
} vv_params;

/* QEMU's vvfat_parse_filename: returns a malloc'ed dir or NULL (errp). */
static int vv_parse(const char *filename, vv_params *p, vd_error **errp)
{
    memset(p, 0, sizeof(*p));
    if (strncmp(filename, "fat:", 4) != 0) {
        return vd_error_set(errp, EINVAL, "File name string must start with 'fat:'");
    }
    if (strstr(filename, ":32:")) {
        p->fat_type = 32;
    } else if (strstr(filename, ":16:")) {
        p->fat_type = 16;
    } else if (strstr(filename, ":12:")) {
        p->fat_type = 12;
    }
    p->floppy = strstr(filename, ":floppy:") != NULL;
    p->rw = strstr(filename, ":rw:") != NULL;
    size_t i = (size_t)(strrchr(filename, ':') - filename);
    const char *d = filename + i + 1;
    if (i >= 3 && filename[i - 2] == ':' &&
        ((filename[i - 1] >= 'a' && filename[i - 1] <= 'z') ||
         (filename[i - 1] >= 'A' && filename[i - 1] <= 'Z'))) {
        d = filename + i - 1; /* a DOS drive name */
    }
    p->dir = vd_strdup(d);
    if (!p->dir) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    return 0;
}

static int vv_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    vv_params p;
    if (vv_parse(filename, &p, errp) < 0) {
        return -EINVAL;
    }
    char num[16];
    snprintf(num, sizeof(num), "%d", p.fat_type);
    int ret = 0;
    if (vd_opts_set(opts, "dir", p.dir) < 0 || vd_opts_set(opts, "fat-type", num) < 0 ||
        vd_opts_set(opts, "floppy", p.floppy ? "on" : "off") < 0 ||
        vd_opts_set(opts, "rw", p.rw ? "on" : "off") < 0) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
    }
    free(p.dir);
    return ret;
}

/* ------------------------------------------------------ growable arrays */

static uint8_t *vv_dirent_new(vv_state *s)
{
    if (s->dir_n == s->dir_cap) {
        size_t cap = s->dir_cap ? s->dir_cap * 2 : 256;
        uint8_t *d = realloc(s->dir, cap * DIRENT);
        if (!d) {
            return NULL;
        }
        s->dir = d;
        s->dir_cap = cap;
    }
    uint8_t *e = s->dir + s->dir_n++ * DIRENT;
    memset(e, 0, DIRENT);
    return e;
}

static vv_mapping *vv_mapping_new(vv_state *s)
{
    if (s->map_n == s->map_cap) {
        size_t cap = s->map_cap ? s->map_cap * 2 : 64;
        vv_mapping *m = realloc(s->map, cap * sizeof(*m));
        if (!m) {
            return NULL;
        }
        s->map = m;
        s->map_cap = cap;
    }
    vv_mapping *m = &s->map[s->map_n++];
    memset(m, 0, sizeof(*m));
    return m;
}

/*
 * A hash table of 12-byte keys (an 11-byte short name, plus a byte) to a
 * number, for the short names of one directory and, per untailed name, the
 * next "~N" worth trying: the same names as QEMU's linear search, without
 * its cost (quadratic in the entries of a directory, cubic for many names
 * sharing a prefix).
 */
typedef struct vv_slot {
    uint8_t key[12];
    bool used;
    uint32_t val;
} vv_slot;

typedef struct vv_hash {
    vv_slot *slot;
    size_t cap, n;
} vv_hash;

static uint64_t vv_hash_key(const uint8_t *k)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 12; i++) {
        h = (h ^ k[i]) * 1099511628211ull;
    }
    return h;
}

static vv_slot *vv_hash_find(vv_hash *h, const uint8_t *key)
{
    if (!h->cap) {
        return NULL;
    }
    for (size_t i = vv_hash_key(key) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
        if (!h->slot[i].used) {
            return NULL;
        }
        if (!memcmp(h->slot[i].key, key, 12)) {
            return &h->slot[i];
        }
    }
}

static int vv_hash_put(vv_hash *h, const uint8_t *key, uint32_t val)
{
    vv_slot *f = vv_hash_find(h, key);
    if (f) {
        f->val = val;
        return 0;
    }
    if ((h->n + 1) * 2 > h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        vv_slot *ns = calloc(cap, sizeof(*ns));
        if (!ns) {
            return -ENOMEM;
        }
        for (size_t i = 0; i < h->cap; i++) {
            if (h->slot[i].used) {
                size_t j = vv_hash_key(h->slot[i].key) & (cap - 1);
                while (ns[j].used) {
                    j = (j + 1) & (cap - 1);
                }
                ns[j] = h->slot[i];
            }
        }
        free(h->slot);
        h->slot = ns;
        h->cap = cap;
    }
    size_t i = vv_hash_key(key) & (h->cap - 1);
    while (h->slot[i].used) {
        i = (i + 1) & (h->cap - 1);
    }
    memcpy(h->slot[i].key, key, 12);
    h->slot[i].used = true;
    h->slot[i].val = val;
    h->n++;
    return 0;
}

static void vv_hash_clear(vv_hash *h)
{
    free(h->slot);
    memset(h, 0, sizeof(*h));
}

/* ---------------------------------------------------------------- names */

/* Decode one UTF-8 character (strictly, as glib's validator); -1 invalid. */
static int32_t vv_utf8_next(const unsigned char **pp)
{
    const unsigned char *p = *pp;
    uint32_t c = p[0];
    int n;
    if (c < 0x80) {
        *pp = p + 1;
        return (int32_t)c;
    } else if ((c & 0xe0) == 0xc0) {
        n = 1;
        c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 2;
        c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 3;
        c &= 0x07;
    } else {
        return -1;
    }
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return -1;
        }
        c = (c << 6) | (p[i] & 0x3f);
    }
    static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
    if (c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return -1;
    }
    *pp = p + n + 1;
    return (int32_t)c;
}

static locale_t vv_loc;
static void vv_loc_init(void)
{
    vv_loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

/* Unicode upper case (glib's g_unichar_toupper for what matters here). */
static uint32_t vv_toupper(uint32_t c)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (c < 0x80) {
        return (c >= 'a' && c <= 'z') ? c - 32 : c;
    }
    pthread_once(&once, vv_loc_init);
    return vv_loc ? (uint32_t)towupper_l((wint_t)c, vv_loc) : c;
}

/*
 * QEMU's to_valid_short_char: upper case; digits and letters pass, and
 * anything whose low byte strchr() finds in its list (it passes the
 * character as an int, so only the low byte counts).
 */
static uint8_t vv_short_char(uint32_t c)
{
    static const char ok[] = "$%'-_@~`!(){}^#&";
    c = vv_toupper(c);
    if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z')) {
        return (uint8_t)c;
    }
    if ((uint8_t)c == 0) {
        return 0; /* strchr finds the terminator, the caller drops a 0 */
    }
    return memchr(ok, (uint8_t)c, sizeof(ok) - 1) ? (uint8_t)c : 0;
}

static uint8_t vv_chksum(const uint8_t *name)
{
    uint8_t sum = 0;
    for (int i = 0; i < 11; i++) {
        sum = (uint8_t)((((sum & 0xfe) >> 1) | ((sum & 1) ? 0x80 : 0)) + name[i]);
    }
    return sum;
}

/* The long-name entries of filename (UTF-16, 13 units each, last first). */
static int vv_long_name(vv_state *s, const char *filename, size_t *first, size_t *count)
{
    uint16_t u[600];
    size_t len = 0;
    const unsigned char *p = (const unsigned char *)filename;
    while (*p) {
        int32_t c = vv_utf8_next(&p);
        if (c < 0 || len + 2 >= VD_ARRAY_SIZE(u)) {
            return -EILSEQ;
        }
        if (c >= 0x10000) {
            c -= 0x10000;
            u[len++] = (uint16_t)(0xd800 | (c >> 10));
            u[len++] = (uint16_t)(0xdc00 | (c & 0x3ff));
        } else {
            u[len++] = (uint16_t)c;
        }
    }
    u[len] = 0;
    size_t n = (len * 2 + 25) / 26;
    if (n > 0x3f) {
        return -ENAMETOOLONG;
    }
    *first = s->dir_n;
    *count = n;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = vv_dirent_new(s);
        if (!e) {
            return -ENOMEM;
        }
        e[11] = 0xf;
        e[0] = (uint8_t)((n - i) | (i == 0 ? 0x40 : 0));
    }
    for (size_t i = 0; i < 26 * n; i++) {
        size_t off = i % 26;
        off = off < 10 ? 1 + off : off < 22 ? 14 + off - 10 : 28 + off - 22;
        uint8_t *e = s->dir + (s->dir_n - 1 - i / 26) * DIRENT;
        if (i >= 2 * len + 2) {
            e[off] = 0xff;
        } else if (i % 2 == 0) {
            e[off] = (uint8_t)(u[i / 2] & 0xff);
        } else {
            e[off] = (uint8_t)(u[i / 2] >> 8);
        }
    }
    return 0;
}

/* QEMU's create_short_filename, with the collision search in tables. */
static int vv_short_name(vv_state *s, const char *filename, vv_hash *names, vv_hash *tails,
                         uint8_t *name)
{
    const unsigned char *p = (const unsigned char *)filename, *last_dot = NULL;
    bool lossy = false;
    int j = 0;
    memset(name, ' ', 11);
    while (*p) {
        const unsigned char *at = p;
        int32_t c = vv_utf8_next(&p);
        if (c < 0) {
            return -EILSEQ;
        }
        if (c == '.') {
            if (j == 0) {
                lossy = true;
            } else {
                if (last_dot) {
                    lossy = true;
                }
                last_dot = at;
            }
        } else if (!last_dot) {
            uint8_t v = vv_short_char((uint32_t)c);
            if (j < 8 && v) {
                name[j++] = v;
            } else {
                lossy = true;
            }
        }
    }
    if (last_dot) {
        j = 0;
        for (p = last_dot + 1; *p;) {
            int32_t c = vv_utf8_next(&p);
            uint8_t v = vv_short_char((uint32_t)c);
            if (j < 3 && v) {
                name[8 + j++] = v;
            } else {
                lossy = true;
            }
        }
    }
    if (name[0] == 0xe5) {
        name[0] = 0x05;
    }
    for (j = 0; j < 8 && name[j] != ' '; j++) {
    }
    /*
     * QEMU tries i = lossy ? 1 : 0, 1, 2, ... 999998 and takes the first
     * name no earlier entry of the directory has.  For the i of one digit
     * count, the names differ only in the digits of "~i" (at the same
     * place), so tails remembers, per name with that place blanked, the
     * first i not known to be taken: every smaller one was taken when
     * tried, and names are never removed.
     */
    uint8_t cand[12], key[12];
    uint32_t i = lossy ? 1 : 0;
    cand[11] = key[11] = 0;
    if (i == 0) {
        memcpy(cand, name, 11);
        if (!vv_hash_find(names, cand)) {
            goto found;
        }
        i = 1;
    }
    for (uint32_t lo = 1, len = 2; lo < 999999; lo *= 10, len++) {
        uint32_t hi = VD_MIN(lo * 10, 999999u);
        int pos = VD_MIN(j, 8 - (int)len);
        memcpy(key, name, 11);
        memset(key + pos, 1, len);
        vv_slot *memo = vv_hash_find(tails, key);
        if (memo && memo->val > i) {
            i = memo->val;
        }
        for (; i < hi; i++) {
            char tail[8];
            snprintf(tail, sizeof(tail), "~%u", (unsigned)i);
            memcpy(cand, name, 11);
            memcpy(cand + pos, tail, len);
            if (!vv_hash_find(names, cand)) {
                break;
            }
        }
        if (vv_hash_put(tails, key, i < hi ? i + 1 : hi) < 0) {
            return -ENOMEM;
        }
        if (i < hi) {
            goto found;
        }
    }
    return -EEXIST;

found:
    if (vv_hash_put(names, cand, 0) < 0) {
        return -ENOMEM;
    }
    memcpy(name, cand, 11);
    return 0;
}

static uint16_t vv_fat_datetime(time_t t, bool want_time)
{
    struct tm tm;
    if (!localtime_r(&t, &tm)) {
        memset(&tm, 0, sizeof(tm));
    }
    if (want_time) {
        return (uint16_t)((tm.tm_sec / 2) | (tm.tm_min << 5) | (tm.tm_hour << 11));
    }
    return (uint16_t)(tm.tm_mday | ((tm.tm_mon + 1) << 5) | ((tm.tm_year - 80) << 9));
}

static void vv_set_begin(uint8_t *e, uint32_t begin)
{
    vd_st_le16(e + 26, (uint16_t)(begin & 0xffff));
    vd_st_le16(e + 20, (uint16_t)(begin >> 16));
}

/* ------------------------------------------------------------------ FAT */

static void vv_fat_set(vv_state *s, uint32_t cluster, uint32_t value)
{
    if (s->fat_type == 32) {
        vd_st_le32(s->fat + (size_t)cluster * 4, value);
    } else if (s->fat_type == 16) {
        vd_st_le16(s->fat + (size_t)cluster * 2, (uint16_t)value);
    } else {
        uint8_t *p = s->fat + (size_t)cluster * 3 / 2;
        if (cluster & 1) {
            p[0] = (uint8_t)((p[0] & 0xf) | ((value & 0xf) << 4));
            p[1] = (uint8_t)(value >> 4);
        } else {
            p[0] = (uint8_t)value;
            p[1] = (uint8_t)((p[1] & 0xf0) | ((value >> 8) & 0xf));
        }
    }
}

/* ----------------------------------------------------------- the tree */

static int vv_too_big(vv_state *s, vd_error **errp)
{
    return vd_error_set(errp, ENOSPC, "Directory does not fit in FAT%d (capacity %.2f MB)",
                        s->fat_type, s->sector_count / 2000.0);
}

/* The host path of mapping mi (malloc'ed), or NULL. */
static char *vv_path(const vv_state *s, size_t mi)
{
    size_t len = 0;
    for (int k = (int)mi; k >= 0; k = s->map[k].up) {
        len += strlen(s->map[k].name) + 1;
    }
    char *p = len ? malloc(len) : NULL;
    if (!p) {
        return NULL;
    }
    size_t at = len - 1;
    p[at] = '\0';
    for (int k = (int)mi; k >= 0; k = s->map[k].up) {
        size_t n = strlen(s->map[k].name);
        at -= n;
        memcpy(p + at, s->map[k].name, n);
        if (at > 0) {
            p[--at] = '/';
        }
    }
    return p;
}

/* QEMU's read_directory for mapping mi. */
static int vv_read_directory(vv_state *s, size_t mi, vd_error **errp)
{
    vv_mapping *m = &s->map[mi];
    char *dirname = vv_path(s, mi);
    uint32_t first_cluster = m->begin;
    int parent = m->parent;
    uint32_t parent_cluster = parent >= 0 ? s->map[parent].begin : 0xffffffffu;
    vv_hash names = {0}, tails = {0};
    int ret = 0;

    if (!dirname) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    DIR *dir = opendir(dirname);
    if (!dir) {
        ret = vd_error_setg_errno(errp, errno, "Could not read directory %s", dirname);
        free(dirname);
        return ret;
    }
    size_t start = first_cluster == 0 ? 0 : s->dir_n;
    s->map[mi].first_dir_index = (uint32_t)start;
    if (start == 0 && s->dir_n > 0) {
        /* the volume label takes part in the collision search */
        uint8_t key[12] = {0};
        memcpy(key, s->dir, 11);
        if (vv_hash_put(&names, key, 0) < 0) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto out;
        }
    }
    if (first_cluster != 0) {
        static const char dots[2][12] = {".          ", "..         "};
        for (int k = 0; k < 2; k++) {
            uint8_t *e = vv_dirent_new(s);
            uint8_t key[12] = {0};
            memcpy(key, dots[k], 11);
            if (!e || vv_hash_put(&names, key, 0) < 0) {
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                goto out;
            }
            memcpy(e, dots[k], 11);
        }
    }

    struct dirent *de;
    while ((errno = 0, de = readdir(dir))) {
        bool is_dot = !strcmp(de->d_name, ".");
        bool is_dotdot = !strcmp(de->d_name, "..");
        if (first_cluster == 0 && s->dir_n >= s->root_entries - 1) {
            ret = vd_error_set(
                errp, ENOSPC, "Could not read directory %s: Too many entries in root directory",
                dirname);
            goto out;
        }
        if (first_cluster == 0 && (is_dot || is_dotdot)) {
            continue;
        }
        char *path = vd_asprintf("%s/%s", dirname, de->d_name);
        if (!path) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto out;
        }
        struct stat st;
        if (stat(path, &st) < 0) {
            free(path); /* as QEMU: a dangling link or a loop is left out */
            continue;
        }
        bool isdir = S_ISDIR(st.st_mode);
        uint8_t *e;
        if (!is_dot && !is_dotdot) {
            size_t lfirst = 0, lcount = 0;
            uint8_t name[11];
            int r = vv_long_name(s, de->d_name, &lfirst, &lcount);
            if (r == 0) {
                r = vv_short_name(s, de->d_name, &names, &tails, name);
            }
            if (r == 0 && !(e = vv_dirent_new(s))) {
                r = -ENOMEM;
            }
            if (r < 0) {
                if (r == -EILSEQ) {
                    ret = vd_error_set(errp, EILSEQ, "vvfat: invalid UTF-8 name: %s", path);
                } else if (r == -ENAMETOOLONG) {
                    ret = vd_error_set(errp, ENAMETOOLONG, "vvfat: name too long: %s", path);
                } else if (r == -EEXIST) {
                    ret = vd_error_set(errp, EEXIST, "vvfat: no free short name for %s", path);
                } else {
                    ret = vd_error_set(errp, ENOMEM, "out of memory");
                }
                free(path);
                goto out;
            }
            memcpy(e, name, 11);
            uint8_t sum = vv_chksum(name);
            for (size_t k = 0; k < lcount; k++) {
                s->dir[(lfirst + k) * DIRENT + 13] = sum;
            }
        } else {
            e = s->dir + (is_dot ? start : start + 1) * DIRENT;
        }
        e[11] = isdir ? 0x10 : 0x20;
        e[12] = e[13] = 0;
        vd_st_le16(e + 14, vv_fat_datetime(st.st_ctime, true));
        vd_st_le16(e + 16, vv_fat_datetime(st.st_ctime, false));
        vd_st_le16(e + 18, vv_fat_datetime(st.st_atime, false));
        vd_st_le16(e + 20, 0);
        vd_st_le16(e + 22, vv_fat_datetime(st.st_mtime, true));
        vd_st_le16(e + 24, vv_fat_datetime(st.st_mtime, false));
        if (is_dotdot) {
            vv_set_begin(e, parent_cluster);
        } else if (is_dot) {
            vv_set_begin(e, first_cluster);
        } else {
            vd_st_le16(e + 26, 0);
        }
        if (st.st_size > 0x7fffffff) {
            ret = vd_error_set(errp, EFBIG,
                               "Could not read directory %s: File %s is larger than 2GB",
                               dirname, path);
            free(path);
            goto out;
        }
        vd_st_le32(e + 28, isdir ? 0 : (uint32_t)st.st_size);

        if (!is_dot && !is_dotdot && (isdir || st.st_size)) {
            vv_mapping *c = vv_mapping_new(s);
            if (!c) {
                free(path);
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                goto out;
            }
            c->dir_index = (uint32_t)(s->dir_n - 1);
            c->is_dir = isdir;
            c->parent = isdir ? (int)mi : -1;
            c->size = isdir ? 0 : (uint64_t)st.st_size;
            c->up = (int)mi;
            c->name = vd_strdup(de->d_name);
            if (!c->name) {
                free(path);
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                goto out;
            }
        }
        free(path);
        /* more entries than the disk has clusters: give up now, not after
         * the whole of a huge directory is in memory */
        if ((uint64_t)s->dir_n * DIRENT / s->cluster_size > s->cluster_count) {
            ret = vv_too_big(s, errp);
            goto out;
        }
    }
    if (errno) {
        ret = vd_error_setg_errno(errp, errno, "Could not read directory %s", dirname);
        goto out;
    }

    while (s->dir_n % (0x10 * s->sectors_per_cluster)) {
        if (!vv_dirent_new(s)) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto out;
        }
    }
    if (s->fat_type != 32 && mi == 0) {
        while (s->dir_n < s->root_entries) {
            if (!vv_dirent_new(s)) {
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                goto out;
            }
        }
    }
    m = &s->map[mi];
    m->end =
        first_cluster + (uint32_t)((s->dir_n - m->first_dir_index) * DIRENT / s->cluster_size);
    vv_set_begin(s->dir + (size_t)m->dir_index * DIRENT, m->begin);

out:
    vv_hash_clear(&names);
    vv_hash_clear(&tails);
    closedir(dir);
    free(dirname);
    return ret;
}

static void vv_init_mbr(vv_state *s, uint32_t cyls, uint32_t heads, uint32_t secs)
{
    uint8_t *mbr = s->first_sectors;
    uint8_t *part = mbr + 0x1be;
    memset(mbr, 0, SECTOR);
    vd_st_le32(mbr + 0x1b8, 0xbe1afdfa);
    part[0] = 0x80;
    int lba = 0;
    uint32_t pos[2] = {s->offset_to_bootsector, (uint32_t)s->total_sectors - 1};
    uint8_t *chs[2] = {part + 1, part + 5};
    for (int k = 0; k < 2; k++) {
        uint32_t spos = pos[k];
        uint32_t sector = spos % secs;
        spos /= secs;
        uint32_t head = spos % heads;
        spos /= heads;
        if (spos >= cyls) {
            chs[k][0] = chs[k][1] = chs[k][2] = 0xff;
            lba = 1;
        } else {
            chs[k][0] = (uint8_t)head;
            chs[k][1] = (uint8_t)((sector + 1) | ((spos >> 8) << 6));
            chs[k][2] = (uint8_t)spos;
        }
    }
    vd_st_le32(part + 8, s->offset_to_bootsector);
    vd_st_le32(part + 12, (uint32_t)s->total_sectors - s->offset_to_bootsector);
    part[4] = s->fat_type == 12   ? 0x1
              : s->fat_type == 16 ? (lba ? 0xe : 0x06)
                                  : (lba ? 0xc : 0x0b);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
}

static int vv_init_directories(vv_state *s, const char *dirname, uint32_t heads, uint32_t secs,
                               vd_error **errp)
{
    memset(s->first_sectors, 0, sizeof(s->first_sectors));
    s->cluster_size = s->sectors_per_cluster * SECTOR;

    uint32_t i = 1 + s->sectors_per_cluster * SECTOR * 8 / (uint32_t)s->fat_type;
    s->sectors_per_fat = (s->sector_count + i) / i;
    s->offset_to_fat = s->offset_to_bootsector + 1;
    s->offset_to_root_dir = s->offset_to_fat + s->sectors_per_fat * 2;

    uint8_t *label = vv_dirent_new(s);
    if (!label) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    label[11] = 0x28;
    memcpy(label, s->label, 11);

    s->fat_size = s->fat_type == 12 ? (size_t)s->sectors_per_fat * SECTOR * 3 / 2
                                    : (size_t)s->sectors_per_fat * SECTOR;
    s->fat = calloc(1, s->fat_size + 8);
    if (!s->fat) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    s->max_fat_value = s->fat_type == 12 ? 0xfff : s->fat_type == 16 ? 0xffff : 0x0fffffff;

    s->root_entries = 0x02 * 0x10 * s->sectors_per_cluster;
    s->cluster_count = (s->sector_count - s->offset_to_root_dir) / s->sectors_per_cluster;

    vv_mapping *m = vv_mapping_new(s);
    if (!m || !(m->name = vd_strdup(dirname))) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    m->parent = -1;
    m->up = -1;
    m->is_dir = true;
    size_t n = strlen(m->name);
    if (n > 0 && m->name[n - 1] == '/') {
        m->name[n - 1] = '\0';
    }

    uint32_t cluster = 0;
    for (size_t k = 0; k < s->map_n; k++) {
        bool fix_fat = k != 0;
        m = &s->map[k];
        if (m->is_dir) {
            m->begin = cluster;
            int r = vv_read_directory(s, k, errp);
            if (r < 0) {
                return r;
            }
            m = &s->map[k];
        } else {
            m->begin = cluster;
            m->end = cluster + 1 + (uint32_t)((m->size - 1) / s->cluster_size);
            vv_set_begin(s->dir + (size_t)m->dir_index * DIRENT, m->begin);
        }
        cluster = m->end;
        if (cluster > s->cluster_count) {
            return vv_too_big(s, errp);
        }
        if (fix_fat) {
            for (uint32_t j = m->begin; j < m->end - 1; j++) {
                vv_fat_set(s, j, j + 1);
            }
            vv_fat_set(s, m->end - 1, s->max_fat_value);
        }
    }
    vv_fat_set(s, 0, s->max_fat_value);
    vv_fat_set(s, 1, s->max_fat_value);

    uint8_t *b = s->first_sectors + (size_t)s->offset_to_bootsector * SECTOR;
    b[0] = 0xeb;
    b[1] = 0x3e;
    b[2] = 0x90;
    memcpy(b + 3, "MSWIN4.1", 8);
    vd_st_le16(b + 11, SECTOR);
    b[13] = (uint8_t)s->sectors_per_cluster;
    vd_st_le16(b + 14, 1);
    b[16] = 2;
    vd_st_le16(b + 17, (uint16_t)s->root_entries);
    vd_st_le16(b + 19, s->sector_count > 0xffff ? 0 : (uint16_t)s->sector_count);
    b[21] = s->offset_to_bootsector > 0 ? 0xf8 : 0xf0;
    s->fat[0] = b[21];
    vd_st_le16(b + 22, (uint16_t)s->sectors_per_fat);
    vd_st_le16(b + 24, (uint16_t)secs);
    vd_st_le16(b + 26, (uint16_t)heads);
    vd_st_le32(b + 28, s->offset_to_bootsector);
    vd_st_le32(b + 32, s->sector_count > 0xffff ? s->sector_count : 0);
    b[36] = s->offset_to_bootsector == 0 ? 0 : 0x80;
    b[38] = 0x29;
    vd_st_le32(b + 39, 0xfabe1afd);
    memcpy(b + 43, s->label, 11);
    memcpy(b + 54, s->fat_type == 12 ? "FAT12   " : "FAT16   ", 8);
    b[510] = 0x55;
    b[511] = 0xaa;
    return 0;
}

/* ------------------------------------------------------------- open */

static int vv_rw_init(vv_state *s, vd_error **errp);

static int vv_commit(vv_state *s);

static void vv_close(vd_node *bs)
{
    vv_state *s = bs->opaque;
    if (s->rw && s->base) {
        vv_commit(s); /* a failure keeps the host tree as last committed */
    }
    if (s->cur_fd > 0) {
        close(s->cur_fd);
    }
    for (size_t i = 0; i < s->map_n; i++) {
        free(s->map[i].name);
    }
    free(s->map);
    free(s->dir);
    free(s->fat);
    if (s->lock_init) {
        pthread_mutex_destroy(&s->lock);
    }
    if (s->rw_lock_init) {
        pthread_mutex_destroy(&s->rw_lock);
    }
    if (s->ov_fd > 0) {
        close(s->ov_fd);
    }
    free(s->ov_bits);
    free(s->dirty);
    vv_tree_free(s->base);
    memset(s, 0, sizeof(*s));
}

static int vv_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    vv_state *s = bs->opaque;
    vv_params fp = {0};
    const char *fn = vd_opts_get(opts, "filename");
    const char *dirname = vd_opts_get(opts, "dir");
    uint64_t fat_type;
    bool floppy, rw;
    int ret;

    if (fn && !dirname) {
        /* driver=vvfat,filename=fat:... */
        if (vv_parse(fn, &fp, errp) < 0) {
            return -EINVAL;
        }
        dirname = fp.dir;
    }
    if (!dirname) {
        return vd_error_set(errp, EINVAL, "vvfat block driver requires a 'dir' option");
    }
    if (vd_opts_get_u64(opts, "fat-type", (uint64_t)fp.fat_type, &fat_type, errp) < 0 ||
        vd_opts_get_bool(opts, "floppy", fp.floppy, &floppy, errp) < 0 ||
        vd_opts_get_bool(opts, "rw", fp.rw, &rw, errp) < 0) {
        ret = -EINVAL;
        goto fail;
    }

    memset(s->label, ' ', sizeof(s->label));
    const char *label = vd_opts_get(opts, "label");
    if (label) {
        size_t n = strlen(label);
        if (n > 11) {
            ret = vd_error_set(errp, EINVAL, "vvfat label cannot be longer than 11 bytes");
            goto fail;
        }
        memcpy(s->label, label, n);
    } else {
        memcpy(s->label, "QEMU VVFAT", 10);
    }

    uint32_t cyls, heads, secs;
    s->fat_type = (int)(uint32_t)fat_type; /* QEMU stores the number in an int */
    if (floppy) {
        if (!s->fat_type) {
            s->fat_type = 12;
            secs = 36;
        } else {
            secs = s->fat_type == 12 ? 18 : 36;
        }
        cyls = 80;
        heads = 2;
    } else {
        if (!s->fat_type) {
            s->fat_type = 16;
        }
        s->offset_to_bootsector = 0x3f;
        cyls = s->fat_type == 12 ? 64 : 1024;
        heads = 16;
        secs = 63;
    }
    if (s->fat_type != 12 && s->fat_type != 16 && s->fat_type != 32) {
        ret = vd_error_set(errp, EINVAL, "Valid FAT types are only 12, 16 and 32");
        goto fail;
    }
    /* QEMU sets this after the floppy values, which it thereby overrides */
    s->sectors_per_cluster = 0x10;
    s->sector_count = cyls * heads * secs - s->offset_to_bootsector;
    s->total_sectors = (uint64_t)cyls * heads * secs;

    if (rw) {
        if (!(bs->flags & VD_NODE_RDWR)) {
            ret = vd_error_set(errp, EPERM,
                               "Unable to set VVFAT to 'rw' when drive is read-only");
            goto fail;
        }
        if (s->fat_type == 32) {
            ret = vd_error_set(errp, ENOTSUP,
                               "vvfat: rw is not supported with FAT32 (QEMU's FAT32 layout "
                               "is not a valid FAT32 file system)");
            goto fail;
        }
        s->rw = true;
    } else if (bs->flags & VD_NODE_RDWR) {
        ret = vd_error_set(errp, EACCES, "Image is read-only");
        goto fail;
    } else {
        bs->read_only = true;
    }

    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
        goto fail;
    }
    s->lock_init = true;
    s->cur_fd = -1;

    ret = vv_init_directories(s, dirname, heads, secs, errp);
    if (ret < 0) {
        goto fail;
    }
    if (s->offset_to_bootsector > 0) {
        vv_init_mbr(s, cyls, heads, secs);
    }
    if (s->rw) {
        ret = vv_rw_init(s, errp);
        if (ret < 0) {
            goto fail;
        }
    }
    bs->request_alignment = SECTOR;
    bs->supports_fua = s->rw;
    free(fp.dir);
    return 0;

fail:
    free(fp.dir);
    vv_close(bs);
    return ret < 0 ? ret : -EINVAL;
}

/* ------------------------------------------------------------------ I/O */

static int64_t vv_get_length(vd_node *bs)
{
    vv_state *s = bs->opaque;
    return (int64_t)(s->total_sectors * SECTOR);
}

/* The mapping holding cluster c, or NULL (mappings are sorted by begin). */
static vv_mapping *vv_find(vv_state *s, uint32_t c)
{
    size_t lo = 0, hi = s->map_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->map[mid].end <= c) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < s->map_n && s->map[lo].begin <= c && c < s->map[lo].end) {
        return &s->map[lo];
    }
    return NULL;
}

/* len bytes of file m from offset (within its size), the rest zeroes. */
static int vv_read_file(vv_state *s, vv_mapping *m, uint64_t off, uint8_t *buf, size_t len)
{
    size_t want = off >= m->size ? 0 : (size_t)VD_MIN((uint64_t)len, m->size - off);
    size_t got = 0;
    int ret = 0;
    memset(buf + want, 0, len - want);
    if (!want) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    size_t idx = (size_t)(m - s->map);
    if (s->cur_fd < 0 || s->cur_map != idx) {
        if (s->cur_fd >= 0) {
            close(s->cur_fd);
        }
        char *path = vv_path(s, idx);
        s->cur_fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        free(path);
        s->cur_map = idx;
        if (s->cur_fd < 0) {
            ret = -EIO;
            goto out;
        }
    }
    while (got < want) {
        ssize_t r = pread(s->cur_fd, buf + got, want - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            ret = -EIO;
            goto out;
        }
        if (r == 0) {
            break; /* the file shrank: zeroes, as past its end */
        }
        got += (size_t)r;
    }
    memset(buf + got, 0, want - got);
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* n sectors of the image as built from the host tree */
static int vv_read_virtual(vv_state *s, uint64_t sector, uint64_t n, uint8_t *buf)
{
    while (n > 0) {
        if (sector >= s->total_sectors) {
            memset(buf, 0, n * SECTOR);
            return 0;
        }
        if (sector < s->offset_to_root_dir) {
            const uint8_t *src;
            if (sector < s->offset_to_fat) {
                src = s->first_sectors + sector * SECTOR;
            } else {
                uint64_t fs = (sector - s->offset_to_fat) % s->sectors_per_fat;
                src = s->fat + fs * SECTOR;
            }
            memcpy(buf, src, SECTOR);
            buf += SECTOR;
            sector++;
            n--;
            continue;
        }
        uint64_t rel = sector - s->offset_to_root_dir;
        uint64_t cluster = rel / s->sectors_per_cluster;
        uint64_t in_cl = rel % s->sectors_per_cluster;
        vv_mapping *m = cluster > s->cluster_count ? NULL : vv_find(s, (uint32_t)cluster);
        uint64_t run;
        if (!m) {
            run = VD_MIN(n, s->sectors_per_cluster - in_cl);
            memset(buf, 0, run * SECTOR);
        } else if (m->is_dir) {
            run = VD_MIN(n, s->sectors_per_cluster - in_cl);
            size_t at = (size_t)m->first_dir_index * DIRENT +
                        (size_t)(cluster - m->begin) * s->cluster_size + in_cl * SECTOR;
            memcpy(buf, s->dir + at, run * SECTOR);
        } else {
            run = VD_MIN(n, (m->end - cluster) * s->sectors_per_cluster - in_cl);
            uint64_t foff = (cluster - m->begin) * s->cluster_size + in_cl * SECTOR;
            int r = vv_read_file(s, m, foff, buf, run * SECTOR);
            if (r < 0) {
                return r;
            }
        }
        buf += run * SECTOR;
        sector += run;
        n -= run;
    }
    return 0;
}

/* ------------------------------------------------------------------- rw */

/*
 * rw (fat:rw:DIR): writes go to an overlay (an unlinked temporary file and
 * a bitmap of its sectors), and reads see the overlay over the image built
 * from the tree.  A flush (and the close) commits: the FAT file system as
 * it now is is parsed (first FAT, directories, long names) and compared
 * with the tree as last committed; files and directories created,
 * changed, renamed, moved and deleted are applied to DIR (see vv_plan
 * below).  Any inconsistency (chains that loop, cross or leave the disk, a
 * size the chain does not hold, a changed boot sector) fails the commit
 * with nothing applied, and so does a plan the host does not fit (a
 * warning says why).  Before a host file changes or moves, the clusters
 * the image reads from it are copied into the overlay, so the disk stays
 * what the guest wrote.
 */

typedef struct vv_entry {
    char *rel; /* path below DIR */
    bool dir, dirty;
    uint32_t first, size;
    uint64_t chain; /* files: a hash of the cluster chain */
    uint32_t mtime; /* the FAT date << 16 | the FAT time of modification */
} vv_entry;

typedef struct vv_tree {
    vv_entry *e;
    size_t n, cap;
} vv_tree;

static void vv_tree_free(vv_tree *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; i < t->n; i++) {
        free(t->e[i].rel);
    }
    free(t->e);
    free(t);
}

static bool vv_bit(const uint8_t *b, uint64_t i)
{
    return (b[i / 8] >> (i % 8)) & 1;
}

static void vv_bit_set(uint8_t *b, uint64_t i)
{
    b[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* n sectors as the guest sees them: the overlay over the built image */
static int vv_view_read(vv_state *s, uint64_t sector, uint64_t n, uint8_t *buf)
{
    while (n > 0) {
        bool ov = vv_bit(s->ov_bits, sector);
        uint64_t run = 1;
        while (run < n && vv_bit(s->ov_bits, sector + run) == ov) {
            run++;
        }
        if (ov) {
            size_t want = run * SECTOR, got = 0;
            while (got < want) {
                ssize_t r =
                    pread(s->ov_fd, buf + got, want - got, (off_t)(sector * SECTOR + got));
                if (r < 0 && errno == EINTR) {
                    continue;
                }
                if (r <= 0) {
                    return -EIO;
                }
                got += (size_t)r;
            }
        } else {
            int r = vv_read_virtual(s, sector, run, buf);
            if (r < 0) {
                return r;
            }
        }
        buf += run * SECTOR;
        sector += run;
        n -= run;
    }
    return 0;
}

static int vv_ov_write(vv_state *s, uint64_t sector, uint64_t n, const uint8_t *buf)
{
    size_t want = n * SECTOR, done = 0;
    while (done < want) {
        ssize_t r = pwrite(s->ov_fd, buf + done, want - done, (off_t)(sector * SECTOR + done));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -EIO;
        }
        done += (size_t)r;
    }
    for (uint64_t i = 0; i < n; i++) {
        vv_bit_set(s->ov_bits, sector + i);
    }
    return 0;
}

static uint32_t vv_fat_get(const vv_state *s, const uint8_t *fat, uint32_t c)
{
    if (s->fat_type == 16) {
        return vd_ld_le16(fat + (size_t)c * 2);
    }
    const uint8_t *p = fat + (size_t)c * 3 / 2;
    uint32_t v = p[0] | ((uint32_t)p[1] << 8);
    return (c & 1) ? v >> 4 : v & 0xfff;
}

typedef struct vv_scan {
    vv_state *s;
    uint8_t *fat;
    uint8_t *used; /* clusters seen in a chain */
    uint32_t *chain;
    vv_tree *t;
} vv_scan;

/* The chain from first into sc->chain (at most max clusters); -EINVAL when
 * it is not a proper chain. */
static int vv_walk(vv_scan *sc, uint32_t first, uint32_t max, uint32_t *count)
{
    vv_state *s = sc->s;
    uint32_t n = 0, c = first;
    for (;;) {
        if (c < 2 || c >= s->cluster_count || vv_bit(sc->used, c) || n >= max) {
            return -EINVAL;
        }
        vv_bit_set(sc->used, c);
        sc->chain[n++] = c;
        uint32_t next = vv_fat_get(s, sc->fat, c);
        if (next >= s->max_fat_value - 7) {
            break;
        }
        c = next;
    }
    *count = n;
    return 0;
}

static int vv_tree_add(vv_tree *t, char *rel, bool dir, uint32_t first, uint32_t size,
                       bool dirty, uint64_t chain, uint32_t mtime)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        vv_entry *e = realloc(t->e, cap * sizeof(*e));
        if (!e) {
            free(rel);
            return -ENOMEM;
        }
        t->e = e;
        t->cap = cap;
    }
    t->e[t->n++] =
        (vv_entry){.rel = rel, .dir = dir, .dirty = dirty, .first = first, .size = size, .chain = chain, .mtime = mtime};
    return 0;
}

/* UTF-16 name (len units) to UTF-8 in out (1024 bytes); -EINVAL if bad. */
static int vv_utf16_to_utf8(const uint16_t *u, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t c = u[i];
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < len && u[i + 1] >= 0xdc00 &&
            u[i + 1] <= 0xdfff) {
            c = 0x10000 + ((c - 0xd800) << 10) + (u[++i] - 0xdc00);
        } else if (c >= 0xd800 && c <= 0xdfff) {
            return -EINVAL;
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
    return 0;
}

static bool vv_name_ok(const char *n)
{
    if (!n[0] || !strcmp(n, ".") || !strcmp(n, "..") || strlen(n) > 255) {
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)n; *p; p++) {
        if (*p < 0x20 || *p == '/' || *p == '\\') {
            return false;
        }
    }
    return true;
}

/* The entries of one directory (its bytes: len), below rel ("" the root). */
static int vv_scan_dir(vv_scan *sc, const uint8_t *d, size_t len, const char *rel, int depth)
{
    vv_state *s = sc->s;
    uint16_t lfn[20 * 13 + 1];
    int lfn_n = 0, lfn_next = 0;
    uint8_t lfn_sum = 0;
    bool lfn_ok = false, seen_label = false;

    if (depth > 64) {
        return -EINVAL;
    }
    for (size_t off = 0; off + DIRENT <= len; off += DIRENT) {
        const uint8_t *e = d + off;
        if (e[0] == 0) {
            break;
        }
        if (e[0] == 0xe5) {
            lfn_ok = false;
            continue;
        }
        if (e[11] == 0x0f) {
            int seq = e[0] & 0x3f;
            if (e[0] & 0x40) {
                lfn_n = seq;
                lfn_sum = e[13];
                lfn_ok = seq >= 1 && seq <= 20;
                lfn_next = seq;
                if (lfn_ok) {
                    for (int k = 0; k < lfn_n * 13 + 1; k++) {
                        lfn[k] = 0;
                    }
                }
            } else if (!lfn_ok || seq != lfn_next - 1 || e[13] != lfn_sum) {
                lfn_ok = false;
                continue;
            } else {
                lfn_next = seq;
            }
            if (lfn_ok) {
                static const int pos[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
                for (int k = 0; k < 13; k++) {
                    lfn[(seq - 1) * 13 + k] = vd_ld_le16(e + pos[k]);
                }
            }
            continue;
        }
        if (e[11] & 0xc0) {
            return -EINVAL; /* reserved attribute bits: not a directory entry */
        }
        if (e[11] & 0x08) {
            if (depth > 0 || seen_label) {
                return -EINVAL; /* one volume label, in the root */
            }
            seen_label = true;
            lfn_ok = false;
            continue;
        }
        if (e[0] == '.') {
            lfn_ok = false;
            continue;
        }
        char name[1024];
        if (lfn_ok && lfn_next == 1 && vv_chksum(e) == lfn_sum) {
            size_t n = 0;
            while (n < (size_t)lfn_n * 13 && lfn[n] != 0) {
                n++;
            }
            if (vv_utf16_to_utf8(lfn, n, name) < 0) {
                return -EINVAL;
            }
        } else {
            /* QEMU's parse_short_name, lower case */
            size_t o = 0;
            int j;
            for (j = 7; j >= 0 && e[j] == ' '; j--) {
            }
            for (int k = 0; k <= j; k++) {
                uint8_t c = (k == 0 && e[0] == 0x05) ? 0xe5 : e[k];
                name[o++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
            }
            for (j = 2; j >= 0 && e[8 + j] == ' '; j--) {
            }
            if (j >= 0) {
                name[o++] = '.';
                for (int k = 0; k <= j; k++) {
                    uint8_t c = e[8 + k];
                    name[o++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
                }
            }
            name[o] = '\0';
        }
        lfn_ok = false;
        if (!vv_name_ok(name)) {
            return -EINVAL;
        }
        char *path = rel[0] ? vd_asprintf("%s/%s", rel, name) : vd_strdup(name);
        if (!path) {
            return -ENOMEM;
        }
        if (strlen(path) > 3000) {
            free(path);
            return -EINVAL;
        }
        uint32_t first = vd_ld_le16(e + 26) | ((uint32_t)vd_ld_le16(e + 20) << 16);
        uint32_t size = vd_ld_le32(e + 28);
        if (e[11] & 0x10) {
            uint32_t n;
            if (vv_walk(sc, first, s->cluster_count, &n) < 0) {
                free(path);
                return -EINVAL;
            }
            uint8_t *sub = malloc((size_t)n * s->cluster_size);
            if (!sub) {
                free(path);
                return -ENOMEM;
            }
            int r = 0;
            uint32_t *chain = malloc(n * sizeof(uint32_t));
            if (!chain) {
                r = -ENOMEM;
            } else {
                memcpy(chain, sc->chain, n * sizeof(uint32_t));
            }
            for (uint32_t k = 0; r == 0 && k < n; k++) {
                r = vv_view_read(
                    s, s->offset_to_root_dir + (uint64_t)chain[k] * s->sectors_per_cluster,
                    s->sectors_per_cluster, sub + (size_t)k * s->cluster_size);
            }
            free(chain);
            if (r == 0) {
                r = vv_tree_add(sc->t, vd_strdup(path), true, first, 0, false, 0, 0);
            }
            if (r == 0) {
                r = vv_scan_dir(sc, sub, (size_t)n * s->cluster_size, path, depth + 1);
            }
            free(sub);
            free(path);
            if (r < 0) {
                return r;
            }
            continue;
        }
        uint32_t need = (uint32_t)(((uint64_t)size + s->cluster_size - 1) / s->cluster_size);
        uint32_t n = 0;
        bool dirty = false;
        if (need == 0) {
            if (first != 0) {
                free(path);
                return -EINVAL;
            }
        } else if (vv_walk(sc, first, need, &n) < 0 || n != need) {
            free(path);
            return -EINVAL;
        }
        uint64_t chain = 14695981039346656037u; /* FNV-1a over the cluster numbers */
        for (uint32_t k = 0; k < n; k++) {
            dirty |= vv_bit(s->dirty, sc->chain[k]);
            chain = (chain ^ sc->chain[k]) * 1099511628211u;
        }
        uint32_t mtime = (uint32_t)vd_ld_le16(e + 24) << 16 | vd_ld_le16(e + 22);
        int r = vv_tree_add(sc->t, path, false, first, size, dirty, chain, mtime);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

static int vv_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const vv_entry *)a)->rel, ((const vv_entry *)b)->rel);
}

/* The file system as the guest left it, or -EINVAL (inconsistent). */
static int vv_scan_tree(vv_state *s, vv_tree **out)
{
    vv_scan sc = {.s = s};
    int r = 0;
    uint8_t *root = NULL;
    sc.t = calloc(1, sizeof(*sc.t));
    sc.fat = malloc((size_t)s->sectors_per_fat * SECTOR);
    sc.used = calloc(1, s->cluster_count / 8 + 1);
    sc.chain = malloc(((size_t)s->cluster_count + 1) * sizeof(uint32_t));
    root = malloc((size_t)s->root_entries * DIRENT);
    if (!sc.t || !sc.fat || !sc.used || !sc.chain || !root) {
        r = -ENOMEM;
        goto out;
    }
    /* the MBR and boot sector must stay */
    uint8_t sec[SECTOR];
    for (uint32_t k = 0; k < s->offset_to_fat; k++) {
        if (vv_bit(s->ov_bits, k)) {
            r = vv_view_read(s, k, 1, sec);
            if (r < 0) {
                goto out;
            }
            if (memcmp(sec, s->first_sectors + (size_t)k * SECTOR, SECTOR)) {
                r = -EINVAL;
                goto out;
            }
        }
    }
    r = vv_view_read(s, s->offset_to_fat, s->sectors_per_fat, sc.fat);
    if (r == 0) {
        r = vv_view_read(s, s->offset_to_root_dir, s->root_entries * DIRENT / SECTOR, root);
    }
    if (r == 0) {
        r = vv_scan_dir(&sc, root, (size_t)s->root_entries * DIRENT, "", 0);
    }
    if (r == 0) {
        if (sc.t->n > 1) {
            qsort(sc.t->e, sc.t->n, sizeof(vv_entry), vv_entry_cmp);
        }
        for (size_t k = 1; k < sc.t->n; k++) {
            if (!strcmp(sc.t->e[k - 1].rel, sc.t->e[k].rel)) {
                r = -EINVAL; /* the same name twice in a directory */
            }
        }
    }
out:
    free(sc.fat);
    free(sc.used);
    free(sc.chain);
    free(root);
    if (r < 0) {
        vv_tree_free(sc.t);
        return r;
    }
    *out = sc.t;
    return 0;
}

/* A FAT modification date and time (date << 16 | time, local time) as a
 * timespec for futimens(): UTIME_OMIT when it is not a valid time. */
static struct timespec vv_fat_mtime(uint32_t dt)
{
    struct tm tm = {
        .tm_year = (int)(dt >> 25) + 80,
        .tm_mon = (int)((dt >> 21) & 15) - 1,
        .tm_mday = (int)((dt >> 16) & 31),
        .tm_hour = (int)((dt >> 11) & 31),
        .tm_min = (int)((dt >> 5) & 63),
        .tm_sec = (int)(dt & 31) * 2,
        .tm_isdst = -1,
    };
    struct timespec ts = {.tv_nsec = UTIME_OMIT};
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 59) {
        return ts;
    }
    time_t t = mktime(&tm);
    if (t != (time_t)-1) {
        ts = (struct timespec){.tv_sec = t, .tv_nsec = 0};
    }
    return ts;
}

/* Write file e's contents (from the guest's view) to a new temporary file
 * in host directory dir (mode of host file mode_from if it exists, else
 * 0644); *tmp gets its name in dir. */
static int vv_stage(vv_state *s, vv_entry *e, const char *dir, const char *mode_from,
                    char **tmp)
{
    char *name = vd_asprintf("%s/.vdisk-vvfat.XXXXXX", dir);
    if (!name) {
        return -ENOMEM;
    }
    int fd = mkstemp(name);
    if (fd < 0) {
        int err = errno;
        free(name);
        return -err;
    }
    struct stat st;
    fchmod(fd, mode_from && stat(mode_from, &st) == 0 ? (st.st_mode & 07777) : 0644);
    int r = 0;
    uint8_t *buf = malloc(s->cluster_size);
    uint32_t c = e->first, left = e->size;
    if (!buf) {
        r = -ENOMEM;
    }
    /* the chain was checked by the scan */
    uint8_t *fat = malloc((size_t)s->sectors_per_fat * SECTOR);
    if (!fat) {
        r = -ENOMEM;
    } else if (r == 0) {
        r = vv_view_read(s, s->offset_to_fat, s->sectors_per_fat, fat);
    }
    while (r == 0 && left > 0) {
        r = vv_view_read(s, s->offset_to_root_dir + (uint64_t)c * s->sectors_per_cluster,
                         s->sectors_per_cluster, buf);
        uint32_t n = VD_MIN(left, s->cluster_size);
        if (r == 0 && write(fd, buf, n) != (ssize_t)n) {
            r = -EIO;
        }
        left -= n;
        c = vv_fat_get(s, fat, c);
    }
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, vv_fat_mtime(e->mtime)};
    if (r == 0 && times[1].tv_nsec != UTIME_OMIT && futimens(fd, times) < 0) {
        r = -errno;
    }
    if (r == 0 && fsync(fd) < 0) {
        r = -EIO;
    }
    close(fd);
    free(buf);
    free(fat);
    if (r < 0) {
        unlink(name);
        free(name);
        return r;
    }
    *tmp = vd_strdup(strrchr(name, '/') + 1);
    if (!*tmp) {
        unlink(name);
    }
    free(name);
    return *tmp ? 0 : -ENOMEM;
}

/* Copy what the image reads from host file mapping m into the overlay. */
static int vv_pin(vv_state *s, vv_mapping *m)
{
    uint8_t *buf = malloc(s->cluster_size);
    if (!buf) {
        return -ENOMEM;
    }
    int r = 0;
    for (uint32_t c = m->begin; r == 0 && c < m->end; c++) {
        uint64_t sec = s->offset_to_root_dir + (uint64_t)c * s->sectors_per_cluster;
        for (uint32_t k = 0; r == 0 && k < s->sectors_per_cluster; k++) {
            if (!vv_bit(s->ov_bits, sec + k)) {
                r = vv_read_virtual(s, sec + k, 1, buf);
                if (r == 0) {
                    r = vv_ov_write(s, sec + k, 1, buf);
                }
            }
        }
    }
    free(buf);
    return r;
}

/*
 * A commit plans host operations from the tree as last committed (b) and
 * the tree the guest left (t).  Entries keep their identity by first
 * cluster: a directory with the same first cluster is the same directory
 * (renamed or moved when its name or parent changed: a host rename), a
 * file with the same first cluster, size and chain, none of its clusters
 * written, is the same file (a host rename when moved); an empty file is
 * the same at the same name in the same directory.  Everything else in b
 * was deleted and everything else in t is new.
 *
 * The host tree is modelled as nodes (a parent and a name): node 0 is DIR,
 * node i + 1 base entry i, then the new directories.  Applying:
 *  1. every moving entry and every deleted directory is renamed to a
 *     temporary name in its own parent, deepest first (so no rename
 *     cycle can block, and no target is taken);
 *  2. deleted files are unlinked (not those a new file of the same name
 *     in the same directory replaces by a rename);
 *  3. in the order of the new tree, parents first: directories are made,
 *     moving entries renamed to their place, new and changed files (staged
 *     beforehand in the nearest directory that exists on the host, so a
 *     full disk fails before anything changes) renamed into place;
 *  4. deleted directories, now empty of everything the FAT side knew,
 *     are removed (rmdir, deepest first).
 * Before 1, the plan is checked against the host (nothing applied when a
 * check fails): a directory to delete holds only entries of b, is a real
 * directory; a moving entry exists; a new name is not taken on the host by
 * something the FAT side never saw.
 */
typedef struct vv_node {
    int parent; /* node index; -1 for DIR */
    const char *name;
    char *own; /* a temporary name, malloc'ed */
} vv_node;

typedef struct vv_plan {
    vv_state *s;
    vv_tree *b, *t;
    int *bpar, *tpar; /* parent entry within the same tree, -1: the root */
    int *bmatch;      /* base entry -> new entry (kept), or -1 */
    bool *bmove;      /* base entry kept under another name or parent */
    int *tnode;       /* new entry -> node, or -1 (a file to write) */
    int *anchor;      /* new file to write -> node it is staged in */
    char **tmp;       /* new file to write -> staged name */
    vv_node *node;
    size_t node_n;
    char why[512]; /* why a commit was refused */
} vv_plan;

static const char *vv_base_name(const char *rel)
{
    const char *sl = strrchr(rel, '/');
    return sl ? sl + 1 : rel;
}

/* The entry of tree t with path rel (len bytes), or -1. */
static int vv_tree_find(const vv_tree *t, const char *rel, size_t len)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *e = t->e[mid].rel;
        int c = strncmp(e, rel, len);
        if (c == 0 && e[len] != '\0') {
            c = 1;
        }
        if (c == 0) {
            return (int)mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

static int vv_parents(const vv_tree *t, int *par)
{
    for (size_t i = 0; i < t->n; i++) {
        const char *sl = strrchr(t->e[i].rel, '/');
        par[i] = sl ? vv_tree_find(t, t->e[i].rel, (size_t)(sl - t->e[i].rel)) : -1;
        if (sl && (par[i] < 0 || !t->e[par[i]].dir)) {
            return -EINVAL;
        }
    }
    return 0;
}

static int vv_depth(const char *rel)
{
    int d = 0;
    for (; *rel; rel++) {
        d += *rel == '/';
    }
    return d;
}

/* The host path of node k, plus "/child" when child is not NULL. */
static char *vv_node_path(const vv_plan *p, int k, const char *child)
{
    const char *part[80];
    int n = 0;
    for (; k > 0 && n < 78; k = p->node[k].parent) {
        part[n++] = p->node[k].name;
    }
    if (k > 0) {
        return NULL;
    }
    size_t len = strlen(p->s->map[0].name) + 1 + (child ? strlen(child) + 1 : 0);
    for (int i = 0; i < n; i++) {
        len += strlen(part[i]) + 1;
    }
    char *out = malloc(len);
    if (!out) {
        return NULL;
    }
    size_t o = (size_t)snprintf(out, len, "%s", p->s->map[0].name);
    for (int i = n - 1; i >= 0; i--) {
        o += (size_t)snprintf(out + o, len - o, "/%s", part[i]);
    }
    if (child) {
        snprintf(out + o, len - o, "/%s", child);
    }
    return out;
}

/* The parent node of new entry j. */
static int vv_tparent(const vv_plan *p, size_t j)
{
    return p->tpar[j] < 0 ? 0 : p->tnode[p->tpar[j]];
}

/* The path in the base tree of node k (a base node or DIR): "" for DIR. */
static const char *vv_base_rel(const vv_plan *p, int k)
{
    return k == 0 ? "" : p->b->e[k - 1].rel;
}

/* The base entry named name in the directory that is node k, or -1. */
static int vv_base_child(const vv_plan *p, int k, const char *name)
{
    if (k > (int)p->b->n) {
        return -1; /* a new directory */
    }
    const char *d = vv_base_rel(p, k);
    char *rel = d[0] ? vd_asprintf("%s/%s", d, name) : vd_strdup(name);
    int i = rel ? vv_tree_find(p->b, rel, strlen(rel)) : -1;
    free(rel);
    return i;
}

/* The new entry named name in the directory that is node k, or -1. */
static int vv_new_child(const vv_plan *p, int k, const char *name)
{
    const char *d;
    if (k == 0) {
        d = "";
    } else if (k <= (int)p->b->n) {
        if (p->bmatch[k - 1] < 0) {
            return -1; /* a deleted directory */
        }
        d = p->t->e[p->bmatch[k - 1]].rel;
    } else {
        return -1; /* new directories get only new entries */
    }
    char *rel = d[0] ? vd_asprintf("%s/%s", d, name) : vd_strdup(name);
    int j = rel ? vv_tree_find(p->t, rel, strlen(rel)) : -1;
    free(rel);
    return j;
}

static bool vv_moving(const vv_plan *p, size_t i)
{
    return p->bmove[i];
}

static void vv_refuse(vv_plan *p, const char *what, const char *rel)
{
    snprintf(p->why, sizeof(p->why), "%s/%s %s", p->s->map[0].name, rel, what);
}

/* Match entries, classify, check the plan against the host: -ENOTSUP
 * (p->why says why) when it cannot be applied as the FAT side wants. */
static int vv_plan_make(vv_plan *p)
{
    vv_state *s = p->s;
    vv_tree *b = p->b, *t = p->t;
    int r = vv_parents(b, p->bpar);
    if (r == 0) {
        r = vv_parents(t, p->tpar);
    }
    if (r < 0) {
        return r;
    }
    uint32_t *cl = calloc((size_t)s->cluster_count + 1, sizeof(uint32_t));
    if (!cl) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < b->n; i++) {
        p->bmatch[i] = -1;
        if (b->e[i].first >= 2 && b->e[i].first < s->cluster_count) {
            cl[b->e[i].first] = (uint32_t)i + 1;
        }
    }
    p->node[0] = (vv_node){.parent = -1, .name = ""};
    for (size_t i = 0; i < b->n; i++) {
        p->node[i + 1] =
            (vv_node){.parent = p->bpar[i] + 1, .name = vv_base_name(b->e[i].rel)};
    }
    p->node_n = b->n + 1;
    /* directories and non-empty files by their first cluster */
    for (size_t j = 0; j < t->n; j++) {
        vv_entry *te = &t->e[j];
        p->tnode[j] = -1;
        uint32_t i1 = te->first < s->cluster_count ? cl[te->first] : 0;
        if (i1) {
            vv_entry *be = &b->e[i1 - 1];
            if (be->dir == te->dir &&
                (te->dir || (be->size == te->size && be->chain == te->chain && !te->dirty))) {
                p->bmatch[i1 - 1] = (int)j;
                p->tnode[j] = (int)i1;
            }
        }
        if (te->dir && p->tnode[j] < 0) {
            p->tnode[j] = (int)p->node_n;
            p->node[p->node_n++] = (vv_node){.parent = -1, .name = vv_base_name(te->rel)};
        }
    }
    free(cl);
    /* empty files by their name in the same directory */
    for (size_t j = 0; j < t->n; j++) {
        vv_entry *te = &t->e[j];
        if (te->dir || te->first != 0) {
            continue;
        }
        int i = vv_base_child(p, vv_tparent(p, j), vv_base_name(te->rel));
        if (i >= 0 && !b->e[i].dir && b->e[i].first == 0 && p->bmatch[i] < 0) {
            p->bmatch[i] = (int)j;
            p->tnode[j] = i + 1;
        }
    }

    for (size_t i = 0; i < b->n; i++) {
        int j = p->bmatch[i];
        p->bmove[i] = j >= 0 && (vv_tparent(p, (size_t)j) != p->node[i + 1].parent ||
                                 strcmp(p->node[i + 1].name, vv_base_name(t->e[j].rel)));
    }

    /* the host must be as the plan expects */
    struct stat st;
    for (size_t i = 0; i < b->n; i++) {
        char *path = vd_asprintf("%s/%s", s->map[0].name, b->e[i].rel);
        if (!path) {
            return -ENOMEM;
        }
        if (b->e[i].dir && p->bmatch[i] < 0) {
            DIR *d = NULL;
            if (lstat(path, &st) < 0) {
                vv_refuse(p, "is no longer on the host, not deleted", b->e[i].rel);
            } else if (!S_ISDIR(st.st_mode)) {
                vv_refuse(p,
                          S_ISLNK(st.st_mode) ? "is a symbolic link on the host, not deleted"
                                              : "is no longer a directory on the host",
                          b->e[i].rel);
            } else if (!(d = opendir(path))) {
                vv_refuse(p, "cannot be listed", b->e[i].rel);
            } else {
                struct dirent *de;
                while ((de = readdir(d))) {
                    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
                        continue;
                    }
                    if (vv_base_child(p, (int)i + 1, de->d_name) < 0) {
                        char *c = vd_asprintf("%s/%s", b->e[i].rel, de->d_name);
                        vv_refuse(p, "was never seen by the FAT side: its directory is not deleted",
                                  c ? c : b->e[i].rel);
                        free(c);
                        break;
                    }
                }
                closedir(d);
            }
        } else if (vv_moving(p, i) && lstat(path, &st) < 0) {
            vv_refuse(p, "is no longer on the host, not renamed", b->e[i].rel);
        }
        free(path);
        if (p->why[0]) {
            return -ENOTSUP;
        }
    }
    for (size_t j = 0; j < t->n; j++) {
        int k = p->tnode[j];
        if (k >= 1 && k <= (int)b->n && !vv_moving(p, (size_t)k - 1)) {
            continue; /* in its place */
        }
        int par = vv_tparent(p, j);
        const char *name = vv_base_name(t->e[j].rel);
        if (par > (int)b->n || vv_base_child(p, par, name) >= 0) {
            continue; /* in a new directory, or a name the FAT side knew */
        }
        const char *d = vv_base_rel(p, par);
        char *path = vd_asprintf("%s%s%s/%s", s->map[0].name, d[0] ? "/" : "", d, name);
        if (!path) {
            return -ENOMEM;
        }
        if (lstat(path, &st) == 0) {
            vv_refuse(p, "exists on the host but not on the FAT side: not replaced",
                      t->e[j].rel);
        }
        free(path);
        if (p->why[0]) {
            return -ENOTSUP;
        }
    }
    return 0;
}

/* Renames host node k to name in the directory that is node parent. */
static int vv_node_move(vv_plan *p, int k, int parent, const char *name, char *own)
{
    char *from = vv_node_path(p, k, NULL), *to = vv_node_path(p, parent, own ? own : name);
    int r = from && to ? 0 : -ENOMEM;
    if (r == 0 && rename(from, to) < 0) {
        r = -errno;
    }
    free(from);
    free(to);
    if (r < 0) {
        free(own);
        return r;
    }
    free(p->node[k].own);
    p->node[k] = (vv_node){.parent = parent, .name = own ? own : name, .own = own};
    return 0;
}

/* A name in the directory that is node k that nothing uses (malloc'ed). */
static char *vv_free_name(vv_plan *p, int k)
{
    static _Atomic unsigned counter;
    for (;;) {
        char name[64];
        snprintf(name, sizeof(name), ".vdisk-vvfat-mv.%d.%u", (int)getpid(), counter++);
        char *path = vv_node_path(p, k, name);
        if (!path) {
            return NULL;
        }
        struct stat st;
        int taken = lstat(path, &st) == 0;
        free(path);
        if (!taken) {
            return vd_strdup(name);
        }
    }
}

typedef struct vv_order {
    int depth;
    int idx;
} vv_order;

static int vv_order_cmp(const void *a, const void *b)
{
    const vv_order *x = a, *y = b;
    if (x->depth != y->depth) {
        return x->depth < y->depth ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Whether host path rel (below DIR) is or lies below one of the sorted
 * paths in aff. */
static bool vv_affected(char **aff, size_t n, const char *rel)
{
    for (const char *sl = rel;; sl++) {
        if (*sl == '/' || *sl == '\0') {
            size_t len = (size_t)(sl - rel);
            size_t lo = 0, hi = n;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strncmp(aff[mid], rel, len);
                if (c == 0 && aff[mid][len] != '\0') {
                    c = 1;
                }
                if (c == 0) {
                    return true;
                }
                if (c < 0) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
        }
        if (*sl == '\0') {
            return false;
        }
    }
}

static int vv_apply(vv_plan *p)
{
    vv_state *s = p->s;
    vv_tree *b = p->b, *t = p->t;
    int r = 0;
    bool work = false;

    /* stage new and changed files in the nearest directory on the host */
    for (size_t j = 0; r == 0 && j < t->n; j++) {
        if (p->tnode[j] >= 0) {
            work |= p->tnode[j] > (int)b->n || vv_moving(p, (size_t)p->tnode[j] - 1);
            continue;
        }
        work = true;
        int a = vv_tparent(p, j);
        for (int k = p->tpar[j]; a > (int)b->n; a = vv_tparent(p, (size_t)k), k = p->tpar[k]) {
        }
        p->anchor[j] = a;
        char *dir = vv_node_path(p, a, NULL);
        int old = vv_base_child(p, vv_tparent(p, j), vv_base_name(t->e[j].rel));
        char *from = old >= 0 && !b->e[old].dir ? vd_asprintf("%s/%s", s->map[0].name, b->e[old].rel) : NULL;
        r = dir ? vv_stage(s, &t->e[j], dir, from, &p->tmp[j]) : -ENOMEM;
        free(dir);
        free(from);
    }
    for (size_t i = 0; i < b->n; i++) {
        work |= p->bmatch[i] < 0;
        /* a file kept with another modification time */
        work |= p->bmatch[i] >= 0 && !b->e[i].dir &&
                b->e[i].mtime != t->e[p->bmatch[i]].mtime;
    }
    if (r < 0 || !work) {
        return r;
    }

    /* the image must not change under the guest when the host files do:
     * pin every file below a path that moves or goes */
    size_t naff = 0;
    char **aff = malloc((b->n + 1) * sizeof(char *));
    if (!aff) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (p->bmatch[i] < 0 || vv_moving(p, i)) {
            aff[naff++] = b->e[i].rel; /* b is sorted */
        }
    }
    size_t rootlen = strlen(s->map[0].name) + 1;
    for (size_t m = 1; r == 0 && naff > 0 && m < s->map_n; m++) {
        if (s->map[m].is_dir) {
            continue;
        }
        char *path = vv_path(s, m);
        if (!path) {
            r = -ENOMEM;
        } else if (vv_affected(aff, naff, path + rootlen)) {
            r = vv_pin(s, &s->map[m]);
        }
        free(path);
    }
    free(aff);
    if (r < 0) {
        return r;
    }

    vv_order *ord = malloc((b->n + t->n + 1) * sizeof(*ord));
    if (!ord) {
        return -ENOMEM;
    }
    /* 1. moving entries and deleted directories to temporary names */
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        if ((b->e[i].dir && p->bmatch[i] < 0) || vv_moving(p, i)) {
            ord[n++] = (vv_order){.depth = -vv_depth(b->e[i].rel), .idx = (int)i};
        }
    }
    qsort(ord, n, sizeof(*ord), vv_order_cmp);
    for (size_t k = 0; r == 0 && k < n; k++) {
        int node = ord[k].idx + 1, par = p->node[node].parent;
        char *tmp = vv_free_name(p, par);
        r = tmp ? vv_node_move(p, node, par, NULL, tmp) : -ENOMEM;
    }
    /* 2. deleted files (unless a file of the same name replaces them) */
    for (size_t i = 0; r == 0 && i < b->n; i++) {
        if (b->e[i].dir || p->bmatch[i] >= 0) {
            continue;
        }
        int j = vv_new_child(p, p->node[i + 1].parent, p->node[i + 1].name);
        if (j >= 0 && !t->e[j].dir) {
            continue;
        }
        char *path = vv_node_path(p, (int)i + 1, NULL);
        if (!path) {
            r = -ENOMEM;
        } else if (unlink(path) < 0 && errno != ENOENT) {
            r = -errno;
        }
        free(path);
    }
    /* 3. the new tree, parents first */
    n = 0;
    for (size_t j = 0; j < t->n; j++) {
        ord[n++] = (vv_order){.depth = vv_depth(t->e[j].rel), .idx = (int)j};
    }
    qsort(ord, n, sizeof(*ord), vv_order_cmp);
    for (size_t k = 0; r == 0 && k < n; k++) {
        size_t j = (size_t)ord[k].idx;
        int node = p->tnode[j], par = vv_tparent(p, j);
        const char *name = vv_base_name(t->e[j].rel);
        if (node > (int)b->n) {
            char *path = vv_node_path(p, par, name);
            if (!path) {
                r = -ENOMEM;
            } else if (mkdir(path, 0755) < 0) {
                r = -errno;
            } else {
                p->node[node].parent = par;
            }
            free(path);
        } else if (node > 0 && vv_moving(p, (size_t)node - 1)) {
            r = vv_node_move(p, node, par, name, NULL);
        } else if (node < 0) {
            char *from = vv_node_path(p, p->anchor[j], p->tmp[j]);
            char *to = vv_node_path(p, par, name);
            if (!from || !to) {
                r = -ENOMEM;
            } else if (rename(from, to) < 0) {
                r = -errno;
            } else {
                free(p->tmp[j]);
                p->tmp[j] = NULL;
            }
            free(from);
            free(to);
        }
    }
    /* modification times the guest changed on files it kept */
    for (size_t i = 0; r == 0 && i < b->n; i++) {
        int j = p->bmatch[i];
        if (j < 0 || b->e[i].dir || b->e[i].mtime == t->e[j].mtime) {
            continue;
        }
        struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, vv_fat_mtime(t->e[j].mtime)};
        char *path = vv_node_path(p, (int)i + 1, NULL);
        if (!path) {
            r = -ENOMEM;
        } else if (times[1].tv_nsec != UTIME_OMIT && utimensat(AT_FDCWD, path, times, 0) < 0 &&
                   errno != ENOENT) {
            r = -errno;
        }
        free(path);
    }
    /* 4. deleted directories, deepest first */
    n = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->e[i].dir && p->bmatch[i] < 0) {
            ord[n++] = (vv_order){.depth = -vv_depth(b->e[i].rel), .idx = (int)i};
        }
    }
    qsort(ord, n, sizeof(*ord), vv_order_cmp);
    for (size_t k = 0; r == 0 && k < n; k++) {
        char *path = vv_node_path(p, ord[k].idx + 1, NULL);
        if (!path) {
            r = -ENOMEM;
        } else if (rmdir(path) < 0) {
            r = -errno;
        }
        free(path);
    }
    free(ord);
    return r;
}

static int vv_commit(vv_state *s)
{
    vv_tree *t = NULL;
    int r = vv_scan_tree(s, &t);
    if (r < 0) {
        return r;
    }
    vv_tree *b = s->base;
    vv_plan p = {.s = s, .b = b, .t = t};
    size_t nb = b->n + 1, nt = t->n + 1;
    p.bpar = malloc(nb * sizeof(int));
    p.bmatch = malloc(nb * sizeof(int));
    p.bmove = calloc(nb, sizeof(bool));
    p.tpar = malloc(nt * sizeof(int));
    p.tnode = malloc(nt * sizeof(int));
    p.anchor = malloc(nt * sizeof(int));
    p.tmp = calloc(nt, sizeof(char *));
    p.node = calloc(nb + nt, sizeof(vv_node));
    if (!p.bpar || !p.bmatch || !p.bmove || !p.tpar || !p.tnode || !p.anchor || !p.tmp || !p.node) {
        r = -ENOMEM;
    } else {
        r = vv_plan_make(&p);
    }
    if (r == -ENOTSUP) {
        vd_warn("vvfat: nothing written back: %s", p.why);
    } else if (r == 0) {
        r = vv_apply(&p);
    }
    /* staged files not renamed into place (a failure) */
    for (size_t j = 0; j < t->n && p.tmp; j++) {
        if (p.tmp[j]) {
            char *path = vv_node_path(&p, p.anchor[j], p.tmp[j]);
            if (path) {
                unlink(path);
            }
            free(path);
            free(p.tmp[j]);
        }
    }
    for (size_t k = 0; p.node && k < p.node_n; k++) {
        free(p.node[k].own);
    }
    free(p.bpar);
    free(p.bmatch);
    free(p.bmove);
    free(p.tpar);
    free(p.tnode);
    free(p.anchor);
    free(p.tmp);
    free(p.node);
    if (r < 0) {
        vv_tree_free(t);
        return r;
    }
    vv_tree_free(s->base);
    s->base = t;
    memset(s->dirty, 0, s->cluster_count / 8 + 1);
    return 0;
}

static int vv_rw_init(vv_state *s, vd_error **errp)
{
    const char *tmpdir = getenv("TMPDIR");
    char *name = vd_asprintf("%s/vdisk-vvfat.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/var/tmp");
    if (!name) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    s->ov_fd = mkstemp(name);
    if (s->ov_fd < 0) {
        int e = errno;
        s->ov_fd = 0;
        int r = vd_error_setg_errno(errp, e, "vvfat: could not create an overlay in %s", name);
        free(name);
        return r;
    }
    unlink(name);
    free(name);
    s->ov_bits = calloc(1, s->total_sectors / 8 + 1);
    s->dirty = calloc(1, s->cluster_count / 8 + 1);
    if (!s->ov_bits || !s->dirty || pthread_mutex_init(&s->rw_lock, NULL) != 0) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    s->rw_lock_init = true;
    int r = vv_scan_tree(s, &s->base);
    if (r < 0) {
        return vd_error_set(errp, -r, "vvfat: the tree cannot be written back (%s)",
                            r == -EINVAL ? "names or nesting it cannot represent"
                                         : strerror(-r));
    }
    return 0;
}

static int vv_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    vv_state *s = bs->opaque;
    if (!s->rw) {
        return vv_read_virtual(s, offset / SECTOR, len / SECTOR, buf);
    }
    pthread_mutex_lock(&s->rw_lock);
    int r = vv_view_read(s, offset / SECTOR, len / SECTOR, buf);
    pthread_mutex_unlock(&s->rw_lock);
    return r;
}

static int vv_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                     unsigned flags)
{
    vv_state *s = bs->opaque;
    if (!s->rw) {
        return -EPERM;
    }
    uint64_t sector = offset / SECTOR, n = len / SECTOR;
    const uint8_t *data = buf;
    uint8_t old[SECTOR];
    pthread_mutex_lock(&s->rw_lock);
    /* a cluster is dirty when its contents change: a page cache writes
     * whole pages, which may reach into the next file's cluster */
    int r = 0;
    for (uint64_t k = 0; r == 0 && k < n; k++) {
        if (sector + k < s->offset_to_root_dir) {
            continue;
        }
        uint64_t c = (sector + k - s->offset_to_root_dir) / s->sectors_per_cluster;
        if (c >= s->cluster_count || vv_bit(s->dirty, c)) {
            continue;
        }
        r = vv_view_read(s, sector + k, 1, old);
        if (r == 0 && memcmp(old, data + k * SECTOR, SECTOR)) {
            vv_bit_set(s->dirty, c);
        }
    }
    if (r == 0) {
        r = vv_ov_write(s, sector, n, buf);
    }
    if (r == 0 && (flags & VD_REQ_FUA) && fdatasync(s->ov_fd) < 0) {
        r = -EIO; /* written through to the overlay, not to DIR: that is the flush */
    }
    pthread_mutex_unlock(&s->rw_lock);
    return r;
}

static int vv_flush(vd_node *bs)
{
    vv_state *s = bs->opaque;
    if (!s->rw) {
        return 0;
    }
    pthread_mutex_lock(&s->rw_lock);
    int r = vv_commit(s);
    pthread_mutex_unlock(&s->rw_lock);
    return r;
}

static int vv_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                           uint64_t *pnum, uint64_t *map, vd_node **file)
{
    *pnum = len;
    return VD_BLOCK_DATA;
}

static const vd_opt_desc vv_open_opts[] = {
    {"dir", VD_OPT_STRING, "Host directory to map to the vvfat device", NULL},
    {"fat-type", VD_OPT_NUMBER, "FAT type (12, 16 or 32)", NULL},
    {"floppy", VD_OPT_BOOL, "Create a floppy rather than a hard disk image", NULL},
    {"label", VD_OPT_STRING, "Use a volume label other than QEMU VVFAT", NULL},
    {"rw", VD_OPT_BOOL, "Make the image writable", NULL},
    {"filename", VD_OPT_STRING, "fat:[floppy:][rw:][12:|16:|32:]DIR", NULL},
    {NULL, 0, NULL, NULL},
};

static const char *const vv_protocols[] = {"fat", NULL};

const vd_driver vd_drv_vvfat = {
    .name = "vvfat",
    .kind = VD_DRV_PROTOCOL,
    .protocols = vv_protocols,
    .state_size = sizeof(vv_state),
    .open_opts = vv_open_opts,
    .parse_filename = vv_parse_filename,
    .open = vv_open,
    .close = vv_close,
    .get_length = vv_get_length,
    .pread = vv_pread,
    .pwrite = vv_pwrite,
    .flush = vv_flush,
    .block_status = vv_block_status,
};
