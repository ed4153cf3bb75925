#!/bin/sh
# PID 1 of the rig's guest (tests/kernel/run.sh copies it into the initramfs
# with @STATE@ replaced). Each step prints "@@STEP name: ok|FAIL" and its
# output indented by two spaces; the last line is the result marker.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=1200m tmpfs /tmp
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
}

D0=vfio-mig:mlx5vf-sim.0
D1=vfio-mig:mlx5vf-sim.1
SYS0=/sys/devices/platform/mlx5vf-sim.0/mlx5vf
SYS1=/sys/devices/platform/mlx5vf-sim.1/mlx5vf

digests_equal() {
	a=$(cat $SYS0/digest)
	b=$(cat $SYS1/digest)
	echo "VF0 $a"
	echo "VF1 $b"
	[ -n "$a" ] && [ "$a" = "$b" ]
}

digests_differ() {
	a=$(cat $SYS0/digest)
	b=$(cat $SYS1/digest)
	echo "VF0 $a"
	echo "VF1 $b"
	[ "$a" != "$b" ]
}

# Every live object of the module is zero (nothing open, in flight or held).
nothing_live() {
	cat $SYS0/live_objects
	! grep -v ' 0$' $SYS0/live_objects
}

# A load of a cut stream must fail as a truncated stream (exit status 1).
truncated_refused() {
	head -c 1000000 /tmp/s.bin > /tmp/t.bin
	mlx5vf load --device $D1 -i /tmp/t.bin 2> /tmp/err
	rc=$?
	cat /tmp/err
	[ $rc = 1 ] || { echo "exit status $rc, expected 1"; return 1; }
	grep -q 'the stream is truncated' /tmp/err
}

# A load that gets no state fails (exit 1) naming why, before the VF sees a
# byte.
no_state_refused() {
	: > /tmp/empty.bin
	mlx5vf load --device $D1 -i /tmp/empty.bin 2> /tmp/err
	rc=$?
	cat /tmp/err
	[ $rc = 1 ] || { echo "empty: exit status $rc, expected 1"; return 1; }
	grep -q 'empty stream' /tmp/err || return 1
	echo 'These lines are notes, not a migration stream.' > /tmp/text.bin
	mlx5vf load --device $D1 -i /tmp/text.bin 2> /tmp/err
	rc=$?
	cat /tmp/err
	[ $rc = 1 ] || { echo "text: exit status $rc, expected 1"; return 1; }
	grep -q 'not a migration stream: it starts with text' /tmp/err
}

# SIGTERM while a load waits for the rest of its stream: exit 1, the VF
# reset out of RESUMING (the next step loads into it).
interrupted_load() {
	(head -c 3000000 /tmp/s.bin; sleep 5) | mlx5vf load --device $D1 2> /tmp/err &
	pid=$!
	sleep 2
	kill -TERM $pid
	wait $pid
	rc=$?
	cat /tmp/err
	[ $rc = 1 ] || { echo "exit status $rc, expected 1"; return 1; }
	grep -q 'interrupted by SIGTERM' /tmp/err && grep -q 'device reset' /tmp/err
}

# Kill a saving process mid-stream: the kernel closes its fds for it.
killed_mid_stream() {
	mlx5vf save --device $D0 -o /dev/null &
	pid=$!
	sleep 1
	kill -9 $pid
	wait $pid
	echo "save killed with status $?"
	sleep 1
	return 0
}

