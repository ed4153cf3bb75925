#!/bin/sh
# PID 1 of the cdev rig's guest (tests/kernel/cdev/run.sh packs it as /init,
# with @SAVE_DELAY_US@ replaced).
# Each step prints "@@STEP name: ok|FAIL" and its output indented by two
# spaces; the last line is the result marker. `rig.noiommu` on the kernel
# command line adds the noiommu steps (run.sh NOIOMMU=1).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=600m tmpfs /tmp
echo
echo "=== guest $(uname -r) up $(cut -d' ' -f1 /proc/uptime)s, $(grep -c ^processor /proc/cpuinfo) CPU(s)"

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
}

SYS0=/sys/devices/platform/mlx5vf-sim.0
SYS1=/sys/devices/platform/mlx5vf-sim.1
CDEV='(/dev/vfio/devices/vfio'
GROUP='(VFIO group '

# VFIO and iommufd are built in; load them if a config made them modules.
load_vfio_modules() {
	for m in iommufd vfio vfio_iommu_type1; do
		if [ -f /mods/$m.ko ]; then insmod /mods/$m.ko || return 1; fi
	done
	return 0
}

# The iommufd cdev path exists: /dev/iommu, a vfio-dev node per VF, and
# the container and group nodes of the legacy path next to them.
nodes() {
	ls -l /dev/iommu /dev/vfio /dev/vfio/devices || return 1
	for s in $SYS0 $SYS1; do
		echo "$s: vfio-dev $(ls $s/vfio-dev) group $(readlink $s/iommu_group | sed 's|.*/||')"
	done
	[ -c /dev/iommu ] && [ -c /dev/vfio/vfio ] && ls /dev/vfio/devices/vfio* > /dev/null
}

# VF1's character device, found through sysfs (the vfioN numbers need not
# follow the VF numbers).
vf1_cdev() {
	echo /dev/vfio/devices/$(ls $SYS1/vfio-dev)
}

digests() {
	a=$(cat $SYS0/mlx5vf/digest)
	b=$(cat $SYS1/mlx5vf/digest)
	echo "VF0 $a"
	echo "VF1 $b"
	[ -n "$a" ] && [ -n "$b" ]
}
digests_differ() { digests && [ "$a" != "$b" ]; }
digests_equal() { digests && [ "$a" = "$b" ]; }

# Every live object of the module is zero (nothing open, in flight or held).
nothing_live() {
	cat $SYS0/mlx5vf/live_objects
	! grep -v ' 0$' $SYS0/mlx5vf/live_objects
}

# Runs a command and insists its output names the IOMMU path it took
# (`check` and `migrate` print "SPEC (/dev/vfio/devices/vfioN)" or
# "SPEC (VFIO group N)"), so a silent fallback cannot pass.
via() {
	want=$1
	shift
	"$@" > /tmp/via 2>&1
	rc=$?
	cat /tmp/via
	[ $rc = 0 ] || return $rc
	grep -qF "$want" /tmp/via || { echo "the output does not name $want"; return 1; }
}

# Runs `migrate` and insists each end took the path named: the from= and
# to= lines of its summary (stderr, also with --json) end in
# "(/dev/vfio/devices/vfioN)" or "(VFIO group N)". The key=value lines are
# the ones made for grep; busybox has no JSON parser.
C='\(/dev/vfio/devices/vfio[0-9]+\)'
G='\(VFIO group [0-9]+\)'
ends() {
	from=$1
	to=$2
	shift 2
	"$@" > /tmp/ends 2>&1
	rc=$?
	cat /tmp/ends
	[ $rc = 0 ] || return $rc
	grep -qE "^from=.* $from\$" /tmp/ends || { echo "the source did not take $from"; return 1; }
	grep -qE "^to=.* $to\$" /tmp/ends || { echo "the destination did not take $to"; return 1; }
}

# Runs a command that must fail with a message containing $1.
fails_with() {
	want=$1
	shift
	"$@" > /tmp/fw 2>&1
	rc=$?
	cat /tmp/fw
	[ $rc != 0 ] || { echo "exit status 0, expected a failure"; return 1; }
	grep -qF "$want" /tmp/fw || { echo "the error does not say: $want"; return 1; }
}

# A fresh module for the steps named LABEL, the sim spec ending in SUFFIX
# (a seed), whose two VFs differ; the previous one must unload clean.
fresh() {
	label=$1
	suffix=$2
	shift 2
	if [ -d /sys/module/mlx5vf_sim ]; then
		step "nothing-live-before-$label" nothing_live
		step "rmmod-before-$label" rmmod mlx5vf_sim
	fi
	step "insmod-$label" insmod /mods/mlx5vf_sim.ko "spec=sim:state=64M,vfs=2$suffix" "$@"
	step "digests-differ-$label" digests_differ
}

