// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * mlx5vf_sim: simulated mlx5 VFs behind the real VFIO core.
 *
 * The module registers one emulated-IOMMU VFIO device per VF of a simulated
 * ConnectX PF (the sim firmware, compiled in from Rust) and drives its
 * migration with the mlx5vf driver logic (libmlx5vf_linux, also Rust). This
 * file is the module: its devices, their vfio_device_ops and sysfs. The
 * migration side (the platform of libmlx5vf_linux, the vfio_migration_ops,
 * the data file) is mlx5vf_vfio_mig.c, shared with mlx5vf_pci; this file
 * gives it the simulated firmware's commands.
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
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>
#include <linux/workqueue.h>

#include "mlx5vf_ksim.h"
#include "mlx5vf_vfio_mig.h"

#define MVS_NAME "mlx5vf-sim"
#define MVS_MAX_VFS 4

static char *spec = "sim:state=256M,vfs=2";
module_param(spec, charp, 0444);
MODULE_PARM_DESC(spec, "simulated PF: sim:state=SIZE,vfs=N,precopy=on|off,... (mlx5vf --help)");

/* ------------------------------------------------------------------------ */
/* The simulated firmware */

static unsigned int save_delay_us;
module_param(save_delay_us, uint, 0444);
MODULE_PARM_DESC(save_delay_us, "extra latency of every SAVE completion, in microseconds");

/* Serialises every call into the simulated firmware. */
static DEFINE_MUTEX(ksim_lock);
/* Runs the simulated firmware's asynchronous commands. */
static struct workqueue_struct *mvs_fw_wq;

/* The firmware side of one asynchronous command (mlx5vf_vfio_async.fw_priv). */
struct mvs_fw_async {
	struct work_struct work;
	struct mlx5vf_vfio_async *a;
};

static int mvs_fw_init(void)
{
	int ret, vfs;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_configure(spec, strlen(spec));
	vfs = ret ? 0 : max(mlx5vf_ksim_vf_count(), 0);
	mutex_unlock(&ksim_lock);
	if (ret) {
		pr_err(KBUILD_MODNAME ": bad spec \"%s\"\n", spec);
		return ret;
	}
	mvs_fw_wq = alloc_workqueue(KBUILD_MODNAME "_fw", WQ_UNBOUND, 0);
	if (!mvs_fw_wq)
		return -ENOMEM;
	return vfs;
}

static void mvs_fw_exit(void)
{
	destroy_workqueue(mvs_fw_wq);
}

static int mvs_fw_exec(struct mlx5vf_vfio_dev *dev, const void *in, size_t in_len, void *out,
		       size_t out_len)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_exec(in, in_len, out, out_len);
	mutex_unlock(&ksim_lock);
	return ret;
}

static void mvs_fw_async_work(struct work_struct *work)
{
	struct mvs_fw_async *sa = container_of(work, struct mvs_fw_async, work);
	struct mlx5vf_vfio_async *a = sa->a;
	int ret;

	if (!a->load && save_delay_us)
		usleep_range(save_delay_us, save_delay_us + save_delay_us / 8 + 1);
	ret = mvs_fw_exec(a->dev, a->in, a->in_len, a->out, sizeof(a->out));
	mlx5vf_vfio_async_done(a, ret);
}

static int mvs_fw_exec_async(struct mlx5vf_vfio_async *a)
{
	struct mvs_fw_async *sa = (struct mvs_fw_async *)a->fw_priv;

	sa->a = a;
	INIT_WORK(&sa->work, mvs_fw_async_work);
	queue_work(mvs_fw_wq, &sa->work);
	return 0;
}

static int mvs_fw_iommu(bool map, struct mlx5vf_vfio_buf *b)
{
	u64 iova = (u64)(uintptr_t)b->mem;
	int ret;

	mutex_lock(&ksim_lock);
	if (map)
		ret = mlx5vf_ksim_iommu_map(iova, b->len);
	else
		ret = mlx5vf_ksim_iommu_unmap(iova, b->len);
	mutex_unlock(&ksim_lock);
	return ret;
}

/* vmalloc memory is page aligned: the page addresses are the IOVAs. */
static int mvs_fw_dma_map(struct mlx5vf_vfio_buf *b)
{
	u32 i;
	int ret = mvs_fw_iommu(true, b);

	if (ret)
		return ret;
	for (i = 0; i < b->npages; i++)
		b->dma[i] = (dma_addr_t)(uintptr_t)b->mem + (dma_addr_t)i * MLX5VF_PAGE_SIZE;
	return 0;
}

static void mvs_fw_dma_unmap(struct mlx5vf_vfio_buf *b)
{
	WARN_ON(mvs_fw_iommu(false, b));
}

static const struct mlx5vf_vfio_fw_ops mvs_fw_ops = {
	.exec = mvs_fw_exec,
	.exec_async = mvs_fw_exec_async,
	.async_priv_size = sizeof(struct mvs_fw_async),
	.dma_map = mvs_fw_dma_map,
	.dma_unmap = mvs_fw_dma_unmap,
};

