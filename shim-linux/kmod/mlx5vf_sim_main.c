// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * mlx5vf_sim: simulated mlx5 VFs behind the real VFIO core.
 *
 * The module registers one emulated-IOMMU VFIO device per VF of a simulated
 * ConnectX PF (the sim firmware, compiled in from Rust) and drives its
 * migration with the mlx5vf driver logic (libmlx5vf_linux, also Rust): this
 * file is only the platform glue a variant driver would write over
 * mlx5_core: command execution, the asynchronous SAVE (a work item),
 * buffers, the state mutex and wait queue, the vfio_migration_ops and the
 * data file's file_operations.
 *
 * Per VF (platform device "mlx5vf-sim.N"), sysfs group mlx5vf/:
 *   digest             the VF's state digest (SHA-256 hex, as the userspace
 *                      simulator prints it)
 *   peak_buffer_bytes  the most buffer memory the VF's driver held at once
 *   live_objects       module-wide live counts; all zero when idle
 *
 * Parameters: spec (the sim spec: state size, VFs, PRE_COPY, ...),
 * chunk_size / chunk_slots (the driver's chunk policy, 0 = Linux's),
 * save_delay_us (extra latency of every SAVE completion).
 */
#include <linux/anon_inodes.h>
#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "mlx5vf.h"
#include "mlx5vf_ksim.h"

#define MVS_NAME "mlx5vf-sim"
#define MVS_MAX_VFS 4
/* A SAVE_VHCA_STATE input is 64 bytes; room for growth. */
#define MVS_SAVE_IN_MAX 128

static char *spec = "sim:state=256M,vfs=2";
module_param(spec, charp, 0444);
MODULE_PARM_DESC(spec, "simulated PF: sim:state=SIZE,vfs=N,precopy=on|off,... (mlx5vf --help)");
static unsigned long chunk_size;
module_param(chunk_size, ulong, 0444);
MODULE_PARM_DESC(chunk_size, "chunk buffer size in bytes (0: 8 MiB, as Linux)");
static unsigned int chunk_slots;
module_param(chunk_slots, uint, 0444);
MODULE_PARM_DESC(chunk_slots, "chunk slots (0: 2, as Linux)");
static unsigned int save_delay_us;
module_param(save_delay_us, uint, 0444);
MODULE_PARM_DESC(save_delay_us, "extra latency of every SAVE completion, in microseconds");

/* Serialises every call into the simulated firmware. */
static DEFINE_MUTEX(ksim_lock);
static struct workqueue_struct *save_wq;
static struct platform_device *pdevs[MVS_MAX_VFS];
static int npdevs;

/* Module-wide live objects: all zero when nothing is open or in flight. */
static atomic_t live_buffers = ATOMIC_INIT(0);
static atomic64_t live_buffer_bytes = ATOMIC64_INIT(0);
static atomic_t live_files = ATOMIC_INIT(0);
static atomic_t live_saves = ATOMIC_INIT(0); /* SAVEs and LOADs in flight */
static atomic_t live_devices = ATOMIC_INIT(0);
/* Per VF (kept outside the device, which sysfs readers must not chase). */
static atomic64_t vf_buffer_bytes[MVS_MAX_VFS];
static atomic64_t vf_peak_buffer_bytes[MVS_MAX_VFS];

struct mvs_dev {
	struct vfio_device vdev;
	u16 vf;
	struct mutex state_mutex;
	wait_queue_head_t wq;
	struct mlx5vf_device mig;
};

struct mvs_buf {
	void *mem;
	size_t len;
	int maps;
	struct mvs_dev *d;
};

struct mvs_file {
	struct mvs_dev *d;
	struct mutex read_lock;
	struct mlx5vf_file mf;
};

/* An asynchronous SAVE or LOAD: its input, run by a work item. */
struct mvs_save {
	struct work_struct work;
	struct mvs_dev *d;
	bool load;
	u64 token;
	size_t in_len;
	u8 in[MVS_SAVE_IN_MAX];
};

