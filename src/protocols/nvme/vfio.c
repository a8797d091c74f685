/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * VFIO plumbing for the nvme protocol (Linux VFIO API, type1 IOMMU): the
 * container and group of a PCI function bound to vfio-pci, BAR 0 mapped
 * for register access, bus mastering enabled in the config space, and
 * anonymous memory pinned and mapped at IOVAs from a bump allocator that
 * starts at 64 KiB (as QEMU's util/vfio-helpers.c).  The order of the
 * steps and the first messages follow QEMU's so that a machine without
 * VFIO fails the same way ("Failed to open /dev/vfio/vfio").
 */
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vfio.h"

#define VFIO_IOVA_MIN 0x10000ull

struct vd_vfio_pci {
    int container;
    int group;
    int device;
    volatile uint8_t *bar0;
    size_t bar0_size;
    uint64_t next_iova;
    pthread_mutex_t lock;
};

/* DDDD:BB:SS.F, hexadecimal */
static bool pci_address_valid(const char *s)
{
    static const char pat[] = "hhhh:hh:hh.h";
    if (strlen(s) != sizeof(pat) - 1) {
        return false;
    }
    for (size_t i = 0; pat[i]; i++) {
        if (pat[i] == 'h' ? !isxdigit((unsigned char)s[i]) : s[i] != pat[i]) {
            return false;
        }
    }
    return true;
}

/* The basename of the sysfs link /sys/bus/pci/devices/DEV/NAME, or -errno. */
static int sysfs_link(const char *dev, const char *name, char *out, size_t size)
{
    char path[PATH_MAX], target[PATH_MAX];
    snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/%s", dev, name);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n < 0) {
        return -errno;
    }
    target[n] = '\0';
    const char *base = strrchr(target, '/');
    base = base ? base + 1 : target;
    if (strlen(base) >= size) {
        return -ENAMETOOLONG;
    }
    memcpy(out, base, strlen(base) + 1);
    return 0;
}

void vd_vfio_pci_close(vd_vfio_pci *v)
{
    if (!v) {
        return;
    }
    if (v->bar0) {
        munmap((void *)v->bar0, v->bar0_size);
    }
    if (v->device >= 0) {
        close(v->device);
    }
    if (v->group >= 0) {
        close(v->group);
    }
    if (v->container >= 0) {
        close(v->container);
    }
    pthread_mutex_destroy(&v->lock);
    free(v);
}

int vd_vfio_pci_open(const char *device, vd_vfio_pci **out, vd_error **errp)
{
    vd_vfio_pci *v = calloc(1, sizeof(*v));
    if (!v) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    v->container = v->group = v->device = -1;
    v->next_iova = VFIO_IOVA_MIN;
    pthread_mutex_init(&v->lock, NULL);
    int ret;
    char group_name[64], driver[256], path[PATH_MAX];

    v->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (v->container < 0) {
        ret = vd_error_setg_errno(errp, errno, "Failed to open /dev/vfio/vfio");
        goto fail;
    }
    if (ioctl(v->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
        ret = vd_error_set(errp, EINVAL, "Invalid VFIO version");
        goto fail;
    }
    if (ioctl(v->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0) {
        ret = vd_error_set(errp, ENOTSUP, "VFIO IOMMU Type1 is not supported");
        goto fail;
    }
    if (!pci_address_valid(device)) {
        ret = vd_error_set(errp, EINVAL,
                           "Invalid PCI address '%s' (expected DDDD:BB:SS.F, e.g. 0000:00:04.0)",
                           device);
        goto fail;
    }
    snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s", device);
    if (access(path, F_OK) < 0) {
        ret = vd_error_setg_errno(errp, errno, "PCI device %s does not exist", device);
        goto fail;
    }
    ret = sysfs_link(device, "driver", driver, sizeof(driver));
    if (ret < 0 || strcmp(driver, "vfio-pci") != 0) {
        ret = vd_error_set(errp, ENODEV,
                           "PCI device %s is not bound to vfio-pci (driver: %s); bind it with "
                           "driverctl set-override %s vfio-pci",
                           device, ret < 0 ? "none" : driver, device);
        goto fail;
    }
    ret = sysfs_link(device, "iommu_group", group_name, sizeof(group_name));
    if (ret < 0) {
        ret = vd_error_setg_errno(errp, -ret, "Failed to find iommu group sysfs path of %s",
                                  device);
        goto fail;
    }
    snprintf(path, sizeof(path), "/dev/vfio/%s", group_name);
    v->group = open(path, O_RDWR | O_CLOEXEC);
    if (v->group < 0) {
        ret = vd_error_setg_errno(errp, errno, "Failed to open VFIO group file %s", path);
        goto fail;
    }
    struct vfio_group_status gs = {.argsz = sizeof(gs)};
    if (ioctl(v->group, VFIO_GROUP_GET_STATUS, &gs) < 0) {
        ret = vd_error_setg_errno(errp, errno, "Failed to get VFIO group status");
        goto fail;
    }
    if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        ret = vd_error_set(errp, EINVAL,
                           "VFIO group %s of %s is not viable (bind every device of the "
                           "group to vfio-pci)",
                           group_name, device);
        goto fail;
    }
    if (ioctl(v->group, VFIO_GROUP_SET_CONTAINER, &v->container) < 0) {
        ret = vd_error_setg_errno(errp, errno, "Failed to add group to container");
        goto fail;
    }
    if (ioctl(v->container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0) {
        ret = vd_error_setg_errno(errp, errno, "Failed to set VFIO IOMMU type");
        goto fail;
    }
    v->device = ioctl(v->group, VFIO_GROUP_GET_DEVICE_FD, device);
    if (v->device < 0) {
        ret = vd_error_setg_errno(errp, errno, "Failed to get device fd of %s", device);
        goto fail;
    }
    struct vfio_device_info di = {.argsz = sizeof(di)};
    if (ioctl(v->device, VFIO_DEVICE_GET_INFO, &di) < 0) {
        ret = vd_error_setg_errno(errp, errno, "Failed to get device info");
        goto fail;
    }
    if (di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX) {
        ret = vd_error_set(errp, EINVAL, "Invalid device regions");
        goto fail;
    }
    struct vfio_region_info bar = {.argsz = sizeof(bar), .index = VFIO_PCI_BAR0_REGION_INDEX};
    struct vfio_region_info cfg = {.argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX};
    if (ioctl(v->device, VFIO_DEVICE_GET_REGION_INFO, &bar) < 0 ||
        ioctl(v->device, VFIO_DEVICE_GET_REGION_INFO, &cfg) < 0) {
        ret = vd_error_setg_errno(errp, errno, "Failed to get region info");
        goto fail;
    }
    if (bar.size < 0x2000 || !(bar.flags & VFIO_REGION_INFO_FLAG_MMAP)) {
        ret = vd_error_set(errp, EINVAL, "BAR 0 of %s cannot be mapped (size %llu)", device,
                           (unsigned long long)bar.size);
        goto fail;
    }
    /* memory space and bus master on in the PCI command register */
    uint16_t cmd;
    if (pread(v->device, &cmd, 2, (off_t)cfg.offset + 4) != 2) {
        ret = vd_error_setg_errno(errp, errno, "Failed to read PCI config space");
        goto fail;
    }
    cmd |= 0x6;
    if (pwrite(v->device, &cmd, 2, (off_t)cfg.offset + 4) != 2) {
        ret = vd_error_setg_errno(errp, errno, "Failed to write PCI config space");
        goto fail;
    }
    /* the whole BAR; where the kernel refuses (an MSI-X table inside it
     * that cannot be mapped), the registers and the first doorbell page,
     * which hold the admin and I/O queue doorbells for strides up to 1 KiB */
    size_t map_size = bar.size;
    void *p = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->device,
                   (off_t)bar.offset);
    if (p == MAP_FAILED) {
        map_size = 0x2000;
        p = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->device,
                 (off_t)bar.offset);
    }
    if (p == MAP_FAILED) {
        ret = vd_error_setg_errno(errp, errno, "Failed to map BAR 0 of %s", device);
        goto fail;
    }
    v->bar0 = p;
    v->bar0_size = map_size;
    *out = v;
    return 0;

fail:
    vd_vfio_pci_close(v);
    return ret;
}

