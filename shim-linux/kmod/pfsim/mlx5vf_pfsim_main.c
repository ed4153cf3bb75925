// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * mlx5vf_pfsim: simulated ConnectX PFs behind the real VFIO core, for a
 * driver in userspace that owns the PF's command queue (mlx5vf's vfio-pf:
 * backend, as rdma-core's mlx5 VFIO provider owns a real one).
 *
 * The module registers one emulated-IOMMU VFIO device per PF (platform
 * device "mlx5vf-pfsim.N", N < pfs), each the register-level model of the
 * simulated firmware (Rust, mlx5vf_ksim_pf.h) in static memory. It offers
 * what vfio-pci offers for a PF that the userspace driver needs:
 *
 *   BAR0 (region 0, 8 KiB)  the initialization segment, served by the
 *       model: 4-byte, 4-byte-aligned reads and writes, big-endian as the
 *       device's registers are (what ioread32be reads); any other width or
 *       alignment is -EINVAL. No mmap: every access is a pread/pwrite.
 *   config space (region 7, 256 bytes)  a type 0 header: vendor 0x15b3,
 *       device 0x1021 (ConnectX-7), class Ethernet; the command register
 *       keeps its memory-space and bus-master bits, everything else is
 *       read-only (BAR sizing is not emulated). No capabilities, so no
 *       MSI-X: the driver polls.
 *   VFIO_DEVICE_RESET  a function-level reset of the PF.
 *
 * DMA: the model reads the queue, mailboxes and pages and writes SAVE data
 * with vfio_dma_rw() at the IOVAs the user mapped with VFIO_IOMMU_MAP_DMA,
 * through a bounce buffer of 256 KiB per PF (the longest single access).
 * An unmapped IOVA, or DMA while the command register has bus mastering
 * off, fails the access, which the model reports as a DMA fault.
 *
 * Commands: a doorbell runs its commands at once, in the pwrite() that
 * rang it (the queue's process: vfio_dma_rw() reaches the memory of the
 * process that mapped it, or any from a kernel thread), except SAVE and
 * LOAD, which run later on a workqueue, as on hardware, where they take
 * long and complete while the driver does other things. Both go through
 * the same mutex per PF.
 *
 * Open, close and reset: opening the device resets the function (as
 * vfio-pci does) and opens the model's IOMMU window; closing it drops
 * queued commands, waits for a running one, resets the function (its
 * pages, PDs and mkeys go; the VFs keep their state) and frees what the
 * open held. Nothing outlives a close: the rig checks live_objects.
 *
 * Per PF, sysfs group mlx5vf/ on the platform device:
 *   digests       "vfN <SHA-256 hex>" per VF of the PF
 *   counters      commands run at the doorbell and on the workqueue, and
 *                 the model's counters (delivery errors, DMA faults, ...)
 *   live_objects  module-wide live counts; all zero when idle
 *   vf_reset      (write-only) "N": a function-level reset of VF N, what
 *                 a PCI FLR of the VF does (vfio-pf:'s device reset)
 * debugfs mlx5vf_pfsim/N/stuck_opcode: armed at every open, the next
 * command with that opcode (0xffffffff: any command) is never handed back,
 * a stuck firmware; 0 (the default) arms nothing.
 * debugfs mlx5vf_pfsim/N/dma_skew: added to every IOVA the model uses, a
 * device that DMAs where nothing is mapped (0, the default: none).
 *
 * Parameters: spec (the sim spec of every PF; PF n's VF seeds are moved by
 * n * the model's VF limit), pfs (PFs, default 2).
 */
#include <linux/debugfs.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci_regs.h>
#include <linux/platform_device.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/unaligned.h>
#include <linux/vfio.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>

#include "mlx5vf_ksim_pf.h"

#define PFS_NAME "mlx5vf-pfsim"
#define PFS_MAX 4
#define PFS_SLOTS 32
/* The initialization segment through the health counter (0x1010). */
#define PFS_BAR0_SIZE 0x2000
#define PFS_CONFIG_SIZE 256
/* vfio-pci's region layout: the index in the top bits of the offset. */
#define PFS_REGION_SHIFT 40
#define PFS_REGION_MASK ((1ULL << PFS_REGION_SHIFT) - 1)
#define PFS_BOUNCE_SIZE (256 * 1024)
/* Scratch for one command: what every small command needs at once ... */
#define PFS_SCRATCH_MIN 4112
/* ... and at most the model's longest input (CREATE_MKEY of 4 GiB). */
#define PFS_SCRATCH_MAX (272 + 8 * (1 << 20))
#define PFS_CMD_DBELL 0x018
#define PFS_VENDOR 0x15b3
#define PFS_DEVICE 0x1021

static char *spec = "sim:state=256M,vfs=2";
module_param(spec, charp, 0444);
MODULE_PARM_DESC(spec, "simulated firmware of every PF: sim:state=SIZE,vfs=N,... (mlx5vf --help)");
static unsigned int pfs = 2;
module_param(pfs, uint, 0444);
MODULE_PARM_DESC(pfs, "number of simulated PFs (at most 4)");

struct pfs_dev {
	struct vfio_device vdev;
	u32 index;
	/* Serialises the model (mlx5vf_ksim_pf_*) and everything below. */
	struct mutex lock;
	bool open;
	u16 command;
	struct mlx5vf_ksim_pf_dma dma;
	u8 *in, *out;
	size_t in_len, out_len;
	/* SAVE and LOAD slots for the workqueue, in doorbell order. */
	u8 fifo[PFS_SLOTS];
	unsigned int head, queued;
	struct work_struct work;
	u32 stuck_opcode;
	u64 dma_skew;
	u64 at_doorbell, on_workqueue, dma_errors;
};

static struct platform_device *pdevs[PFS_MAX];
static struct pfs_dev *devs[PFS_MAX];
static int npdevs;
static struct workqueue_struct *pfs_wq;
static struct dentry *pfs_debugfs;
/* Devices open, and scratch bytes held, module-wide. */
static atomic_t live_open = ATOMIC_INIT(0);
static atomic64_t live_scratch = ATOMIC64_INIT(0);

/* ------------------------------------------------------------------------ */
/* DMA and commands */

static int pfs_dma_rw(void *ctx, u64 iova, u8 *buf, size_t len, bool write)
{
	struct pfs_dev *d = ctx;
	int ret = -EPERM;

	lockdep_assert_held(&d->lock);
	if (d->command & PCI_COMMAND_MASTER)
		ret = vfio_dma_rw(&d->vdev, iova + d->dma_skew, buf, len, write);
	if (ret)
		d->dma_errors++;
	return ret;
}

static void pfs_free_scratch(struct pfs_dev *d)
{
	atomic64_sub(d->in_len + d->out_len, &live_scratch);
	kvfree(d->in);
	kvfree(d->out);
	d->in = d->out = NULL;
	d->in_len = d->out_len = 0;
}

/* Grows one scratch buffer to len (within the model's limits). */
static int pfs_grow(u8 **buf, size_t *have, u64 want)
{
	size_t len = clamp_t(u64, want, PFS_SCRATCH_MIN, PFS_SCRATCH_MAX);
	u8 *p;

	if (*buf && *have >= len)
		return 0;
	p = kvzalloc(len, GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	atomic64_add(len - *have, &live_scratch);
	kvfree(*buf);
	*buf = p;
	*have = len;
	return 0;
}

/* Runs one slot; info is what a peek found (zero when nothing). */
static void pfs_run(struct pfs_dev *d, u8 slot, const struct mlx5vf_ksim_pf_slot *info)
{
	lockdep_assert_held(&d->lock);
	/* Without the memory, the model answers with a length delivery error. */
	if (pfs_grow(&d->in, &d->in_len, info->inlen) || pfs_grow(&d->out, &d->out_len, info->outlen))
		dev_warn_ratelimited(d->vdev.dev, "no scratch for slot %u (%llu/%llu bytes)\n", slot,
				     info->inlen, info->outlen);
	if (!d->in || !d->out)
		return;
	mlx5vf_ksim_pf_execute(d->index, slot, &d->dma, d->in, d->in_len, d->out, d->out_len);
}

static void pfs_work(struct work_struct *work)
{
	struct pfs_dev *d = container_of(work, struct pfs_dev, work);
	struct mlx5vf_ksim_pf_slot info;
	u8 slot;

	for (;;) {
		mutex_lock(&d->lock);
		if (!d->open || !d->queued) {
			mutex_unlock(&d->lock);
			return;
		}
		slot = d->fifo[d->head];
		d->head = (d->head + 1) % PFS_SLOTS;
		d->queued--;
		memset(&info, 0, sizeof(info));
		mlx5vf_ksim_pf_peek(d->index, slot, &d->dma, &info);
		pfs_run(d, slot, &info);
		d->on_workqueue++;
		mutex_unlock(&d->lock);
	}
}

/* A doorbell rang for the slots in rung. */
static void pfs_doorbell(struct pfs_dev *d, u32 rung)
{
	struct mlx5vf_ksim_pf_slot info;
	u8 slot;

	lockdep_assert_held(&d->lock);
	for (slot = 0; slot < PFS_SLOTS; slot++) {
		if (!(rung & BIT(slot)))
			continue;
		memset(&info, 0, sizeof(info));
		if (mlx5vf_ksim_pf_peek(d->index, slot, &d->dma, &info) == 1 && info.slow &&
		    d->queued < PFS_SLOTS) {
			d->fifo[(d->head + d->queued) % PFS_SLOTS] = slot;
			d->queued++;
			queue_work(pfs_wq, &d->work);
			continue;
		}
		/* Everything else (a spurious doorbell too: the model counts it). */
		pfs_run(d, slot, &info);
		d->at_doorbell++;
	}
}

/* ------------------------------------------------------------------------ */
/* Regions */

static ssize_t pfs_bar0(struct pfs_dev *d, char __user *ubuf, size_t count, u64 off, bool write)
{
	__be32 raw;
	u32 value = 0, rung = 0;
	int ret;

	if (count != 4 || off % 4 || off + 4 > PFS_BAR0_SIZE)
		return -EINVAL;
	if (write && copy_from_user(&raw, ubuf, 4))
		return -EFAULT;
	mutex_lock(&d->lock);
	if (write) {
		ret = mlx5vf_ksim_pf_write32(d->index, off, be32_to_cpu(raw), &rung);
		if (!ret && rung)
			pfs_doorbell(d, rung);
	} else {
		ret = mlx5vf_ksim_pf_read32(d->index, off, &value);
		raw = cpu_to_be32(value);
	}
	mutex_unlock(&d->lock);
	if (ret)
		return ret;
	if (!write && copy_to_user(ubuf, &raw, 4))
		return -EFAULT;
	return 4;
}

static void pfs_config_space(struct pfs_dev *d, u8 *c)
{
	memset(c, 0, PFS_CONFIG_SIZE);
	put_unaligned_le16(PFS_VENDOR, c + PCI_VENDOR_ID);
	put_unaligned_le16(PFS_DEVICE, c + PCI_DEVICE_ID);
	put_unaligned_le16(d->command, c + PCI_COMMAND);
	c[PCI_CLASS_DEVICE + 1] = 0x02; /* network */
	c[PCI_CLASS_DEVICE] = 0x00; /* Ethernet */
	c[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;
	put_unaligned_le32(PCI_BASE_ADDRESS_MEM_TYPE_64 | PCI_BASE_ADDRESS_MEM_PREFETCH,
			   c + PCI_BASE_ADDRESS_0);
	put_unaligned_le16(PFS_VENDOR, c + PCI_SUBSYSTEM_VENDOR_ID);
	put_unaligned_le16(PFS_DEVICE, c + PCI_SUBSYSTEM_ID);
}

static ssize_t pfs_config(struct pfs_dev *d, char __user *ubuf, size_t count, u64 off, bool write)
{
	u8 c[PFS_CONFIG_SIZE], in[PFS_CONFIG_SIZE];
	u64 i;

	if (off >= PFS_CONFIG_SIZE || count > PFS_CONFIG_SIZE - off)
		return -EINVAL;
	if (write && copy_from_user(in, ubuf, count))
		return -EFAULT;
	mutex_lock(&d->lock);
	if (write) {
		/* Only the command register's memory and bus-master bits take. */
		for (i = off; i < off + count; i++) {
			u8 b = in[i - off];

			if (i == PCI_COMMAND)
				d->command = (d->command & 0xff00) |
					     (b & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));
		}
	}
	pfs_config_space(d, c);
	mutex_unlock(&d->lock);
	if (!write && copy_to_user(ubuf, c + off, count))
		return -EFAULT;
	return count;
}

static ssize_t pfs_rw(struct vfio_device *vdev, char __user *ubuf, size_t count, loff_t *ppos,
		      bool write)
{
	struct pfs_dev *d = container_of(vdev, struct pfs_dev, vdev);
	u64 index = (u64)*ppos >> PFS_REGION_SHIFT, off = *ppos & PFS_REGION_MASK;
	ssize_t ret;

	switch (index) {
	case VFIO_PCI_BAR0_REGION_INDEX:
		ret = pfs_bar0(d, ubuf, count, off, write);
		break;
	case VFIO_PCI_CONFIG_REGION_INDEX:
		ret = pfs_config(d, ubuf, count, off, write);
		break;
	default:
		return -EINVAL;
	}
	if (ret > 0)
		*ppos += ret;
	return ret;
}

static ssize_t pfs_read(struct vfio_device *vdev, char __user *buf, size_t count, loff_t *ppos)
{
	return pfs_rw(vdev, buf, count, ppos, false);
}

static ssize_t pfs_write(struct vfio_device *vdev, const char __user *buf, size_t count,
			 loff_t *ppos)
{
	return pfs_rw(vdev, (char __user *)buf, count, ppos, true);
}

/* ------------------------------------------------------------------------ */
/* vfio_device_ops */

/* The function back to power-on (the device stays open or closed). */
static void pfs_reset_locked(struct pfs_dev *d)
{
	lockdep_assert_held(&d->lock);
	d->queued = 0;
	d->command = 0;
	mlx5vf_ksim_pf_reset(d->index);
}

static int pfs_init_dev(struct vfio_device *vdev)
{
	struct pfs_dev *d = container_of(vdev, struct pfs_dev, vdev);

	d->index = to_platform_device(vdev->dev)->id;
	if (d->index >= PFS_MAX)
		return -EINVAL;
	mutex_init(&d->lock);
	INIT_WORK(&d->work, pfs_work);
	d->dma.bounce = vzalloc(PFS_BOUNCE_SIZE);
	if (!d->dma.bounce)
		return -ENOMEM;
	d->dma.bounce_len = PFS_BOUNCE_SIZE;
	d->dma.ctx = d;
	d->dma.rw = pfs_dma_rw;
	return 0;
}

static void pfs_release_dev(struct vfio_device *vdev)
{
	struct pfs_dev *d = container_of(vdev, struct pfs_dev, vdev);

	vfree(d->dma.bounce);
	mutex_destroy(&d->lock);
}

static int pfs_open_device(struct vfio_device *vdev)
{
	struct pfs_dev *d = container_of(vdev, struct pfs_dev, vdev);
	int ret;

	mutex_lock(&d->lock);
	pfs_reset_locked(d);
	ret = mlx5vf_ksim_pf_attach_iommu(d->index, true);
	if (!ret && d->stuck_opcode)
		ret = mlx5vf_ksim_pf_arm_stuck(d->index, d->stuck_opcode);
	if (ret) {
		mlx5vf_ksim_pf_attach_iommu(d->index, false);
	} else {
		d->open = true;
		atomic_inc(&live_open);
	}
	mutex_unlock(&d->lock);
	return ret;
}

static void pfs_close_device(struct vfio_device *vdev)
{
	struct pfs_dev *d = container_of(vdev, struct pfs_dev, vdev);

	mutex_lock(&d->lock);
	d->open = false;
	d->queued = 0;
	mutex_unlock(&d->lock);
	/* A command running on the workqueue finishes; queued ones are dropped. */
	cancel_work_sync(&d->work);
	mutex_lock(&d->lock);
	pfs_reset_locked(d);
	WARN_ON(mlx5vf_ksim_pf_attach_iommu(d->index, false));
	pfs_free_scratch(d);
	atomic_dec(&live_open);
	mutex_unlock(&d->lock);
}

static long pfs_get_info(unsigned long arg)
{
	struct vfio_device_info info;
	unsigned long minsz = offsetofend(struct vfio_device_info, num_irqs);

	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	info.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET;
	info.num_regions = VFIO_PCI_NUM_REGIONS;
	info.num_irqs = VFIO_PCI_NUM_IRQS;
	return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
}

static long pfs_region_info(unsigned long arg)
{
	struct vfio_region_info info;
	unsigned long minsz = offsetofend(struct vfio_region_info, offset);

	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_REGIONS)
		return -EINVAL;
	info.offset = (u64)info.index << PFS_REGION_SHIFT;
	info.cap_offset = 0;
	switch (info.index) {
	case VFIO_PCI_BAR0_REGION_INDEX:
		info.size = PFS_BAR0_SIZE;
		info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		break;
	case VFIO_PCI_CONFIG_REGION_INDEX:
		info.size = PFS_CONFIG_SIZE;
		info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		break;
	default:
		/* The other BARs, the ROM and VGA: absent, as vfio-pci reports them. */
		info.size = 0;
		info.flags = 0;
	}
	return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
}

static long pfs_irq_info(unsigned long arg)
{
	struct vfio_irq_info info;
	unsigned long minsz = offsetofend(struct vfio_irq_info, count);

	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_IRQS)
		return -EINVAL;
	/* No interrupts at all (no MSI-X): the driver polls its queue. */
	info.flags = 0;
	info.count = 0;
	return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
}

static long pfs_ioctl(struct vfio_device *vdev, unsigned int cmd, unsigned long arg)
{
	struct pfs_dev *d = container_of(vdev, struct pfs_dev, vdev);

	switch (cmd) {
	case VFIO_DEVICE_GET_INFO:
		return pfs_get_info(arg);
	case VFIO_DEVICE_GET_REGION_INFO:
		return pfs_region_info(arg);
	case VFIO_DEVICE_GET_IRQ_INFO:
		return pfs_irq_info(arg);
	case VFIO_DEVICE_RESET:
		mutex_lock(&d->lock);
		pfs_reset_locked(d);
		mutex_unlock(&d->lock);
		/* A SAVE or LOAD that was running has finished (it held the lock). */
		return 0;
	}
	return -ENOTTY;
}

static const struct vfio_device_ops pfs_vfio_ops = {
	.name = PFS_NAME,
	.init = pfs_init_dev,
	.release = pfs_release_dev,
	.open_device = pfs_open_device,
	.close_device = pfs_close_device,
	.read = pfs_read,
	.write = pfs_write,
	.ioctl = pfs_ioctl,
	.bind_iommufd = vfio_iommufd_emulated_bind,
	.unbind_iommufd = vfio_iommufd_emulated_unbind,
	.attach_ioas = vfio_iommufd_emulated_attach_ioas,
	.detach_ioas = vfio_iommufd_emulated_detach_ioas,
};

/* ------------------------------------------------------------------------ */
/* sysfs */

static struct pfs_dev *pfs_of(struct device *dev)
{
	return dev_get_drvdata(dev);
}

static ssize_t digests_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct pfs_dev *d = pfs_of(dev);
	struct mlx5vf_ksim_pf_status st = {};
	char hex[65];
	ssize_t n = 0;
	u16 vf;

	if (!d)
		return -ENODEV;
	mutex_lock(&d->lock);
	mlx5vf_ksim_pf_status(d->index, &st);
	for (vf = 0; vf < st.vfs; vf++) {
		if (mlx5vf_ksim_pf_digest(d->index, vf, hex, sizeof(hex)))
			break;
		n += sysfs_emit_at(buf, n, "vf%u %s\n", vf, hex);
	}
	mutex_unlock(&d->lock);
	return n;
}
static DEVICE_ATTR_RO(digests);

