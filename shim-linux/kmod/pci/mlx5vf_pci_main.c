// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * mlx5vf_pci: a vfio_pci_core variant driver for ConnectX VFs whose
 * migration logic is libmlx5vf_linux (Rust, include/mlx5vf.h).
 *
 * This file is the whole VFIO side: the pci_driver on vfio_pci_core (the
 * regions, interrupts, reset and DMA isolation are vfio_pci_core's own),
 * the vfio_migration_ops and the migration data file, and the platform of
 * libmlx5vf_linux: buffers, the device lock, waits, and the delivery of
 * asynchronous completions. What needs the PF (commands, DMA mapping, the
 * SR-IOV events) goes through mlx5vf_pf_ops (mlx5vf_pci.h), filled from
 * mlx5_core in the production build and from the simulated firmware in the
 * test build; this file is the same in both.
 *
 * Sysfs: the bound device's mlx5vf/ group (vf: its index on the PF;
 * peak_buffer_bytes: the most buffer memory its migrations held at once;
 * digest, where the PF side can tell it) and the driver's live_objects (all
 * zero when nothing is bound, open or in flight).
 */
#include <linux/anon_inodes.h>
#include <linux/atomic.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>
#include <linux/vmalloc.h>

#include "mlx5vf_pci.h"

static unsigned long chunk_size;
module_param(chunk_size, ulong, 0444);
MODULE_PARM_DESC(chunk_size, "chunk buffer size in bytes (0: 8 MiB, as Linux)");
static unsigned int chunk_slots;
module_param(chunk_slots, uint, 0444);
MODULE_PARM_DESC(chunk_slots, "chunk slots (0: 2, as Linux)");

/* Delivers asynchronous completions (they need the device lock). */
static struct workqueue_struct *mvp_wq;

/* Live objects of the driver: all zero when nothing is bound or open. */
static atomic_t live_devices = ATOMIC_INIT(0);
static atomic_t live_buffers = ATOMIC_INIT(0);
static atomic64_t live_buffer_bytes = ATOMIC64_INIT(0);
static atomic_t live_files = ATOMIC_INIT(0);
static atomic_t live_async = ATOMIC_INIT(0);

static struct mlx5vf_pci_dev *to_mvp(struct vfio_device *vdev)
{
	return container_of(vdev, struct mlx5vf_pci_dev, core.vdev);
}

/* ------------------------------------------------------------------------ */
/* The platform of libmlx5vf_linux */

static int op_exec(void *ctx, const void *in, size_t in_len, void *out, size_t out_len)
{
	return mlx5vf_pf_ops.exec(ctx, in, in_len, out, out_len);
}

static void mvp_async_deliver(struct work_struct *work)
{
	struct mlx5vf_pci_async *a = container_of(work, struct mlx5vf_pci_async, work);
	struct mlx5vf_pci_dev *vf = a->vf;
	int ret;

	mlx5vf_lock(&vf->mig);
	if (a->load)
		ret = mlx5vf_load_complete(&vf->mig, a->token, a->status, a->out, sizeof(a->out));
	else
		ret = mlx5vf_save_complete(&vf->mig, a->token, a->status, a->out, sizeof(a->out));
	mlx5vf_unlock(&vf->mig);
	WARN_ONCE(ret, KBUILD_MODNAME ": %s completion refused: %d\n", a->load ? "LOAD" : "SAVE",
		  ret);
	kfree(a);
	atomic_dec(&live_async);
}

void mlx5vf_pci_async_done(struct mlx5vf_pci_async *a, int status)
{
	a->status = status;
	queue_work(mvp_wq, &a->work);
}

