/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * The simulated firmware (mlx5vf_ksim.h) as the firmware of a module
 * (mlx5vf_simfw.c): mlx5vf_sim and mlx5vf_pci_test link it. Every call
 * takes the one lock the simulated firmware needs around it.
 */
#ifndef MLX5VF_SIMFW_H
#define MLX5VF_SIMFW_H

#include "mlx5vf_ksim.h"
#include "mlx5vf_vfio_mig.h"

/*
 * Commands run by the simulated firmware; SAVE and LOAD on a work item
 * (each SAVE save_delay_us late, a module parameter). DMA addresses are
 * kernel virtual addresses of the buffers, registered with the simulated
 * IOMMU while mapped: the firmware refuses any other.
 */
extern const struct mlx5vf_vfio_fw_ops mlx5vf_simfw_ops;

/* Builds the PF from a "sim:..." spec: its number of VFs, or -errno. */
int mlx5vf_simfw_init(const char *spec);
void mlx5vf_simfw_exit(void);
/* Function-level reset of a VF (it runs; its sessions end; its state stays). */
void mlx5vf_simfw_reset_vf(u16 vf);
/* The VF's state digest as text (64 hex digits): 0 or -errno. */
int mlx5vf_simfw_digest(u16 vf, char *buf, size_t len);
/* Live firmware resources. */
void mlx5vf_simfw_accounting(struct mlx5vf_ksim_accounting *acct);
/*
 * Any mlx5vf_ksim_* call under the simulated firmware's lock (the page
 * tracker's debugfs files): call(arg)'s result.
 */
int mlx5vf_simfw_locked(int (*call)(void *arg), void *arg);

#endif
