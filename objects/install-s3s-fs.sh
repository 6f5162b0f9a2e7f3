#!/usr/bin/env bash
# Installs s3s-fs, the S3-compatible server the objects/ integration tests run against, into
# $BITRIVER_S3S_ROOT (default /var/cache/bitriver-s3s; the tests look for bin/s3s-fs there).
# Idempotent: does nothing when the binary of this version is already installed.
#
# s3s-fs 0.17.0 declares rust-version 1.96 but builds with 1.95 (checked), hence
# --ignore-rust-version. A cold build takes about 5 minutes on 2 cores.
set -euo pipefail

VERSION=0.17.0
ROOT="${BITRIVER_S3S_ROOT:-/var/cache/bitriver-s3s}"
BIN="$ROOT/bin/s3s-fs"

installed() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -qF "$VERSION"; }

if installed; then
    echo "s3s-fs $VERSION already installed: $BIN"
    exit 0
fi

mkdir -p "$ROOT"
# Two callers at once (parallel CI steps) build once.
exec 9>"$ROOT/.install.lock"
flock 9
if installed; then
    echo "s3s-fs $VERSION already installed: $BIN"
    exit 0
fi

cargo install s3s-fs --locked --version "$VERSION" --features binary --ignore-rust-version --root "$ROOT"
installed || { echo "s3s-fs did not install to $BIN" >&2; exit 1; }
echo "s3s-fs $VERSION installed: $BIN"
