/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Nodes: opening a graph from a filename and options (protocol selection,
 * json: filenames, format probing, the file child, backing files), closing
 * it, and creating images.
 *
 * Option keys the core handles for every node (the rest belong to the
 * driver's open_opts or to a child prefix):
 *   driver, node-name, read-only, force-share, auto-read-only,
 *   cache.direct, cache.no-flush, detect-zeroes, discard
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static const vd_opt_desc generic_open_opts[] = {
    {"driver", VD_OPT_STRING, "driver name", NULL},
    {"node-name", VD_OPT_STRING, "node name (informational)", NULL},
    {"read-only", VD_OPT_BOOL, "open read-only", "off"},
    {"force-share", VD_OPT_BOOL, "ignore other processes' locks (read-only)", "off"},
    {"auto-read-only", VD_OPT_BOOL, "fall back to read-only", "off"},
    {"cache.direct", VD_OPT_BOOL, "bypass the host page cache (O_DIRECT)", "off"},
    {"cache.no-flush", VD_OPT_BOOL, "ignore flush requests", "off"},
    {"detect-zeroes", VD_OPT_STRING, "off, on or unmap", "off"},
    {"discard", VD_OPT_STRING, "ignore or unmap", "ignore"},
    {NULL, 0, NULL, NULL},
};

/* Generic keys a node passes down to its file child unless the child sets
 * them itself (QEMU's option inheritance). */
static const char *const inherited_opts[] = {
    "cache.direct", "cache.no-flush", "discard", "force-share", "read-only", NULL,
};

/* ------------------------------------------------------------ permissions */

/*
 * QEMU's permission rules, reduced to the flags our tools open with.
 *
 * The image user (qemu-img/qemu-io/qemu-nbd's BlockBackend) takes
 * consistent read unless no I/O is done, write when read-write, resize when
 * asked, and shares everything.  A raw format without offset/size passes
 * that through unchanged (QEMU's raw_child_perm), and so does a protocol
 * opened directly.  Every other format (QEMU's
 * bdrv_default_perms_for_storage, role metadata|data) additionally needs
 * write and resize on its file when writable, always reads it consistently
 * (unless no I/O), and lets nobody else write or resize it.  force-share
 * shares everything.
 */
void vd_lock_perms(unsigned node_flags, bool under_format, unsigned *perm, unsigned *shared)
{
    unsigned p = 0, s = VD_PERM_ALL;

    if (!(node_flags & VD_NODE_NO_IO)) {
        p |= VD_PERM_CONSISTENT_READ;
    }
    if (node_flags & VD_NODE_RDWR) {
        p |= VD_PERM_WRITE;
    }
    if (node_flags & VD_NODE_RESIZE) {
        p |= VD_PERM_RESIZE;
    }
    if (under_format) {
        if (node_flags & VD_NODE_RDWR) {
            p |= VD_PERM_WRITE | VD_PERM_RESIZE;
        }
        s &= ~(VD_PERM_WRITE | VD_PERM_RESIZE);
    }
    if (node_flags & VD_NODE_NO_SHARE) {
        s &= VD_PERM_CONSISTENT_READ | VD_PERM_WRITE_UNCHANGED;
    }
    if (node_flags & VD_NODE_EXPORT) {
        s &= ~VD_PERM_RESIZE;
    }
    if (node_flags & VD_NODE_FORCE_SHARE) {
        s = VD_PERM_ALL;
    }
    *perm = p;
    *shared = s;
}

/* -------------------------------------------------------------------- nodes */

static vd_node *node_new(const vd_driver *drv, vd_error **errp)
{
    vd_node *bs = calloc(1, sizeof(*bs));
    if (!bs) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    bs->drv = drv;
    if (drv->state_size) {
        bs->opaque = calloc(1, drv->state_size);
        if (!bs->opaque) {
            free(bs);
            vd_error_set(errp, ENOMEM, "out of memory");
            return NULL;
        }
    }
    bs->request_alignment = 1;
    pthread_mutex_init(&bs->req_lock, NULL);
    pthread_cond_init(&bs->req_cond, NULL);
    return bs;
}

void vd_api_node_gone(vd_node *bs); /* api.c */

static void node_free(vd_node *bs)
{
    if (!bs) {
        return;
    }
    vd_api_node_gone(bs);
    pthread_mutex_destroy(&bs->req_lock);
    pthread_cond_destroy(&bs->req_cond);
    free(bs->opaque);
    free(bs->filename);
    free(bs->exact_filename);
    free(bs->backing_file);
    free(bs->backing_format);
    free(bs->full_backing_filename);
    vd_opts_free(bs->options);
    free(bs);
}

void vd_node_close(vd_node *bs)
{
    if (!bs) {
        return;
    }
    if (!bs->read_only && bs->drv->flush) {
        /* Best effort: a close cannot report failure, and formats write
         * back their metadata in their close callbacks too. */
        (void)vd_node_flush(bs);
    }
    if (bs->drv->close) {
        bs->drv->close(bs);
    }
    vd_node_close(bs->backing);
    vd_node_close(bs->data_file);
    vd_node_close(bs->file);
    node_free(bs);
}

/* Core's generic options: validation and their effect on the node. */
static int apply_generic_opts(vd_node *bs, const vd_opts *opts, vd_error **errp)
{
    static const char *const dz_names[] = {"off", "on", "unmap", NULL};
    static const char *const discard_names[] = {"ignore", "unmap", "off", "on", NULL};
    int dz, discard;
    bool ro;

    if (vd_opts_get_enum(opts, "detect-zeroes", dz_names, 0, &dz, errp) < 0 ||
        vd_opts_get_enum(opts, "discard", discard_names, 0, &discard, errp) < 0 ||
        vd_opts_get_bool(opts, "read-only", false, &ro, errp) < 0) {
        return -EINVAL;
    }
    bs->detect_zeroes = (vd_detect_zeroes)dz;
    bs->discard_unmap = discard == 1 || discard == 3;
    if (ro) {
        bs->flags &= ~VD_NODE_RDWR;
    }
    if (bs->detect_zeroes == VD_DETECT_ZEROES_UNMAP && !bs->discard_unmap) {
        return vd_error_set(errp, EINVAL,
                            "setting detect-zeroes to unmap is not allowed without "
                            "setting discard operation to unmap");
    }
    bool fs;
    if (vd_opts_get_bool(opts, "force-share", false, &fs, errp) < 0) {
        return -EINVAL;
    }
    if (fs) {
        bs->flags |= VD_NODE_FORCE_SHARE;
    }
    if ((bs->flags & VD_NODE_FORCE_SHARE) && (bs->flags & VD_NODE_RDWR)) {
        return vd_error_set(errp, EINVAL,
                            "force-share (-U) is only allowed for read-only images");
    }
    bs->read_only = !(bs->flags & VD_NODE_RDWR);
    return 0;
}

static int validate_opts(const vd_driver *drv, const vd_opts *opts, const char *what,
                         vd_error **errp)
{
    static const char *const children[] = {"file.", "backing.", "data-file.", NULL};
    const vd_opt_desc *tables[] = {generic_open_opts, drv->open_opts, NULL};
    if (!drv->open_opts) {
        tables[1] = NULL;
    }
    if (drv->opt_prefixes) {
        /* a driver that opens its own children names their prefixes */
        return vd_opts_validate(opts, tables, drv->opt_prefixes, what, errp);
    }
    return vd_opts_validate(opts, tables, drv->kind == VD_DRV_PROTOCOL ? NULL : children,
                            what, errp);
}

/* Copy inherited generic keys from parent options into a child's. */
static void inherit_opts(vd_opts *child, const vd_opts *parent)
{
    for (size_t i = 0; inherited_opts[i]; i++) {
        const char *v = vd_opts_get(parent, inherited_opts[i]);
        if (v && !vd_opts_get(child, inherited_opts[i])) {
            vd_opts_set(child, inherited_opts[i], v);
        }
    }
}

bool vd_opt_is_inherited(const char *key)
{
    size_t kl = strlen(key);
    for (size_t j = 0; inherited_opts[j]; j++) {
        size_t gl = strlen(inherited_opts[j]);
        if (kl >= gl && !strcmp(key + kl - gl, inherited_opts[j]) &&
            (kl == gl || key[kl - gl - 1] == '.')) {
            return true;
        }
    }
    return false;
}

/*
 * QEMU's json: filename for a node no plain name describes (a filter or
 * quorum opened from options alone, a format above such a node), without
 * the generic keys the core passes down to children.
 */
static char *json_filename(const vd_opts *opts, const char *driver, const char *child_key,
                           const char *child_name)
{
    vd_opts *o = vd_opts_new();
    if (!o) {
        return NULL;
    }
    for (size_t i = 0; opts && i < vd_opts_count(opts); i++) {
        const char *k = vd_opts_key(opts, i);
        if (!vd_opt_is_inherited(k)) {
            vd_opts_set(o, k, vd_opts_value(opts, i));
        }
    }
    char *fn = vd_opts_json_filename(o, driver, child_key, child_name);
    vd_opts_free(o);
    return fn;
}

static vd_node *open_protocol(const vd_driver *drv, const char *filename, vd_opts *opts,
                              unsigned flags, vd_error **errp)
{
    if (drv->flags & VD_DRV_MODULE_MISSING) {
        vd_module_missing_error(drv, errp); /* before its options are checked */
        return NULL;
    }
    vd_node *bs = node_new(drv, errp);
    if (!bs) {
        return NULL;
    }
    bs->flags = flags;
    if (filename) {
        if (drv->parse_filename && vd_driver_find_protocol(filename) == drv) {
            if (drv->parse_filename(filename, opts, errp) < 0) {
                goto fail;
            }
        } else if (!vd_opts_get(opts, "filename")) {
            /* "file:name" names a plain file; when name itself has a colon
             * before its first slash it becomes "./name", so that it never
             * reads as a protocol prefix again (QEMU's words in info and
             * for relative backing names, iotest 126) */
            const char *colon = strchr(filename, ':');
            if (colon && vd_driver_find_protocol(filename) == drv) {
                filename = colon + 1;
                if (filename[strcspn(filename, ":/")] == ':') {
                    char *dotted = vd_asprintf("./%s", filename);
                    if (!dotted) {
                        vd_error_set(errp, ENOMEM, "out of memory");
                        goto fail;
                    }
                    vd_opts_set(opts, "filename", dotted);
                    free(dotted);
                    filename = NULL;
                }
            }
            if (filename) {
                vd_opts_set(opts, "filename", filename);
            }
        }
    }
    const char *fn = vd_opts_get(opts, "filename");
    bs->filename = strdup(fn ? fn : filename ? filename : drv->name);
    if (fn) {
        bs->exact_filename = strdup(fn);
    }
    if (validate_opts(drv, opts, bs->filename, errp) < 0 ||
        apply_generic_opts(bs, opts, errp) < 0) {
        goto fail;
    }
    vd_lock_perms(bs->flags, (bs->flags & VD_NODE_UNDER_FORMAT) != 0, &bs->perm,
                  &bs->shared_perm);
    bs->options = vd_opts_clone(opts);
    if (drv->open(bs, opts, errp) < 0) {
        goto fail;
    }
    if (!fn && !filename && !strcmp(bs->filename, drv->name) &&
        (drv->is_filter || (drv->flags & VD_DRV_NO_DIRNAME))) {
        /* opened from options alone and no plain name says what it is */
        char *json = json_filename(bs->options, drv->name, NULL, NULL);
        if (json) {
            free(bs->filename);
            bs->filename = json;
        }
    }
    return bs;

fail:
    node_free(bs);
    return NULL;
}

/* Score every format's probe on the first bytes of file. */
const vd_driver *vd_probe_buffer(const uint8_t *buf, size_t len, const char *filename)
{
    const vd_driver *best = NULL;
    int best_score = 0;
    for (size_t i = 0; vd_drivers[i]; i++) {
        const vd_driver *d = vd_drivers[i];
        if (d->kind != VD_DRV_FORMAT || !d->probe) {
            continue;
        }
        int score = d->probe(buf, len, filename);
        if (score > best_score) {
            best_score = score;
            best = d;
        }
    }
    return best;
}

static const vd_driver *probe_format(vd_node *file, bool *is_raw, vd_error **errp)
{
    enum { PROBE_LEN = 2048 };
    uint8_t *buf = vd_aligned_alloc(4096, 4096);
    if (!buf) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    memset(buf, 0, 4096);
    int64_t len = vd_node_get_length(file);
    size_t n = PROBE_LEN;
    if (len >= 0 && (uint64_t)len < n) {
        n = (size_t)len;
    }
    int ret = 0;
    if (n > 0) {
        /* read whole aligned blocks, but not past the end of a protocol
         * that refuses that (nbd) */
        uint64_t rlen = 4096, a = file->request_alignment;
        if (len >= 0 && (uint64_t)len < rlen && (vd_align_up_overflow((uint64_t)len, a, &rlen) ||
                                                 rlen > 4096)) {
            rlen = 4096;
        }
        ret = vd_node_pread(file, 0, rlen, buf, 0);
    }
    if (ret < 0) {
        free(buf);
        vd_error_setg_errno(errp, ret, "Could not read image for determining its format");
        return NULL;
    }
    const vd_driver *best = vd_probe_buffer(buf, n, file->filename);
    free(buf);
    if (!best) {
        vd_error_set(errp, EINVAL, "Could not determine the image format of '%s'",
                     file->filename);
        return NULL;
    }
    *is_raw = (best->flags & VD_DRV_RAW_FORMAT) != 0;
    return best;
}

char *vd_resolve_backing_name(const vd_node *bs, const char *name, vd_error **errp)
{
    if (!strncmp(name, "json:", 5)) {
        vd_error_set(errp, EPERM,
                     "Image '%s' names its backing file with a json: description; "
                     "refusing to follow it (give the backing file with "
                     "--image-opts backing.* options instead)",
                     bs->filename);
        return NULL;
    }
    const vd_driver *proto = vd_driver_find_protocol(name);
    if (proto && !(proto->flags & VD_DRV_PLAIN_FILENAME)) {
        vd_error_set(errp, EPERM,
                     "Image '%s' names a backing file over the '%s' protocol ('%s'); "
                     "refusing to follow a protocol named inside an image (give it "
                     "with --image-opts backing.* options instead)",
                     bs->filename, proto->name, name);
        return NULL;
    }
    /* relative to the image's own directory, when the image is a plain file */
    const vd_node *f = bs;
    while (f->file) {
        f = f->file;
    }
    if (name[0] != '/' && f->exact_filename && (f->drv->flags & VD_DRV_PLAIN_FILENAME)) {
        return vd_path_combine(f->exact_filename, name);
    }
    if (name[0] != '/' && (f->drv->flags & VD_DRV_NO_DIRNAME)) {
        /* QEMU's words: info then says "cannot determine actual path" */
        vd_error_set(errp, EINVAL, "Cannot generate a base directory for %s nodes",
                     f->drv->name);
        return NULL;
    }
    return strdup(name);
}

static int open_backing(vd_node *bs, vd_opts *backing_opts, vd_error **errp)
{
    const char *fmt = vd_opts_get(backing_opts, "driver");
    char *name = NULL;

    if (vd_opts_get(backing_opts, "file.filename") || vd_opts_get(backing_opts, "file.driver")) {
        name = NULL; /* fully described by the user's options */
    } else {
        name = vd_resolve_backing_name(bs, bs->backing_file, errp);
        if (!name) {
            return -EPERM;
        }
    }
    if (!fmt) {
        fmt = bs->backing_format;
    }
    free(bs->full_backing_filename);
    /* a backing file given only as options (the image names none): its
     * file name, as the backing node will call itself */
    const char *shown = name ? name : bs->backing_file;
    if (!shown) {
        shown = vd_opts_get(backing_opts, "file.filename");
    }
    bs->full_backing_filename = strdup(shown ? shown : "");
    unsigned flags = (bs->flags & (VD_NODE_FORCE_SHARE | VD_NODE_NO_IO)) & ~VD_NODE_RDWR;
    vd_error *err = NULL;
    vd_node *b = vd_node_open(name, fmt, backing_opts, flags, &err);
    free(name);
    if (!b) {
        int e = err ? err->err : EIO;
        /* QEMU's words (iotest 069); the inner message names the file */
        vd_error_set(errp, e, "Could not open backing file: %s", err ? err->msg : "error");
        vd_error_free(err);
        return -e;
    }
    b->parent = bs;
    bs->backing = b;
    return 0;
}

/* Open a format or filter node over a file child. */
static vd_node *open_format(const vd_driver *drv, const char *filename, vd_opts *opts,
                            unsigned flags, vd_error **errp)
{
    vd_node *file = NULL, *bs = NULL;
    vd_opts *file_opts = vd_opts_extract_prefix(opts, "file");
    vd_opts *backing_opts = vd_opts_extract_prefix(opts, "backing");
    bool probed_raw = false;

    if (!file_opts || !backing_opts) {
        vd_error_set(errp, ENOMEM, "out of memory");
        goto fail;
    }
    vd_opts_remove_prefix(opts, "file");
    vd_opts_remove_prefix(opts, "backing");
    /* "backing": "" (or json null) means no backing file, as in QEMU */
    const char *bk = vd_opts_get(opts, "backing");
    if (bk) {
        if (*bk) {
            vd_error_set(errp, EINVAL,
                         "A backing file can only be given as backing.* options or as "
                         "an empty string (no backing file)");
            goto fail;
        }
        flags |= VD_NODE_NO_BACKING;
        vd_opts_set(opts, "backing", NULL);
    }
    /* "file=NAME" (a string) is the file child's filename */
    const char *file_str = vd_opts_get(opts, "file");
    if (file_str) {
        if (!vd_opts_get(file_opts, "filename")) {
            vd_opts_set(file_opts, "filename", file_str);
        }
        vd_opts_set(opts, "file", NULL);
    }
    /* as QEMU's children: discard=unmap unless given (the parent's own
     * policy already filtered guest discards; its internal frees pass) */
    if (!vd_opts_get(file_opts, "discard")) {
        vd_opts_set(file_opts, "discard", "unmap");
    }
    inherit_opts(file_opts, opts);
    if (flags & VD_NODE_FORCE_SHARE) {
        vd_opts_set(file_opts, "force-share", "on");
    }

    if (!(drv && drv->opens_own_file)) {
        const char *cf = vd_opts_get(file_opts, "filename");
        char *child_fn = vd_strdup(cf ? cf : filename);
        if (!child_fn && !vd_opts_get(file_opts, "driver")) {
            vd_error_set(errp, EINVAL, "No filename given for the %s image",
                         drv ? drv->name : "");
            goto fail;
        }
        vd_opts_set(file_opts, "filename", NULL);
        const char *child_drv = vd_opts_get(file_opts, "driver");
        /* a known non-raw format takes qcow2-like locks on its file; raw
         * (and a format still to be probed) takes the plain ones, and a
         * filter passes on what its parent asked */
        unsigned cflags = (flags & ~(VD_NODE_NO_BACKING | VD_NODE_UNDER_FORMAT)) |
                          VD_NODE_PROTOCOL;
        if (drv && (drv->is_filter || drv->kind == VD_DRV_FILTER)) {
            cflags |= flags & VD_NODE_UNDER_FORMAT;
        } else if (drv && !(drv->flags & VD_DRV_RAW_FORMAT)) {
            cflags |= VD_NODE_UNDER_FORMAT;
        }
        if (child_drv) {
            file = vd_node_open(child_fn, child_drv, file_opts, cflags, errp);
        } else {
            file = vd_node_open_file(child_fn, file_opts, cflags, errp);
        }
        free(child_fn);
        if (!file) {
            goto fail;
        }
        if (!drv) {
            if (flags & VD_NODE_NO_PROBE_RAW) {
                bool raw = false;
                drv = probe_format(file, &raw, errp);
                if (drv && raw) {
                    vd_error_set(errp, EINVAL,
                                 "Image '%s' has no recognisable format header and "
                                 "probing raw is not allowed here",
                                 file->filename);
                    drv = NULL;
                }
            } else {
                drv = probe_format(file, &probed_raw, errp);
            }
            if (!drv) {
                goto fail;
            }
            if (!probed_raw) {
                /* the probe found a real format: take its locks now */
                unsigned p, sh;
                vd_lock_perms(file->flags | VD_NODE_UNDER_FORMAT, true, &p, &sh);
                if (file->drv->set_perm) {
                    if (file->drv->set_perm(file, p, sh, errp) < 0) {
                        goto fail;
                    }
                } else {
                    file->perm = p;
                    file->shared_perm = sh;
                }
            }
        }
    }

    bs = node_new(drv, errp);
    if (!bs) {
        goto fail;
    }
    bs->flags = flags;
    bs->probed_raw = probed_raw;
    bs->file = file;
    if (file) {
        file->parent = bs;
        if (!strncmp(file->filename, "json:", 5)) {
            /* described by options only: so is the format node (QEMU) */
            bs->filename = json_filename(opts, drv->name, "file", file->filename);
        }
        if (!bs->filename) {
            bs->filename = strdup(file->filename);
        }
        file = NULL;
    } else {
        bs->filename = strdup(filename ? filename : drv->name);
    }
    if (validate_opts(drv, opts, bs->filename, errp) < 0 ||
        apply_generic_opts(bs, opts, errp) < 0) {
        goto fail;
    }
    if (bs->file) {
        bs->request_alignment = bs->file->request_alignment;
    }
    bs->options = vd_opts_clone(opts);
    vd_opts_set(opts, "driver", NULL);
    if (drv->open(bs, opts, errp) < 0) {
        /* the driver cleaned up after itself; children are still ours */
        vd_node_close(bs->file);
        vd_node_close(bs->data_file);
        bs->file = bs->data_file = NULL;
        node_free(bs);
        bs = NULL;
        goto fail;
    }
    if (bs->request_alignment == 0) {
        bs->request_alignment = 1;
    }
    if ((bs->backing_file || vd_opts_count(backing_opts)) && !(flags & VD_NODE_NO_BACKING)) {
        if (!bs->backing_file && !vd_opts_get(backing_opts, "file.filename")) {
            /* backing options without a backing file: nothing to open */
        } else if (open_backing(bs, backing_opts, errp) < 0) {
            vd_node_close(bs);
            bs = NULL;
            goto fail;
        }
    } else if (bs->backing_file) {
        vd_error *ignored = NULL;
        bs->full_backing_filename = vd_resolve_backing_name(bs, bs->backing_file, &ignored);
        vd_error_free(ignored);
    }
    vd_opts_free(file_opts);
    vd_opts_free(backing_opts);
    return bs;

fail:
    if (bs) {
        vd_node_close(bs->file);
        bs->file = NULL;
        node_free(bs);
    }
    vd_node_close(file);
    vd_opts_free(file_opts);
    vd_opts_free(backing_opts);
    return NULL;
}

vd_node *vd_node_open_file(const char *filename, const vd_opts *opts, unsigned flags,
                           vd_error **errp)
{
    vd_opts *o = opts ? vd_opts_clone(opts) : vd_opts_new();
    if (!o) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    const char *dn = vd_opts_get(o, "driver");
    const vd_driver *drv = dn ? vd_driver_find(dn) : vd_protocol_for(filename);
    vd_node *bs = NULL;
    if (!drv) {
        vd_error_set(errp, EINVAL, "Unknown driver '%s'", dn);
    } else if (drv->kind != VD_DRV_PROTOCOL) {
        bs = vd_node_open(filename, drv->name, o, flags | VD_NODE_PROTOCOL, errp);
    } else {
        bs = open_protocol(drv, filename, o, flags | VD_NODE_PROTOCOL, errp);
    }
    vd_opts_free(o);
    return bs;
}

vd_node *vd_node_open(const char *filename, const char *driver, const vd_opts *opts,
                      unsigned flags, vd_error **errp)
{
    vd_opts *o = vd_opts_new();
    vd_node *bs = NULL;

    if (!o) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    if (filename && !strncmp(filename, "json:", 5)) {
        if (vd_opts_parse_json_filename(o, filename, errp) < 0) {
            goto out;
        }
        filename = NULL;
    }
    if (opts && vd_opts_merge(o, opts) < 0) {
        vd_error_set(errp, ENOMEM, "out of memory");
        goto out;
    }
    if (!filename) {
        filename = vd_opts_get(o, "filename");
    }
    if (driver) {
        const char *od = vd_opts_get(o, "driver");
        if (od && strcmp(od, driver) != 0) {
            vd_error_set(errp, EINVAL, "Cannot use format '%s': the options name driver '%s'",
                         driver, od);
            goto out;
        }
    } else {
        driver = vd_opts_get(o, "driver");
    }
    const vd_driver *drv = NULL;
    if (driver) {
        drv = vd_driver_find(driver);
        if (!drv) {
            vd_error_set(errp, EINVAL, "Unknown driver '%s'", driver);
            goto out;
        }
    }
    char *fn = filename ? strdup(filename) : NULL; /* o may change below */
    if (drv && drv->kind == VD_DRV_PROTOCOL) {
        bs = open_protocol(drv, fn, o, flags, errp);
    } else {
        /* a format's "filename" is its file child's */
        vd_opts_set(o, "filename", NULL);
        bs = open_format(drv, fn, o, flags, errp);
    }
    free(fn);
out:
    vd_opts_free(o);
    return bs;
}

/* ------------------------------------------------------------------ create */

/*
 * A protocol without its own create (nbd, ...): as QEMU's
 * bdrv_co_create_opts_simple, the existing image is opened, grown if it can
 * be and must be, and its first sector zeroed so that no stale header is
 * probed later.
 */
static int create_simple(const vd_driver *drv, const char *filename, const vd_opts *opts,
                         vd_error **errp)
{
    uint64_t size = 0;
    const char *pa = opts ? vd_opts_get(opts, "preallocation") : NULL;
    if (opts && vd_opts_get_size(opts, "size", 0, &size, errp) < 0) {
        return -EINVAL;
    }
    if (pa && strcmp(pa, "off")) {
        return vd_error_set(errp, ENOTSUP, "Unsupported preallocation mode '%s'", pa);
    }
    vd_opts *o = vd_opts_new();
    if (!o) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    vd_error *err = NULL;
    vd_node *bs = vd_node_open(filename, drv->name, o, VD_NODE_RDWR | VD_NODE_RESIZE, &err);
    vd_opts_free(o);
    if (!bs) {
        int e = err ? err->err : EIO;
        vd_error_set(errp, e,
                     "Protocol driver '%s' does not support image creation, and opening "
                     "the image failed: %s",
                     drv->name, err ? err->msg : "error");
        vd_error_free(err);
        return -e;
    }
    int ret = vd_node_truncate(bs, size, false, VD_PREALLOC_OFF, &err);
    int64_t len = vd_node_get_length(bs);
    if (ret < 0 && ret != -ENOTSUP) {
        vd_error_set(errp, ret, "%s", err ? err->msg : "Could not resize image");
    } else if (len < 0) {
        ret = vd_error_setg_errno(errp, (int)-len, "Failed to inquire the new image file's length");
    } else if ((uint64_t)len < size) {
        /* had to grow, and could not */
        ret = vd_error_set(errp, ENOTSUP, "%s", err ? err->msg : "Could not resize image");
    } else {
        ret = 0;
        if (len > 0) {
            ret = vd_node_pwrite_zeroes(bs, 0, VD_MIN((uint64_t)len, 512u), VD_REQ_MAY_UNMAP);
            if (ret < 0) {
                vd_error_setg_errno(errp, -ret, "Failed to clear the new image's first sector");
            }
        }
    }
    vd_error_free(err);
    vd_node_close(bs);
    return ret;
}

int vd_create_file(const char *filename, const vd_opts *opts, vd_error **errp)
{
    const vd_driver *drv = vd_protocol_for(filename);
    if (drv && !drv->create && drv->kind == VD_DRV_PROTOCOL && drv->parse_filename) {
        return create_simple(drv, filename, opts, errp);
    }
    if (!drv || !drv->create) {
        return vd_error_set(errp, ENOTSUP, "Protocol '%s' does not support image creation",
                            drv ? drv->name : "?");
    }
    /* keep only what the protocol understands */
    vd_opts *o = vd_opts_new();
    if (!o) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < vd_opts_count(opts); i++) {
        const char *k = vd_opts_key(opts, i);
        bool keep = !strcmp(k, "size");
        for (const vd_opt_desc *d = drv->create_opts; d && d->name && !keep; d++) {
            keep = !strcmp(d->name, k);
        }
        if (keep) {
            vd_opts_set(o, k, vd_opts_value(opts, i));
        }
    }
    int ret = drv->create(vd_protocol_local_name(drv, filename), o, errp);
    vd_opts_free(o);
    return ret;
}

