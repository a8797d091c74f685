/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 encryption: crypt_method 2 (LUKS, with the "Full disk encryption
 * header pointer" extension 0x0537be77) and crypt_method 1 (legacy
 * AES-128-CBC keyed with the passphrase, flawed, kept for getting data out
 * of old images).
 *
 * Specification: QEMU's docs/interop/qcow2.txt ("crypt_method", the
 * extension) and docs/interop/... LUKS (src/crypto/luks-header.c).  As in
 * QEMU 7.2: guest data is encrypted in 512-byte sectors; LUKS numbers its
 * IVs by the host offset of the sector (so a copied cluster is
 * re-encrypted), AES by the guest offset.  Compressed clusters are never
 * encrypted (and encrypted images are never written compressed).
 *
 * How: LUKS wraps s->data (where guest data lives) in a small node that
 * decrypts what is read from it and encrypts what is written, at the host
 * offset -- copy-on-write, preallocation and subclusters need nothing of
 * their own.  AES works one level up, on guest offsets: the image's
 * request alignment becomes the cluster size, so every write covers whole
 * clusters and no plaintext copy-on-write reaches the file.
 *
 * Not supported: AES with extended L2 entries or an external data file.
 */
#include <stdlib.h>

#include "../../crypto/luks.h"
#include "qcow2.h"

struct qcow2_crypto {
    uint32_t method;
    vd_luks *luks;
    vd_crypto_blk *aes;
    uint64_t hdr_offset, hdr_length;
    vd_node *shim;  /* LUKS: the node s->data points at */
    vd_node *under; /* LUKS: what s->data was */
};

/* ------------------------------------------------------ the data shim */

typedef struct {
    vd_crypto_blk *blk;
} shim_state;

static int shim_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    shim_state *st = bs->opaque;
    int r = vd_node_pread(bs->file, offset, len, buf, flags);
    if (r == 0) {
        vd_crypto_blk_decrypt(st->blk, offset, buf, len);
    }
    return r;
}

static int shim_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                       unsigned flags)
{
    shim_state *st = bs->opaque;
    uint8_t *tmp = vd_malloc(len);
    if (!tmp) {
        return -ENOMEM;
    }
    memcpy(tmp, buf, len);
    vd_crypto_blk_encrypt(st->blk, offset, tmp, len);
    int r = vd_node_pwrite(bs->file, offset, len, tmp, flags & VD_REQ_FUA);
    free(tmp);
    return r;
}

static int shim_flush(vd_node *bs)
{
    return vd_node_flush(bs->file);
}

static int64_t shim_get_length(vd_node *bs)
{
    return vd_node_get_length(bs->file);
}

static int shim_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                         vd_error **errp)
{
    return vd_node_truncate(bs->file, size, exact, prealloc, errp);
}

static int shim_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    return vd_node_discard(bs->file, offset, len);
}

/* Not in the driver table: only qcow2 makes these nodes. */
static const vd_driver shim_driver = {
    .name = "qcow2-crypto",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(shim_state),
    .get_length = shim_get_length,
    .pread = shim_pread,
    .pwrite = shim_pwrite,
    .flush = shim_flush,
    .truncate = shim_truncate,
    .discard = shim_discard,
};

static vd_node *shim_new(vd_node *under, vd_crypto_blk *blk)
{
    vd_node *n = calloc(1, sizeof(*n));
    shim_state *st = calloc(1, sizeof(*st));
    char *name = vd_strdup(under->filename);
    if (!n || !st || !name) {
        free(n);
        free(st);
        free(name);
        return NULL;
    }
    st->blk = blk;
    n->drv = &shim_driver;
    n->opaque = st;
    n->filename = name;
    n->flags = under->flags;
    n->read_only = under->read_only;
    n->perm = under->perm;
    n->shared_perm = under->shared_perm;
    n->file = under;
    n->request_alignment = 512;
    n->max_transfer = 1u << 20;
    pthread_mutex_init(&n->req_lock, NULL);
    pthread_cond_init(&n->req_cond, NULL);
    return n;
}

