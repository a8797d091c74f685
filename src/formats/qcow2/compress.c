/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 compressed clusters: deflate (raw stream) and zstd; reading, and
 * writing with a process-wide thread pool.
 *
 * Deflate is written by libdeflate (level 6, as QEMU's Z_DEFAULT_COMPRESSION)
 * and read by zlib.  QEMU deflates with a 4 KiB window (window bits -12)
 * and inflates a whole cluster in one call, where any match distance inside
 * the cluster is valid; libdeflate's matches reach back up to 32 KiB, which
 * QEMU's, zlib's and our one-call inflate all read (docs/performance.md).
 *
 * A multi-cluster vd_pwrite_compressed() compresses its clusters on all
 * cores (the pool's workers plus the calling thread), outside the metadata
 * lock; then, under the lock, the compressed sizes are allocated in cluster
 * order and packed back to back, the data is written, and the L2 entries
 * are set.  Concurrent callers each compress in their own thread too.
 * A cluster that does not compress below one cluster is written normally,
 * as QEMU does.
 */
#include <libdeflate.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "qcow2.h"

/* ------------------------------------------------------------- codecs */

typedef struct codec_tls {
    struct libdeflate_compressor *def;
    z_stream inf;
    bool inf_ok;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
} codec_tls;

static pthread_key_t codec_key;
static pthread_once_t codec_once = PTHREAD_ONCE_INIT;

static void codec_free(void *p)
{
    codec_tls *t = p;
    libdeflate_free_compressor(t->def);
    if (t->inf_ok) {
        inflateEnd(&t->inf);
    }
    ZSTD_freeCCtx(t->cctx);
    ZSTD_freeDCtx(t->dctx);
    free(t);
}

static void codec_key_init(void)
{
    (void)pthread_key_create(&codec_key, codec_free);
}

static codec_tls *codec_get(void)
{
    pthread_once(&codec_once, codec_key_init);
    codec_tls *t = pthread_getspecific(codec_key);
    if (!t) {
        t = calloc(1, sizeof(*t));
        if (t && pthread_setspecific(codec_key, t) != 0) {
            free(t);
            t = NULL;
        }
    }
    return t;
}

ssize_t qcow2_compress(int type, void *dest, size_t dest_size, const void *src,
                       size_t src_size)
{
    codec_tls *t = codec_get();
    if (!t) {
        return -ENOMEM;
    }
    if (type == QCOW2_COMPRESSION_ZSTD) {
        if (!t->cctx && !(t->cctx = ZSTD_createCCtx())) {
            return -ENOMEM;
        }
        ZSTD_CCtx_reset(t->cctx, ZSTD_reset_session_and_parameters);
        /* one frame with the default level and parameters, as QEMU's
         * streamed ZSTD_e_end call writes; the one-shot call compresses
         * straight from the caller's buffer (the streamed one first copies
         * the input into the context's own buffer, a third of the CPU
         * time of convert -c on incompressible data) */
        size_t r = ZSTD_compress2(t->cctx, dest, dest_size, src, src_size);
        if (ZSTD_isError(r)) {
            return -ENOSPC; /* e.g. the output does not fit: store it plainly */
        }
        return (ssize_t)r;
    }
    if (!t->def && !(t->def = libdeflate_alloc_compressor(6))) {
        return -ENOMEM;
    }
    size_t n = libdeflate_deflate_compress(t->def, src, src_size, dest, dest_size);
    return n ? (ssize_t)n : -ENOSPC; /* 0: it does not fit */
}

int qcow2_decompress(int type, void *dest, size_t dest_size, const void *src,
                     size_t src_size)
{
    codec_tls *t = codec_get();
    if (!t) {
        return -ENOMEM;
    }
    if (type == QCOW2_COMPRESSION_ZSTD) {
        if (!t->dctx && !(t->dctx = ZSTD_createDCtx())) {
            return -ENOMEM;
        }
        ZSTD_DCtx_reset(t->dctx, ZSTD_reset_session_only);
        ZSTD_outBuffer out = {dest, dest_size, 0};
        ZSTD_inBuffer in = {src, src_size, 0};
        size_t r = 0;
        /* several frames may make up one cluster; stop when it is full
         * and insist on progress so damaged input cannot loop */
        while (out.pos < out.size) {
            size_t in_pos = in.pos, out_pos = out.pos;
            r = ZSTD_decompressStream(t->dctx, &out, &in);
            if (ZSTD_isError(r)) {
                return -EIO;
            }
            if (in.pos <= in_pos && out.pos <= out_pos) {
                return -EIO;
            }
        }
        return r > 0 ? -EIO : 0;
    }
    if (!t->inf_ok) {
        memset(&t->inf, 0, sizeof(t->inf));
        if (inflateInit2(&t->inf, -12) != Z_OK) {
            return -ENOMEM;
        }
        t->inf_ok = true;
    } else if (inflateReset(&t->inf) != Z_OK) {
        return -EIO;
    }
    t->inf.next_in = (Bytef *)(uintptr_t)src;
    t->inf.avail_in = (uInt)src_size;
    t->inf.next_out = dest;
    t->inf.avail_out = (uInt)dest_size;
    int r = inflate(&t->inf, Z_FINISH);
    /* the stored size is sector granular, so trailing input is normal */
    if ((r == Z_STREAM_END || r == Z_BUF_ERROR) && t->inf.avail_out == 0) {
        return 0;
    }
    return -EIO;
}

void qcow2_parse_compressed(const qcow2_state *s, uint64_t l2_entry, uint64_t *coffset,
                            uint64_t *csize)
{
    uint64_t nb_csectors = ((l2_entry >> s->csize_shift) & s->csize_mask) + 1;
    *coffset = l2_entry & s->cluster_offset_mask;
    *csize = nb_csectors * 512 - (*coffset & 511);
}

int qcow2_read_compressed(qcow2_state *s, uint64_t l2_entry, uint8_t *cluster)
{
    uint64_t coffset, csize;
    qcow2_parse_compressed(s, l2_entry, &coffset, &csize);
    int64_t flen = vd_node_get_length(s->bs->file);
    if (flen < 0) {
        return (int)flen;
    }
    if (coffset >= (uint64_t)flen) {
        return -EIO;
    }
    uint64_t avail = VD_MIN(csize, (uint64_t)flen - coffset);
    uint8_t *buf = malloc(csize);
    if (!buf) {
        return -ENOMEM;
    }
    QCOW2_EVENT(s, READ_COMPRESSED);
    int ret = vd_node_pread(s->bs->file, coffset, avail, buf, 0);
    if (ret == 0) {
        memset(buf + avail, 0, csize - avail);
        ret = qcow2_decompress(s->compression_type, cluster, s->cluster_size, buf, csize);
    }
    free(buf);
    return ret;
}

/* --------------------------------------------------------- thread pool */

typedef struct cjob {
    const uint8_t *src;
    uint8_t *dst;
    size_t size;      /* cluster size: input length and output capacity */
    ssize_t result;
} cjob;

typedef struct cbatch {
    cjob *jobs;
    size_t n;
    size_t next;
    size_t finished;
    int type;
    struct cbatch *link;
} cbatch;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;
    pthread_cond_t done;
    cbatch *queue;
    int nthreads;
    bool started;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          NULL, 0, false};

/* A job of some queued batch (pool lock held), or NULL. */
static cjob *pool_take(cbatch **from)
{
    for (cbatch *b = pool.queue; b; b = b->link) {
        if (b->next < b->n) {
            *from = b;
            return &b->jobs[b->next++];
        }
    }
    return NULL;
}

static void run_job(cjob *j, int type)
{
    /* QEMU keeps a compressed cluster below one cluster */
    j->result = qcow2_compress(type, j->dst, j->size - 1, j->src, j->size);
}

static void *pool_worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        cbatch *b;
        cjob *j = pool_take(&b);
        if (!j) {
            pthread_cond_wait(&pool.work, &pool.lock);
            continue;
        }
        int type = b->type;
        pthread_mutex_unlock(&pool.lock);
        run_job(j, type);
        pthread_mutex_lock(&pool.lock);
        if (++b->finished == b->n) {
            pthread_cond_broadcast(&pool.done);
        }
    }
    return NULL;
}