static uint32_t vfio_read32(void *opaque, uint32_t off)
{
    vd_vfio_pci *v = opaque;
    if ((size_t)off + 4 > v->bar0_size) {
        return 0xffffffffu;
    }
    return *(volatile uint32_t *)(v->bar0 + off);
}

static void vfio_write32(void *opaque, uint32_t off, uint32_t val)
{
    vd_vfio_pci *v = opaque;
    if ((size_t)off + 4 <= v->bar0_size) {
        *(volatile uint32_t *)(v->bar0 + off) = val;
    }
}

static void *vfio_dma_alloc(void *opaque, size_t size, uint64_t *iova, vd_error **errp)
{
    vd_vfio_pci *v = opaque;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        vd_error_setg_errno(errp, errno, "Failed to allocate DMA memory");
        return NULL;
    }
    pthread_mutex_lock(&v->lock);
    struct vfio_iommu_type1_dma_map map = {
        .argsz = sizeof(map),
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)p,
        .iova = v->next_iova,
        .size = size,
    };
    if (ioctl(v->container, VFIO_IOMMU_MAP_DMA, &map) < 0) {
        int err = errno;
        pthread_mutex_unlock(&v->lock);
        munmap(p, size);
        vd_error_setg_errno(errp, err,
                            "Failed to map DMA memory (%zu bytes; is RLIMIT_MEMLOCK large "
                            "enough?)",
                            size);
        return NULL;
    }
    *iova = v->next_iova;
    v->next_iova += size;
    pthread_mutex_unlock(&v->lock);
    return p;
}

static void vfio_dma_free(void *opaque, void *mem, size_t size, uint64_t iova)
{
    vd_vfio_pci *v = opaque;
    struct vfio_iommu_type1_dma_unmap unmap = {
        .argsz = sizeof(unmap),
        .iova = iova,
        .size = size,
    };
    ioctl(v->container, VFIO_IOMMU_UNMAP_DMA, &unmap);
    munmap(mem, size);
}

static void vfio_idle(void *opaque)
{
    sched_yield();
}

static const vd_nvme_hw_ops vfio_ops = {
    .read32 = vfio_read32,
    .write32 = vfio_write32,
    .dma_alloc = vfio_dma_alloc,
    .dma_free = vfio_dma_free,
    .idle = vfio_idle,
};

void vd_vfio_pci_hw(vd_vfio_pci *v, vd_nvme_hw *hw)
{
    hw->ops = &vfio_ops;
    hw->opaque = v;
}
