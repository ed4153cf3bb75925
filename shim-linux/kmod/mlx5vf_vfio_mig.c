// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * The VFIO migration side of mlx5vf_sim, mlx5vf_pci and mlx5vf_pci_test
 * (mlx5vf_vfio_mig.h): what a driver writes around libmlx5vf_linux (Rust,
 * include/mlx5vf.h) whatever its firmware, once. The platform callbacks
 * (buffers, mkeys, copies, the device lock and its wake-ups, asynchronous
 * commands and the delivery of their completions), the migration data
 * file's file_operations, the vfio_migration_ops, the vfio_log_ops (DMA
 * logging, with the page tracker's reporting channel), and the device's
 * setup and teardown. Commands and DMA mapping go through the module's
 * struct mlx5vf_vfio_fw_ops.
 *
 * Module parameters (of whichever module links this file): chunk_size and
 * chunk_slots, the driver's chunk policy (0 = Linux's) to start with;
 * memory_cap, the chunk buffer memory per side the size may then be tuned
 * within (from the firmware's measured latency and rate; 0 = 64 MiB); and
 * fixed_chunks, to keep chunk_size whatever the firmware's speed.
 */
#include <linux/anon_inodes.h>
#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/interval_tree.h>
#include <linux/iova_bitmap.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>
#include <linux/vmalloc.h>
#include <linux/unaligned.h>

#include "mlx5vf_vfio_mig.h"

static unsigned long chunk_size;
module_param(chunk_size, ulong, 0444);
MODULE_PARM_DESC(chunk_size, "chunk buffer size in bytes (0: 8 MiB, as Linux)");
static unsigned int chunk_slots;
module_param(chunk_slots, uint, 0444);
MODULE_PARM_DESC(chunk_slots, "chunk slots (0: 2, as Linux)");
static unsigned long memory_cap;
module_param(memory_cap, ulong, 0444);
MODULE_PARM_DESC(memory_cap, "chunk buffer bytes per side the tuned chunk size stays within (0: 64 MiB)");
static bool fixed_chunks;
module_param(fixed_chunks, bool, 0444);
MODULE_PARM_DESC(fixed_chunks, "keep chunk_size instead of tuning it to the firmware's speed");

/* Delivers asynchronous completions (they need the device lock). */
static struct workqueue_struct *deliver_wq;

static atomic_t live_devices = ATOMIC_INIT(0);
static atomic_t live_buffers = ATOMIC_INIT(0);
static atomic64_t live_buffer_bytes = ATOMIC64_INIT(0);
static atomic_t live_files = ATOMIC_INIT(0);
static atomic_t live_async = ATOMIC_INIT(0);
static atomic_t live_channels = ATOMIC_INIT(0);

int mlx5vf_vfio_init(void)
{
	deliver_wq = alloc_workqueue(KBUILD_MODNAME, WQ_UNBOUND, 0);
	return deliver_wq ? 0 : -ENOMEM;
}

void mlx5vf_vfio_exit(void)
{
	destroy_workqueue(deliver_wq);
}

void mlx5vf_vfio_get_live(struct mlx5vf_vfio_live *live)
{
	live->devices = atomic_read(&live_devices);
	live->buffers = atomic_read(&live_buffers);
	live->buffer_bytes = atomic64_read(&live_buffer_bytes);
	live->files = atomic_read(&live_files);
	live->async = atomic_read(&live_async);
	live->channels = atomic_read(&live_channels);
}

/* ------------------------------------------------------------------------ */
/* The platform of libmlx5vf_linux */

static int op_exec(void *ctx, const void *in, size_t in_len, void *out, size_t out_len)
{
	struct mlx5vf_vfio_dev *dev = ctx;

	return dev->fw->exec(dev, in, in_len, out, out_len);
}

static void async_deliver(struct work_struct *work)
{
	struct mlx5vf_vfio_async *a = container_of(work, struct mlx5vf_vfio_async, work);
	struct mlx5vf_vfio_dev *dev = a->dev;
	int ret;

	mlx5vf_lock(&dev->mig);
	if (a->load)
		ret = mlx5vf_load_complete(&dev->mig, a->token, a->status, a->out, sizeof(a->out));
	else
		ret = mlx5vf_save_complete(&dev->mig, a->token, a->status, a->out, sizeof(a->out));
	mlx5vf_unlock(&dev->mig);
	WARN_ONCE(ret, KBUILD_MODNAME ": %s completion refused: %d\n", a->load ? "LOAD" : "SAVE",
		  ret);
	kfree(a);
	atomic_dec(&live_async);
}

void mlx5vf_vfio_async_done(struct mlx5vf_vfio_async *a, int status)
{
	a->status = status;
	queue_work(deliver_wq, &a->work);
}

static int start_async(struct mlx5vf_vfio_dev *dev, const void *in, size_t in_len, u64 token,
		       bool load)
{
	struct mlx5vf_vfio_async *a;
	int ret;

	if (in_len > MLX5VF_VFIO_ASYNC_IN_MAX)
		return -EINVAL;
	a = kzalloc(struct_size(a, fw_priv, dev->fw->async_priv_size), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	INIT_WORK(&a->work, async_deliver);
	a->dev = dev;
	a->token = token;
	a->load = load;
	a->in_len = in_len;
	memcpy(a->in, in, in_len);
	atomic_inc(&live_async);
	ret = dev->fw->exec_async(a);
	if (ret) {
		atomic_dec(&live_async);
		kfree(a);
	}
	return ret;
}

static int op_start_save(void *ctx, const void *in, size_t in_len, uint64_t token)
{
	return start_async(ctx, in, in_len, token, false);
}

/* LOADs run asynchronously too: image k+1 arrives while image k LOADs. */
static int op_start_load(void *ctx, const void *in, size_t in_len, uint64_t token)
{
	return start_async(ctx, in, in_len, token, true);
}

static struct mlx5vf_vfio_buf *to_buf(uint64_t buffer)
{
	return (struct mlx5vf_vfio_buf *)(uintptr_t)buffer;
}

static int op_alloc_buffer(void *ctx, uint32_t npages, uint32_t dir, uint64_t *buffer)
{
	struct mlx5vf_vfio_buf *b;
	s64 now, peak;

	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	b->dev = ctx;
	b->npages = npages;
	b->len = (size_t)npages * MLX5VF_PAGE_SIZE;
	b->dir = dir == MLX5VF_DMA_TO_DEVICE ? DMA_TO_DEVICE : DMA_FROM_DEVICE;
	b->mem = vzalloc(b->len);
	b->dma = kvcalloc(npages, sizeof(*b->dma), GFP_KERNEL);
	if (!b->mem || !b->dma) {
		kvfree(b->dma);
		vfree(b->mem);
		kfree(b);
		return -ENOMEM;
	}
	atomic_inc(&live_buffers);
	atomic64_add(b->len, &live_buffer_bytes);
	now = atomic64_add_return(b->len, &b->dev->buffer_bytes);
	peak = atomic64_read(&b->dev->peak_buffer_bytes);
	while (now > peak && !atomic64_try_cmpxchg(&b->dev->peak_buffer_bytes, &peak, now))
		;
	*buffer = (uint64_t)(uintptr_t)b;
	return 0;
}

static void unmap_bufs(const uint64_t *buffers, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++) {
		struct mlx5vf_vfio_buf *b = to_buf(buffers[i]);

		if (--b->maps == 0)
			b->dev->fw->dma_unmap(b);
	}
}

static int op_map_buffers(void *ctx, uint32_t pd, const uint64_t *buffers, size_t count,
			  uint32_t *mkey)
{
	struct mlx5vf_vfio_dev *dev = ctx;
	u8 out[MLX5VF_CREATE_MKEY_OUT_LEN];
	size_t i, mapped, npages = 0, n = 0;
	u64 *pages = NULL;
	void *in = NULL;
	int64_t in_len;
	int ret = 0;

	for (mapped = 0; mapped < count; mapped++) {
		struct mlx5vf_vfio_buf *b = to_buf(buffers[mapped]);

		if (b->maps++ == 0) {
			ret = dev->fw->dma_map(b);
			if (ret) {
				b->maps--;
				goto unmap;
			}
		}
		npages += b->npages;
	}
	ret = -EINVAL;
	if (npages > U32_MAX)
		goto unmap;
	ret = -ENOMEM;
	pages = kvmalloc_array(npages, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		goto unmap;
	for (i = 0; i < count; i++) {
		struct mlx5vf_vfio_buf *b = to_buf(buffers[i]);
		u32 k;

		for (k = 0; k < b->npages; k++)
			pages[n++] = b->dma[k];
	}
	in_len = mlx5vf_create_mkey_in_len(npages);
	if (in_len < 0) {
		ret = in_len;
		goto unmap;
	}
	in = kvzalloc(in_len, GFP_KERNEL);
	if (!in)
		goto unmap;
	in_len = mlx5vf_encode_create_mkey(in, in_len, pd, pages, npages);
	if (in_len < 0) {
		ret = in_len;
		goto unmap;
	}
	ret = dev->fw->exec(dev, in, in_len, out, sizeof(out));
	if (!ret)
		ret = mlx5vf_decode_create_mkey(out, sizeof(out), mkey);
	if (!ret)
		goto out;
unmap:
	unmap_bufs(buffers, mapped);
out:
	kvfree(in);
	kvfree(pages);
	return ret;
}

static int op_unmap_buffers(void *ctx, uint32_t mkey, const uint64_t *buffers, size_t count)
{
	struct mlx5vf_vfio_dev *dev = ctx;
	u8 in[MLX5VF_DESTROY_MKEY_IN_LEN], out[MLX5VF_DESTROY_MKEY_OUT_LEN];
	int ret = mlx5vf_encode_destroy_mkey(in, sizeof(in), mkey);

	if (ret >= 0)
		ret = dev->fw->exec(dev, in, ret, out, sizeof(out));
	if (!ret)
		ret = mlx5vf_decode_destroy_mkey(out, sizeof(out));
	unmap_bufs(buffers, count);
	return ret;
}

static void op_free_buffer(void *ctx, uint64_t buffer)
{
	struct mlx5vf_vfio_buf *b = to_buf(buffer);

	WARN_ON(b->maps);
	atomic64_sub(b->len, &b->dev->buffer_bytes);
	atomic64_sub(b->len, &live_buffer_bytes);
	atomic_dec(&live_buffers);
	kvfree(b->dma);
	vfree(b->mem);
	kfree(b);
}

static bool in_buf(struct mlx5vf_vfio_buf *b, uint64_t offset, uint64_t len)
{
	return !WARN_ON_ONCE(offset > b->len || len > b->len - offset);
}

static uint32_t op_crc32c(void *ctx, uint64_t buffer, uint64_t offset, uint64_t len, uint32_t crc)
{
	struct mlx5vf_vfio_buf *b = to_buf(buffer);

	if (!in_buf(b, offset, len))
		return crc;
	return mlx5vf_crc32c(crc, (u8 *)b->mem + offset, len);
}

static int64_t op_buffer_to_user(void *ctx, mlx5vf_uptr user_dst, uint64_t buffer, uint64_t offset,
				 size_t len)
{
	struct mlx5vf_vfio_buf *b = to_buf(buffer);

	if (!in_buf(b, offset, len))
		return -EINVAL;
	return len - copy_to_user(user_dst, (u8 *)b->mem + offset, len);
}

static int64_t op_buffer_from_user(void *ctx, uint64_t buffer, uint64_t offset,
				   mlx5vf_const_uptr user_src, size_t len)
{
	struct mlx5vf_vfio_buf *b = to_buf(buffer);

	if (!in_buf(b, offset, len))
		return -EINVAL;
	return len - copy_from_user((u8 *)b->mem + offset, user_src, len);
}

static int64_t op_copy_to_user(void *ctx, mlx5vf_uptr user_dst, const void *src, size_t len)
{
	return len - copy_to_user(user_dst, src, len);
}

static int64_t op_copy_from_user(void *ctx, void *dst, mlx5vf_const_uptr user_src, size_t len)
{
	return len - copy_from_user(dst, user_src, len);
}

static void op_lock(void *ctx)
{
	struct mlx5vf_vfio_dev *dev = ctx;

	mutex_lock(&dev->state_mutex);
}

static bool op_trylock(void *ctx)
{
	struct mlx5vf_vfio_dev *dev = ctx;

	return mutex_trylock(&dev->state_mutex);
}

static void op_unlock(void *ctx)
{
	struct mlx5vf_vfio_dev *dev = ctx;

	mutex_unlock(&dev->state_mutex);
}

static void op_wake(void *ctx)
{
	struct mlx5vf_vfio_dev *dev = ctx;

	wake_up_all(&dev->wq);
}

/* The clock the core times QUERYs and SAVEs with, to tune the chunk size. */
static u64 op_now_ns(void *ctx)
{
	return ktime_get_ns();
}

/* ------------------------------------------------------------------------ */
/* The page tracker's reporting channel (platform report_*) */

/* ALLOC_PD / DEALLOC_PD: 16-byte input and output; the PD is out bytes 9..11. */
#define CMD_ALLOC_PD 0x800
#define CMD_DEALLOC_PD 0x801

static int pd_command(struct mlx5vf_vfio_dev *dev, u16 opcode, u32 *pd)
{
	u8 in[16] = {}, out[16] = {};
	int ret;

	put_unaligned_be16(opcode, in);
	if (opcode == CMD_DEALLOC_PD)
		put_unaligned_be32(*pd & 0xffffff, in + 8);
	ret = dev->fw->exec(dev, in, sizeof(in), out, sizeof(out));
	if (ret)
		return ret;
	if (out[0])
		return -EIO;	/* firmware refused */
	if (opcode == CMD_ALLOC_PD)
		*pd = get_unaligned_be32(out + 8) & 0xffffff;
	return 0;
}

static void free_channel_buffer(struct mlx5vf_vfio_dev *dev, bool mapped)
{
	struct mlx5vf_vfio_channel *ch = &dev->channel;

	if (mapped)
		WARN_ON(op_unmap_buffers(dev, ch->mkey, &ch->buf, 1));
	op_free_buffer(dev, ch->buf);
	WARN_ON(pd_command(dev, CMD_DEALLOC_PD, &ch->pd));
}

/*
 * A receive buffer of slots * msg_size bytes (the library sizes it: at least
 * 2 MiB, as Linux) under one MTT mkey of its own PD, and the firmware side's
 * channel over it.
 */
static int op_report_open(void *ctx, uint32_t msg_size, uint32_t slots, uint32_t *fw_qpn)
{
	struct mlx5vf_vfio_dev *dev = ctx;
	struct mlx5vf_vfio_channel *ch = &dev->channel;
	u64 len = (u64)msg_size * slots;
	int ret;

	if (ch->open)
		return -EBUSY;
	/* 64 MiB: far above what any tracker capability asks for. */
	if (!len || len % MLX5VF_PAGE_SIZE || len > SZ_64M)
		return -EINVAL;
	ret = pd_command(dev, CMD_ALLOC_PD, &ch->pd);
	if (ret)
		return ret;
	ret = op_alloc_buffer(dev, len / MLX5VF_PAGE_SIZE, MLX5VF_DMA_FROM_DEVICE, &ch->buf);
	if (ret) {
		WARN_ON(pd_command(dev, CMD_DEALLOC_PD, &ch->pd));
		return ret;
	}
	ret = op_map_buffers(dev, ch->pd, &ch->buf, 1, &ch->mkey);
	if (ret) {
		op_free_buffer(dev, ch->buf);
		WARN_ON(pd_command(dev, CMD_DEALLOC_PD, &ch->pd));
		return ret;
	}
	ret = dev->fw->report_open(dev, ch->mkey, msg_size, slots, fw_qpn);
	if (ret) {
		free_channel_buffer(dev, true);
		return ret;
	}
	ch->msg_size = msg_size;
	ch->slots = slots;
	ch->open = true;
	atomic_inc(&live_channels);
	return 0;
}

/*
 * The next CQE or event, waiting up to timeout_ns. The firmware side moves
 * when polled (the simulated firmware has no thread of its own; a real CQ
 * is polled the same way before arming), so poll, sleeping a little longer
 * each time nothing came, until the deadline.
 */
static int op_report_next(void *ctx, uint8_t *cqe, uint64_t timeout_ns)
{
	struct mlx5vf_vfio_dev *dev = ctx;
	u64 deadline = ktime_get_ns() + timeout_ns;
	unsigned long nap_us = 10;
	int ret;

	if (!dev->channel.open)
		return -EINVAL;
	for (;;) {
		ret = dev->fw->report_poll(dev, cqe);
		if (ret != MLX5VF_REPORT_TIMED_OUT || ktime_get_ns() >= deadline)
			return ret;
		usleep_range(nap_us, nap_us * 2);
		nap_us = min(nap_us * 2, 10000UL);
	}
}

static int op_report_read(void *ctx, uint32_t slot, uint32_t offset, uint8_t *dst, size_t len)
{
	struct mlx5vf_vfio_dev *dev = ctx;
	struct mlx5vf_vfio_channel *ch = &dev->channel;
	struct mlx5vf_vfio_buf *b = to_buf(ch->buf);

	if (!ch->open || slot >= ch->slots || offset > ch->msg_size ||
	    len > ch->msg_size - offset)
		return -EINVAL;
	memcpy(dst, (u8 *)b->mem + (size_t)slot * ch->msg_size + offset, len);
	return 0;
}

static int op_report_repost(void *ctx, uint32_t slot)
{
	struct mlx5vf_vfio_dev *dev = ctx;

	if (!dev->channel.open || slot >= dev->channel.slots)
		return -EINVAL;
	return dev->fw->report_repost(dev, slot);
}

static void op_report_close(void *ctx)
{
	struct mlx5vf_vfio_dev *dev = ctx;
	struct mlx5vf_vfio_channel *ch = &dev->channel;

	if (WARN_ON(!ch->open))
		return;
	dev->fw->report_close(dev);
	free_channel_buffer(dev, true);
	ch->open = false;
	atomic_dec(&live_channels);
}

#define PLATFORM_OPS_COMMON \
	.exec = op_exec, \
	.start_save = op_start_save, \
	.alloc_buffer = op_alloc_buffer, \
	.map_buffers = op_map_buffers, \
	.unmap_buffers = op_unmap_buffers, \
	.free_buffer = op_free_buffer, \
	.crc32c = op_crc32c, \
	.buffer_to_user = op_buffer_to_user, \
	.buffer_from_user = op_buffer_from_user, \
	.copy_to_user = op_copy_to_user, \
	.copy_from_user = op_copy_from_user, \
	.lock = op_lock, \
	.trylock = op_trylock, \
	.unlock = op_unlock, \
	.wake = op_wake, \
	.start_load = op_start_load, \
	.now_ns = op_now_ns

/* Firmware without a reporting channel: mlx5vf_log_start() says -EOPNOTSUPP. */
static const struct mlx5vf_platform_ops platform_ops = {
	PLATFORM_OPS_COMMON,
};

static const struct mlx5vf_platform_ops platform_ops_tracking = {
	PLATFORM_OPS_COMMON,
	.report_open = op_report_open,
	.report_next = op_report_next,
	.report_read = op_report_read,
	.report_repost = op_report_repost,
	.report_close = op_report_close,
};

static bool fw_can_track(const struct mlx5vf_vfio_fw_ops *fw)
{
	return fw->report_open && fw->report_poll && fw->report_repost && fw->report_close;
}

/* ------------------------------------------------------------------------ */
/* The migration data file */

struct mig_file {
	struct mlx5vf_vfio_dev *dev;
	struct mutex read_lock;	/* one reader at a time */
	struct mlx5vf_file mf;
};

/* Waits for the library's event counter to move past seq. */
static int wait_events(struct mlx5vf_vfio_dev *dev, u32 seq)
{
	return wait_event_interruptible(dev->wq, mlx5vf_events(&dev->mig) != seq);
}

static u32 io_flags(struct file *filp, loff_t *pos)
{
	u32 flags = 0;

	if (filp->f_flags & O_NONBLOCK)
		flags |= MLX5VF_IO_NONBLOCK;
	if (pos)
		flags |= MLX5VF_IO_POSITIONED;
	return flags;
}

static ssize_t mig_read(struct file *filp, char __user *buf, size_t len, loff_t *pos)
{
	struct mig_file *f = filp->private_data;
	u32 flags = io_flags(filp, pos);
	size_t done = 0;
	int ret;

	if (mutex_lock_interruptible(&f->read_lock))
		return -ERESTARTSYS;
	for (;;) {
		u32 seq = mlx5vf_events(&f->dev->mig);

		ret = mlx5vf_file_read(&f->mf, buf, len, flags, &done);
		if (ret != MLX5VF_RETRY)
			break;
		if (wait_events(f->dev, seq)) {
			ret = -ERESTARTSYS;
			break;
		}
	}
	mutex_unlock(&f->read_lock);
	return ret ? ret : done;
}

static ssize_t mig_write(struct file *filp, const char __user *buf, size_t len, loff_t *pos)
{
	struct mig_file *f = filp->private_data;
	u32 flags = io_flags(filp, pos);
	size_t done = 0;
	int ret;

	for (;;) {
		u32 seq = mlx5vf_events(&f->dev->mig);

		ret = mlx5vf_file_write(&f->mf, buf, len, flags, &done);
		if (ret != MLX5VF_RETRY)
			break;
		if (wait_events(f->dev, seq))
			return -ERESTARTSYS;
	}
	return ret ? ret : done;
}

static __poll_t mig_poll(struct file *filp, struct poll_table_struct *wait)
{
	struct mig_file *f = filp->private_data;

	poll_wait(filp, &f->dev->wq, wait);
	return (__force __poll_t)mlx5vf_file_poll(&f->mf);
}

static long mig_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct mig_file *f = filp->private_data;
	int ret;

	for (;;) {
		u32 seq = mlx5vf_events(&f->dev->mig);

		ret = mlx5vf_file_ioctl(&f->mf, cmd, (void __user *)arg);
		if (ret != MLX5VF_RETRY)
			return ret;
		if (wait_events(f->dev, seq))
			return -ERESTARTSYS;
	}
}

static void free_mig_file(struct mig_file *f)
{
	mutex_destroy(&f->read_lock);
	kfree(f);
}

static int mig_release(struct inode *inode, struct file *filp)
{
	struct mig_file *f = filp->private_data;
	struct vfio_device *vdev = f->dev->vdev;

	mlx5vf_file_release(&f->mf);
	free_mig_file(f);
	atomic_dec(&live_files);
	/* The file held the device: its storage must outlive the file. */
	vfio_put_device(vdev);
	return 0;
}

static const struct file_operations save_fops = {
	.owner = THIS_MODULE,
	.read = mig_read,
	.poll = mig_poll,
	.unlocked_ioctl = mig_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = mig_release,
};

static const struct file_operations resume_fops = {
	.owner = THIS_MODULE,
	.write = mig_write,
	.unlocked_ioctl = mig_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = mig_release,
};

/* ------------------------------------------------------------------------ */
/* vfio_migration_ops */

static struct file *mig_set_state(struct vfio_device *vdev, enum vfio_device_mig_state new_state)
{
	struct mlx5vf_vfio_dev *dev = mlx5vf_vfio_dev_of(vdev);
	const struct file_operations *fops;
	struct mig_file *f;
	struct file *filp;
	int ret;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return ERR_PTR(-ENOMEM);
	f->dev = dev;
	mutex_init(&f->read_lock);
	mlx5vf_lock(&dev->mig);
	for (;;) {
		u32 seq = mlx5vf_events(&dev->mig);

		ret = mlx5vf_set_state(&dev->mig, new_state, &f->mf);
		if (ret != MLX5VF_RETRY)
			break;
		mlx5vf_unlock(&dev->mig);
		if (wait_events(dev, seq)) {
			free_mig_file(f);
			return ERR_PTR(-ERESTARTSYS);
		}
		mlx5vf_lock(&dev->mig);
	}
	mlx5vf_unlock(&dev->mig);
	if (ret <= 0) {
		free_mig_file(f);
		return ret ? ERR_PTR(ret) : NULL;
	}
	/* The file keeps the device (and the module, through .owner). */
	get_device(&vdev->device);
	atomic_inc(&live_files);
	fops = ret == MLX5VF_NEW_SAVING_FILE ? &save_fops : &resume_fops;
	filp = anon_inode_getfile("[mlx5vf_mig]", fops, f,
				  ret == MLX5VF_NEW_SAVING_FILE ? O_RDONLY : O_WRONLY);
	if (IS_ERR(filp)) {
		mlx5vf_file_release(&f->mf);
		free_mig_file(f);
		atomic_dec(&live_files);
		vfio_put_device(vdev);
		return filp;
	}
	stream_open(filp->f_inode, filp);
	return filp;
}

static int mig_get_state(struct vfio_device *vdev, enum vfio_device_mig_state *state)
{
	struct mlx5vf_vfio_dev *dev = mlx5vf_vfio_dev_of(vdev);
	u32 s;
	int ret;

	mlx5vf_lock(&dev->mig);
	ret = mlx5vf_get_state(&dev->mig, &s);
	mlx5vf_unlock(&dev->mig);
	if (!ret)
		*state = s;
	return ret;
}

static int mig_get_data_size(struct vfio_device *vdev, unsigned long *stop_copy_length)
{
	struct mlx5vf_vfio_dev *dev = mlx5vf_vfio_dev_of(vdev);
	u64 size;
	int ret;

	mlx5vf_lock(&dev->mig);
	ret = mlx5vf_get_data_size(&dev->mig, &size);
	mlx5vf_unlock(&dev->mig);
	if (!ret)
		*stop_copy_length = size;
	return ret;
}

static const struct vfio_migration_ops mig_ops = {
	.migration_set_state = mig_set_state,
	.migration_get_state = mig_get_state,
	.migration_get_data_size = mig_get_data_size,
};

/* ------------------------------------------------------------------------ */
/* vfio_log_ops (DMA logging) */

/* Ends logging: the tracker object, its channel and buffer. Lock held. */
static void log_end_locked(struct mlx5vf_vfio_dev *dev)
{
	WARN_ON(mlx5vf_log_stop(&dev->mig, &dev->dirty));
}

#if IS_ENABLED(CONFIG_IOMMUFD_DRIVER)
/*
 * The VFIO core validated the ranges (aligned to the page size asked for,
 * none overlapping) and holds them in an interval tree; the library wants
 * them sorted, which an in-order walk gives, and combines them down to the
 * device's limit itself.
 */
static int log_start(struct vfio_device *vdev, struct rb_root_cached *ranges, u32 nnodes,
		     u64 *page_size)
{
	struct mlx5vf_vfio_dev *dev = mlx5vf_vfio_dev_of(vdev);
	struct interval_tree_node *node;
	struct mlx5vf_iova_range *r;
	void *scratch;
	u32 n = 0;
	int ret;

	r = kvcalloc(nnodes, sizeof(*r), GFP_KERNEL);
	scratch = kzalloc(MLX5VF_DIRTY_SCRATCH_LEN, GFP_KERNEL);
	if (!r || !scratch) {
		ret = -ENOMEM;
		goto out;
	}
	for (node = interval_tree_iter_first(ranges, 0, ULONG_MAX); node && n < nnodes;
	     node = interval_tree_iter_next(node, 0, ULONG_MAX)) {
		r[n].iova = node->start;
		r[n].length = node->last - node->start + 1;
		n++;
	}
	mlx5vf_lock(&dev->mig);
	ret = mlx5vf_log_start(&dev->mig, &dev->dirty, r, n, page_size, scratch,
			       MLX5VF_DIRTY_SCRATCH_LEN);
	mlx5vf_unlock(&dev->mig);
out:
	kfree(scratch);
	kvfree(r);
	return ret;
}

static int log_stop(struct vfio_device *vdev)
{
	struct mlx5vf_vfio_dev *dev = mlx5vf_vfio_dev_of(vdev);
	int ret;

	mlx5vf_lock(&dev->mig);
	ret = mlx5vf_log_stop(&dev->mig, &dev->dirty);
	mlx5vf_unlock(&dev->mig);
	return ret;
}

static void set_dirty(void *ctx, uint64_t iova, uint64_t length)
{
	iova_bitmap_set(ctx, iova, length);
}

static int log_read_and_clear(struct vfio_device *vdev, unsigned long iova,
			      unsigned long length, struct iova_bitmap *dirty)
{
	struct mlx5vf_vfio_dev *dev = mlx5vf_vfio_dev_of(vdev);
	int ret;

	mlx5vf_lock(&dev->mig);
	ret = mlx5vf_log_read_and_clear(&dev->mig, &dev->dirty, iova, length, set_dirty, dirty);
	mlx5vf_unlock(&dev->mig);
	return ret;
}

static const struct vfio_log_ops log_ops = {
	.log_start = log_start,
	.log_stop = log_stop,
	.log_read_and_clear = log_read_and_clear,
};

/* The iova_bitmap helpers are exported in the IOMMUFD namespace. */
MODULE_IMPORT_NS(IOMMUFD);
#endif

/* ------------------------------------------------------------------------ */
/* Setup and teardown, and the device's other events */

void mlx5vf_vfio_dev_init(struct mlx5vf_vfio_dev *dev, struct vfio_device *vdev,
			  const struct mlx5vf_vfio_fw_ops *fw)
{
	dev->vdev = vdev;
	dev->fw = fw;
	mutex_init(&dev->state_mutex);
	init_waitqueue_head(&dev->wq);
	atomic64_set(&dev->buffer_bytes, 0);
	atomic64_set(&dev->peak_buffer_bytes, 0);
	memset(&dev->channel, 0, sizeof(dev->channel));
	WARN_ON(mlx5vf_dirty_init(&dev->dirty));
}

void mlx5vf_vfio_dev_destroy(struct mlx5vf_vfio_dev *dev)
{
	mutex_destroy(&dev->state_mutex);
}

/* Tears the library's device down once no SAVE or LOAD is in flight. */
static void fini_mig(struct mlx5vf_vfio_dev *dev)
{
	int ret;

	for (;;) {
		u32 seq = mlx5vf_events(&dev->mig);

		ret = mlx5vf_device_fini(&dev->mig);
		if (ret != MLX5VF_RETRY)
			break;
		wait_event(dev->wq, mlx5vf_events(&dev->mig) != seq);
	}
	/* A delivery may still be returning from mlx5vf_unlock(). */
	flush_workqueue(deliver_wq);
	WARN(ret, KBUILD_MODNAME ": device teardown failed: %d\n", ret);
}

int mlx5vf_vfio_dev_probe(struct mlx5vf_vfio_dev *dev, u16 vf)
{
	struct mlx5vf_config cfg;
	void *scratch;
	int ret;

	mlx5vf_config_default(&cfg);
	if (chunk_size)
		cfg.chunk_size = chunk_size;
	if (chunk_slots)
		cfg.chunk_slots = chunk_slots;
	if (memory_cap)
		cfg.memory_cap = memory_cap;
	if (fixed_chunks)
		cfg.flags &= ~MLX5VF_CFG_MEASURED_CHUNKS;
	ret = mlx5vf_device_init(&dev->mig, fw_can_track(dev->fw) ? &platform_ops_tracking :
				 &platform_ops, dev, &cfg);
	if (ret)
		return ret;
	scratch = kzalloc(MLX5VF_PROBE_SCRATCH_LEN, GFP_KERNEL);
	if (!scratch) {
		fini_mig(dev);
		return -ENOMEM;
	}
	mlx5vf_lock(&dev->mig);
	ret = mlx5vf_device_probe(&dev->mig, vf, scratch, MLX5VF_PROBE_SCRATCH_LEN);
	mlx5vf_unlock(&dev->mig);
	kfree(scratch);
	if (ret) {
		fini_mig(dev);
		return ret;
	}
	atomic_inc(&live_devices);
	return 0;
}

void mlx5vf_vfio_dev_fini(struct mlx5vf_vfio_dev *dev)
{
	fini_mig(dev);
	atomic_dec(&live_devices);
}

#if IS_ENABLED(CONFIG_IOMMUFD_DRIVER)
/*
 * DMA logging is offered as Linux's driver offers it: the PF has the page
 * tracker (adv_virtualization, as the probe found it) and the platform has
 * a reporting channel. Offered without the capability, START would fail
 * with EOPNOTSUPP on a device that claimed logging.
 */
static bool can_log(struct mlx5vf_vfio_dev *dev)
{
	struct mlx5vf_probe_info info = {};
	int ret;

	if (!fw_can_track(dev->fw))
		return false;
	mlx5vf_lock(&dev->mig);
	ret = mlx5vf_device_probe_info(&dev->mig, &info);
	mlx5vf_unlock(&dev->mig);
	return !ret && (info.flags & MLX5VF_PROBE_DIRTY_TRACKING);
}
#endif

void mlx5vf_vfio_dev_offer(struct mlx5vf_vfio_dev *dev)
{
	dev->vdev->migration_flags = mlx5vf_migration_flags(&dev->mig);
	dev->vdev->mig_ops = &mig_ops;
#if IS_ENABLED(CONFIG_IOMMUFD_DRIVER)
	if (can_log(dev))
		dev->vdev->log_ops = &log_ops;
#endif
}

void mlx5vf_vfio_open(struct mlx5vf_vfio_dev *dev)
{
	mlx5vf_lock(&dev->mig);
	mlx5vf_open_device(&dev->mig);
	mlx5vf_unlock(&dev->mig);
}

void mlx5vf_vfio_close(struct mlx5vf_vfio_dev *dev)
{
	mlx5vf_lock(&dev->mig);
	log_end_locked(dev);
	mlx5vf_close_device(&dev->mig);
	mlx5vf_unlock(&dev->mig);
}

void mlx5vf_vfio_reset_done(struct mlx5vf_vfio_dev *dev)
{
	mlx5vf_reset_done(&dev->mig);
	wake_up_all(&dev->wq);
}

void mlx5vf_vfio_log_end(struct mlx5vf_vfio_dev *dev)
{
	mlx5vf_lock(&dev->mig);
	log_end_locked(dev);
	mlx5vf_unlock(&dev->mig);
}

void mlx5vf_vfio_vf_event(struct mlx5vf_vfio_dev *dev, bool enabled)
{
	mlx5vf_lock(&dev->mig);
	if (enabled) {
		mlx5vf_vf_attach(&dev->mig);
	} else {
		/* Logging ends while commands still reach the VF (as Linux). */
		WARN_ON(mlx5vf_log_detach(&dev->mig, &dev->dirty));
		mlx5vf_vf_detach(&dev->mig);
	}
	mlx5vf_unlock(&dev->mig);
}
