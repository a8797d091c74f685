/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The nvme protocol (QEMU 7.2 block/nvme.c): a userspace NVMe driver for a
 * PCI function bound to vfio-pci.  Filenames nvme://DDDD:BB:SS.F/NS (the
 * namespace defaults to 1) or options driver=nvme,device=...,namespace=N.
 *
 * This file is the block driver (options, limits, callbacks); the
 * controller and queue logic is queue.c, the VFIO plumbing vfio.c.
 * See docs/nvme.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "nvme-queue.h"
#include "vfio.h"

typedef struct nvme_state {
    const vd_nvme_transport *transport;
    void *handle;
    vd_nvme_ctrl *ctrl;
    uint64_t length;
} nvme_state;

/* QEMU's nvme_parse_filename: anything else leaves 'device' unset */
static int nvme_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    static const char pref[] = "nvme://";
    size_t n = sizeof(pref) - 1;
    if (strlen(filename) <= n || strncmp(filename, pref, n) != 0) {
        return 0;
    }
    const char *dev = filename + n;
    const char *slash = strchr(dev, '/');
    if (!slash) {
        return vd_opts_set(opts, "device", dev) < 0 ? vd_error_set(errp, ENOMEM, "Out of memory")
                                                   : 0;
    }
    char *d = vd_asprintf("%.*s", (int)(slash - dev), dev);
    if (!d) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    int ret = vd_opts_set(opts, "device", d);
    free(d);
    const char *ns = slash + 1;
    if (*ns) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(ns, &end, 10);
        (void)v;
        if (errno || end == ns || *end) {
            return vd_error_set(errp, EINVAL, "Invalid namespace '%s', positive number expected",
                                ns);
        }
    }
    if (ret == 0) {
        ret = vd_opts_set(opts, "namespace", *ns ? ns : "1");
    }
    return ret < 0 ? vd_error_set(errp, ENOMEM, "Out of memory") : 0;
}

static int vfio_transport_open(const char *device, vd_nvme_hw *hw, void **handle,
                               vd_error **errp)
{
    vd_vfio_pci *v;
    int ret = vd_vfio_pci_open(device, &v, errp);
    if (ret == 0) {
        vd_vfio_pci_hw(v, hw);
        *handle = v;
    }
    return ret;
}

static void vfio_transport_close(void *handle)
{
    vd_vfio_pci_close(handle);
}

static const vd_nvme_transport vfio_transport = {
    .open = vfio_transport_open,
    .close = vfio_transport_close,
};

const vd_nvme_transport *vd_nvme_transport_override;

static void nvme_close(vd_node *bs)
{
    nvme_state *s = bs->opaque;
    vd_nvme_close(s->ctrl);
    s->ctrl = NULL;
    if (s->handle) {
        s->transport->close(s->handle);
        s->handle = NULL;
    }
}

static int nvme_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    nvme_state *s = bs->opaque;
    const char *device = vd_opts_get(opts, "device");
    uint64_t ns;
    if (!device) {
        return vd_error_set(errp, EINVAL, "'device' option is required");
    }
    if (vd_opts_get_u64(opts, "namespace", 1, &ns, errp) < 0) {
        return -EINVAL;
    }
    vd_nvme_hw hw;
    s->transport = vd_nvme_transport_override ? vd_nvme_transport_override : &vfio_transport;
    int ret = s->transport->open(device, &hw, &s->handle, errp);
    if (ret < 0) {
        return ret;
    }
    if (ns == 0 || ns >= 0xffffffffu) {
        nvme_close(bs);
        return vd_error_set(errp, EINVAL, "Invalid namespace %" PRIu64, ns);
    }
    vd_nvme_params p = {.nsid = (uint32_t)ns};
    ret = vd_nvme_open(&hw, &p, &s->ctrl, errp);
    if (ret < 0) {
        vd_error_prepend(errp, "%s: ", device);
        nvme_close(bs);
        return ret;
    }
    const vd_nvme_info *info = vd_nvme_get_info(s->ctrl);
    s->length = info->nblocks * info->block_size;
    bs->request_alignment = info->block_size;
    bs->max_transfer = info->max_transfer;
    bs->pwrite_zeroes_alignment = info->block_size;
    bs->has_zero_init = false;
    bs->supports_fua = true;
    return 0;
}

static int64_t nvme_get_length(vd_node *bs)
{
    nvme_state *s = bs->opaque;
    return (int64_t)s->length;
}

