// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * The test PF of mlx5vf_pci (module mlx5vf_pci_test): the simulated
 * firmware (Rust, mlx5vf_ksim.h) stands in for mlx5_core and a ConnectX PF,
 * so the same driver runs over any PCI function bound to it with
 * driver_override, behind a real IOMMU and vfio_pci_core's real paths.
 *
 * Each bound function takes the first free VF of the simulated PF. Commands
 * and DMA go through mlx5vf_simfw.c (shared with mlx5vf_sim): DMA addresses
 * are kernel virtual addresses of the driver's buffers, so the PCI function
 * itself does no DMA. A reset of the function resets its simulated VF, as
 * an FLR resets a real one.
 */
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/mutex.h>

#include "mlx5vf_pci.h"
#include "mlx5vf_simfw.h"

#define MVP_SIM_MAX_VFS 8

static char *spec = "sim:state=64M,vfs=2";
module_param(spec, charp, 0444);
MODULE_PARM_DESC(spec, "simulated PF: sim:state=SIZE,vfs=N,precopy=on|off,... (mlx5vf --help)");

/* Guards vf_owner. */
static DEFINE_MUTEX(vf_lock);
static struct mlx5vf_pci_dev *vf_owner[MVP_SIM_MAX_VFS];
static int vf_count;

static int mvp_sim_init(void)
{
	int ret = mlx5vf_simfw_init(spec);

	if (ret < 0)
		return ret;
	vf_count = min(ret, MVP_SIM_MAX_VFS);
	pr_info(KBUILD_MODNAME ": simulated PF with %d VF(s) from \"%s\"\n", vf_count, spec);
	return 0;
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

static void mvp_sim_function_reset(struct mlx5vf_pci_dev *vf)
{
	mlx5vf_simfw_reset_vf(vf->vf);
}

static int mvp_sim_digest(struct mlx5vf_pci_dev *vf, char *buf, size_t len)
{
	return mlx5vf_simfw_digest(vf->vf, buf, len);
}

static void mvp_sim_accounting(struct mlx5vf_pf_accounting *acct)
{
	struct mlx5vf_ksim_accounting a = {};

	mlx5vf_simfw_accounting(&a);
	acct->pds = a.pds;
	acct->mkeys = a.mkeys;
	acct->iommu_mappings = a.iommu_mappings;
}

const struct mlx5vf_pf_ops mlx5vf_pf_ops = {
	.init = mvp_sim_init,
	.exit = mlx5vf_simfw_exit,
	.attach = mvp_sim_attach,
	.attach_end = mvp_sim_attach_end,
	.detach = mvp_sim_detach,
	.fw = &mlx5vf_simfw_ops,
	.function_reset = mvp_sim_function_reset,
	.digest = mvp_sim_digest,
	.accounting = mvp_sim_accounting,
};
