/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * mlx5vf_pci: the vfio_pci_core variant driver (mlx5vf_pci_main.c) and the
 * PF it reaches its firmware through.
 *
 * The driver is one source for two platforms. mlx5vf_pci_main.c is the
 * vfio_pci_core glue; the migration side (the platform of libmlx5vf_linux,
 * the Rust driver logic, include/mlx5vf.h) is mlx5vf_vfio_mig.c, which
 * mlx5vf_sim shares. Everything they need from the PF goes through
 * mlx5vf_pf_ops, which exactly one of these files defines:
 *   mlx5vf_pf_mlx5.c  production: the VF's PF as mlx5_core drives it;
 *   mlx5vf_pf_sim.c   test: the simulated firmware compiled into the module.
 */
#ifndef MLX5VF_PCI_H
#define MLX5VF_PCI_H

#include <linux/vfio_pci_core.h>

#include "mlx5vf_vfio_mig.h"

/* One VF bound to the driver (the vfio_alloc_device() container). */
struct mlx5vf_pci_dev {
	struct vfio_pci_core_device core;	/* first: vfio_alloc_device() */
	/* Migration is offered: the PF side attached and the probe passed. */
	bool migratable;
	/* The VF's index on its PF (function_id - 1 in firmware commands). */
	u16 vf;
	/* The PF side's state for this VF, owned by mlx5vf_pf_ops. */
	void *pf;
	/* The migration side, its commands through mlx5vf_pf_ops.fw. */
	struct mlx5vf_vfio_dev mig;
};

static inline struct mlx5vf_pci_dev *mlx5vf_pci_of(struct mlx5vf_vfio_dev *mig)
{
	return container_of(mig, struct mlx5vf_pci_dev, mig);
}

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
	 * delivering the PF's SR-IOV events for the VF
	 * (mlx5vf_vfio_vf_event(&vf->mig, ...)).
	 */
	int (*watch)(struct mlx5vf_pci_dev *vf);
	/* Optional: stops them (before the driver's device goes away). */
	void (*unwatch)(struct mlx5vf_pci_dev *vf);
	void (*attach_end)(struct mlx5vf_pci_dev *vf);
	/* Undoes attach (and watch); no command is in flight any more. */
	void (*detach)(struct mlx5vf_pci_dev *vf);
	/* Commands and DMA mapping (mlx5vf_vfio_mig.h). */
	const struct mlx5vf_vfio_fw_ops *fw;
	/* Optional: the function was reset (pci_error_handlers.reset_done). */
	void (*function_reset)(struct mlx5vf_pci_dev *vf);
	/* Optional: the VF's state digest as text (sysfs mlx5vf/digest). */
	int (*digest)(struct mlx5vf_pci_dev *vf, char *buf, size_t len);
	/* Optional: live firmware objects (driver attribute live_objects). */
	void (*accounting)(struct mlx5vf_pf_accounting *acct);
};

/* Defined by the flavour linked into the module. */
extern const struct mlx5vf_pf_ops mlx5vf_pf_ops;

#endif
