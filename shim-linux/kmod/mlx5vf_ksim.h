/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * The simulated firmware compiled into the module (Rust, shim-linux/kmod/rust):
 * one PF with its VFs in static memory. Every call must hold ksim_lock (the
 * module's mutex); a call that finds another inside returns -EBUSY.
 * Device DMA addresses are kernel virtual addresses of vmalloc'ed buffers
 * registered with mlx5vf_ksim_iommu_map().
 */
#ifndef MLX5VF_KSIM_H
#define MLX5VF_KSIM_H

#include <linux/types.h>

struct mlx5vf_ksim_accounting {
	u32 pds;
	u32 mkeys;
	u32 iommu_mappings;
	u32 reserved;
	u64 iommu_bytes;
};

/* Builds the PF from a "sim:..." spec (len bytes): 0 or -EINVAL. */
int mlx5vf_ksim_configure(const char *spec, size_t len);
/* Number of VFs. */
int mlx5vf_ksim_vf_count(void);
/* One firmware command: 0 when firmware answered (any status), -EINVAL. */
int mlx5vf_ksim_exec(const void *in, size_t in_len, void *out, size_t out_len);
/* IOMMU mappings of device-visible memory: 0 or -EINVAL. */
int mlx5vf_ksim_iommu_map(u64 iova, u64 len);
int mlx5vf_ksim_iommu_unmap(u64 iova, u64 len);
/* Function-level reset of a VF (it runs; its sessions end; its state stays). */
int mlx5vf_ksim_reset_vf(u16 vf);
/* The VF's state digest, 64 hex digits and a NUL: 0, -ENODEV, -EINVAL. */
int mlx5vf_ksim_digest(u16 vf, char *out, size_t out_len);
/* Live firmware resources: 0 or -EINVAL. */
int mlx5vf_ksim_accounting(struct mlx5vf_ksim_accounting *out);

#endif
