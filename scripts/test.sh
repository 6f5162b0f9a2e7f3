#!/usr/bin/env bash
# Installs dependencies if needed, then checks formatting, lints, runs every test, and fuzzes every
# parser of untrusted bytes for a few seconds per target (a crash fails the run).
# BITRIVER_SKIP_LINT=1 skips rustfmt and clippy; BITRIVER_SKIP_FUZZ=1 skips the fuzz step.
# The longer fuzz run is separate: scripts/fuzz.sh [SECONDS].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/setup.sh
# schemathesis, for the API fuzz test (node/tests/api_fuzz.rs); quick when already installed.
./scripts/api-fuzz.sh --install-only
./scripts/browser-setup.sh
if [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi

if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
  if [[ -d /var/cache/bitriver-target && -w /var/cache/bitriver-target ]]; then
    export CARGO_TARGET_DIR=/var/cache/bitriver-target
  else
    export CARGO_TARGET_DIR=target
  fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

# The deploy step's tools (apt, two Python venvs) and the fleet machines' base root (debootstrap)
# take the network and dpkg more than the CPU: on a cold machine they are prepared in the
# background while the workspace compiles. The deploy step runs the same commands again, quick
# once done (the root is built under a lock), so a failure here shows there, named.
deploy_prep=
if [[ $(id -u) -eq 0 ]]; then
  deploy_prep_log=$(mktemp)
  (./scripts/deploy-setup.sh && tests/fleet/hosts.sh rootfs) >"$deploy_prep_log" 2>&1 &
  deploy_prep=$!
fi

declare -a results=()
failed=0
step() {
  local name=$1
  shift
  echo "==> $name: $*" >&2
  local start=$SECONDS
  if "$@"; then
    results+=("ok     $name ($((SECONDS - start))s)")
  else
    results+=("FAILED $name ($((SECONDS - start))s)")
    failed=1
  fi
}

if [[ "${BITRIVER_SKIP_LINT:-0}" == "1" ]]; then
  results+=("skip   fmt, clippy (BITRIVER_SKIP_LINT=1)")
else
  step fmt cargo fmt --all -- --check
  step clippy cargo clippy --workspace --all-targets -- -D warnings
fi
# s3s-fs, the S3-compatible server the object storage tests run (objects/, node/tests/recordings_s3.rs);
# kept under /var/cache/bitriver-s3s, a few minutes the first time only.
step s3s-fs ./objects/install-s3s-fs.sh
# node/tests/load.rs runs the bitriver-load binary beside bitriver: build it first (nextest builds
# only the binaries of the packages whose tests need them).
step load-binary cargo build -q -p bitriver-bench --bin bitriver-load
step tests cargo nextest run --workspace --no-fail-fast
# The k6 scenarios' logic (bench/k6/lib), with node's own test runner; node comes from browser-setup.sh.
step k6-logic node --test bench/k6
# The browser harnesses' own logic (the burned-clock reader of whep.mjs and play.mjs).
step browser-logic node --test tests/browser/clock.test.mjs tests/browser/whep-client.test.mjs tests/browser/live-sync.test.mjs
# ansible/ and terraform/ checks, and the playbooks and installer on systemd-nspawn machines.
if [[ -n $deploy_prep ]]; then
  wait "$deploy_prep" || echo "test: preparing the deploy step failed (it retries):" >&2
  cat "$deploy_prep_log" >&2
  rm -f "$deploy_prep_log"
fi
step deploy ./scripts/deploy-test.sh
if [[ "${BITRIVER_SKIP_FUZZ:-0}" == "1" ]]; then
  results+=("skip   fuzz (BITRIVER_SKIP_FUZZ=1)")
else
  # Instrumented build kept in $CARGO_TARGET_DIR/fuzz, so a warm CI cache rebuilds little.
  # Unoptimised and without ASan (the fuzzed crates forbid unsafe code): the point here is that
  # a parser panic on the inputs libFuzzer finds in a few seconds fails CI, at a small cold cost;
  # scripts/fuzz.sh alone runs the optimised, ASan-instrumented targets for longer.
  step fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-3}" FUZZ_DEV=1 FUZZ_SANITIZER=none ./scripts/fuzz.sh
fi

echo >&2
echo "== summary ==" >&2
printf '%s\n' "${results[@]}" >&2
exit "$failed"
