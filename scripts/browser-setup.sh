#!/usr/bin/env bash
# Installs what the browser playback tests need (tests/browser, node/tests/browser_smoke.rs):
# Debian's Chromium at /usr/bin/chromium and the pinned npm packages (playwright-core, hls.js,
# axe-core for the web UI checks in node/tests/web_ui.rs)
# in tests/browser/node_modules. Idempotent: when both are present it only checks and returns.
# Never downloads a browser build: playwright-core drives the system Chromium.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'browser-setup: %s\n' "$*" >&2; }

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
fi

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing: $*; apt-get not found, install them with your package manager and re-run"
    exit 1
  fi
  log "installing: $*"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium fonts-dejavu-core)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]} > 0)); then
  apt_install "${missing[@]}"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
  log "node $(node --version) is too old: playwright-core needs node >= 20"
  exit 1
fi

# Reinstall when node_modules is missing or does not match package-lock.json.
dir=tests/browser
if [[ ! -f $dir/node_modules/.package-lock.json ]] ||
  ! node -e '
    const lock = require(process.argv[1] + "/package-lock.json").packages;
    for (const [p, v] of Object.entries(lock)) {
      if (!p) continue;
      const got = require(process.argv[1] + "/" + p + "/package.json").version;
      if (got !== v.version) process.exit(1);
    }' "$PWD/$dir" 2>/dev/null; then
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  if [[ -f $dir/package-lock.json ]]; then
    log "npm ci in $dir"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  else
    log "npm install in $dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
else
  log "chromium and $dir/node_modules present"
fi
