#!/usr/bin/env bash
# Deploy checks (a step of scripts/test.sh): ansible-lint with the production profile, the static
# Terraform checks (tests/terraform/check.py) and the fleet test (tests/fleet/deploy_test.py), which
# runs the playbooks and the installer on Debian 12 machines booted with systemd-nspawn.
#
# The packages are built from the dev-profile binary the test suite already built (cargo-deb
# --profile dev --no-build): a release build would add many minutes of CI for the same files.
# The "new" package for rolling-upgrade.yml is the same binary with a higher Debian revision.
#
# Needs root (network namespaces, nspawn). Without it, or without the tools, it fails naming what
# is missing, unless BITRIVER_ALLOW_SKIP=1 (then it prints SKIPPED and exits 0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

skip_or_fail() {
  if [[ "${BITRIVER_ALLOW_SKIP:-0}" == "1" ]]; then
    echo "SKIPPED: deploy tests: $*" >&2
    exit 0
  fi
  echo "deploy-test: $*" >&2
  exit 1
}

[[ $(id -u) -eq 0 ]] || skip_or_fail "needs root (network namespaces and systemd-nspawn)"
./scripts/deploy-setup.sh || skip_or_fail "could not install the deploy tools (scripts/deploy-setup.sh)"
for tool in ffmpeg ffprobe; do
  command -v "$tool" >/dev/null || skip_or_fail "$tool is not installed (scripts/setup.sh installs it)"
done
export PATH=${BITRIVER_DEPLOY_VENV:-/var/cache/bitriver-deploy-venv}/bin:$PATH
export BITRIVER_CHECKOV=${BITRIVER_CHECKOV_VENV:-/var/cache/bitriver-checkov-venv}/bin/checkov
if [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
target=${CARGO_TARGET_DIR:-target}

failed=0
run() {
  local name=$1
  shift
  local start=$SECONDS
  echo "--> deploy: $name" >&2
  if "$@"; then
    echo "<-- deploy: $name ok ($((SECONDS - start))s)" >&2
  else
    echo "<-- deploy: $name FAILED ($((SECONDS - start))s)" >&2
    failed=1
  fi
}

lint() { (cd ansible && ansible-lint --profile production --offline -q); }
run ansible-lint lint
run terraform python3 tests/terraform/check.py

cargo build -q -p bitriver-node --bin bitriver
# cargo-deb replaces older packages in its output dir: keep both versions aside.
debs=$target/deploy-test
mkdir -p "$debs"
rm -f "$debs"/*.deb
for revision in 1 2; do
  deb=$(./scripts/package.sh --profile dev --no-build --fast --deb-revision "$revision" 2>/dev/null)
  cp "$deb" "$debs/"
done
old=$(ls "$debs"/bitriver_*-1_amd64.deb)
new=$(ls "$debs"/bitriver_*-2_amd64.deb)
run fleet python3 tests/fleet/deploy_test.py --deb "$old" --deb-new "$new" --binary "$target/debug/bitriver"
exit "$failed"
