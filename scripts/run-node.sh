#!/usr/bin/env bash
# Installs build dependencies if needed, then builds and runs an all-in-one `bitriver` node.
# Arguments are passed to `bitriver`; without any, it runs in development mode with ./data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/setup.sh
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

if (($# == 0)); then
  set -- --mode development --data ./data
fi
exec cargo run --release -p bitriver-node --bin bitriver -- "$@"
