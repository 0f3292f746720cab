#!/usr/bin/env bash
# `vessel run` end to end (the README's main job), one boot: a pod network namespace with a veth
# whose peer sits in a second "host side" namespace running a TCP server; the container reads
# stdin, reaches the peer over the guest's eth0 (the pod's IP, MAC and default route, mirrored
# with tc), and exits 3. Then: nothing left behind (tap, qdiscs, sandbox directory, mounts).
# Prints TAP. Needs root, /dev/kvm and iproute2; exits 77 (skip) otherwise.
#   vessel_run_e2e_test.sh VESSEL_BINARY
set -u
vessel=$1
if [ "$(id -u)" != 0 ] || [ ! -w /dev/kvm ] || ! command -v ip >/dev/null; then
  echo "1..0 # SKIP needs root, /dev/kvm and iproute2"; exit 77
fi
pod=vessel-run-pod-$$ peer=vessel-run-peer-$$
state=$(mktemp -d /tmp/vessel-run-e2e-XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  ip netns del "$pod" 2>/dev/null; ip netns del "$peer" 2>/dev/null
  rm -rf "$state"
}
trap cleanup EXIT
n=0 failed=0
check() {  # check DESCRIPTION COMMAND...
  n=$((n + 1)); local what=$1; shift
  if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; failed=$((failed + 1)); fi
}

ip netns add "$pod" && ip netns add "$peer" || { echo "Bail out! cannot create network namespaces"; exit 1; }
ip link add vrun-pod type veth peer name vrun-peer
ip link set vrun-pod netns "$pod"; ip link set vrun-peer netns "$peer"
ip -n "$pod" link set vrun-pod name eth0
ip -n "$pod" link set eth0 address 02:42:0a:00:04:02 mtu 1400
ip -n "$pod" addr add 10.0.4.2/24 dev eth0
ip -n "$pod" link set eth0 up; ip -n "$pod" link set lo up
ip -n "$pod" route add default via 10.0.4.1
ip -n "$peer" addr add 10.0.4.1/24 dev vrun-peer
ip -n "$peer" link set vrun-peer up
# One connection: read a line, answer "pong-<line>", close.
ip netns exec "$peer" busybox nc -l -p 7777 -e sh -c 'read l; echo "pong-$l"' &
server_pid=$!

echo '{"state_dir": "'"$state"'"}' > "$state/config.json"
cmd='read x; echo "got-$x"; echo ping | nc 10.0.4.1 7777; ip -o addr show dev eth0 | grep -o "inet [0-9./]*"; cat /sys/class/net/eth0/address; cat /sys/class/net/eth0/mtu; ip route | grep default; exit 3'
out=$(echo abc | timeout 600 "$vessel" run --config "$state/config.json" --net "/var/run/netns/$pod" -- sh -c "$cmd" 2>"$state/stderr")
status=$?
echo "# vessel run exited $status; stdout:"; printf '%s\n' "$out" | sed 's/^/#   /'
echo "# stderr:"; sed 's/^/#   /' "$state/stderr"

echo "1..9"
check "exit status of the command (3) is vessel run's" [ "$status" = 3 ]
check "stdin reaches the container" grep -qx "got-abc" <<<"$out"
check "the container reaches the host-side peer over TCP (the pod's network)" grep -qx "pong-ping" <<<"$out"
check "the guest's eth0 has the pod's IP" grep -qx "inet 10.0.4.2/24" <<<"$out"
check "the guest's eth0 has the pod's MAC and MTU" bash -c "grep -qx 02:42:0a:00:04:02 <<<\"\$1\" && grep -qx 1400 <<<\"\$1\"" _ "$out"
check "the guest has the pod's default route" grep -q "default via 10.0.4.1" <<<"$out"
check "progress on stderr says the VM is starting and which path it took" sh -c "grep -q \"starting a sandbox VM\" \"$state/stderr\" && grep -Eq \"restored from template|cold boot\" \"$state/stderr\""
check "no tap and no ingress qdisc left in the pod namespace" \
  bash -c "! ip -n $pod link show tap0_vessel >/dev/null 2>&1 && ! tc -n $pod qdisc show dev eth0 | grep -q ingress"
check "no sandbox directory or mount left" \
  bash -c "[ -z \"\$(ls -A $state/sandboxes 2>/dev/null)\" ] && ! grep -q $state /proc/self/mountinfo"
[ "$failed" = 0 ]
