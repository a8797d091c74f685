/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * LUKS2 headers, for data access: cryptsetup's "LUKS2 On-Disk Format
 * Specification" (1.1.x).  The primary binary header (4 KiB, its SHA-256
 * checksum checked) and the JSON area after it; key slots of type "luks2"
 * with pbkdf2, argon2i or argon2id (libargon2) key derivation and the LUKS1
 * AF splitter; one "crypt" segment (any sector size, iv_tweak); a "pbkdf2"
 * digest of the volume key.
 *
 * Not supported: changing anything in the header (refused by the callers),
 * the secondary header as a fallback, key slots with ids past 7, more than
 * one segment, integrity (authenticated) segments, tokens (ignored).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <argon2.h>
#include <json-c/json.h>
#include <nettle/base64.h>

#include "luks.h"

#define LUKS2_BIN_SIZE 4096u
/* Bounds on what a header may ask of the KDF (cryptsetup's own limits). */
#define LUKS2_MAX_ARGON_MEMORY (4u << 20) /* KiB: 4 GiB */
#define LUKS2_MAX_ARGON_TIME 1000u
#define LUKS2_MAX_ARGON_CPUS 64u

static struct json_object *member(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    return (o && json_object_object_get_ex(o, key, &v)) ? v : NULL;
}