static int64_t nvme_get_allocated_size(vd_node *bs)
{
    return -ENOTSUP;
}

static int nvme_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    nvme_state *s = bs->opaque;
    return vd_nvme_read(s->ctrl, offset, len, buf);
}

static int nvme_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                       unsigned flags)
{
    nvme_state *s = bs->opaque;
    return vd_nvme_write(s->ctrl, offset, len, buf, flags & VD_REQ_FUA);
}

static int nvme_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    nvme_state *s = bs->opaque;
    return vd_nvme_write_zeroes(s->ctrl, offset, len, flags & VD_REQ_MAY_UNMAP,
                                flags & VD_REQ_FUA);
}

static int nvme_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    nvme_state *s = bs->opaque;
    return vd_nvme_discard(s->ctrl, offset, len);
}

static int nvme_flush(vd_node *bs)
{
    nvme_state *s = bs->opaque;
    return vd_nvme_flush(s->ctrl);
}

/* QEMU's nvme_co_truncate: the size is the namespace's */
static int nvme_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                         vd_error **errp)
{
    nvme_state *s = bs->opaque;
    if (prealloc != VD_PREALLOC_OFF) {
        return vd_error_set(errp, ENOTSUP, "Unsupported preallocation mode '%s'",
                            vd_prealloc_name(prealloc));
    }
    if (size != s->length && exact) {
        return vd_error_set(errp, ENOTSUP, "Cannot resize NVMe devices");
    }
    if (size > s->length) {
        return vd_error_set(errp, EINVAL, "Cannot grow NVMe devices");
    }
    return 0;
}

/*
 * QEMU's bdrv_co_create_opts_simple: the namespace must be large enough;
 * its first sector is zeroed so that no old format header is probed later.
 */
static int nvme_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    static const char *const prealloc_names[] = {"off", "metadata", "falloc", "full", NULL};
    uint64_t size;
    int prealloc;
    if (vd_opts_get_size(opts, "size", 0, &size, errp) < 0 ||
        vd_opts_get_enum(opts, "preallocation", prealloc_names, VD_PREALLOC_OFF, &prealloc,
                         errp) < 0) {
        return -EINVAL;
    }
    vd_opts *o = vd_opts_new();
    if (!o || vd_opts_set(o, "driver", "nvme") < 0) {
        vd_opts_free(o);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    vd_error *err = NULL;
    vd_node *bs = vd_node_open(filename, "nvme", o, VD_NODE_RDWR | VD_NODE_RESIZE, &err);
    vd_opts_free(o);
    if (!bs) {
        int e = err ? err->err : EIO;
        vd_error_set(errp, e,
                     "Protocol driver 'nvme' does not support image creation, and opening "
                     "the image failed: %s",
                     err ? err->msg : "error");
        vd_error_free(err);
        return -e;
    }
    int ret = vd_node_truncate(bs, size, false, (vd_prealloc)prealloc, errp);
    if (ret == 0 && size > 0) {
        ret = vd_node_pwrite_zeroes(bs, 0, VD_MIN(size, 512u), VD_REQ_MAY_UNMAP);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Failed to clear the new image's first sector");
        }
    }
    vd_node_close(bs);
    return ret;
}

static const vd_opt_desc nvme_create_opts[] = {
    {"preallocation", VD_OPT_STRING, "Preallocation mode (allowed values: off)", NULL},
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc nvme_open_opts[] = {
    {"device", VD_OPT_STRING, "NVMe PCI device address", NULL},
    {"namespace", VD_OPT_NUMBER, "NVMe namespace", "1"},
    {NULL, 0, NULL, NULL},
};

static const char *const nvme_protocols[] = {"nvme", NULL};

const vd_driver vd_drv_nvme = {
    .name = "nvme",
    .kind = VD_DRV_PROTOCOL,
    .protocols = nvme_protocols,
    .state_size = sizeof(nvme_state),
    .create_opts = nvme_create_opts,
    .open_opts = nvme_open_opts,
    .create = nvme_create,
    .truncate = nvme_truncate,
    .parse_filename = nvme_parse_filename,
    .open = nvme_open,
    .close = nvme_close,
    .get_length = nvme_get_length,
    .get_allocated_size = nvme_get_allocated_size,
    .pread = nvme_pread,
    .pwrite = nvme_pwrite,
    .pwrite_zeroes = nvme_pwrite_zeroes,
    .discard = nvme_discard,
    .flush = nvme_flush,
};