# -smp 2: the SAVE work items run beside the reader (SeaBIOS hands Linux
# the second CPU through ACPI).
step cpus test "$(grep -c ^processor /proc/cpuinfo)" -ge 2
step load-vfio load_vfio_modules

# --- the iommufd cdev path (the module as the brief loads it).
fresh cdev "" save_delay_us=@SAVE_DELAY_US@
step nodes nodes
step check-cdev via "$CDEV" mlx5vf check --device vfio-mig:mlx5vf-sim.0,iommu=cdev --strict --require-eagain
step migrate-cdev ends "$C" "$C" mlx5vf migrate --from vfio-mig:mlx5vf-sim.0,iommu=cdev \
	--to vfio-mig:mlx5vf-sim.1,iommu=cdev --json
step digests-equal-cdev digests_equal

# --- iommu=auto picks the cdev, from a /dev/vfio/devices node and a name.
fresh auto ,seed=11 save_delay_us=@SAVE_DELAY_US@
step migrate-precopy-auto ends "$C" "$C" mlx5vf migrate --precopy --from "vfio-mig:$(vf1_cdev)" \
	--to vfio-mig:mlx5vf-sim.0 --json
step digests-equal-auto digests_equal

# --- the group/container path on the same kernel, and both at once.
fresh group ,seed=12 save_delay_us=@SAVE_DELAY_US@
step check-group via "$GROUP" mlx5vf check --device vfio-mig:mlx5vf-sim.0,iommu=group --strict --require-eagain
step migrate-group-to-cdev ends "$G" "$C" mlx5vf migrate --from vfio-mig:mlx5vf-sim.0,iommu=group \
	--to vfio-mig:mlx5vf-sim.1,iommu=cdev --json
step digests-equal-mixed digests_equal

# --- adoption over iommufd: pass-fds opens the VFs through their character
# devices bound to /dev/iommu, as a VMM does, and hands them to mlx5vf as
# vfio-fd:N,iommufd=M; the adopted cdev leads to its sysfs directory.
fresh adopt ,seed=13 save_delay_us=@SAVE_DELAY_US@
step adopt-check-cdev via "(adopted: iommufd, $SYS0)" mlx5vf pass-fds \
	--device vfio-mig:mlx5vf-sim.0,iommu=cdev -- mlx5vf check --device '{0}' --strict --require-eagain
step adopt-migrate-cdev via "(adopted: iommufd, $SYS1)" mlx5vf pass-fds \
	--device vfio-mig:mlx5vf-sim.0,iommu=cdev --device vfio-mig:mlx5vf-sim.1,iommu=cdev -- \
	mlx5vf migrate --precopy --from '{0}' --to '{1}' --json
step digests-equal-adopt-cdev digests_equal
step adopt-refuses-unbound-cdev fails_with "not bound to an iommufd" \
	sh -c "mlx5vf check --device vfio-fd:5,iommufd=6 5<>$(vf1_cdev) 6<>/dev/iommu"
step adopt-refuses-cdev-with-container fails_with "give iommufd=FD" mlx5vf pass-fds \
	--device vfio-mig:mlx5vf-sim.0,iommu=cdev -- \
	sh -c 'mlx5vf check --device "$(echo "$1" | sed s/iommufd=/container=/)"' sh '{0}'
step nothing-live nothing_live
step rmmod rmmod mlx5vf_sim

# --- DMA logging (vfio_log_ops) through the real VFIO core: its START
# validation and interval tree, its iova_bitmap (this kernel has
# CONFIG_IOMMUFD_DRIVER), against the simulated guest's ground truth in
# debugfs. Every `dirty --verify` round compares the bitmap with the pages
# the guest wrote; a miss fails it.
DBG=/sys/kernel/debug/mlx5vf_sim
G0=$DBG/mlx5vf-sim.0
DIRTY="mlx5vf dirty --device vfio-mig:mlx5vf-sim.0 --guest $G0 --verify"

# A tracker state line of debugfs `tracker`, e.g. `tracker_field ranges`.
tracker_field() {
	sed -n "s/^$1 //p" $G0/tracker
}

