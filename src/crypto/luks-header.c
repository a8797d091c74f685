/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * LUKS1 headers: the on-disk layout of cryptsetup's "LUKS On-Disk Format
 * Specification" version 1.2.3, with QEMU's checks on what it reads and
 * QEMU's layout for what it creates (key material of each slot rounded to
 * 4 KiB after a 4 KiB header, payload after the eighth slot), so images
 * made here match what qemu-img would make.  LUKS2 is in luks2.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <json-c/json.h>

#include "luks.h"

#define LUKS_MAGIC "LUKS\xba\xbe"
#define LUKS_MAGIC_LEN 6
#define SLOT_ACTIVE 0x00AC71F3u
#define SLOT_INACTIVE 0x0000DEADu
#define LUKS_MIN_SLOT_ITERS 1000u
#define LUKS_MIN_MK_ITERS 1000u
/* QEMU's layout: the header takes the first 4 KiB, each slot's key
 * material is rounded up to 4 KiB. */
#define LUKS_KEY_SLOT_OFFSET 4096u
/* Overwrites of key material when a slot is erased (QEMU's count). */
#define LUKS_ERASE_PASSES 40

enum {
    H_MAGIC = 0,
    H_VERSION = 6,
    H_CIPHER_NAME = 8,
    H_CIPHER_MODE = 40,
    H_HASH_SPEC = 72,
    H_PAYLOAD_OFFSET = 104,
    H_KEY_BYTES = 108,
    H_MK_DIGEST = 112,
    H_MK_SALT = 132,
    H_MK_ITERS = 164,
    H_UUID = 168,
    H_SLOTS = 208,
    SLOT_SIZE = 48,
    S_ACTIVE = 0,
    S_ITERS = 4,
    S_SALT = 8,
    S_KEY_OFFSET = 40,
    S_STRIPES = 44,
};

void vd_luks_free(vd_luks *l)
{
    if (!l) {
        return;
    }
    if (l->master_key) {
        vd_memzero(l->master_key, l->key_bytes);
        free(l->master_key);
    }
    vd_crypto_blk_free(l->blk);
    vd_memzero(l, sizeof(*l));
    free(l);
}

/* A NUL-terminated copy of a fixed-size header string field. */
static int copy_field(char *dst, const uint8_t *src, size_t size, const char *what,
                      vd_error **errp)
{
    if (!memchr(src, 0, size)) {
        return vd_error_set(errp, EINVAL, "LUKS header %s is not NUL-terminated", what);
    }
    memcpy(dst, src, size);
    dst[size] = '\0';
    return 0;
}

/* Parse "mode-ivgen[:hash]" (cryptsetup's cipher mode spec). */
static int parse_mode_spec(vd_luks *l, vd_error **errp)
{
    char spec[33];
    snprintf(spec, sizeof(spec), "%s", l->cipher_mode);
    char *ivgen = strchr(spec, '-');
    if (!ivgen) {
        /* cryptsetup accepts a bare "ecb"; QEMU does not */
        return vd_error_set(errp, ENOTSUP, "Unexpected cipher mode string format '%s'",
                            l->cipher_mode);
    }
    *ivgen++ = '\0';
    int m = vd_crypto_lookup(vd_cipher_mode_names, spec);
    if (m < 0) {
        return vd_error_set(errp, ENOTSUP, "Unsupported LUKS cipher mode '%s'", l->cipher_mode);
    }
    l->mode = (vd_cipher_mode)m;
    l->ivgen = VD_IVGEN_PLAIN;
    l->has_ivgen_hash = false;
    {
        char *h = strchr(ivgen, ':');
        if (h) {
            *h++ = '\0';
            int hi = vd_crypto_lookup(vd_hash_alg_names, h);
            if (hi < 0) {
                return vd_error_set(errp, ENOTSUP, "Unsupported LUKS ivgen hash '%s'", h);
            }
            l->ivgen_hash = (vd_hash_alg)hi;
            l->has_ivgen_hash = true;
        }
        int iv = vd_crypto_lookup(vd_ivgen_alg_names, ivgen);
        if (iv < 0) {
            return vd_error_set(errp, ENOTSUP, "Unsupported LUKS IV generator '%s'", ivgen);
        }
        l->ivgen = (vd_ivgen_alg)iv;
    }
    if (l->ivgen == VD_IVGEN_ESSIV && !l->has_ivgen_hash) {
        return vd_error_set(errp, EINVAL, "LUKS cipher mode '%s': essiv needs a hash",
                            l->cipher_mode);
    }
    return 0;
}

/* The cipher, mode and hash strings of l: set the enums or fail. */
static int parse_algorithms(vd_luks *l, vd_error **errp)
{
    int r = parse_mode_spec(l, errp);
    if (r < 0) {
        return r;
    }
    size_t klen = l->key_bytes;
    if (l->mode == VD_MODE_XTS) {
        if (klen % 2) {
            return vd_error_set(errp, EINVAL, "LUKS key size %u is odd for XTS", l->key_bytes);
        }
        klen /= 2;
    }
    int a = vd_cipher_alg_from_family(l->cipher_name, klen);
    if (a < 0) {
        return vd_error_set(errp, ENOTSUP, "Unsupported LUKS cipher '%s' with a %u-byte key",
                            l->cipher_name, l->key_bytes);
    }
    l->cipher_alg = (vd_cipher_alg)a;
    int h = vd_crypto_lookup(vd_hash_alg_names, l->hash_spec);
    if (h < 0) {
        return vd_error_set(errp, ENOTSUP, "Unsupported LUKS hash '%s'", l->hash_spec);
    }
    l->hash = (vd_hash_alg)h;
    return vd_crypto_blk_check(l->cipher_alg, l->mode, l->ivgen, l->ivgen_hash, errp);
}

