/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * LUKS headers (LUKS1 as cryptsetup and QEMU write them; LUKS2 for data
 * access only): parsing and validation of hostile headers, unlocking with a
 * passphrase, creation, key slot management, and the info QEMU prints.
 *
 * The header lives in a byte region reached through a callback, so that
 * the luks format (region = the file) and qcow2 (region = the clusters its
 * crypto header extension points at) share all of it.
 */
#ifndef VD_LUKS_H
#define VD_LUKS_H

#include "crypto.h"

#define VD_LUKS_SECTOR 512u
#define VD_LUKS_NUM_SLOTS 8
#define VD_LUKS1_HDR_SIZE 592u
#define VD_LUKS_STRIPES 4000u
#define VD_LUKS_SALT_LEN 32u
#define VD_LUKS_DIGEST_LEN 20u
#define VD_LUKS_DEFAULT_ITER_TIME 2000u
/*
 * Our cap on PBKDF2 iterations read from a header: several times what
 * cryptsetup picks for 2 s on a fast machine, so real images open, while a
 * hostile header cannot make an open run for hours.
 */
#define VD_LUKS_MAX_ITERS (1u << 26)
/* Bytes a LUKS2 JSON area may have (cryptsetup's largest is 4 MiB - 4 KiB). */
#define VD_LUKS2_MAX_HDR (4u << 20)

/* Read (write false) or write len bytes at off of the header region. */
typedef int vd_luks_io_fn(void *opaque, uint64_t off, void *buf, size_t len, bool write,
                          vd_error **errp);

typedef enum vd_luks2_kdf {
    VD_LUKS2_KDF_PBKDF2,
    VD_LUKS2_KDF_ARGON2I,
    VD_LUKS2_KDF_ARGON2ID,
} vd_luks2_kdf;

typedef struct vd_luks_slot {
    bool active;
    uint32_t iterations;
    uint8_t salt[VD_LUKS_SALT_LEN];
    uint32_t key_offset; /* sectors */
    uint32_t stripes;
    /* LUKS2 only */
    uint64_t area_offset, area_size; /* bytes */
    uint32_t key_size;
    vd_luks2_kdf kdf;
    uint32_t memory, cpus; /* argon2: KiB and lanes */
    vd_hash_alg kdf_hash;
    vd_hash_alg af_hash;
    vd_cipher_alg area_alg;
    vd_cipher_mode area_mode;
    vd_ivgen_alg area_ivgen;
    vd_hash_alg area_ivhash;
    size_t salt_len;
    uint8_t salt2[64];
} vd_luks_slot;

typedef struct vd_luks {
    int version; /* 1 or 2 */
    char cipher_name[33];
    char cipher_mode[33]; /* "xts-plain64", "cbc-essiv:sha256" */
    char hash_spec[33];
    uint32_t payload_offset_sector;
    uint32_t key_bytes;
    uint8_t mk_digest[64];
    uint8_t mk_salt[64];
    uint32_t mk_iters;
    char uuid[41];
    vd_luks_slot slots[VD_LUKS_NUM_SLOTS];

    /* parsed from the strings */
    vd_cipher_alg cipher_alg;
    vd_cipher_mode mode;
    vd_ivgen_alg ivgen;
    vd_hash_alg ivgen_hash;
    bool has_ivgen_hash;
    vd_hash_alg hash;

    uint64_t payload_offset; /* bytes */
    uint32_t sector_size;    /* encryption unit (512 for LUKS1) */
    uint64_t hdr_size;       /* LUKS2: bytes of one binary+JSON header */
    uint64_t segment_size;   /* LUKS2: bytes, UINT64_MAX for "dynamic" */
    size_t mk_digest_len;    /* LUKS2 digest length */
    size_t mk_salt_len;

    /* after unlock */
    uint8_t *master_key;
    vd_crypto_blk *blk;
} vd_luks;

/* Parse and check a LUKS1 header (the first VD_LUKS1_HDR_SIZE bytes). */
int vd_luks1_parse(const uint8_t *buf, size_t len, vd_luks **out, vd_error **errp);
/* Read and parse a LUKS1 or LUKS2 header through io; region_size bounds it
 * (UINT64_MAX: unknown). */
int vd_luks_read(vd_luks_io_fn *io, void *opaque, uint64_t region_size, vd_luks **out,
                 vd_error **errp);
void vd_luks_free(vd_luks *l);

/*
 * Find the master key with pass (any active slot), set l->master_key and
 * l->blk.  -EACCES "Invalid password, cannot unlock any keyslot" when no
 * slot opens.  *slot (may be NULL): the slot that opened.
 */
int vd_luks_unlock(vd_luks *l, vd_luks_io_fn *io, void *opaque, const uint8_t *pass,
                   size_t passlen, int *slot, vd_error **errp);

typedef struct vd_luks_create_opts {
    vd_cipher_alg cipher_alg;
    vd_cipher_mode mode;
    vd_ivgen_alg ivgen;
    vd_hash_alg ivgen_hash;
    bool has_ivgen_hash;
    vd_hash_alg hash;
    uint64_t iter_time; /* ms */
} vd_luks_create_opts;

/*
 * Read the create options of QEMU's luks (prefix "" or "encrypt."): _read
 * only their syntax (QEMU's option parsing, before a create touches the
 * file), _parse also whether the cipher combination works (QEMU checks
 * that when it builds the header, vd_luks_create here).
 */
int vd_luks_create_opts_read(const vd_opts *opts, const char *prefix,
                             vd_luks_create_opts *o, vd_error **errp);
int vd_luks_create_opts_parse(const vd_opts *opts, const char *prefix,
                              vd_luks_create_opts *o, vd_error **errp);

/*
 * A new LUKS1 header with a random master key, unlocked, no slot active.
 * Nothing is written: the caller makes room for l->payload_offset bytes and
 * calls vd_luks_write_new() to store pass in slot 0 and write the header.
 */
int vd_luks_create(const vd_luks_create_opts *o, vd_luks **out, vd_error **errp);
/* Bytes before the payload of a LUKS1 header vd_luks_create would make. */
uint64_t vd_luks_header_size(const vd_luks_create_opts *o);
int vd_luks_write_new(vd_luks *l, const uint8_t *pass, size_t passlen, uint64_t iter_time,
                      vd_luks_io_fn *io, void *opaque, vd_error **errp);

/*
 * Key slot management (QEMU's amend of luks and qcow2 encrypt.*): opts are
 * the amend options without prefix (state, keyslot, old-secret,
 * new-secret, iter-time).  l must be unlocked.
 */
int vd_luks_amend(vd_luks *l, vd_luks_io_fn *io, void *opaque, const vd_opts *opts, bool force,
                  vd_error **errp);
extern const vd_opt_desc vd_luks_amend_opts[];

/* QEMU's QCryptoBlockInfoLUKS members as JSON text without the braces. */
char *vd_luks_info_fields(const vd_luks *l);
/* The same with "format" where qcow2's "encrypt" object has it. */
char *vd_luks_info_fields_fmt(const vd_luks *l, const char *format);

/* LUKS2 (luks2.c) */
int vd_luks2_read(vd_luks_io_fn *io, void *opaque, uint64_t region_size, vd_luks **out,
                  vd_error **errp);
int vd_luks2_unlock_slot(vd_luks *l, int slot, vd_luks_io_fn *io, void *opaque,
                         const uint8_t *pass, size_t passlen, uint8_t *mk, vd_error **errp);
int vd_luks2_check_mk(vd_luks *l, const uint8_t *mk, bool *ok, vd_error **errp);

#endif /* VD_LUKS_H */