static int mvp_start_async(struct mlx5vf_pci_dev *vf, const void *in, size_t in_len, u64 token,
			   bool load)
{
	struct mlx5vf_pci_async *a;
	int ret;

	if (in_len > MLX5VF_PCI_ASYNC_IN_MAX)
		return -EINVAL;
	a = kzalloc(struct_size(a, pf_priv, mlx5vf_pf_ops.async_priv_size), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	INIT_WORK(&a->work, mvp_async_deliver);
	a->vf = vf;
	a->token = token;
	a->load = load;
	a->in_len = in_len;
	memcpy(a->in, in, in_len);
	atomic_inc(&live_async);
	ret = mlx5vf_pf_ops.exec_async(a);
	if (ret) {
		atomic_dec(&live_async);
		kfree(a);
	}
	return ret;
}

static int op_start_save(void *ctx, const void *in, size_t in_len, uint64_t token)
{
	return mvp_start_async(ctx, in, in_len, token, false);
}

/* LOADs run asynchronously too: image k+1 arrives while image k LOADs. */
static int op_start_load(void *ctx, const void *in, size_t in_len, uint64_t token)
{
	return mvp_start_async(ctx, in, in_len, token, true);
}

static struct mlx5vf_pci_buf *to_buf(uint64_t buffer)
{
	return (struct mlx5vf_pci_buf *)(uintptr_t)buffer;
}

static int op_alloc_buffer(void *ctx, uint32_t npages, uint32_t dir, uint64_t *buffer)
{
	struct mlx5vf_pci_buf *b;
	s64 now, peak;

	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	b->vf = ctx;
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
	now = atomic64_add_return(b->len, &b->vf->buffer_bytes);
	peak = atomic64_read(&b->vf->peak_buffer_bytes);
	while (now > peak && !atomic64_try_cmpxchg(&b->vf->peak_buffer_bytes, &peak, now))
		;
	*buffer = (uint64_t)(uintptr_t)b;
	return 0;
}

static void mvp_unmap(const uint64_t *buffers, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++) {
		struct mlx5vf_pci_buf *b = to_buf(buffers[i]);

		if (--b->maps == 0)
			mlx5vf_pf_ops.dma_unmap(b);
	}
}