# Runs `mlx5vf pass-fds` (which opens the VFs as a VMM does: group and
# container, its own fds) and insists that the program it ran worked on
# the descriptors it inherited (its own output names each passed spec as an
# adopted device), and that the parent, after adopting its own fds and
# dropping that adoption, still read the same state through them: one
# report line per device in `want`, "device=N spec=... passed_as=SPEC ...
# state=S state_after_adoption_dropped=S".
adopted() {
	want=$1
	shift
	mlx5vf pass-fds "$@" > /tmp/adopted.out 2>&1
	rc=$?
	cat /tmp/adopted.out
	[ $rc = 0 ] || { echo "exit status $rc"; return 1; }
	for w in $want; do
		line=$(grep "^$w spec=" /tmp/adopted.out)
		passed=$(echo "$line" | sed -n 's/.* passed_as=\([^ ]*\) .*/\1/p')
		[ -n "$passed" ] || { echo "no report line for $w"; return 1; }
		echo "$line" | grep -q ' state=\([A-Z_]*\) state_after_adoption_dropped=\1$' \
			|| { echo "$w: the state differs through the adoption and after it"; return 1; }
		grep -v '^device=[0-9]* spec=' /tmp/adopted.out \
			| grep -qF "$passed (adopted: VFIO container" \
			|| { echo "$w: the program did not name $passed as an adopted device"; return 1; }
	done
}

# Descriptors that are not VFIO devices are refused at the step that
# checks them, before any transfer, whatever the parent handed over: a
# plain file, and the container given as the device.
adopt_refuses() {
	mlx5vf save --device vfio-fd:5,container=6 -o /dev/null 5</proc/uptime 6</dev/vfio/vfio 2> /tmp/err
	rc=$?
	cat /tmp/err
	[ $rc = 1 ] || { echo "plain file: exit status $rc, expected 1"; return 1; }
	grep -q 'vfio-fd:5,container=6: VFIO_DEVICE_GET_INFO: not a VFIO device fd (ENOTTY' /tmp/err \
		|| return 1
	mlx5vf save --device vfio-fd:5,container=6 -o /dev/null 5<>/dev/vfio/vfio 6<>/dev/vfio/vfio 2> /tmp/err
	rc=$?
	cat /tmp/err
	[ $rc = 1 ] || { echo "container as device: exit status $rc, expected 1"; return 1; }
	grep -q 'VFIO_DEVICE_GET_INFO: not a VFIO device fd' /tmp/err || return 1
	# A real device fd with its container named as an iommufd: refused at
	# the IOMMU fd's check; the parent's own fds still answer afterwards.
	mlx5vf pass-fds --device $D0 -- sh -c \
		'mlx5vf save --device "$(echo "$1" | sed s/container=/iommufd=/)" -o /dev/null' \
		sh '{0}' > /tmp/err 2>&1
	rc=$?
	cat /tmp/err
	[ $rc = 1 ] || { echo "container as iommufd: exit status $rc, expected 1"; return 1; }
	grep -q ': IOMMU_OPTION on the iommufd: not an iommufd (ENOTTY' /tmp/err || return 1
	grep -q '^device=0 spec=.* state=RUNNING state_after_adoption_dropped=RUNNING$' /tmp/err
}

# Debian's kernel lacks CONFIG_IOMMUFD_DRIVER (the VFIO core's iova_bitmap
# helpers are stubs): the module sets no vfio_log_ops, and DMA logging is
# refused by the VFIO core (ENOTTY) rather than half offered. The cdev rig's
# own kernel has it and runs the DMA-logging steps.
no_dma_logging() {
	dmesg | grep 'migration flags' | tail -2 | sed 's/^\[[^]]*\] //' > /tmp/offered
	cat /tmp/offered
	[ "$(grep -c 'DMA logging off' /tmp/offered)" = 2 ] || return 1
	mlx5vf dirty --device $D0 --range 0:1M --rounds 1 > /tmp/err 2>&1
	rc=$?
	cat /tmp/err
	[ $rc = 1 ] && grep -q ENOTTY /tmp/err
}

insmod /mods/vfio.ko && insmod /mods/vfio_iommu_type1.ko || fails=$((fails + 1))