static void shim_free(vd_node *n)
{
    if (n) {
        pthread_mutex_destroy(&n->req_lock);
        pthread_cond_destroy(&n->req_cond);
        free(n->opaque);
        free(n->filename);
        free(n);
    }
}

/* ------------------------------------------------------------ helpers */

/* The header region: [hdr_offset, hdr_offset + hdr_length) of the file. */
typedef struct {
    qcow2_state *s;
    qcow2_crypto *c;
} hdr_io_ctx;

static int hdr_io(void *opaque, uint64_t off, void *buf, size_t len, bool write,
                  vd_error **errp)
{
    hdr_io_ctx *x = opaque;
    if (off > x->c->hdr_length || len > x->c->hdr_length - off) {
        return vd_error_set(errp, EINVAL, "Request for data outside of extension header");
    }
    vd_node *f = x->s->bs->file;
    if (write) {
        /* the binary header at 0, key material elsewhere (as luks.c) */
        vd_node_event(f, off == 0 ? VD_EV_HEADER_UPDATE : VD_EV_KEYSLOT_UPDATE);
    }
    int r = write ? vd_node_pwrite(f, x->c->hdr_offset + off, len, buf, 0)
                  : vd_node_pread(f, x->c->hdr_offset + off, len, buf, 0);
    if (r < 0) {
        return vd_error_setg_errno(errp, r, "Could not %s the LUKS header",
                                   write ? "write" : "read");
    }
    return 0;
}

static int secret(const char *id, uint8_t **pass, size_t *len, vd_error **errp)
{
    if (!id) {
        return vd_error_set(errp, EINVAL, "Parameter 'encrypt.key-secret' is required for "
                                          "cipher");
    }
    return vd_secret_lookup_utf8(id, pass, len, errp);
}

static void secret_free(uint8_t *p, size_t len)
{
    vd_memzero(p, len);
    free(p);
}

void qcow2_crypto_free(qcow2_state *s)
{
    qcow2_crypto *c = s->crypto;
    if (!c) {
        return;
    }
    if (c->shim && s->data == c->shim) {
        s->data = c->under;
    }
    shim_free(c->shim);
    vd_luks_free(c->luks);
    vd_crypto_blk_free(c->aes);
    free(c);
    s->crypto = NULL;
}

static const qcow2_ext *find_ext(const qcow2_state *s)
{
    for (size_t i = 0; i < s->nb_unknown_ext; i++) {
        if (s->unknown_ext[i].magic == QCOW2_EXT_CRYPTO) {
            return &s->unknown_ext[i];
        }
    }
    return NULL;
}

/* Point s->data at the decrypting shim. */
static int install_shim(qcow2_state *s, qcow2_crypto *c, vd_error **errp)
{
    c->under = s->data;
    c->shim = shim_new(s->data, c->luks->blk);
    if (!c->shim) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    s->data = c->shim;
    return 0;
}

/* ---------------------------------------------------------------- open */

