# The vfio-pf: steps of the rig's guest. tests/kernel/run.sh copies this
# file to /pfsim.sh (with @STATE@ replaced) and guest-init.sh sources it,
# so it runs with that script's step() and failure count. mlx5vf drives
# two simulated ConnectX PFs of the mlx5vf_pfsim module through their
# command queues, as a userspace PF driver drives a real one: real
# /dev/vfio group and container, VFIO_IOMMU_MAP_DMA mappings the model
# reaches with vfio_dma_rw(), BAR0 and config space through region
# pread/pwrite. Prints "RIG vfio-pf: PASS" when every step here passed.

PF0=mlx5vf-pfsim.0
PF1=mlx5vf-pfsim.1
PSYS0=/sys/devices/platform/$PF0/mlx5vf
PSYS1=/sys/devices/platform/$PF1/mlx5vf
PFDBG=/sys/kernel/debug/mlx5vf_pfsim
pf_fails_before=$fails

# VF 0's digests on both PFs: "equal" or "differ".
pf_digests() {
	a=$(sed -n 's/^vf0 //p' $PSYS0/digests)
	b=$(sed -n 's/^vf0 //p' $PSYS1/digests)
	echo "PF0 VF0 $a"
	echo "PF1 VF0 $b"
	[ -n "$a" ] && [ -n "$b" ] || return 1
	if [ "$1" = equal ]; then [ "$a" = "$b" ]; else [ "$a" != "$b" ]; fi
}

# Nothing open, queued, held or mapped in the module (every PF's function
# torn down once its device closed), and what the PFs did.
pf_nothing_live() {
	cat $PSYS0/live_objects
	for c in /sys/devices/platform/mlx5vf-pfsim.*/mlx5vf/counters; do
		echo "$c:" $(cat $c)
	done
	! grep -v ' 0$' $PSYS0/live_objects
}

# The migration of VF 0 from PF 0 to PF 1, in chunk mode (the state is
# bigger than a chunk: more than one SAVE).
pf_migrate() {
	mlx5vf migrate --from vfio-pf:$PF0,vf=0 --to vfio-pf:$PF1,vf=0 --json > /tmp/pf.json || return 1
	cat /tmp/pf.json
	grep -q '"from":"vfio-pf:mlx5vf-pfsim.0,vf=0 (emulated PF: mlx5vf-pfsim)"' /tmp/pf.json \
		|| { echo "the source is not named as the emulated PF"; return 1; }
	grep -q '"digests_match":true' /tmp/pf.json || { echo "no digests compared"; return 1; }
	chunk=$(sed -n 's/.*"source_chunk_size":\([0-9]*\).*/\1/p' /tmp/pf.json)
	bytes=$(sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' /tmp/pf.json)
	echo "chunk size $chunk, $bytes bytes"
	[ -n "$chunk" ] && [ -n "$bytes" ] && [ "$chunk" -lt "$bytes" ] && [ "$bytes" -ge 268435456 ]
}

# A firmware that never hands SAVE_VHCA_STATE (0x118) back: the save fails
# once the command's deadline passes, naming the command and the timeout,
# and the device's close tears the function down all the same.
pf_stuck() {
	echo 0x118 > $PFDBG/0/stuck_opcode
	t0=$(cut -d' ' -f1 /proc/uptime)
	mlx5vf save --device vfio-pf:$PF0,vf=0,timeout=2s -o /dev/null 2> /tmp/err
	rc=$?
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo 0 > $PFDBG/0/stuck_opcode
	cat /tmp/err
	echo "failed after $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s"
	[ $rc = 1 ] || { echo "exit status $rc, expected 1"; return 1; }
	grep -q 'command 0x118: .*did not complete' /tmp/err
}

# A device that DMAs where nothing is mapped (every IOVA moved by 1 TiB):
# vfio_dma_rw() refuses, the model counts the faults and cannot even read
# its first entry, so bring-up's first command (ENABLE_HCA, 0x104) times
# out; the device's close tears down what there is.
pf_dma_fault() {
	before=$(sed -n 's/^vfio_dma_rw_errors //p' $PSYS0/counters)
	echo 0x10000000000 > $PFDBG/0/dma_skew
	mlx5vf save --device vfio-pf:$PF0,vf=0,timeout=1s -o /dev/null 2> /tmp/err
	rc=$?
	echo 0 > $PFDBG/0/dma_skew
	after=$(sed -n 's/^vfio_dma_rw_errors //p' $PSYS0/counters)
	cat /tmp/err
	echo "vfio_dma_rw errors: $before before, $after after"
	[ $rc = 1 ] || { echo "exit status $rc, expected 1"; return 1; }
	[ "$after" -gt "$before" ] || { echo "no DMA fault counted"; return 1; }
	grep -q 'firmware did not complete opcode 0x104' /tmp/err
}

# The PF's driver killed mid-save (SAVEs running on the workqueue, DMA
# into a process that is going away): closing its device tears the
# function down and leaves nothing behind.
pf_killed_mid_save() {
	mlx5vf save --device vfio-pf:$PF1,vf=0 -o /dev/null &
	pid=$!
	sleep 2
	kill -9 $pid
	wait $pid
	echo "save killed with status $?"
	pf_nothing_live
}

mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
step pf-insmod insmod /mods/mlx5vf_pfsim.ko spec=sim:state=@STATE@,vfs=2,seed=41 pfs=2
step pf-digests-differ pf_digests differ
step pf-migrate pf_migrate
step pf-digests-equal pf_digests equal
# Commands per second through the queue: over VFIO (doorbell and BAR
# reads by pwrite/pread, entries and mailboxes by vfio_dma_rw()), and the
# same benchmark in process over the model, on the same emulated CPU.
step pf-bench-cmdq mlx5vf bench --only cmdq --cmdq-device vfio-pf:$PF1,vf=1
step pf-bench-cmdq-in-process mlx5vf bench --only cmdq
step pf-stuck-firmware pf_stuck
step pf-dma-fault pf_dma_fault
step pf-load-after-stuck mlx5vf migrate --from vfio-pf:$PF1,vf=0 --to vfio-pf:$PF0,vf=1 --json
step pf-killed-mid-save pf_killed_mid_save
step pf-nothing-live pf_nothing_live
step pf-rmmod rmmod mlx5vf_pfsim

# The uAPI conformance check over vfio-pf: (its device reset is the VF's
# function-level reset through the model), on a smaller state: it saves
# the whole state several times.
step pf-insmod-check insmod /mods/mlx5vf_pfsim.ko spec=sim:state=16M,vfs=2,seed=51 pfs=1
step pf-check mlx5vf check --device vfio-pf:$PF0,vf=0 --strict
step pf-nothing-live-check pf_nothing_live
step pf-rmmod-check rmmod mlx5vf_pfsim
rm -f /tmp/pf.json /tmp/err
if [ $fails = $pf_fails_before ]; then
	echo "RIG vfio-pf: PASS"
else
	echo "RIG vfio-pf: FAIL ($((fails - pf_fails_before)) step(s))"
fi