static const char *member_str(struct json_object *o, const char *key)
{
    struct json_object *v = member(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* A number stored as a JSON integer or a decimal string (cryptsetup uses
 * strings for 64-bit values). */
static bool member_u64(struct json_object *o, const char *key, uint64_t *out)
{
    struct json_object *v = member(o, key);
    if (!v) {
        return false;
    }
    if (json_object_is_type(v, json_type_int)) {
        int64_t i = json_object_get_int64(v);
        if (i < 0) {
            return false;
        }
        *out = (uint64_t)i;
        return true;
    }
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        char *end;
        if (!*s || *s == '-' || *s == '+' || *s == ' ') {
            return false;
        }
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (errno || *end) {
            return false;
        }
        *out = x;
        return true;
    }
    return false;
}

static bool b64_decode(const char *in, uint8_t *out, size_t cap, size_t *outlen)
{
    struct base64_decode_ctx ctx;
    size_t inlen = strlen(in);
    if (BASE64_DECODE_LENGTH(inlen) > cap + 3) {
        return false;
    }
    uint8_t tmp[128];
    if (BASE64_DECODE_LENGTH(inlen) > sizeof(tmp)) {
        return false;
    }
    size_t n = sizeof(tmp);
    base64_decode_init(&ctx);
    if (!base64_decode_update(&ctx, &n, tmp, inlen, in) || !base64_decode_final(&ctx) ||
        n > cap) {
        return false;
    }
    memcpy(out, tmp, n);
    *outlen = n;
    return true;
}

/* "aes-xts-plain64" and a key size: the algorithms, or an error. */
static int parse_encryption(const char *spec, size_t key_size, vd_cipher_alg *alg,
                            vd_cipher_mode *mode, vd_ivgen_alg *ivgen, vd_hash_alg *ivhash,
                            vd_error **errp)
{
    char buf[64];
    if (!spec || strlen(spec) >= sizeof(buf)) {
        return vd_error_set(errp, EINVAL, "LUKS2 encryption is missing or too long");
    }
    snprintf(buf, sizeof(buf), "%s", spec);
    char *m = strchr(buf, '-');
    char *iv = m ? strchr(m + 1, '-') : NULL;
    if (!m || !iv) {
        return vd_error_set(errp, ENOTSUP, "Unsupported LUKS2 encryption '%s'", spec);
    }
    *m++ = '\0';
    *iv++ = '\0';
    char *h = strchr(iv, ':');
    if (h) {
        *h++ = '\0';
    }
    int mi = vd_crypto_lookup(vd_cipher_mode_names, m);
    int ii = vd_crypto_lookup(vd_ivgen_alg_names, iv);
    int hi = h ? vd_crypto_lookup(vd_hash_alg_names, h) : VD_HASH_SHA256;
    if (mi < 0 || ii < 0 || hi < 0) {
        return vd_error_set(errp, ENOTSUP, "Unsupported LUKS2 encryption '%s'", spec);
    }
    size_t klen = key_size / (mi == VD_MODE_XTS ? 2 : 1);
    int ai = vd_cipher_alg_from_family(buf, klen);
    if (ai < 0 || (mi == VD_MODE_XTS && key_size % 2)) {
        return vd_error_set(errp, ENOTSUP, "Unsupported LUKS2 cipher '%s' with a %zu-byte key",
                            buf, key_size);
    }
    if (ii == VD_IVGEN_ESSIV && !h) {
        return vd_error_set(errp, EINVAL, "LUKS2 encryption '%s': essiv needs a hash", spec);
    }
    *alg = (vd_cipher_alg)ai;
    *mode = (vd_cipher_mode)mi;
    *ivgen = (vd_ivgen_alg)ii;
    *ivhash = (vd_hash_alg)hi;
    return vd_crypto_blk_check(*alg, *mode, *ivgen, *ivhash, errp);
}

static int parse_keyslot(vd_luks *l, int id, struct json_object *ks, uint64_t region_size,
                         vd_error **errp)
{
    vd_luks_slot *s = &l->slots[id];
    struct json_object *af = member(ks, "af"), *area = member(ks, "area"),
                       *kdf = member(ks, "kdf");
    const char *type = member_str(ks, "type");
    uint64_t key_size, stripes, aoff, asize, akey;
    if (!type || strcmp(type, "luks2") != 0 || !af || !area || !kdf) {
        return vd_error_set(errp, ENOTSUP, "LUKS2 keyslot %d has an unsupported type", id);
    }
    const char *aft = member_str(af, "type"), *afh = member_str(af, "hash");
    const char *areat = member_str(area, "type"), *enc = member_str(area, "encryption");
    if (!member_u64(ks, "key_size", &key_size) || !member_u64(af, "stripes", &stripes) ||
        !member_u64(area, "offset", &aoff) || !member_u64(area, "size", &asize) ||
        !member_u64(area, "key_size", &akey) || !aft || strcmp(aft, "luks1") != 0 || !afh ||
        !areat || strcmp(areat, "raw") != 0) {
        return vd_error_set(errp, EINVAL, "LUKS2 keyslot %d is malformed", id);
    }
    int afhash = vd_crypto_lookup(vd_hash_alg_names, afh);
    if (afhash < 0) {
        return vd_error_set(errp, ENOTSUP, "LUKS2 keyslot %d: unsupported AF hash '%s'", id, afh);
    }
    if (key_size == 0 || key_size > 64 || akey == 0 || akey > 64 || stripes != VD_LUKS_STRIPES) {
        return vd_error_set(errp, EINVAL, "LUKS2 keyslot %d: key size %" PRIu64 " or stripes %"
                            PRIu64 " out of range", id, key_size, stripes);
    }
    uint64_t need = vd_div_round_up(key_size * stripes, VD_LUKS_SECTOR) * VD_LUKS_SECTOR;
    uint64_t end;
    if (asize < need || vd_add_overflow(aoff, asize, &end) || end > region_size ||
        aoff < 2 * l->hdr_size || aoff % VD_LUKS_SECTOR) {
        return vd_error_set(errp, EINVAL, "LUKS2 keyslot %d area (offset %" PRIu64 ", size %"
                            PRIu64 ") is invalid", id, aoff, asize);
    }
    int r = parse_encryption(enc, (size_t)akey, &s->area_alg, &s->area_mode, &s->area_ivgen,
                             &s->area_ivhash, errp);
    if (r < 0) {
        return r;
    }
    const char *kt = member_str(kdf, "type"), *salt = member_str(kdf, "salt");
    if (!kt || !salt || !b64_decode(salt, s->salt2, sizeof(s->salt2), &s->salt_len)) {
        return vd_error_set(errp, EINVAL, "LUKS2 keyslot %d: malformed kdf", id);
    }
    uint64_t a, b = 0, c = 0;
    if (!strcmp(kt, "pbkdf2")) {
        const char *h = member_str(kdf, "hash");
        int hi = h ? vd_crypto_lookup(vd_hash_alg_names, h) : -1;
        if (hi < 0 || !member_u64(kdf, "iterations", &a) || a == 0 || a > VD_LUKS_MAX_ITERS) {
            return vd_error_set(errp, EINVAL, "LUKS2 keyslot %d: unsupported or out of range "
                                              "pbkdf2 parameters", id);
        }
        s->kdf = VD_LUKS2_KDF_PBKDF2;
        s->kdf_hash = (vd_hash_alg)hi;
        s->iterations = (uint32_t)a;
    } else if (!strcmp(kt, "argon2i") || !strcmp(kt, "argon2id")) {
        if (!member_u64(kdf, "time", &a) || !member_u64(kdf, "memory", &b) ||
            !member_u64(kdf, "cpus", &c) || a == 0 || a > LUKS2_MAX_ARGON_TIME || b < 8 ||
            b > LUKS2_MAX_ARGON_MEMORY || c == 0 || c > LUKS2_MAX_ARGON_CPUS) {
            return vd_error_set(errp, EINVAL, "LUKS2 keyslot %d: argon2 parameters out of "
                                              "range", id);
        }
        s->kdf = strcmp(kt, "argon2i") ? VD_LUKS2_KDF_ARGON2ID : VD_LUKS2_KDF_ARGON2I;
        s->iterations = (uint32_t)a;
        s->memory = (uint32_t)b;
        s->cpus = (uint32_t)c;
    } else {
        return vd_error_set(errp, ENOTSUP, "LUKS2 keyslot %d: unsupported kdf '%s'", id, kt);
    }
    s->active = true;
    s->key_size = (uint32_t)key_size;
    s->stripes = (uint32_t)stripes;
    s->af_hash = (vd_hash_alg)afhash;
    s->area_offset = aoff;
    s->area_size = asize;
    s->key_offset = (uint32_t)VD_MIN(aoff / VD_LUKS_SECTOR, UINT32_MAX);
    return 0;
}

static int parse_json(vd_luks *l, struct json_object *root, uint64_t region_size,
                      vd_error **errp)
{
    struct json_object *segs = member(root, "segments"), *keyslots = member(root, "keyslots"),
                       *digests = member(root, "digests");
    if (!segs || !keyslots || !digests || !json_object_is_type(segs, json_type_object) ||
        !json_object_is_type(keyslots, json_type_object) ||
        !json_object_is_type(digests, json_type_object)) {
        return vd_error_set(errp, EINVAL, "LUKS2 metadata lacks segments, keyslots or digests");
    }
    if (json_object_object_length(segs) != 1 || !member(segs, "0")) {
        return vd_error_set(errp, ENOTSUP, "LUKS2 images with other than one segment are not "
                                           "supported");
    }
    struct json_object *seg = member(segs, "0");
    const char *st = member_str(seg, "type"), *enc = member_str(seg, "encryption");
    const char *size = member_str(seg, "size");
    uint64_t off, tweak, ss;
    if (!st || strcmp(st, "crypt") != 0 || member(seg, "integrity")) {
        return vd_error_set(errp, ENOTSUP, "LUKS2 segment type is not supported (only "
                                           "\"crypt\" without integrity)");
    }
    if (!member_u64(seg, "offset", &off) || !member_u64(seg, "iv_tweak", &tweak) ||
        !member_u64(seg, "sector_size", &ss) || !size) {
        return vd_error_set(errp, EINVAL, "LUKS2 segment is malformed");
    }
    if (ss < 512 || ss > 4096 || !vd_is_pow2(ss) || off % ss || off < 2 * l->hdr_size) {
        return vd_error_set(errp, EINVAL, "LUKS2 segment offset %" PRIu64 " or sector size %"
                            PRIu64 " is invalid", off, ss);
    }
    if (tweak != 0) {
        return vd_error_set(errp, ENOTSUP, "LUKS2 segments with an iv_tweak are not supported");
    }
    if (!strcmp(size, "dynamic")) {
        l->segment_size = 0;
    } else if (!member_u64(seg, "size", &l->segment_size) || l->segment_size % ss) {
        return vd_error_set(errp, EINVAL, "LUKS2 segment size '%s' is invalid", size);
    }
    struct json_object *dig = member(digests, "0");
    uint64_t key_bytes = 0;
    json_object_object_foreach(keyslots, kid, ks) {
        char *end;
        long id = strtol(kid, &end, 10);
        if (*end || id < 0 || id >= VD_LUKS_NUM_SLOTS) {
            continue; /* slots past 7 are not used here */
        }
        int r = parse_keyslot(l, (int)id, ks, region_size, errp);
        if (r < 0) {
            return r;
        }
        key_bytes = l->slots[id].key_size;
    }
    if (!key_bytes) {
        return vd_error_set(errp, EINVAL, "LUKS2 image has no usable keyslot");
    }
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        if (l->slots[i].active && l->slots[i].key_size != key_bytes) {
            return vd_error_set(errp, ENOTSUP, "LUKS2 keyslots of different key sizes");
        }
    }
    l->key_bytes = (uint32_t)key_bytes;
    int r = parse_encryption(enc, key_bytes, &l->cipher_alg, &l->mode, &l->ivgen,
                             &l->ivgen_hash, errp);
    if (r < 0) {
        return r;
    }
    l->has_ivgen_hash = l->ivgen == VD_IVGEN_ESSIV;
    snprintf(l->cipher_name, sizeof(l->cipher_name), "%s", vd_cipher_alg_family(l->cipher_alg));
    snprintf(l->cipher_mode, sizeof(l->cipher_mode), "%s", enc);
    const char *dt = member_str(dig, "type"), *dh = member_str(dig, "hash");
    const char *ds = member_str(dig, "salt"), *dd = member_str(dig, "digest");
    uint64_t it;
    int hi = dh ? vd_crypto_lookup(vd_hash_alg_names, dh) : -1;
    if (!dt || strcmp(dt, "pbkdf2") != 0 || hi < 0 || !ds || !dd ||
        !member_u64(dig, "iterations", &it) || it == 0 || it > VD_LUKS_MAX_ITERS ||
        !b64_decode(ds, l->mk_salt, sizeof(l->mk_salt), &l->mk_salt_len) ||
        !b64_decode(dd, l->mk_digest, sizeof(l->mk_digest), &l->mk_digest_len) ||
        l->mk_digest_len == 0) {
        return vd_error_set(errp, EINVAL, "LUKS2 digest 0 is missing or unsupported");
    }
    l->hash = (vd_hash_alg)hi;
    l->mk_iters = (uint32_t)it;
    l->payload_offset = off;
    l->payload_offset_sector = (uint32_t)VD_MIN(off / VD_LUKS_SECTOR, UINT32_MAX);
    l->sector_size = (uint32_t)ss;
    return 0;
}

