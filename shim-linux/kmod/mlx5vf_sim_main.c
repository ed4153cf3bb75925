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
 * Per VF, debugfs directory mlx5vf_sim/<name>/ (name as mlx5vf specs use
 * it: vfio-mig:mlx5vf-sim.N), the simulated guest of the page tracker. The
 * PF has one tracker (one VF tracks at a time), so the guest and its
 * ground truth are the PF's: every VF's files reach the same ones.
 *   guest_dma       write "PAGES SEED": the guest's device writes PAGES
 *                   guest pages chosen from SEED, inside and outside the
 *                   tracked ranges
 *   guest_truth     open() takes the ground truth and clears it; reads
 *                   return it: bit i = guest page at IOVA i * 4096 written
 *                   since the previous open, little-endian u64 words,
 *                   guest_pages / 8 bytes
 *   guest_pages     the number of 4 KiB guest pages (text)
 *   tracker         the tracker object's state (none, tracking, reporting,
 *                   error), its ranges as the driver combined them and its
 *                   page size, whether the reporting channel is open, and
 *                   the model's counters (messages, addresses, guest_writes)
 *   tracker_fault   write "KIND [AFTER]": none, error-report (ERROR with a
 *                   final report), error-silent (ERROR with only an object
 *                   change event), silent (firmware stops reporting), after
 *                   AFTER report messages (default 0); event-storm
 *                   (object-change events in a loop, at once)
 *   tracker_config  write "RANGES LOG_MIN_PAGE LOG_MAX_PAGE LOG_MSG
 *                   END_MARKER": the tracker's limits for the next
 *                   log_start (default 4 12 21 12 0)
 *
 * Parameters: spec (the sim spec: state size, VFs, PRE_COPY, ...),
 * chunk_size / chunk_slots (the driver's chunk policy, 0 = Linux's),
 * save_delay_us (extra latency of every SAVE completion).
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
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
/* debugfs mlx5vf_sim/ (NULL or an error pointer without debugfs: harmless). */
static struct dentry *debug_root;

struct mvs_dev {
	struct vfio_device vdev;
	u16 vf;
	struct mlx5vf_vfio_dev mig;
	struct dentry *debug;
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
		/*
		 * A function-level reset, then the driver's reset_done; what the
		 * device tracked is gone, so logging ends (no lock-order hazard
		 * here: this device has no mmap faults to wait on).
		 */
		mlx5vf_simfw_reset_vf(d->vf);
		mlx5vf_vfio_reset_done(&d->mig);
		mlx5vf_vfio_log_end(&d->mig);
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
			  "report_channels %d\npds %u\nmkeys %u\niommu_mappings %u\n",
			  live.buffers, (long long)live.buffer_bytes, live.files, live.async,
			  live.channels, a.pds, a.mkeys, a.iommu_mappings);
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
/* debugfs: the page tracker's simulated guest */

/* Longest line a write-only file takes. */
#define DEBUG_LINE_MAX 96

static int debug_line(const char __user *ubuf, size_t len, char *line)
{
	if (len >= DEBUG_LINE_MAX)
		return -EINVAL;
	if (copy_from_user(line, ubuf, len))
		return -EFAULT;
	line[len] = 0;
	return 0;
}

struct guest_dma_args {
	u64 pages;
	u64 seed;
};

static int call_guest_dma(void *arg)
{
	struct guest_dma_args *a = arg;

	return mlx5vf_ksim_guest_dma(a->pages, a->seed);
}

static ssize_t guest_dma_write(struct file *filp, const char __user *ubuf, size_t len,
			       loff_t *ppos)
{
	struct guest_dma_args a;
	char line[DEBUG_LINE_MAX];
	int ret = debug_line(ubuf, len, line);

	if (ret)
		return ret;
	if (sscanf(line, "%llu %llu", &a.pages, &a.seed) != 2)
		return -EINVAL;
	ret = mlx5vf_simfw_locked(call_guest_dma, &a);
	return ret ? ret : len;
}

