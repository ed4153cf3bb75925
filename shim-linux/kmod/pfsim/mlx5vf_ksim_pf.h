/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * The register-level PF model compiled into the module (Rust,
 * shim-linux/kmod/rust/src/pf.rs): up to mlx5vf_ksim_pf_max() PFs in static
 * memory, each named by its index. Every call for one PF must hold that
 * device's mutex; a call that finds another inside returns -EBUSY.
 */
#ifndef MLX5VF_KSIM_PF_H
#define MLX5VF_KSIM_PF_H

#include <linux/types.h>

/* How the model reaches user memory: every access goes through bounce. */
struct mlx5vf_ksim_pf_dma {
	void *ctx;
	u8 *bounce;
	size_t bounce_len;
	/* Copies len bytes between buf and iova (write: to iova): 0 or -errno. */
	int (*rw)(void *ctx, u64 iova, u8 *buf, size_t len, bool write);
};

/* What a pending slot holds (slow: SAVE or LOAD). */
struct mlx5vf_ksim_pf_slot {
	u32 opcode;
	u32 slow;
	u64 inlen;
	u64 outlen;
};

struct mlx5vf_ksim_pf_status {
	u32 vfs;
	u32 enabled;
	u32 initialized;
	u32 fw_pages;
	u32 pds;
	u32 mkeys;
	u32 iommu_mappings;
	u32 reserved;
	u64 commands;
	u64 delivery_errors;
	u64 spurious_doorbells;
	u64 dma_faults;
};

int mlx5vf_ksim_pf_max(void);
/* PF index from a "sim:..." spec (its VFs' seeds moved by index): 0 or -EINVAL. */
int mlx5vf_ksim_pf_configure(u32 index, const char *spec, size_t len);
/* A function-level reset: queue, lifecycle, pages, PDs, mkeys go; VF states stay. */
int mlx5vf_ksim_pf_reset(u32 index);
/* A function-level reset of one VF: it runs, its sessions end, its state stays. */
int mlx5vf_ksim_pf_reset_vf(u32 index, u16 vf);
/* Opens or closes the firmware's IOMMU window (vfio_dma_rw() decides). */
int mlx5vf_ksim_pf_attach_iommu(u32 index, bool attach);
int mlx5vf_ksim_pf_read32(u32 index, u32 offset, u32 *value);
/* rung: the slots whose doorbell rang, to run with mlx5vf_ksim_pf_execute(). */
int mlx5vf_ksim_pf_write32(u32 index, u32 offset, u32 value, u32 *rung);
/* 1 (info filled) when the slot's entry is owned by hardware, else 0 or -errno. */
int mlx5vf_ksim_pf_peek(u32 index, u8 slot, const struct mlx5vf_ksim_pf_dma *dma,
			struct mlx5vf_ksim_pf_slot *info);
/* 1 when the entry was handed back, 0 when firmware keeps it, or -errno. */
int mlx5vf_ksim_pf_execute(u32 index, u8 slot, const struct mlx5vf_ksim_pf_dma *dma,
			   u8 *in, size_t in_len, u8 *out, size_t out_len);
/* The next command of opcode op (U32_MAX: any) is never handed back. */
int mlx5vf_ksim_pf_arm_stuck(u32 index, u32 op);
/* VF vf's state digest, 64 hex digits and a NUL: 0, -ENODEV, -EINVAL. */
int mlx5vf_ksim_pf_digest(u32 index, u16 vf, char *out, size_t out_len);
int mlx5vf_ksim_pf_status(u32 index, struct mlx5vf_ksim_pf_status *out);

#endif
