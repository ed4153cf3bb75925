// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * The production PF of mlx5vf_pci: the VF's PF as mlx5_core drives it.
 *
 * Commands go to the PF's command interface with the VF named in them
 * (other_function / vhca_id, encoded by the core): synchronously through
 * mlx5_cmd_do(), SAVE and LOAD through mlx5_cmd_exec_cb() on a per-VF
 * async context. PD and mkeys are firmware commands too (ALLOC_PD and
 * CREATE_MKEY from the core's encoders), so they need nothing more here.
 * Buffers are DMA-mapped on the PF's device, which is the one whose
 * command interface the mkeys belong to. The SR-IOV notifier turns the
 * PF disabling the VF into the core's detach (every command -ENOTCONN).
 */
#include <linux/dma-mapping.h>
#include <linux/mlx5/driver.h>
#include <linux/notifier.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "mlx5vf_pci.h"

struct mvp_pf {
	struct mlx5_core_dev *mdev;
	struct mlx5vf_pci_dev *vf;
	int vf_id;
	struct mlx5_async_ctx async_ctx;
	struct notifier_block nb;
};

/* The PF side of one asynchronous command (mlx5vf_vfio_async.fw_priv). */
struct mvp_pf_async {
	struct mlx5_async_work work;
	struct mlx5vf_vfio_async *a;
};

static int mvp_pf_sriov_event(struct notifier_block *nb, unsigned long event, void *data)
{
	struct mvp_pf *pf = container_of(nb, struct mvp_pf, nb);

	switch (event) {
	case MLX5_PF_NOTIFY_DISABLE_VF:
		mlx5vf_vfio_vf_event(&pf->vf->mig, false);
		break;
	case MLX5_PF_NOTIFY_ENABLE_VF:
		mlx5vf_vfio_vf_event(&pf->vf->mig, true);
		break;
	}
	return NOTIFY_DONE;
}

static int mvp_pf_attach(struct mlx5vf_pci_dev *vf)
{
	struct pci_dev *pdev = vf->core.pdev;
	struct mvp_pf *pf;
	int ret;

	if (!pdev->is_virtfn) {
		pci_info(pdev, "no migration: not an SR-IOV VF\n");
		return -EOPNOTSUPP;
	}
	pf = kzalloc(sizeof(*pf), GFP_KERNEL);
	if (!pf)
		return -ENOMEM;
	pf->mdev = mlx5_vf_get_core_dev(pdev);
	if (!pf->mdev) {
		pci_info(pdev, "no migration: the PF is not mlx5_core's, or not up\n");
		kfree(pf);
		return -EOPNOTSUPP;
	}
	/* The PF's cached capability, as Linux's driver checks it first. */
	if (!MLX5_CAP_GEN(pf->mdev, migration)) {
		pci_info(pdev, "no migration: the PF's firmware does not offer it\n");
		ret = -EOPNOTSUPP;
		goto put;
	}
	ret = pci_iov_vf_id(pdev);
	if (ret < 0)
		goto put;
	pf->vf_id = ret;
	pf->vf = vf;
	mlx5_cmd_init_async_ctx(pf->mdev, &pf->async_ctx);
	vf->vf = pf->vf_id;
	vf->pf = pf;
	/* Held until attach_end: the probe's commands run in between. */
	return 0;

put:
	mlx5_vf_put_core_dev(pf->mdev);
	kfree(pf);
	return ret;
}

/* Events reach the driver only once its device is set up (after the probe). */
static int mvp_pf_watch(struct mlx5vf_pci_dev *vf)
{
	struct mvp_pf *pf = vf->pf;
	int ret;

	pf->nb.notifier_call = mvp_pf_sriov_event;
	ret = mlx5_sriov_blocking_notifier_register(pf->mdev, pf->vf_id, &pf->nb);
	if (ret)
		pf->nb.notifier_call = NULL;
	return ret;
}

static void mvp_pf_unwatch(struct mlx5vf_pci_dev *vf)
{
	struct mvp_pf *pf = vf->pf;

	if (pf->nb.notifier_call)
		mlx5_sriov_blocking_notifier_unregister(pf->mdev, pf->vf_id, &pf->nb);
	pf->nb.notifier_call = NULL;
}

static void mvp_pf_attach_end(struct mlx5vf_pci_dev *vf)
{
	struct mvp_pf *pf = vf->pf;

	mlx5_vf_put_core_dev(pf->mdev);
}

static void mvp_pf_detach(struct mlx5vf_pci_dev *vf)
{
	struct mvp_pf *pf = vf->pf;

	mvp_pf_unwatch(vf);
	/* Waits for callbacks still running (none should be in flight). */
	mlx5_cmd_cleanup_async_ctx(&pf->async_ctx);
	vf->pf = NULL;
	kfree(pf);
}

/* -EREMOTEIO: firmware answered with a bad status, which the core decodes. */
static int mvp_pf_status(int ret)
{
	return ret == -EREMOTEIO ? 0 : ret;
}

static int mvp_pf_exec(struct mlx5vf_vfio_dev *mig, const void *in, size_t in_len, void *out,
		       size_t out_len)
{
	struct mvp_pf *pf = mlx5vf_pci_of(mig)->pf;

	if (in_len > INT_MAX || out_len > INT_MAX)
		return -EINVAL;
	return mvp_pf_status(mlx5_cmd_do(pf->mdev, (void *)in, in_len, out, out_len));
}

/* The command interface's completion context: hand over, do nothing else. */
static void mvp_pf_async_cb(int status, struct mlx5_async_work *work)
{
	struct mvp_pf_async *pa = container_of(work, struct mvp_pf_async, work);

	mlx5vf_vfio_async_done(pa->a, mvp_pf_status(status));
}

static int mvp_pf_exec_async(struct mlx5vf_vfio_async *a)
{
	struct mvp_pf *pf = mlx5vf_pci_of(a->dev)->pf;
	struct mvp_pf_async *pa = (struct mvp_pf_async *)a->fw_priv;

	pa->a = a;
	return mlx5_cmd_exec_cb(&pf->async_ctx, a->in, a->in_len, a->out, sizeof(a->out),
				mvp_pf_async_cb, &pa->work);
}

static int mvp_pf_dma_map(struct mlx5vf_vfio_buf *b)
{
	struct mvp_pf *pf = mlx5vf_pci_of(b->dev)->pf;
	struct sg_dma_page_iter iter;
	struct page **pages;
	u32 i;
	int ret;

	pages = kvmalloc_array(b->npages, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return -ENOMEM;
	for (i = 0; i < b->npages; i++)
		pages[i] = vmalloc_to_page((u8 *)b->mem + (size_t)i * PAGE_SIZE);
	ret = sg_alloc_table_from_pages(&b->sgt, pages, b->npages, 0, b->len, GFP_KERNEL);
	kvfree(pages);
	if (ret)
		return ret;
	ret = dma_map_sgtable(pf->mdev->device, &b->sgt, b->dir, 0);
	if (ret) {
		sg_free_table(&b->sgt);
		return ret;
	}
	/* The device is told one address per page, however the IOMMU merged them. */
	i = 0;
	for_each_sgtable_dma_page(&b->sgt, &iter, 0) {
		if (WARN_ON_ONCE(i >= b->npages))
			break;
		b->dma[i++] = sg_page_iter_dma_address(&iter);
	}
	if (WARN_ON_ONCE(i != b->npages)) {
		dma_unmap_sgtable(pf->mdev->device, &b->sgt, b->dir, 0);
		sg_free_table(&b->sgt);
		return -EIO;
	}
	return 0;
}

static void mvp_pf_dma_unmap(struct mlx5vf_vfio_buf *b)
{
	struct mvp_pf *pf = mlx5vf_pci_of(b->dev)->pf;

	dma_unmap_sgtable(pf->mdev->device, &b->sgt, b->dir, 0);
	sg_free_table(&b->sgt);
}

/*
 * No report_* ops: DMA logging over mlx5_core needs the page tracker's
 * reporting channel built on the PF (a CQ on a completion EQ, two loopback
 * RC QPs, a receive buffer under an mkey, OBJECT_CHANGE and CQ/WQ error
 * events), which is not written. Without the ops the glue sets no log_ops,
 * so this flavour offers no DMA logging and the VFIO core answers ENOTTY.
 */
static const struct mlx5vf_vfio_fw_ops mvp_pf_fw_ops = {
	.exec = mvp_pf_exec,
	.exec_async = mvp_pf_exec_async,
	.async_priv_size = sizeof(struct mvp_pf_async),
	.dma_map = mvp_pf_dma_map,
	.dma_unmap = mvp_pf_dma_unmap,
};

const struct mlx5vf_pf_ops mlx5vf_pf_ops = {
	.attach = mvp_pf_attach,
	.watch = mvp_pf_watch,
	.unwatch = mvp_pf_unwatch,
	.attach_end = mvp_pf_attach_end,
	.detach = mvp_pf_detach,
	.fw = &mvp_pf_fw_ops,
};