static int op_map_buffers(void *ctx, uint32_t pd, const uint64_t *buffers, size_t count,
			  uint32_t *mkey)
{
	u8 out[MLX5VF_CREATE_MKEY_OUT_LEN];
	size_t i, mapped, npages = 0, n = 0;
	u64 *pages = NULL;
	void *in = NULL;
	int64_t in_len;
	int ret = 0;

	for (mapped = 0; mapped < count; mapped++) {
		struct mlx5vf_pci_buf *b = to_buf(buffers[mapped]);

		if (b->maps++ == 0) {
			ret = mlx5vf_pf_ops.dma_map(b);
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
		struct mlx5vf_pci_buf *b = to_buf(buffers[i]);
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
	ret = mlx5vf_pf_ops.exec(ctx, in, in_len, out, sizeof(out));
	if (!ret)
		ret = mlx5vf_decode_create_mkey(out, sizeof(out), mkey);
	if (!ret)
		goto out;
unmap:
	mvp_unmap(buffers, mapped);
out:
	kvfree(in);
	kvfree(pages);
	return ret;
}

static int op_unmap_buffers(void *ctx, uint32_t mkey, const uint64_t *buffers, size_t count)
{
	u8 in[MLX5VF_DESTROY_MKEY_IN_LEN], out[MLX5VF_DESTROY_MKEY_OUT_LEN];
	int ret = mlx5vf_encode_destroy_mkey(in, sizeof(in), mkey);

	if (ret >= 0)
		ret = mlx5vf_pf_ops.exec(ctx, in, ret, out, sizeof(out));
	if (!ret)
		ret = mlx5vf_decode_destroy_mkey(out, sizeof(out));
	mvp_unmap(buffers, count);
	return ret;
}

static void op_free_buffer(void *ctx, uint64_t buffer)
{
	struct mlx5vf_pci_buf *b = to_buf(buffer);

	WARN_ON(b->maps);
	atomic64_sub(b->len, &b->vf->buffer_bytes);
	atomic64_sub(b->len, &live_buffer_bytes);
	atomic_dec(&live_buffers);
	kvfree(b->dma);
	vfree(b->mem);
	kfree(b);
}

static bool in_buf(struct mlx5vf_pci_buf *b, uint64_t offset, uint64_t len)
{
	return !WARN_ON_ONCE(offset > b->len || len > b->len - offset);
}

static uint32_t op_crc32c(void *ctx, uint64_t buffer, uint64_t offset, uint64_t len, uint32_t crc)
{
	struct mlx5vf_pci_buf *b = to_buf(buffer);

	if (!in_buf(b, offset, len))
		return crc;
	return mlx5vf_crc32c(crc, (u8 *)b->mem + offset, len);
}

static int64_t op_buffer_to_user(void *ctx, mlx5vf_uptr user_dst, uint64_t buffer, uint64_t offset,
				 size_t len)
{
	struct mlx5vf_pci_buf *b = to_buf(buffer);

	if (!in_buf(b, offset, len))
		return -EINVAL;
	return len - copy_to_user(user_dst, (u8 *)b->mem + offset, len);
}

static int64_t op_buffer_from_user(void *ctx, uint64_t buffer, uint64_t offset,
				   mlx5vf_const_uptr user_src, size_t len)
{
	struct mlx5vf_pci_buf *b = to_buf(buffer);

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
	struct mlx5vf_pci_dev *vf = ctx;

	mutex_lock(&vf->state_mutex);
}

static bool op_trylock(void *ctx)
{
	struct mlx5vf_pci_dev *vf = ctx;

	return mutex_trylock(&vf->state_mutex);
}

static void op_unlock(void *ctx)
{
	struct mlx5vf_pci_dev *vf = ctx;

	mutex_unlock(&vf->state_mutex);
}

static void op_wake(void *ctx)
{
	struct mlx5vf_pci_dev *vf = ctx;

	wake_up_all(&vf->wq);
}

static const struct mlx5vf_platform_ops mvp_platform_ops = {
	.exec = op_exec,
	.start_save = op_start_save,
	.alloc_buffer = op_alloc_buffer,
	.map_buffers = op_map_buffers,
	.unmap_buffers = op_unmap_buffers,
	.free_buffer = op_free_buffer,
	.crc32c = op_crc32c,
	.buffer_to_user = op_buffer_to_user,
	.buffer_from_user = op_buffer_from_user,
	.copy_to_user = op_copy_to_user,
	.copy_from_user = op_copy_from_user,
	.lock = op_lock,
	.trylock = op_trylock,
	.unlock = op_unlock,
	.wake = op_wake,
	.start_load = op_start_load,
};

void mlx5vf_pci_vf_event(struct mlx5vf_pci_dev *vf, bool enabled)
{
	mlx5vf_lock(&vf->mig);
	if (enabled)
		mlx5vf_vf_attach(&vf->mig);
	else
		mlx5vf_vf_detach(&vf->mig);
	mlx5vf_unlock(&vf->mig);
}

/* ------------------------------------------------------------------------ */
/* The migration data file */

struct mvp_file {
	struct mlx5vf_pci_dev *vf;
	struct mutex read_lock;	/* one reader at a time */
	struct mlx5vf_file mf;
};

/* Waits for the library's event counter to move past seq. */
static int mvp_wait(struct mlx5vf_pci_dev *vf, u32 seq)
{
	return wait_event_interruptible(vf->wq, mlx5vf_events(&vf->mig) != seq);
}

static u32 mvp_io_flags(struct file *filp, loff_t *pos)
{
	u32 flags = 0;

	if (filp->f_flags & O_NONBLOCK)
		flags |= MLX5VF_IO_NONBLOCK;
	if (pos)
		flags |= MLX5VF_IO_POSITIONED;
	return flags;
}

static ssize_t mvp_read(struct file *filp, char __user *buf, size_t len, loff_t *pos)
{
	struct mvp_file *f = filp->private_data;
	u32 flags = mvp_io_flags(filp, pos);
	size_t done = 0;
	int ret;

	if (mutex_lock_interruptible(&f->read_lock))
		return -ERESTARTSYS;
	for (;;) {
		u32 seq = mlx5vf_events(&f->vf->mig);

		ret = mlx5vf_file_read(&f->mf, buf, len, flags, &done);
		if (ret != MLX5VF_RETRY)
			break;
		if (mvp_wait(f->vf, seq)) {
			ret = -ERESTARTSYS;
			break;
		}
	}
	mutex_unlock(&f->read_lock);
	return ret ? ret : done;
}

static ssize_t mvp_write(struct file *filp, const char __user *buf, size_t len, loff_t *pos)
{
	struct mvp_file *f = filp->private_data;
	u32 flags = mvp_io_flags(filp, pos);
	size_t done = 0;
	int ret;

	for (;;) {
		u32 seq = mlx5vf_events(&f->vf->mig);

		ret = mlx5vf_file_write(&f->mf, buf, len, flags, &done);
		if (ret != MLX5VF_RETRY)
			break;
		if (mvp_wait(f->vf, seq))
			return -ERESTARTSYS;
	}
	return ret ? ret : done;
}

static __poll_t mvp_poll(struct file *filp, struct poll_table_struct *wait)
{
	struct mvp_file *f = filp->private_data;

	poll_wait(filp, &f->vf->wq, wait);
	return (__force __poll_t)mlx5vf_file_poll(&f->mf);
}

static long mvp_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct mvp_file *f = filp->private_data;
	int ret;

	for (;;) {
		u32 seq = mlx5vf_events(&f->vf->mig);

		ret = mlx5vf_file_ioctl(&f->mf, cmd, (void __user *)arg);
		if (ret != MLX5VF_RETRY)
			return ret;
		if (mvp_wait(f->vf, seq))
			return -ERESTARTSYS;
	}
}

static void mvp_free_file(struct mvp_file *f)
{
	mutex_destroy(&f->read_lock);
	kfree(f);
}

static int mvp_release(struct inode *inode, struct file *filp)
{
	struct mvp_file *f = filp->private_data;
	struct mlx5vf_pci_dev *vf = f->vf;

	mlx5vf_file_release(&f->mf);
	mvp_free_file(f);
	atomic_dec(&live_files);
	/* The file held the device: its storage must outlive the file. */
	vfio_put_device(&vf->core.vdev);
	return 0;
}

static const struct file_operations mvp_save_fops = {
	.owner = THIS_MODULE,
	.read = mvp_read,
	.poll = mvp_poll,
	.unlocked_ioctl = mvp_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = mvp_release,
};

static const struct file_operations mvp_resume_fops = {
	.owner = THIS_MODULE,
	.write = mvp_write,
	.unlocked_ioctl = mvp_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = mvp_release,
};

/* ------------------------------------------------------------------------ */
/* vfio_migration_ops */

static struct file *mvp_set_state(struct vfio_device *vdev, enum vfio_device_mig_state new_state)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);
	const struct file_operations *fops;
	struct mvp_file *f;
	struct file *filp;
	int ret;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return ERR_PTR(-ENOMEM);
	f->vf = vf;
	mutex_init(&f->read_lock);
	mlx5vf_lock(&vf->mig);
	for (;;) {
		u32 seq = mlx5vf_events(&vf->mig);

		ret = mlx5vf_set_state(&vf->mig, new_state, &f->mf);
		if (ret != MLX5VF_RETRY)
			break;
		mlx5vf_unlock(&vf->mig);
		if (mvp_wait(vf, seq)) {
			mvp_free_file(f);
			return ERR_PTR(-ERESTARTSYS);
		}
		mlx5vf_lock(&vf->mig);
	}
	mlx5vf_unlock(&vf->mig);
	if (ret <= 0) {
		mvp_free_file(f);
		return ret ? ERR_PTR(ret) : NULL;
	}
	/* The file keeps the device (and the module, through .owner). */
	get_device(&vdev->device);
	atomic_inc(&live_files);
	fops = ret == MLX5VF_NEW_SAVING_FILE ? &mvp_save_fops : &mvp_resume_fops;
	filp = anon_inode_getfile("[mlx5vf_mig]", fops, f,
				  ret == MLX5VF_NEW_SAVING_FILE ? O_RDONLY : O_WRONLY);
	if (IS_ERR(filp)) {
		mlx5vf_file_release(&f->mf);
		mvp_free_file(f);
		atomic_dec(&live_files);
		vfio_put_device(vdev);
		return filp;
	}
	stream_open(filp->f_inode, filp);
	return filp;
}

