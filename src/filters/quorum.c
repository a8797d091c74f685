/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The "quorum" driver (QEMU 7.2's block/quorum.c, same options and
 * verdicts): N children hold the same data.  A read goes to every child
 * and the version at least vote-threshold children agree on wins (with
 * rewrite-corrupted=on the children that returned another version get the
 * winner written back); read-pattern=fifo reads the first child that
 * answers instead.  Writes, zero writes and flushes go to every child and
 * succeed when at least vote-threshold children succeed.  blkverify=on
 * (two children, threshold 2) fails a read whose versions differ.
 *
 *   driver=quorum,vote-threshold=2,children.0.driver=raw,
 *   children.0.file.filename=a.raw,children.1.driver=file,children.1.filename=b.raw,...
 *
 * The node has no single directory: a format above it cannot resolve
 * relative names (VD_DRV_NO_DIRNAME), as in QEMU.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define QUORUM_MAX_CHILDREN 64
#define QUORUM_MAX_TRANSFER (8u << 20) /* bounds the per-child read buffers */

typedef struct quorum_state {
    vd_node **children;
    int nb;
    int threshold;
    bool fifo;
    bool blkverify;
    bool rewrite;
} quorum_state;

static const vd_opt_desc quorum_open_opts[] = {
    {"vote-threshold", VD_OPT_NUMBER,
     "The number of votes needed to reach quorum", NULL},
    {"blkverify", VD_OPT_BOOL, "Trigger block verify mode if set", "off"},
    {"rewrite-corrupted", VD_OPT_BOOL, "Rewrite corrupted block on read quorum", "off"},
    {"read-pattern", VD_OPT_STRING, "Allowed pattern: quorum, fifo. Quorum is default",
     "quorum"},
    {NULL, 0, NULL, NULL},
};

static const char *const quorum_prefixes[] = {"children.", NULL};

static void quorum_close(vd_node *bs)
{
    quorum_state *s = bs->opaque;
    for (int i = 0; i < s->nb; i++) {
        vd_node_close(s->children[i]);
    }
    free(s->children);
    s->children = NULL;
    s->nb = 0;
}

static int quorum_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    quorum_state *s = bs->opaque;
    int ret;

    /* children.0, children.1, ... : as many as are numbered without a gap */
    int nb = 0;
    for (; nb <= QUORUM_MAX_CHILDREN; nb++) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "children.%d.", nb);
        bool found = false;
        for (size_t i = 0; i < vd_opts_count(opts) && !found; i++) {
            found = !strncmp(vd_opts_key(opts, i), prefix, strlen(prefix));
        }
        if (!found) {
            break;
        }
    }
    if (nb < 1) {
        return vd_error_set(errp, EINVAL, "Number of provided children must be 1 or more");
    }
    if (nb > QUORUM_MAX_CHILDREN) {
        return vd_error_set(errp, EINVAL, "Too many quorum children (at most %d)",
                            QUORUM_MAX_CHILDREN);
    }
    const char *t = vd_opts_get(opts, "vote-threshold");
    char *end = NULL;
    long long thr = t ? strtoll(t, &end, 10) : 0;
    if (t && (end == t || *end)) {
        return vd_error_set(errp, EINVAL, "Parameter 'vote-threshold' expects a number");
    }
    if (thr < 1) {
        return vd_error_set(errp, EINVAL, "Parameter 'vote-threshold' expects a value >= 1");
    }
    if (thr > nb) {
        return vd_error_set(errp, EINVAL, "threshold may not exceed children count");
    }
    const char *pattern = vd_opts_get(opts, "read-pattern");
    if (pattern && strcmp(pattern, "quorum") && strcmp(pattern, "fifo")) {
        return vd_error_set(errp, EINVAL, "Please set read-pattern as fifo or quorum");
    }
    s->fifo = pattern && !strcmp(pattern, "fifo");
    if (vd_opts_get_bool(opts, "blkverify", false, &s->blkverify, errp) < 0 ||
        vd_opts_get_bool(opts, "rewrite-corrupted", false, &s->rewrite, errp) < 0) {
        return -EINVAL;
    }
    if (s->fifo) {
        s->blkverify = false; /* as QEMU: fifo reads one child */
    } else if (s->blkverify && (nb != 2 || thr != 2)) {
        return vd_error_set(errp, EINVAL, "blkverify=on can only be set if there are "
                                          "exactly two files and vote-threshold is 2");
    }
    if (s->rewrite && s->blkverify) {
        return vd_error_set(errp, EINVAL,
                            "rewrite-corrupted=on cannot be used with blkverify=on");
    }
    s->threshold = (int)thr;

    s->children = calloc((size_t)nb, sizeof(*s->children));
    if (!s->children) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    unsigned cflags = bs->flags & ~VD_NODE_PROTOCOL;
    bs->request_alignment = 1;
    bs->max_transfer = QUORUM_MAX_TRANSFER;
    bs->has_zero_init = true;
    for (int i = 0; i < nb; i++) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "children.%d", i);
        vd_opts *co = vd_opts_extract_prefix(opts, prefix);
        if (!co) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto fail;
        }
        char *fn = vd_strdup(vd_opts_get(co, "filename"));
        if (fn && !vd_opts_get(co, "driver")) {
            vd_opts_set(co, "filename", NULL);
        } else {
            free(fn);
            fn = NULL;
        }
        if (bs->flags & VD_NODE_FORCE_SHARE) {
            vd_opts_set(co, "force-share", "on");
        }
        s->children[i] = vd_node_open_file(fn, co, cflags, errp);
        free(fn);
        vd_opts_free(co);
        if (!s->children[i]) {
            ret = -EINVAL;
            goto fail;
        }
        s->nb = i + 1;
        vd_node *c = s->children[i];
        c->parent = bs;
        if (c->request_alignment > bs->request_alignment) {
            bs->request_alignment = c->request_alignment;
        }
        if (c->max_transfer && c->max_transfer < bs->max_transfer) {
            bs->max_transfer = c->max_transfer;
        }
        bs->has_zero_init = bs->has_zero_init && c->has_zero_init;
    }
    return 0;

