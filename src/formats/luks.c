/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * luks: a LUKS-encrypted image, as QEMU 7.2's "luks" block driver reads and
 * writes it.  LUKS1 follows cryptsetup's "LUKS On-Disk Format
 * Specification" 1.2.3 (header, key slots and AF splitter in
 * src/crypto/luks-header.c); LUKS2 follows cryptsetup's "LUKS2 On-Disk
 * Format Specification" 1.1.x (src/crypto/luks2.c) for data access only.
 * The payload starts at the header's payload offset and is encrypted in
 * 512-byte sectors (LUKS2: the segment's sector size), the IV counting
 * 512-byte sectors from the start of the payload.
 *
 * Supported: open with key-secret (info without it), read, write, create
 * (QEMU's options and layout), resize, amend of LUKS1 key slots.
 * Not supported: detached headers; LUKS2 header changes (amend, resize),
 * LUKS2 segments other than one "crypt" segment, LUKS2 integrity;
 * cipher modes outside ecb/cbc/xts/ctr with plain/plain64/essiv IVs.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "../crypto/luks.h"
#include "internal.h"

typedef struct luks_state {
    vd_luks *luks;
    uint64_t payload_offset;
    /* the payload ends where the file ends unless LUKS2 fixes its size */
    uint64_t fixed_size; /* UINT64_MAX: to the end of the file */
} luks_state;

static const vd_opt_desc luks_open_opts[] = {
    {"key-secret", VD_OPT_STRING, "ID of the secret that provides the keyslot passphrase",
     NULL},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc luks_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"key-secret", VD_OPT_STRING, "ID of secret providing LUKS passphrase", NULL},
    {"cipher-alg", VD_OPT_STRING, "Name of encryption cipher algorithm", NULL},
    {"cipher-mode", VD_OPT_STRING, "Name of encryption cipher mode", NULL},
    {"ivgen-alg", VD_OPT_STRING, "Name of IV generator algorithm", NULL},
    {"ivgen-hash-alg", VD_OPT_STRING, "Name of IV generator hash algorithm", NULL},
    {"hash-alg", VD_OPT_STRING, "Name of encryption hash algorithm", NULL},
    {"iter-time", VD_OPT_NUMBER, "Time to spend in PBKDF in milliseconds", NULL},
    {"preallocation", VD_OPT_STRING,
     "Preallocation mode (allowed values: off, metadata, falloc, full)", NULL},
    {NULL, 0, NULL, NULL},
};

static int luks_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len < 8 || memcmp(buf, "LUKS\xba\xbe", 6) != 0) {
        return 0;
    }
    uint16_t v = vd_ld_be16(buf + 6);
    return v == 1 || v == 2 ? 100 : 0;
}

/* The header region of a luks image is its file, from offset 0.  A write
 * at 0 is the binary header, any other the key material of a slot. */
static int luks_file_io(void *opaque, uint64_t off, void *buf, size_t len, bool write,
                        vd_error **errp)
{
    vd_node *file = opaque;
    if (write) {
        vd_node_event(file, off == 0 ? VD_EV_HEADER_UPDATE : VD_EV_KEYSLOT_UPDATE);
    }
    int r = write ? vd_node_pwrite(file, off, len, buf, 0) : vd_node_pread(file, off, len, buf, 0);
    if (r < 0) {
        return vd_error_setg_errno(errp, r, "Could not %s the LUKS header of %s",
                                   write ? "write" : "read", file->filename);
    }
    return 0;
}

/* Unlock l with the secret named by opts' key-secret. */
static int luks_unlock_secret(vd_luks *l, const char *secret_id, vd_luks_io_fn *io,
                              void *opaque, vd_error **errp)
{
    if (!secret_id) {
        return vd_error_set(errp, EINVAL, "Parameter 'key-secret' is required for cipher");
    }
    uint8_t *pass;
    size_t len;
    int r = vd_secret_lookup_utf8(secret_id, &pass, &len, errp);
    if (r < 0) {
        return r;
    }
    r = vd_luks_unlock(l, io, opaque, pass, len, NULL, errp);
    vd_memzero(pass, len);
    free(pass);
    return r;
}

static void luks_close(vd_node *bs)
{
    luks_state *s = bs->opaque;
    vd_luks_free(s->luks);
    s->luks = NULL;
}

