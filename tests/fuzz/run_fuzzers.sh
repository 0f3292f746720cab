#!/usr/bin/env bash
# Runs every libFuzzer target for a fixed time, one process at a time, and reports.
#
#   tests/fuzz/run_fuzzers.sh [SECONDS_PER_TARGET]      (default 60)
#
# Environment: BUILD_DIR (default <repo>/build-fuzz; configured with clang + -DVESSEL_FUZZ=ON and
# Ninja if it is not yet), TARGETS (space-separated names, default all: see below), MERGE=0 (do
# not touch tests/fuzz/corpus), MERGE_MAX_BYTES (largest new input merged, default 2048),
# BUILD_LOCK (default /tmp/vessel-build.lock: every build goes through it), FUZZ_FLAGS (extra
# libFuzzer flags).
#
# Per target: the fuzzer runs for SECONDS_PER_TARGET (-max_total_time, in-process: one fuzzing
# process at a time) on its working corpus BUILD_DIR/fuzz-work/<target>/corpus (kept between runs,
# new inputs go there) plus the checked-in tests/fuzz/corpus/<target> (read only); then the
# inputs of at most MERGE_MAX_BYTES that add edge coverage (-merge=1 -use_counters=0: new edges,
# not new hit counts, so the checked-in corpus stays small) are merged into
# tests/fuzz/corpus/<target> (libFuzzer names them by content hash). Crash, leak, timeout and OOM inputs land in
# BUILD_DIR/fuzz-work/<target>/artifacts/; they are reported, never merged: after the fix, copy the
# input into the corpus as crash-<what> so ctest replays it from then on.
# Prints and writes BUILD_DIR/fuzz-report.md: execs, exec/s, coverage (cov/ft from libFuzzer's
# final status line), corpus size, inputs merged and crashes per target. Exit status 1 if any
# target crashed or did not run.
set -uo pipefail

SECONDS_PER_TARGET=${1:-60}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO/build-fuzz}
BUILD_LOCK=${BUILD_LOCK:-/tmp/vessel-build.lock}
MERGE=${MERGE:-1}
MERGE_MAX_BYTES=${MERGE_MAX_BYTES:-2048}
ALL_TARGETS="descriptor_chain mmio virtio_blk virtio_fs vsock ttrpc agent_spec"
TARGETS=${TARGETS:-$ALL_TARGETS}
CORPUS_ROOT=$REPO/tests/fuzz/corpus
WORK=$BUILD_DIR/fuzz-work
REPORT=$BUILD_DIR/fuzz-report.md

if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi

# Configure (clang, VESSEL_FUZZ=ON) if needed, then build the targets, always under the lock.
if ! grep -qs '^VESSEL_FUZZ:BOOL=ON' "$BUILD_DIR/CMakeCache.txt" ||
   ! grep -qs '^CMAKE_CXX_COMPILER:FILEPATH=.*clang' "$BUILD_DIR/CMakeCache.txt"; then
  echo "== configuring $BUILD_DIR (clang, -DVESSEL_FUZZ=ON)"
  CC=clang CXX=clang++ flock "$BUILD_LOCK" cmake -S "$REPO" -B "$BUILD_DIR" -G Ninja -DVESSEL_FUZZ=ON \
    >"$BUILD_DIR.configure.log" 2>&1 || { cat "$BUILD_DIR.configure.log"; exit 1; }
fi
exes=()
for t in $TARGETS; do exes+=("vessel_${t}_fuzzer"); done
echo "== building ${exes[*]}"
if ! flock "$BUILD_LOCK" ninja -C "$BUILD_DIR" -j2 "${exes[@]}" >"$WORK.build.log" 2>&1; then
  mkdir -p "$WORK"
  tail -40 "$WORK.build.log"
  echo "build failed (log: $WORK.build.log)" >&2
  exit 1
fi

mkdir -p "$WORK"
status=0
rows=()
details=()
for t in $TARGETS; do
  exe=$BUILD_DIR/tests/fuzz/vessel_${t}_fuzzer
  seeds=$CORPUS_ROOT/$t
  dir=$WORK/$t
  rm -rf "$dir/artifacts" "$dir/small"
  mkdir -p "$dir/corpus" "$dir/artifacts" "$seeds"
  log=$dir/fuzz.log
  echo "== $t: ${SECONDS_PER_TARGET}s"
  # In-process, one job: -jobs/-workers would fork; one fuzzing process at a time on this host.
  # shellcheck disable=SC2086
  "$exe" "$dir/corpus" "$seeds" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" -timeout=10 -rss_limit_mb=2560 -max_len=8192 \
    ${FUZZ_FLAGS:-} >"$log" 2>&1
  rc=$?
  execs=$(grep -aoE 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -1 | awk '{print $2}')
  eps=$(grep -aoE 'stat::average_exec_per_sec: *[0-9]+' "$log" | tail -1 | awk '{print $2}')
  cov=$(grep -ao 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -ao 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 | awk '{print $4}')
  corp=$(grep -ao 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1 | awk '{print $2}')
  crashes=$(find "$dir/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
            -o -name 'oom-*' -o -name 'slow-unit-*' \) -printf '%f ' | sed 's/ $//')
  merged=0
  if [ "$MERGE" = 1 ] && [ -z "$crashes" ] && [ "$rc" = 0 ]; then
    small=$dir/small
    mkdir -p "$small"
    find "$dir/corpus" -type f -size -"$((MERGE_MAX_BYTES + 1))"c -exec cp -p {} "$small/" \;
    before=$(find "$seeds" -type f | wc -l)
    "$exe" -merge=1 -use_counters=0 "$seeds" "$small" >"$dir/merge.log" 2>&1 || echo "   merge failed: $dir/merge.log"
    after=$(find "$seeds" -type f | wc -l)
    merged=$((after - before))
  fi
  if [ -n "$crashes" ] || [ -z "$execs" ]; then
    status=1
    summary=$(grep -a -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|==ERROR' "$log" | cut -c1-160)
    details+=("- **$t**: ${crashes:-no final stats (rc $rc)}: ${summary:-see $log} (log: \`$log\`)")
  fi
  printf '%-17s execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-9s merged %-4s crashes %s\n' \
    "$t" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$merged" "${crashes:-0}"
  rows+=("| $t | $SECONDS_PER_TARGET | ${execs:-?} | ${eps:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | $merged | ${crashes:-0} |")
done

{
  echo "# Fuzzing report"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), tree $(git -C "$REPO" describe --always --dirty 2>/dev/null)," \
       "$(nproc) cores, $(clang --version | head -1), ${SECONDS_PER_TARGET} s per target, one process."
  echo
  echo "| target | s | execs | exec/s | cov | ft | corpus (files/bytes) | merged | crashes |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  if [ ${#details[@]} -gt 0 ]; then
    echo "## Problems"
    printf '%s\n' "${details[@]}"
  else
    echo "No crash, leak, timeout or OOM."
  fi
} >"$REPORT"
echo "== report: $REPORT"
exit $status