static const struct file_operations guest_dma_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = guest_dma_write,
};

/* The snapshot an open of guest_truth took. */
struct guest_truth {
	size_t words;
	u64 bits[];
};

static int call_guest_truth(void *arg)
{
	struct guest_truth *t = arg;

	return mlx5vf_ksim_guest_truth(t->bits, t->words);
}

static int call_guest_pages(void *arg)
{
	return mlx5vf_ksim_guest_pages();
}

static int guest_truth_open(struct inode *inode, struct file *filp)
{
	struct guest_truth *t;
	int pages, ret;

	pages = mlx5vf_simfw_locked(call_guest_pages, NULL);
	if (pages <= 0)
		return pages ? pages : -ENODEV;
	t = kvzalloc(struct_size(t, bits, DIV_ROUND_UP(pages, 64)), GFP_KERNEL);
	if (!t)
		return -ENOMEM;
	t->words = DIV_ROUND_UP(pages, 64);
	ret = mlx5vf_simfw_locked(call_guest_truth, t);
	if (ret < 0) {
		kvfree(t);
		return ret;
	}
	/* The host is little-endian (x86): the words are already in order. */
	filp->private_data = t;
	return 0;
}

static ssize_t guest_truth_read(struct file *filp, char __user *ubuf, size_t len, loff_t *ppos)
{
	struct guest_truth *t = filp->private_data;

	return simple_read_from_buffer(ubuf, len, ppos, t->bits, t->words * sizeof(u64));
}

static int guest_truth_release(struct inode *inode, struct file *filp)
{
	kvfree(filp->private_data);
	return 0;
}

static const struct file_operations guest_truth_fops = {
	.owner = THIS_MODULE,
	.open = guest_truth_open,
	.read = guest_truth_read,
	.release = guest_truth_release,
	.llseek = default_llseek,
};

static int guest_pages_show(struct seq_file *m, void *unused)
{
	int pages = mlx5vf_simfw_locked(call_guest_pages, NULL);

	if (pages < 0)
		return pages;
	seq_printf(m, "%d\n", pages);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(guest_pages);

struct tracker_info {
	int state;
	int channel;
	u32 ranges;
	u64 page_size;
	u64 messages;
	u64 addresses;
	u64 guest_writes;
};

static int call_tracker_info(void *arg)
{
	struct tracker_info *i = arg;

	i->state = mlx5vf_ksim_tracker_state();
	i->channel = mlx5vf_ksim_tracker_channel_open();
	if (mlx5vf_ksim_tracker_object(&i->ranges, &i->page_size)) {
		i->ranges = 0;
		i->page_size = 0;
	}
	return mlx5vf_ksim_tracker_stats(&i->messages, &i->addresses, &i->guest_writes);
}

static int tracker_show(struct seq_file *m, void *unused)
{
	static const char *const names[] = { "tracking", "reporting", "error" };
	struct tracker_info i;
	int ret = mlx5vf_simfw_locked(call_tracker_info, &i);

	if (ret)
		return ret;
	seq_printf(m, "state %s\nranges %u\npage_size %llu\nchannel %d\nmessages %llu\n"
		   "addresses %llu\nguest_writes %llu\n",
		   i.state >= 0 && i.state < ARRAY_SIZE(names) ? names[i.state] : "none",
		   i.ranges, i.page_size, i.channel, i.messages, i.addresses, i.guest_writes);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(tracker);

struct tracker_fault_args {
	u32 kind;
	u64 after;
};

static int call_tracker_fault(void *arg)
{
	struct tracker_fault_args *a = arg;

	return mlx5vf_ksim_tracker_fault(a->kind, a->after);
}

static ssize_t tracker_fault_write(struct file *filp, const char __user *ubuf, size_t len,
				   loff_t *ppos)
{
	static const char *const kinds[] = { "none", "error-report", "error-silent", "silent",
					     "event-storm" };
	struct tracker_fault_args a = {};
	char line[DEBUG_LINE_MAX], kind[24];
	int ret = debug_line(ubuf, len, line), n;

	if (ret)
		return ret;
	n = sscanf(line, "%23s %llu", kind, &a.after);
	if (n < 1)
		return -EINVAL;
	ret = match_string(kinds, ARRAY_SIZE(kinds), kind);
	if (ret < 0)
		return ret;
	a.kind = ret;
	ret = mlx5vf_simfw_locked(call_tracker_fault, &a);
	return ret ? ret : len;
}

static const struct file_operations tracker_fault_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = tracker_fault_write,
};

struct tracker_config_args {
	u8 ranges, min_page, max_page, msg, end_marker;
};

static int call_tracker_config(void *arg)
{
	struct tracker_config_args *a = arg;

	return mlx5vf_ksim_tracker_config(a->ranges, a->min_page, a->max_page, a->msg,
					  a->end_marker);
}

static ssize_t tracker_config_write(struct file *filp, const char __user *ubuf, size_t len,
				    loff_t *ppos)
{
	struct tracker_config_args a;
	char line[DEBUG_LINE_MAX];
	int ret = debug_line(ubuf, len, line);

	if (ret)
		return ret;
	if (sscanf(line, "%hhu %hhu %hhu %hhu %hhu", &a.ranges, &a.min_page, &a.max_page, &a.msg,
		   &a.end_marker) != 5 || a.end_marker > 1)
		return -EINVAL;
	ret = mlx5vf_simfw_locked(call_tracker_config, &a);
	return ret ? ret : len;
}

static const struct file_operations tracker_config_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = tracker_config_write,
};