static int luks_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    luks_state *s = bs->opaque;
    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        return vd_error_setg_errno(errp, (int)flen, "Could not get the size of %s",
                                   bs->filename);
    }
    int r = vd_luks_read(luks_file_io, bs->file, (uint64_t)flen, &s->luks, errp);
    if (r < 0) {
        return r;
    }
    vd_luks *l = s->luks;
    s->payload_offset = l->payload_offset;
    s->fixed_size = l->segment_size ? l->segment_size : UINT64_MAX;
    if (l->version == 1 && l->payload_offset == 0) {
        r = vd_error_set(errp, EINVAL, "LUKS payload offset is 0 (detached header)");
        goto fail;
    }
    if (s->payload_offset > (uint64_t)flen) {
        r = vd_error_set(errp, EINVAL,
                         "LUKS payload offset %" PRIu64 " is beyond the end of the file "
                         "(%" PRId64 " bytes)", s->payload_offset, flen);
        goto fail;
    }
    if (!(bs->flags & VD_NODE_NO_IO)) {
        r = luks_unlock_secret(l, vd_opts_get(opts, "key-secret"), luks_file_io, bs->file,
                               errp);
        if (r < 0) {
            goto fail;
        }
    }
    bs->request_alignment = l->sector_size;
    bs->max_transfer = 1u << 20;
    bs->has_zero_init = false;
    return 0;
fail:
    luks_close(bs);
    return r;
}

static int64_t luks_get_length(vd_node *bs)
{
    luks_state *s = bs->opaque;
    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        return flen;
    }
    uint64_t len = (uint64_t)flen > s->payload_offset ? (uint64_t)flen - s->payload_offset : 0;
    if (s->fixed_size != UINT64_MAX) {
        len = VD_MIN(len, s->fixed_size);
    }
    /* whole encryption sectors only */
    return (int64_t)vd_align_down(len, s->luks->sector_size);
}

static int luks_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    luks_state *s = bs->opaque;
    if (!s->luks->blk) {
        return -EPERM; /* opened without the key (info only) */
    }
    vd_node_event(bs->file, VD_EV_READ_AIO);
    int r = vd_node_pread(bs->file, s->payload_offset + offset, len, buf, 0);
    if (r == 0) {
        vd_crypto_blk_decrypt(s->luks->blk, offset, buf, len);
    }
    return r;
}

static int luks_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                       unsigned flags)
{
    luks_state *s = bs->opaque;
    if (!s->luks->blk) {
        return -EPERM;
    }
    /* the caller's buffer stays as it is: encrypt a bounce copy */
    uint8_t *tmp = vd_malloc(len);
    if (!tmp) {
        return -ENOMEM;
    }
    memcpy(tmp, buf, len);
    vd_crypto_blk_encrypt(s->luks->blk, offset, tmp, len);
    vd_node_event(bs->file, VD_EV_WRITE_AIO);
    int r = vd_node_pwrite(bs->file, s->payload_offset + offset, len, tmp,
                           flags & VD_REQ_FUA);
    free(tmp);
    return r;
}

static int luks_flush(vd_node *bs)
{
    return vd_node_flush(bs->file);
}

static int luks_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                         vd_error **errp)
{
    luks_state *s = bs->opaque;
    if (s->fixed_size != UINT64_MAX) {
        return vd_error_set(errp, ENOTSUP, "%s: cannot resize a LUKS2 image with a fixed "
                                           "segment size (header changes are not supported)",
                            bs->filename);
    }
    uint64_t end;
    if (vd_add_overflow(s->payload_offset, size, &end)) {
        return vd_error_set(errp, EFBIG, "%s: size is too large", bs->filename);
    }
    return vd_node_truncate(bs->file, end, exact, prealloc, errp);
}

static int luks_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    luks_state *s = bs->opaque;
    info->encrypted = true;
    char *f = vd_luks_info_fields(s->luks);
    if (!f) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    info->format_specific_json = vd_asprintf("{\"type\":\"luks\",\"data\":{%s}}", f);
    free(f);
    return info->format_specific_json ? 0 : vd_error_set(errp, ENOMEM, "Out of memory");
}

