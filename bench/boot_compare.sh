#!/usr/bin/env bash
# Boots the project's guest (kernel + test initramfs) with vessel-vmm and, in the same run, with
# QEMU microvm (Debian's qemu-system-x86_64) under KVM where QEMU can use it and under TCG (pure
# software emulation). Prints, per boot, the host seconds to the first console byte, to
# "Run /init", to the init's last line, and the ratios against vessel. Every line names the
# platform: on kvm_pvm hosts these are not product numbers (guest kernel code is emulated).
#   bench/boot_compare.sh [BUILD_DIR]      (default build/)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
guest=$build/guest
vmm=$build/vmm/vessel-vmm
limit=${BOOT_LIMIT_S:-240}
platform="hardware KVM"; [ -d /sys/module/kvm_pvm ] && platform="kvm_pvm (software nested KVM)"
for f in "$vmm" "$guest/vmlinux" "$guest/bzImage" "$guest/test-initramfs.cpio"; do
  [ -e "$f" ] || { echo "boot_compare: $f missing: run ./setup.sh" >&2; exit 1; }
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
test_env="vessel_test_cpus=1 vessel_test_mem_mib=128 vessel.token=bench"

# Reads a console log with one "<host seconds> <line>" per line; prints "first init done".
milestones() {
  awk '!first && $2 !~ /^vessel\[/ && $2 !~ /^qemu/ {first=$1} /Run \/init/{if(!init)init=$1} /vessel-test: done/{if(!done)done=$1}
       END{printf "%s %s %s\n", first?first:"-", init?init:"-", done?done:"-"}' "$1"
}
# Runs a command, stamping each output line with host seconds since start; stops at the init's
# last line or after $limit seconds.
stamp_run() {
  local log=$1; shift
  local start; start=$(date +%s.%N)
  timeout "$limit" "$@" 2>&1 | while IFS= read -r line; do
    printf '%.3f %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$line"
    case "$line" in *"vessel-test: done"*) pkill -P $$ -f qemu-system-x86_64 2>/dev/null ;; esac
  done > "$log"
}

echo "boot_compare: platform: $platform; guest: $(readlink -f "$guest/vmlinux")"
stamp_run "$tmp/vessel.log" "$vmm" --vcpus=1 --mem-mib=128 --append="$test_env" </dev/null
read -r v_first v_init v_done < <(milestones "$tmp/vessel.log")
printf '%-26s first-byte %8s s   /init %8s s   init-done %8s s   [%s]\n' "vessel-vmm (vmlinux)" "$v_first" "$v_init" "$v_done" "$platform"

qemu_cmdline="console=ttyS0 reboot=k panic=-1 io_delay=none pci=off $test_env"
run_qemu() {
  local name=$1 accel=$2 extra=$3 where=$4 cpu=max
  [ "$accel" = kvm ] && cpu=host
  stamp_run "$tmp/$name.log" qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=on -accel "$accel" \
    -cpu "$cpu" -m 128 -smp 1 -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
    -kernel "$guest/bzImage" -initrd "$guest/test-initramfs.cpio" -append "$qemu_cmdline $extra" </dev/null
  read -r q_first q_init q_done < <(milestones "$tmp/$name.log")
  if [ "$q_init" = "-" ]; then
    echo "boot_compare: qemu ($accel) did not reach /init; its last lines:"; tail -n 3 "$tmp/$name.log" | sed 's/^/    /'
  fi
  ratio="-"
  if [ "$q_init" != "-" ] && [ "$v_init" != "-" ]; then ratio=$(echo "scale=2; $v_init / $q_init" | bc); fi
  printf '%-26s first-byte %8s s   /init %8s s   init-done %8s s   vessel/this (to /init) %s   [%s]\n' \
    "qemu microvm ($accel)" "$q_first" "$q_init" "$q_done" "$ratio" "$where"
}
if command -v qemu-system-x86_64 >/dev/null; then
  # QEMU under this host's KVM: on kvm_pvm it needs the same compat command line vessel adds.
  compat=""; [ -d /sys/module/kvm_pvm ] && compat="noxsave nopti nopcid clearcpuid=308,295,141,154,151"
  run_qemu qemu-kvm kvm "$compat" "$platform"
  run_qemu qemu-tcg tcg "" "TCG software emulation on this host"
else
  echo "boot_compare: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
fi
