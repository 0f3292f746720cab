#!/usr/bin/env bash
# Cross-builds arch/aarch64 for arm64 and checks the output is AArch64 code. The ctest
# aarch64_cross_build runs it; exit 77 (ctest: skipped) when the cross compiler is absent.
#   arch/cross/cross_build.sh [SOURCE_ROOT] [BUILD_DIR]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
out=${2:-$root/build-aarch64}
if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "SKIP: aarch64-linux-gnu-g++ not found; install Debian's g++-aarch64-linux-gnu (setup.sh does)"
  exit 77
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$out/CMakeCache.txt" ]; then
  cmake -S "$root/arch/cross" -B "$out" "${gen[@]}" \
    -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" >/dev/null
fi
cmake --build "$out" -j"${VESSEL_CROSS_JOBS:-2}"
lib="$out/libvessel_arch_aarch64.a"
obj=$(find "$out" -name 'kvm_arm.cc.o' | head -1)
test_obj=$(find "$out" -name 'aarch64_fdt_test.cc.o' | head -1)
for f in "$obj" "$test_obj"; do
  [ -n "$f" ] || { echo "FAIL: an expected object file is missing under $out"; exit 1; }
  desc=$(file -b "$f")
  case "$desc" in
    *"ARM aarch64"*) echo "ok: $(basename "$f"): $desc" ;;
    *) echo "FAIL: $f is not AArch64 code: $desc"; exit 1 ;;
  esac
done
[ -f "$lib" ] || { echo "FAIL: $lib missing"; exit 1; }
# The arm64-only KVM code was compiled (not the stubs): its static_asserts ran and it calls ioctl.
if ! aarch64-linux-gnu-nm "$obj" | grep -q ' U ioctl'; then
  echo "FAIL: kvm_arm.cc.o makes no ioctl calls: the __aarch64__ code was not compiled"; exit 1
fi
echo "ok: arch/aarch64 cross-builds for arm64 ($lib)"
