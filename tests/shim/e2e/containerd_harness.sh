# shellcheck shell=bash
# A private containerd for the shim end-to-end tests and benchmarks: sourced, not run.
#
#   source tests/shim/e2e/containerd_harness.sh
#   ctrd_start [EXTRA_PATH]      # root/state/sockets under a fresh /tmp/vessel-ctrd-XXXXXX; never the
#                                # system containerd (/run/containerd/containerd.sock is never used)
#   ctr_ run --rm ...            # ctr against it, namespace vessel-test (timeout: CTR_TIMEOUT, 300 s)
#   oci_image_build ROOTFS TAR REF && ctr_ images import TAR
#   ctrd_stop                    # kills tasks/shims, removes containers, stops containerd, removes the dir
#
# ctrd_start installs an EXIT trap that calls ctrd_stop (also on failure or a signal); a caller with its
# own EXIT trap calls ctrd_stop from it. Needs root (containerd mounts snapshots), containerd and ctr
# (Debian 12: `apt-get install containerd runc`). The CRI plugin and every snapshotter but overlayfs and
# native are disabled: nothing here needs a network.
#
# Variables it sets: CTRD_DIR, CTRD_SOCK, CTRD_LOG (containerd's stdout+stderr: the shims' log FIFOs
# are copied into it), CTRD_NS, CTRD_PID, CTRD_SNAPSHOTTER (overlayfs when an overlay mount works on
# this host's /tmp, else native).

CTRD_NS=${CTRD_NS:-vessel-test}
CTR_TIMEOUT=${CTR_TIMEOUT:-300}
CTRD_DIR=
CTRD_SOCK=
CTRD_LOG=
CTRD_PID=
CTRD_SNAPSHOTTER=
CTRD_KEEP=${CTRD_KEEP:-0}  # 1: leave the dir (logs) behind for a post-mortem; containerd is stopped anyway

ctrd_log() { echo "# harness: $*" >&2; }

# Why this host cannot run the tests (empty when it can); exit 77 on a non-empty answer.
ctrd_missing() {
  local need
  if [ "$(id -u)" != 0 ]; then echo "needs root (containerd mounts snapshots and runs shims)"; return; fi
  for need in containerd ctr "$@"; do
    command -v "$need" >/dev/null 2>&1 || { echo "$need not found (apt-get install containerd runc)"; return; }
  done
}

# overlayfs needs a filesystem under /tmp that can be an overlay upper dir (not overlay itself).
_ctrd_pick_snapshotter() {
  local t
  t=$(mktemp -d /tmp/vessel-ovl-XXXXXX)
  mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
  if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    umount "$t/m"
    CTRD_SNAPSHOTTER=overlayfs
  else
    CTRD_SNAPSHOTTER=native
  fi
  rm -rf "$t"
}

# ctrd_start [DIR_TO_PREPEND_TO_PATH]: the shims containerd starts are found in PATH
# (containerd-shim-<name>-<version> for runtime io.containerd.<name>.<version>).
ctrd_start() {
  local extra_path=${1:-}
  CTRD_DIR=$(mktemp -d /tmp/vessel-ctrd-XXXXXX)
  chmod 711 "$CTRD_DIR"
  CTRD_SOCK=$CTRD_DIR/c.sock
  CTRD_LOG=$CTRD_DIR/containerd.log
  trap 'ctrd_stop' EXIT
  trap 'exit 130' INT TERM
  [ -n "$CTRD_SNAPSHOTTER" ] || _ctrd_pick_snapshotter
  export CONTAINERD_SNAPSHOTTER=$CTRD_SNAPSHOTTER  # ctr run's --snapshotter default
  cat >"$CTRD_DIR/config.toml" <<EOF
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$CTRD_SOCK.ttrpc"

[debug]
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.service.v1.diff-service"]
  default = ["walking"]

[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.02
EOF
  local path=$PATH
  [ -n "$extra_path" ] && path=$extra_path:$PATH
  # setsid: a Ctrl-C at the terminal reaches the script (whose trap stops containerd in order), not containerd
  PATH=$path setsid containerd --config "$CTRD_DIR/config.toml" >"$CTRD_LOG" 2>&1 </dev/null &
  CTRD_PID=$!
  local i
  for i in $(seq 1 200); do
    if [ -S "$CTRD_SOCK" ] && ctr -a "$CTRD_SOCK" version >/dev/null 2>&1; then
      ctrd_log "containerd $CTRD_PID up on $CTRD_SOCK (snapshotter $CTRD_SNAPSHOTTER, dir $CTRD_DIR)"
      return 0
    fi
    kill -0 "$CTRD_PID" 2>/dev/null || break
    sleep 0.1
  done
  ctrd_log "containerd did not come up; its log:"
  sed 's/^/#   /' "$CTRD_LOG" >&2
  return 1
}

# ctr against the private containerd, bounded by CTR_TIMEOUT (override per call: CTR_TIMEOUT=N ctr_ ...).
ctr_() {
  timeout -k 10 "$CTR_TIMEOUT" ctr -a "$CTRD_SOCK" -n "$CTRD_NS" "$@"
}

# Pids of shim processes (any runtime) serving this containerd: their command line or environment
# names our socket/dir (containerd passes -address and TTRPC_ADDRESS).
ctrd_shim_pids() {
  local name=${1:-containerd-shim-} p comm
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    case "$comm" in containerd-shim*) ;; *) continue ;; esac
    if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -q "^${name}" ||
       tr '\0' '\n' <"$p/cmdline" 2>/dev/null | head -1 | grep -q "/${name}"; then
      if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qF "$CTRD_DIR" ||
         tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qF "$CTRD_DIR"; then
        echo "${p#/proc/}"
      fi
    fi
  done
}