/* Bytes of one slot's key material as stored (whole sectors). */
static uint64_t material_len(const vd_luks *l, const vd_luks_slot *s)
{
    return vd_div_round_up((uint64_t)l->key_bytes * s->stripes, VD_LUKS_SECTOR) * VD_LUKS_SECTOR;
}

int vd_luks1_parse(const uint8_t *h, size_t len, vd_luks **out, vd_error **errp)
{
    if (len < VD_LUKS1_HDR_SIZE) {
        return vd_error_set(errp, EINVAL, "LUKS header is truncated");
    }
    if (memcmp(h, LUKS_MAGIC, LUKS_MAGIC_LEN) != 0) {
        return vd_error_set(errp, EINVAL, "Volume is not in LUKS format");
    }
    if (vd_ld_be16(h + H_VERSION) != 1) {
        return vd_error_set(errp, ENOTSUP, "Unsupported LUKS version %u",
                            vd_ld_be16(h + H_VERSION));
    }
    vd_luks *l = calloc(1, sizeof(*l));
    if (!l) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    int r;
    l->version = 1;
    l->sector_size = VD_LUKS_SECTOR;
    l->mk_digest_len = VD_LUKS_DIGEST_LEN;
    l->mk_salt_len = VD_LUKS_SALT_LEN;
    if ((r = copy_field(l->cipher_name, h + H_CIPHER_NAME, 32, "cipher name", errp)) < 0 ||
        (r = copy_field(l->cipher_mode, h + H_CIPHER_MODE, 32, "cipher mode", errp)) < 0 ||
        (r = copy_field(l->hash_spec, h + H_HASH_SPEC, 32, "hash spec", errp)) < 0 ||
        (r = copy_field(l->uuid, h + H_UUID, 40, "UUID", errp)) < 0) {
        goto fail;
    }
    l->payload_offset_sector = vd_ld_be32(h + H_PAYLOAD_OFFSET);
    l->payload_offset = (uint64_t)l->payload_offset_sector * VD_LUKS_SECTOR;
    l->key_bytes = vd_ld_be32(h + H_KEY_BYTES);
    memcpy(l->mk_digest, h + H_MK_DIGEST, VD_LUKS_DIGEST_LEN);
    memcpy(l->mk_salt, h + H_MK_SALT, VD_LUKS_SALT_LEN);
    l->mk_iters = vd_ld_be32(h + H_MK_ITERS);
    if (l->key_bytes == 0 || l->key_bytes > 64) {
        r = vd_error_set(errp, EINVAL, "LUKS key size %u is invalid", l->key_bytes);
        goto fail;
    }
    if ((r = parse_algorithms(l, errp)) < 0) {
        goto fail;
    }
    if (l->mk_iters == 0 || l->mk_iters > VD_LUKS_MAX_ITERS) {
        r = vd_error_set(errp, EINVAL, "LUKS master key iteration count %u is out of range "
                                       "(1 to %u)", l->mk_iters, VD_LUKS_MAX_ITERS);
        goto fail;
    }
    /* the header itself takes the first sectors */
    uint64_t hdr_sectors = vd_div_round_up(VD_LUKS1_HDR_SIZE, VD_LUKS_SECTOR);
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        const uint8_t *p = h + H_SLOTS + i * SLOT_SIZE;
        vd_luks_slot *s = &l->slots[i];
        uint32_t state = vd_ld_be32(p + S_ACTIVE);
        if (state != SLOT_ACTIVE && state != SLOT_INACTIVE) {
            r = vd_error_set(errp, EINVAL, "Keyslot %d state (active/disable) is corrupted", i);
            goto fail;
        }
        s->active = state == SLOT_ACTIVE;
        s->iterations = vd_ld_be32(p + S_ITERS);
        memcpy(s->salt, p + S_SALT, VD_LUKS_SALT_LEN);
        s->key_offset = vd_ld_be32(p + S_KEY_OFFSET);
        s->stripes = vd_ld_be32(p + S_STRIPES);
        if (s->stripes != VD_LUKS_STRIPES) {
            r = vd_error_set(errp, EINVAL, "Keyslot %d is corrupted (stripes %u != %u)", i,
                             s->stripes, VD_LUKS_STRIPES);
            goto fail;
        }
        if (s->active && (s->iterations == 0 || s->iterations > VD_LUKS_MAX_ITERS)) {
            r = vd_error_set(errp, EINVAL, "Keyslot %d iteration count %u is out of range "
                                           "(1 to %u)", i, s->iterations, VD_LUKS_MAX_ITERS);
            goto fail;
        }
        if (s->key_offset < hdr_sectors) {
            r = vd_error_set(errp, EINVAL, "Keyslot %d is overlapping with the LUKS header", i);
            goto fail;
        }
        uint64_t end = (uint64_t)s->key_offset * VD_LUKS_SECTOR + material_len(l, s);
        if (end > l->payload_offset) {
            r = vd_error_set(errp, EINVAL, "Keyslot %d is overlapping with the encrypted "
                                           "payload", i);
            goto fail;
        }
    }
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        for (int j = i + 1; j < VD_LUKS_NUM_SLOTS; j++) {
            const vd_luks_slot *a = &l->slots[i], *b = &l->slots[j];
            uint64_t a0 = (uint64_t)a->key_offset * VD_LUKS_SECTOR, a1 = a0 + material_len(l, a);
            uint64_t b0 = (uint64_t)b->key_offset * VD_LUKS_SECTOR, b1 = b0 + material_len(l, b);
            if (a0 < b1 && b0 < a1) {
                r = vd_error_set(errp, EINVAL, "Keyslots %d and %d are overlapping in the "
                                               "header", i, j);
                goto fail;
            }
        }
    }
    *out = l;
    return 0;
