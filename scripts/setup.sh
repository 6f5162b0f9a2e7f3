#!/usr/bin/env bash
# Installs what building and testing BitRiver Live needs on Debian/Ubuntu. Idempotent: when
# everything is present it only runs a few `dpkg -s` checks and returns.
set -euo pipefail

# Build: C toolchain + clang for bindgen (rocksdb, ffmpeg-sys), cmake for zlib-ng (pingora),
# Debian's RocksDB (linked via ROCKSDB_LIB_DIR in .cargo/config.toml) and FFmpeg libraries.
# Tests: the ffmpeg CLI publishes test streams; curl runs the README walkthrough.
PACKAGES=(
  build-essential clang libclang-dev cmake pkg-config libssl-dev librocksdb-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev
  ffmpeg curl
  # `ip` for the fleet tests' network namespaces (node/tests/common/netns.rs; they need root).
  iproute2
)

log() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing packages: ${missing[*]}"
    log "apt-get not found; install the equivalents with your package manager and re-run"
    exit 1
  fi
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
      log "missing packages: ${missing[*]}; not root and sudo not found"
      exit 1
    fi
    SUDO=(sudo)
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "system packages present"
fi

# Rust toolchain (rust-version in Cargo.toml: 1.85 or newer).
if [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    rustup default stable
  else
    log "cargo not found. Install Rust 1.85 or newer, for example:"
    log "  apt-get install rustup && rustup default stable"
    log "  or: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
    exit 1
  fi
fi
log "$(cargo --version)"

# The web UI's npm packages (hls.js), embedded into the binary at build time.
"$(dirname "${BASH_SOURCE[0]}")/web-setup.sh"
