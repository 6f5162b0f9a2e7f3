#!/usr/bin/env bash
# Installs what the deploy checks need (scripts/deploy-test.sh): the tools that boot the test
# machines (debootstrap, systemd-nspawn, nftables, ssh), dpkg-dev for cargo-deb, and two Python
# venvs from PyPI: ansible-core + ansible-lint + python-hcl2, and checkov (its own venv: it ships
# a fork of python-hcl2 under the same module name). Idempotent and quick when present.
#
# Env: BITRIVER_DEPLOY_VENV (default /var/cache/bitriver-deploy-venv),
#      BITRIVER_CHECKOV_VENV (default /var/cache/bitriver-checkov-venv).
set -euo pipefail

ANSIBLE_CORE=2.19.14
ANSIBLE_LINT=26.10.1
PYTHON_HCL2=8.1.4
CHECKOV=3.3.30
VENV=${BITRIVER_DEPLOY_VENV:-/var/cache/bitriver-deploy-venv}
CHECKOV_VENV=${BITRIVER_CHECKOV_VENV:-/var/cache/bitriver-checkov-venv}
PACKAGES=(debootstrap systemd-container nftables openssh-client dpkg-dev python3-venv)

log() { printf 'deploy-setup: %s\n' "$*" >&2; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# has VENV PACKAGE VERSION: the venv works and holds that version.
has() {
  "$1/bin/python" -c '' 2>/dev/null && compgen -G "$1/lib/python3*/site-packages/${2}-${3}.dist-info" >/dev/null
}

make_venv() {
  local venv=$1
  shift
  exec 9>"$venv.lock"
  flock 9
  log "installing $* into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2 || ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" >&2; then
    rm -rf "$venv"
    log "could not install $* from PyPI"
    return 3
  fi
}

if ! has "$VENV" ansible_core "$ANSIBLE_CORE" || ! has "$VENV" ansible_lint "$ANSIBLE_LINT" ||
  ! has "$VENV" python_hcl2 "$PYTHON_HCL2"; then
  make_venv "$VENV" "ansible-core==$ANSIBLE_CORE" "ansible-lint==$ANSIBLE_LINT" "python-hcl2==$PYTHON_HCL2"
fi
if ! has "$CHECKOV_VENV" checkov "$CHECKOV"; then
  make_venv "$CHECKOV_VENV" "checkov==$CHECKOV"
fi
log "ansible-core $ANSIBLE_CORE, ansible-lint $ANSIBLE_LINT, python-hcl2 $PYTHON_HCL2 in $VENV; checkov $CHECKOV in $CHECKOV_VENV"