static int ksim_exec(const void *in, size_t in_len, void *out, size_t out_len)
{
	int rc;

	mutex_lock(&ksim_lock);
	rc = mlx5vf_ksim_exec(in, in_len, out, out_len);
	mutex_unlock(&ksim_lock);
	return rc;
}

static int ksim_iommu(bool map, u64 iova, u64 len)
{
	int rc;

	mutex_lock(&ksim_lock);
	rc = map ? mlx5vf_ksim_iommu_map(iova, len) : mlx5vf_ksim_iommu_unmap(iova, len);
	mutex_unlock(&ksim_lock);
	return rc;
}

static void ksim_reset_vf(u16 vf)
{
	mutex_lock(&ksim_lock);
	mlx5vf_ksim_reset_vf(vf);
	mutex_unlock(&ksim_lock);
}

/* ------------------------------------------------------------------------ */
/* Platform callbacks of libmlx5vf_linux */

static int op_exec(void *ctx, const void *in, size_t in_len, void *out, size_t out_len)
{
	return ksim_exec(in, in_len, out, out_len);
}

static void mvs_save_work(struct work_struct *work)
{
	struct mvs_save *s = container_of(work, struct mvs_save, work);
	struct mvs_dev *d = s->d;
	u8 out[MLX5VF_SAVE_OUT_LEN];
	int rc;

	if (!s->load && save_delay_us)
		usleep_range(save_delay_us, save_delay_us + save_delay_us / 8 + 1);
	memset(out, 0, sizeof(out));
	rc = ksim_exec(s->in, s->in_len, out, sizeof(out));
	mlx5vf_lock(&d->mig);
	if (s->load)
		rc = mlx5vf_load_complete(&d->mig, s->token, rc, out, sizeof(out));
	else
		rc = mlx5vf_save_complete(&d->mig, s->token, rc, out, sizeof(out));
	mlx5vf_unlock(&d->mig);
	WARN_ONCE(rc, MVS_NAME ": %s completion refused: %d\n", s->load ? "LOAD" : "SAVE", rc);
	kfree(s);
	atomic_dec(&live_saves);
}

/* The firmware's asynchronous commands: a work item runs one, then delivers. */
static int mvs_start_async(struct mvs_dev *d, const void *in, size_t in_len, uint64_t token,
			   bool load)
{
	struct mvs_save *s;

	if (in_len > MVS_SAVE_IN_MAX)
		return -EINVAL;
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	INIT_WORK(&s->work, mvs_save_work);
	s->d = d;
	s->load = load;
	s->token = token;
	s->in_len = in_len;
	memcpy(s->in, in, in_len);
	atomic_inc(&live_saves);
	queue_work(save_wq, &s->work);
	return 0;
}

static int op_start_save(void *ctx, const void *in, size_t in_len, uint64_t token)
{
	return mvs_start_async(ctx, in, in_len, token, false);
}

/* LOADs run asynchronously too: image k+1 arrives while image k LOADs. */
static int op_start_load(void *ctx, const void *in, size_t in_len, uint64_t token)
{
	return mvs_start_async(ctx, in, in_len, token, true);
}

static int op_alloc_buffer(void *ctx, uint32_t npages, uint32_t dir, uint64_t *buffer)
{
	struct mvs_dev *d = ctx;
	struct mvs_buf *b;
	s64 now, peak;

	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	b->len = (size_t)npages * MLX5VF_PAGE_SIZE;
	/* vmalloc memory is page aligned: the page addresses are the IOVAs. */
	b->mem = vzalloc(b->len);
	if (!b->mem) {
		kfree(b);
		return -ENOMEM;
	}
	b->d = d;
	atomic_inc(&live_buffers);
	atomic64_add(b->len, &live_buffer_bytes);
	now = atomic64_add_return(b->len, &vf_buffer_bytes[d->vf]);
	peak = atomic64_read(&vf_peak_buffer_bytes[d->vf]);
	while (now > peak && !atomic64_try_cmpxchg(&vf_peak_buffer_bytes[d->vf], &peak, now))
		;
	*buffer = (uint64_t)(uintptr_t)b;
	return 0;
}

static struct mvs_buf *to_buf(uint64_t buffer)
{
	return (struct mvs_buf *)(uintptr_t)buffer;
}

