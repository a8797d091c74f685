/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The public API: thin wrappers that turn -errno / vd_error into the
 * per-thread error of vd_get_error() (request ranges are checked in io.c,
 * on the path every caller takes), and walk backing chains for block
 * status.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "internal.h"

struct vd_image {
    vd_node *node;
    bool owned;         /* vd_close closes the graph */
    vd_image *children; /* handles created for child nodes (borrowed) */
    vd_image *next_child;
};

static pthread_mutex_t handle_lock = PTHREAD_MUTEX_INITIALIZER;

/* Called by node_free: forget any handle pointing at the node. */
void vd_api_node_gone(vd_node *bs)
{
    vd_image *h = bs->handle;
    if (h && !h->owned) {
        h->node = NULL;
    }
}

static int fail_errp(vd_error *err, int ret)
{
    if (err) {
        vd_error_publish(err);
    } else {
        vd_set_public_error(ret, "%s", strerror(ret < 0 ? -ret : ret));
    }
    errno = vd_get_errno();
    return -1;
}

static int fail_io(const vd_image *img, const char *what, int ret, uint64_t offset)
{
    vd_set_public_error(ret, "%s of '%s' at offset %llu failed: %s", what,
                        img->node ? img->node->filename : "?", (unsigned long long)offset,
                        strerror(-ret));
    errno = -ret;
    return -1;
}

static bool check_img(const vd_image *img)
{
    if (!img || !img->node) {
        vd_set_public_error(EINVAL, "invalid image handle");
        errno = EINVAL;
        return false;
    }
    return true;
}

static unsigned node_flags(unsigned flags)
{
    unsigned f = 0;
    f |= (flags & VD_OPEN_RDWR) ? VD_NODE_RDWR : 0;
    f |= (flags & VD_OPEN_NO_BACKING) ? VD_NODE_NO_BACKING : 0;
    f |= (flags & VD_OPEN_FORCE_SHARE) ? VD_NODE_FORCE_SHARE : 0;
    f |= (flags & VD_OPEN_NO_PROBE_RAW) ? VD_NODE_NO_PROBE_RAW : 0;
    f |= (flags & VD_OPEN_NO_IO) ? VD_NODE_NO_IO : 0;
    f |= (flags & VD_OPEN_RESIZE) ? VD_NODE_RESIZE : 0;
    f |= (flags & VD_OPEN_NO_SHARE) ? VD_NODE_NO_SHARE : 0;
    f |= (flags & VD_OPEN_EXPORT) ? VD_NODE_EXPORT : 0;
    f |= (flags & VD_OPEN_CHECK) ? VD_NODE_CHECK : 0;
    return f;
}

static vd_image *handle_new(vd_node *bs, bool owned)
{
    vd_image *img = calloc(1, sizeof(*img));
    if (!img) {
        return NULL;
    }
    img->node = bs;
    img->owned = owned;
    bs->handle = img;
    return img;
}

vd_image *vd_open(const char *filename, const char *format, const vd_opts *opts,
                  unsigned flags)
{
    vd_error *err = NULL;
    if ((flags & VD_OPEN_FORCE_SHARE) && (flags & VD_OPEN_RDWR)) {
        vd_set_public_error(EINVAL, "force-share (-U) is only allowed for read-only images");
        errno = EINVAL;
        return NULL;
    }
    if (!filename && !vd_opts_get(opts, "driver") && !vd_opts_get(opts, "filename") &&
        !vd_opts_get(opts, "file.filename")) {
        vd_set_public_error(EINVAL, "No image filename given");
        errno = EINVAL;
        return NULL;
    }
    if (format && !vd_driver_find(format)) {
        vd_set_public_error(EINVAL, "Unknown file format '%s'", format);
        errno = EINVAL;
        return NULL;
    }
    vd_node *bs = vd_node_open(filename, format, opts, node_flags(flags), &err);
    if (!bs) {
        fail_errp(err, -EIO);
        return NULL;
    }
    vd_image *img = handle_new(bs, true);
    if (!img) {
        vd_node_close(bs);
        vd_set_public_error(ENOMEM, "out of memory");
        return NULL;
    }
    return img;
}

static void free_child_handles(vd_image *img)
{
    vd_image *c = img->children;
    while (c) {
        vd_image *n = c->next_child;
        free_child_handles(c);
        if (c->node) {
            c->node->handle = NULL;
        }
        free(c);
        c = n;
    }
    img->children = NULL;
}

void vd_close(vd_image *img)
{
    if (!img || !img->owned) {
        return;
    }
    free_child_handles(img);
    if (img->node) {
        img->node->handle = NULL;
        vd_node_close(img->node);
    }
    free(img);
}