static ssize_t counters_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct pfs_dev *d = pfs_of(dev);
	struct mlx5vf_ksim_pf_status st = {};
	u64 doorbell, wq, dma;

	if (!d)
		return -ENODEV;
	mutex_lock(&d->lock);
	mlx5vf_ksim_pf_status(d->index, &st);
	doorbell = d->at_doorbell;
	wq = d->on_workqueue;
	dma = d->dma_errors;
	mutex_unlock(&d->lock);
	return sysfs_emit(buf,
			  "commands %llu\nat_doorbell %llu\non_workqueue %llu\ndelivery_errors %llu\n"
			  "spurious_doorbells %llu\ndma_faults %llu\nvfio_dma_rw_errors %llu\n",
			  st.commands, doorbell, wq, st.delivery_errors, st.spurious_doorbells,
			  st.dma_faults, dma);
}
static DEVICE_ATTR_RO(counters);

static ssize_t live_objects_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct mlx5vf_ksim_pf_status st;
	u32 pages = 0, pds = 0, mkeys = 0, maps = 0, queued = 0;
	int i;

	for (i = 0; i < npdevs; i++) {
		struct pfs_dev *d = devs[i];

		if (!d)
			continue;
		memset(&st, 0, sizeof(st));
		mutex_lock(&d->lock);
		mlx5vf_ksim_pf_status(d->index, &st);
		queued += d->queued;
		mutex_unlock(&d->lock);
		pages += st.fw_pages;
		pds += st.pds;
		mkeys += st.mkeys;
		maps += st.iommu_mappings;
	}
	return sysfs_emit(buf,
			  "open_devices %d\nscratch_bytes %lld\nqueued_commands %u\nfw_pages %u\n"
			  "pds %u\nmkeys %u\niommu_windows %u\n",
			  atomic_read(&live_open), (long long)atomic64_read(&live_scratch), queued,
			  pages, pds, mkeys, maps);
}
static DEVICE_ATTR_RO(live_objects);

