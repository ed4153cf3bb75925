// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * The test PF of mlx5vf_pci (module mlx5vf_pci_test): the simulated
 * firmware (Rust, mlx5vf_ksim.h) stands in for mlx5_core and a ConnectX PF,
 * so the same driver runs over any PCI function bound to it with
 * driver_override, behind a real IOMMU and vfio_pci_core's real paths.
 *
 * Each bound function takes the first free VF of the simulated PF. DMA
 * addresses are kernel virtual addresses of the driver's buffers, registered
 * with the simulated IOMMU while mapped (the firmware refuses any other);
 * the PCI function itself does no DMA. A reset of the function resets its
 * simulated VF, as an FLR resets a real one.
 */
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include "mlx5vf_ksim.h"
#include "mlx5vf_pci.h"

#define MVP_SIM_MAX_VFS 8

static char *spec = "sim:state=64M,vfs=2";
module_param(spec, charp, 0444);
MODULE_PARM_DESC(spec, "simulated PF: sim:state=SIZE,vfs=N,precopy=on|off,... (mlx5vf --help)");
static unsigned int save_delay_us;
module_param(save_delay_us, uint, 0444);
MODULE_PARM_DESC(save_delay_us, "extra latency of every SAVE completion, in microseconds");

/* Serialises every call into the simulated firmware. */
static DEFINE_MUTEX(ksim_lock);
/* Guards vf_owner. */
static DEFINE_MUTEX(vf_lock);
static struct mlx5vf_pci_dev *vf_owner[MVP_SIM_MAX_VFS];
static int vf_count;
/* Runs the simulated firmware's asynchronous commands. */
static struct workqueue_struct *sim_wq;

/* The firmware side of one asynchronous command (mlx5vf_vfio_async.fw_priv). */
struct mvp_sim_async {
	struct work_struct work;
	struct mlx5vf_vfio_async *a;
};

static int mvp_sim_init(void)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_configure(spec, strlen(spec));
	vf_count = ret ? 0 : min(mlx5vf_ksim_vf_count(), MVP_SIM_MAX_VFS);
	mutex_unlock(&ksim_lock);
	if (ret) {
		pr_err(KBUILD_MODNAME ": bad spec \"%s\"\n", spec);
		return ret;
	}
	sim_wq = alloc_workqueue(KBUILD_MODNAME "_fw", WQ_UNBOUND, 0);
	if (!sim_wq)
		return -ENOMEM;
	pr_info(KBUILD_MODNAME ": simulated PF with %d VF(s) from \"%s\"\n", vf_count, spec);
	return 0;
}

static void mvp_sim_exit(void)
{
	destroy_workqueue(sim_wq);
}

static int mvp_sim_attach(struct mlx5vf_pci_dev *vf)
{
	int i;

	mutex_lock(&vf_lock);
	for (i = 0; i < vf_count; i++) {
		if (!vf_owner[i]) {
			vf_owner[i] = vf;
			vf->vf = i;
			vf->pf = &vf_owner[i];
			break;
		}
	}
	mutex_unlock(&vf_lock);
	return i < vf_count ? 0 : -ENOSPC;
}

static void mvp_sim_attach_end(struct mlx5vf_pci_dev *vf)
{
}

static void mvp_sim_detach(struct mlx5vf_pci_dev *vf)
{
	mutex_lock(&vf_lock);
	vf_owner[vf->vf] = NULL;
	vf->pf = NULL;
	mutex_unlock(&vf_lock);
}

static int mvp_sim_exec(struct mlx5vf_vfio_dev *mig, const void *in, size_t in_len, void *out,
			size_t out_len)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_exec(in, in_len, out, out_len);
	mutex_unlock(&ksim_lock);
	return ret;
}

static void mvp_sim_async_work(struct work_struct *work)
{
	struct mvp_sim_async *sa = container_of(work, struct mvp_sim_async, work);
	struct mlx5vf_vfio_async *a = sa->a;
	int ret;

	if (!a->load && save_delay_us)
		usleep_range(save_delay_us, save_delay_us + save_delay_us / 8 + 1);
	ret = mvp_sim_exec(a->dev, a->in, a->in_len, a->out, sizeof(a->out));
	mlx5vf_vfio_async_done(a, ret);
}

static int mvp_sim_exec_async(struct mlx5vf_vfio_async *a)
{
	struct mvp_sim_async *sa = (struct mvp_sim_async *)a->fw_priv;

	sa->a = a;
	INIT_WORK(&sa->work, mvp_sim_async_work);
	queue_work(sim_wq, &sa->work);
	return 0;
}

static int mvp_sim_iommu(bool map, struct mlx5vf_vfio_buf *b)
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

static int mvp_sim_dma_map(struct mlx5vf_vfio_buf *b)
{
	u32 i;
	int ret = mvp_sim_iommu(true, b);

	if (ret)
		return ret;
	for (i = 0; i < b->npages; i++)
		b->dma[i] = (dma_addr_t)(uintptr_t)b->mem + (dma_addr_t)i * MLX5VF_PAGE_SIZE;
	return 0;
}

static void mvp_sim_dma_unmap(struct mlx5vf_vfio_buf *b)
{
	WARN_ON(mvp_sim_iommu(false, b));
}

static void mvp_sim_function_reset(struct mlx5vf_pci_dev *vf)
{
	mutex_lock(&ksim_lock);
	mlx5vf_ksim_reset_vf(vf->vf);
	mutex_unlock(&ksim_lock);
}

static int mvp_sim_digest(struct mlx5vf_pci_dev *vf, char *buf, size_t len)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_digest(vf->vf, buf, len);
	mutex_unlock(&ksim_lock);
	return ret;
}

static void mvp_sim_accounting(struct mlx5vf_pf_accounting *acct)
{
	struct mlx5vf_ksim_accounting a = {};

	mutex_lock(&ksim_lock);
	mlx5vf_ksim_accounting(&a);
	mutex_unlock(&ksim_lock);
	acct->pds = a.pds;
	acct->mkeys = a.mkeys;
	acct->iommu_mappings = a.iommu_mappings;
}

static const struct mlx5vf_vfio_fw_ops mvp_sim_fw_ops = {
	.exec = mvp_sim_exec,
	.exec_async = mvp_sim_exec_async,
	.async_priv_size = sizeof(struct mvp_sim_async),
	.dma_map = mvp_sim_dma_map,
	.dma_unmap = mvp_sim_dma_unmap,
};

const struct mlx5vf_pf_ops mlx5vf_pf_ops = {
	.init = mvp_sim_init,
	.exit = mvp_sim_exit,
	.attach = mvp_sim_attach,
	.attach_end = mvp_sim_attach_end,
	.detach = mvp_sim_detach,
	.fw = &mvp_sim_fw_ops,
	.function_reset = mvp_sim_function_reset,
	.digest = mvp_sim_digest,
	.accounting = mvp_sim_accounting,
};