static void unmap_iommu(const uint64_t *buffers, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++) {
		struct mvs_buf *b = to_buf(buffers[i]);

		if (--b->maps == 0)
			WARN_ON(ksim_iommu(false, (u64)(uintptr_t)b->mem, b->len));
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
	int rc = 0;

	for (mapped = 0; mapped < count; mapped++) {
		struct mvs_buf *b = to_buf(buffers[mapped]);

		if (b->maps++ == 0) {
			rc = ksim_iommu(true, (u64)(uintptr_t)b->mem, b->len);
			if (rc) {
				b->maps--;
				goto unmap;
			}
		}
		npages += b->len / MLX5VF_PAGE_SIZE;
	}
	rc = -EINVAL;
	if (npages > U32_MAX)
		goto unmap;
	rc = -ENOMEM;
	pages = kvmalloc_array(npages, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		goto unmap;
	for (i = 0; i < count; i++) {
		struct mvs_buf *b = to_buf(buffers[i]);
		size_t k;

		for (k = 0; k < b->len / MLX5VF_PAGE_SIZE; k++)
			pages[n++] = (u64)(uintptr_t)b->mem + k * MLX5VF_PAGE_SIZE;
	}
	in_len = mlx5vf_create_mkey_in_len(npages);
	in = kvzalloc(in_len, GFP_KERNEL);
	if (!in)
		goto unmap;
	in_len = mlx5vf_encode_create_mkey(in, in_len, pd, pages, npages);
	if (in_len < 0) {
		rc = in_len;
		goto unmap;
	}
	rc = ksim_exec(in, in_len, out, sizeof(out));
	if (!rc)
		rc = mlx5vf_decode_create_mkey(out, sizeof(out), mkey);
	if (!rc)
		goto out;
unmap:
	unmap_iommu(buffers, mapped);
out:
	kvfree(in);
	kvfree(pages);
	return rc;
}

static int op_unmap_buffers(void *ctx, uint32_t mkey, const uint64_t *buffers, size_t count)
{
	u8 in[MLX5VF_DESTROY_MKEY_IN_LEN], out[MLX5VF_DESTROY_MKEY_OUT_LEN];
	int rc = mlx5vf_encode_destroy_mkey(in, sizeof(in), mkey);

	if (rc >= 0)
		rc = ksim_exec(in, rc, out, sizeof(out));
	if (!rc)
		rc = mlx5vf_decode_destroy_mkey(out, sizeof(out));
	unmap_iommu(buffers, count);
	return rc;
}

static void op_free_buffer(void *ctx, uint64_t buffer)
{
	struct mvs_buf *b = to_buf(buffer);

	WARN_ON(b->maps);
	atomic64_sub(b->len, &vf_buffer_bytes[b->d->vf]);
	atomic64_sub(b->len, &live_buffer_bytes);
	atomic_dec(&live_buffers);
	vfree(b->mem);
	kfree(b);
}

static bool in_buf(struct mvs_buf *b, uint64_t offset, uint64_t len)
{
	return !WARN_ON_ONCE(offset > b->len || len > b->len - offset);
}

static uint32_t op_crc32c(void *ctx, uint64_t buffer, uint64_t offset, uint64_t len, uint32_t crc)
{
	struct mvs_buf *b = to_buf(buffer);

	if (!in_buf(b, offset, len))
		return crc;
	return mlx5vf_crc32c(crc, (u8 *)b->mem + offset, len);
}

static int64_t op_buffer_to_user(void *ctx, mlx5vf_uptr user_dst, uint64_t buffer, uint64_t offset,
				 size_t len)
{
	struct mvs_buf *b = to_buf(buffer);

	if (!in_buf(b, offset, len))
		return -EINVAL;
	return len - copy_to_user(user_dst, (u8 *)b->mem + offset, len);
}

static int64_t op_buffer_from_user(void *ctx, uint64_t buffer, uint64_t offset,
				   mlx5vf_const_uptr user_src, size_t len)
{
	struct mvs_buf *b = to_buf(buffer);

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
	struct mvs_dev *d = ctx;

	mutex_lock(&d->state_mutex);
}

static bool op_trylock(void *ctx)
{
	struct mvs_dev *d = ctx;

	return mutex_trylock(&d->state_mutex);
}

static void op_unlock(void *ctx)
{
	struct mvs_dev *d = ctx;

	mutex_unlock(&d->state_mutex);
}

static void op_wake(void *ctx)
{
	struct mvs_dev *d = ctx;

	wake_up_all(&d->wq);
}

static const struct mlx5vf_platform_ops mvs_platform_ops = {
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

/* ------------------------------------------------------------------------ */
/* The data file */

/* Waits for the library's event counter to move past seq. */
static int mvs_wait(struct mvs_dev *d, u32 seq)
{
	return wait_event_interruptible(d->wq, mlx5vf_events(&d->mig) != seq);
}

static ssize_t mvs_read(struct file *filp, char __user *buf, size_t len, loff_t *pos)
{
	struct mvs_file *f = filp->private_data;
	u32 flags = 0;
	size_t done = 0;
	int ret;

	if (filp->f_flags & O_NONBLOCK)
		flags |= MLX5VF_IO_NONBLOCK;
	if (pos)
		flags |= MLX5VF_IO_POSITIONED;
	if (mutex_lock_interruptible(&f->read_lock))
		return -ERESTARTSYS;
	for (;;) {
		u32 seq = mlx5vf_events(&f->d->mig);

		ret = mlx5vf_file_read(&f->mf, buf, len, flags, &done);
		if (ret != MLX5VF_RETRY)
			break;
		if (mvs_wait(f->d, seq)) {
			ret = -ERESTARTSYS;
			break;
		}
	}
	mutex_unlock(&f->read_lock);
	return ret ? ret : done;
}

static ssize_t mvs_write(struct file *filp, const char __user *buf, size_t len, loff_t *pos)
{
	struct mvs_file *f = filp->private_data;
	u32 flags = 0;
	size_t done = 0;
	int ret;

	if (filp->f_flags & O_NONBLOCK)
		flags |= MLX5VF_IO_NONBLOCK;
	if (pos)
		flags |= MLX5VF_IO_POSITIONED;
	for (;;) {
		u32 seq = mlx5vf_events(&f->d->mig);

		ret = mlx5vf_file_write(&f->mf, buf, len, flags, &done);
		if (ret != MLX5VF_RETRY)
			break;
		if (mvs_wait(f->d, seq))
			return -ERESTARTSYS;
	}
	return ret ? ret : done;
}

static __poll_t mvs_poll(struct file *filp, struct poll_table_struct *wait)
{
	struct mvs_file *f = filp->private_data;

	poll_wait(filp, &f->d->wq, wait);
	return (__force __poll_t)mlx5vf_file_poll(&f->mf);
}

static long mvs_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct mvs_file *f = filp->private_data;
	int ret;

	for (;;) {
		u32 seq = mlx5vf_events(&f->d->mig);

		ret = mlx5vf_file_ioctl(&f->mf, cmd, (void __user *)arg);
		if (ret != MLX5VF_RETRY)
			return ret;
		if (mvs_wait(f->d, seq))
			return -ERESTARTSYS;
	}
}

static int mvs_release(struct inode *inode, struct file *filp)
{
	struct mvs_file *f = filp->private_data;
	struct mvs_dev *d = f->d;

	mlx5vf_file_release(&f->mf);
	mutex_destroy(&f->read_lock);
	kfree(f);
	atomic_dec(&live_files);
	/* The file held the device: its storage must outlive the file. */
	vfio_put_device(&d->vdev);
	return 0;
}

static const struct file_operations mvs_save_fops = {
	.owner = THIS_MODULE,
	.read = mvs_read,
	.poll = mvs_poll,
	.unlocked_ioctl = mvs_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = mvs_release,
};

static const struct file_operations mvs_resume_fops = {
	.owner = THIS_MODULE,
	.write = mvs_write,
	.unlocked_ioctl = mvs_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = mvs_release,
};

/* ------------------------------------------------------------------------ */
/* vfio_migration_ops */

static struct file *mvs_set_state(struct vfio_device *vdev, enum vfio_device_mig_state new_state)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);
	struct mvs_file *f;
	struct file *filp;
	int ret;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return ERR_PTR(-ENOMEM);
	f->d = d;
	mutex_init(&f->read_lock);
	mlx5vf_lock(&d->mig);
	for (;;) {
		u32 seq = mlx5vf_events(&d->mig);

		ret = mlx5vf_set_state(&d->mig, new_state, &f->mf);
		if (ret != MLX5VF_RETRY)
			break;
		mlx5vf_unlock(&d->mig);
		if (mvs_wait(d, seq)) {
			mutex_destroy(&f->read_lock);
			kfree(f);
			return ERR_PTR(-ERESTARTSYS);
		}
		mlx5vf_lock(&d->mig);
	}
	mlx5vf_unlock(&d->mig);
	if (ret <= 0) {
		mutex_destroy(&f->read_lock);
		kfree(f);
		return ret ? ERR_PTR(ret) : NULL;
	}
	/* The file keeps the device (and the module, through .owner). */
	get_device(&vdev->device);
	atomic_inc(&live_files);
	filp = anon_inode_getfile("[mlx5vf_mig]",
				  ret == MLX5VF_NEW_SAVING_FILE ? &mvs_save_fops : &mvs_resume_fops,
				  f, ret == MLX5VF_NEW_SAVING_FILE ? O_RDONLY : O_WRONLY);
	if (IS_ERR(filp)) {
		mlx5vf_file_release(&f->mf);
		mutex_destroy(&f->read_lock);
		kfree(f);
		atomic_dec(&live_files);
		vfio_put_device(vdev);
		return filp;
	}
	stream_open(filp->f_inode, filp);
	return filp;
}