static int mvp_get_state(struct vfio_device *vdev, enum vfio_device_mig_state *state)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);
	u32 s;
	int ret;

	mlx5vf_lock(&vf->mig);
	ret = mlx5vf_get_state(&vf->mig, &s);
	mlx5vf_unlock(&vf->mig);
	if (!ret)
		*state = s;
	return ret;
}

static int mvp_get_data_size(struct vfio_device *vdev, unsigned long *stop_copy_length)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);
	u64 size;
	int ret;

	mlx5vf_lock(&vf->mig);
	ret = mlx5vf_get_data_size(&vf->mig, &size);
	mlx5vf_unlock(&vf->mig);
	if (!ret)
		*stop_copy_length = size;
	return ret;
}

static const struct vfio_migration_ops mvp_mig_ops = {
	.migration_set_state = mvp_set_state,
	.migration_get_state = mvp_get_state,
	.migration_get_data_size = mvp_get_data_size,
};

/* ------------------------------------------------------------------------ */
/* Migration setup and teardown */

/* Tears the library's device down once no SAVE or LOAD is in flight. */
static void mvp_fini(struct mlx5vf_pci_dev *vf)
{
	int ret;

	for (;;) {
		u32 seq = mlx5vf_events(&vf->mig);

		ret = mlx5vf_device_fini(&vf->mig);
		if (ret != MLX5VF_RETRY)
			break;
		wait_event(vf->wq, mlx5vf_events(&vf->mig) != seq);
	}
	/* A delivery may still be returning from mlx5vf_unlock(). */
	flush_workqueue(mvp_wq);
	WARN(ret, KBUILD_MODNAME ": device teardown failed: %d\n", ret);
}