static ssize_t vf_reset_store(struct device *dev, struct device_attribute *attr, const char *buf,
			      size_t count)
{
	struct pfs_dev *d = pfs_of(dev);
	u16 vf;
	int ret;

	if (!d)
		return -ENODEV;
	ret = kstrtou16(buf, 0, &vf);
	if (ret)
		return ret;
	mutex_lock(&d->lock);
	ret = mlx5vf_ksim_pf_reset_vf(d->index, vf);
	mutex_unlock(&d->lock);
	return ret ? ret : count;
}
static DEVICE_ATTR_WO(vf_reset);

static struct attribute *pfs_attrs[] = {
	&dev_attr_digests.attr,
	&dev_attr_vf_reset.attr,
	&dev_attr_counters.attr,
	&dev_attr_live_objects.attr,
	NULL,
};

static const struct attribute_group pfs_group = {
	.name = "mlx5vf",
	.attrs = pfs_attrs,
};

static const struct attribute_group *pfs_groups[] = {
	&pfs_group,
	NULL,
};

/* ------------------------------------------------------------------------ */
/* The platform driver: one VFIO device per simulated PF */

static int pfs_probe(struct platform_device *pdev)
{
	struct pfs_dev *d;
	struct dentry *dir;
	char name[16];
	int ret;

	d = vfio_alloc_device(pfs_dev, vdev, &pdev->dev, &pfs_vfio_ops);
	if (IS_ERR(d))
		return PTR_ERR(d);
	ret = vfio_register_emulated_iommu_dev(&d->vdev);
	if (ret) {
		vfio_put_device(&d->vdev);
		return ret;
	}
	platform_set_drvdata(pdev, d);
	devs[d->index] = d;
	snprintf(name, sizeof(name), "%u", d->index);
	dir = debugfs_create_dir(name, pfs_debugfs);
	debugfs_create_x32("stuck_opcode", 0600, dir, &d->stuck_opcode);
	debugfs_create_x64("dma_skew", 0600, dir, &d->dma_skew);
	dev_info(&pdev->dev, "simulated PF %u: %s\n", d->index, dev_name(&d->vdev.device));
	return 0;
}