static int mvs_get_state(struct vfio_device *vdev, enum vfio_device_mig_state *state)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);
	u32 s;
	int ret;

	mlx5vf_lock(&d->mig);
	ret = mlx5vf_get_state(&d->mig, &s);
	mlx5vf_unlock(&d->mig);
	if (!ret)
		*state = s;
	return ret;
}

static int mvs_get_data_size(struct vfio_device *vdev, unsigned long *stop_copy_length)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);
	u64 size;
	int ret;

	mlx5vf_lock(&d->mig);
	ret = mlx5vf_get_data_size(&d->mig, &size);
	mlx5vf_unlock(&d->mig);
	if (!ret)
		*stop_copy_length = size;
	return ret;
}

static const struct vfio_migration_ops mvs_mig_ops = {
	.migration_set_state = mvs_set_state,
	.migration_get_state = mvs_get_state,
	.migration_get_data_size = mvs_get_data_size,
};

/* ------------------------------------------------------------------------ */
/* vfio_device_ops */

/* Waits until the device can be torn down (no SAVE in flight). */
static void mvs_fini(struct mvs_dev *d)
{
	int ret;

	while ((ret = mlx5vf_device_fini(&d->mig)) == MLX5VF_RETRY)
		flush_workqueue(save_wq);
	WARN(ret, MVS_NAME ": device teardown failed: %d\n", ret);
}

