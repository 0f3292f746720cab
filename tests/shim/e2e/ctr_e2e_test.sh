#!/usr/bin/env bash
# End-to-end test of a containerd runtime v2 shim through real containerd and ctr (issue 9):
#   ctr_e2e_test.sh RUNTIME      RUNTIME = io.containerd.runc.v2 (the baseline) or io.containerd.vessel.v2
# Prints TAP; exits 0 when every check passed, 1 otherwise, 77 when this host cannot run it (not root,
# no containerd/ctr/runc, no /dev/kvm or no shim binary for vessel).
#
# It starts a private containerd (tests/shim/e2e/containerd_harness.sh: root, state and sockets under
# /tmp/vessel-ctrd-XXXXXX, stopped and removed on exit), imports an OCI image built locally from the
# busybox-static rootfs (no network), and checks, for the same script and both runtimes:
#   ctr run --rm: echo hello, exit code 7, stdin, a tty, a --rootfs directory;
#   a detached container: task ls RUNNING, task exec (output, exit code, tty, stdin), task ps,
#   task pause/resume (PAUSED, RUNNING), task metrics (Stats),
#   task kill SIGKILL -> STOPPED and exit status 137, task delete, container rm, ctr events in order;
#   two containers with CRI pod annotations served by one shim process (runc's shim groups them too)
#   and, for vessel, one VM (same guest boot_id in both, not the host's);
#   kill -9 of the pod's shim with tasks running: containerd notices, task delete / container rm clean
#   up, no mounts, shim processes or container processes are left.
# A vessel run boots two VMs (the standalone `echo hello`, then the pod that hosts every other
# container); on kvm_pvm each boot is ~50 s.
#
# Environment: VESSEL_BUILD_DIR (default <repo>/build): the shim is looked up in $VESSEL_BUILD_DIR/shim,
# the rootfs is $VESSEL_BUSYBOX_ROOTFS (default $VESSEL_BUILD_DIR/guest/busybox-rootfs);
# CTR_TIMEOUT (s, default 300) bounds every ctr call; CTRD_KEEP=1 keeps the containerd dir (logs).
set -uo pipefail

RUNTIME=${1:-}
case "$RUNTIME" in
  io.containerd.runc.*) KIND=runc ;;
  io.containerd.vessel.*) KIND=vessel ;;
  *) echo "usage: $0 io.containerd.runc.v2|io.containerd.vessel.v2" >&2; exit 2 ;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
BUILD=${VESSEL_BUILD_DIR:-$REPO/build}
ROOTFS=${VESSEL_BUSYBOX_ROOTFS:-$BUILD/guest/busybox-rootfs}
SHIM_DIR=$BUILD/shim
IMAGE=docker.io/vessel/busybox:e2e
POD=e2e-pod
# shellcheck source=containerd_harness.sh
source "$HERE/containerd_harness.sh"

skip_all() { echo "1..0 # SKIP $*"; exit 77; }
why=$(ctrd_missing runc script timeout setsid)
[ -z "$why" ] || skip_all "$why"
[ -x "$ROOTFS/bin/busybox" ] || skip_all "no busybox rootfs at $ROOTFS (build target vessel-busybox-rootfs)"
if [ "$KIND" = vessel ]; then
  shim_name=containerd-shim-$(echo "$RUNTIME" | cut -d. -f3)-$(echo "$RUNTIME" | cut -d. -f4)
  [ -x "$SHIM_DIR/$shim_name" ] || skip_all "$SHIM_DIR/$shim_name not built (target containerd-shim-vessel-v2)"
  [ -r /dev/kvm ] && [ -w /dev/kvm ] || skip_all "no usable /dev/kvm"
  [ -f "$BUILD/guest/vmlinux" ] && [ -f "$BUILD/guest/initramfs.cpio" ] || skip_all "no guest kernel/initramfs in $BUILD/guest"
else
  shim_name=containerd-shim-runc-v2
fi

# --- TAP --------------------------------------------------------------------------------------------
N=0
FAILED=0
FAILED_NAMES=()
pass() { N=$((N + 1)); echo "ok $N - $1"; }
fail() {
  N=$((N + 1)); FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1")
  echo "not ok $N - $1"
  shift
  local line
  for line in "$@"; do printf '%s\n' "$line" | sed 's/^/#   /'; done
}
skip() { N=$((N + 1)); echo "ok $N - $1 # SKIP $2"; }
check() {  # check DESC COND-CMD... [-- diagnostic lines are taken from $DIAG]
  local desc=$1; shift
  if "$@"; then pass "$desc"; else fail "$desc" "${DIAG:-}"; fi
}
diag() { echo "# $*"; }