static vd_image *child_handle(vd_image *img, vd_node *child)
{
    if (!child) {
        vd_set_public_error(ENOENT, "no such child");
        errno = ENOENT;
        return NULL;
    }
    pthread_mutex_lock(&handle_lock);
    vd_image *h = child->handle;
    if (!h) {
        h = handle_new(child, false);
        if (h) {
            h->next_child = img->children;
            img->children = h;
        }
    }
    pthread_mutex_unlock(&handle_lock);
    return h;
}

vd_image *vd_image_backing(vd_image *img)
{
    return check_img(img) ? child_handle(img, img->node->backing) : NULL;
}

vd_image *vd_image_file(vd_image *img)
{
    return check_img(img) ? child_handle(img, img->node->file) : NULL;
}

vd_node *vd_image_node(vd_image *img)
{
    return img ? img->node : NULL;
}

/* The node at a child path ("", "file", "backing.file", ...), or NULL. */
static vd_node *node_at(vd_node *bs, const char *path, size_t len)
{
    while (bs && len > 0) {
        const char *dot = memchr(path, '.', len);
        size_t n = dot ? (size_t)(dot - path) : len;
        if (n == 4 && !strncmp(path, "file", 4)) {
            bs = bs->file;
        } else if (n == 7 && !strncmp(path, "backing", 7)) {
            bs = bs->backing;
        } else {
            return NULL;
        }
        path += n + (dot ? 1 : 0);
        len -= n + (dot ? 1 : 0);
    }
    return bs;
}

vd_opts *vd_reopen_options(vd_image *img, const vd_opts *old, const vd_opts *changes)
{
    if (!check_img(img)) {
        return NULL;
    }
    for (size_t i = 0; changes && i < vd_opts_count(changes); i++) {
        const char *k = vd_opts_key(changes, i), *v = vd_opts_value(changes, i);
        const char *last = strrchr(k, '.');
        last = last ? last + 1 : k;
        if (!strcmp(last, "node-name")) {
            const char *was = old ? vd_opts_get(old, k) : NULL;
            if (!was || !v || strcmp(was, v)) {
                vd_set_public_error(EINVAL, "Cannot change the option 'node-name'");
                return NULL;
            }
        } else if (!strcmp(last, "driver")) {
            vd_node *n = node_at(img->node, k, (size_t)(last - k) - (last > k ? 1 : 0));
            if (n && v && strcmp(n->drv->name, v)) {
                vd_set_public_error(EINVAL, "Cannot change the option 'driver'");
                return NULL;
            }
        }
    }
    vd_opts *out = old ? vd_opts_clone(old) : vd_opts_new();
    if (!out) {
        vd_set_public_error(ENOMEM, "out of memory");
        return NULL;
    }
    if (changes && img->node->drv->join_options) {
        img->node->drv->join_options(out, changes);
    }
    if (changes && vd_opts_merge(out, changes) < 0) {
        vd_opts_free(out);
        vd_set_public_error(ENOMEM, "out of memory");
        return NULL;
    }
    return out;
}

const char *vd_image_filename(const vd_image *img)
{
    return img && img->node ? img->node->filename : NULL;
}

const char *vd_image_format(const vd_image *img)
{
    return img && img->node ? img->node->drv->name : NULL;
}

bool vd_image_probed_raw(const vd_image *img)
{
    return img && img->node && img->node->probed_raw;
}

bool vd_image_is_read_only(const vd_image *img)
{
    return !img || !img->node || img->node->read_only;
}

uint32_t vd_image_cluster_size(vd_image *img)
{
    vd_node *bs = img ? img->node : NULL;
    /* as QEMU's bdrv_get_info: raw answers with its file's (an rbd
     * image's object size) */
    while (bs && !bs->drv->cluster_size && bs->file && (bs->drv->flags & VD_DRV_RAW_FORMAT)) {
        bs = bs->file;
    }
    if (!bs || !bs->drv->cluster_size) {
        return 0;
    }
    return bs->drv->cluster_size(bs);
}

bool vd_image_needs_compressed_writes(vd_image *img)
{
    return img && img->node && img->node->drv->needs_compressed_writes &&
           img->node->drv->needs_compressed_writes(img->node);
}

uint32_t vd_image_alignment(const vd_image *img)
{
    return img && img->node ? img->node->request_alignment : 1;
}

bool vd_image_has_zero_init(vd_image *img)
{
    if (!img || !img->node) {
        return false;
    }
    vd_node *bs = img->node;
    /* a backing file shows through unallocated areas: not zero */
    if (bs->backing) {
        return false;
    }
    return bs->has_zero_init;
}

bool vd_image_supports_backing(const vd_image *img)
{
    return img && img->node && img->node->drv->supports_backing;
}