fail:
    quorum_close(bs);
    return ret;
}

/* The error most children returned (QEMU's quorum_vote_error). */
static int most_common_error(const int *rets, int n)
{
    int best = -EIO, best_count = 0;
    for (int i = 0; i < n; i++) {
        if (rets[i] >= 0) {
            continue;
        }
        int c = 0;
        for (int j = 0; j < n; j++) {
            c += rets[j] == rets[i];
        }
        if (c > best_count) {
            best = rets[i];
            best_count = c;
        }
    }
    return best;
}

static int vote_on_results(quorum_state *s, const int *rets)
{
    int ok = 0;
    for (int i = 0; i < s->nb; i++) {
        ok += rets[i] >= 0;
    }
    return ok >= s->threshold ? 0 : most_common_error(rets, s->nb);
}

static int quorum_read_fifo(quorum_state *s, uint64_t offset, uint64_t len, void *buf,
                            unsigned flags)
{
    int ret = -EIO;
    for (int i = 0; i < s->nb; i++) {
        ret = vd_node_pread(s->children[i], offset, len, buf, flags);
        if (ret >= 0) {
            return 0;
        }
    }
    return ret;
}

static int quorum_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    quorum_state *s = bs->opaque;
    if (s->fifo) {
        return quorum_read_fifo(s, offset, len, buf, flags);
    }
    int n = s->nb;
    uint8_t **bufs = calloc((size_t)n, sizeof(*bufs));
    int *rets = calloc((size_t)n, sizeof(*rets));
    int *version = calloc((size_t)n, sizeof(*version)); /* index of the first equal buffer */
    int ret = -ENOMEM;
    if (!bufs || !rets || !version) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        bufs[i] = vd_malloc(len);
        if (!bufs[i]) {
            goto out;
        }
        rets[i] = vd_node_pread(s->children[i], offset, len, bufs[i], flags);
    }
    ret = vote_on_results(s, rets);
    if (ret < 0) {
        goto out;
    }
    /* group identical versions; the one with the most votes wins (the
     * earliest child's on a tie) */
    int winner = -1, winner_votes = 0;
    for (int i = 0; i < n; i++) {
        version[i] = -1;
        if (rets[i] < 0) {
            continue;
        }
        for (int j = 0; j < i; j++) {
            if (version[j] == j && !memcmp(bufs[i], bufs[j], len)) {
                version[i] = j;
                break;
            }
        }
        if (version[i] < 0) {
            version[i] = i;
        }
    }
    int distinct = 0;
    for (int i = 0; i < n; i++) {
        if (rets[i] < 0 || version[i] != i) {
            continue;
        }
        distinct++;
        int votes = 0;
        for (int j = 0; j < n; j++) {
            votes += rets[j] >= 0 && version[j] == i;
        }
        if (votes > winner_votes) {
            winner = i;
            winner_votes = votes;
        }
    }
    if (s->blkverify && distinct > 1) {
        ret = -EIO;
        goto out;
    }
    if (winner < 0 || winner_votes < s->threshold) {
        ret = -EIO;
        goto out;
    }
    memcpy(buf, bufs[winner], len);
    if (s->rewrite && distinct > 1 && (bs->flags & VD_NODE_RDWR)) {
        for (int i = 0; i < n; i++) {
            if (rets[i] >= 0 && version[i] != winner) {
                /* a failed rewrite leaves the child as it was: the read
                 * itself already has its answer */
                (void)vd_node_pwrite(s->children[i], offset, len, bufs[winner], 0);
            }
        }
    }
    ret = 0;
out:
    for (int i = 0; bufs && i < n; i++) {
        free(bufs[i]);
    }
    free(bufs);
    free(rets);
    free(version);
    return ret;
}