# run_ OUT_VAR RC_VAR cmd...: runs cmd, stdout+stderr into OUT_VAR, exit status into RC_VAR.
run_() {
  local __out=$1 __rc=$2; shift 2
  local __o __r
  __o=$("$@" 2>&1); __r=$?
  printf -v "$__out" '%s' "$__o"
  printf -v "$__rc" '%s' "$__r"
}

# Waits (up to $2 s) until `ctr task ls` shows task $1 in a status matching regex $3 ("" = absent).
wait_status() {
  local id=$1 secs=$2 want=$3 st i
  for i in $(seq 1 $((secs * 5))); do
    st=$(task_status "$id")
    if [ -z "$want" ]; then [ -z "$st" ] && return 0; else [[ "$st" =~ ^($want)$ ]] && return 0; fi
    sleep 0.2
  done
  return 1
}
task_status() { CTR_TIMEOUT=60 ctr_ task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $3 }'; }
task_pid() { CTR_TIMEOUT=60 ctr_ task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $2 }'; }
nshims() { ctrd_shim_pids "$shim_name" | wc -l; }

POD_SANDBOX=(--annotation io.kubernetes.cri.container-type=sandbox --annotation "io.kubernetes.cri.sandbox-id=$POD")
POD_MEMBER=(--annotation io.kubernetes.cri.container-type=container --annotation "io.kubernetes.cri.sandbox-id=$POD")

# --- setup ------------------------------------------------------------------------------------------
diag "runtime $RUNTIME ($KIND), shim $shim_name, rootfs $ROOTFS"
[ -e /sys/module/kvm_pvm ] && diag "platform kvm_pvm (software nested KVM): VM boots take ~50 s"
EVENTS_PID=
on_exit() {
  local rc=$?
  [ -n "$EVENTS_PID" ] && kill "$EVENTS_PID" 2>/dev/null
  if [ "$FAILED" -gt 0 ] && [ -n "${CTRD_LOG:-}" ] && [ -f "$CTRD_LOG" ]; then
    echo "# --- containerd log (shim log FIFO output included), last 80 lines of level>=warning or shim lines ---"
    grep -Ev 'level=(debug|info)' "$CTRD_LOG" | tail -80 | sed 's/^/#   /'
    echo "# --- containerd log, last 40 lines ---"
    tail -40 "$CTRD_LOG" | sed 's/^/#   /'
  fi
  ctrd_stop
  exit $rc
}
if [ "$KIND" = vessel ]; then ctrd_start "$SHIM_DIR" || { echo "Bail out! containerd did not start"; exit 1; }
else ctrd_start || { echo "Bail out! containerd did not start"; exit 1; }
fi
trap on_exit EXIT
CTR_TIMEOUT=3600 ctr_ events >"$CTRD_DIR/events.log" 2>&1 &
EVENTS_PID=$!
if oci_image_import "$ROOTFS" "$IMAGE" 2>"$CTRD_DIR/import.log"; then
  pass "OCI image built from $ROOTFS and imported ($CTRD_SNAPSHOTTER snapshotter)"
else
  fail "OCI image built from $ROOTFS and imported" "$(cat "$CTRD_DIR/import.log")"
  echo "Bail out! no image"; exit 1
fi
# ctr's FIFOs under our dir, not /run/containerd/fifo (ctr leaves empty directories there).
RUN=(run --fifo-dir "$CTRD_DIR/fifo" --runtime "$RUNTIME")
EXEC=(task exec --fifo-dir "$CTRD_DIR/fifo")
host_boot_id=$(cat /proc/sys/kernel/random/boot_id)

# --- 1. standalone ctr run --rm (vessel: VM boot 1) -------------------------------------------------
t0=$(date +%s.%N)
run_ out rc ctr_ "${RUN[@]}" --rm "$IMAGE" e2e-hello /bin/echo hello
t1=$(date +%s.%N)
DIAG="rc=$rc output: $out"
check "ctr run --rm $IMAGE /bin/echo hello prints hello ($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s)" \
  test "$rc" = 0 -a "$out" = hello
check "ctr run --rm left no container behind" eval '! CTR_TIMEOUT=60 ctr_ c ls -q | grep -qx e2e-hello'