static void pool_start(void)
{
    /* pool.lock held */
    if (pool.started) {
        return;
    }
    pool.started = true;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int want = ncpu > 1 ? (int)VD_MIN(ncpu - 1, 63) : 0;
    for (int i = 0; i < want; i++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, pool_worker, NULL) == 0) {
            pool.nthreads++;
        }
        pthread_attr_destroy(&attr);
    }
}

/* Compress every job, on the pool and in this thread. */
static void compress_all(cjob *jobs, size_t n, int type)
{
    if (n == 1) {
        run_job(&jobs[0], type);
        return;
    }
    cbatch b = {jobs, n, 0, 0, type, NULL};
    pthread_mutex_lock(&pool.lock);
    pool_start();
    b.link = pool.queue;
    pool.queue = &b;
    pthread_cond_broadcast(&pool.work);
    while (b.next < b.n) {
        cjob *j = &b.jobs[b.next++];
        pthread_mutex_unlock(&pool.lock);
        run_job(j, type);
        pthread_mutex_lock(&pool.lock);
        b.finished++;
    }
    while (b.finished < b.n) {
        pthread_cond_wait(&pool.done, &pool.lock);
    }
    for (cbatch **p = &pool.queue; *p; p = &(*p)->link) {
        if (*p == &b) {
            *p = b.link;
            break;
        }
    }
    pthread_mutex_unlock(&pool.lock);
}