static int mvs_init_dev(struct vfio_device *vdev)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);
	struct mlx5vf_config cfg;
	void *scratch;
	int ret;

	d->vf = to_platform_device(vdev->dev)->id;
	if (d->vf >= MVS_MAX_VFS)
		return -EINVAL;
	mutex_init(&d->state_mutex);
	init_waitqueue_head(&d->wq);
	mlx5vf_config_default(&cfg);
	if (chunk_size)
		cfg.chunk_size = chunk_size;
	if (chunk_slots)
		cfg.chunk_slots = chunk_slots;
	ret = mlx5vf_device_init(&d->mig, &mvs_platform_ops, d, &cfg);
	if (ret)
		return ret;
	scratch = kzalloc(MLX5VF_PROBE_SCRATCH_LEN, GFP_KERNEL);
	if (!scratch) {
		mvs_fini(d);
		return -ENOMEM;
	}
	mlx5vf_lock(&d->mig);
	ret = mlx5vf_device_probe(&d->mig, d->vf, scratch, MLX5VF_PROBE_SCRATCH_LEN);
	mlx5vf_unlock(&d->mig);
	kfree(scratch);
	if (ret) {
		mvs_fini(d);
		return ret;
	}
	vdev->migration_flags = mlx5vf_migration_flags(&d->mig);
	vdev->mig_ops = &mvs_mig_ops;
	atomic_inc(&live_devices);
	return 0;
}