fail:
    vd_luks_free(l);
    return r;
}

static void serialize_luks1(const vd_luks *l, uint8_t *h)
{
    memset(h, 0, VD_LUKS1_HDR_SIZE);
    memcpy(h + H_MAGIC, LUKS_MAGIC, LUKS_MAGIC_LEN);
    vd_st_be16(h + H_VERSION, 1);
    memcpy(h + H_CIPHER_NAME, l->cipher_name, strlen(l->cipher_name));
    memcpy(h + H_CIPHER_MODE, l->cipher_mode, strlen(l->cipher_mode));
    memcpy(h + H_HASH_SPEC, l->hash_spec, strlen(l->hash_spec));
    vd_st_be32(h + H_PAYLOAD_OFFSET, l->payload_offset_sector);
    vd_st_be32(h + H_KEY_BYTES, l->key_bytes);
    memcpy(h + H_MK_DIGEST, l->mk_digest, VD_LUKS_DIGEST_LEN);
    memcpy(h + H_MK_SALT, l->mk_salt, VD_LUKS_SALT_LEN);
    vd_st_be32(h + H_MK_ITERS, l->mk_iters);
    memcpy(h + H_UUID, l->uuid, strlen(l->uuid));
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        uint8_t *p = h + H_SLOTS + i * SLOT_SIZE;
        const vd_luks_slot *s = &l->slots[i];
        vd_st_be32(p + S_ACTIVE, s->active ? SLOT_ACTIVE : SLOT_INACTIVE);
        vd_st_be32(p + S_ITERS, s->iterations);
        memcpy(p + S_SALT, s->salt, VD_LUKS_SALT_LEN);
        vd_st_be32(p + S_KEY_OFFSET, s->key_offset);
        vd_st_be32(p + S_STRIPES, s->stripes);
    }
}

static int write_header(const vd_luks *l, vd_luks_io_fn *io, void *opaque, vd_error **errp)
{
    uint8_t h[VD_LUKS1_HDR_SIZE];
    serialize_luks1(l, h);
    return io(opaque, 0, h, sizeof(h), true, errp);
}

int vd_luks_read(vd_luks_io_fn *io, void *opaque, uint64_t region_size, vd_luks **out,
                 vd_error **errp)
{
    uint8_t h[VD_LUKS1_HDR_SIZE];
    if (region_size < sizeof(h)) {
        return vd_error_set(errp, EINVAL, "LUKS header is truncated");
    }
    int r = io(opaque, 0, h, sizeof(h), false, errp);
    if (r < 0) {
        return r;
    }
    if (memcmp(h, LUKS_MAGIC, LUKS_MAGIC_LEN) == 0 && vd_ld_be16(h + H_VERSION) == 2) {
        return vd_luks2_read(io, opaque, region_size, out, errp);
    }
    r = vd_luks1_parse(h, sizeof(h), out, errp);
    if (r == 0 && (*out)->payload_offset > region_size && region_size != UINT64_MAX) {
        /* qcow2 keeps the payload elsewhere: only key material must fit */
        for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
            const vd_luks_slot *s = &(*out)->slots[i];
            if ((uint64_t)s->key_offset * VD_LUKS_SECTOR + material_len(*out, s) > region_size) {
                vd_luks_free(*out);
                *out = NULL;
                return vd_error_set(errp, EINVAL, "Keyslot %d extends past the end of the "
                                                  "LUKS header area", i);
            }
        }
    }
    return r;
}

/* The slot key from pass, and the cipher that encrypts its key material. */
static vd_crypto_blk *slot_cipher(const vd_luks *l, const vd_luks_slot *s, const uint8_t *pass,
                                  size_t passlen, vd_error **errp)
{
    uint8_t key[64];
    vd_pbkdf2(l->hash, pass, passlen, s->salt, VD_LUKS_SALT_LEN, s->iterations, key,
              l->key_bytes);
    vd_crypto_blk *b = vd_crypto_blk_new(l->cipher_alg, l->mode, l->ivgen, l->ivgen_hash, key,
                                         l->key_bytes, VD_LUKS_SECTOR, errp);
    vd_memzero(key, sizeof(key));
    return b;
}

