/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Block encryption primitives for the luks format and qcow/qcow2
 * encryption, on top of nettle (no cipher, hash or KDF is written here):
 * ciphers and their modes, IV generators, hashes, PBKDF2 with an iteration
 * count measured on the thread CPU clock, and randomness.
 *
 * Names follow QEMU's QAPI enums ("aes-256", "xts", "plain64", "sha256") so
 * that option values and `info` output read the same as qemu-img's.
 */
#ifndef VD_CRYPTO_H
#define VD_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

typedef enum vd_cipher_alg {
    VD_CIPHER_AES_128,
    VD_CIPHER_AES_192,
    VD_CIPHER_AES_256,
    VD_CIPHER_CAST5_128,
    VD_CIPHER_SERPENT_128,
    VD_CIPHER_SERPENT_192,
    VD_CIPHER_SERPENT_256,
    VD_CIPHER_TWOFISH_128,
    VD_CIPHER_TWOFISH_192,
    VD_CIPHER_TWOFISH_256,
    VD_CIPHER__MAX,
} vd_cipher_alg;

typedef enum vd_cipher_mode {
    VD_MODE_ECB,
    VD_MODE_CBC,
    VD_MODE_XTS,
    VD_MODE_CTR,
    VD_MODE__MAX,
} vd_cipher_mode;

typedef enum vd_ivgen_alg {
    VD_IVGEN_PLAIN,
    VD_IVGEN_PLAIN64,
    VD_IVGEN_ESSIV,
    VD_IVGEN__MAX,
} vd_ivgen_alg;

typedef enum vd_hash_alg {
    VD_HASH_MD5,
    VD_HASH_SHA1,
    VD_HASH_SHA224,
    VD_HASH_SHA256,
    VD_HASH_SHA384,
    VD_HASH_SHA512,
    VD_HASH_RIPEMD160,
    VD_HASH__MAX,
} vd_hash_alg;

/* NULL-terminated name lists indexed by the enums (QEMU's spellings),
 * usable with vd_opts_get_enum. */
extern const char *const vd_cipher_alg_names[];
extern const char *const vd_cipher_mode_names[];
extern const char *const vd_ivgen_alg_names[];
extern const char *const vd_hash_alg_names[];

int vd_crypto_lookup(const char *const *names, const char *name); /* index or -1 */

size_t vd_cipher_alg_key_len(vd_cipher_alg alg);
size_t vd_cipher_alg_block_len(vd_cipher_alg alg);
/* The LUKS family name of an algorithm ("aes", "cast5", ...). */
const char *vd_cipher_alg_family(vd_cipher_alg alg);
/* Algorithm of a family with a key of key_len bytes, or -1. */
int vd_cipher_alg_from_family(const char *family, size_t key_len);
size_t vd_hash_digest_len(vd_hash_alg alg);

/* One-shot hash of the concatenation of n buffers. */
void vd_hash_bufs(vd_hash_alg alg, size_t n, const void *const *bufs, const size_t *lens,
                  uint8_t *out);

/* PBKDF2-HMAC. */
void vd_pbkdf2(vd_hash_alg hash, const uint8_t *pass, size_t passlen, const uint8_t *salt,
               size_t saltlen, uint64_t iterations, uint8_t *out, size_t outlen);
/*
 * How many PBKDF2 iterations of this shape run in one second of this
 * thread's CPU time (CLOCK_THREAD_CPUTIME_ID: not disturbed by other
 * threads or processes, unlike a wall clock or getrusage's tick counts).
 */
int vd_pbkdf2_count_iters(vd_hash_alg hash, size_t passlen, size_t saltlen, size_t outlen,
                          uint64_t *iters_per_sec, vd_error **errp);

/* Cryptographically random bytes (getrandom). */
int vd_random_bytes(void *buf, size_t len, vd_error **errp);
/* Wipe memory that held key material. */
void vd_memzero(void *p, size_t len);

/* ----------------------------------------------------------- ciphers */

typedef struct vd_cipher vd_cipher;

/* key_len: the key of alg (doubled for XTS). */
vd_cipher *vd_cipher_new(vd_cipher_alg alg, vd_cipher_mode mode, const uint8_t *key,
                         size_t key_len, vd_error **errp);
void vd_cipher_free(vd_cipher *c);
/* In place.  iv: block_len bytes (ignored for ECB); len: a multiple of the
 * block length.  The context is read-only here: threads may share it. */
void vd_cipher_encrypt(const vd_cipher *c, const uint8_t *iv, uint8_t *buf, size_t len);
void vd_cipher_decrypt(const vd_cipher *c, const uint8_t *iv, uint8_t *buf, size_t len);

/* ----------------------------------------------------- sector encryption */

/*
 * A cipher with its IV generator, encrypting in sectors of sector_size
 * bytes.  The IV of the sector at byte offset o comes from n = o / 512, in
 * 512-byte units whatever the sector size (dm-crypt's default, which LUKS2
 * with 4 KiB sectors keeps): plain takes n's low 32 bits, plain64 all of
 * it, essiv encrypts it with a hash of the key.
 */
typedef struct vd_crypto_blk {
    vd_cipher *cipher;
    vd_cipher *essiv; /* ESSIV's cipher, NULL otherwise */
    vd_ivgen_alg ivgen;
    size_t iv_len;
    uint32_t sector_size;
} vd_crypto_blk;

vd_crypto_blk *vd_crypto_blk_new(vd_cipher_alg alg, vd_cipher_mode mode, vd_ivgen_alg ivgen,
                                 vd_hash_alg ivgen_hash, const uint8_t *key, size_t key_len,
                                 uint32_t sector_size, vd_error **errp);
void vd_crypto_blk_free(vd_crypto_blk *b);
/* In place; offset (a multiple of sector_size) is where buf starts in the
 * encrypted space; len is a multiple of the cipher block (normally whole
 * sectors; a short last sector is handled as its prefix). */
void vd_crypto_blk_encrypt(const vd_crypto_blk *b, uint64_t offset, uint8_t *buf, size_t len);
void vd_crypto_blk_decrypt(const vd_crypto_blk *b, uint64_t offset, uint8_t *buf, size_t len);
/* Check that alg/mode/ivgen/hash can work together (message for errp). */
int vd_crypto_blk_check(vd_cipher_alg alg, vd_cipher_mode mode, vd_ivgen_alg ivgen,
                        vd_hash_alg ivgen_hash, vd_error **errp);

/* QEMU's legacy qcow/qcow2 AES: AES-128-CBC, plain64 IVs, 512-byte
 * sectors, keyed with the first 16 passphrase bytes (zero padded). */
vd_crypto_blk *vd_crypto_legacy_aes_new(const uint8_t *pass, size_t len, vd_error **errp);

/* ----------------------------------------------------------- AF splitter */

/* LUKS anti-forensic split of len bytes into stripes * len bytes (out). */
int vd_afsplit(vd_hash_alg hash, size_t len, uint32_t stripes, const uint8_t *in,
               uint8_t *out, vd_error **errp);
void vd_afmerge(vd_hash_alg hash, size_t len, uint32_t stripes, const uint8_t *in,
                uint8_t *out);

#endif /* VD_CRYPTO_H */
