/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Ciphers, modes, IV generators, hashes, PBKDF2 and randomness for block
 * encryption, as thin wrappers around nettle (see crypto.h).
 */
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#include <nettle/cbc.h>
#include <nettle/ctr.h>
#include <nettle/hmac.h>
#include <nettle/memxor.h>
#include <nettle/md5.h>
#include <nettle/nettle-meta.h>
#include <nettle/pbkdf2.h>
#include <nettle/ripemd160.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>
#include <nettle/xts.h>

#include "crypto.h"

/* Storage for the context of any hash of vd_hash_alg. */
typedef union {
    struct md5_ctx md5;
    struct sha1_ctx sha1;
    struct sha256_ctx sha256;
    struct sha512_ctx sha512;
    struct ripemd160_ctx ripemd160;
    uint64_t align;
} hash_ctx;

const char *const vd_cipher_alg_names[] = {
    "aes-128",     "aes-192",     "aes-256",     "cast5-128",   "serpent-128", "serpent-192",
    "serpent-256", "twofish-128", "twofish-192", "twofish-256", NULL,
};
const char *const vd_cipher_mode_names[] = {"ecb", "cbc", "xts", "ctr", NULL};
const char *const vd_ivgen_alg_names[] = {"plain", "plain64", "essiv", NULL};
const char *const vd_hash_alg_names[] = {"md5",    "sha1",   "sha224",    "sha256",
                                         "sha384", "sha512", "ripemd160", NULL};

static const struct nettle_cipher *const cipher_impl[VD_CIPHER__MAX] = {
    &nettle_aes128,     &nettle_aes192,     &nettle_aes256,     &nettle_cast128,
    &nettle_serpent128, &nettle_serpent192, &nettle_serpent256, &nettle_twofish128,
    &nettle_twofish192, &nettle_twofish256,
};

static const char *const cipher_family[VD_CIPHER__MAX] = {
    "aes", "aes", "aes", "cast5", "serpent", "serpent", "serpent", "twofish", "twofish", "twofish",
};

static const struct nettle_hash *const hash_impl[VD_HASH__MAX] = {
    &nettle_md5,    &nettle_sha1,   &nettle_sha224,    &nettle_sha256,
    &nettle_sha384, &nettle_sha512, &nettle_ripemd160,
};

int vd_crypto_lookup(const char *const *names, const char *name)
{
    for (int i = 0; name && names[i]; i++) {
        if (!strcmp(names[i], name)) {
            return i;
        }
    }
    return -1;
}

size_t vd_cipher_alg_key_len(vd_cipher_alg alg)
{
    return cipher_impl[alg]->key_size;
}

size_t vd_cipher_alg_block_len(vd_cipher_alg alg)
{
    return cipher_impl[alg]->block_size;
}

const char *vd_cipher_alg_family(vd_cipher_alg alg)
{
    return cipher_family[alg];
}

int vd_cipher_alg_from_family(const char *family, size_t key_len)
{
    for (int i = 0; i < VD_CIPHER__MAX; i++) {
        if (!strcmp(cipher_family[i], family) && cipher_impl[i]->key_size == key_len) {
            return i;
        }
    }
    return -1;
}

size_t vd_hash_digest_len(vd_hash_alg alg)
{
    return hash_impl[alg]->digest_size;
}

void vd_hash_bufs(vd_hash_alg alg, size_t n, const void *const *bufs, const size_t *lens,
                  uint8_t *out)
{
    const struct nettle_hash *h = hash_impl[alg];
    hash_ctx ctx;
    h->init(&ctx);
    for (size_t i = 0; i < n; i++) {
        h->update(&ctx, lens[i], bufs[i]);
    }
    h->digest(&ctx, h->digest_size, out);
}

void vd_memzero(void *p, size_t len)
{
    if (p) {
        explicit_bzero(p, len);
    }
}

int vd_random_bytes(void *buf, size_t len, vd_error **errp)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return vd_error_setg_errno(errp, errno, "Unable to read random bytes");
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ------------------------------------------------------------------ PBKDF2 */

/* HMAC over any nettle hash, shaped for nettle's generic pbkdf2(). */
typedef struct {
    const struct nettle_hash *hash;
    hash_ctx outer, inner, state;
} gen_hmac;

static void gen_hmac_update(void *p, size_t len, const uint8_t *data)
{
    gen_hmac *m = p;
    hmac_update(&m->state, m->hash, len, data);
}

static void gen_hmac_digest(void *p, size_t len, uint8_t *out)
{
    gen_hmac *m = p;
    hmac_digest(&m->outer, &m->inner, &m->state, m->hash, len, out);
}