static int luks_amend(vd_node *bs, const vd_opts *opts, bool force, vd_progress_fn *progress,
                      void *opaque, vd_error **errp)
{
    luks_state *s = bs->opaque;
    const vd_opt_desc *tables[] = {vd_luks_amend_opts, NULL};
    int r = vd_opts_validate(opts, tables, NULL, "luks", errp);
    if (r < 0) {
        return r;
    }
    r = vd_luks_amend(s->luks, luks_file_io, bs->file, opts, force, errp);
    if (r == 0) {
        r = vd_node_flush(bs->file);
        if (r < 0) {
            vd_error_setg_errno(errp, r, "%s: could not flush the LUKS header", bs->filename);
        }
    }
    if (r == 0 && progress) {
        progress(opaque, 100.0);
    }
    return r;
}

static int luks_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    static const char *const prealloc_names[] = {"off", "metadata", "falloc", "full", NULL};
    uint64_t size;
    int prealloc;
    vd_luks_create_opts o;
    int r = vd_opts_get_size(opts, "size", 0, &size, errp);
    if (r == 0) {
        r = vd_opts_get_enum(opts, "preallocation", prealloc_names, 0, &prealloc, errp);
    }
    if (r == 0) {
        r = vd_luks_create_opts_read(opts, "", &o, errp);
    }
    if (r < 0) {
        return r; /* the file is left alone, as QEMU's option parsing does */
    }
    /*
     * As QEMU's block/crypto.c: the file first, then the header, whose
     * failures (no key-secret, a secret that is missing or not UTF-8, a
     * cipher that does not work) delete the file, even one that existed.
     */
    vd_node *file;
    r = vd_create_open_file(filename, opts, &file, errp);
    if (r < 0) {
        return r;
    }
    uint8_t *pass = NULL;
    size_t passlen = 0;
    vd_luks *l = NULL;
    const char *sid = vd_opts_get(opts, "key-secret");
    if (!sid) {
        r = vd_error_set(errp, EINVAL, "Parameter 'key-secret' is required for cipher");
    } else {
        r = vd_secret_lookup_utf8(sid, &pass, &passlen, errp);
    }
    if (r == 0) {
        r = vd_luks_create(&o, &l, errp);
    }
    uint64_t end;
    if (r == 0 && vd_add_overflow(l->payload_offset, size, &end)) {
        r = vd_error_set(errp, EFBIG, "Image size is too large");
    }
    /* the whole file first (as QEMU: preallocation covers the header too),
     * then the header and key material */
    if (r == 0) {
        r = vd_node_truncate(file, end, true, (vd_prealloc)prealloc, errp);
    }
    if (r == 0) {
        r = vd_luks_write_new(l, pass, passlen, o.iter_time, luks_file_io, file, errp);
    }
    r = vd_create_close_file(file, r, "Could not flush the new image", errp);
    if (r < 0) {
        vd_create_delete_file(filename);
    }
    vd_luks_free(l);
    if (pass) {
        vd_memzero(pass, passlen);
        free(pass);
    }
    return r;
}

static int luks_measure(const vd_opts *opts, vd_node *src, uint64_t size, vd_measure_info *out,
                        vd_error **errp)
{
    vd_luks_create_opts o;
    int r = vd_luks_create_opts_parse(opts, "", &o, errp);
    if (r < 0) {
        return r;
    }
    if (src) {
        int64_t len = vd_node_get_length(src);
        if (len < 0) {
            return vd_error_setg_errno(errp, (int)len, "Unable to get image size");
        }
        size = (uint64_t)len;
    }
    uint64_t total;
    if (vd_align_up_overflow(size, VD_LUKS_SECTOR, &size) ||
        vd_add_overflow(size, vd_luks_header_size(&o), &total)) {
        return vd_error_set(errp, EFBIG, "Image size is too large");
    }
    /* every payload byte is ciphertext: all of it is stored */
    out->required = total;
    out->fully_allocated = total;
    out->bitmaps = 0;
    return 0;
}

const vd_driver vd_drv_luks = {
    .name = "luks",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(luks_state),
    .create_opts = luks_create_opts,
    .open_opts = luks_open_opts,
    .probe = luks_probe,
    .open = luks_open,
    .close = luks_close,
    .create = luks_create,
    .get_length = luks_get_length,
    .pread = luks_pread,
    .pwrite = luks_pwrite,
    .flush = luks_flush,
    .truncate = luks_truncate,
    .get_info = luks_get_info,
    .amend = luks_amend,
    .measure = luks_measure,
};
