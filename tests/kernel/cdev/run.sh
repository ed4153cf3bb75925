#!/bin/bash
# The custom-kernel rig (CI runs it after tests/kernel/run.sh, with
# RIG=target/kernel-rig): mlx5vf's `vfio-mig:` backend over the iommufd
# character-device path, and DMA logging (vfio_log_ops), both of which
# Debian's 6.12 kernel lacks (CONFIG_IOMMUFD and CONFIG_IOMMUFD_DRIVER are
# off there, so tests/kernel/run.sh covers the group/container path and a
# module without DMA logging).
#
# It builds a small Linux 6.12 from Debian's linux-source-6.12 (tinyconfig +
# the FRAGMENT below: IOMMUFD, VFIO with DEVICE_CDEV *and* GROUP/CONTAINER/
# TYPE1, IOMMUFD_DRIVER, DEBUG_FS, modules without MODVERSIONS/signing,
# retpolines, return thunks and IBT as in Debian's config, ACPI for the
# second CPU) into KCACHE, outside the checkout, builds mlx5vf_sim.ko
# against it and boots it under QEMU (TCG, -smp 2). The guest (guest-init.sh)
# proves, on one kernel:
#   - /dev/iommu and /dev/vfio/devices/vfioN exist next to /dev/vfio/GROUP;
#   - `mlx5vf check --strict --require-eagain` passes over iommu=cdev
#     (VFIO_DEVICE_BIND_IOMMUFD, IOMMU_IOAS_ALLOC, VFIO_DEVICE_ATTACH_IOMMUFD_PT);
#   - `migrate` cdev -> cdev, `migrate --precopy` with iommu=auto from a
#     /dev/vfio/devices node and from a device name (both pick the cdev), and
#     group -> cdev: VF digests differ before (a fresh seed each time) and
#     match after; `check` over iommu=group passes too;
#   - adoption over iommufd: `pass-fds` opens the VFs' cdevs as a VMM does
#     and `check` and `migrate --precopy` run on vfio-fd:N,iommufd=M; an
#     unbound cdev and a cdev given with container= are refused by name;
#   - DMA logging through the real VFIO core against the simulated guest's
#     ground truth (debugfs mlx5vf_sim/<vf>/): `check --require-dma-logging`,
#     `dirty --verify` over more ranges than the tracker holds, page sizes
#     it must clamp, exactly full messages, a tracker forced to ERROR (EIO)
#     or silent (ETIMEDOUT), the report throughput, and a tracked migration
#     (`dirty` and `migrate --precopy` on one pass-fds descriptor); the guest
#     prints `RIG dirty: PASS`;
#   - every live object of the module is zero, rmmod is clean, and the kernel
#     log has no WARNING/BUG/Oops/leak.
# Each command's output must name the path it took, so a silent fallback
# fails. NOIOMMU=1 adds a pci-testdev bound to vfio-pci in a noiommu group:
# it once found two backend bugs, now fixed (iommu=auto picked a cdev node
# Linux does not create for noiommu devices; the group path asked a noiommu
# container for type1v2), and checks both stay fixed.
#
#   tests/kernel/cdev/run.sh [all|deps|fetch|config|kernel|artefacts|module|initrd|boot]...
#   e.g. RIG=target/kernel-rig tests/kernel/cdev/run.sh all   # reuse the main rig's artefacts
#
# Stages, measured on the project's 2-core box with other builds running
# (each is cached or incremental; run any alone, or several in order):
#   deps       apt-get flex bison libelf-dev (+ qemu busybox cpio)  ~5 s
#   fetch      apt-get download linux-source-6.12 (154 MB), untar   12-25 s
#   config     tinyconfig + FRAGMENT, every line checked            6-10 s
#   kernel     make -j2 bzImage modules (2.7 MB bzImage)            ~4-6 min cold (248 s), ~3 s no-op
#   artefacts  the Rust object and a static mlx5vf: copied from RIG
#              (the main rig's WORK), else built by
#              tests/kernel/run.sh rust + user into WORK            0 s / a few min
#   module     kbuild M= against the build tree (objtool checks the
#              linked module, Rust object included)                 ~3 s
#   initrd     busybox + module + mlx5vf, gzip -1                   <1 s
#   boot       QEMU TCG: 3 checks + 4 migrations of 64 MiB VFs and
#              the DMA-logging steps                                ~36-44 s
# All: 304 s cold (empty KCACHE and WORK, RIG given), 44 s warm.
#
# Environment: WORK (default target/cdev-rig), KCACHE (the kernel source and
# build, default ~/.cache/mlx5vf-cdev-rig), RIG (reuse RIG/mlx5vf_{linux,ksim}.o
# and RIG/mlx5vf, e.g. target/kernel-rig), MLX5VF (a static mlx5vf to use
# instead), SRC_VERSION (linux-source-6.12 version, default the apt
# candidate), JOBS (default 2), SAVE_DELAY_US (default 3000, see below),
# NOIOMMU (1: the noiommu steps), BOOT_TIMEOUT (s, default 600).
# Exits 0 iff the guest printed its PASS marker and `RIG dirty: PASS`, and
# the kernel log has no WARNING, BUG or Oops.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../qemu-boot.sh"
ROOT=$(cd "$HERE/../../.." && pwd)
WORK=${WORK:-$ROOT/target/cdev-rig}
# The kernel source and build, outside the checkout so a fresh checkout (CI)
# reuses them; rebuilt incrementally when the FRAGMENT changes.
KCACHE=${KCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlx5vf-cdev-rig}
JOBS=${JOBS:-2}
# The SAVE completions' extra latency. `check --require-eagain` needs the
# reader to reach its second read before the first SAVE completes: at 300 us
# that race is lost now and then under TCG on a loaded host (1 in 12 checks
# on Debian's kernel, 2 in 12 here), at 3000 us it was never lost (0 in 12).
SAVE_DELAY_US=${SAVE_DELAY_US:-3000}
mkdir -p "$WORK" "$KCACHE"
WORK=$(cd "$WORK" && pwd)
KCACHE=$(cd "$KCACHE" && pwd)
SRC=$KCACHE/linux-source-6.12
BUILD=$KCACHE/build

