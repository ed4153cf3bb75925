#!/bin/bash
# The real-kernel rig: Debian's Linux 6.12 under QEMU (TCG), our mlx5vf_sim
# module (C glue + the Rust driver and simulated firmware) behind the real
# VFIO core, and a static mlx5vf migrating through /dev/vfio in the guest;
# in the same boot, mlx5vf_pfsim's simulated PFs driven by mlx5vf as their
# PF driver (vfio-pf:, tests/kernel/guest-pfsim.sh).
#
#   tests/kernel/run.sh [all|deps|fetch|rust|module|pfsim_module|user|initrd|boot|vpci|...]
#
# Environment: WORK (default target/kernel-rig), KVER (default: what the
# linux-image-6.12-cloud-amd64 meta package depends on), STATE (simulated VF
# state, default 256M), PFSIM_STATE (the vfio-pf: migration's, default
# 256M), BOOT_TIMEOUT (s, default 600).
# Exits 0 iff the guest printed the PASS marker and the kernel log has no
# WARNING, BUG or Oops. See README.md ("The real-kernel rig").
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/qemu-boot.sh"
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-$ROOT/target/kernel-rig}
FLAVOUR=cloud-amd64
STATE=${STATE:-256M}
VPCI_STATE=${VPCI_STATE:-64M}
PFSIM_STATE=${PFSIM_STATE:-256M}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

stamp() { echo "[rig $(date +%T)] $*"; }
die() { echo "[rig] FAIL: $*" >&2; exit 1; }

kver() {
  if [ -z "${KVER:-}" ]; then
    if [ -f "$WORK/kver" ]; then
      KVER=$(cat "$WORK/kver")
    else
      KVER=$(apt-cache depends "linux-image-6.12-$FLAVOUR" 2>/dev/null \
        | sed -n "s/.*Depends: linux-image-\(6\.12\.[0-9]*+deb[0-9]*\)-$FLAVOUR.*/\1/p" | head -1)
      [ -n "$KVER" ] || die "cannot resolve the 6.12 kernel version (apt-get update?)"
    fi
  fi
  echo "$KVER" > "$WORK/kver"
  KREL=$KVER-$FLAVOUR
  HDR=$WORK/root/usr/src/linux-headers-$KREL
}

