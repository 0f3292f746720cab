#!/usr/bin/env bash
# vessel setup: installs every Debian 12 package the project needs, configures and builds the tree,
# builds (or reuses from the cache) the guest kernel and the test initramfs. Idempotent: a second
# run with nothing changed takes seconds. Run as root on Debian 12 (apt-get needs it).
#   ./setup.sh              Release-ish build in build/ (RelWithDebInfo)
#   BUILD_TYPE=Sanitize ./setup.sh   ASan+UBSan build (BUILD_DIR defaults to build-sanitize/)
# Environment: VESSEL_CACHE (default ~/.cache/vessel) holds the kernel, keyed by its inputs' hash.
set -euo pipefail
cd "$(dirname "$0")"
say() { echo "setup: $*"; }

packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev libboost-dev libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev libfdt-dev liburing-dev nlohmann-json3-dev zlib1g-dev
  linux-source-6.1 flex bison bc libelf-dev libssl-dev cpio xz-utils
  busybox-static e2fsprogs qemu-system-x86 device-tree-compiler g++-aarch64-linux-gnu
  golang-go golang-github-containerd-ttrpc-dev golang-github-containerd-containerd-dev iproute2 libseccomp-dev containerd runc
  python3-matplotlib
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "setup: run as root (apt-get install needs it)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "all ${#packages[@]} Debian packages present"
fi

build_type=${BUILD_TYPE:-RelWithDebInfo}
if [ "$build_type" = Sanitize ]; then build_dir=${BUILD_DIR:-build-sanitize}; else build_dir=${BUILD_DIR:-build}; fi
say "configuring $build_dir ($build_type)"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" >/dev/null
say "building (the guest kernel takes about 4 minutes on 2 cores the first time; cached under ${VESSEL_CACHE:-$HOME/.cache/vessel})"
cmake --build "$build_dir"
say "done: $build_dir/vmm/vessel-vmm, default guest in $build_dir/guest/ (vmlinux, bzImage, initramfs.cpio)"
# The default sandbox template (vessel/sandbox/template.h): one boot now so that `vessel run`, the
# SDK and the shim restore sandboxes instead of booting a kernel. Kept when it still matches.
if [ -r /dev/kvm ] && [ "${VESSEL_SKIP_TEMPLATE:-}" != 1 ]; then
  say "sandbox templates: building the default ones if missing (one guest boot each: ~45 s on software KVM)"
  "$build_dir/sandbox/vessel" template build --if-missing ||
    say "warning: no sandbox template; sandboxes will boot the kernel (see the message above)"
  "$build_dir/sandbox/vessel" template build --network --if-missing ||
    say "warning: no template for sandboxes with a pod network; they will boot the kernel"
fi