static int mvp_probe_migration(struct mlx5vf_pci_dev *vf)
{
	struct mlx5vf_config cfg;
	void *scratch;
	int ret;

	mlx5vf_config_default(&cfg);
	if (chunk_size)
		cfg.chunk_size = chunk_size;
	if (chunk_slots)
		cfg.chunk_slots = chunk_slots;
	ret = mlx5vf_device_init(&vf->mig, &mvp_platform_ops, vf, &cfg);
	if (ret)
		return ret;
	scratch = kzalloc(MLX5VF_PROBE_SCRATCH_LEN, GFP_KERNEL);
	if (!scratch) {
		mvp_fini(vf);
		return -ENOMEM;
	}
	mlx5vf_lock(&vf->mig);
	ret = mlx5vf_device_probe(&vf->mig, vf->vf, scratch, MLX5VF_PROBE_SCRATCH_LEN);
	mlx5vf_unlock(&vf->mig);
	kfree(scratch);
	if (ret)
		mvp_fini(vf);
	return ret;
}

/*
 * Offers migration when the PF side finds a PF that can migrate this VF and
 * the core's probe agrees; otherwise the device is plain vfio-pci, as
 * Linux's driver leaves a VF it cannot migrate.
 */
static void mvp_setup_migration(struct mlx5vf_pci_dev *vf)
{
	struct pci_dev *pdev = vf->core.pdev;
	int ret;

	ret = mlx5vf_pf_ops.attach(vf);
	if (ret) {
		if (ret != -EOPNOTSUPP)
			pci_warn(pdev, "no migration: PF not usable: %d\n", ret);
		return;
	}
	ret = mvp_probe_migration(vf);
	if (!ret && mlx5vf_pf_ops.watch) {
		ret = mlx5vf_pf_ops.watch(vf);
		if (ret)
			mvp_fini(vf);
	}
	mlx5vf_pf_ops.attach_end(vf);
	if (ret) {
		mlx5vf_pf_ops.detach(vf);
		if (ret == -EOPNOTSUPP)
			pci_info(pdev, "no migration: the firmware does not offer it\n");
		else
			pci_warn(pdev, "no migration: setup failed: %d\n", ret);
		return;
	}
	vf->migratable = true;
	vf->core.vdev.migration_flags = mlx5vf_migration_flags(&vf->mig);
	vf->core.vdev.mig_ops = &mvp_mig_ops;
	atomic_inc(&live_devices);
	pci_info(pdev, "migratable: VF %u, migration flags %#llx\n", vf->vf,
		 (unsigned long long)vf->core.vdev.migration_flags);
}

/* ------------------------------------------------------------------------ */
/* vfio_device_ops over vfio_pci_core */

static int mvp_init_dev(struct vfio_device *vdev)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);
	int ret;

	ret = vfio_pci_core_init_dev(vdev);
	if (ret)
		return ret;
	mutex_init(&vf->state_mutex);
	init_waitqueue_head(&vf->wq);
	mvp_setup_migration(vf);
	return 0;
}

static void mvp_release_dev(struct vfio_device *vdev)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);

	if (vf->migratable) {
		if (mlx5vf_pf_ops.unwatch)
			mlx5vf_pf_ops.unwatch(vf);
		mvp_fini(vf);
		mlx5vf_pf_ops.detach(vf);
		vf->migratable = false;
		atomic_dec(&live_devices);
	}
	mutex_destroy(&vf->state_mutex);
	vfio_pci_core_release_dev(vdev);
}

static int mvp_open_device(struct vfio_device *vdev)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);
	int ret;

	/* Enabling resets the function: reset_done below runs first. */
	ret = vfio_pci_core_enable(&vf->core);
	if (ret)
		return ret;
	if (vf->migratable) {
		mlx5vf_lock(&vf->mig);
		mlx5vf_open_device(&vf->mig);
		mlx5vf_unlock(&vf->mig);
	}
	vfio_pci_core_finish_enable(&vf->core);
	return 0;
}