int qcow2_crypto_open(vd_node *bs, qcow2_state *s, vd_opts *opts, vd_error **errp)
{
    const qcow2_ext *ext = find_ext(s);
    if (!s->crypt_method && !ext) {
        if (vd_opts_get(opts, "encrypt.format") &&
            strcmp(vd_opts_get(opts, "encrypt.format"), "auto") != 0) {
            return vd_error_set(errp, EINVAL, "No encryption in image header, but options "
                                              "specified format '%s'",
                                vd_opts_get(opts, "encrypt.format"));
        }
        return 0;
    }
    if (ext && s->crypt_method != QCOW2_CRYPT_LUKS) {
        return vd_error_set(errp, EINVAL, "Crypto header extension only expected with LUKS "
                                          "encryption method");
    }
    const char *want = vd_opts_get(opts, "encrypt.format");
    const char *have = s->crypt_method == QCOW2_CRYPT_AES ? "aes" : "luks";
    if (want && strcmp(want, have) != 0 && strcmp(want, "auto") != 0) {
        return vd_error_set(errp, EINVAL, "Header reported '%s' encryption format but options "
                                          "specify '%s'", have, want);
    }
    qcow2_crypto *c = calloc(1, sizeof(*c));
    if (!c) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    s->crypto = c;
    c->method = s->crypt_method;
    bool no_io = (bs->flags & VD_NODE_NO_IO) != 0;
    uint8_t *pass = NULL;
    size_t passlen = 0;
    int r = 0;
    if (!no_io) {
        r = secret(vd_opts_get(opts, "encrypt.key-secret"), &pass, &passlen, errp);
        if (r < 0) {
            return r;
        }
    }
    if (c->method == QCOW2_CRYPT_AES) {
        if (s->extended_l2 || qcow2_has_data_file(s)) {
            r = vd_error_set(errp, ENOTSUP, "AES encryption with extended L2 entries or a "
                                            "data file is not supported");
        } else if (!no_io) {
            c->aes = vd_crypto_legacy_aes_new(pass, passlen, errp);
            r = c->aes ? 0 : -EINVAL;
        }
        /* every write covers whole clusters: see the comment at the top */
        bs->request_alignment = s->cluster_size;
    } else {
        if (!ext) {
            r = vd_error_set(errp, EINVAL, "LUKS encryption method requires a crypto header "
                                           "extension");
        } else if (ext->len < 16) {
            r = vd_error_set(errp, EINVAL, "Invalid crypto header extension length %u",
                             ext->len);
        } else {
            c->hdr_offset = vd_ld_be64(ext->data);
            c->hdr_length = vd_ld_be64(ext->data + 8);
            int64_t flen = vd_node_get_length(bs->file);
            uint64_t end;
            if (flen < 0) {
                r = vd_error_setg_errno(errp, (int)flen, "Could not get the file size");
            } else if (vd_add_overflow(c->hdr_offset, c->hdr_length, &end) ||
                       end > (uint64_t)flen || qcow2_offset_into_cluster(s, c->hdr_offset)) {
                r = vd_error_set(errp, EINVAL, "Invalid crypto header offset %#llx or length "
                                               "%#llx", (unsigned long long)c->hdr_offset,
                                 (unsigned long long)c->hdr_length);
            }
        }
        hdr_io_ctx x = {s, c};
        if (r == 0) {
            r = vd_luks_read(hdr_io, &x, c->hdr_length, &c->luks, errp);
        }
        if (r == 0 && c->luks->version != 1) {
            r = vd_error_set(errp, ENOTSUP, "qcow2 holds LUKS1 headers only");
        }
        if (r == 0 && !no_io) {
            r = vd_luks_unlock(c->luks, hdr_io, &x, pass, passlen, NULL, errp);
        }
        if (r == 0 && !no_io) {
            r = install_shim(s, c, errp);
        }
        if (bs->request_alignment < 512) {
            bs->request_alignment = 512;
        }
    }
    if (pass) {
        secret_free(pass, passlen);
    }
    return r;
}

/* -------------------------------------------------------- AES, by guest offset */

int qcow2_crypto_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    qcow2_state *s = bs->opaque;
    qcow2_crypto *c = s->crypto;
    if (c && !c->aes && !c->shim) {
        return -EPERM; /* opened without the key */
    }
    int r = qcow2_pread(bs, offset, len, buf, flags);
    if (r < 0 || !c || !c->aes) {
        return r;
    }
    /* decrypt what came from data clusters; zeroes and backing data are plain */
    uint8_t *p = buf;
    while (len) {
        uint64_t bytes = len, host;
        qcow2_cluster_type type;
        pthread_mutex_lock(&s->lock);
        r = qcow2_get_host_offset(s, offset, &bytes, &host, &type);
        pthread_mutex_unlock(&s->lock);
        if (r < 0) {
            return r;
        }
        if (type == QCOW2_CLUSTER_NORMAL) {
            vd_crypto_blk_decrypt(c->aes, offset, p, bytes);
        }
        offset += bytes;
        p += bytes;
        len -= bytes;
    }
    return 0;
}

int qcow2_crypto_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                        unsigned flags)
{
    qcow2_state *s = bs->opaque;
    qcow2_crypto *c = s->crypto;
    if (!c || c->shim) {
        return qcow2_pwrite(bs, offset, len, buf, flags);
    }
    if (!c->aes) {
        return -EPERM;
    }
    uint8_t *tmp = vd_malloc(len);
    if (!tmp) {
        return -ENOMEM;
    }
    memcpy(tmp, buf, len);
    vd_crypto_blk_encrypt(c->aes, offset, tmp, len);
    int r = qcow2_pwrite(bs, offset, len, tmp, flags);
    free(tmp);
    return r;
}

