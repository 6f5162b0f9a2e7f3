#!/usr/bin/env bash
# Builds the Debian package of `bitriver` into target/debian/ (or $CARGO_TARGET_DIR/debian/) with
# cargo-deb, from node/Cargo.toml's [package.metadata.deb] and node/debian/.
#
#   scripts/package.sh                     # release build, then bitriver_VERSION-1_amd64.deb
#   scripts/package.sh --profile dev --no-build --deb-version 0.1.0+t2 ...
#                                          # any other cargo-deb flags are passed on
#
# Prints the path of the .deb on stdout. Installs cargo-deb (pinned) when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DEB_VERSION=3.8.0
log() { printf 'package: %s\n' "$*" >&2; }

if [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  log "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked >&2
fi
# dpkg-shlibdeps (dpkg-dev) computes the library dependencies ($auto).
if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  log "installing dpkg-dev"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >&2
fi

out=${CARGO_TARGET_DIR:-target}/debian
mkdir -p "$out"
deb=$(cargo deb -p bitriver-node --output "$out" "$@" | tail -n 1)
[[ -f $deb ]] || { log "cargo-deb did not report a package path (got: $deb)"; exit 1; }
log "built $deb ($(du -h "$deb" | cut -f1))"
echo "$deb"