int vd_luks2_read(vd_luks_io_fn *io, void *opaque, uint64_t region_size, vd_luks **out,
                  vd_error **errp)
{
    uint8_t bin[LUKS2_BIN_SIZE];
    if (region_size < sizeof(bin)) {
        return vd_error_set(errp, EINVAL, "LUKS2 header is truncated");
    }
    int r = io(opaque, 0, bin, sizeof(bin), false, errp);
    if (r < 0) {
        return r;
    }
    uint64_t hdr_size = vd_ld_be64(bin + 8);
    if (hdr_size < 16384 || hdr_size > VD_LUKS2_MAX_HDR || hdr_size % 4096 ||
        hdr_size > region_size || vd_ld_be64(bin + 256) != 0) {
        return vd_error_set(errp, EINVAL, "LUKS2 header size %" PRIu64 " or offset is invalid",
                            hdr_size);
    }
    if (memcmp(bin + 72, "sha256", 7) != 0) {
        return vd_error_set(errp, ENOTSUP, "LUKS2 header checksum '%.32s' is not supported",
                            (const char *)(bin + 72));
    }
    uint8_t *hdr = vd_malloc(hdr_size);
    if (!hdr) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    memcpy(hdr, bin, sizeof(bin));
    r = io(opaque, sizeof(bin), hdr + sizeof(bin), hdr_size - sizeof(bin), false, errp);
    if (r < 0) {
        free(hdr);
        return r;
    }
    /* the checksum covers the whole header with its own field zeroed */
    uint8_t want[32], got[32];
    memcpy(want, hdr + 448, sizeof(want));
    memset(hdr + 448, 0, 64);
    const void *bufs[1] = {hdr};
    size_t lens[1] = {hdr_size};
    vd_hash_bufs(VD_HASH_SHA256, 1, bufs, lens, got);
    if (memcmp(want, got, sizeof(got)) != 0) {
        free(hdr);
        return vd_error_set(errp, EINVAL, "LUKS2 header checksum mismatch");
    }
    char *json = (char *)hdr + sizeof(bin);
    size_t jlen = strnlen(json, hdr_size - sizeof(bin));
    if (jlen == hdr_size - sizeof(bin)) {
        free(hdr);
        return vd_error_set(errp, EINVAL, "LUKS2 metadata is not NUL-terminated");
    }
    struct json_tokener *tok = json_tokener_new_ex(64);
    struct json_object *root = tok ? json_tokener_parse_ex(tok, json, (int)jlen) : NULL;
    if (tok) {
        json_tokener_free(tok);
    }
    vd_luks *l = calloc(1, sizeof(*l));
    if (!root || !json_object_is_type(root, json_type_object) || !l) {
        json_object_put(root);
        free(l);
        free(hdr);
        return vd_error_set(errp, EINVAL, "LUKS2 metadata is not a JSON object");
    }
    l->version = 2;
    l->hdr_size = hdr_size;
    char uuid[41];
    memcpy(uuid, hdr + 168, 40);
    uuid[40] = '\0';
    snprintf(l->uuid, sizeof(l->uuid), "%s", uuid);
    free(hdr);
    r = parse_json(l, root, region_size, errp);
    json_object_put(root);
    if (r < 0) {
        vd_luks_free(l);
        return r;
    }
    *out = l;
    return 0;
}

