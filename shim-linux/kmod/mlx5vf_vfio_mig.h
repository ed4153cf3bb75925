/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * The VFIO migration side every module shares (mlx5vf_vfio_mig.c): the
 * platform of libmlx5vf_linux (buffers, the device lock and its waits, the
 * delivery of asynchronous completions), the migration data file and the
 * vfio_migration_ops.
 *
 * A module embeds one struct mlx5vf_vfio_dev in each of its VFIO devices
 * and supplies what differs between modules:
 *   - how commands reach firmware and buffers reach the device
 *     (struct mlx5vf_vfio_fw_ops): the simulated firmware in mlx5vf_sim and
 *     mlx5vf_pci_test (mlx5vf_simfw.c), the PF's command interface in
 *     mlx5vf_pci (pci/mlx5vf_pf_mlx5.c);
 *   - how a vfio_device leads to its struct mlx5vf_vfio_dev
 *     (mlx5vf_vfio_dev_of(), defined by the module).
 */
#ifndef MLX5VF_VFIO_MIG_H
#define MLX5VF_VFIO_MIG_H

#include <linux/atomic.h>
#include <linux/dma-direction.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/vfio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "mlx5vf.h"

/* A SAVE_VHCA_STATE or LOAD_VHCA_STATE input is 64 bytes; room for growth. */
#define MLX5VF_VFIO_ASYNC_IN_MAX 128

struct mlx5vf_vfio_fw_ops;

/*
 * The page tracker's reporting channel of one device (platform report_*):
 * a receive buffer of slots * msg_size bytes under one mkey of its own PD,
 * and the firmware side's channel over it.
 */
struct mlx5vf_vfio_channel {
	bool open;
	u64 buf;	/* struct mlx5vf_vfio_buf *, as the library's handle */
	u32 pd;
	u32 mkey;
	u32 msg_size;
	u32 slots;
};

/* The migration side of one VFIO device. */
struct mlx5vf_vfio_dev {
	struct vfio_device *vdev;
	const struct mlx5vf_vfio_fw_ops *fw;
	/* The device lock of libmlx5vf_linux (Linux's state_mutex). */
	struct mutex state_mutex;
	/* Readers, retry loops and teardown sleep here (ops->wake). */
	wait_queue_head_t wq;
	/* Buffer memory held now, and the most held at once (sysfs). */
	atomic64_t buffer_bytes;
	atomic64_t peak_buffer_bytes;
	struct mlx5vf_device mig;
	/* DMA logging (vfio_log_ops), under state_mutex. */
	struct mlx5vf_dirty dirty;
	struct mlx5vf_vfio_channel channel;
};

/*
 * A buffer the device reads (LOAD) or writes (SAVE): vmalloc'ed pages; while
 * an mkey covers it, mapped for DMA with one device address per page.
 */
struct mlx5vf_vfio_buf {
	struct mlx5vf_vfio_dev *dev;
	void *mem;
	size_t len;
	u32 npages;
	enum dma_data_direction dir;
	/* How many mkeys cover it; mapped while non-zero. */
	int maps;
	/* npages device addresses, filled by mlx5vf_vfio_fw_ops.dma_map. */
	dma_addr_t *dma;
	/* For the firmware side's mapping. */
	struct sg_table sgt;
};

/* An asynchronous SAVE or LOAD, from start to the delivery of its completion. */
struct mlx5vf_vfio_async {
	struct work_struct work;	/* delivers the completion to the core */
	struct mlx5vf_vfio_dev *dev;
	u64 token;
	bool load;
	int status;
	size_t in_len;
	u8 in[MLX5VF_VFIO_ASYNC_IN_MAX];
	u8 out[MLX5VF_SAVE_OUT_LEN];
	/* mlx5vf_vfio_fw_ops.async_priv_size bytes for the firmware side. */
	u8 fw_priv[] __aligned(8);
};

