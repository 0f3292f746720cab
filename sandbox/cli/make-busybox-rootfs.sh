#!/bin/sh
# Builds the default container rootfs of `vessel run`: busybox-static and its applets, the usual
# top-level directories, /etc/passwd and /etc/group. Reproducible; replaces OUT atomically.
#   make-busybox-rootfs.sh OUT BUSYBOX
set -eu
out=$1 busybox=$2
[ -x "$busybox" ] || { echo "make-busybox-rootfs: $busybox is not an executable busybox (apt-get install busybox-static)" >&2; exit 1; }
tmp=$out.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
for d in bin sbin usr/bin usr/sbin dev proc sys tmp etc root run var/tmp home; do mkdir -p "$tmp/$d"; done
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
cp "$busybox" "$tmp/bin/busybox"
chmod 0755 "$tmp/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] && continue
  [ -e "$tmp/bin/$applet" ] || ln -s busybox "$tmp/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$tmp/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$tmp/etc/group"
printf 'vessel\n' > "$tmp/etc/hostname"
rm -rf "$out"
mv "$tmp" "$out"