# Runs `dirty` in the background and, once its tracker exists, keeps what
# debugfs says of it; both must show what the step wants.
dirty_and_tracker() {
	"$@" > /tmp/dirty 2>&1 &
	pid=$!
	i=0
	while [ $i -lt 100 ] && [ "$(tracker_field state)" = none ]; do
		sleep 0.05
		i=$((i + 1))
	done
	cat $G0/tracker > /tmp/tracker
	wait $pid
	rc=$?
	cat /tmp/dirty
	sed 's/^/tracker: /' /tmp/tracker
	[ $rc = 0 ] && grep -q "verified: no page missed" /tmp/dirty
}

# Six ranges on a device that holds four: START succeeds because the driver
# combines them (the two smallest gaps merge), and the tracker holds four.
dirty_combine() {
	echo "4 12 21 12 0" > $G0/tracker_config || return 1
	dirty_and_tracker $DIRTY --range 0:8M --range 0x1000000:8M --range 0x2000000:1M \
		--range 0x2800000:8M --range 0x4000000:16M --range 0x6400000:28M \
		--rounds 4 --interval 300ms --dirty-rate 20000 || return 1
	grep -q "^ranges 4$" /tmp/tracker || { echo "the tracker does not hold 4 ranges"; return 1; }
}

# A page size the device must clamp: 4 KiB asked, 8 KiB the device's least
# (written back through the VFIO core); 4 MiB asked, 2 MiB its most.
dirty_clamp() {
	echo "4 13 21 12 0" > $G0/tracker_config || return 1
	dirty_and_tracker $DIRTY --range 0:32M --range 0x4000000:32M --page-size 4096 \
		--rounds 3 --interval 200ms || return 1
	grep -q "page size 8192 (asked 4096)" /tmp/dirty || return 1
	grep -q "^page_size 8192$" /tmp/tracker || return 1
	echo "4 12 21 12 0" > $G0/tracker_config || return 1
	dirty_and_tracker $DIRTY --range 0:64M --page-size 4M --rounds 3 --interval 200ms || return 1
	grep -q "page size 2097152 (asked 4194304)" /tmp/dirty || return 1
	grep -q "^page_size 2097152$" /tmp/tracker
}

# Messages that are exactly full: a 2 MiB range whose 512 pages the guest
# all writes (400 000 writes over 32 768 pages; the seed makes it
# deterministic), reported in messages of MSG bytes, with or without a
# separate end message (END). Linux once dropped a full last message.
dirty_full() {
	msg_log=$1
	end=$2
	want_msgs=$3
	echo "4 12 21 $msg_log $end" > $G0/tracker_config || return 1
	m0=$(tracker_field messages)
	a0=$(tracker_field addresses)
	$DIRTY --range 0:2M --rounds 1 --interval 100ms --dirty-rate 4000000 --seed 5 || return 1
	msgs=$(($(tracker_field messages) - m0))
	addrs=$(($(tracker_field addresses) - a0))
	echo "report: $addrs addresses in $msgs messages of $((1 << msg_log)) bytes (end message: $end)"
	[ "$addrs" = 512 ] && [ "$msgs" = "$want_msgs" ]
}

# A tracker forced to ERROR (KIND: with a final report, or with only an
# object-change event) ends logging with EIO and frees everything; logging
# then starts again on the same device.
dirty_error() {
	echo "4 12 21 12 0" > $G0/tracker_config || return 1
	echo "$1 0" > $G0/tracker_fault || return 1
	fails_with "$2" $DIRTY --range 0:64M --rounds 2 --interval 100ms || return 1
	echo none > $G0/tracker_fault || return 1
	cat $G0/tracker
	[ "$(tracker_field state)" = none ] && [ "$(tracker_field channel)" = 0 ] || return 1
	grep -q "^report_channels 0$" $SYS0/mlx5vf/live_objects || return 1
	$DIRTY --range 0:64M --rounds 2 --interval 100ms
}

# A tracked migration: the source logs DMA (a report per round, each
# verified) while `migrate --precopy` moves it, both on the file
# descriptors pass-fds opened once (a VMM's one device, two users).
tracked_migration() {
	mlx5vf pass-fds --device vfio-mig:mlx5vf-sim.0 --device vfio-mig:mlx5vf-sim.1 -- sh -c '
		t() { cut -d" " -f1 /proc/uptime; }
		mlx5vf dirty --device "$1" --guest '$G0' --verify --range 0:128M \
			--rounds 12 --interval 250ms --dirty-rate 20000 > /tmp/tm-dirty 2>&1 &
		pid=$!
		i=0
		while [ $i -lt 100 ] && grep -q "^state none" '$G0'/tracker; do
			sleep 0.05
			i=$((i + 1))
		done
		echo "logging started by $(t) s"
		mlx5vf migrate --precopy --from "$1" --to "$2" > /tmp/tm-migrate 2>&1
		m=$?
		echo "migrate ended at $(t) s (exit $m)"
		overlap=0
		! grep -q "^state none" '$G0'/tracker && overlap=1
		echo "still logging when migrate ended: $overlap"
		wait $pid
		d=$?
		echo "dirty ended at $(t) s (exit $d)"
		cat /tmp/tm-migrate /tmp/tm-dirty
		[ $m = 0 ] && [ $d = 0 ] && [ $overlap = 1 ]' sh '{0}' '{1}' || return 1
	grep -q "verified: no page missed" /tmp/tm-dirty
}

