#!/usr/bin/env bash
# Symbol check of mlx5vf-linux's static library for x86_64-unknown-none (the
# kernel target), on stable Rust. Run from anywhere; CI calls it from .ci/run.
#
# 1. `cargo build -p mlx5vf-linux --target x86_64-unknown-none` (the plain
#    no_std build must work).
# 2. The library as a module would link it: a staticlib alone (cargo rustc
#    --crate-type staticlib: cargo turns LTO off for a lib that is also an
#    rlib), fat LTO, one codegen unit, panic=abort, static relocation model.
#    Of that archive only the crate's own member is taken (compiler_builtins
#    stays out: the kernel provides memcpy & co.), stripped of LLVM bitcode
#    (GNU nm's LLVM plugin chokes on it).
# 3. Checks, on that object:
#    - undefined symbols: only what a kernel provides (memcpy, memset,
#      memmove, memcmp, bcmp); the callbacks are function pointers, so they
#      are not symbols at all;
#    - exported symbols: only the C ABI (mlx5vf_*), no test-only entry point;
#    - panic paths: every call site into core's panic machinery, by the
#      function that contains it. Fails above MLX5VF_MAX_PANIC_SITES
#      (default: the current count, so a new panic path fails CI);
#    - stack frames: none above MLX5VF_MAX_FRAME (default 1024 bytes);
#    - relocation types outside what the x86 module loader accepts are
#      reported (not failed: a real module is built with nightly
#      -Zbuild-std=core, see shared/reference/kernel-rig.md 5.7).
#
# Env: CARGO_TARGET_DIR (default <workspace>/target), MLX5VF_MAX_PANIC_SITES,
# MLX5VF_MAX_FRAME.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
target=x86_64-unknown-none
max_panic_sites=${MLX5VF_MAX_PANIC_SITES:-0}
max_frame=${MLX5VF_MAX_FRAME:-1024}
allowed_undefined='^(memcpy|memset|memmove|memcmp|bcmp)$'

step() { printf '\n--- %s\n' "$*"; }

step "no_std build for $target (dev profile)"
cargo build -q -p mlx5vf-linux --target "$target"

step "staticlib for $target: fat LTO, panic=abort, static relocations"
cargo rustc -q -p mlx5vf-linux --lib --crate-type staticlib --target "$target" \
	--profile kernel-check \
	--config 'profile.kernel-check.inherits="release"' \
	--config 'profile.kernel-check.lto="fat"' \
	--config 'profile.kernel-check.codegen-units=1' \
	--config 'profile.kernel-check.debug=0' \
	--config 'profile.kernel-check.panic="abort"' \
	--config "target.$target.rustflags=[\"-Crelocation-model=static\",\"-Crelro-level=off\"]"