bool vd_node_supports_bitmaps(vd_node *bs)
{
    if (!bs->drv->bitmap_add) {
        return false;
    }
    return bs->drv->supports_bitmaps ? bs->drv->supports_bitmaps(bs) : true;
}

bool vd_image_supports_bitmaps(vd_image *img)
{
    return img && img->node && vd_node_supports_bitmaps(img->node);
}

/* --------------------------------------------------------------------- I/O */

int64_t vd_get_length(vd_image *img)
{
    if (!check_img(img)) {
        return -1;
    }
    int64_t len = vd_node_get_length(img->node);
    if (len < 0) {
        vd_set_public_error((int)len, "Could not get the size of '%s': %s", img->node->filename,
                            strerror((int)-len));
        errno = (int)-len;
        return -1;
    }
    return len;
}

/* The request path (io.c) refuses requests outside the image with
 * -ERANGE; this only words the message. */
static int io_result(vd_image *img, const char *what, int ret, uint64_t offset, uint64_t len)
{
    if (ret == -EPERM && img->node->read_only) {
        vd_set_public_error(EPERM, "'%s' is opened read-only", img->node->filename);
        errno = EPERM;
        return -1;
    }
    if (ret == -ERANGE) {
        int64_t size = vd_node_get_length(img->node);
        vd_set_public_error(EINVAL,
                            "%s of '%s' out of range: %llu bytes at offset %llu, image size "
                            "is %lld bytes",
                            what, img->node->filename, (unsigned long long)len,
                            (unsigned long long)offset, (long long)size);
        errno = EINVAL;
        return -1;
    }
    return ret < 0 ? fail_io(img, what, ret, offset) : 0;
}

int vd_pread(vd_image *img, void *buf, size_t len, uint64_t offset)
{
    if (!check_img(img)) {
        return -1;
    }
    return io_result(img, "read", vd_node_pread(img->node, offset, len, buf, VD_REQ_STRICT_RANGE), offset, len);
}

int vd_pwrite(vd_image *img, const void *buf, size_t len, uint64_t offset, unsigned flags)
{
    if (!check_img(img)) {
        return -1;
    }
    return io_result(img, "write", vd_node_pwrite(img->node, offset, len, buf, flags), offset,
                     len);
}

int vd_pwrite_zeroes(vd_image *img, uint64_t offset, uint64_t len, unsigned flags)
{
    if (!check_img(img)) {
        return -1;
    }
    return io_result(img, "zero write", vd_node_pwrite_zeroes(img->node, offset, len, flags),
                     offset, len);
}

int vd_pwrite_compressed(vd_image *img, const void *buf, size_t len, uint64_t offset)
{
    if (!check_img(img)) {
        return -1;
    }
    int ret = vd_node_pwrite_compressed(img->node, offset, len, buf);
    if (ret == -ENOTSUP) {
        vd_set_public_error(ENOTSUP, "Image format '%s' does not support compressed writes",
                            img->node->drv->name);
        errno = ENOTSUP;
        return -1;
    }
    return io_result(img, "compressed write", ret, offset, len);
}

/*
 * The protocol node and offset where [offset, offset+*len) of a raw or file
 * image is stored, *len shortened to what is contiguous there; NULL when
 * the image is of another format or the range has no host mapping.
 */
static vd_node *copy_range_map(vd_node *bs, uint64_t offset, uint64_t *len, uint64_t *map)
{
    if (bs->drv->kind != VD_DRV_PROTOCOL && strcmp(bs->drv->name, "raw") != 0) {
        return NULL; /* formats that transform data (encryption...) are left out */
    }
    uint64_t pnum = 0;
    vd_node *file = NULL;
    int ret = vd_node_block_status(bs, false, offset, *len, &pnum, map, &file);
    if (ret < 0 || !(ret & VD_BLOCK_OFFSET_VALID) || !file || pnum == 0) {
        return NULL;
    }
    *len = VD_MIN(*len, pnum);
    return file;
}

int vd_copy_range(vd_image *src, uint64_t src_off, vd_image *dst, uint64_t dst_off, uint64_t len)
{
    if (!check_img(src) || !check_img(dst)) {
        return -1;
    }
    int64_t slen = vd_node_get_length(src->node), dlen = vd_node_get_length(dst->node);
    uint64_t send, dend;
    int ret = 0;
    if (slen < 0 || dlen < 0 || vd_add_overflow(src_off, len, &send) ||
        vd_add_overflow(dst_off, len, &dend) || send > (uint64_t)slen || dend > (uint64_t)dlen) {
        ret = -ENOTSUP; /* partial sectors at an end: copied plainly */
    }
    while (ret == 0 && len > 0) {
        uint64_t n = len, smap = 0, dmap = 0;
        vd_node *sf = copy_range_map(src->node, src_off, &n, &smap);
        vd_node *df = sf ? copy_range_map(dst->node, dst_off, &n, &dmap) : NULL;
        if (!df) {
            ret = -ENOTSUP;
            break;
        }
        ret = vd_file_copy_range(sf, smap, df, dmap, n);
        src_off += n;
        dst_off += n;
        len -= n;
    }
    if (ret == -ENOTSUP) {
        vd_set_public_error(ENOTSUP, "Copy offloading is not supported between '%s' and '%s'",
                            src->node->filename, dst->node->filename);
        errno = ENOTSUP;
        return -1;
    }
    return io_result(dst, "copy offload", ret, dst_off, len);
}

