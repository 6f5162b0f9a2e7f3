#!/usr/bin/env bash
# Schema-driven fuzzing of the REST API: schemathesis reads a running node's /api/openapi.json,
# sends generated requests to every operation (valid and invalid ones) and fails on any 5xx answer.
#
#   scripts/api-fuzz.sh --install-only
#       Create the Python venv with schemathesis if it is missing (idempotent; quick when present).
#   scripts/api-fuzz.sh BASE_URL [--token TOKEN] [--examples N] [-- EXTRA_ST_ARGS...]
#       Fuzz the node at BASE_URL (e.g. http://127.0.0.1:8080). With --token every request carries
#       `Authorization: Bearer TOKEN`. --examples caps the generated cases per operation (default
#       25). Set BITRIVER_FUZZ_SEED to replay a run (schemathesis prints the seed it used).
#
# The venv lives in $BITRIVER_VENV (default /var/cache/bitriver-venv). Exit status: 0 when no
# generated request got a server error, 1 when one did, 3 when schemathesis can't be installed.
set -euo pipefail

SCHEMATHESIS_VERSION=3.39.16
# schemathesis 3 generates bodies through hypothesis-jsonschema, which needs a hypothesis from
# before 6.160 (later ones dropped an internal it calls).
HYPOTHESIS_VERSION=6.150.0
VENV=${BITRIVER_VENV:-/var/cache/bitriver-venv}

log() { printf 'api-fuzz: %s\n' "$*" >&2; }

installed() {
  [[ -x "$VENV/bin/st" ]] &&
    compgen -G "$VENV/lib/python3*/site-packages/schemathesis-${SCHEMATHESIS_VERSION}.dist-info" >/dev/null &&
    compgen -G "$VENV/lib/python3*/site-packages/hypothesis-${HYPOTHESIS_VERSION}.dist-info" >/dev/null &&
    "$VENV/bin/python" -c '' 2>/dev/null
}

# Debian's python3 lacks venv/ensurepip unless python3-venv is installed.
ensure_python() {
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    log "installing python3 and python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv >&2
  fi
  command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null
}

install() {
  if installed; then
    return 0
  fi
  # Concurrent test processes may all find it missing: one installs, the others wait for it.
  if ! mkdir -p "$(dirname "$VENV")" || ! exec 9>"$VENV.lock"; then
    log "cannot write to $(dirname "$VENV"); set BITRIVER_VENV to a writable place"
    return 3
  fi
  if command -v flock >/dev/null 2>&1; then
    flock 9
  fi
  if installed; then
    return 0
  fi
  if ! ensure_python; then
    log "python3 with the venv module is required (apt-get install python3 python3-venv)"
    return 3
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >&2 ||
    ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==$HYPOTHESIS_VERSION" >&2; then
    rm -rf "$VENV"
    log "could not install schemathesis from PyPI (is the network to PyPI reachable?)"
    return 3
  fi
  installed
}

if [[ "${1:-}" == "--install-only" ]]; then
  install || exit $?
  log "schemathesis $SCHEMATHESIS_VERSION ready in $VENV"
  exit 0
fi

if [[ $# -lt 1 || "$1" == -* ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
base=${1%/}
shift
token=""
examples=25
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --token) token=$2; shift 2 ;;
    --examples) examples=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
done

install || exit $?

args=(
  run "$base/api/openapi.json"
  --experimental=openapi-3.1
  --checks not_a_server_error
  --data-generation-method all
  --hypothesis-max-examples "$examples"
  --hypothesis-database none
  --hypothesis-suppress-health-check all
  --request-timeout 30000
  # The chat socket speaks WebSocket after a GET upgrade: nothing for an HTTP fuzzer to check.
  --exclude-path-regex '/chat/ws$'
  --no-color
)
if [[ -n "$token" ]]; then
  args+=(-H "Authorization: Bearer $token")
fi
if [[ -n "${BITRIVER_FUZZ_SEED:-}" ]]; then
  args+=(--hypothesis-seed "$BITRIVER_FUZZ_SEED")
fi
args+=("${extra[@]}")

# Hypothesis writes its example database under the working directory unless told not to; run
# from a scratch directory anyway so nothing lands in the work tree.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
log "fuzzing $base ($examples examples per operation)"
"$VENV/bin/st" "${args[@]}"