# Mount points under our dir (bundles' rootfs, snapshots) in this mount namespace.
ctrd_mounts() {
  [ -n "$CTRD_DIR" ] || return 0
  awk -v d="$CTRD_DIR" 'index($2, d) == 1 { print $2 }' /proc/self/mounts
}

ctrd_stop() {
  local rc=$?
  trap - EXIT
  [ -n "$CTRD_DIR" ] || return $rc
  if [ -n "$CTRD_PID" ] && kill -0 "$CTRD_PID" 2>/dev/null; then
    local t c
    for t in $(CTR_TIMEOUT=30 ctr_ task ls -q 2>/dev/null); do
      CTR_TIMEOUT=30 ctr_ task kill -a -s SIGKILL "$t" >/dev/null 2>&1
    done
    for t in $(CTR_TIMEOUT=30 ctr_ task ls -q 2>/dev/null); do
      for c in 1 2 3 4 5 6 7 8 9 10; do
        CTR_TIMEOUT=30 ctr_ task delete -f "$t" >/dev/null 2>&1 && break
        sleep 0.5
      done
    done
    for c in $(CTR_TIMEOUT=30 ctr_ containers ls -q 2>/dev/null); do
      CTR_TIMEOUT=30 ctr_ containers rm "$c" >/dev/null 2>&1
    done
    # A shim exits by itself once containerd deleted its last task (Shutdown): give it 10 s.
    for c in $(seq 1 100); do [ -z "$(ctrd_shim_pids)" ] && break; sleep 0.1; done
    kill "$CTRD_PID" 2>/dev/null
    for c in $(seq 1 50); do kill -0 "$CTRD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$CTRD_PID" 2>/dev/null
    wait "$CTRD_PID" 2>/dev/null
  fi
  # Shims outlive containerd by design; ours are the ones naming our dir.
  local p
  for p in $(ctrd_shim_pids); do
    ctrd_log "killing leftover shim $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)): alive 10 s after its tasks were deleted"
    kill -9 "$p" 2>/dev/null
  done
  sleep 0.2
  local m
  for m in $(ctrd_mounts | sort -r); do umount -l "$m" 2>/dev/null && ctrd_log "unmounted leftover $m"; done
  if [ "$CTRD_KEEP" = 1 ]; then
    ctrd_log "kept $CTRD_DIR (CTRD_KEEP=1)"
  else
    rm -rf "$CTRD_DIR"
  fi
  CTRD_DIR=
  CTRD_PID=
  return $rc
}

# --- a local OCI image (no network) -----------------------------------------------------------------

_oci_blob() {  # _oci_blob LAYOUT FILE -> prints "sha256:<hex> <size>", moves FILE into blobs/sha256
  local layout=$1 f=$2 hex size
  hex=$(sha256sum "$f" | cut -d' ' -f1)
  size=$(stat -c %s "$f")
  mv "$f" "$layout/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

# oci_image_build ROOTFS_DIR OUT_TAR REF: an OCI image layout (one uncompressed layer holding ROOTFS_DIR,
# owned by root) as a tar for `ctr images import`. REF is a full reference (docker.io/vessel/busybox:e2e);
# it goes in index.json both as org.opencontainers.image.ref.name and io.containerd.image.name.
oci_image_build() {
  local rootfs=$1 out=$2 ref=$3 work arch
  [ -x "$rootfs/bin/busybox" ] || { ctrd_log "no busybox rootfs at $rootfs (build target vessel-busybox-rootfs)"; return 1; }
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  work=$(mktemp -d /tmp/vessel-oci-XXXXXX)
  mkdir -p "$work/layout/blobs/sha256"
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$work/layer.tar" . || return 1
  local layer_digest layer_size cfg_digest cfg_size man_digest man_size
  read -r layer_digest layer_size < <(_oci_blob "$work/layout" "$work/layer.tar")
  cat >"$work/config.json" <<EOF
{"architecture":"$arch","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["$layer_digest"]},"history":[{"created_by":"vessel tests/shim/e2e: busybox-static rootfs"}]}
EOF
  read -r cfg_digest cfg_size < <(_oci_blob "$work/layout" "$work/config.json")
  cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$cfg_digest","size":$cfg_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$layer_digest","size":$layer_size}]}
EOF
  read -r man_digest man_size < <(_oci_blob "$work/layout" "$work/manifest.json")
  cat >"$work/layout/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$man_digest","size":$man_size,"platform":{"architecture":"$arch","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"$ref","io.containerd.image.name":"$ref"}}]}
EOF
  echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
  tar -C "$work/layout" --numeric-owner --owner=0 --group=0 -cf "$out" oci-layout index.json blobs || return 1
  rm -rf "$work"
}

# oci_image_import ROOTFS_DIR REF: builds the image and imports it (unpacked for CTRD_SNAPSHOTTER).
oci_image_import() {
  local rootfs=$1 ref=$2 tar
  tar=$CTRD_DIR/image.tar
  oci_image_build "$rootfs" "$tar" "$ref" || return 1
  ctr_ images import --snapshotter "$CTRD_SNAPSHOTTER" "$tar" >&2 || return 1
  ctr_ images ls -q | grep -qxF "$ref" || { ctrd_log "image $ref not listed after import"; return 1; }
}
