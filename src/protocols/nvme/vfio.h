/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * A PCI function bound to vfio-pci, as the transport of the NVMe queue
 * logic: BAR 0 mapped, bus mastering on, DMA memory mapped through the
 * VFIO type1 IOMMU.
 */
#ifndef VD_NVME_VFIO_H
#define VD_NVME_VFIO_H

#include "nvme-queue.h"

typedef struct vd_vfio_pci vd_vfio_pci;

/* device: a PCI address DDDD:BB:SS.F.  Messages name the address. */
int vd_vfio_pci_open(const char *device, vd_vfio_pci **out, vd_error **errp);
void vd_vfio_pci_close(vd_vfio_pci *v);
/* The ops for vd_nvme_open over this function. */
void vd_vfio_pci_hw(vd_vfio_pci *v, vd_nvme_hw *hw);

#endif
