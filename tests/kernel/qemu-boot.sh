# Sourced by the rigs (tests/kernel/run.sh, tests/kernel/cdev/run.sh).
#
# qemu_boot LOG CMD...: runs the boot command CMD with its console in LOG.
# A kernel that dies before the guest's init prints its first line
# ("=== guest ...") ran none of our code (our modules are loaded by init):
# TCG once tripped over the kernel's own text patching that way (an int3
# Oops in sched_clock_cpu at 1.8 s). That boot is kept as LOG.early and the
# guest is booted once more; any other failure stands.
qemu_boot() {
  local log=$1
  shift
  "$@" > "$log" 2>&1 || true
  if ! tr -d '\r' < "$log" | grep -aq '=== guest '; then
    mv "$log" "$log.early"
    echo "[rig] the kernel died before the guest's init ran (none of our code had run; log: $log.early): booting once more"
    "$@" > "$log" 2>&1 || true
  fi
}