static void mvs_release_dev(struct vfio_device *vdev)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);

	mvs_fini(d);
	mutex_destroy(&d->state_mutex);
	atomic_dec(&live_devices);
}

static int mvs_open_device(struct vfio_device *vdev)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);

	/* vfio-pci resets the function at open; so do we. */
	ksim_reset_vf(d->vf);
	mlx5vf_lock(&d->mig);
	mlx5vf_open_device(&d->mig);
	mlx5vf_unlock(&d->mig);
	return 0;
}

static void mvs_close_device(struct vfio_device *vdev)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);

	mlx5vf_lock(&d->mig);
	mlx5vf_close_device(&d->mig);
	mlx5vf_unlock(&d->mig);
}

static long mvs_device_ioctl(struct vfio_device *vdev, unsigned int cmd, unsigned long arg)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);

	switch (cmd) {
	case VFIO_DEVICE_GET_INFO: {
		struct vfio_device_info info;
		unsigned long minsz = offsetofend(struct vfio_device_info, num_irqs);

		if (copy_from_user(&info, (void __user *)arg, minsz))
			return -EFAULT;
		if (info.argsz < minsz)
			return -EINVAL;
		info.flags = VFIO_DEVICE_FLAGS_RESET;
		info.num_regions = 0;
		info.num_irqs = 0;
		return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_RESET:
		/* A function-level reset, then the driver's reset_done. */
		ksim_reset_vf(d->vf);
		mlx5vf_reset_done(&d->mig);
		wake_up_all(&d->wq);
		return 0;
	}
	return -ENOTTY;
}

static const struct vfio_device_ops mvs_vfio_ops = {
	.name = MVS_NAME,
	.init = mvs_init_dev,
	.release = mvs_release_dev,
	.open_device = mvs_open_device,
	.close_device = mvs_close_device,
	.ioctl = mvs_device_ioctl,
	.bind_iommufd = vfio_iommufd_emulated_bind,
	.unbind_iommufd = vfio_iommufd_emulated_unbind,
	.attach_ioas = vfio_iommufd_emulated_attach_ioas,
	.detach_ioas = vfio_iommufd_emulated_detach_ioas,
};

/* ------------------------------------------------------------------------ */
/* sysfs */

static ssize_t digest_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	char hex[65];
	int rc;

	mutex_lock(&ksim_lock);
	rc = mlx5vf_ksim_digest(to_platform_device(dev)->id, hex, sizeof(hex));
	mutex_unlock(&ksim_lock);
	return rc ? rc : sysfs_emit(buf, "%s\n", hex);
}
static DEVICE_ATTR_RO(digest);

static ssize_t peak_buffer_bytes_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%lld\n",
			  (long long)atomic64_read(&vf_peak_buffer_bytes[to_platform_device(dev)->id]));
}
static DEVICE_ATTR_RO(peak_buffer_bytes);

static ssize_t live_objects_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct mlx5vf_ksim_accounting a = {};

	mutex_lock(&ksim_lock);
	mlx5vf_ksim_accounting(&a);
	mutex_unlock(&ksim_lock);
	return sysfs_emit(buf,
			  "buffers %d\nbuffer_bytes %lld\nfiles %d\nsaves_in_flight %d\n"
			  "pds %u\nmkeys %u\niommu_mappings %u\n",
			  atomic_read(&live_buffers), atomic64_read(&live_buffer_bytes),
			  atomic_read(&live_files), atomic_read(&live_saves), a.pds, a.mkeys,
			  a.iommu_mappings);
}
static DEVICE_ATTR_RO(live_objects);

static struct attribute *mvs_attrs[] = {
	&dev_attr_digest.attr,
	&dev_attr_peak_buffer_bytes.attr,
	&dev_attr_live_objects.attr,
	NULL,
};

