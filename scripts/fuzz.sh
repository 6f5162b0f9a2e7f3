#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target (media/fuzz, cache/fuzz, bench/fuzz, relay/fuzz, webrtc/fuzz) for SECONDS each, on the
# stable toolchain. Exits non-zero if any target crashes, printing the crashing input's path.
#
#   scripts/fuzz.sh [SECONDS]        the long run: 20 s per target unless told otherwise
#   FUZZ_SECONDS=3 scripts/fuzz.sh   the short run scripts/test.sh does in CI (step "fuzz")
#
# Environment:
#   FUZZ_SECONDS    seconds per target when no argument is given (default 20)
#   FUZZ_TARGETS    space-separated subset of targets to run (default: all, from `cargo fuzz list`
#                   in each fuzzed crate)
#   FUZZ_SANITIZER  cargo-fuzz --sanitizer value (default: address; `none` if ASan cannot link)
#   FUZZ_DEV=1      build the targets unoptimised (cargo-fuzz --dev): a cold build in a fraction
#                   of the time, fewer executions per second; what the short CI run uses
#   BITRIVER_FUZZ_TARGET_DIR  where the instrumented build goes. Default: $CARGO_TARGET_DIR/fuzz
#                   when CARGO_TARGET_DIR is set (so CI's cached target dir keeps it warm), else
#                   /var/cache/bitriver-fuzz-target. Apart from the normal build because every
#                   crate is rebuilt with coverage instrumentation.
#
# cargo-fuzz is installed when missing. The first build instruments the whole dependency tree
# (minutes); later runs rebuild only what changed. The fuzz crates are their own workspaces; they
# start from the main Cargo.lock so they build the same dependency versions as the main build.
# Corpora grow in <crate>/fuzz/corpus/<target>/ and crashes land in <crate>/fuzz/artifacts/<target>/
# (both gitignored). Reproduce a crash with:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact path>   (from that crate's directory)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

secs=${1:-${FUZZ_SECONDS:-20}}
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs == 0)); then
  echo "usage: scripts/fuzz.sh [SECONDS] (or FUZZ_SECONDS=N)" >&2
  exit 2
fi

if [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi

# cargo-fuzz passes -Z flags (e.g. -Zsanitizer); RUSTC_BOOTSTRAP lets stable rustc accept them.
export RUSTC_BOOTSTRAP=1
if [[ -n ${BITRIVER_FUZZ_TARGET_DIR:-} ]]; then
  fuzz_target_dir=$BITRIVER_FUZZ_TARGET_DIR
elif [[ -n ${CARGO_TARGET_DIR:-} ]]; then
  fuzz_target_dir=$CARGO_TARGET_DIR/fuzz
else
  fuzz_target_dir=/var/cache/bitriver-fuzz-target
fi
# Absolute: cargo runs from each fuzzed crate's directory.
[[ $fuzz_target_dir == /* ]] || fuzz_target_dir=$root/$fuzz_target_dir
export CARGO_TARGET_DIR=$fuzz_target_dir
# Any crate reaching rocksdb links Debian's librocksdb like the main build does.
export ROCKSDB_LIB_DIR=${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu}
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# -a: debug assertions and overflow checks on, so arithmetic overflow is a crash too.
build_flags=(--sanitizer "$sanitizer" --debug-assertions)
if [[ ${FUZZ_DEV:-0} == 1 ]]; then
  build_flags+=(--dev)
fi
start=$(date +%s)
logs=$(mktemp -d)
declare -a summary=()
failed=0

fuzz_crate() {
  local crate=$1
  cd "$root/$crate"
  local -a targets=() all=()
  mapfile -t all < <(cargo fuzz list)
  if [[ -n ${FUZZ_TARGETS:-} ]]; then
    for t in $FUZZ_TARGETS; do
      if printf '%s\n' "${all[@]}" | grep -qx "$t"; then targets+=("$t"); fi
    done
  else
    targets=("${all[@]}")
  fi
  ((${#targets[@]} > 0)) || return 0
  # The same dependency versions as the main build (and no registry lookups for new ones).
  [[ -f fuzz/Cargo.lock ]] || cp "$root/Cargo.lock" fuzz/Cargo.lock
  echo "fuzz: building ${#targets[@]} targets of $crate (sanitizer: $sanitizer)" >&2
  if [[ -n ${FUZZ_TARGETS:-} ]]; then
    for t in "${targets[@]}"; do cargo fuzz build "${build_flags[@]}" "$t"; done
  else
    cargo fuzz build "${build_flags[@]}" # all targets in one cargo invocation
  fi
  for t in "${targets[@]}"; do
    echo "fuzz: running $t for ${secs}s" >&2
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    local before after new log rc stats rate
    before=$(find "fuzz/artifacts/$t" -type f | sort)
    log="$logs/$t.log"
    rc=0
    cargo fuzz run "${build_flags[@]}" "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    after=$(find "fuzz/artifacts/$t" -type f | sort)
    new=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')
    # The last status line: "#N  DONE cov: C ft: F corp: K/S ..." (or the last pulse/NEW line).
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -E 's/^#([0-9]+)[[:space:]]+[A-Z]+[[:space:]]+/execs \1 /;s/[[:space:]]+/ /g' || true)
    rate=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]*[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    if ((rc != 0)) || [[ -n $new ]]; then
      failed=1
      summary+=("FAIL $crate/$t (exit $rc) $stats")
      echo "fuzz: $t FAILED (exit $rc); log tail:" >&2
      tail -n 40 "$log" >&2
      if [[ -n $new ]]; then
        while IFS= read -r a; do echo "fuzz: crashing input: $root/$crate/$a" >&2; done <<<"$new"
      else
        echo "fuzz: no new artifact; full log: $log" >&2
      fi
    else
      summary+=("ok   $crate/$t ${stats:-no stats line}${rate:+ (average ${rate} exec/s)}")
    fi
  done
}

for crate in media cache bench relay webrtc; do
  fuzz_crate "$crate"
done
end=$(date +%s)

echo
echo "fuzz: ${secs}s per target; total $((end - start))s (builds included; target dir $CARGO_TARGET_DIR)"
printf '  %s\n' "${summary[@]}"
exit "$failed"