static bool mk_matches(const vd_luks *l, const uint8_t *mk)
{
    uint8_t digest[VD_LUKS_DIGEST_LEN];
    vd_pbkdf2(l->hash, mk, l->key_bytes, l->mk_salt, VD_LUKS_SALT_LEN, l->mk_iters, digest,
              sizeof(digest));
    /* not secret-dependent timing that matters: the digest is public */
    bool ok = memcmp(digest, l->mk_digest, sizeof(digest)) == 0;
    vd_memzero(digest, sizeof(digest));
    return ok;
}

/* Try one LUKS1 slot: 1 and the key in mk when pass opens it, 0 when not. */
static int try_slot(const vd_luks *l, int i, vd_luks_io_fn *io, void *opaque,
                    const uint8_t *pass, size_t passlen, uint8_t *mk, vd_error **errp)
{
    const vd_luks_slot *s = &l->slots[i];
    uint64_t mlen = material_len(l, s);
    uint8_t *mat = vd_malloc(mlen);
    if (!mat) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    int r = io(opaque, (uint64_t)s->key_offset * VD_LUKS_SECTOR, mat, mlen, false, errp);
    if (r < 0) {
        free(mat);
        return r;
    }
    vd_crypto_blk *b = slot_cipher(l, s, pass, passlen, errp);
    if (!b) {
        free(mat);
        return -EINVAL;
    }
    vd_crypto_blk_decrypt(b, 0, mat, mlen);
    vd_crypto_blk_free(b);
    vd_afmerge(l->hash, l->key_bytes, s->stripes, mat, mk);
    vd_memzero(mat, mlen);
    free(mat);
    return mk_matches(l, mk) ? 1 : 0;
}

static int set_master_key(vd_luks *l, const uint8_t *mk, vd_error **errp)
{
    vd_crypto_blk *b = vd_crypto_blk_new(l->cipher_alg, l->mode, l->ivgen, l->ivgen_hash, mk,
                                         l->key_bytes, l->sector_size, errp);
    if (!b) {
        return -EINVAL;
    }
    uint8_t *copy = malloc(l->key_bytes);
    if (!copy) {
        vd_crypto_blk_free(b);
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    memcpy(copy, mk, l->key_bytes);
    if (l->master_key) {
        vd_memzero(l->master_key, l->key_bytes);
        free(l->master_key);
    }
    vd_crypto_blk_free(l->blk);
    l->master_key = copy;
    l->blk = b;
    return 0;
}

/* 1 when pass opens slot i of l (LUKS1 or 2), the key in mk; 0 when not. */
static int open_slot(vd_luks *l, int i, vd_luks_io_fn *io, void *opaque, const uint8_t *pass,
                     size_t passlen, uint8_t *mk, vd_error **errp)
{
    if (l->version == 2) {
        int r = vd_luks2_unlock_slot(l, i, io, opaque, pass, passlen, mk, errp);
        if (r < 0) {
            return r;
        }
        bool ok = false;
        r = vd_luks2_check_mk(l, mk, &ok, errp);
        return r < 0 ? r : ok;
    }
    return try_slot(l, i, io, opaque, pass, passlen, mk, errp);
}

int vd_luks_unlock(vd_luks *l, vd_luks_io_fn *io, void *opaque, const uint8_t *pass,
                   size_t passlen, int *slot, vd_error **errp)
{
    uint8_t mk[64];
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        if (!l->slots[i].active) {
            continue;
        }
        int r = open_slot(l, i, io, opaque, pass, passlen, mk, errp);
        if (r < 0) {
            vd_memzero(mk, sizeof(mk));
            return r;
        }
        if (r == 1) {
            r = set_master_key(l, mk, errp);
            vd_memzero(mk, sizeof(mk));
            if (r == 0 && slot) {
                *slot = i;
            }
            return r;
        }
    }
    vd_memzero(mk, sizeof(mk));
    return vd_error_set(errp, EACCES, "Invalid password, cannot unlock any keyslot");
}

/* ---------------------------------------------------------------- create */

int vd_luks_create_opts_read(const vd_opts *opts, const char *prefix,
                             vd_luks_create_opts *o, vd_error **errp)
{
    char key[64];
    int v, r;
    memset(o, 0, sizeof(*o));
#define ENUM_OPT(name, list, def, field, type)                                            \
    snprintf(key, sizeof(key), "%s%s", prefix, name);                                     \
    if ((r = vd_opts_get_enum(opts, key, list, def, &v, errp)) < 0) {                     \
        return r;                                                                         \
    }                                                                                     \
    o->field = (type)v;
    ENUM_OPT("cipher-alg", vd_cipher_alg_names, VD_CIPHER_AES_256, cipher_alg, vd_cipher_alg)
    ENUM_OPT("cipher-mode", vd_cipher_mode_names, VD_MODE_XTS, mode, vd_cipher_mode)
    ENUM_OPT("ivgen-alg", vd_ivgen_alg_names, VD_IVGEN_PLAIN64, ivgen, vd_ivgen_alg)
    ENUM_OPT("hash-alg", vd_hash_alg_names, VD_HASH_SHA256, hash, vd_hash_alg)
    ENUM_OPT("ivgen-hash-alg", vd_hash_alg_names, VD_HASH_SHA256, ivgen_hash, vd_hash_alg)
#undef ENUM_OPT
    o->has_ivgen_hash = vd_opts_get(opts, key) != NULL || o->ivgen == VD_IVGEN_ESSIV;
    snprintf(key, sizeof(key), "%siter-time", prefix);
    if ((r = vd_opts_get_u64(opts, key, VD_LUKS_DEFAULT_ITER_TIME, &o->iter_time, errp)) < 0) {
        return r;
    }
    if (o->iter_time == 0) {
        return vd_error_set(errp, EINVAL, "Parameter '%s' must be at least 1", key);
    }
    return 0;
}