# --- a 2-VF PF with PRE_COPY, SAVE completions 3 ms late so a non-blocking
# reader meets EAGAIN for sure (at 300 us under TCG it sometimes did not).
# fixed_chunks: --require-eagain wants every SAVE slower than a read; a
# tuned chunk size (the default) changes how often a reader finds one in
# flight, and the migrations below run with it.
step insmod insmod /mods/mlx5vf_sim.ko spec=sim:state=@STATE@,vfs=2,seed=11 save_delay_us=3000 fixed_chunks=1
step digests-differ-before digests_differ
step no-dma-logging no_dma_logging
step check mlx5vf check --device $D0 --strict --require-eagain
step migrate mlx5vf migrate --from $D0 --to $D1 --json
step digests-equal digests_equal
step migrate-precopy mlx5vf migrate --precopy --from $D1 --to $D0 --json
step save mlx5vf save --device $D0 -o /tmp/s.bin --json
step inspect mlx5vf inspect /tmp/s.bin
step load mlx5vf load --device $D1 -i /tmp/s.bin --json
step digests-equal-after-load digests_equal
step truncated-refused truncated_refused
step load-after-failed-load mlx5vf load --device $D1 -i /tmp/s.bin --json
step digests-equal-after-failed-load digests_equal
step no-state-refused no_state_refused
step interrupted-load interrupted_load
step load-after-interrupted-load mlx5vf load --device $D1 -i /tmp/s.bin --json
step digests-equal-after-interrupted-load digests_equal
rm -f /tmp/s.bin /tmp/t.bin /tmp/empty.bin /tmp/text.bin
step killed-mid-stream killed_mid_stream
step nothing-live nothing_live
step rmmod rmmod mlx5vf_sim

# --- the same module without PRE_COPY.
step insmod-no-precopy insmod /mods/mlx5vf_sim.ko spec=sim:state=64M,vfs=2,seed=5,precopy=off
step check-no-precopy mlx5vf check --device $D0 --strict
step migrate-no-precopy mlx5vf migrate --from $D0 --to $D1 --json
step digests-equal-no-precopy digests_equal
step nothing-live-no-precopy nothing_live
step rmmod-no-precopy rmmod mlx5vf_sim

# --- adoption: mlx5vf on descriptors a VMM holds (vfio-fd: specs), through
# pass-fds, on the real VFIO core's group/container path.
step insmod-adopt insmod /mods/mlx5vf_sim.ko spec=sim:state=64M,vfs=2,seed=21 save_delay_us=3000 fixed_chunks=1
step adopt-check adopted device=0 --device $D0 -- mlx5vf check --device '{0}' --strict --require-eagain
step digests-differ-before-adopt-save digests_differ
step adopt-save adopted device=0 --device $D0 -- mlx5vf save --device '{0}' -o /tmp/a.bin --json
step adopt-load adopted device=0 --device $D1 -- mlx5vf load --device '{0}' -i /tmp/a.bin --json
rm -f /tmp/a.bin
step digests-equal-after-adopt-load digests_equal
step adopt-refuses-non-vfio-fds adopt_refuses
step nothing-live-adopt nothing_live
step rmmod-adopt rmmod mlx5vf_sim
step insmod-adopt-migrate insmod /mods/mlx5vf_sim.ko spec=sim:state=64M,vfs=2,seed=31
step digests-differ-before-adopt-migrate digests_differ
step adopt-migrate-precopy adopted "device=0 device=1" --device $D1 --device $D0 -- \
	mlx5vf migrate --precopy --from '{0}' --to '{1}' --json
step digests-equal-after-adopt-migrate digests_equal
step nothing-live-adopt-migrate nothing_live
step rmmod-adopt-migrate rmmod mlx5vf_sim

# --- vfio-pf: mlx5vf as the PF's driver, on simulated PFs (mlx5vf_pfsim).
. /pfsim.sh

echo "=== kernel messages"
dmesg | grep -E 'mlx5vf|WARNING|BUG|Oops|leak' | sed 's/^/  /' | tail -40
if [ $fails = 0 ]; then
	echo "@@RESULT: PASS@@"
else
	echo "@@RESULT: FAIL ($fails step(s))@@"
fi
poweroff -f