stamp() { echo "[cdev-rig $(date +%T)] $*"; }
# One rig at a time changes the shared kernel tree (fetch, config, kernel).
lock_kcache() {
  [ -n "${KCACHE_LOCKED:-}" ] && return
  exec 9>"$KCACHE/.lock"
  flock 9
  KCACHE_LOCKED=1
}
die() { echo "[cdev-rig] FAIL: $*" >&2; exit 1; }

# What the test needs on top of tinyconfig. Checked after olddefconfig: a
# line that did not survive (a missing dependency) fails the config stage.
FRAGMENT='
CONFIG_64BIT=y
CONFIG_SMP=y
CONFIG_X86_MPPARSE=y
# ACPI: SeaBIOS hands Linux the second CPU through ACPI (MADT) only.
CONFIG_ACPI=y
CONFIG_PCI=y
CONFIG_PRINTK=y
CONFIG_PRINTK_TIME=y
CONFIG_KALLSYMS=y
CONFIG_HIGH_RES_TIMERS=y
CONFIG_BUG=y
CONFIG_MULTIUSER=y
CONFIG_FUTEX=y
CONFIG_EPOLL=y
CONFIG_POSIX_TIMERS=y
CONFIG_TIMERFD=y
CONFIG_EVENTFD=y
CONFIG_SHMEM=y
CONFIG_TMPFS=y
CONFIG_PROC_FS=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_TTY=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_MODULES=y
CONFIG_MODULE_UNLOAD=y
CONFIG_MODULE_FORCE_UNLOAD=y
# CONFIG_MODVERSIONS is not set
# CONFIG_MODULE_SIG is not set
CONFIG_CPU_MITIGATIONS=y
CONFIG_MITIGATION_RETPOLINE=y
CONFIG_MITIGATION_RETHUNK=y
# IBT as in Debian: objtool then runs on the linked module, Rust object
# included, and records its return sites. Without it the shipped object is
# never seen by objtool, its `jmp __x86_return_thunk`s stay unpatched, and
# the SRSO/UNRET build WARNs "Unpatched return thunk in use" at insmod.
CONFIG_X86_KERNEL_IBT=y
CONFIG_STACKPROTECTOR=y
CONFIG_IOMMU_SUPPORT=y
CONFIG_IOMMUFD=y
CONFIG_VFIO=y
CONFIG_VFIO_DEVICE_CDEV=y
CONFIG_VFIO_GROUP=y
CONFIG_VFIO_CONTAINER=y
CONFIG_VFIO_IOMMU_TYPE1=y
# CONFIG_IOMMUFD_VFIO_CONTAINER is not set
# DMA logging: the iova_bitmap helpers of the VFIO core are real only with
# IOMMUFD_DRIVER, a hidden bool an IOMMU driver selects when IOMMUFD is on
# (as on a VT-d host). No DMAR table under q35 without intel-iommu, so the
# driver stays idle; the emulated-IOMMU devices need no hardware IOMMU.
CONFIG_PCI_MSI=y
CONFIG_INTEL_IOMMU=y
CONFIG_IOMMUFD_DRIVER=y
# The simulated guest and its ground truth (mlx5vf_sim debugfs files).
CONFIG_DEBUG_FS=y
# For NOIOMMU=1: a PCI device in a noiommu group (vfio-pci).
CONFIG_VFIO_PCI=y
CONFIG_VFIO_NOIOMMU=y
# CONFIG_KERNEL_XZ is not set
CONFIG_KERNEL_GZIP=y
'