int vd_luks_create_opts_parse(const vd_opts *opts, const char *prefix,
                              vd_luks_create_opts *o, vd_error **errp)
{
    int r = vd_luks_create_opts_read(opts, prefix, o, errp);
    if (r == 0) {
        r = vd_crypto_blk_check(o->cipher_alg, o->mode, o->ivgen, o->ivgen_hash, errp);
    }
    return r;
}

/* Iterations for iter_time ms of PBKDF2 of this shape, divided by div. */
static int measure_iters(vd_hash_alg hash, size_t passlen, size_t outlen, uint64_t iter_time,
                         uint64_t div, uint32_t min, uint32_t *out, vd_error **errp)
{
    uint64_t per_sec;
    int r = vd_pbkdf2_count_iters(hash, passlen, VD_LUKS_SALT_LEN, outlen, &per_sec, errp);
    if (r < 0) {
        return r;
    }
    uint64_t iters;
    if (vd_mul_overflow(per_sec, iter_time, &iters)) {
        return vd_error_set(errp, ERANGE, "iter-time %" PRIu64 " ms is too large", iter_time);
    }
    iters = iters / 1000 / div;
    if (iters > VD_LUKS_MAX_ITERS) {
        return vd_error_set(errp, ERANGE, "iter-time %" PRIu64 " ms needs %" PRIu64
                            " PBKDF2 iterations, more than the %u this library opens",
                            iter_time, iters, VD_LUKS_MAX_ITERS);
    }
    *out = (uint32_t)VD_MAX(iters, min);
    return 0;
}

/* Store mk in slot i for pass (key material written through io, header not). */
static int store_key(vd_luks *l, int i, const uint8_t *pass, size_t passlen, uint64_t iter_time,
                     vd_luks_io_fn *io, void *opaque, vd_error **errp)
{
    vd_luks_slot *s = &l->slots[i];
    vd_luks_slot ns = *s;
    ns.stripes = VD_LUKS_STRIPES;
    int r = vd_random_bytes(ns.salt, VD_LUKS_SALT_LEN, errp);
    if (r == 0) {
        r = measure_iters(l->hash, passlen, l->key_bytes, iter_time, 1, LUKS_MIN_SLOT_ITERS,
                          &ns.iterations, errp);
    }
    if (r < 0) {
        return r;
    }
    uint64_t mlen = material_len(l, &ns);
    uint8_t *mat = vd_calloc(1, mlen);
    if (!mat) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    r = vd_afsplit(l->hash, l->key_bytes, ns.stripes, l->master_key, mat, errp);
    if (r == 0) {
        vd_crypto_blk *b = slot_cipher(l, &ns, pass, passlen, errp);
        if (!b) {
            r = -EINVAL;
        } else {
            vd_crypto_blk_encrypt(b, 0, mat, mlen);
            vd_crypto_blk_free(b);
            r = io(opaque, (uint64_t)ns.key_offset * VD_LUKS_SECTOR, mat, mlen, true, errp);
        }
    }
    vd_memzero(mat, mlen);
    free(mat);
    if (r == 0) {
        ns.active = true;
        *s = ns;
    }
    return r;
}

/* QEMU's layout: 4 KiB header, 8 slots of key material rounded to 4 KiB. */
static uint64_t layout_split_sectors(uint32_t key_bytes)
{
    return vd_div_round_up((uint64_t)key_bytes * VD_LUKS_STRIPES, LUKS_KEY_SLOT_OFFSET) *
           LUKS_KEY_SLOT_OFFSET / VD_LUKS_SECTOR;
}

uint64_t vd_luks_header_size(const vd_luks_create_opts *o)
{
    uint32_t key_bytes = (uint32_t)(vd_cipher_alg_key_len(o->cipher_alg) *
                                    (o->mode == VD_MODE_XTS ? 2 : 1));
    return (LUKS_KEY_SLOT_OFFSET / VD_LUKS_SECTOR +
            VD_LUKS_NUM_SLOTS * layout_split_sectors(key_bytes)) * VD_LUKS_SECTOR;
}