int vd_discard(vd_image *img, uint64_t offset, uint64_t len)
{
    if (!check_img(img)) {
        return -1;
    }
    return io_result(img, "discard", vd_node_discard(img->node, offset, len), offset, len);
}

int vd_flush(vd_image *img)
{
    if (!check_img(img)) {
        return -1;
    }
    int ret = vd_node_flush(img->node);
    if (ret < 0) {
        vd_set_public_error(ret, "flush of '%s' failed: %s", img->node->filename,
                            strerror(-ret));
        errno = -ret;
        return -1;
    }
    return 0;
}

int vd_truncate(vd_image *img, uint64_t size, bool allow_shrink, vd_prealloc prealloc)
{
    vd_error *err = NULL;
    if (!check_img(img)) {
        return -1;
    }
    int64_t cur = vd_node_get_length(img->node);
    if (cur < 0) {
        return fail_io(img, "resize", (int)cur, 0);
    }
    if (size < (uint64_t)cur && !allow_shrink) {
        vd_set_public_error(EINVAL,
                            "Shrinking '%s' from %lld to %llu bytes would drop data; "
                            "allow shrinking explicitly (--shrink)",
                            img->node->filename, (long long)cur, (unsigned long long)size);
        errno = EINVAL;
        return -1;
    }
    int ret = vd_node_truncate(img->node, size, true, prealloc, &err);
    return ret < 0 ? fail_errp(err, ret) : 0;
}

/* ------------------------------------------------------------ block status */

int vd_block_status(vd_image *img, uint64_t offset, uint64_t len, bool above, vd_extent *ext)
{
    if (!check_img(img)) {
        return -1;
    }
    int64_t size = vd_node_get_length(img->node);
    if (size < 0) {
        return fail_io(img, "block status", (int)size, offset);
    }
    memset(ext, 0, sizeof(*ext));
    if (offset >= (uint64_t)size || len == 0) {
        vd_set_public_error(EINVAL, "block status request beyond the end of '%s'",
                            img->node->filename);
        errno = EINVAL;
        return -1;
    }
    len = VD_MIN(len, (uint64_t)size - offset);

    vd_node *bs = img->node;
    int depth = 0;
    for (;;) {
        uint64_t pnum = 0, map = 0;
        vd_node *file = NULL;
        int ret = vd_node_block_status(bs, true, offset, len, &pnum, &map, &file);
        if (ret < 0) {
            return fail_io(img, "block status", ret, offset);
        }
        if ((ret & VD_BLOCK_ALLOCATED) || !above || !bs->backing) {
            ext->length = pnum;
            ext->flags = (unsigned)ret & (VD_BS_DATA | VD_BS_ZERO | VD_BS_OFFSET_VALID |
                                          VD_BS_ALLOCATED | VD_BS_COMPRESSED);
            ext->offset = (ret & VD_BLOCK_OFFSET_VALID) ? map : 0;
            ext->file = (ret & VD_BLOCK_OFFSET_VALID) && file ? file->filename : NULL;
            if (!(ret & VD_BLOCK_ALLOCATED)) {
                /* nowhere in the chain: depth is the chain length, and
                 * without a backing file to show through it reads zeroes */
                ext->depth = above ? depth + 1 : depth;
                if (above && !bs->backing && bs->drv->supports_backing) {
                    ext->flags |= VD_BS_ZERO;
                } else if (above && !bs->backing && !(ret & (VD_BLOCK_DATA | VD_BLOCK_ZERO))) {
                    /* as qemu-img map: no layer says data or zero (an NBD
                     * hole that is not zero): nothing is known */
                    ext->flags = 0;
                    ext->offset = 0;
                    ext->file = NULL;
                }
            } else {
                ext->depth = depth;
            }
            return 0;
        }
        /* not allocated here: the backing file decides, over at most pnum;
         * past its end the backing reads zeroes */
        int64_t blen = vd_node_get_length(bs->backing);
        if (blen >= 0 && offset >= (uint64_t)blen) {
            ext->length = pnum;
            ext->flags = VD_BS_ZERO;
            ext->depth = depth + 1;
            return 0;
        }
        if (blen >= 0) {
            pnum = VD_MIN(pnum, (uint64_t)blen - offset);
        }
        len = pnum;
        bs = bs->backing;
        depth++;
    }
}