/* How commands reach firmware and buffers the device. All may sleep. */
struct mlx5vf_vfio_fw_ops {
	/*
	 * One command, synchronously: 0 when firmware answered, whatever its
	 * status (the core decodes it from out), else a negative errno.
	 */
	int (*exec)(struct mlx5vf_vfio_dev *dev, const void *in, size_t in_len, void *out,
		    size_t out_len);
	/*
	 * Starts a->in asynchronously into a->out. On 0 the firmware side
	 * calls mlx5vf_vfio_async_done() exactly once; on an error, never.
	 */
	int (*exec_async)(struct mlx5vf_vfio_async *a);
	size_t async_priv_size;
	/* Maps b for the device's DMA, filling b->dma[0..npages); unmaps it. */
	int (*dma_map)(struct mlx5vf_vfio_buf *b);
	void (*dma_unmap)(struct mlx5vf_vfio_buf *b);
	/*
	 * Optional, all or none (NULL: the device offers no DMA logging): the
	 * firmware side of the page tracker's reporting channel. The glue owns
	 * the receive buffer (slots * msg_size bytes, its PD and mkey) and
	 * reads messages out of it; these open the channel over mkey (writing
	 * the firmware QP number), take one step (MLX5VF_REPORT_CQE with the
	 * CQE in cqe, MLX5VF_REPORT_OBJECT_CHANGED, MLX5VF_REPORT_TIMED_OUT
	 * for "nothing yet": the glue polls again until its deadline, or a
	 * negative errno), re-post a slot and close it. Device lock held.
	 */
	int (*report_open)(struct mlx5vf_vfio_dev *dev, u32 mkey, u32 msg_size, u32 slots,
			   u32 *fw_qpn);
	int (*report_poll)(struct mlx5vf_vfio_dev *dev, u8 *cqe);
	int (*report_repost)(struct mlx5vf_vfio_dev *dev, u32 slot);
	void (*report_close)(struct mlx5vf_vfio_dev *dev);
};

/* Defined by the module: the migration side of one of its VFIO devices. */
struct mlx5vf_vfio_dev *mlx5vf_vfio_dev_of(struct vfio_device *vdev);

/* Module-wide live objects: all zero when nothing is set up, open or in flight. */
struct mlx5vf_vfio_live {
	int devices;	/* probed and not yet torn down */
	int buffers;
	s64 buffer_bytes;
	int files;
	int async;	/* SAVEs and LOADs in flight */
	int channels;	/* reporting channels open (DMA logging running) */
};

/* Module load and unload (the completions' workqueue). */
int mlx5vf_vfio_init(void);
void mlx5vf_vfio_exit(void);
void mlx5vf_vfio_get_live(struct mlx5vf_vfio_live *live);

/* The lock and the wait queue; before anything else. */
void mlx5vf_vfio_dev_init(struct mlx5vf_vfio_dev *dev, struct vfio_device *vdev,
			  const struct mlx5vf_vfio_fw_ops *fw);
void mlx5vf_vfio_dev_destroy(struct mlx5vf_vfio_dev *dev);
/*
 * The core's device for VF vf (its index on the PF), probed with the module
 * parameters chunk_size and chunk_slots: 0 or, with nothing left set up, a
 * negative errno (-EOPNOTSUPP: the firmware offers no migration).
 */
int mlx5vf_vfio_dev_probe(struct mlx5vf_vfio_dev *dev, u16 vf);
/* Undoes the probe once no SAVE or LOAD is in flight. */
void mlx5vf_vfio_dev_fini(struct mlx5vf_vfio_dev *dev);
/*
 * After the probe: the VFIO device offers migration (flags and ops), and
 * DMA logging (vfio_log_ops) when the firmware side has a reporting channel
 * and the kernel has CONFIG_IOMMUFD_DRIVER (without it the VFIO core's
 * iova_bitmap helpers are stubs: no report could reach the caller).
 */
void mlx5vf_vfio_dev_offer(struct mlx5vf_vfio_dev *dev);

/* The VFIO device was opened (after its reset) or closed (logging ends). */
void mlx5vf_vfio_open(struct mlx5vf_vfio_dev *dev);
void mlx5vf_vfio_close(struct mlx5vf_vfio_dev *dev);
/*
 * The function was reset: RUNNING, both files end (maybe deferred). Takes
 * no blocking lock (a PCI reset_done may run while a lock holder faults).
 */
void mlx5vf_vfio_reset_done(struct mlx5vf_vfio_dev *dev);
/*
 * Ends DMA logging (the tracker, its channel and buffer); takes the device
 * lock. For resets issued where blocking on it is safe.
 */
void mlx5vf_vfio_log_end(struct mlx5vf_vfio_dev *dev);
/* The PF disabled (enabled false) or re-enabled the VF. May sleep. */
void mlx5vf_vfio_vf_event(struct mlx5vf_vfio_dev *dev, bool enabled);
/* An exec_async command ended: status 0 when firmware answered. Any context. */
void mlx5vf_vfio_async_done(struct mlx5vf_vfio_async *a, int status);

#endif