int vd_luks_create(const vd_luks_create_opts *o, vd_luks **out, vd_error **errp)
{
    int r = vd_crypto_blk_check(o->cipher_alg, o->mode, o->ivgen, o->ivgen_hash, errp);
    if (r < 0) {
        return r;
    }
    vd_luks *l = calloc(1, sizeof(*l));
    if (!l) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    l->version = 1;
    l->sector_size = VD_LUKS_SECTOR;
    l->mk_digest_len = VD_LUKS_DIGEST_LEN;
    l->mk_salt_len = VD_LUKS_SALT_LEN;
    l->cipher_alg = o->cipher_alg;
    l->mode = o->mode;
    l->ivgen = o->ivgen;
    l->ivgen_hash = o->ivgen_hash;
    l->has_ivgen_hash = o->has_ivgen_hash;
    l->hash = o->hash;
    l->key_bytes = (uint32_t)(vd_cipher_alg_key_len(o->cipher_alg) *
                              (o->mode == VD_MODE_XTS ? 2 : 1));
    snprintf(l->cipher_name, sizeof(l->cipher_name), "%s", vd_cipher_alg_family(o->cipher_alg));
    if (o->has_ivgen_hash) {
        snprintf(l->cipher_mode, sizeof(l->cipher_mode), "%s-%s:%s",
                 vd_cipher_mode_names[o->mode], vd_ivgen_alg_names[o->ivgen],
                 vd_hash_alg_names[o->ivgen_hash]);
    } else {
        snprintf(l->cipher_mode, sizeof(l->cipher_mode), "%s-%s", vd_cipher_mode_names[o->mode],
                 vd_ivgen_alg_names[o->ivgen]);
    }
    snprintf(l->hash_spec, sizeof(l->hash_spec), "%s", vd_hash_alg_names[o->hash]);

    uint8_t uuid[16];
    vd_uuid_generate(uuid);
    snprintf(l->uuid, sizeof(l->uuid),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", uuid[0],
             uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9],
             uuid[10], uuid[11], uuid[12], uuid[13], uuid[14], uuid[15]);

    /* QEMU's layout: 4 KiB header, 8 slots of key material rounded to 4 KiB */
    uint64_t hdr_sectors = LUKS_KEY_SLOT_OFFSET / VD_LUKS_SECTOR;
    uint64_t split = layout_split_sectors(l->key_bytes);
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        l->slots[i].key_offset = (uint32_t)(hdr_sectors + i * split);
        l->slots[i].stripes = VD_LUKS_STRIPES;
    }
    l->payload_offset_sector = (uint32_t)(hdr_sectors + VD_LUKS_NUM_SLOTS * split);
    l->payload_offset = (uint64_t)l->payload_offset_sector * VD_LUKS_SECTOR;

    uint8_t mk[64];
    r = vd_random_bytes(mk, l->key_bytes, errp);
    if (r == 0) {
        r = vd_random_bytes(l->mk_salt, VD_LUKS_SALT_LEN, errp);
    }
    if (r == 0) {
        /* 1/8 of iter-time for the digest, as cryptsetup and QEMU do */
        r = measure_iters(l->hash, l->key_bytes, VD_LUKS_DIGEST_LEN, o->iter_time, 8,
                          LUKS_MIN_MK_ITERS, &l->mk_iters, errp);
    }
    if (r == 0) {
        vd_pbkdf2(l->hash, mk, l->key_bytes, l->mk_salt, VD_LUKS_SALT_LEN, l->mk_iters,
                  l->mk_digest, VD_LUKS_DIGEST_LEN);
        r = set_master_key(l, mk, errp);
    }
    vd_memzero(mk, sizeof(mk));
    if (r < 0) {
        vd_luks_free(l);
        return r;
    }
    *out = l;
    return 0;
}

int vd_luks_write_new(vd_luks *l, const uint8_t *pass, size_t passlen, uint64_t iter_time,
                      vd_luks_io_fn *io, void *opaque, vd_error **errp)
{
    int r = store_key(l, 0, pass, passlen, iter_time, io, opaque, errp);
    if (r == 0) {
        r = write_header(l, io, opaque, errp);
    }
    return r;
}

/* ------------------------------------------------------------------ amend */

const vd_opt_desc vd_luks_amend_opts[] = {
    {"state", VD_OPT_STRING, "Select new state of affected keyslots (active/inactive)", NULL},
    {"keyslot", VD_OPT_NUMBER, "Select a single keyslot to modify explicitly", NULL},
    {"old-secret", VD_OPT_STRING, "Select all keyslots that match this password", NULL},
    {"new-secret", VD_OPT_STRING, "New secret to set in the matching keyslots. Empty string "
                                  "to erase", NULL},
    {"iter-time", VD_OPT_NUMBER, "Time to spend in PBKDF in milliseconds", NULL},
    {NULL, 0, NULL, NULL},
};

static int count_active(const vd_luks *l)
{
    int n = 0;
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        n += l->slots[i].active;
    }
    return n;
}

/* Overwrite slot i's key material with noise, then mark it inactive. */
static int erase_slot(vd_luks *l, int i, vd_luks_io_fn *io, void *opaque, vd_error **errp)
{
    vd_luks_slot *s = &l->slots[i];
    uint64_t mlen = material_len(l, s);
    uint8_t *noise = vd_malloc(mlen);
    if (!noise) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    int r = 0;
    for (int pass = 0; pass < LUKS_ERASE_PASSES && r == 0; pass++) {
        r = vd_random_bytes(noise, mlen, errp);
        if (r == 0) {
            r = io(opaque, (uint64_t)s->key_offset * VD_LUKS_SECTOR, noise, mlen, true, errp);
        }
    }
    free(noise);
    if (r == 0) {
        vd_luks_slot saved = *s;
        s->active = false;
        s->iterations = 0;
        memset(s->salt, 0, sizeof(s->salt));
        r = write_header(l, io, opaque, errp);
        if (r < 0) {
            *s = saved; /* the disk's header still marks it active */
        }
    }
    return r;
}

