#!/bin/sh
# PID 1 of the rig's mlx5vf_pci boot (tests/kernel/run.sh vpci copies it
# into the initramfs with @STATE@ replaced). Each step prints
# "@@STEP name: ok|FAIL" and its output indented by two spaces; each part
# that passes prints its "RIG mlx5vf_pci: ..." line; the last line is the
# result marker.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=600m tmpfs /tmp
echo "=== guest $(uname -r) up $(cut -d' ' -f1 /proc/uptime)s"

fails=0
step() {
	name=$1
	shift
	t0=$(cut -d' ' -f1 /proc/uptime)
	if "$@" > /tmp/out 2>&1; then
		result=ok
	else
		result="FAIL (exit $?)"
		fails=$((fails + 1))
	fi
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "@@STEP $name: $result ($(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s)"
	sed 's/^/  /' /tmp/out
	[ "$result" = ok ]
}

depmod

# --- The production build beside Debian's own mlx5_core: modprobe resolves
# mlx5_core, vfio-pci-core and theirs from the symbols it uses, every
# symbol binds (CRCs included), and modinfo shows the VF IDs it claims.
beside_mlx5_core() {
	modprobe mlx5vf_pci || return 1
	cut -d' ' -f1,4 /proc/modules
	grep -q '^mlx5_core ' /proc/modules || { echo "mlx5_core is not loaded"; return 1; }
	# /proc/modules lists each module's users.
	grep -q '^mlx5_core .*mlx5vf_pci' /proc/modules ||
		{ echo "mlx5vf_pci does not use mlx5_core"; return 1; }
	modinfo mlx5vf_pci > /tmp/modinfo || return 1
	cat /tmp/modinfo
	grep -q 'vfio_pci:v000015B3d0000101Esv\*sd\*bc\*sc\*i\*' /tmp/modinfo ||
		{ echo "no ConnectX VF alias"; return 1; }
	grep -q 'depends:.*mlx5_core' /tmp/modinfo || { echo "mlx5_core not in depends"; return 1; }
	if dmesg | grep -E 'Unknown symbol|disagrees about version|version magic|no symbol version'; then
		return 1
	fi
	rmmod mlx5vf_pci
}

