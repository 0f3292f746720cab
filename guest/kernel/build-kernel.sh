#!/usr/bin/env bash
# Builds the vessel guest kernel (vmlinux + bzImage) from Debian's linux-source-6.1 with vessel.config.
# The result is cached under $VESSEL_CACHE (default ~/.cache/vessel) keyed by a hash of every input, so a
# second run with nothing changed returns at once. Prints the cache directory on its last line.
# Usage: build-kernel.sh [--print-dir | --link DIR]
#   --print-dir  only print where the kernel for these inputs lives
#   --link DIR   build if needed, then symlink vmlinux, bzImage and System.map into DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src_tar=/usr/src/linux-source-6.1.tar.xz
cache=${VESSEL_CACHE:-$HOME/.cache/vessel}
[ -f "$src_tar" ] || { echo "build-kernel: $src_tar missing: install it with 'apt-get install linux-source-6.1' (setup.sh does)" >&2; exit 1; }
src_ver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %s "$src_tar")
key=$( { echo "$src_ver"; gcc --version | head -1; cat "$here/vessel.config" "$here/build-kernel.sh"; } | sha256sum | cut -c1-16)
out="$cache/kernel-$key"
if [ "${1:-}" = "--print-dir" ]; then echo "$out"; exit 0; fi
link_dir=""
if [ "${1:-}" = "--link" ]; then link_dir=${2:?--link needs a directory}; fi
link() {
  [ -n "$link_dir" ] || return 0
  mkdir -p "$link_dir"
  for f in vmlinux bzImage System.map; do ln -sfn "$out/$f" "$link_dir/$f"; done
  echo "build-kernel: linked $link_dir/{vmlinux,bzImage,System.map} -> $out"
}
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
  echo "build-kernel: cached kernel for these inputs at $out"
  link; echo "$out"; exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/kernel-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build-kernel: extracting $src_tar (linux-source $src_ver) into $work"
tar -C "$work" -xf "$src_tar"
cd "$work"/linux-source-6.1
echo "build-kernel: make tinyconfig + vessel.config"
make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$here/vessel.config" >/dev/null
make -s olddefconfig
# Every line of the fragment must have survived olddefconfig, or a dependency is missing.
missing=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qx "$line" .config || { echo "build-kernel: $line did not stick (dependency missing?)" >&2; missing=1; } ;;
    "# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; ! grep -q "^$sym=" .config || { echo "build-kernel: $sym should be off" >&2; missing=1; } ;;
  esac
done < "$here/vessel.config"
[ "$missing" = 0 ] || { echo "build-kernel: fix guest/kernel/vessel.config" >&2; exit 1; }
jobs=$(nproc)
echo "build-kernel: make -j$jobs vmlinux bzImage (about 5 minutes on 2 cores)"
start=$(date +%s)
make -s -j"$jobs" vmlinux bzImage
echo "build-kernel: built in $(( $(date +%s) - start )) s"
stage="$out.tmp.$$"
rm -rf "$stage"; mkdir -p "$stage"
cp vmlinux arch/x86/boot/bzImage System.map .config "$stage/"
rm -rf "$out"; mv "$stage" "$out"
echo "build-kernel: kernel cached at $out"
link
echo "$out"