static int lookup_secret(const vd_opts *opts, const char *key, uint8_t **pass, size_t *len,
                         vd_error **errp)
{
    *pass = NULL;
    *len = 0;
    const char *id = vd_opts_get(opts, key);
    if (!id) {
        return 0;
    }
    return vd_secret_lookup_utf8(id, pass, len, errp);
}

static void free_secret(uint8_t *p, size_t len)
{
    if (p) {
        vd_memzero(p, len);
        free(p);
    }
}

static int amend_add(vd_luks *l, vd_luks_io_fn *io, void *opaque, const vd_opts *opts,
                     bool force, bool has_slot, int slot, uint64_t iter_time,
                     const uint8_t *oldp, size_t oldlen, vd_error **errp)
{
    if (!vd_opts_get(opts, "new-secret")) {
        return vd_error_set(errp, EINVAL, "'new-secret' is required to activate a keyslot");
    }
    if (has_slot) {
        if (!force && l->slots[slot].active) {
            return vd_error_set(errp, EINVAL, "Refusing to overwrite active keyslot %d - "
                                              "please erase it first", slot);
        }
    } else {
        slot = -1;
        for (int i = 0; i < VD_LUKS_NUM_SLOTS && slot < 0; i++) {
            if (!l->slots[i].active) {
                slot = i;
            }
        }
        if (slot < 0) {
            return vd_error_set(errp, ENOSPC, "Can't add a keyslot - all keyslots are in use");
        }
    }
    int r;
    if (oldp) {
        /* the old secret must open the image: it names the master key */
        uint8_t mk[64];
        bool found = false;
        for (int i = 0; i < VD_LUKS_NUM_SLOTS && !found; i++) {
            if (l->slots[i].active) {
                r = open_slot(l, i, io, opaque, oldp, oldlen, mk, errp);
                if (r < 0) {
                    vd_memzero(mk, sizeof(mk));
                    return r;
                }
                found = r == 1;
            }
        }
        vd_memzero(mk, sizeof(mk));
        if (!found) {
            return vd_error_set(errp, EACCES, "Failed to retrieve the master key: invalid "
                                              "old-secret password");
        }
    }
    uint8_t *newp;
    size_t newlen;
    r = lookup_secret(opts, "new-secret", &newp, &newlen, errp);
    if (r < 0) {
        return r;
    }
    /* the header on disk still names the old slot when a write fails: so
     * does l (a later amend or close starts from what the disk holds) */
    vd_luks_slot saved = l->slots[slot];
    r = store_key(l, slot, newp, newlen, iter_time, io, opaque, errp);
    free_secret(newp, newlen);
    if (r == 0) {
        r = write_header(l, io, opaque, errp);
        if (r < 0) {
            l->slots[slot] = saved;
        }
    }
    return r;
}

static int amend_erase(vd_luks *l, vd_luks_io_fn *io, void *opaque, const vd_opts *opts,
                       bool force, bool has_slot, int slot, const uint8_t *oldp,
                       size_t oldlen, vd_error **errp)
{
    if (vd_opts_get(opts, "new-secret")) {
        return vd_error_set(errp, EINVAL, "'new-secret' can't be used when erasing a keyslot");
    }
    uint8_t mk[64];
    int r;
    if (has_slot) {
        if (oldp && l->slots[slot].active) {
            r = open_slot(l, slot, io, opaque, oldp, oldlen, mk, errp);
            vd_memzero(mk, sizeof(mk));
            if (r < 0) {
                return r;
            }
            if (r == 0) {
                return vd_error_set(errp, EACCES, "Given keyslot %d doesn't contain the given "
                                                  "old password for erase operation", slot);
            }
        }
        if (!force && !l->slots[slot].active) {
            return vd_error_set(errp, EINVAL, "Given keyslot %d is already erased (inactive)",
                                slot);
        }
        if (!force && l->slots[slot].active && count_active(l) == 1) {
            return vd_error_set(errp, EINVAL,
                                "Attempt to erase the only active keyslot %d which will erase "
                                "all the data in the image irreversibly - refusing operation",
                                slot);
        }
        return erase_slot(l, slot, io, opaque, errp);
    }
    if (!oldp) {
        return vd_error_set(errp, EINVAL, "To erase keyslot(s), either explicit keyslot index "
                                          "or the password currently contained in them must "
                                          "be given");
    }
    bool match[VD_LUKS_NUM_SLOTS] = {false};
    int n = 0;
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        if (l->slots[i].active) {
            r = open_slot(l, i, io, opaque, oldp, oldlen, mk, errp);
            vd_memzero(mk, sizeof(mk));
            if (r < 0) {
                return r;
            }
            match[i] = r == 1;
            n += match[i];
        }
    }
    if (n == 0) {
        return vd_error_set(errp, EACCES, "No keyslots match given (old) password for erase "
                                          "operation");
    }
    if (!force && n == count_active(l)) {
        return vd_error_set(errp, EINVAL,
                            "All the active keyslots match the (old) password that was given "
                            "and erasing them will erase all the data in the image "
                            "irreversibly - refusing operation");
    }
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        if (match[i] && (r = erase_slot(l, i, io, opaque, errp)) < 0) {
            return r;
        }
    }
    return 0;
}