/* -------------------------------------------------------------------- info */

/* QEMU's bdrv_get_info exists: the node, or for raw and filters its file. */
static bool node_has_block_info(const vd_node *bs)
{
    const vd_driver *d = bs->drv;
    if ((d->flags & VD_DRV_RAW_FORMAT) || d->is_filter || d->kind == VD_DRV_FILTER) {
        return bs->file && node_has_block_info(bs->file);
    }
    return d->cluster_size != NULL || (d->flags & VD_DRV_BLOCK_INFO);
}

/* Where snapshots live (QEMU's bdrv_snapshot_fallback): a raw format
 * without its own passes to its file (an rbd image's snapshots). */
static vd_node *snapshot_node(vd_node *bs)
{
    if (!bs->drv->snapshot_list && (bs->drv->flags & VD_DRV_RAW_FORMAT) && bs->file) {
        return bs->file;
    }
    return bs;
}

int vd_get_info(vd_image *img, vd_info **out)
{
    vd_error *err = NULL;
    if (!check_img(img)) {
        return -1;
    }
    vd_node *bs = img->node;
    vd_info *info = calloc(1, sizeof(*info));
    if (!info) {
        vd_set_public_error(ENOMEM, "out of memory");
        return -1;
    }
    info->filename = strdup(bs->filename);
    info->format = strdup(bs->drv->name);
    int64_t len = vd_node_get_length(bs);
    info->virtual_size = len > 0 ? (uint64_t)len : 0;
    info->actual_size = -1;
    /* as QEMU: a node's own answer, else a format's file's; protocols and
     * filters opened as protocols (blkdebug) have none */
    vd_node *f = bs->drv->get_allocated_size || bs->drv->kind == VD_DRV_PROTOCOL ? bs : bs->file;
    if (f && f->drv->get_allocated_size) {
        int64_t a = f->drv->get_allocated_size(f);
        info->actual_size = a >= 0 ? a : -1;
    }
    info->cluster_size = vd_image_cluster_size(img);
    info->has_block_info = node_has_block_info(bs);
    info->backing_filename = vd_strdup(bs->backing_file);
    info->full_backing_filename = vd_strdup(bs->full_backing_filename);
    info->backing_format = vd_strdup(bs->backing_format);
    /* QEMU shows dirty-flag when bdrv_get_info succeeds: raw asks its file */
    info->has_driver_info = (bs->drv->flags & VD_DRV_RAW_FORMAT)
                                ? info->has_block_info
                                : bs->drv->get_info || bs->drv->kind != VD_DRV_FORMAT;
    if (bs->drv->get_info && bs->drv->get_info(bs, info, &err) < 0) {
        vd_info_free(info);
        return fail_errp(err, -EIO);
    }
    vd_node *sn = snapshot_node(bs);
    if (sn->drv->snapshot_list && !info->snapshots) {
        if (sn->drv->snapshot_list(sn, &info->snapshots, &info->nb_snapshots, &err) < 0) {
            vd_info_free(info);
            return fail_errp(err, -EIO);
        }
    }
    *out = info;
    return 0;
}

void vd_snapshot_list_free(vd_snapshot_info *list, size_t count)
{
    for (size_t i = 0; list && i < count; i++) {
        free(list[i].id);
        free(list[i].name);
    }
    free(list);
}

void vd_info_free(vd_info *info)
{
    if (!info) {
        return;
    }
    free(info->filename);
    free(info->format);
    free(info->backing_filename);
    free(info->full_backing_filename);
    free(info->backing_format);
    free(info->format_specific_json);
    vd_snapshot_list_free(info->snapshots, info->nb_snapshots);
    free(info);
}

/* ------------------------------------------------------------------- check */

/* The report callback of the check running on this thread, if any. */
static _Thread_local vd_check_report_fn check_report_fn;
static _Thread_local void *check_report_opaque;

/* An automatic repair runs on this thread (vd_check_auto_begin). */
static _Thread_local bool check_auto;
/* The handler of automatic repairs' lines (vd_set_repair_report). */
static pthread_mutex_t repair_lock = PTHREAD_MUTEX_INITIALIZER;
static vd_check_report_fn repair_fn;
static void *repair_opaque;

void vd_set_repair_report(vd_check_report_fn fn, void *opaque)
{
    pthread_mutex_lock(&repair_lock);
    repair_fn = fn;
    repair_opaque = opaque;
    pthread_mutex_unlock(&repair_lock);
}

static char image_tool_name[32] = "vdisk";

void vd_set_image_tool_name(const char *name)
{
    snprintf(image_tool_name, sizeof(image_tool_name), "%s", name ? name : "vdisk");
}