int qcow2_crypto_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    qcow2_state *s = bs->opaque;
    qcow2_crypto *c = s->crypto;
    /* zero clusters are plain in both methods; partial ones must be written
     * as (encrypted) data: let the core fall back to writes */
    if (c && (!vd_is_aligned(offset, s->cluster_size) ||
              (!vd_is_aligned(len, s->cluster_size) && offset + len < s->size))) {
        return -ENOTSUP;
    }
    return qcow2_pwrite_zeroes(bs, offset, len, flags);
}

int qcow2_crypto_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                              uint64_t *pnum, uint64_t *map, vd_node **file)
{
    qcow2_state *s = bs->opaque;
    int r = qcow2_block_status(bs, want_zero, offset, len, pnum, map, file);
    if (r > 0 && s->crypto) {
        /* as QEMU: the host offset of encrypted data means nothing to a reader */
        r &= ~(VD_BLOCK_OFFSET_VALID | VD_BLOCK_PROBE_ZERO | VD_BLOCK_RECURSE);
        *file = NULL;
    }
    return r;
}

/* --------------------------------------------------------------- info */

char *qcow2_crypto_info_json(qcow2_state *s)
{
    qcow2_crypto *c = s->crypto;
    if (!c) {
        return vd_strdup("");
    }
    if (c->method == QCOW2_CRYPT_AES) {
        return vd_strdup(",\"encrypt\":{\"format\":\"aes\"}");
    }
    char *f = vd_luks_info_fields_fmt(c->luks, "luks");
    char *r = f ? vd_asprintf(",\"encrypt\":{%s}", f) : NULL;
    free(f);
    return r;
}

/* ------------------------------------------------------------- create */

int qcow2_crypto_create(vd_node *bs, const vd_opts *opts, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    static const char *const fmts[] = {"aes", "luks", NULL};
    bool legacy = false;
    int fmt = -1, r = vd_opts_get_bool(opts, "encryption", false, &legacy, errp);
    if (r < 0) {
        return r;
    }
    const char *f = vd_opts_get(opts, "encrypt.format");
    if (f) {
        fmt = vd_crypto_lookup(fmts, f);
        if (fmt < 0) {
            return vd_error_set(errp, EINVAL, "Unknown encryption format '%s'", f);
        }
        if (legacy && fmt != 0) {
            return vd_error_set(errp, EINVAL, "Legacy 'encryption' is not compatible with "
                                              "'encrypt.format' = '%s'", f);
        }
    } else if (legacy) {
        fmt = 0;
    }
    if (fmt < 0) {
        return 0;
    }
    uint8_t *pass;
    size_t passlen;
    r = secret(vd_opts_get(opts, "encrypt.key-secret"), &pass, &passlen, errp);
    if (r < 0) {
        return r;
    }
    qcow2_crypto *c = calloc(1, sizeof(*c));
    if (!c) {
        secret_free(pass, passlen);
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    if (fmt == 0) {
        c->method = QCOW2_CRYPT_AES;
        pthread_mutex_lock(&s->lock);
        s->crypt_method = QCOW2_CRYPT_AES;
        r = qcow2_update_header(s);
        pthread_mutex_unlock(&s->lock);
        if (r < 0) {
            vd_error_setg_errno(errp, r, "Could not write qcow2 header");
        }
        free(c);
        secret_free(pass, passlen);
        return r;
    }
    vd_luks_create_opts lo;
    r = vd_luks_create_opts_parse(opts, "encrypt.", &lo, errp);
    if (r == 0) {
        r = vd_luks_create(&lo, &c->luks, errp);
    }
    if (r < 0) {
        free(c);
        secret_free(pass, passlen);
        return r;
    }
    /* clusters for the header and key material (QEMU: headerlen bytes) */
    c->hdr_length = c->luks->payload_offset;
    pthread_mutex_lock(&s->lock);
    int64_t off = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, c->hdr_length));
    pthread_mutex_unlock(&s->lock);
    if (off < 0) {
        r = vd_error_setg_errno(errp, (int)off, "Could not allocate the LUKS header");
    } else {
        c->hdr_offset = (uint64_t)off;
        hdr_io_ctx x = {s, c};
        /* zero the area first: unused key slots read as zeroes, as QEMU's */
        r = vd_node_pwrite_zeroes(bs->file, c->hdr_offset,
                                  vd_div_round_up(c->hdr_length, s->cluster_size) *
                                      s->cluster_size, 0);
        if (r < 0) {
            vd_error_setg_errno(errp, r, "Could not write the LUKS header");
        } else {
            r = vd_luks_write_new(c->luks, pass, passlen, lo.iter_time, hdr_io, &x, errp);
        }
    }
    secret_free(pass, passlen);
    if (r == 0) {
        uint8_t ext[16];
        vd_st_be64(ext, c->hdr_offset);
        vd_st_be64(ext + 8, c->hdr_length);
        pthread_mutex_lock(&s->lock);
        r = qcow2_add_crypto_ext(s, ext);
        s->crypt_method = QCOW2_CRYPT_LUKS;
        if (r == 0) {
            r = qcow2_update_header(s);
        }
        pthread_mutex_unlock(&s->lock);
        if (r < 0) {
            vd_error_setg_errno(errp, r, "Could not write qcow2 header");
        }
    }
    vd_luks_free(c->luks);
    free(c);
    return r;
}

