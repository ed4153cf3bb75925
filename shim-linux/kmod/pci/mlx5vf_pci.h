/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * mlx5vf_pci: the vfio_pci_core variant driver (mlx5vf_pci_main.c) and the
 * PF it reaches its firmware through.
 *
 * The driver is one source for two platforms. mlx5vf_pci_main.c is the
 * vfio_pci_core glue and the platform of libmlx5vf_linux (the Rust driver
 * logic, include/mlx5vf.h); everything it needs from the PF goes through
 * mlx5vf_pf_ops, which exactly one of these files defines:
 *   mlx5vf_pf_mlx5.c  production: the VF's PF as mlx5_core drives it;
 *   mlx5vf_pf_sim.c   test: the simulated firmware compiled into the module.
 */
#ifndef MLX5VF_PCI_H
#define MLX5VF_PCI_H

#include <linux/dma-direction.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/vfio_pci_core.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "mlx5vf.h"

/* A SAVE_VHCA_STATE or LOAD_VHCA_STATE input is 64 bytes; room for growth. */
#define MLX5VF_PCI_ASYNC_IN_MAX 128

/* One VF bound to the driver (the vfio_alloc_device() container). */
struct mlx5vf_pci_dev {
	struct vfio_pci_core_device core;	/* first: vfio_alloc_device() */
	/* The device lock of libmlx5vf_linux (Linux's state_mutex). */
	struct mutex state_mutex;
	/* Readers, retry loops and teardown sleep here (ops->wake). */
	wait_queue_head_t wq;
	/* Migration is offered: the PF side attached and the probe passed. */
	bool migratable;
	/* The VF's index on its PF (function_id - 1 in firmware commands). */
	u16 vf;
	/* The PF side's state for this VF, owned by mlx5vf_pf_ops. */
	void *pf;
	/* Buffer memory held now, and the most held at once (sysfs). */
	atomic64_t buffer_bytes;
	atomic64_t peak_buffer_bytes;
	struct mlx5vf_device mig;
};

/*
 * A buffer the device reads (LOAD) or writes (SAVE): vmalloc'ed pages; while
 * an mkey covers it, mapped for DMA with one device address per page.
 */
struct mlx5vf_pci_buf {
	struct mlx5vf_pci_dev *vf;
	void *mem;
	size_t len;
	u32 npages;
	enum dma_data_direction dir;
	/* How many mkeys cover it; mapped while non-zero. */
	int maps;
	/* npages device addresses, filled by mlx5vf_pf_ops.dma_map. */
	dma_addr_t *dma;
	/* For the PF side's mapping. */
	struct sg_table sgt;
};

/* An asynchronous SAVE or LOAD, from start to the delivery of its completion. */
struct mlx5vf_pci_async {
	struct work_struct work;	/* delivers the completion to the core */
	struct mlx5vf_pci_dev *vf;
	u64 token;
	bool load;
	int status;
	size_t in_len;
	u8 in[MLX5VF_PCI_ASYNC_IN_MAX];
	u8 out[MLX5VF_SAVE_OUT_LEN];
	/* mlx5vf_pf_ops.async_priv_size bytes for the PF side. */
	u8 pf_priv[] __aligned(8);
};

/* Live firmware objects, where the PF side can count them. */
struct mlx5vf_pf_accounting {
	u32 pds;
	u32 mkeys;
	u32 iommu_mappings;
};

/*
 * What the driver needs from the PF. Required unless marked optional. All
 * may sleep except where noted.
 */
struct mlx5vf_pf_ops {
	/* Optional: module load and unload. */
	int (*init)(void);
	void (*exit)(void);
	/*
	 * Finds the PF of vf->core.pdev, checks it can migrate VFs, sets
	 * vf->vf and vf->pf. The PF stays held until attach_end (commands of
	 * the probe run in between). -EOPNOTSUPP: no migration for this
	 * function (it still binds, as plain vfio-pci).
	 */
	int (*attach)(struct mlx5vf_pci_dev *vf);
	/*
	 * Optional: after a successful probe, with the PF held, starts
	 * delivering the PF's SR-IOV events for the VF (mlx5vf_pci_vf_event).
	 */
	int (*watch)(struct mlx5vf_pci_dev *vf);
	/* Optional: stops them (before the driver's device goes away). */
	void (*unwatch)(struct mlx5vf_pci_dev *vf);
	void (*attach_end)(struct mlx5vf_pci_dev *vf);
	/* Undoes attach (and watch); no command is in flight any more. */
	void (*detach)(struct mlx5vf_pci_dev *vf);
	/*
	 * One command, synchronously: 0 when firmware answered, whatever its
	 * status (the core decodes it from out), else a negative errno.
	 */
	int (*exec)(struct mlx5vf_pci_dev *vf, const void *in, size_t in_len, void *out,
		    size_t out_len);
	/*
	 * Starts a->in asynchronously into a->out. On 0 the PF side calls
	 * mlx5vf_pci_async_done() exactly once; on an error, never.
	 */
	int (*exec_async)(struct mlx5vf_pci_async *a);
	size_t async_priv_size;
	/* Maps b for the PF's DMA, filling b->dma[0..npages); unmaps it. */
	int (*dma_map)(struct mlx5vf_pci_buf *b);
	void (*dma_unmap)(struct mlx5vf_pci_buf *b);
	/* Optional: the function was reset (pci_error_handlers.reset_done). */
	void (*function_reset)(struct mlx5vf_pci_dev *vf);
	/* Optional: the VF's state digest as text (sysfs mlx5vf/digest). */
	int (*digest)(struct mlx5vf_pci_dev *vf, char *buf, size_t len);
	/* Optional: live firmware objects (driver attribute live_objects). */
	void (*accounting)(struct mlx5vf_pf_accounting *acct);
};

/* Defined by the flavour linked into the module. */
extern const struct mlx5vf_pf_ops mlx5vf_pf_ops;

/* The PF side's calls into the driver. */

/* An exec_async command ended: status 0 when firmware answered. Any context. */
void mlx5vf_pci_async_done(struct mlx5vf_pci_async *a, int status);
/* The PF disabled (enabled false) or re-enabled the VF. May sleep. */
void mlx5vf_pci_vf_event(struct mlx5vf_pci_dev *vf, bool enabled);

#endif