static int quorum_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                         unsigned flags)
{
    quorum_state *s = bs->opaque;
    int rets[QUORUM_MAX_CHILDREN];
    for (int i = 0; i < s->nb; i++) {
        rets[i] = vd_node_pwrite(s->children[i], offset, len, buf, flags);
    }
    return vote_on_results(s, rets);
}

static int quorum_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    quorum_state *s = bs->opaque;
    int rets[QUORUM_MAX_CHILDREN];
    for (int i = 0; i < s->nb; i++) {
        /* each child falls back to writing zero buffers itself */
        rets[i] = vd_node_pwrite_zeroes(s->children[i], offset, len,
                                        flags & ~VD_REQ_NO_FALLBACK);
    }
    return vote_on_results(s, rets);
}

static int quorum_flush(vd_node *bs)
{
    quorum_state *s = bs->opaque;
    int rets[QUORUM_MAX_CHILDREN];
    for (int i = 0; i < s->nb; i++) {
        rets[i] = vd_node_flush(s->children[i]);
    }
    return vote_on_results(s, rets);
}

static int64_t quorum_get_length(vd_node *bs)
{
    quorum_state *s = bs->opaque;
    int64_t len = vd_node_get_length(s->children[0]);
    for (int i = 1; len >= 0 && i < s->nb; i++) {
        int64_t l = vd_node_get_length(s->children[i]);
        if (l < 0) {
            return l;
        }
        if (l != len) {
            return -EIO; /* the children must agree on the size too */
        }
    }
    return len;
}

/* host bytes of all children together (as QEMU sums a node's children) */
static int64_t quorum_get_allocated_size(vd_node *bs)
{
    quorum_state *s = bs->opaque;
    int64_t sum = 0;
    for (int i = 0; i < s->nb; i++) {
        vd_node *c = s->children[i];
        while (!c->drv->get_allocated_size && c->file) {
            c = c->file;
        }
        int64_t n = c->drv->get_allocated_size ? c->drv->get_allocated_size(c) : -ENOTSUP;
        if (n < 0) {
            return n;
        }
        sum += n;
    }
    return sum;
}

/*
 * Whether child reads as zeroes over [offset, offset+len) through its whole
 * backing chain; *pnum: how far the answer holds.
 */
static int child_reads_zero(vd_node *child, bool want_zero, uint64_t offset, uint64_t len,
                            uint64_t *pnum, bool *zero)
{
    for (vd_node *n = child; n; n = n->backing) {
        int64_t nlen = vd_node_get_length(n);
        if (nlen < 0) {
            return (int)nlen;
        }
        if (offset >= (uint64_t)nlen) {
            *zero = true; /* past a backing file's end */
            return 0;
        }
        len = VD_MIN(len, (uint64_t)nlen - offset);
        uint64_t map;
        vd_node *file;
        int ret = vd_node_block_status(n, want_zero, offset, len, pnum, &map, &file);
        if (ret < 0) {
            return ret;
        }
        if (ret & (VD_BLOCK_DATA | VD_BLOCK_ZERO)) {
            *zero = (ret & VD_BLOCK_ZERO) != 0;
            return 0;
        }
        len = *pnum; /* unallocated here: the next layer decides */
    }
    *zero = true; /* allocated nowhere */
    return 0;
}

/*
 * As QEMU: zeroes only where every child reads zeroes, else data; never an
 * offset (the caller must read through the quorum).
 */
static int quorum_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                               uint64_t *pnum, uint64_t *map, vd_node **file)
{
    quorum_state *s = bs->opaque;
    uint64_t zero_len = len, data_len = 0;
    (void)map;
    *file = NULL;
    for (int i = 0; i < s->nb; i++) {
        uint64_t n = len;
        bool zero = false;
        int ret = child_reads_zero(s->children[i], want_zero, offset, len, &n, &zero);
        if (ret < 0) {
            data_len = len;
            break;
        }
        if (zero) {
            zero_len = VD_MIN(zero_len, n);
        } else {
            data_len = VD_MAX(data_len, n);
        }
    }
    if (data_len) {
        *pnum = data_len;
        return VD_BLOCK_DATA;
    }
    *pnum = zero_len;
    return VD_BLOCK_ZERO;
}

const vd_driver vd_drv_quorum = {
    .name = "quorum",
    .kind = VD_DRV_PROTOCOL,
    .state_size = sizeof(quorum_state),
    .open_opts = quorum_open_opts,
    .opt_prefixes = quorum_prefixes,
    .flags = VD_DRV_NO_DIRNAME,
    .open = quorum_open,
    .close = quorum_close,
    .get_length = quorum_get_length,
    .get_allocated_size = quorum_get_allocated_size,
    .pread = quorum_pread,
    .pwrite = quorum_pwrite,
    .pwrite_zeroes = quorum_pwrite_zeroes,
    .flush = quorum_flush,
    .block_status = quorum_block_status,
};