/* ---------------------------------------------------------------- write */

int qcow2_pwrite_compressed(vd_node *bs, uint64_t offset, uint64_t len, const void *buf)
{
    qcow2_state *s = bs->opaque;
    int bm_ret = qcow2_bitmaps_dirty(s, offset, len); /* bitmap.c */
    if (bm_ret < 0) {
        return bm_ret;
    }
    uint64_t cs = s->cluster_size;
    int ret = 0;

    if (qcow2_has_data_file(s)) {
        return -ENOTSUP; /* the specification forbids it (datafile.c) */
    }
    if (len == 0) {
        return 0;
    }
    if (qcow2_offset_into_cluster(s, offset) ||
        (qcow2_offset_into_cluster(s, len) && offset + len != s->size)) {
        return -EINVAL;
    }
    size_t n = (size_t)vd_div_round_up(len, cs);
    cjob *jobs = calloc(n, sizeof(*jobs));
    uint8_t *out = malloc(n * cs);
    uint8_t *last = NULL;
    uint64_t *coff = calloc(n, sizeof(*coff));
    if (!jobs || !out || !coff) {
        ret = -ENOMEM;
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        jobs[i].src = (const uint8_t *)buf + i * cs;
        jobs[i].dst = out + i * cs;
        jobs[i].size = cs;
    }
    if (qcow2_offset_into_cluster(s, len)) {
        /* the image's last, partial cluster is zero padded */
        last = calloc(1, cs);
        if (!last) {
            ret = -ENOMEM;
            goto out_free;
        }
        memcpy(last, jobs[n - 1].src, qcow2_offset_into_cluster(s, len));
        jobs[n - 1].src = last;
    }
    compress_all(jobs, n, s->compression_type);
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].result < 0 && jobs[i].result != -ENOSPC) {
            ret = (int)jobs[i].result;
            goto out_free;
        }
    }

    /* incompressible clusters are written as normal ones, each run of
     * them with one request (random data: a whole chunk at once instead
     * of one allocation and one write per cluster) */
    for (size_t i = 0; i < n;) {
        if (jobs[i].result != -ENOSPC) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < n && jobs[j].result == -ENOSPC) {
            j++;
        }
        uint64_t end = VD_MIN(len, (uint64_t)j * cs);
        ret = qcow2_pwrite(bs, offset + i * cs, end - i * cs, (const uint8_t *)buf + i * cs, 0);
        if (ret < 0) {
            goto out_free;
        }
        i = j;
    }

    pthread_mutex_lock(&s->lock);
    ret = qcow2_begin_metadata_change(s);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        goto out_free;
    }
    qcow2_wait_inflight(s, offset, offset + n * cs);
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].result == -ENOSPC) {
            continue;
        }
        uint64_t *slice;
        uint32_t idx;
        ret = qcow2_get_l2_for_write(s, offset + i * cs, &slice, &idx);
        if (ret < 0) {
            break;
        }
        uint64_t e = qcow2_l2_entry(s, slice, idx); /* either entry size */
        vd_cache_put(s->l2_cache, (void **)&slice);
        if (e & L2E_OFFSET_MASK) {
            /* compression cannot overwrite anything (as in QEMU) */
            ret = -EIO;
            break;
        }
        int64_t a = qcow2_alloc_bytes(s, (uint32_t)jobs[i].result);
        if (a < 0) {
            ret = (int)a;
            break;
        }
        coff[i] = (uint64_t)a;
        done = i + 1;
        if (coff[i] + (uint64_t)jobs[i].result > s->cluster_offset_mask) {
            ret = -EFBIG;
            break;
        }
        ret = qcow2_pre_write_overlap_check(s, 0, coff[i], (uint64_t)jobs[i].result);
        if (ret < 0) {
            break;
        }
    }
    if (ret < 0) {
        for (size_t i = 0; i < done; i++) {
            if (coff[i]) {
                qcow2_free_clusters(s, coff[i], (uint64_t)jobs[i].result, QCOW2_DISCARD_NEVER);
            }
        }
        pthread_mutex_unlock(&s->lock);
        goto out_free;
    }
    qcow2_inflight f;
    qcow2_inflight_add(s, &f, offset, offset + n * cs);
    pthread_mutex_unlock(&s->lock);

    /* write runs of back-to-back compressed clusters at once */
    for (size_t i = 0; i < n && ret == 0;) {
        if (jobs[i].result == -ENOSPC) {
            i++;
            continue;
        }
        size_t j = i + 1;
        uint64_t total = (uint64_t)jobs[i].result;
        while (j < n && jobs[j].result >= 0 && coff[j] == coff[i] + total) {
            total += (uint64_t)jobs[j].result;
            j++;
        }
        QCOW2_EVENT(s, WRITE_COMPRESSED);
        if (j == i + 1) {
            ret = vd_node_pwrite(bs->file, coff[i], total, jobs[i].dst, 0);
        } else {
            uint8_t *stage = malloc(total);
            if (!stage) {
                ret = -ENOMEM;
                break;
            }
            uint64_t p = 0;
            for (size_t k = i; k < j; k++) {
                memcpy(stage + p, jobs[k].dst, (size_t)jobs[k].result);
                p += (uint64_t)jobs[k].result;
            }
            ret = vd_node_pwrite(bs->file, coff[i], total, stage, 0);
            free(stage);
        }
        i = j;
    }

    pthread_mutex_lock(&s->lock);
    if (ret == 0 && s->broken) {
        ret = -EIO;
    }
    for (size_t i = 0; i < n && ret == 0; i++) {
        if (jobs[i].result == -ENOSPC) {
            continue;
        }
        uint64_t *slice;
        uint32_t idx;
        ret = qcow2_get_l2_for_write(s, offset + i * cs, &slice, &idx);
        if (ret < 0) {
            break;
        }
        if (!s->use_lazy_refcounts) {
            ret = vd_cache_set_dependency(s->l2_cache, s->refcount_cache);
        }
        if (ret == 0) {
            uint64_t size = (uint64_t)jobs[i].result;
            uint64_t nb_csectors = ((coff[i] + size - 1) >> 9) - (coff[i] >> 9);
            uint64_t e = coff[i] | QCOW_OFLAG_COMPRESSED | (nb_csectors << s->csize_shift);
            qcow2_l2_entry_set(s, slice, idx, e);
            if (s->extended_l2) {
                vd_st_be64(&slice[2 * idx + 1], 0); /* no subcluster bits */
            }
            QCOW2_EVENT(s, L2_UPDATE_COMPRESSED);
            vd_cache_mark_dirty(s->l2_cache, slice);
            s->data_unflushed = true; /* the data goes to disk before this entry */
            coff[i] = 0; /* linked: no longer ours to free */
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
    }
    if (ret < 0) {
        for (size_t i = 0; i < n; i++) {
            if (coff[i] && jobs[i].result >= 0) {
                qcow2_free_clusters(s, coff[i], (uint64_t)jobs[i].result, QCOW2_DISCARD_NEVER);
            }
        }
    }
    qcow2_inflight_remove(s, &f);
    pthread_mutex_unlock(&s->lock);

out_free:
    free(jobs);
    free(out);
    free(last);
    free(coff);
    return ret;
}