/* -------------------------------------------------------------- amend */

int qcow2_crypto_amend(vd_node *bs, const vd_opts *opts, bool force, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    static const char *const keys[] = {"encrypt.state", "encrypt.keyslot", "encrypt.old-secret",
                                       "encrypt.new-secret", "encrypt.iter-time", NULL};
    size_t n = 0;
    for (size_t i = 0; i < vd_opts_count(opts); i++) {
        const char *k = vd_opts_key(opts, i);
        if (vd_crypto_lookup(keys, k) >= 0) {
            n++;
        }
    }
    if (n == 0) {
        return 0;
    }
    qcow2_crypto *c = s->crypto;
    if (!c) {
        return vd_error_set(errp, EINVAL, "Can't amend encryption options - encryption not "
                                          "present");
    }
    if (c->method != QCOW2_CRYPT_LUKS) {
        return vd_error_set(errp, ENOTSUP, "Only LUKS encryption options can be amended");
    }
    if (n != vd_opts_count(opts)) {
        return vd_error_set(errp, ENOTSUP, "Amend the encryption key slots separately from "
                                           "other options");
    }
    vd_opts *sub = vd_opts_extract_prefix(opts, "encrypt");
    if (!sub) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    hdr_io_ctx x = {s, c};
    int r = vd_luks_amend(c->luks, hdr_io, &x, sub, force, errp);
    vd_opts_free(sub);
    if (r == 0) {
        r = vd_node_flush(bs->file);
        if (r < 0) {
            vd_error_setg_errno(errp, r, "Could not flush the LUKS header");
        }
    }
    return r < 0 ? r : 1;
}

bool qcow2_crypto_hdr_range(const qcow2_state *s, uint64_t *off, uint64_t *len)
{
    const qcow2_ext *ext = find_ext(s);
    if (!ext || ext->len < 16) {
        return false;
    }
    *off = vd_ld_be64(ext->data);
    *len = vd_ld_be64(ext->data + 8);
    return *len != 0;
}

int qcow2_crypto_measure(const vd_opts *opts, uint64_t cluster_size, uint64_t *bytes,
                         vd_error **errp)
{
    *bytes = 0;
    const char *f = vd_opts_get(opts, "encrypt.format");
    if (!f || strcmp(f, "luks") != 0) {
        return 0;
    }
    vd_luks_create_opts lo;
    int r = vd_luks_create_opts_parse(opts, "encrypt.", &lo, errp);
    if (r == 0) {
        *bytes = vd_div_round_up(vd_luks_header_size(&lo), cluster_size) * cluster_size;
    }
    return r;
}
