// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * mlx5vf_pci: a vfio_pci_core variant driver for ConnectX VFs whose
 * migration logic is libmlx5vf_linux (Rust, include/mlx5vf.h).
 *
 * This file is the pci_driver on vfio_pci_core (the regions, interrupts,
 * reset and DMA isolation are vfio_pci_core's own) and decides whether a VF
 * offers migration. The migration side (the vfio_migration_ops and the migration
 * data file, and the platform of libmlx5vf_linux: buffers, the device lock,
 * waits, and the delivery of asynchronous completions) is
 * mlx5vf_vfio_mig.c, which mlx5vf_sim shares. What needs the PF (commands,
 * DMA mapping, the SR-IOV events) goes through mlx5vf_pf_ops
 * (mlx5vf_pci.h), filled from mlx5_core in the production build and from
 * the simulated firmware in the test build; this file is the same in both.
 *
 * Sysfs: the bound device's mlx5vf/ group (vf: its index on the PF;
 * peak_buffer_bytes: the most buffer memory its migrations held at once;
 * digest, where the PF side can tell it) and the driver's live_objects (all
 * zero when nothing is bound, open or in flight).
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/sysfs.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>

#include "mlx5vf_pci.h"

static struct mlx5vf_pci_dev *to_mvp(struct vfio_device *vdev)
{
	return container_of(vdev, struct mlx5vf_pci_dev, core.vdev);
}

struct mlx5vf_vfio_dev *mlx5vf_vfio_dev_of(struct vfio_device *vdev)
{
	return &to_mvp(vdev)->mig;
}

/* ------------------------------------------------------------------------ */
/* Migration setup */

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
	ret = mlx5vf_vfio_dev_probe(&vf->mig, vf->vf);
	if (!ret && mlx5vf_pf_ops.watch) {
		ret = mlx5vf_pf_ops.watch(vf);
		if (ret)
			mlx5vf_vfio_dev_fini(&vf->mig);
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
	mlx5vf_vfio_dev_offer(&vf->mig);
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
	mlx5vf_vfio_dev_init(&vf->mig, vdev, mlx5vf_pf_ops.fw);
	mvp_setup_migration(vf);
	return 0;
}

static void mvp_release_dev(struct vfio_device *vdev)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);

	if (vf->migratable) {
		if (mlx5vf_pf_ops.unwatch)
			mlx5vf_pf_ops.unwatch(vf);
		mlx5vf_vfio_dev_fini(&vf->mig);
		mlx5vf_pf_ops.detach(vf);
		vf->migratable = false;
	}
	mlx5vf_vfio_dev_destroy(&vf->mig);
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
	if (vf->migratable)
		mlx5vf_vfio_open(&vf->mig);
	vfio_pci_core_finish_enable(&vf->core);
	return 0;
}

static void mvp_close_device(struct vfio_device *vdev)
{
	struct mlx5vf_pci_dev *vf = to_mvp(vdev);

	if (vf->migratable)
		mlx5vf_vfio_close(&vf->mig);
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
	mlx5vf_vfio_reset_done(&vf->mig);
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
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&vf->mig.peak_buffer_bytes));
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
	struct mlx5vf_vfio_live live;
	int len;

	if (mlx5vf_pf_ops.accounting)
		mlx5vf_pf_ops.accounting(&acct);
	mlx5vf_vfio_get_live(&live);
	len = sysfs_emit(buf, "devices %d\nbuffers %d\nbuffer_bytes %lld\nfiles %d\n"
			 "async_in_flight %d\n",
			 live.devices, live.buffers, (long long)live.buffer_bytes, live.files,
			 live.async);
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
	ret = mlx5vf_vfio_init();
	if (ret)
		return ret;
	if (mlx5vf_pf_ops.init) {
		ret = mlx5vf_pf_ops.init();
		if (ret)
			goto vfio_exit;
	}
	ret = pci_register_driver(&mvp_driver);
	if (ret)
		goto pf_exit;
	return 0;

pf_exit:
	if (mlx5vf_pf_ops.exit)
		mlx5vf_pf_ops.exit();
vfio_exit:
	mlx5vf_vfio_exit();
	return ret;
}

static void __exit mvp_exit(void)
{
	struct mlx5vf_vfio_live live;

	pci_unregister_driver(&mvp_driver);
	if (mlx5vf_pf_ops.exit)
		mlx5vf_pf_ops.exit();
	mlx5vf_vfio_exit();
	mlx5vf_vfio_get_live(&live);
	/* Anything still live here is a leak: say so loudly (the rig fails). */
	WARN(live.devices || live.buffers || live.files || live.async,
	     KBUILD_MODNAME ": leaked: devices %d buffers %d files %d async %d\n",
	     live.devices, live.buffers, live.files, live.async);
}

module_init(mvp_init);
module_exit(mvp_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("vfio_pci_core variant driver for ConnectX VFs with live migration (mlx5vf)");
