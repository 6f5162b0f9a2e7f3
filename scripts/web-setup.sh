#!/usr/bin/env bash
# Installs the web UI's npm packages (web/package.json: hls.js) into web/node_modules, where
# web/build.rs embeds them into the binary. Idempotent and quick when they are present.
# Never fatal: without them the build still succeeds and the channel page says the player is
# unavailable, so a machine without npm can still build everything else.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'web-setup: %s\n' "$*" >&2; }
dir=web

# Up to date when every package of the lock file is installed at its locked version.
if [[ -f $dir/node_modules/.package-lock.json ]] && command -v node >/dev/null 2>&1 &&
  node -e '
    const lock = require(process.argv[1] + "/package-lock.json").packages;
    for (const [p, v] of Object.entries(lock)) {
      if (!p) continue;
      const got = require(process.argv[1] + "/" + p + "/package.json").version;
      if (got !== v.version) process.exit(1);
    }' "$PWD/$dir" 2>/dev/null; then
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=()
    if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo)
    fi
    log "installing nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends nodejs npm
  fi
fi
if ! command -v npm >/dev/null 2>&1; then
  log "npm not found: the web UI will build without its video player (install node and npm, re-run)"
  exit 0
fi
log "npm ci in $dir"
if ! npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error; then
  log "npm ci failed: the web UI will build without its video player"
fi
exit 0