static const struct attribute_group mvs_group = {
	.name = "mlx5vf",
	.attrs = mvs_attrs,
};

static const struct attribute_group *mvs_groups[] = {
	&mvs_group,
	NULL,
};

/* ------------------------------------------------------------------------ */
/* The platform driver: one VFIO device per simulated VF */

static int mvs_probe(struct platform_device *pdev)
{
	struct mvs_dev *d;
	int ret;

	d = vfio_alloc_device(mvs_dev, vdev, &pdev->dev, &mvs_vfio_ops);
	if (IS_ERR(d))
		return PTR_ERR(d);
	ret = vfio_register_emulated_iommu_dev(&d->vdev);
	if (ret) {
		vfio_put_device(&d->vdev);
		return ret;
	}
	platform_set_drvdata(pdev, d);
	dev_info(&pdev->dev, "VF %u: migration flags %#llx, %s\n", d->vf,
		 (unsigned long long)d->vdev.migration_flags, dev_name(&d->vdev.device));
	return 0;
}

static void mvs_remove(struct platform_device *pdev)
{
	struct mvs_dev *d = platform_get_drvdata(pdev);

	vfio_unregister_group_dev(&d->vdev);
	platform_set_drvdata(pdev, NULL);
	vfio_put_device(&d->vdev);
}

static struct platform_driver mvs_driver = {
	.probe = mvs_probe,
	.remove = mvs_remove,
	.driver = {
		.name = MVS_NAME,
		.dev_groups = mvs_groups,
	},
};

static void mvs_unregister_devices(void)
{
	while (npdevs > 0)
		platform_device_unregister(pdevs[--npdevs]);
}

static int __init mvs_init(void)
{
	int ret, vfs, i;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_configure(spec, strlen(spec));
	vfs = ret ? 0 : mlx5vf_ksim_vf_count();
	mutex_unlock(&ksim_lock);
	if (ret) {
		pr_err(MVS_NAME ": bad spec \"%s\"\n", spec);
		return ret;
	}
	save_wq = alloc_workqueue("mlx5vf_sim_save", WQ_UNBOUND, 0);
	if (!save_wq)
		return -ENOMEM;
	ret = platform_driver_register(&mvs_driver);
	if (ret)
		goto destroy_wq;
	for (i = 0; i < vfs && i < MVS_MAX_VFS; i++) {
		struct platform_device *p = platform_device_register_simple(MVS_NAME, i, NULL, 0);

		if (IS_ERR(p)) {
			ret = PTR_ERR(p);
			goto unregister;
		}
		pdevs[npdevs++] = p;
	}
	pr_info(MVS_NAME ": %d simulated VF(s) from \"%s\"\n", npdevs, spec);
	return 0;

unregister:
	mvs_unregister_devices();
	platform_driver_unregister(&mvs_driver);
destroy_wq:
	destroy_workqueue(save_wq);
	return ret;
}

static void __exit mvs_exit(void)
{
	struct mlx5vf_ksim_accounting a = {};

	mvs_unregister_devices();
	platform_driver_unregister(&mvs_driver);
	destroy_workqueue(save_wq);
	mutex_lock(&ksim_lock);
	mlx5vf_ksim_accounting(&a);
	mutex_unlock(&ksim_lock);
	/* Anything still live here is a leak: say so loudly (the rig fails). */
	WARN(atomic_read(&live_buffers) || atomic_read(&live_files) ||
	     atomic_read(&live_saves) || atomic_read(&live_devices) || a.pds || a.mkeys ||
	     a.iommu_mappings,
	     MVS_NAME ": leaked: buffers %d files %d saves %d devices %d pds %u mkeys %u iommu %u\n",
	     atomic_read(&live_buffers), atomic_read(&live_files), atomic_read(&live_saves),
	     atomic_read(&live_devices), a.pds, a.mkeys, a.iommu_mappings);
	pr_info(MVS_NAME ": unloaded\n");
}

module_init(mvs_init);
module_exit(mvs_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("Simulated mlx5 VFs with live migration, behind the VFIO core (mlx5vf)");
MODULE_SOFTDEP("pre: vfio vfio_iommu_type1");