int vd_luks_amend(vd_luks *l, vd_luks_io_fn *io, void *opaque, const vd_opts *opts, bool force,
                  vd_error **errp)
{
    if (l->version != 1) {
        return vd_error_set(errp, ENOTSUP, "Changes to a LUKS2 header are not supported "
                                           "(use cryptsetup to manage its key slots)");
    }
    if (!l->master_key) {
        return vd_error_set(errp, EINVAL, "The image must be opened with its key to manage "
                                          "key slots");
    }
    static const char *const states[] = {"active", "inactive", NULL};
    const char *st = vd_opts_get(opts, "state");
    if (!st) {
        return vd_error_set(errp, EINVAL, "Parameter 'state' is missing");
    }
    int state = vd_crypto_lookup(states, st);
    if (state < 0) {
        return vd_error_set(errp, EINVAL, "Parameter 'state' does not accept value '%s'", st);
    }
    bool has_slot = vd_opts_get(opts, "keyslot") != NULL;
    uint64_t slot = 0, iter_time;
    int r = vd_opts_get_u64(opts, "keyslot", 0, &slot, errp);
    if (r == 0) {
        r = vd_opts_get_u64(opts, "iter-time", VD_LUKS_DEFAULT_ITER_TIME, &iter_time, errp);
    }
    if (r < 0) {
        return r;
    }
    if (has_slot && slot >= VD_LUKS_NUM_SLOTS) {
        return vd_error_set(errp, EINVAL, "Invalid keyslot %" PRIu64 " specified, must be "
                                          "between 0 and %d", slot, VD_LUKS_NUM_SLOTS - 1);
    }
    if (iter_time == 0) {
        return vd_error_set(errp, EINVAL, "Parameter 'iter-time' must be at least 1");
    }
    uint8_t *oldp;
    size_t oldlen;
    r = lookup_secret(opts, "old-secret", &oldp, &oldlen, errp);
    if (r < 0) {
        return r;
    }
    if (state == 0) {
        r = amend_add(l, io, opaque, opts, force, has_slot, (int)slot, iter_time, oldp, oldlen,
                      errp);
    } else {
        r = amend_erase(l, io, opaque, opts, force, has_slot, (int)slot, oldp, oldlen, errp);
    }
    free_secret(oldp, oldlen);
    return r;
}

/* ------------------------------------------------------------------- info */

char *vd_luks_info_fields_fmt(const vd_luks *l, const char *format)
{
    struct json_object *o = json_object_new_object();
    if (!o) {
        return NULL;
    }
    /* the member order qemu-img prints */
    json_object_object_add(o, "ivgen-alg", json_object_new_string(vd_ivgen_alg_names[l->ivgen]));
    json_object_object_add(o, "hash-alg", json_object_new_string(vd_hash_alg_names[l->hash]));
    json_object_object_add(o, "cipher-alg",
                           json_object_new_string(vd_cipher_alg_names[l->cipher_alg]));
    json_object_object_add(o, "uuid", json_object_new_string(l->uuid));
    if (format) {
        json_object_object_add(o, "format", json_object_new_string(format));
    }
    /* QEMU ignores (and does not show) an ivgen hash other IVs than essiv carry */
    if (l->has_ivgen_hash && l->ivgen == VD_IVGEN_ESSIV) {
        json_object_object_add(o, "ivgen-hash-alg",
                               json_object_new_string(vd_hash_alg_names[l->ivgen_hash]));
    }
    json_object_object_add(o, "cipher-mode", json_object_new_string(vd_cipher_mode_names[l->mode]));
    struct json_object *a = json_object_new_array();
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        const vd_luks_slot *s = &l->slots[i];
        struct json_object *so = json_object_new_object();
        json_object_object_add(so, "active", json_object_new_boolean(s->active));
        if (s->active) {
            json_object_object_add(so, "iters", json_object_new_int64(s->iterations));
        }
        uint64_t off = l->version == 1 ? (uint64_t)s->key_offset * VD_LUKS_SECTOR
                                       : s->area_offset;
        json_object_object_add(so, "key-offset", json_object_new_int64((int64_t)off));
        if (s->active) {
            json_object_object_add(so, "stripes", json_object_new_int64(s->stripes));
        }
        json_object_array_add(a, so);
    }
    json_object_object_add(o, "slots", a);
    json_object_object_add(o, "payload-offset", json_object_new_int64((int64_t)l->payload_offset));
    json_object_object_add(o, "master-key-iters", json_object_new_int64(l->mk_iters));
    const char *txt = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    char *res = NULL;
    size_t n = txt ? strlen(txt) : 0;
    if (n >= 2 && txt[0] == '{' && txt[n - 1] == '}') {
        res = vd_malloc(n - 1);
        if (res) {
            memcpy(res, txt + 1, n - 2);
            res[n - 2] = '\0';
        }
    }
    json_object_put(o);
    return res;
}

char *vd_luks_info_fields(const vd_luks *l)
{
    return vd_luks_info_fields_fmt(l, NULL);
}