# --- 2. the pod sandbox: detached (vessel: VM boot 2) -----------------------------------------------
run_ out rc ctr_ "${RUN[@]}" -d "${POD_SANDBOX[@]}" "$IMAGE" "$POD" sleep 3011
DIAG="rc=$rc output: $out"
check "ctr run -d (pod sandbox annotations) starts $POD" test "$rc" = 0
DIAG="status: $(task_status "$POD")"
check "ctr task ls shows $POD RUNNING" wait_status "$POD" 10 RUNNING
pod_running=0; [ "$(task_status "$POD")" = RUNNING ] && pod_running=1
DIAG="shim pids: $(ctrd_shim_pids "$shim_name" | tr '\n' ' ')"
check "one $shim_name process serves the pod sandbox" test "$(nshims)" = 1

# --- 3. ctr run --rm in the pod: exit code, stdin, tty, --rootfs -------------------------------------
run_ out rc ctr_ "${RUN[@]}" --rm "${POD_MEMBER[@]}" "$IMAGE" e2e-exit7 sh -c 'echo before-exit; exit 7'
DIAG="rc=$rc output: $out"
check "ctr run --rm sh -c 'exit 7' exits 7 (and its output arrives)" test "$rc" = 7 -a "$out" = before-exit

# ctr run attaches stdin and calls CloseIO on its EOF, but only once NewTask returned: an EOF before
# that is lost (ctr 1.6) and cat never ends. So the feeder holds stdin open until the task exists.
feed_then_close() {  # feed_then_close ID TEXT
  printf '%s\n' "$2"
  local i
  for i in $(seq 1 600); do CTR_TIMEOUT=30 ctr_ task ls -q 2>/dev/null | grep -qx "$1" && break; sleep 0.2; done
  sleep 1
}
out=$(feed_then_close e2e-stdin "abc from stdin" | ctr_ "${RUN[@]}" --rm "${POD_MEMBER[@]}" "$IMAGE" e2e-stdin cat 2>&1); rc=$?
DIAG="rc=$rc output: $out"
check "stdin: piped text comes back from cat, cat ends at EOF" test "$rc" = 0 -a "$out" = "abc from stdin"

# A terminal for ctr from script(1); the container's tty(1) names its pty.
out=$(script -qec "ctr -a $CTRD_SOCK -n $CTRD_NS ${RUN[*]} -t --rm ${POD_MEMBER[*]} $IMAGE e2e-tty sh -c 'tty; test -t 0 && echo stdin-is-tty'" /dev/null </dev/null 2>&1 | tr -d '\r\000'); rc=$?
DIAG="rc=$rc output: $out"
check "tty: ctr run -t gives the container a /dev/pts terminal" eval '[[ "$out" =~ /dev/pts/[0-9]+ ]] && [[ "$out" == *stdin-is-tty* ]]'

rootfs_copy=$CTRD_DIR/rootfs-copy
cp -a "$ROOTFS" "$rootfs_copy"
run_ out rc ctr_ "${RUN[@]}" --rm "${POD_MEMBER[@]}" --rootfs "$rootfs_copy" e2e-rootfs /bin/sh -c 'echo rootfs-ok > /written; cat /written'
DIAG="rc=$rc output: $out"
check "ctr run --rootfs DIR (no snapshot mounts) runs and writes to DIR" \
  eval 'test "$rc" = 0 -a "$out" = rootfs-ok && test "$(cat "$rootfs_copy/written" 2>/dev/null)" = rootfs-ok'

# --- 4. a detached pod member: exec, ps, kill, delete, events ------------------------------------------
APP=e2e-app
run_ out rc ctr_ "${RUN[@]}" -d "${POD_MEMBER[@]}" "$IMAGE" "$APP" sleep 3012
DIAG="rc=$rc output: $out"
check "ctr run -d (pod member annotations) starts $APP" test "$rc" = 0
DIAG="status: $(task_status "$APP")"
check "ctr task ls shows $APP RUNNING" wait_status "$APP" 10 RUNNING
DIAG="shim pids: $(ctrd_shim_pids "$shim_name" | tr '\n' ' ')"
check "pod: $POD and $APP share one $shim_name process" test "$(nshims)" = 1

run_ boot_pod rc1 ctr_ "${EXEC[@]}" --exec-id boot1 "$POD" cat /proc/sys/kernel/random/boot_id
run_ boot_app rc2 ctr_ "${EXEC[@]}" --exec-id boot2 "$APP" cat /proc/sys/kernel/random/boot_id
if [ "$KIND" = vessel ]; then
  DIAG="pod: rc=$rc1 $boot_pod; app: rc=$rc2 $boot_app; host: $host_boot_id"
  check "pod: one VM (both containers see the same guest boot_id, not the host's)" \
    eval 'test "$rc1" = 0 -a "$rc2" = 0 -a "$boot_pod" = "$boot_app" -a "$boot_pod" != "$host_boot_id"'