static void mvs_debugfs_add(struct mvs_dev *d, struct platform_device *pdev)
{
	d->debug = debugfs_create_dir(dev_name(&pdev->dev), debug_root);
	debugfs_create_file("guest_dma", 0200, d->debug, NULL, &guest_dma_fops);
	debugfs_create_file("guest_truth", 0400, d->debug, NULL, &guest_truth_fops);
	debugfs_create_file("guest_pages", 0444, d->debug, NULL, &guest_pages_fops);
	debugfs_create_file("tracker", 0444, d->debug, NULL, &tracker_fops);
	debugfs_create_file("tracker_fault", 0200, d->debug, NULL, &tracker_fault_fops);
	debugfs_create_file("tracker_config", 0200, d->debug, NULL, &tracker_config_fops);
}

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
	mvs_debugfs_add(d, pdev);
	dev_info(&pdev->dev, "VF %u: migration flags %#llx, DMA logging %s, %s\n", d->vf,
		 (unsigned long long)d->vdev.migration_flags, d->vdev.log_ops ? "on" : "off",
		 dev_name(&d->vdev.device));
	return 0;
}

static void mvs_remove(struct platform_device *pdev)
{
	struct mvs_dev *d = platform_get_drvdata(pdev);

	debugfs_remove_recursive(d->debug);
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
	debug_root = debugfs_create_dir("mlx5vf_sim", NULL);
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
	debugfs_remove_recursive(debug_root);
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
	debugfs_remove_recursive(debug_root);
	mlx5vf_simfw_exit();
	mlx5vf_vfio_exit();
	mlx5vf_simfw_accounting(&a);
	mlx5vf_vfio_get_live(&live);
	/* Anything still live here is a leak: say so loudly (the rig fails). */
	WARN(live.buffers || live.files || live.async || live.devices || live.channels || a.pds ||
	     a.mkeys || a.iommu_mappings,
	     MVS_NAME ": leaked: buffers %d files %d saves %d devices %d channels %d pds %u mkeys %u iommu %u\n",
	     live.buffers, live.files, live.async, live.devices, live.channels, a.pds, a.mkeys,
	     a.iommu_mappings);
	pr_info(MVS_NAME ": unloaded\n");
}

module_init(mvs_init);
module_exit(mvs_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("Simulated mlx5 VFs with live migration, behind the VFIO core (mlx5vf)");
MODULE_SOFTDEP("pre: vfio vfio_iommu_type1");
