/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The map-then-read loop and the copy-on-write of partial clusters shared
 * by the format drivers; the contract is in format-io.h.
 */
#include <stdlib.h>

#include "format-io.h"

/* ------------------------------------------------------------------- read */

int vd_fmt_read(vd_node *bs, uint64_t offset, uint64_t len, void *buf, vd_fmt_map_fn *map,
                void *opaque)
{
    uint8_t *p = buf;

    while (len > 0) {
        vd_fmt_extent ext;
        memset(&ext, 0, sizeof(ext));
        int ret = map(bs, opaque, offset, len, p, &ext);
        if (ret < 0) {
            return ret;
        }
        if (ext.len == 0 || ext.len > len) {
            /* a broken answer must neither loop forever nor overrun buf */
            return -EIO;
        }
        switch (ext.kind) {
        case VD_FMT_MAP_DATA: {
            vd_node *f = ext.file ? ext.file : bs->file;
            vd_node_event(f, VD_EV_READ_AIO);
            ret = vd_node_pread(f, ext.host, ext.len, p, 0);
            break;
        }
            break;
        case VD_FMT_MAP_ZERO:
            memset(p, 0, ext.len);
            break;
        case VD_FMT_MAP_BACKING:
            vd_node_event(bs->file, VD_EV_READ_BACKING_AIO);
            ret = vd_node_read_backing(bs, offset, ext.len, p);
            break;
        case VD_FMT_MAP_FILLED:
            break;
        default:
            ret = -EIO;
            break;
        }
        if (ret < 0) {
            return ret;
        }
        offset += ext.len;
        len -= ext.len;
        p += ext.len;
    }
    return 0;
}

/* ------------------------------------------------------ copy-on-write */

int vd_fmt_cow_backing(void *opaque, uint64_t cluster, uint64_t from, uint64_t to, uint8_t *buf)
{
    vd_node *bs = opaque;
    if (bs->file) {
        vd_node_event(bs->file, VD_EV_COW_READ);
    }
    return vd_node_read_backing(opaque, cluster + from, to - from, buf + from);
}

int vd_fmt_cow_zeroes(void *opaque, uint64_t cluster, uint64_t from, uint64_t to, uint8_t *buf)
{
    (void)opaque;
    (void)cluster;
    memset(buf + from, 0, to - from);
    return 0;
}

/* Head and tail as zeroes written by the file itself, data in between. */
static int cow_write_zeroed(vd_node *file, uint64_t host, uint64_t head, uint64_t len,
                            uint64_t tail, const uint8_t *data)
{
    int ret = head ? vd_node_pwrite_zeroes(file, host, head, 0) : 0;
    if (ret == 0) {
        vd_node_event(file, VD_EV_WRITE_AIO);
        ret = vd_node_pwrite(file, host + head, len, data, 0);
    }
    if (ret == 0 && tail) {
        ret = vd_node_pwrite_zeroes(file, host + head + len, tail, 0);
    }
    return ret;
}

int vd_fmt_cow_write(vd_node *file, uint64_t host, uint64_t cluster_size, uint64_t offset,
                     uint64_t len, const void *data, vd_fmt_cow_read_fn *read_old, void *opaque)
{
    const uint8_t *p = data;
    uint64_t cs = cluster_size;
    uint64_t req_end, end, host_end;

    if (len == 0 || cs == 0 || cs > SIZE_MAX || vd_add_overflow(offset, len, &req_end)) {
        return -EINVAL;
    }
    uint64_t first = offset - offset % cs;
    uint64_t head = offset - first;
    uint64_t tail = req_end % cs ? cs - req_end % cs : 0;
    if (vd_add_overflow(req_end, tail, &end) || vd_add_overflow(host, end - first, &host_end)) {
        return -EINVAL;
    }
    if (!read_old) {
        return cow_write_zeroed(file, host, head, len, tail, p);
    }
    if (!head && !tail) {
        vd_node_event(file, VD_EV_WRITE_AIO);
        return vd_node_pwrite(file, host, len, p, 0);
    }

    uint64_t span = end - first; /* whole clusters */
    /* plain malloc: an aligned allocation per call costs qed/qcow (which
     * write under their lock) heap churn; the core bounce-buffers for
     * O_DIRECT when it must */
    uint8_t *buf = vd_malloc((size_t)cs);
    if (!buf) {
        return -ENOMEM;
    }
    uint64_t pos = 0;  /* bytes of the span written */
    uint64_t done = 0; /* bytes of data written */
    int ret = 0;
    if (head || span == cs) {
        /* the first cluster, composed: head, data, and the tail when the
         * write ends inside this same cluster */
        uint64_t n = VD_MIN(len, cs - head);
        if (head) {
            ret = read_old(opaque, first, 0, head, buf);
        }
        if (ret == 0 && head + n < cs) {
            ret = read_old(opaque, first, head + n, cs, buf);
        }
        if (ret == 0) {
            memcpy(buf + head, p, n);
            vd_node_event(file, VD_EV_COW_WRITE);
            ret = vd_node_pwrite(file, host, cs, buf, 0);
        }
        pos = cs;
        done = n;
    }
    /* whole clusters straight from the caller's buffer */
    uint64_t direct_end = tail ? span - cs : span;
    if (ret == 0 && direct_end > pos) {
        vd_node_event(file, VD_EV_WRITE_AIO);
        ret = vd_node_pwrite(file, host + pos, direct_end - pos, p + done, 0);
        done += direct_end - pos;
        pos = direct_end;
    }
    if (ret == 0 && pos < span) {
        /* the last cluster: the end of the data, then its tail */
        uint64_t n = len - done;
        ret = read_old(opaque, first + pos, n, cs, buf);
        if (ret == 0) {
            memcpy(buf, p + done, n);
            vd_node_event(file, VD_EV_COW_WRITE);
            ret = vd_node_pwrite(file, host + pos, cs, buf, 0);
        }
    }
    free(buf);
    return ret;
}