static void mvp_close_device(struct vfio_device *vdev)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);

	if (vf->migratable) {
		mlx5vf_lock(&vf->mig);
		mlx5vf_close_device(&vf->mig);
		mlx5vf_unlock(&vf->mig);
	}
	vfio_pci_core_close_device(vdev);
}

static const struct vfio_device_ops mvp_vfio_ops = {
	.name = KBUILD_MODNAME,
	.init = mvp_init_dev,
	.release = mvp_release_dev,
	.open_device = mvp_open_device,
	.close_device = mvp_close_device,
	.ioctl = vfio_pci_core_ioctl,
	.device_feature = vfio_pci_core_ioctl_feature,
	.read = vfio_pci_core_read,
	.write = vfio_pci_core_write,
	.mmap = vfio_pci_core_mmap,
	.request = vfio_pci_core_request,
	.match = vfio_pci_core_match,
	/* NULL without CONFIG_IOMMUFD (Debian 6.12), the helpers otherwise. */
	.bind_iommufd = vfio_iommufd_physical_bind,
	.unbind_iommufd = vfio_iommufd_physical_unbind,
	.attach_ioas = vfio_iommufd_physical_attach_ioas,
	.detach_ioas = vfio_iommufd_physical_detach_ioas,
};

/*
 * A reset of the function completed (VFIO_DEVICE_RESET, open, close, AER):
 * the migration state becomes RUNNING and both files end, now or, if the
 * state lock is held, when its holder lets go (Linux's deferred reset).
 */
static void mvp_reset_done(struct pci_dev *pdev)
{
	struct vfio_pci_core_device *core = dev_get_drvdata(&pdev->dev);
	struct mlx5vf_pci_dev *vf;

	if (!core)
		return;
	vf = container_of(core, struct mlx5vf_pci_dev, core);
	if (!vf->migratable)
		return;
	if (mlx5vf_pf_ops.function_reset)
		mlx5vf_pf_ops.function_reset(vf);
	mlx5vf_reset_done(&vf->mig);
	wake_up_all(&vf->wq);
}

static const struct pci_error_handlers mvp_err_handlers = {
	.reset_done = mvp_reset_done,
	.error_detected = vfio_pci_core_aer_err_detected,
};

/* ------------------------------------------------------------------------ */
/* sysfs */

static struct mlx5vf_pci_dev *dev_to_mvp(struct device *dev)
{
	struct vfio_pci_core_device *core = dev_get_drvdata(dev);

	return core ? container_of(core, struct mlx5vf_pci_dev, core) : NULL;
}

static ssize_t vf_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct mlx5vf_pci_dev *vf = dev_to_mvp(dev);

	if (!vf || !vf->migratable)
		return -ENODEV;
	return sysfs_emit(buf, "%u\n", vf->vf);
}
static DEVICE_ATTR_RO(vf);

static ssize_t digest_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct mlx5vf_pci_dev *vf = dev_to_mvp(dev);
	char text[80];
	int ret;

	if (!vf || !vf->migratable)
		return -ENODEV;
	ret = mlx5vf_pf_ops.digest(vf, text, sizeof(text));
	return ret ? ret : sysfs_emit(buf, "%s\n", text);
}
static DEVICE_ATTR_RO(digest);

static ssize_t peak_buffer_bytes_show(struct device *dev, struct device_attribute *attr,
				      char *buf)
{
	struct mlx5vf_pci_dev *vf = dev_to_mvp(dev);

	if (!vf || !vf->migratable)
		return -ENODEV;
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&vf->peak_buffer_bytes));
}
static DEVICE_ATTR_RO(peak_buffer_bytes);

static struct attribute *mvp_dev_attrs[] = {
	&dev_attr_vf.attr,
	&dev_attr_digest.attr,
	&dev_attr_peak_buffer_bytes.attr,
	NULL,
};

static umode_t mvp_dev_attr_visible(struct kobject *kobj, struct attribute *attr, int n)
{
	if (attr == &dev_attr_digest.attr && !mlx5vf_pf_ops.digest)
		return 0;
	return attr->mode;
}

static const struct attribute_group mvp_dev_group = {
	.name = "mlx5vf",
	.attrs = mvp_dev_attrs,
	.is_visible = mvp_dev_attr_visible,
};

static const struct attribute_group *mvp_dev_groups[] = {
	&mvp_dev_group,
	NULL,
};