static void pfs_remove(struct platform_device *pdev)
{
	struct pfs_dev *d = platform_get_drvdata(pdev);

	vfio_unregister_group_dev(&d->vdev);
	platform_set_drvdata(pdev, NULL);
	devs[d->index] = NULL;
	vfio_put_device(&d->vdev);
}

static struct platform_driver pfs_driver = {
	.probe = pfs_probe,
	.remove = pfs_remove,
	.driver = {
		.name = PFS_NAME,
		.dev_groups = pfs_groups,
	},
};

static void pfs_unregister_devices(void)
{
	while (npdevs > 0)
		platform_device_unregister(pdevs[--npdevs]);
}

static int __init pfs_init(void)
{
	int ret;
	u32 i;

	if (pfs == 0 || pfs > PFS_MAX || pfs > mlx5vf_ksim_pf_max())
		return -EINVAL;
	for (i = 0; i < pfs; i++) {
		ret = mlx5vf_ksim_pf_configure(i, spec, strlen(spec));
		if (ret) {
			pr_err(PFS_NAME ": bad spec \"%s\"\n", spec);
			return ret;
		}
	}
	pfs_wq = alloc_workqueue(KBUILD_MODNAME, WQ_UNBOUND, 0);
	if (!pfs_wq)
		return -ENOMEM;
	pfs_debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
	ret = platform_driver_register(&pfs_driver);
	if (ret)
		goto err_wq;
	for (i = 0; i < pfs; i++) {
		struct platform_device *p = platform_device_register_simple(PFS_NAME, i, NULL, 0);

		if (IS_ERR(p)) {
			ret = PTR_ERR(p);
			goto err_devices;
		}
		pdevs[npdevs++] = p;
	}
	pr_info(PFS_NAME ": %d simulated PF(s) from \"%s\"\n", npdevs, spec);
	return 0;

err_devices:
	pfs_unregister_devices();
	platform_driver_unregister(&pfs_driver);
err_wq:
	debugfs_remove_recursive(pfs_debugfs);
	destroy_workqueue(pfs_wq);
	return ret;
}