deps() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v cpio >/dev/null || missing+=(cpio)
  command -v pahole >/dev/null || missing+=(dwarves)
  command -v xz >/dev/null || missing+=(xz-utils)
  command -v make >/dev/null || missing+=(make)
  command -v gcc >/dev/null || missing+=(gcc)
  if [ ${#missing[@]} -gt 0 ]; then
    stamp "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! apt-cache show "linux-image-6.12-$FLAVOUR" >/dev/null 2>&1; then
    apt-get update -qq
  fi
  rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src' \
    || rustup component add rust-src --toolchain nightly
}

fetch() {
  kver
  if [ -f "$WORK/root/boot/vmlinuz-$KREL" ] && [ -f "$HDR/Makefile" ]; then
    stamp "kernel $KREL already unpacked"
    return
  fi
  stamp "fetch $KREL"
  rm -rf "$WORK/debs" "$WORK/root"
  mkdir -p "$WORK/debs" "$WORK/root"
  (cd "$WORK/debs" && timeout 600 apt-get download -q "linux-image-$KREL" "linux-headers-$KREL" \
      "linux-headers-$KVER-common" "linux-kbuild-$KVER" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  for d in "$WORK"/debs/*.deb; do dpkg -x "$d" "$WORK/root"; done
  [ -f "$HDR/Makefile" ] || die "headers for $KREL missing after fetch"
  # The flavour's headers Makefile includes the -common one by absolute path.
  sed -i "s|^include /usr/src/|include $WORK/root/usr/src/|" "$HDR/Makefile"
}

# The Rust objects: nightly with -Zbuild-std=core so core is built with the
# kernel's code model, retpolines, return thunks and IBT landing pads; one
# fat-LTO unit each (profile "kernel"); only the crate's own archive member
# is linked, so the kernel's memcpy/memset serve the libcalls. Two objects:
# the driver (mlx5vf-linux, the same object in every module) and the
# simulated firmware (mlx5vf-kmod, only in the modules that simulate).
KERNEL_RUSTFLAGS="-C relocation-model=static -C code-model=kernel -C no-redzone=yes \
  -C force-frame-pointers=yes -C jump-tables=no -Zplt=yes -Zfunction-return=thunk-extern \
  -Zcf-protection=branch -Zretpoline-external-thunk"

# rust_object LIB EXPORT_PREFIX OUT: the single LTO member of LIB, its
# exports cut down to EXPORT_PREFIX*, checked for what the kernel can link.
rust_object() {
  local a=$1 prefix=$2 out=$3 crate member t keep undefined
  crate=$(basename "$a" .a | sed 's/^lib//')
  member=$(ar t "$a" | grep "^$crate-")
  [ "$(echo "$member" | wc -l)" = 1 ] || die "expected one LTO object in $a, got: $member"
  t=$(mktemp -d)
  (cd "$t" && ar x "$a" "$member" && ld -r -o joined.o "$member" \
    && objcopy --remove-section=.llvmbc --remove-section=.llvmcmd joined.o plain.o)
  keep=$(nm --defined-only "$t/plain.o" | awk -v p="^$prefix" '$2 == "T" && $3 ~ p {print "--keep-global-symbol=" $3}')
  [ -n "$keep" ] || die "$a exports nothing named $prefix*"
  # shellcheck disable=SC2086
  objcopy $keep "$t/plain.o" "$out"
  rm -rf "$t"
  undefined=$(nm -u "$out" | awk '{print $2}' | sort | tr '\n' ' ')
  echo "  $(basename "$out"): $(nm --defined-only "$out" | awk '$2 == "T"' | wc -l) functions; needs: $undefined"
  for s in $undefined; do
    case $s in
      memcpy|memset|memmove|memcmp|__x86_return_thunk|__x86_indirect_thunk_r11) ;;
      *) die "$(basename "$out") needs $s, which the kernel does not export to it" ;;
    esac
  done
  if readelf -rW "$out" | awk '/^Relocation section/{s=$3} /R_X86_64/{print s, $3}' \
      | grep -v "'.rela.debug" | grep -vE 'R_X86_64_(64|32S|PC32|PLT32|PC64)$'; then
    die "relocations the module loader rejects in $out"
  fi
}

rust() {
  stamp "Rust objects (mlx5vf-linux, mlx5vf-kmod; x86_64-unknown-none, build-std)"
  local target=$WORK/rust-target
  # mlx5vf-linux is an rlib too, for which cargo turns LTO off: build the
  # staticlib alone.
  (cd "$ROOT" && RUSTFLAGS="$KERNEL_RUSTFLAGS" CARGO_TARGET_DIR=$target timeout 1200 \
    cargo +nightly rustc -q --profile kernel -p mlx5vf-linux --lib --crate-type staticlib \
      --target x86_64-unknown-none -Zbuild-std=core)
  (cd "$ROOT" && RUSTFLAGS="$KERNEL_RUSTFLAGS" CARGO_TARGET_DIR=$target timeout 1200 \
    cargo +nightly build -q --profile kernel -p mlx5vf-kmod --target x86_64-unknown-none \
      -Zbuild-std=core)
  rust_object "$target/x86_64-unknown-none/kernel/libmlx5vf_linux.a" mlx5vf_ "$WORK/mlx5vf_linux.o"
  rust_object "$target/x86_64-unknown-none/kernel/libmlx5vf_kmod.a" mlx5vf_ksim_ "$WORK/mlx5vf_ksim.o"
}

module() {
  kver
  stamp "module against $HDR"
  rm -rf "$WORK/mod" && mkdir -p "$WORK/mod/include"
  cp "$ROOT"/shim-linux/kmod/{Kbuild,Makefile,*.c,*.h} "$WORK/mod/"
  cp "$ROOT/shim-linux/include/mlx5vf.h" "$WORK/mod/include/"
  cp "$WORK/mlx5vf_linux.o" "$WORK/mod/mlx5vf_linux.o_shipped"
  cp "$WORK/mlx5vf_ksim.o" "$WORK/mod/mlx5vf_ksim.o_shipped"
  timeout 600 make -s -C "$WORK/mod" KDIR="$HDR" 2>&1 | tee "$WORK/module.log"
  if grep -E 'warning:' "$WORK/module.log"; then die "the module build warned"; fi
  ls -la "$WORK/mod/mlx5vf_sim.ko"
  pfsim_module
}

# mlx5vf_pfsim (shim-linux/kmod/pfsim): simulated PFs for vfio-pf:, in a
# directory of its own (it links the firmware object too).
pfsim_module() {
  kver
  rm -rf "$WORK/pfsim-mod" && mkdir -p "$WORK/pfsim-mod"
  cp "$ROOT"/shim-linux/kmod/pfsim/{Kbuild,Makefile,*.c,*.h} "$WORK/pfsim-mod/"
  cp "$WORK/mlx5vf_ksim.o" "$WORK/pfsim-mod/mlx5vf_ksim.o_shipped"
  timeout 600 make -s -C "$WORK/pfsim-mod" KDIR="$HDR" 2>&1 | tee "$WORK/pfsim-module.log"
  if grep -E 'warning:|WARNING' "$WORK/pfsim-module.log"; then die "the mlx5vf_pfsim build warned"; fi
  ls -la "$WORK/pfsim-mod/mlx5vf_pfsim.ko"
}

# A static mlx5vf for the guest (glibc, crt-static).
user() {
  stamp "static mlx5vf"
  (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$WORK/user-target \
    cargo build -q --release -p mlx5vf --target x86_64-unknown-linux-gnu)
  cp "$WORK/user-target/x86_64-unknown-linux-gnu/release/mlx5vf" "$WORK/mlx5vf"
  if readelf -lW "$WORK/mlx5vf" | grep -q INTERP; then die "mlx5vf is not static"; fi
}

initrd() {
  kver
  stamp "initramfs"
  local d=$WORK/irfs m
  rm -rf "$d" && mkdir -p "$d"/{bin,proc,sys,dev,tmp,mods}
  cp /bin/busybox "$d/bin/"
  for a in sh mount insmod rmmod poweroff cat cut dmesg ls grep uname head tail wc sed \
      echo date sleep tr awk; do ln -s busybox "$d/bin/$a"; done
  for m in vfio vfio_iommu_type1; do
    xz -dc "$WORK/root/lib/modules/$KREL/kernel/drivers/vfio/$m.ko.xz" > "$d/mods/$m.ko"
  done
  cp "$WORK/mod/mlx5vf_sim.ko" "$WORK/pfsim-mod/mlx5vf_pfsim.ko" "$d/mods/"
  cp "$WORK/mlx5vf" "$d/bin/"
  sed "s/@STATE@/$STATE/g" "$HERE/guest-init.sh" > "$d/init"
  sed "s/@STATE@/$PFSIM_STATE/g" "$HERE/guest-pfsim.sh" > "$d/pfsim.sh"
  chmod +x "$d/init"
  (cd "$d" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/initrd.cpio.gz"
  ls -la "$WORK/initrd.cpio.gz"
}

boot() {
  kver
  stamp "boot $KREL (TCG)"
  local log=$WORK/boot.log start end
  start=$(date +%s.%N)
  qemu_boot "$log" timeout "${BOOT_TIMEOUT:-600}" qemu-system-x86_64 -machine q35,accel=tcg \
    -cpu max -smp 2 -m 2G -nographic -no-reboot -kernel "$WORK/root/boot/vmlinuz-$KREL" \
    -initrd "$WORK/initrd.cpio.gz" -append "console=ttyS0 panic=-1 quiet loglevel=4 ${EXTRA_CMDLINE:-}"
  end=$(date +%s.%N)
  tr -d '\r' < "$log" | grep -aE '^(@@|===|RIG |  )' || true
  echo "[rig] boot to power-off: $(awk "BEGIN { printf \"%.1f\", $end - $start }") s wall"
  if tr -d '\r' < "$log" | grep -aE '(WARNING:|BUG:|Oops|Call Trace|kernel stack overflow)'; then
    die "the kernel log has a WARNING, BUG or Oops (full log: $log)"
  fi
  tr -d '\r' < "$log" | grep -aq '^RIG vfio-pf: PASS' \
    || die "the vfio-pf steps (mlx5vf_pfsim) did not pass (full log: $log)"
  tr -d '\r' < "$log" | grep -aq '^@@RESULT: PASS@@' || die "no PASS marker (full log: $log)"
  echo "[rig] PASS"
}

# --- mlx5vf_pci, the vfio_pci_core variant driver (shim-linux/kmod/pci) ----
# A boot of its own: Debian's mlx5_core.ko beside the production build, and
# the test build bound to two QEMU PCI functions behind an emulated VT-d
# IOMMU (tests/kernel/guest-vpci.sh).

# Both flavours, against the headers package's Module.symvers, which lists
# mlx5_core's exports (the image package's mlx5_core.ko is what loads).
vpci_module() {
  kver
  stamp "mlx5vf_pci (mlx5_core and sim flavours) against $HDR"
  local f d
  grep -qP '\tmlx5_vf_get_core_dev\tdrivers/net/ethernet/mellanox/mlx5/core/mlx5_core\t' \
    "$HDR/Module.symvers" || die "$HDR/Module.symvers lacks mlx5_core's exports"
  for f in mlx5 sim; do
    d=$WORK/vpci-mod-$f
    rm -rf "$d" && mkdir -p "$d/include"
    cp "$ROOT"/shim-linux/kmod/pci/{Kbuild,Makefile,*.c,*.h} "$d/"
    # The C both modules share (the sim flavour's firmware too).
    cp "$ROOT"/shim-linux/kmod/mlx5vf_{vfio_mig,simfw}.[ch] "$d/"
    cp "$ROOT/shim-linux/include/mlx5vf.h" "$ROOT/shim-linux/kmod/mlx5vf_ksim.h" "$d/include/"
    cp "$WORK/mlx5vf_linux.o" "$d/mlx5vf_linux.o_shipped"
    cp "$WORK/mlx5vf_ksim.o" "$d/mlx5vf_ksim.o_shipped"
    timeout 600 make -s -C "$d" KDIR="$HDR" MLX5VF_PF=$f 2>&1 | tee "$d/build.log"
    # modpost reports an unresolved symbol as a WARNING, not an error.
    if grep -E 'warning:|WARNING' "$d/build.log"; then die "mlx5vf_pci ($f) build warned"; fi
  done
  ls -la "$WORK"/vpci-mod-*/*.ko
}

# The initramfs: a /lib/modules tree (Debian's modules the two builds and
# mlx5_core need, by their depends=, and ours under extra/) for busybox
# depmod and modprobe in the guest.
vpci_initrd() {
  kver
  stamp "initramfs (mlx5vf_pci)"
  local d=$WORK/vpci-irfs mods=$WORK/root/lib/modules/$KREL m ko rel dep
  local want="vfio vfio_iommu_type1 vfio-pci-core mlx5_core" have=" "
  rm -rf "$d" && mkdir -p "$d"/{bin,proc,sys,dev,tmp} "$d/lib/modules/$KREL/extra"
  cp /bin/busybox "$d/bin/"
  for a in sh mount insmod rmmod modprobe modinfo depmod lsmod poweroff cat cut dmesg ls \
      grep uname head tail wc sed echo date sleep tr awk basename readlink; do
    ln -s busybox "$d/bin/$a"
  done
  while :; do
    # shellcheck disable=SC2086
    set -- $want
    [ $# -gt 0 ] || break
    m=$1
    shift
    want="$*"
    case $have in *" $m "*) continue ;; esac
    ko=$(find "$mods/kernel" -name "$m.ko.xz" | head -1)
    [ -n "$ko" ] || die "no $m.ko.xz in $mods"
    rel=${ko#"$mods"/}
    rel=${rel%.xz}
    mkdir -p "$d/lib/modules/$KREL/$(dirname "$rel")"
    xz -dc "$ko" > "$d/lib/modules/$KREL/$rel"
    have="$have$m "
    dep=$(strings "$d/lib/modules/$KREL/$rel" | sed -n 's/^depends=//p' | tr ',' ' ')
    want="$want $dep"
  done
  cp "$mods/modules.builtin" "$mods/modules.order" "$d/lib/modules/$KREL/"
  cp "$WORK/vpci-mod-mlx5/mlx5vf_pci.ko" "$WORK/vpci-mod-sim/mlx5vf_pci_test.ko" \
    "$d/lib/modules/$KREL/extra/"
  cp "$WORK/mlx5vf" "$d/bin/"
  sed "s/@STATE@/$VPCI_STATE/g" "$HERE/guest-vpci.sh" > "$d/init"
  chmod +x "$d/init"
  (cd "$d" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/vpci-initrd.cpio.gz"
  echo "  modules:$have"
  ls -la "$WORK/vpci-initrd.cpio.gz"
}

# Q35 with VT-d (TCG emulates it) and two `edu` functions, each behind a
# root port of its own, so each has a bus reset (VFIO_DEVICE_RESET) and an
# IOMMU group of its own; and an NVMe PF with one SR-IOV VF, the kind of
# function the production build binds to.
vpci_boot() {
  kver
  stamp "boot $KREL with intel-iommu and two PCI functions (TCG)"
  local log=$WORK/vpci-boot.log start end
  start=$(date +%s.%N)
  qemu_boot "$log" timeout "${BOOT_TIMEOUT:-600}" qemu-system-x86_64 -machine q35,accel=tcg \
    -cpu max -smp 2 -m 2G -nographic -no-reboot -nic none -device intel-iommu \
    -device pcie-root-port,id=rp1,chassis=1,slot=1 -device edu,bus=rp1 \
    -device pcie-root-port,id=rp2,chassis=2,slot=2 -device edu,bus=rp2 \
    -device pcie-root-port,id=rp3,chassis=3,slot=3 -device nvme-subsys,id=nvs \
    -device nvme,bus=rp3,serial=mlx5vf,subsys=nvs,sriov_max_vfs=1,sriov_vq_flexible=2,sriov_vi_flexible=1 \
    -kernel "$WORK/root/boot/vmlinuz-$KREL" -initrd "$WORK/vpci-initrd.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 intel_iommu=on ${EXTRA_CMDLINE:-}"
  end=$(date +%s.%N)
  tr -d '\r' < "$log" | grep -aE '^(@@|===|RIG |  )' || true
  echo "[rig] mlx5vf_pci boot to power-off: $(awk "BEGIN { printf \"%.1f\", $end - $start }") s wall"
  if tr -d '\r' < "$log" | grep -aE '(WARNING:|BUG:|Oops|Call Trace|kernel stack overflow)'; then
    die "the kernel log has a WARNING, BUG or Oops (full log: $log)"
  fi
  tr -d '\r' < "$log" | grep -aq '^RIG mlx5vf_pci: loaded beside mlx5_core' \
    || die "mlx5vf_pci did not load beside mlx5_core (full log: $log)"
  tr -d '\r' < "$log" | grep -aq '^RIG mlx5vf_pci: PASS' \
    || die "mlx5vf_pci_test did not pass (full log: $log)"
  tr -d '\r' < "$log" | grep -aq '^@@RESULT: PASS@@' || die "no PASS marker (full log: $log)"
  echo "[rig] mlx5vf_pci PASS"
}

vpci() { vpci_module; vpci_initrd; vpci_boot; }

case "${1:-all}" in
  all) deps; fetch; rust; module; user; initrd; boot; vpci ;;
  deps|fetch|rust|module|pfsim_module|user|initrd|boot|vpci|vpci_module|vpci_initrd|vpci_boot) "$1" ;;
  *) echo "usage: $0 [all|deps|fetch|rust|module|pfsim_module|user|initrd|boot|vpci|vpci_module|vpci_initrd|vpci_boot]" >&2
     exit 2 ;;
esac