const char *vd_image_tool_name(void)
{
    return image_tool_name;
}

/* Hand a finished line to the repair-report handler; held while calling,
 * so that a handler being replaced is never called after. */
static void repair_report(const char *line)
{
    pthread_mutex_lock(&repair_lock);
    if (repair_fn) {
        repair_fn(repair_opaque, line);
    }
    pthread_mutex_unlock(&repair_lock);
}

void vd_report_line(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    repair_report(line);
}

bool vd_check_auto_begin(void)
{
    bool was = check_auto;
    check_auto = true;
    return was;
}

void vd_check_auto_end(bool was)
{
    check_auto = was;
}

void vd_check_line(const char *fmt, ...)
{
    if (!check_report_fn && !check_auto) {
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (check_report_fn) {
        check_report_fn(check_report_opaque, line);
        return;
    }
    repair_report(line);
}

int vd_check_reported(vd_image *img, unsigned fix, vd_check_result *res, vd_check_report_fn fn,
                      void *opaque)
{
    check_report_fn = fn;
    check_report_opaque = opaque;
    int ret = vd_check(img, fix, res);
    check_report_fn = NULL;
    check_report_opaque = NULL;
    return ret;
}

int vd_check(vd_image *img, unsigned fix, vd_check_result *res)
{
    vd_error *err = NULL;
    if (!check_img(img)) {
        return -1;
    }
    memset(res, 0, sizeof(*res));
    if (!img->node->drv->check) {
        vd_set_public_error(ENOTSUP, "This image format ('%s') does not support checks",
                            img->node->drv->name);
        errno = ENOTSUP;
        return -1;
    }
    if (fix && img->node->read_only) {
        vd_set_public_error(EPERM, "'%s' must be opened read-write to repair it",
                            img->node->filename);
        errno = EPERM;
        return -1;
    }
    int ret = img->node->drv->check(img->node, res, fix, &err);
    return ret < 0 ? fail_errp(err, ret) : 0;
}

/* ----------------------------------------------------------------- measure */

int vd_measure_get(const char *format, const vd_opts *opts, vd_image *src,
                   vd_measure_result *res)
{
    vd_error *err = NULL;
    const vd_driver *drv = vd_driver_find(format);
    if (!drv || drv->kind != VD_DRV_FORMAT) {
        vd_set_public_error(EINVAL, "Unknown file format '%s'", format ? format : "");
        errno = EINVAL;
        return -1;
    }
    if (!drv->measure) {
        vd_set_public_error(ENOTSUP, "Format driver '%s' does not support measure", format);
        errno = ENOTSUP;
        return -1;
    }
    uint64_t size = 0;
    const char *s = vd_opts_get(opts, "size");
    if (s && vd_parse_size(s, &size) < 0) {
        return -1;
    }
    if (src) {
        int64_t l = vd_get_length(src);
        if (l < 0) {
            return -1;
        }
        size = (uint64_t)l;
    }
    vd_measure_info mi = {0};
    int ret = drv->measure(opts, src ? src->node : NULL, size, &mi, &err);
    if (ret < 0) {
        return fail_errp(err, ret);
    }
    res->required = mi.required;
    res->fully_allocated = mi.fully_allocated;
    res->bitmaps = mi.bitmaps;
    res->has_bitmaps = mi.has_bitmaps || mi.bitmaps != 0;
    return 0;
}

int vd_measure(const char *format, const vd_opts *opts, vd_image *src, uint64_t *required,
               uint64_t *fully_allocated, uint64_t *bitmaps)
{
    vd_measure_result r = {0};
    if (vd_measure_get(format, opts, src, &r) < 0) {
        return -1;
    }
    *required = r.required;
    *fully_allocated = r.fully_allocated;
    if (bitmaps) {
        *bitmaps = r.bitmaps;
    }
    return 0;
}

/* ------------------------------------------------ whole-image operations */

static int not_supported(const vd_image *img, const char *what)
{
    vd_set_public_error(ENOTSUP, "Format '%s' of '%s' does not support %s",
                        img->node->drv->name, img->node->filename, what);
    errno = ENOTSUP;
    return -1;
}

#define CALL_DRV(img, cb, what, ...)                                                           \
    do {                                                                                       \
        vd_error *err_ = NULL;                                                                 \
        if (!check_img(img)) {                                                                 \
            return -1;                                                                         \
        }                                                                                      \
        if (!(img)->node->drv->cb) {                                                           \
            return not_supported(img, what);                                                   \
        }                                                                                      \
        int r_ = (img)->node->drv->cb((img)->node, __VA_ARGS__, &err_);                        \
        return r_ < 0 ? fail_errp(err_, r_) : 0;                                               \
    } while (0)

int vd_amend(vd_image *img, const vd_opts *opts, bool force, vd_progress_fn *progress,
             void *opaque)
{
    CALL_DRV(img, amend, "amending image options", opts, force, progress, opaque);
}

int vd_change_backing_file(vd_image *img, const char *backing_file, const char *backing_format)
{
    CALL_DRV(img, change_backing_file, "backing files", backing_file, backing_format);
}

int vd_make_empty(vd_image *img)
{
    vd_error *err = NULL;
    if (!check_img(img)) {
        return -1;
    }
    if (!img->node->drv->make_empty) {
        return not_supported(img, "emptying an image");
    }
    int r = img->node->drv->make_empty(img->node, &err);
    if (r < 0) {
        /* QEMU's words: the node and the errno (iotest 098) */
        int e = err ? err->err : -r;
        vd_error_free(err);
        vd_set_public_error(e, "Failed to empty %s: %s", img->node->filename, strerror(e));
        errno = vd_get_errno();
        return -1;
    }
    return 0;
}

int vd_snapshot_list(vd_image *img, vd_snapshot_info **list, size_t *count)
{
    *list = NULL;
    *count = 0;
    if (!check_img(img)) {
        return -1;
    }
    vd_node *sn = snapshot_node(img->node);
    if (sn != img->node && sn->drv->snapshot_list) {
        vd_error *err = NULL;
        int r = sn->drv->snapshot_list(sn, list, count, &err);
        return r < 0 ? fail_errp(err, r) : 0;
    }
    CALL_DRV(img, snapshot_list, "internal snapshots", list, count);
}

int vd_snapshot_create(vd_image *img, const char *name)
{
    CALL_DRV(img, snapshot_create, "internal snapshots", name);
}

int vd_snapshot_apply(vd_image *img, const char *name_or_id)
{
    CALL_DRV(img, snapshot_apply, "internal snapshots", name_or_id);
}

int vd_snapshot_delete(vd_image *img, const char *name_or_id)
{
    CALL_DRV(img, snapshot_delete, "internal snapshots", name_or_id);
}

vd_image *vd_snapshot_open(vd_image *img, const char *name, const char *id)
{
    vd_error *err = NULL;
    if (!check_img(img)) {
        return NULL;
    }
    vd_node *bs = img->node;
    if (!bs->drv->snapshot_load_tmp) {
        not_supported(img, "internal snapshots");
        return NULL;
    }
    if (!bs->read_only) {
        vd_set_public_error(EINVAL, "a snapshot can only be loaded into a read-only image");
        errno = EINVAL;
        return NULL;
    }
    int r = bs->drv->snapshot_load_tmp(bs, name, id, &err);
    if (r < 0) {
        fail_errp(err, r);
        return NULL;
    }
    return img;
}

int vd_bitmap_add(vd_image *img, const char *name, uint32_t granularity, bool disabled)
{
    CALL_DRV(img, bitmap_add, "persistent dirty bitmaps", name, granularity, disabled);
}

int vd_bitmap_remove(vd_image *img, const char *name)
{
    CALL_DRV(img, bitmap_remove, "persistent dirty bitmaps", name);
}

int vd_bitmap_clear(vd_image *img, const char *name)
{
    CALL_DRV(img, bitmap_clear, "persistent dirty bitmaps", name);
}

int vd_bitmap_enable(vd_image *img, const char *name, bool enable)
{
    CALL_DRV(img, bitmap_enable, "persistent dirty bitmaps", name, enable);
}

int vd_bitmap_merge(vd_image *img, const char *name, vd_image *src, const char *src_name)
{
    if (!check_img(src)) {
        return -1;
    }
    CALL_DRV(img, bitmap_merge, "persistent dirty bitmaps", name, src->node, src_name);
}

/* ------------------------------------------------------------------ create */

static const vd_opt_desc *const *create_tables(const vd_driver *drv, const vd_driver *proto,
                                               const vd_opt_desc **buf)
{
    size_t n = 0;
    static const vd_opt_desc size_opt[] = {
        {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
        {NULL, 0, NULL, NULL},
    };
    /* "size" where the driver lists it (qemu-img prints options in table
     * order), first when it doesn't */
    bool has_size = false;
    for (const vd_opt_desc *d = drv->create_opts; d && d->name; d++) {
        has_size |= !strcmp(d->name, "size");
    }
    if (!has_size) {
        buf[n++] = size_opt;
    }
    if (drv->create_opts) {
        buf[n++] = drv->create_opts;
    }
    /* a protocol without create takes QEMU's simple creation options */
    static const vd_opt_desc simple_opts[] = {
        {"preallocation", VD_OPT_STRING, "Preallocation mode (allowed values: off)", NULL},
        {NULL, 0, NULL, NULL},
    };
    if (proto && proto != drv && proto->create_opts) {
        buf[n++] = proto->create_opts;
    } else if (proto && proto != drv && !proto->create && proto->kind == VD_DRV_PROTOCOL &&
               proto->parse_filename) {
        buf[n++] = simple_opts;
    }
    buf[n] = NULL;
    return buf;
}

int vd_create(const char *filename, const char *format, const vd_opts *opts)
{
    vd_error *err = NULL;
    if (!filename || !*filename) {
        vd_set_public_error(EINVAL, "No image filename given");
        errno = EINVAL;
        return -1;
    }
    /* no format: raw, as qemu-img create */
    const vd_driver *drv = format ? vd_driver_find(format) : vd_driver_raw_format();
    if (!drv) {
        vd_set_public_error(EINVAL, "Unknown file format '%s'", format ? format : "");
        errno = EINVAL;
        return -1;
    }
    if (!drv->create) {
        vd_set_public_error(ENOTSUP, "Format driver '%s' does not support image creation",
                            drv->name);
        errno = ENOTSUP;
        return -1;
    }
    const vd_driver *proto = vd_protocol_for(filename);
    const vd_opt_desc *tables[4];
    vd_opts *o = opts ? vd_opts_clone(opts) : vd_opts_new();
    if (!o) {
        vd_set_public_error(ENOMEM, "out of memory");
        return -1;
    }
    int ret = vd_opts_validate(o, create_tables(drv, proto, tables), NULL, drv->name, &err);
    if (ret < 0) {
        goto out;
    }
    const char *s = vd_opts_get(o, "size");
    uint64_t size = 0;
    if (s) {
        if (vd_opts_get_size(o, "size", 0, &size, &err) < 0) {
            ret = -EINVAL;
            goto out;
        }
    } else if (vd_opts_get(o, "backing_file") && drv->supports_backing) {
        /* the size of the backing file, as qemu-img does */
        vd_opts *bo = vd_opts_new();
        char *bname = vd_path_combine(filename, vd_opts_get(o, "backing_file"));
        const char *bfmt = vd_opts_get(o, "backing_fmt");
        vd_node *b = bname ? vd_node_open(bname, bfmt, bo, VD_NODE_FORCE_SHARE, &err) : NULL;
        free(bname);
        vd_opts_free(bo);
        if (!b) {
            vd_error_prepend(&err, "Could not open backing image to determine its size: ");
            ret = -EINVAL;
            goto out;
        }
        int64_t bl = vd_node_get_length(b);
        vd_node_close(b);
        if (bl < 0) {
            ret = vd_error_set(&err, (int)bl, "Could not get the size of the backing file");
            goto out;
        }
        char num[32];
        snprintf(num, sizeof(num), "%lld", (long long)bl);
        vd_opts_set(o, "size", num);
        size = (uint64_t)bl;
    } else {
        ret = vd_error_set(&err, EINVAL, "Image creation needs a size parameter");
        goto out;
    }
    if (size > (uint64_t)INT64_MAX) {
        ret = vd_error_set(&err, EFBIG, "Image size must be less than 8 EiB!");
        goto out;
    }
    if (drv->kind == VD_DRV_PROTOCOL) {
        ret = drv->create(vd_protocol_local_name(drv, filename), o, &err);
    } else {
        ret = drv->create(filename, o, &err);
    }
out:
    vd_opts_free(o);
    return ret < 0 ? fail_errp(err, ret) : 0;
}

const vd_opt_desc *vd_driver_create_opts(const char *driver, const char *filename)
{
    static _Thread_local vd_opt_desc *merged;
    const vd_driver *drv = vd_driver_find(driver);
    if (!drv) {
        vd_set_public_error(ENOENT, "Unknown driver '%s'", driver ? driver : "");
        errno = ENOENT;
        return NULL;
    }
    const vd_driver *proto = NULL;
    if (filename && drv->kind == VD_DRV_FORMAT) {
        proto = vd_protocol_for(filename);
    }
    const vd_opt_desc *tables[4];
    create_tables(drv, proto, tables);
    size_t n = 0;
    for (size_t t = 0; tables[t]; t++) {
        for (const vd_opt_desc *d = tables[t]; d->name; d++) {
            n++;
        }
    }
    free(merged);
    merged = calloc(n + 1, sizeof(*merged));
    if (!merged) {
        return NULL;
    }
    n = 0;
    for (size_t t = 0; tables[t]; t++) {
        for (const vd_opt_desc *d = tables[t]; d->name; d++) {
            bool dup = false;
            for (size_t i = 0; i < n; i++) {
                dup |= !strcmp(merged[i].name, d->name);
            }
            if (!dup) {
                merged[n++] = *d;
            }
        }
    }
    return merged;
}
