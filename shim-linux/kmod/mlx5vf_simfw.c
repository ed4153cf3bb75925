// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * The simulated firmware (Rust, mlx5vf_ksim.h) behind the modules that
 * simulate: mlx5vf_sim and mlx5vf_pci_test (mlx5vf_simfw.h).
 *
 * Module parameter (of whichever module links this file): save_delay_us,
 * extra latency of every SAVE completion.
 */
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include "mlx5vf_simfw.h"

static unsigned int save_delay_us;
module_param(save_delay_us, uint, 0444);
MODULE_PARM_DESC(save_delay_us, "extra latency of every SAVE completion, in microseconds");

/* Serialises every call into the simulated firmware. */
static DEFINE_MUTEX(ksim_lock);
/* Runs the simulated firmware's asynchronous commands. */
static struct workqueue_struct *simfw_wq;

/* The firmware side of one asynchronous command (mlx5vf_vfio_async.fw_priv). */
struct simfw_async {
	struct work_struct work;
	struct mlx5vf_vfio_async *a;
};

int mlx5vf_simfw_init(const char *spec)
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
	simfw_wq = alloc_workqueue(KBUILD_MODNAME "_fw", WQ_UNBOUND, 0);
	if (!simfw_wq)
		return -ENOMEM;
	return vfs;
}

void mlx5vf_simfw_exit(void)
{
	destroy_workqueue(simfw_wq);
}

static int simfw_exec(struct mlx5vf_vfio_dev *dev, const void *in, size_t in_len, void *out,
		      size_t out_len)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_exec(in, in_len, out, out_len);
	mutex_unlock(&ksim_lock);
	return ret;
}

static void simfw_async_work(struct work_struct *work)
{
	struct simfw_async *sa = container_of(work, struct simfw_async, work);
	struct mlx5vf_vfio_async *a = sa->a;
	int ret;

	if (!a->load && save_delay_us)
		usleep_range(save_delay_us, save_delay_us + save_delay_us / 8 + 1);
	ret = simfw_exec(a->dev, a->in, a->in_len, a->out, sizeof(a->out));
	mlx5vf_vfio_async_done(a, ret);
}

static int simfw_exec_async(struct mlx5vf_vfio_async *a)
{
	struct simfw_async *sa = (struct simfw_async *)a->fw_priv;

	sa->a = a;
	INIT_WORK(&sa->work, simfw_async_work);
	queue_work(simfw_wq, &sa->work);
	return 0;
}

static int simfw_iommu(bool map, struct mlx5vf_vfio_buf *b)
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
static int simfw_dma_map(struct mlx5vf_vfio_buf *b)
{
	u32 i;
	int ret = simfw_iommu(true, b);

	if (ret)
		return ret;
	for (i = 0; i < b->npages; i++)
		b->dma[i] = (dma_addr_t)(uintptr_t)b->mem + (dma_addr_t)i * MLX5VF_PAGE_SIZE;
	return 0;
}

static void simfw_dma_unmap(struct mlx5vf_vfio_buf *b)
{
	WARN_ON(simfw_iommu(false, b));
}

/*
 * The reporting channel: the simulated firmware writes each message into
 * the glue's receive buffer through its mkey (checked against the IOMMU
 * table like any DMA) when polled.
 */
static int simfw_report_open(struct mlx5vf_vfio_dev *dev, u32 mkey, u32 msg_size, u32 slots,
			     u32 *fw_qpn)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_tracker_open(mkey, msg_size, slots, fw_qpn);
	mutex_unlock(&ksim_lock);
	return ret;
}

static int simfw_report_poll(struct mlx5vf_vfio_dev *dev, u8 *cqe)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_tracker_poll(cqe);
	mutex_unlock(&ksim_lock);
	return ret;
}

/* The model counts posted slots, not which: every slot is re-posted in turn. */
static int simfw_report_repost(struct mlx5vf_vfio_dev *dev, u32 slot)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_tracker_repost();
	mutex_unlock(&ksim_lock);
	return ret;
}

static void simfw_report_close(struct mlx5vf_vfio_dev *dev)
{
	mutex_lock(&ksim_lock);
	WARN_ON(mlx5vf_ksim_tracker_close());
	mutex_unlock(&ksim_lock);
}

const struct mlx5vf_vfio_fw_ops mlx5vf_simfw_ops = {
	.exec = simfw_exec,
	.exec_async = simfw_exec_async,
	.async_priv_size = sizeof(struct simfw_async),
	.dma_map = simfw_dma_map,
	.dma_unmap = simfw_dma_unmap,
	.report_open = simfw_report_open,
	.report_poll = simfw_report_poll,
	.report_repost = simfw_report_repost,
	.report_close = simfw_report_close,
};

void mlx5vf_simfw_reset_vf(u16 vf)
{
	mutex_lock(&ksim_lock);
	mlx5vf_ksim_reset_vf(vf);
	mutex_unlock(&ksim_lock);
}

int mlx5vf_simfw_digest(u16 vf, char *buf, size_t len)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = mlx5vf_ksim_digest(vf, buf, len);
	mutex_unlock(&ksim_lock);
	return ret;
}

void mlx5vf_simfw_accounting(struct mlx5vf_ksim_accounting *acct)
{
	mutex_lock(&ksim_lock);
	mlx5vf_ksim_accounting(acct);
	mutex_unlock(&ksim_lock);
}

int mlx5vf_simfw_locked(int (*call)(void *arg), void *arg)
{
	int ret;

	mutex_lock(&ksim_lock);
	ret = call(arg);
	mutex_unlock(&ksim_lock);
	return ret;
}