int vd_create_open_file(const char *filename, const vd_opts *opts, vd_node **filep,
                        vd_error **errp)
{
    *filep = NULL;
    /* the format writes its own metadata: the protocol file starts empty */
    vd_opts *o = opts ? vd_opts_clone(opts) : vd_opts_new();
    if (!o) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    vd_opts_set(o, "size", "0");
    int ret = vd_create_file(filename, o, errp);
    vd_opts_free(o);
    if (ret < 0) {
        return ret;
    }
    vd_node *file = vd_node_open_file(filename, NULL, VD_NODE_RDWR | VD_NODE_RESIZE, errp);
    if (!file) {
        return -EIO;
    }
    /* start from an empty file whatever the protocol left in it (one
     * without create, nbd, keeps its size: create_simple) */
    const vd_driver *pd = vd_protocol_for(filename);
    bool simple = pd && !pd->create;
    ret = simple ? 0 : vd_node_truncate(file, 0, true, VD_PREALLOC_OFF, errp);
    if (ret < 0) {
        vd_node_close(file);
        return ret;
    }
    *filep = file;
    return 0;
}

int vd_create_close_file(vd_node *file, int ret, const char *what, vd_error **errp)
{
    if (ret == 0) {
        ret = vd_node_flush(file);
    }
    /* errp keeps the first error: this only reports one not yet told */
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "%s", what);
    }
    vd_node_close(file);
    return ret;
}

void vd_create_delete_file(const char *filename)
{
    const vd_driver *drv = filename ? vd_protocol_for(filename) : NULL;
    if (!drv || !drv->delete_file) {
        return;
    }
    vd_error *err = NULL;
    if (drv->delete_file(vd_protocol_local_name(drv, filename), &err) < 0) {
        vd_warn("%s", err ? err->msg : "Could not delete the new image");
    }
    vd_error_free(err);
}

const char *vd_protocol_local_name(const vd_driver *drv, const char *filename)
{
    if (vd_driver_find_protocol(filename) == drv && !drv->parse_filename) {
        return strchr(filename, ':') + 1;
    }
    return filename;
}