else
  DIAG="pod: rc=$rc1 $boot_pod; app: rc=$rc2 $boot_app"
  check "pod: both containers read the kernel's boot_id through task exec" \
    eval 'test "$rc1" = 0 -a "$rc2" = 0 -a "$boot_pod" = "$boot_app"'
  skip "pod: one VM" "runc: containers share the host kernel"
fi

run_ out rc ctr_ "${EXEC[@]}" --exec-id e1 "$APP" sh -c 'echo exec-ok'
DIAG="rc=$rc output: $out"
check "ctr task exec --exec-id e1 prints exec-ok" test "$rc" = 0 -a "$out" = exec-ok
run_ out rc ctr_ "${EXEC[@]}" --exec-id e2 "$APP" sh -c 'echo to-stderr >&2; exit 3'
DIAG="rc=$rc output: $out"
check "ctr task exec: exit code 3 propagates, stderr arrives" test "$rc" = 3 -a "$out" = to-stderr
# Same CloseIO race as ctr run: EOF only after the exec surely started (no ctr command shows an exec).
EXEC_STDIN_HOLD=3; [ "$KIND" = vessel ] && EXEC_STDIN_HOLD=10
out=$({ printf 'xyz\n'; sleep "$EXEC_STDIN_HOLD"; } | ctr_ "${EXEC[@]}" --exec-id e3 "$APP" cat 2>&1); rc=$?
DIAG="rc=$rc output: $out"
check "ctr task exec: stdin reaches the process, EOF ends it" test "$rc" = 0 -a "$out" = xyz
out=$(script -qec "ctr -a $CTRD_SOCK -n $CTRD_NS ${EXEC[*]} -t --exec-id e4 $APP tty" /dev/null </dev/null 2>&1 | tr -d '\r\000'); rc=$?
DIAG="rc=$rc output: $out"
check "ctr task exec -t gives the process a /dev/pts terminal" eval '[[ "$out" =~ /dev/pts/[0-9]+ ]]'

app_pid=$(task_pid "$APP")
run_ out rc ctr_ task ps "$APP"
pids=$(printf '%s\n' "$out" | awk 'NR > 1 && $1 ~ /^[0-9]+$/ { print $1 }')
DIAG="rc=$rc task ls pid=$app_pid; ctr task ps: $out"
check "ctr task ps lists the container's pids" test "$rc" = 0 -a -n "$pids"
check "ctr task ps includes the task's pid from ctr task ls ($app_pid)" eval 'printf "%s\n" "$pids" | grep -qx "$app_pid"'

run_ out rc ctr_ task pause "$APP"
DIAG="rc=$rc $out; status: $(task_status "$APP")"
check "ctr task pause; ctr task ls shows $APP PAUSED" eval 'test "$rc" = 0 && wait_status "$APP" 10 PAUSED'
run_ out rc ctr_ task resume "$APP"
DIAG="rc=$rc $out; status: $(task_status "$APP")"
check "ctr task resume; ctr task ls shows $APP RUNNING" eval 'test "$rc" = 0 && wait_status "$APP" 10 RUNNING'
run_ out rc ctr_ task metrics "$APP"
DIAG="rc=$rc output: $out"
check "ctr task metrics (Stats) reports pids.current >= 1" \
  eval 'test "$rc" = 0 && printf "%s\n" "$out" | awk '"'"'$1 == "pids.current" && $2 >= 1 { f = 1 } END { exit !f }'"'"

run_ out rc ctr_ task kill -s SIGKILL "$APP"
DIAG="kill rc=$rc $out; status now: $(task_status "$APP")"
check "ctr task kill -s SIGKILL; ctr task ls shows $APP STOPPED" wait_status "$APP" 60 STOPPED
run_ out rc ctr_ task delete "$APP"
DIAG="rc=$rc output: $out"
# ctr 1.6 reports a non-zero exit status of the deleted task as a warning ("exit with non-zero exit code N").
check "ctr task delete reports exit status 137" eval '[[ "$out" == *"exit code 137"* ]] || test "$rc" = 137'
check "ctr task ls no longer lists $APP" wait_status "$APP" 10 ""
run_ out rc ctr_ c rm "$APP"
DIAG="rc=$rc output: $out"
check "ctr c rm $APP" eval 'test "$rc" = 0 && ! CTR_TIMEOUT=60 ctr_ c ls -q | grep -qx "$APP"'