dma_logging_offered() {
	dmesg | grep 'migration flags' | tail -2 | sed 's/^\[[^]]*\] //' > /tmp/offered
	cat /tmp/offered
	[ "$(grep -c 'DMA logging on' /tmp/offered)" = 2 ]
}

# Report throughput against the guest's dirty rate: all 128 MiB of guest
# memory tracked, 100 000 page writes a round (most of its 32 768 pages).
dirty_throughput() {
	$DIRTY --range 0:128M --rounds 5 --interval 100ms --dirty-rate 1000000
}

mount -t debugfs debugfs /sys/kernel/debug
fails_before_dirty=$fails
fresh dirty ,seed=14 save_delay_us=@SAVE_DELAY_US@
step dma-logging-offered dma_logging_offered
step dirty-debugfs sh -c "ls $G0 && cat $G0/guest_pages $G0/tracker && [ \$(wc -c < $G0/guest_truth) = \$((\$(cat $G0/guest_pages) / 8)) ]"
step dma-logging-check mlx5vf check --device vfio-mig:mlx5vf-sim.0 --require-dma-logging
step dirty-combine dirty_combine
step dirty-clamp dirty_clamp
step dirty-full-4k dirty_full 12 0 1
step dirty-full-4k-end-message dirty_full 12 1 2
step dirty-full-64b dirty_full 6 0 64
step dirty-error-report dirty_error error-report EIO
step dirty-error-silent dirty_error error-silent EIO
step dirty-silent-firmware dirty_error silent ETIMEDOUT
step dirty-event-storm dirty_error event-storm EIO
step dirty-throughput dirty_throughput
step dirty-tracked-migration tracked_migration
step digests-equal-dirty digests_equal
step nothing-live-dirty nothing_live
if [ $fails = "$fails_before_dirty" ]; then
	echo "RIG dirty: PASS"
else
	echo "RIG dirty: FAIL ($((fails - fails_before_dirty)) step(s))"
fi
step rmmod-dirty rmmod mlx5vf_sim

# --- a vfio-pci device in a noiommu group (pci-testdev, no migration): it
# has a vfio-dev/vfioN entry in sysfs but no /dev/vfio/devices node, so
# iommu=auto must take the group path, and that path must open
# /dev/vfio/noiommu-N with the noiommu IOMMU; the device then refuses
# migration with ENOTTY.
PCIDEV=0000:00:10.0
noiommu_setup() {
	echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode || return 1
	d=/sys/bus/pci/devices/$PCIDEV
	echo "$PCIDEV: $(cat $d/vendor):$(cat $d/device)"
	echo vfio-pci > $d/driver_override && echo $PCIDEV > /sys/bus/pci/drivers_probe || return 1
	ls /dev/vfio /dev/vfio/devices
	echo "sysfs vfio-dev: $(ls $d/vfio-dev)"
	ls /dev/vfio/noiommu-* > /dev/null
}
if grep -q rig.noiommu /proc/cmdline; then
	step noiommu-setup noiommu_setup
	step noiommu-auto fails_with "offers no migration (ENOTTY)" mlx5vf check --device vfio-mig:$PCIDEV
	step noiommu-group fails_with "offers no migration (ENOTTY)" mlx5vf check --device vfio-mig:$PCIDEV,iommu=group
	step noiommu-cdev fails_with "no VFIO character device" mlx5vf check --device vfio-mig:$PCIDEV,iommu=cdev
fi

# The whole kernel log, not only what the tail below shows.
log_clean() {
	! dmesg | grep -E 'WARNING|BUG|Oops|Call Trace|leak'
}
step kernel-log-clean log_clean

echo "=== kernel messages"
dmesg | grep -E 'mlx5vf|vfio|iommu|WARNING|BUG|Oops|leak' | sed 's/^/  /' | tail -40
if [ $fails = 0 ]; then
	echo "@@RESULT: PASS@@"
else
	echo "@@RESULT: FAIL ($fails step(s))@@"
fi
# A reboot ends QEMU (-no-reboot), with or without ACPI.
reboot -f