# The production build bound to a real SR-IOV VF (of QEMU's NVMe PF):
# vfio_pci_core registers it, mlx5_vf_get_core_dev() finds its PF is not
# mlx5_core's, and it stays plain vfio-pci, as Linux's driver leaves a VF it
# cannot migrate.
production_on_a_vf() {
	pf=
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/sriov_totalvfs" 2>/dev/null || echo 0)" -gt 0 ] && pf=${d##*/}
	done
	[ -n "$pf" ] || { echo "no SR-IOV PF"; return 1; }
	P=/sys/bus/pci/devices/$pf
	modprobe mlx5vf_pci || return 1
	echo 0 > $P/sriov_drivers_autoprobe
	echo 1 > $P/sriov_numvfs || return 1
	vf=$(readlink $P/virtfn0)
	vf=${vf##*/}
	echo mlx5vf_pci > "/sys/bus/pci/devices/$vf/driver_override"
	echo "$vf" > /sys/bus/pci/drivers_probe
	drv=$(readlink "/sys/bus/pci/devices/$vf/driver")
	echo "$vf: VF 0 of $pf ($(cat $P/vendor):$(cat $P/device), driver $(basename "$(readlink $P/driver)")), bound to ${drv##*/}"
	dmesg | grep "$vf"
	[ "${drv##*/}" = mlx5vf_pci ] || return 1
	dmesg | grep -q "$vf: no migration: the PF is not mlx5_core's" || return 1
	echo "$vf" > /sys/bus/pci/drivers/mlx5vf_pci/unbind || return 1
	echo 0 > $P/sriov_numvfs
	cat /sys/bus/pci/drivers/mlx5vf_pci/live_objects
	rmmod mlx5vf_pci
}

if step mlx5vf_pci-beside-mlx5_core beside_mlx5_core &&
	step mlx5vf_pci-on-a-vf production_on_a_vf; then
	echo "RIG mlx5vf_pci: loaded beside mlx5_core ($(uname -r)'s own; modprobe resolved its dependencies, no unknown or mismatched symbol, modinfo alias $(sed -n 's/^alias:[[:space:]]*//p' /tmp/modinfo); bound to an SR-IOV VF through vfio_pci_core)"
fi

# --- The test build bound to two QEMU `edu` functions behind VT-d.
F0=
F1=
for d in /sys/bus/pci/devices/*; do
	[ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ] || continue
	if [ -z "$F0" ]; then F0=${d##*/}; else F1=${d##*/}; fi
done
D0=vfio-mig:$F0
D1=vfio-mig:$F1
DRV=/sys/bus/pci/drivers/mlx5vf_pci_test
vpci_fails=$fails

bind_functions() {
	[ -n "$F0" ] && [ -n "$F1" ] || { echo "two edu functions expected, found '$F0' '$F1'"; return 1; }
	for f in "$F0" "$F1"; do
		echo mlx5vf_pci_test > "/sys/bus/pci/devices/$f/driver_override" || return 1
		echo "$f" > /sys/bus/pci/drivers_probe || return 1
		drv=$(readlink "/sys/bus/pci/devices/$f/driver")
		grp=$(readlink "/sys/bus/pci/devices/$f/iommu_group")
		type=$(cat "/sys/bus/pci/devices/$f/iommu_group/type")
		echo "$f: driver ${drv##*/}, iommu group ${grp##*/} ($type), VF $(cat "/sys/bus/pci/devices/$f/mlx5vf/vf")"
		[ "${drv##*/}" = mlx5vf_pci_test ] || return 1
		# A group of the real IOMMU with a translating (DMA) default
		# domain, not one vfio emulates.
		case $type in
		DMA|DMA-FQ) ;;
		*) echo "$f: not behind a translating IOMMU"; return 1 ;;
		esac
	done
	ls /dev/vfio
	dmesg | grep -E 'DMAR: (IOMMU enabled|Intel\(R\) Virtualization)' | head -2
}

digests() {
	a=$(cat "/sys/bus/pci/devices/$F0/mlx5vf/digest")
	b=$(cat "/sys/bus/pci/devices/$F1/mlx5vf/digest")
	echo "$F0 $a"
	echo "$F1 $b"
	[ -n "$a" ] && [ -n "$b" ]
}
digests_equal() { digests && [ "$a" = "$b" ]; }
digests_differ() { digests && [ "$a" != "$b" ]; }

# Unbound, every live object of the driver and of its firmware is zero.
unbind_nothing_live() {
	echo "$F0" > $DRV/unbind && echo "$F1" > $DRV/unbind || return 1
	cat $DRV/live_objects
	! grep -v ' 0$' $DRV/live_objects
}

modprobe vfio_iommu_type1
if step insmod-test modprobe mlx5vf_pci_test spec=sim:state=@STATE@,vfs=2,seed=11 save_delay_us=3000 fixed_chunks=1 &&
	step bind bind_functions; then
	step digests-differ-before digests_differ
	step check mlx5vf check --device "$D0" --strict --require-eagain
	step migrate mlx5vf migrate --from "$D0" --to "$D1" --json
	step digests-equal digests_equal
	step migrate-precopy mlx5vf migrate --precopy --from "$D1" --to "$D0" --json
	step digests-equal-precopy digests_equal
	step unbind-nothing-live unbind_nothing_live
	step rmmod-test rmmod mlx5vf_pci_test
fi
if [ $fails = "$vpci_fails" ] && [ -n "$F1" ]; then
	echo "RIG mlx5vf_pci: PASS (test build over vfio_pci_core on $F0 and $F1 behind VT-d: check --strict, migrate, migrate --precopy, nothing live after unbind)"
fi

echo "=== kernel messages"
dmesg | grep -E 'mlx5vf|mlx5_core|DMAR|vfio|WARNING|BUG|Oops|leak' | sed 's/^/  /' | tail -40
if [ $fails = 0 ]; then
	echo "@@RESULT: PASS@@"
else
	echo "@@RESULT: FAIL ($fails step(s))@@"
fi
poweroff -f