# ctr events: "<date> <time> <tz> UTC <namespace> <topic> <json>"; the topics for one container in order.
sleep 1
topics_of() {
  awk -v id="\"container_id\":\"$1\"" 'index($0, id) { print $6 }' "$CTRD_DIR/events.log" | grep '^/tasks/' | tr '\n' ' '
}
in_order() {  # in_order "SEEN TOPICS" WANTED...: WANTED is a subsequence of SEEN
  local seen=$1 w rest; shift
  rest=" $seen"
  for w in "$@"; do
    case "$rest" in *" $w "*) rest=${rest#*" $w "}; rest=" $rest" ;; *) return 1 ;; esac
  done
}
seen=$(topics_of "$APP")
DIAG="events for $APP: $seen"
check "ctr events for $APP: /tasks/create /tasks/start /tasks/exec-added /tasks/exec-started /tasks/exit /tasks/delete in order" \
  in_order "$seen" /tasks/create /tasks/start /tasks/exec-added /tasks/exec-started /tasks/exit /tasks/delete
seen=$(topics_of e2e-hello)
DIAG="events for e2e-hello: $seen"
check "ctr events for e2e-hello: /tasks/create /tasks/start /tasks/exit /tasks/delete in order" \
  in_order "$seen" /tasks/create /tasks/start /tasks/exit /tasks/delete
exits=$(grep -c "/tasks/exit .*\"container_id\":\"$APP\"" "$CTRD_DIR/events.log")
DIAG="$(grep "\"container_id\":\"$APP\"" "$CTRD_DIR/events.log" | grep /tasks/exit)"
check "ctr events: one /tasks/exit per exec'd process (5) plus the init ($exits seen)" test "$exits" = 6

# --- 5. kill -9 the pod's shim with tasks running ------------------------------------------------------
APP2=e2e-app2
run_ out rc ctr_ "${RUN[@]}" -d "${POD_MEMBER[@]}" "$IMAGE" "$APP2" sleep 3013
DIAG="rc=$rc output: $out"
check "a second pod member $APP2 runs next to $POD" eval 'test "$rc" = 0 && wait_status "$APP2" 10 RUNNING'
shims=$(ctrd_shim_pids "$shim_name" | tr '\n' ' ')
bundles=$(ls -d "$CTRD_DIR/state/io.containerd.runtime.v2.task/$CTRD_NS"/* 2>/dev/null | tr '\n' ' ')
diag "killing shim(s) $shims (bundles: $bundles)"
for p in $shims; do kill -9 "$p"; done
DIAG="status: $POD=$(task_status "$POD") $APP2=$(task_status "$APP2")"
check "containerd notices the dead shim (tasks no longer RUNNING within 60 s)" \
  eval 'wait_status "$POD" 60 "|STOPPED|UNKNOWN" && wait_status "$APP2" 60 "|STOPPED|UNKNOWN"'
del_ok=1; del_out=
for id in "$APP2" "$POD"; do
  if [ -n "$(task_status "$id")" ]; then
    run_ out rc ctr_ task delete -f "$id"
    del_out+="$id: rc=$rc $out; "
    [ "$rc" = 0 ] || [[ "$out" == *"not found"* ]] || del_ok=0
  fi
done
DIAG="$del_out status: $POD=$(task_status "$POD") $APP2=$(task_status "$APP2")"
check "ctr task delete cleans up the dead shim's tasks" eval 'test $del_ok = 1 && wait_status "$POD" 10 "" && wait_status "$APP2" 10 ""'
run_ out rc ctr_ c rm "$APP2" "$POD"
DIAG="rc=$rc output: $out"
check "ctr c rm $APP2 $POD" eval 'test "$rc" = 0 && test -z "$(CTR_TIMEOUT=60 ctr_ c ls -q)"'
sleep 1
left_mounts=$(ctrd_mounts)
DIAG="mounts: $left_mounts"
check "no mounts left under $CTRD_DIR (bundle rootfs, snapshots)" test -z "$left_mounts"
left_shims=$(ctrd_shim_pids)
DIAG="shim processes: $left_shims"
check "no shim process left" test -z "$left_shims"
left_procs=$(pgrep -fa 'sleep 301[0-9]' || true)
DIAG="processes: $left_procs"
check "no container process left on the host (sleep 301x)" test -z "$left_procs"
left_bundles=$(ls "$CTRD_DIR/state/io.containerd.runtime.v2.task/$CTRD_NS" 2>/dev/null)
DIAG="bundles: $left_bundles"
check "no bundle directory left" test -z "$left_bundles"

echo "1..$N"
if [ "$FAILED" -gt 0 ]; then
  diag "$FAILED of $N failed ($RUNTIME):"
  for n in "${FAILED_NAMES[@]}"; do diag "  $n"; done
  exit 1
fi
diag "all $N passed ($RUNTIME)"
exit 0