int vd_luks2_unlock_slot(vd_luks *l, int slot, vd_luks_io_fn *io, void *opaque,
                         const uint8_t *pass, size_t passlen, uint8_t *mk, vd_error **errp)
{
    const vd_luks_slot *s = &l->slots[slot];
    uint8_t key[64];
    /* the area's key: as long as its cipher needs (area.key_size) */
    size_t klen = vd_cipher_alg_key_len(s->area_alg) * (s->area_mode == VD_MODE_XTS ? 2 : 1);
    if (s->kdf == VD_LUKS2_KDF_PBKDF2) {
        vd_pbkdf2(s->kdf_hash, pass, passlen, s->salt2, s->salt_len, s->iterations, key, klen);
    } else {
        int ar = argon2_hash(s->iterations, s->memory, s->cpus, pass, passlen, s->salt2,
                             s->salt_len, key, klen, NULL, 0,
                             s->kdf == VD_LUKS2_KDF_ARGON2I ? Argon2_i : Argon2_id,
                             ARGON2_VERSION_13);
        if (ar != ARGON2_OK) {
            return vd_error_set(errp, ar == ARGON2_MEMORY_ALLOCATION_ERROR ? ENOMEM : EINVAL,
                                "LUKS2 keyslot %d: argon2 failed: %s", slot,
                                argon2_error_message(ar));
        }
    }
    uint64_t mlen = vd_div_round_up((uint64_t)s->key_size * s->stripes, VD_LUKS_SECTOR) *
                    VD_LUKS_SECTOR;
    uint8_t *mat = vd_malloc(mlen);
    if (!mat) {
        vd_memzero(key, sizeof(key));
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    int r = io(opaque, s->area_offset, mat, mlen, false, errp);
    vd_crypto_blk *b = r < 0 ? NULL
                             : vd_crypto_blk_new(s->area_alg, s->area_mode, s->area_ivgen,
                                                 s->area_ivhash, key, klen, VD_LUKS_SECTOR,
                                                 errp);
    vd_memzero(key, sizeof(key));
    if (!b) {
        free(mat);
        return r < 0 ? r : -EINVAL;
    }
    vd_crypto_blk_decrypt(b, 0, mat, mlen);
    vd_crypto_blk_free(b);
    vd_afmerge(s->af_hash, s->key_size, s->stripes, mat, mk);
    vd_memzero(mat, mlen);
    free(mat);
    return 0;
}

int vd_luks2_check_mk(vd_luks *l, const uint8_t *mk, bool *ok, vd_error **errp)
{
    uint8_t digest[64];
    (void)errp;
    vd_pbkdf2(l->hash, mk, l->key_bytes, l->mk_salt, l->mk_salt_len, l->mk_iters, digest,
              l->mk_digest_len);
    *ok = memcmp(digest, l->mk_digest, l->mk_digest_len) == 0;
    vd_memzero(digest, sizeof(digest));
    return 0;
}