deps() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v cpio >/dev/null || missing+=(cpio)
  command -v flex >/dev/null || missing+=(flex)
  command -v bison >/dev/null || missing+=(bison)
  command -v bc >/dev/null || missing+=(bc)
  command -v make >/dev/null || missing+=(make)
  command -v gcc >/dev/null || missing+=(gcc)
  [ -f /usr/include/gelf.h ] || missing+=(libelf-dev)   # objtool
  if [ ${#missing[@]} -gt 0 ]; then
    stamp "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

fetch() {
  lock_kcache
  if [ -f "$SRC/Makefile" ]; then
    stamp "source already unpacked: $(make -s -C "$SRC" kernelversion)"
    return
  fi
  stamp "fetch linux-source-6.12 ${SRC_VERSION:-}"
  rm -rf "$KCACHE/debs" "$KCACHE/pkg" "$SRC"
  mkdir -p "$KCACHE/debs" "$KCACHE/pkg"
  apt-cache show linux-source-6.12 >/dev/null 2>&1 || apt-get update -qq
  (cd "$KCACHE/debs" && timeout 600 apt-get download -q "linux-source-6.12${SRC_VERSION:+=$SRC_VERSION}" 2>&1 \
     | grep -v '^W: Download is performed unsandboxed' || true)
  dpkg -x "$KCACHE"/debs/linux-source-6.12_*.deb "$KCACHE/pkg"
  tar -C "$KCACHE" -xJf "$KCACHE/pkg/usr/src/linux-source-6.12.tar.xz"
  rm -rf "$KCACHE/pkg"
  [ -f "$SRC/Makefile" ] || die "no kernel tree at $SRC after fetch"
}

config() {
  lock_kcache
  [ -f "$SRC/Makefile" ] || die "run the fetch stage first"
  mkdir -p "$BUILD"
  echo "$FRAGMENT" > "$KCACHE/fragment.config"
  if [ -f "$BUILD/.config" ] && [ -f "$KCACHE/config.fragment.used" ] \
      && cmp -s "$KCACHE/fragment.config" "$KCACHE/config.fragment.used"; then
    stamp "config unchanged"
    return
  fi
  stamp "config: tinyconfig + fragment"
  make -s -C "$SRC" O="$BUILD" ARCH=x86_64 tinyconfig >/dev/null
  cat "$KCACHE/fragment.config" >> "$BUILD/.config"
  make -s -C "$SRC" O="$BUILD" ARCH=x86_64 olddefconfig >/dev/null 2>"$KCACHE/config.log"
  local line bad=0
  while IFS= read -r line; do
    case $line in
      CONFIG_*=*) grep -qx "$line" "$BUILD/.config" || { echo "  lost: $line"; bad=1; } ;;
      "# CONFIG_"*" is not set")
        local opt=${line#\# }; opt=${opt%% *}
        if grep -q "^$opt=" "$BUILD/.config"; then echo "  still set: $opt"; bad=1; fi ;;
    esac
  done < "$KCACHE/fragment.config"
  [ $bad = 0 ] || die "the config lost options of the fragment (see above)"
  cp "$KCACHE/fragment.config" "$KCACHE/config.fragment.used"
  echo "  .config: $(grep -c '=' "$BUILD/.config") options set ($(grep -c '=y' "$BUILD/.config") =y, $(grep -c '=m' "$BUILD/.config") =m)"
}

kernel() {
  lock_kcache
  [ -f "$BUILD/.config" ] || die "run the config stage first"
  stamp "kernel: make -j$JOBS bzImage modules"
  local start end
  start=$(date +%s)
  # `modules` also writes Module.symvers, which M= builds need.
  if ! make -s -C "$SRC" O="$BUILD" ARCH=x86_64 -j"$JOBS" bzImage modules > "$KCACHE/kernel.log" 2>&1; then
    tail -30 "$KCACHE/kernel.log"
    die "kernel build failed (log: $KCACHE/kernel.log)"
  fi
  grep -E 'warning:' "$KCACHE/kernel.log" || true
  [ -f "$BUILD/arch/x86/boot/bzImage" ] || die "no bzImage"
  end=$(date +%s)
  echo "  bzImage $(stat -c %s "$BUILD/arch/x86/boot/bzImage") bytes, $((end - start)) s"
}

# The Rust object and a static mlx5vf: from RIG (the main rig's work dir),
# else built by the main rig's own stages into WORK.
artefacts() {
  if [ -n "${RIG:-}" ]; then
    stamp "artefacts from $RIG"
    cp "$RIG/mlx5vf_linux.o" "$RIG/mlx5vf_ksim.o" "$WORK/"
    cp "${MLX5VF:-$RIG/mlx5vf}" "$WORK/mlx5vf"
  else
    stamp "artefacts: tests/kernel/run.sh rust user (WORK=$WORK)"
    WORK=$WORK "$ROOT/tests/kernel/run.sh" rust
    if [ -n "${MLX5VF:-}" ]; then cp "$MLX5VF" "$WORK/mlx5vf"; else WORK=$WORK "$ROOT/tests/kernel/run.sh" user; fi
  fi
  if readelf -lW "$WORK/mlx5vf" | grep -q INTERP; then die "mlx5vf is not static"; fi
}

module() {
  [ -f "$BUILD/Module.symvers" ] || die "run the kernel stage first"
  [ -f "$WORK/mlx5vf_linux.o" ] || die "run the artefacts stage first"
  stamp "module against $BUILD"
  rm -rf "$WORK/mod" && mkdir -p "$WORK/mod/include"
  cp "$ROOT"/shim-linux/kmod/{Kbuild,Makefile,*.c,*.h} "$WORK/mod/"
  cp "$ROOT/shim-linux/include/mlx5vf.h" "$WORK/mod/include/"
  cp "$WORK/mlx5vf_linux.o" "$WORK/mod/mlx5vf_linux.o_shipped"
  cp "$WORK/mlx5vf_ksim.o" "$WORK/mod/mlx5vf_ksim.o_shipped"
  if ! timeout 600 make -s -C "$BUILD" ARCH=x86_64 M="$WORK/mod" modules > "$WORK/module.log" 2>&1; then
    cat "$WORK/module.log"
    die "module build failed"
  fi
  cat "$WORK/module.log"
  if grep -E 'warning:' "$WORK/module.log"; then die "the module build warned"; fi
  ls -la "$WORK/mod/mlx5vf_sim.ko"
}

initrd() {
  [ -f "$WORK/mod/mlx5vf_sim.ko" ] || die "run the module stage first"
  stamp "initramfs"
  local d=$WORK/irfs m
  rm -rf "$d" && mkdir -p "$d"/{bin,proc,sys,dev,tmp,mods}
  cp /bin/busybox "$d/bin/"
  for a in sh mount insmod rmmod poweroff reboot cat cut dmesg ls grep uname head tail wc sed \
      echo date sleep tr awk readlink; do ln -s busybox "$d/bin/$a"; done
  # VFIO is built in here; should the config make it modular, load it too.
  for m in $(cd "$BUILD" && find drivers/vfio drivers/iommu -name '*.ko' 2>/dev/null); do
    cp "$BUILD/$m" "$d/mods/"
  done
  cp "$WORK/mod/mlx5vf_sim.ko" "$d/mods/"
  cp "$WORK/mlx5vf" "$d/bin/"
  sed "s/@SAVE_DELAY_US@/$SAVE_DELAY_US/g" "$HERE/guest-init.sh" > "$d/init"
  chmod +x "$d/init"
  (cd "$d" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/initrd.cpio.gz"
  ls -la "$WORK/initrd.cpio.gz"
}

boot() {
  [ -f "$WORK/initrd.cpio.gz" ] || die "run the initrd stage first"
  stamp "boot $(cat "$BUILD/include/config/kernel.release") (TCG)"
  local log=$WORK/boot.log start end
  start=$(date +%s.%N)
  local extra=() cmdline="console=ttyS0 panic=-1 quiet loglevel=4 ${EXTRA_CMDLINE:-}"
  if [ "${NOIOMMU:-0}" = 1 ]; then
    extra=(-device pci-testdev,addr=10.0)
    cmdline="$cmdline rig.noiommu"
  fi
  qemu_boot "$log" timeout "${BOOT_TIMEOUT:-600}" qemu-system-x86_64 -machine q35,accel=tcg \
    -cpu max -smp 2 -m 2G -nographic -no-reboot -nic none "${extra[@]}" \
    -kernel "$BUILD/arch/x86/boot/bzImage" -initrd "$WORK/initrd.cpio.gz" -append "$cmdline"
  end=$(date +%s.%N)
  tr -d '\r' < "$log" | grep -aE '^(@@|===|RIG |  )' || true
  echo "[cdev-rig] boot to power-off: $(awk "BEGIN { printf \"%.1f\", $end - $start }") s wall"
  if tr -d '\r' < "$log" | grep -aE '(WARNING:|BUG:|Oops|Call Trace|kernel stack overflow)'; then
    die "the kernel log has a WARNING, BUG or Oops (full log: $log)"
  fi
  tr -d '\r' < "$log" | grep -aq '^RIG dirty: PASS' || die "the DMA-logging steps did not pass (full log: $log)"
  tr -d '\r' < "$log" | grep -aq '^@@RESULT: PASS@@' || die "no PASS marker (full log: $log)"
  echo "[cdev-rig] PASS"
}

[ $# -gt 0 ] || set -- all
for stage in "$@"; do
  case $stage in
    all) deps; fetch; config; kernel; artefacts; module; initrd; boot ;;
    deps|fetch|config|kernel|artefacts|module|initrd|boot) "$stage" ;;
    *) echo "usage: $0 [all|deps|fetch|config|kernel|artefacts|module|initrd|boot]..." >&2; exit 2 ;;
  esac
done