void vd_pbkdf2(vd_hash_alg hash, const uint8_t *pass, size_t passlen, const uint8_t *salt,
               size_t saltlen, uint64_t iterations, uint8_t *out, size_t outlen)
{
    gen_hmac m;
    m.hash = hash_impl[hash];
    hmac_set_key(&m.outer, &m.inner, &m.state, m.hash, passlen, pass);
    /* callers bound iterations to 32 bits (the LUKS field) */
    pbkdf2(&m, gen_hmac_update, gen_hmac_digest, m.hash->digest_size,
           (unsigned)VD_MIN(iterations, UINT32_MAX), saltlen, salt, outlen, out);
    vd_memzero(&m, sizeof(m));
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int vd_pbkdf2_count_iters(vd_hash_alg hash, size_t passlen, size_t saltlen, size_t outlen,
                          uint64_t *iters_per_sec, vd_error **errp)
{
    uint8_t pass[256], salt[64], out[256];
    struct timespec res;
    if (clock_getres(CLOCK_THREAD_CPUTIME_ID, &res) != 0 || thread_cpu_ns() == 0) {
        return vd_error_setg_errno(errp, errno, "Unable to read the thread CPU clock");
    }
    passlen = VD_MIN(passlen, sizeof(pass));
    saltlen = VD_MIN(saltlen, sizeof(salt));
    outlen = VD_MIN(outlen, sizeof(out));
    memset(pass, 0x5a, sizeof(pass));
    memset(salt, 0xa5, sizeof(salt));
    /*
     * Double the count until one run takes a measurable share of CPU time
     * (100 ms, far above the clock's nanosecond resolution), so that the
     * rate does not depend on a coarse tick.
     */
    for (uint64_t iters = 1u << 10; iters <= (1ull << 31); iters *= 2) {
        uint64_t t0 = thread_cpu_ns();
        vd_pbkdf2(hash, pass, passlen, salt, saltlen, iters, out, outlen);
        uint64_t t1 = thread_cpu_ns();
        if (t1 > t0 && t1 - t0 >= 100000000u) {
            *iters_per_sec = iters * 1000000000u / (t1 - t0);
            return 0;
        }
    }
    return vd_error_set(errp, EIO, "Unable to measure the PBKDF2 speed: the thread CPU "
                                   "clock does not advance");
}

/* ----------------------------------------------------------------- ciphers */

struct vd_cipher {
    vd_cipher_alg alg;
    vd_cipher_mode mode;
    const struct nettle_cipher *impl;
    void *enc;   /* encryption key schedule (data key for XTS) */
    void *dec;   /* decryption key schedule (NULL for CTR) */
    void *tweak; /* XTS tweak key (encryption schedule) */
};

void vd_cipher_free(vd_cipher *c)
{
    if (!c) {
        return;
    }
    vd_memzero(c->enc, c->impl->context_size);
    vd_memzero(c->dec, c->impl->context_size);
    vd_memzero(c->tweak, c->impl->context_size);
    free(c->enc);
    free(c->dec);
    free(c->tweak);
    free(c);
}

vd_cipher *vd_cipher_new(vd_cipher_alg alg, vd_cipher_mode mode, const uint8_t *key,
                         size_t key_len, vd_error **errp)
{
    const struct nettle_cipher *impl = cipher_impl[alg];
    size_t want = impl->key_size * (mode == VD_MODE_XTS ? 2 : 1);
    if (key_len != want) {
        vd_error_set(errp, EINVAL, "Cipher %s-%s needs a %zu-byte key, not %zu bytes",
                     vd_cipher_alg_names[alg], vd_cipher_mode_names[mode], want, key_len);
        return NULL;
    }
    if (mode == VD_MODE_XTS && impl->block_size != XTS_BLOCK_SIZE) {
        vd_error_set(errp, EINVAL, "Cipher %s cannot be used in XTS mode (its block is not "
                                   "16 bytes)", vd_cipher_alg_names[alg]);
        return NULL;
    }
    vd_cipher *c = calloc(1, sizeof(*c));
    if (!c) {
        vd_error_set(errp, ENOMEM, "Out of memory");
        return NULL;
    }
    c->alg = alg;
    c->mode = mode;
    c->impl = impl;
    c->enc = calloc(1, impl->context_size);
    if (mode != VD_MODE_CTR) {
        c->dec = calloc(1, impl->context_size);
    }
    if (mode == VD_MODE_XTS) {
        c->tweak = calloc(1, impl->context_size);
    }
    if (!c->enc || (mode != VD_MODE_CTR && !c->dec) || (mode == VD_MODE_XTS && !c->tweak)) {
        vd_cipher_free(c);
        vd_error_set(errp, ENOMEM, "Out of memory");
        return NULL;
    }
    impl->set_encrypt_key(c->enc, key);
    if (c->dec) {
        impl->set_decrypt_key(c->dec, key);
    }
    if (c->tweak) {
        impl->set_encrypt_key(c->tweak, key + impl->key_size);
    }
    return c;
}

void vd_cipher_encrypt(const vd_cipher *c, const uint8_t *iv, uint8_t *buf, size_t len)
{
    const struct nettle_cipher *impl = c->impl;
    uint8_t ivbuf[16];
    switch (c->mode) {
    case VD_MODE_ECB:
        impl->encrypt(c->enc, len, buf, buf);
        break;
    case VD_MODE_CBC:
        memcpy(ivbuf, iv, impl->block_size);
        cbc_encrypt(c->enc, impl->encrypt, impl->block_size, ivbuf, len, buf, buf);
        break;
    case VD_MODE_CTR:
        memcpy(ivbuf, iv, impl->block_size);
        ctr_crypt(c->enc, impl->encrypt, impl->block_size, ivbuf, len, buf, buf);
        break;
    case VD_MODE_XTS:
        xts_encrypt_message(c->enc, c->tweak, impl->encrypt, iv, len, buf, buf);
        break;
    default:
        abort();
    }
}

void vd_cipher_decrypt(const vd_cipher *c, const uint8_t *iv, uint8_t *buf, size_t len)
{
    const struct nettle_cipher *impl = c->impl;
    uint8_t ivbuf[16];
    switch (c->mode) {
    case VD_MODE_ECB:
        impl->decrypt(c->dec, len, buf, buf);
        break;
    case VD_MODE_CBC:
        memcpy(ivbuf, iv, impl->block_size);
        cbc_decrypt(c->dec, impl->decrypt, impl->block_size, ivbuf, len, buf, buf);
        break;
    case VD_MODE_CTR:
        memcpy(ivbuf, iv, impl->block_size);
        ctr_crypt(c->enc, impl->encrypt, impl->block_size, ivbuf, len, buf, buf);
        break;
    case VD_MODE_XTS:
        xts_decrypt_message(c->dec, c->tweak, impl->decrypt, impl->encrypt, iv, len, buf, buf);
        break;
    default:
        abort();
    }
}

/* ------------------------------------------------------- sector encryption */

int vd_crypto_blk_check(vd_cipher_alg alg, vd_cipher_mode mode, vd_ivgen_alg ivgen,
                        vd_hash_alg ivgen_hash, vd_error **errp)
{
    if (mode == VD_MODE_XTS && vd_cipher_alg_block_len(alg) != XTS_BLOCK_SIZE) {
        return vd_error_set(errp, EINVAL, "Cipher %s cannot be used in XTS mode (its block "
                                          "is not 16 bytes)", vd_cipher_alg_names[alg]);
    }
    if (ivgen == VD_IVGEN_ESSIV &&
        vd_cipher_alg_from_family(vd_cipher_alg_family(alg), vd_hash_digest_len(ivgen_hash)) <
            0) {
        return vd_error_set(errp, EINVAL,
                            "Cipher %s has no key size matching the %zu-byte digest of "
                            "ivgen hash %s for essiv",
                            vd_cipher_alg_names[alg], vd_hash_digest_len(ivgen_hash),
                            vd_hash_alg_names[ivgen_hash]);
    }
    return 0;
}

void vd_crypto_blk_free(vd_crypto_blk *b)
{
    if (b) {
        vd_cipher_free(b->cipher);
        vd_cipher_free(b->essiv);
        free(b);
    }
}

vd_crypto_blk *vd_crypto_blk_new(vd_cipher_alg alg, vd_cipher_mode mode, vd_ivgen_alg ivgen,
                                 vd_hash_alg ivgen_hash, const uint8_t *key, size_t key_len,
                                 uint32_t sector_size, vd_error **errp)
{
    if (vd_crypto_blk_check(alg, mode, ivgen, ivgen_hash, errp) < 0) {
        return NULL;
    }
    vd_crypto_blk *b = calloc(1, sizeof(*b));
    if (!b) {
        vd_error_set(errp, ENOMEM, "Out of memory");
        return NULL;
    }
    b->ivgen = ivgen;
    b->sector_size = sector_size;
    b->iv_len = mode == VD_MODE_ECB ? 0 : vd_cipher_alg_block_len(alg);
    b->cipher = vd_cipher_new(alg, mode, key, key_len, errp);
    if (!b->cipher) {
        vd_crypto_blk_free(b);
        return NULL;
    }
    if (ivgen == VD_IVGEN_ESSIV) {
        /* ESSIV: the IV cipher's key is the hash of the whole key */
        uint8_t salt[64];
        size_t dlen = vd_hash_digest_len(ivgen_hash);
        const void *bufs[1] = {key};
        size_t lens[1] = {key_len};
        vd_hash_bufs(ivgen_hash, 1, bufs, lens, salt);
        int ealg = vd_cipher_alg_from_family(vd_cipher_alg_family(alg), dlen);
        b->essiv = vd_cipher_new((vd_cipher_alg)ealg, VD_MODE_ECB, salt, dlen, errp);
        vd_memzero(salt, sizeof(salt));
        if (!b->essiv) {
            vd_crypto_blk_free(b);
            return NULL;
        }
    }
    return b;
}

static void blk_iv(const vd_crypto_blk *b, uint64_t sector, uint8_t *iv)
{
    memset(iv, 0, b->iv_len);
    if (b->ivgen == VD_IVGEN_PLAIN) {
        uint8_t le[4];
        vd_st_le32(le, (uint32_t)sector);
        memcpy(iv, le, VD_MIN(b->iv_len, sizeof(le)));
    } else {
        uint8_t le[8];
        vd_st_le64(le, sector);
        memcpy(iv, le, VD_MIN(b->iv_len, sizeof(le)));
        if (b->ivgen == VD_IVGEN_ESSIV) {
            vd_cipher_encrypt(b->essiv, NULL, iv, b->iv_len);
        }
    }
}

void vd_crypto_blk_encrypt(const vd_crypto_blk *b, uint64_t offset, uint8_t *buf, size_t len)
{
    uint8_t iv[16];
    for (; len; offset += b->sector_size) {
        size_t n = VD_MIN(len, b->sector_size);
        if (b->iv_len) {
            blk_iv(b, offset / 512, iv);
        }
        vd_cipher_encrypt(b->cipher, iv, buf, n);
        buf += n;
        len -= n;
    }
}

void vd_crypto_blk_decrypt(const vd_crypto_blk *b, uint64_t offset, uint8_t *buf, size_t len)
{
    uint8_t iv[16];
    for (; len; offset += b->sector_size) {
        size_t n = VD_MIN(len, b->sector_size);
        if (b->iv_len) {
            blk_iv(b, offset / 512, iv);
        }
        vd_cipher_decrypt(b->cipher, iv, buf, n);
        buf += n;
        len -= n;
    }
}

vd_crypto_blk *vd_crypto_legacy_aes_new(const uint8_t *pass, size_t len, vd_error **errp)
{
    uint8_t key[16] = {0};
    memcpy(key, pass, VD_MIN(len, sizeof(key)));
    vd_crypto_blk *b = vd_crypto_blk_new(VD_CIPHER_AES_128, VD_MODE_CBC, VD_IVGEN_PLAIN64,
                                         VD_HASH_SHA256, key, sizeof(key), 512, errp);
    vd_memzero(key, sizeof(key));
    return b;
}

/* ------------------------------------------------------------- AF splitter */

/* Replace each digest-sized piece of block with the hash of (index, piece). */
static void af_diffuse(vd_hash_alg hash, uint8_t *block, size_t len)
{
    size_t dlen = vd_hash_digest_len(hash);
    uint8_t digest[64];
    for (size_t i = 0, off = 0; off < len; i++, off += dlen) {
        size_t n = VD_MIN(dlen, len - off);
        uint8_t be[4];
        vd_st_be32(be, (uint32_t)i);
        const void *bufs[2] = {be, block + off};
        size_t lens[2] = {sizeof(be), n};
        vd_hash_bufs(hash, 2, bufs, lens, digest);
        memcpy(block + off, digest, n);
    }
    vd_memzero(digest, sizeof(digest));
}

int vd_afsplit(vd_hash_alg hash, size_t len, uint32_t stripes, const uint8_t *in,
               uint8_t *out, vd_error **errp)
{
    uint8_t *block = calloc(1, len);
    if (!block) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    int r = vd_random_bytes(out, len * (stripes - 1), errp);
    for (uint32_t i = 0; r == 0 && i + 1 < stripes; i++) {
        memxor(block, out + (size_t)i * len, len);
        af_diffuse(hash, block, len);
    }
    if (r == 0) {
        memxor3(out + (size_t)(stripes - 1) * len, block, in, len);
    }
    vd_memzero(block, len);
    free(block);
    return r;
}

void vd_afmerge(vd_hash_alg hash, size_t len, uint32_t stripes, const uint8_t *in,
                uint8_t *out)
{
    memset(out, 0, len);
    for (uint32_t i = 0; i + 1 < stripes; i++) {
        memxor(out, in + (size_t)i * len, len);
        af_diffuse(hash, out, len);
    }
    memxor(out, in + (size_t)(stripes - 1) * len, len);
}
