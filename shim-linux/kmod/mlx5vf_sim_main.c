// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * mlx5vf_sim: simulated mlx5 VFs behind the real VFIO core.
 *
 * The module registers one emulated-IOMMU VFIO device per VF of a simulated
 * ConnectX PF (the sim firmware, compiled in from Rust) and drives its
 * migration with the mlx5vf driver logic (libmlx5vf_linux, also Rust). This
 * file is the module: its devices, their vfio_device_ops and sysfs. The
 * migration side (the platform of libmlx5vf_linux, the vfio_migration_ops,
 * the data file) is mlx5vf_vfio_mig.c, shared with mlx5vf_pci, and the
 * firmware behind it mlx5vf_simfw.c, shared with mlx5vf_pci_test.
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
#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>

#include "mlx5vf_simfw.h"
#include "mlx5vf_vfio_mig.h"

#define MVS_NAME "mlx5vf-sim"
#define MVS_MAX_VFS 4

static char *spec = "sim:state=256M,vfs=2";
module_param(spec, charp, 0444);
MODULE_PARM_DESC(spec, "simulated PF: sim:state=SIZE,vfs=N,precopy=on|off,... (mlx5vf --help)");

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
	mlx5vf_vfio_dev_init(&d->mig, vdev, &mlx5vf_simfw_ops);
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
	mlx5vf_simfw_reset_vf(d->vf);
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
		mlx5vf_simfw_reset_vf(d->vf);
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

	rc = mlx5vf_simfw_digest(to_platform_device(dev)->id, hex, sizeof(hex));
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

	mlx5vf_simfw_accounting(&a);
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

	vfs = mlx5vf_simfw_init(spec);
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
	mlx5vf_simfw_exit();
	return ret;
}

static void __exit mvs_exit(void)
{
	struct mlx5vf_ksim_accounting a = {};
	struct mlx5vf_vfio_live live;

	mvs_unregister_devices();
	platform_driver_unregister(&mvs_driver);
	mlx5vf_simfw_exit();
	mlx5vf_vfio_exit();
	mlx5vf_simfw_accounting(&a);
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