lib="$target_dir/$target/kernel-check/libmlx5vf_linux.a"
test -f "$lib" || { echo "missing $lib"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
member=$(ar t "$lib" | grep '^mlx5vf_linux-' || true)
if [ "$(printf '%s\n' "$member" | grep -c .)" -ne 1 ]; then
	echo "expected exactly one mlx5vf_linux member (fat LTO) in $lib, got: $member"
	exit 1
fi
(cd "$work" && ar x "$lib" "$member")
obj="$work/mlx5vf_linux.o"
objcopy --remove-section=.llvmbc --remove-section=.llvmcmd "$work/$member" "$obj"
printf 'object: %s (%s bytes of %s)\n' "$member" "$(stat -c %s "$obj")" "$lib"

fail=0

step "undefined symbols"
undefined=$(nm -u "$obj" | awk '{print $NF}' | sort -u)
printf '%s\n' "$undefined" | sed 's/^/  /'
bad_undefined=$(printf '%s\n' "$undefined" | grep -Ev "$allowed_undefined" | grep . || true)
if [ -n "$bad_undefined" ]; then
	echo "FAIL: undefined symbols a kernel does not provide:"
	printf '%s\n' "$bad_undefined" | sed 's/^/  /'
	fail=1
else
	echo "ok: only kernel-provided symbols"
fi

step "exported symbols"
exported=$(nm -g --defined-only "$obj" | awk '{print $NF}' | sort -u)
echo "  $(printf '%s\n' "$exported" | grep -c .) symbols: $(printf '%s ' $exported)"
bad_exported=$(printf '%s\n' "$exported" | grep -Ev '^mlx5vf_' | grep . || true)
test_only=$(printf '%s\n' "$exported" | grep -E '^mlx5vf_sim_' || true)
if [ -n "$bad_exported$test_only" ]; then
	echo "FAIL: exported symbols outside the C ABI: $bad_exported $test_only"
	fail=1
else
	echo "ok: only the C ABI (mlx5vf_*)"
fi

step "panic paths"
# Panic entry points: core::panicking::*, the *_fail helpers of slices,
# strings and Option/Result, the panic handler. Relocations to local
# symbols name their section (.text.<mangled>), which objdump -C leaves
# mangled. The precompiled `core` uses v0 mangling (`_RNv...4core9panicking
# 18panic_bounds_check`), which the legacy pattern below never matched, so
# those section names are cut out and demangled (c++filt knows v0:
# `core[bb170dea1013a3a3]::panicking::panic_bounds_check`); legacy ones are
# matched mangled. `core` must be the crate itself (`N4core` mangled,
# `core::` or `core[hash]::` at a word start demangled), not a crate whose
# name ends in it (`mlx5vf_core::...::handle_save_failed` is not a panic
# path).
panic_re='((ZN4core|(^|[^_[:alnum:]])core([[][0-9a-f]+[]])?::)[^ ]*(panick|_fail|failed))|rust_begin_unwind'
objdump -dr --no-show-raw-insn -C "$obj" |
	sed -E 's/\.text(\.[a-z]+)?\.(_R[0-9A-Za-z_]+)/\2/g' | c++filt >"$work/dis.txt"
awk -v re="$panic_re" '
	/^[0-9a-f]+ <.*>:$/ { fn = $0; sub(/^[0-9a-f]+ </, "", fn); sub(/>:$/, "", fn); next }
	/R_X86_64_/ && $NF ~ re && fn !~ re { print fn }
' "$work/dis.txt" | sort | uniq -c | sort -rn >"$work/panic-sites.txt"
sites=$(awk '{n += $1} END {print n + 0}' "$work/panic-sites.txt")
echo "  $sites call site(s) into the panic machinery from outside it:"
sed 's/^/  /' "$work/panic-sites.txt"
nm -C "$obj" | grep -E ' [tT] ' | awk '{ $1 = ""; $2 = ""; print }' | grep -E "$panic_re" |
	sed 's/^ */  present: /' || true
if [ "$sites" -gt "$max_panic_sites" ]; then
	echo "FAIL: $sites panic call sites, more than MLX5VF_MAX_PANIC_SITES=$max_panic_sites"
	fail=1
else
	echo "ok: $sites <= $max_panic_sites"
fi

step "stack frames (release; each function's own, callees not included)"
# The frame each function allocates itself (its first `sub $N,%rsp`), for
# every function in the object, core's included. A kernel stack is 16 KiB
# and the kernel warns at 2 KiB (FRAME_WARN); we hold every frame to
# MLX5VF_MAX_FRAME (default 1 KiB) so a multi-KiB temporary (an engine
# built on the stack and moved) fails CI. mlx5vf_device_init in particular
# writes the multi-KiB device in place.
awk '
	/^[0-9a-f]+ <.*>:$/ { fn = $0; sub(/^[0-9a-f]+ </, "", fn); sub(/>:$/, "", fn); want = 1; next }
	want && /sub +\$0x[0-9a-f]+,%rsp/ {
		v = $0; sub(/.*\$0x/, "", v); sub(/,.*/, "", v)
		print v, fn; want = 0
	}
' "$work/dis.txt" | while read -r hex fn; do echo "$((16#$hex)) $fn"; done |
	sort -rn >"$work/frames.txt"
head -8 "$work/frames.txt" | awk '{n = $1; $1 = ""; printf "  %6d bytes %s\n", n, substr($0, 1, 110)}'
largest=$(awk 'NR == 1 {print $1}' "$work/frames.txt")
largest=${largest:-0}
if [ "$largest" -gt "$max_frame" ]; then
	echo "FAIL: a $largest-byte frame, more than MLX5VF_MAX_FRAME=$max_frame"
	fail=1
else
	echo "ok: largest frame $largest <= $max_frame bytes"
fi

step "relocations (information: the module loader takes 64, 32S, PC32, PLT32, PC64)"
readelf -rW "$obj" | awk '/^Relocation section/ { s = $3 } /R_X86_64/ { print s, $3 }' |
	grep -v "'.rela.debug" | awk '{print $2}' | sort | uniq -c | sed 's/^/  /'
gotpcrel=$(readelf -rW "$obj" | grep GOTPCREL | awk '{print $5}' | sort | uniq -c | tr '\n' ' ' || true)
if [ -n "$gotpcrel" ]; then
	echo "  GOTPCREL (libcalls through the GOT, from the precompiled core's module flags;"
	echo "  a module build needs nightly -Zbuild-std=core -Zplt=yes): $gotpcrel"
fi

echo
if [ "$fail" -ne 0 ]; then
	echo "check-symbols: FAILED"
	exit 1
fi
echo "check-symbols: ok"