static void __exit pfs_exit(void)
{
	struct mlx5vf_ksim_pf_status st;
	u32 i;

	/* The knobs point into the devices: they go first. */
	debugfs_remove_recursive(pfs_debugfs);
	pfs_unregister_devices();
	platform_driver_unregister(&pfs_driver);
	destroy_workqueue(pfs_wq);
	/* Anything still live here is a leak: say so loudly (the rig fails). */
	for (i = 0; i < pfs; i++) {
		memset(&st, 0, sizeof(st));
		mlx5vf_ksim_pf_status(i, &st);
		WARN(st.fw_pages || st.pds || st.mkeys || st.iommu_mappings,
		     PFS_NAME ": PF %u leaked: pages %u pds %u mkeys %u iommu %u\n", i, st.fw_pages,
		     st.pds, st.mkeys, st.iommu_mappings);
	}
	WARN(atomic_read(&live_open) || atomic64_read(&live_scratch),
	     PFS_NAME ": leaked: open %d scratch %lld\n", atomic_read(&live_open),
	     (long long)atomic64_read(&live_scratch));
	pr_info(PFS_NAME ": unloaded\n");
}

module_init(pfs_init);
module_exit(pfs_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("Simulated ConnectX PFs behind the VFIO core, for a userspace driver (mlx5vf)");
MODULE_SOFTDEP("pre: vfio vfio_iommu_type1");
