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

/*
 * The page tracker (rust/src/tracker.rs). One per PF, as the model has: one
 * VF tracks at a time; the guest and its ground truth are the PF's.
 */
/* The reporting channel over mkey: 0 (fw QP number in *qpn) or -EINVAL. */
int mlx5vf_ksim_tracker_open(u32 mkey, u32 msg_size, u32 slots, u32 *qpn);
/* One firmware step: MLX5VF_REPORT_CQE (CQE in cqe, 64 bytes),
 * MLX5VF_REPORT_OBJECT_CHANGED, MLX5VF_REPORT_TIMED_OUT (nothing), -errno. */
int mlx5vf_ksim_tracker_poll(u8 *cqe);
int mlx5vf_ksim_tracker_repost(void);
int mlx5vf_ksim_tracker_close(void);
/* 0 TRACKING, 1 REPORTING, 2 ERROR, -1 no tracker. */
int mlx5vf_ksim_tracker_state(void);
/* 1 while a reporting channel is open, else 0. */
int mlx5vf_ksim_tracker_channel_open(void);
/* kind 0 none, 1 ERROR with a report, 2 ERROR without, 3 silence; after messages. */
int mlx5vf_ksim_tracker_fault(u32 kind, u64 after);
/* Limits for the next CREATE: 0 or -EINVAL. */
int mlx5vf_ksim_tracker_config(u8 max_ranges, u8 log_min_page, u8 log_max_page, u8 log_msg,
			       bool end_marker);
/* The guest's device writes pages guest pages chosen from seed. */
int mlx5vf_ksim_guest_dma(u64 pages, u64 seed);
/* Guest memory in 4 KiB pages. */
int mlx5vf_ksim_guest_pages(void);
/* Takes and clears the ground truth into out (words u64s, bit i = page i):
 * the pages set, or -EINVAL. */
int mlx5vf_ksim_guest_truth(u64 *out, size_t words);
/* The tracker object's ranges and page size: 0, or -1 without an object. */
int mlx5vf_ksim_tracker_object(u32 *ranges, u64 *page_size);
int mlx5vf_ksim_tracker_stats(u64 *messages, u64 *addresses, u64 *guest_writes);

#endif