static void mvs_fw_reset_vf(u16 vf)
{
	mutex_lock(&ksim_lock);
	mlx5vf_ksim_reset_vf(vf);
	mutex_unlock(&ksim_lock);
}

static int mvs_fw_digest(u16 vf, char *buf, size_t len)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_digest(vf, buf, len);
	mutex_unlock(&ksim_lock);
	return ret;
}

static void mvs_fw_accounting(struct mlx5vf_ksim_accounting *acct)
{
	mutex_lock(&ksim_lock);
	mlx5vf_ksim_accounting(acct);
	mutex_unlock(&ksim_lock);
}

/* ------------------------------------------------------------------------ */
/* The devices */

static struct platform_device *pdevs[MVS_MAX_VFS];
static int npdevs;

struct mvs_dev {
	struct vfio_device vdev;
	u16 vf;
	struct mlx5vf_vfio_dev mig;
};

struct mlx5vf_vfio_dev *mlx5vf_vfio_dev_of(struct vfio_device *vdev)
{
	return &container_of(vdev, struct mvs_dev, vdev)->mig;
}

/* ------------------------------------------------------------------------ */
/* vfio_device_ops */

static int mvs_init_dev(struct vfio_device *vdev)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);
	int ret;

	d->vf = to_platform_device(vdev->dev)->id;
	if (d->vf >= MVS_MAX_VFS)
		return -EINVAL;
	mlx5vf_vfio_dev_init(&d->mig, vdev, &mvs_fw_ops);
	ret = mlx5vf_vfio_dev_probe(&d->mig, d->vf);
	if (ret) {
		mlx5vf_vfio_dev_destroy(&d->mig);
		return ret;
	}
	mlx5vf_vfio_dev_offer(&d->mig);
	return 0;
}

static void mvs_release_dev(struct vfio_device *vdev)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);

	mlx5vf_vfio_dev_fini(&d->mig);
	mlx5vf_vfio_dev_destroy(&d->mig);
}

static int mvs_open_device(struct vfio_device *vdev)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);

	/* vfio-pci resets the function at open; so do we. */
	mvs_fw_reset_vf(d->vf);
	mlx5vf_vfio_open(&d->mig);
	return 0;
}

static void mvs_close_device(struct vfio_device *vdev)
{
	struct mvs_dev *d = container_of(vdev, struct mvs_dev, vdev);

	mlx5vf_vfio_close(&d->mig);
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
		mvs_fw_reset_vf(d->vf);
		mlx5vf_vfio_reset_done(&d->mig);
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

	rc = mvs_fw_digest(to_platform_device(dev)->id, hex, sizeof(hex));
	return rc ? rc : sysfs_emit(buf, "%s\n", hex);
}
static DEVICE_ATTR_RO(digest);

/* The driver's attributes go before its .remove: the device is still there. */
static ssize_t peak_buffer_bytes_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct mvs_dev *d = dev_get_drvdata(dev);

	if (!d)
		return -ENODEV;
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&d->mig.peak_buffer_bytes));
}
static DEVICE_ATTR_RO(peak_buffer_bytes);

static ssize_t live_objects_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct mlx5vf_ksim_accounting a = {};
	struct mlx5vf_vfio_live live;

	mvs_fw_accounting(&a);
	mlx5vf_vfio_get_live(&live);
	return sysfs_emit(buf,
			  "buffers %d\nbuffer_bytes %lld\nfiles %d\nsaves_in_flight %d\n"
			  "pds %u\nmkeys %u\niommu_mappings %u\n",
			  live.buffers, (long long)live.buffer_bytes, live.files, live.async,
			  a.pds, a.mkeys, a.iommu_mappings);
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

	vfs = mvs_fw_init();
	if (vfs < 0)
		return vfs;
	ret = mlx5vf_vfio_init();
	if (ret)
		goto simfw_exit;
	ret = platform_driver_register(&mvs_driver);
	if (ret)
		goto vfio_exit;
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
vfio_exit:
	mlx5vf_vfio_exit();
simfw_exit:
	mvs_fw_exit();
	return ret;
}

static void __exit mvs_exit(void)
{
	struct mlx5vf_ksim_accounting a = {};
	struct mlx5vf_vfio_live live;

	mvs_unregister_devices();
	platform_driver_unregister(&mvs_driver);
	mvs_fw_exit();
	mlx5vf_vfio_exit();
	mvs_fw_accounting(&a);
	mlx5vf_vfio_get_live(&live);
	/* Anything still live here is a leak: say so loudly (the rig fails). */
	WARN(live.buffers || live.files || live.async || live.devices || a.pds || a.mkeys ||
	     a.iommu_mappings,
	     MVS_NAME ": leaked: buffers %d files %d saves %d devices %d pds %u mkeys %u iommu %u\n",
	     live.buffers, live.files, live.async, live.devices, a.pds, a.mkeys,
	     a.iommu_mappings);
	pr_info(MVS_NAME ": unloaded\n");
}

module_init(mvs_init);
module_exit(mvs_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("Simulated mlx5 VFs with live migration, behind the VFIO core (mlx5vf)");
MODULE_SOFTDEP("pre: vfio vfio_iommu_type1");
