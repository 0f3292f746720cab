#!/usr/bin/env bash
# containerd-shim-vessel-v2 under real containerd vs runc, in one run (numbers, no pass/fail):
#   - wall time of `ctr run --rm IMAGE ID /bin/true` (containerd: shim start, Create, Start, Wait,
#     Delete, shim exit) for io.containerd.runc.v2 and io.containerd.vessel.v2, and the ratio;
#   - the shim process's memory while one container runs: VmRSS, split into the guest RAM mapping
#     (what the guest touched) and the rest (the shim + VMM itself), next to runc's shim VmRSS.
# Uses the private containerd of tests/shim/e2e/containerd_harness.sh (never the system one) and the
# locally built busybox image; needs root, containerd, ctr, runc, /dev/kvm and the full build.
#   bench/shim_bench.sh [BUILD_DIR]     (default build/)
# Environment: RUNC_RUNS (default 10), VESSEL_RUNS (default 1: each is a VM boot, ~50 s on kvm_pvm).
# Every line names the platform: on kvm_pvm (/sys/module/kvm_pvm) the guest kernel is emulated, so
# vessel's times there measure the emulator, not the product; compare ratios from one run.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
RUNC_RUNS=${RUNC_RUNS:-10}
VESSEL_RUNS=${VESSEL_RUNS:-1}
IMAGE=docker.io/vessel/busybox:bench
platform="hardware KVM"; [ -d /sys/module/kvm_pvm ] && platform="kvm_pvm (software nested KVM)"
source tests/shim/e2e/containerd_harness.sh
why=$(ctrd_missing runc)
[ -z "$why" ] || { echo "shim_bench: $why" >&2; exit 1; }
for f in "$BUILD/shim/containerd-shim-vessel-v2" "$BUILD/guest/vmlinux" "$BUILD/guest/initramfs.cpio" \
         "$BUILD/guest/busybox-rootfs/bin/busybox"; do
  [ -e "$f" ] || { echo "shim_bench: $f missing: build the tree first (./setup.sh)" >&2; exit 1; }
done
ctrd_start "$BUILD/shim" || exit 1
oci_image_import "$BUILD/guest/busybox-rootfs" "$IMAGE" 2>/dev/null || { echo "shim_bench: image import failed" >&2; exit 1; }

now() { date +%s.%N; }
# time_runs RUNTIME N: prints one wall time (s) per run of ctr run --rm ... /bin/true
time_runs() {
  local rt=$1 n=$2 i t0 t1 rc
  for i in $(seq 1 "$n"); do
    t0=$(now)
    ctr_ run --fifo-dir "$CTRD_DIR/fifo" --rm --runtime "$rt" "$IMAGE" "bench-$i" /bin/true >/dev/null 2>&1 </dev/null; rc=$?
    t1=$(now)
    [ "$rc" = 0 ] || { echo "shim_bench: $rt run $i failed (rc $rc); containerd log: $CTRD_LOG" >&2; CTRD_KEEP=1; return 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
  done
}
stats() {  # "p50 min max" of the numbers on stdin
  sort -g | awk '{ v[NR] = $1 } END { if (!NR) { print "- - -"; exit } printf "%.3f %.3f %.3f\n", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

echo "shim_bench: platform: $platform; containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), snapshotter $CTRD_SNAPSHOTTER"
time_runs io.containerd.runc.v2 1 >/dev/null  # warm the page cache / snapshot paths
runc_times=$(time_runs io.containerd.runc.v2 "$RUNC_RUNS") || exit 1
read -r r50 rmin rmax < <(printf '%s\n' "$runc_times" | stats)
printf 'ctr run --rm /bin/true  %-24s p50 %8s s  min %8s s  max %8s s  (%s runs)  [%s]\n' runc "$r50" "$rmin" "$rmax" "$RUNC_RUNS" "$platform"
log_from=$(stat -c %s "$CTRD_LOG")
vessel_times=$(time_runs io.containerd.vessel.v2 "$VESSEL_RUNS") || exit 1
read -r v50 vmin vmax < <(printf '%s\n' "$vessel_times" | stats)
printf 'ctr run --rm /bin/true  %-24s p50 %8s s  min %8s s  max %8s s  (%s runs)  [%s]\n' vessel "$v50" "$vmin" "$vmax" "$VESSEL_RUNS" "$platform"
awk -v v="$v50" -v r="$r50" -v p="$platform" 'BEGIN { printf "ctr run --rm /bin/true  vessel/runc ratio %.1fx  [%s]\n", v / r, p }'
# The breakdown: the shim's own log lines (containerd copies the log FIFO into its log) for those runs,
# with containerd's receive time, and the sandbox SDK's phase timings (VM setup, agent ready, set-up).
tail -c +"$((log_from + 1))" "$CTRD_LOG" |
  grep -E 'runtime=io.containerd.vessel.v2|^vessel\[info\] sandbox' |
  grep -Ev 'level=debug' | sed -E 's/^time="[0-9-]+T([0-9:.]{12})[0-9]*Z" level=[a-z]+ msg="?([^"]*)"?.*/\1 \2/; s/^/  shim log: /'

# Memory: one detached container per runtime; the shim's VmRSS while it runs.
rss_report() {  # rss_report NAME PID
  local pid=$1 name=$2
  awk '/^(VmRSS|RssAnon|RssFile|RssShmem|VmHWM):/ { printf "%s %s kB  ", $1, $2 }' "/proc/$pid/status"
  echo
}
# Largest mapping of a process: "size_kB rss_kB" (the guest RAM for vessel).
largest_mapping() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / { cur = $0 } /^Size:/ { s = $2 } /^Rss:/ { if (s > best) { best = s; rss = $2 } }
       END { printf "%d %d\n", best, rss }' "/proc/$1/smaps"
}
ctr_ run --fifo-dir "$CTRD_DIR/fifo" -d --runtime io.containerd.runc.v2 "$IMAGE" bench-rss-runc sleep 600 >/dev/null 2>&1 || echo "shim_bench: runc container failed" >&2
sleep 1
p=$(ctrd_shim_pids containerd-shim-runc-v2 | head -1)
[ -n "$p" ] && printf 'shim memory  runc    pid %-7s %s\n' "$p" "$(rss_report "$p" runc)"
t0=$(now)
if ctr_ run --fifo-dir "$CTRD_DIR/fifo" -d --runtime io.containerd.vessel.v2 "$IMAGE" bench-rss-vessel sleep 600 >/dev/null 2>&1; then
  t1=$(now)
  sleep 2
  p=$(ctrd_shim_pids containerd-shim-vessel-v2 | head -1)
  if [ -n "$p" ]; then
    printf 'shim memory  vessel  pid %-7s %s\n' "$p" "$(rss_report "$p" vessel)"
    read -r gsize grss < <(largest_mapping "$p")
    vmrss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status")
    printf 'shim memory  vessel  guest RAM mapping %d MiB, guest-touched (its Rss) %.1f MiB; VmRSS beyond guest memory %.1f MiB  (ctr run -d took %.1f s)  [%s]\n' \
      $((gsize / 1024)) "$(awk -v x="$grss" 'BEGIN{print x/1024}')" "$(awk -v a="$vmrss" -v b="$grss" 'BEGIN{print (a-b)/1024}')" \
      "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$platform"
    printf 'shim threads vessel  %s\n' "$(ls /proc/"$p"/task | wc -l)"
  fi
else
  echo "shim_bench: vessel detached container failed; containerd log: $CTRD_LOG" >&2; CTRD_KEEP=1
fi
ctrd_stop