static ssize_t live_objects_show(struct device_driver *drv, char *buf)
{
	struct mlx5vf_pf_accounting acct = {};
	int len;

	if (mlx5vf_pf_ops.accounting)
		mlx5vf_pf_ops.accounting(&acct);
	len = sysfs_emit(buf, "devices %d\nbuffers %d\nbuffer_bytes %lld\nfiles %d\n"
			 "async_in_flight %d\n",
			 atomic_read(&live_devices), atomic_read(&live_buffers),
			 (long long)atomic64_read(&live_buffer_bytes), atomic_read(&live_files),
			 atomic_read(&live_async));
	if (mlx5vf_pf_ops.accounting)
		len += sysfs_emit_at(buf, len, "pds %u\nmkeys %u\niommu_mappings %u\n", acct.pds,
				     acct.mkeys, acct.iommu_mappings);
	return len;
}
static DRIVER_ATTR_RO(live_objects);

static struct attribute *mvp_drv_attrs[] = {
	&driver_attr_live_objects.attr,
	NULL,
};
ATTRIBUTE_GROUPS(mvp_drv);

/* ------------------------------------------------------------------------ */
/* The pci_driver */

static int mvp_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct mlx5vf_pci_dev *vf;
	int ret;

	vf = vfio_alloc_device(mlx5vf_pci_dev, core.vdev, &pdev->dev, &mvp_vfio_ops);
	if (IS_ERR(vf))
		return PTR_ERR(vf);
	dev_set_drvdata(&pdev->dev, &vf->core);
	ret = vfio_pci_core_register_device(&vf->core);
	if (ret) {
		vfio_put_device(&vf->core.vdev);
		return ret;
	}
	return 0;
}

static void mvp_remove(struct pci_dev *pdev)
{
	struct mlx5vf_pci_dev *vf = dev_to_mvp(&pdev->dev);

	vfio_pci_core_unregister_device(&vf->core);
	vfio_put_device(&vf->core.vdev);
}

/* The VF device IDs Linux's mlx5-vfio-pci matches: bound on request only. */
static const struct pci_device_id mvp_table[] = {
	/* ConnectX family mlx5Gen virtual function */
	{ PCI_DRIVER_OVERRIDE_DEVICE_VFIO(PCI_VENDOR_ID_MELLANOX, 0x101e) },
	{}
};
MODULE_DEVICE_TABLE(pci, mvp_table);

static struct pci_driver mvp_driver = {
	.name = KBUILD_MODNAME,
	.id_table = mvp_table,
	.probe = mvp_probe,
	.remove = mvp_remove,
	.err_handler = &mvp_err_handlers,
	.groups = mvp_drv_groups,
	.dev_groups = mvp_dev_groups,
	.driver_managed_dma = true,
};

static int __init mvp_init(void)
{
	int ret;

	/* Buffers are described to the device page by page, 4 KiB each. */
	BUILD_BUG_ON(PAGE_SIZE != MLX5VF_PAGE_SIZE);
	mvp_wq = alloc_workqueue(KBUILD_MODNAME, WQ_UNBOUND, 0);
	if (!mvp_wq)
		return -ENOMEM;
	if (mlx5vf_pf_ops.init) {
		ret = mlx5vf_pf_ops.init();
		if (ret)
			goto destroy_wq;
	}
	ret = pci_register_driver(&mvp_driver);
	if (ret)
		goto pf_exit;
	return 0;

pf_exit:
	if (mlx5vf_pf_ops.exit)
		mlx5vf_pf_ops.exit();
destroy_wq:
	destroy_workqueue(mvp_wq);
	return ret;
}

static void __exit mvp_exit(void)
{
	pci_unregister_driver(&mvp_driver);
	if (mlx5vf_pf_ops.exit)
		mlx5vf_pf_ops.exit();
	destroy_workqueue(mvp_wq);
	/* Anything still live here is a leak: say so loudly (the rig fails). */
	WARN(atomic_read(&live_devices) || atomic_read(&live_buffers) ||
	     atomic_read(&live_files) || atomic_read(&live_async),
	     KBUILD_MODNAME ": leaked: devices %d buffers %d files %d async %d\n",
	     atomic_read(&live_devices), atomic_read(&live_buffers), atomic_read(&live_files),
	     atomic_read(&live_async));
}

module_init(mvp_init);
module_exit(mvp_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("vfio_pci_core variant driver for ConnectX VFs with live migration (mlx5vf)");
