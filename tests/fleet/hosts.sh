#!/usr/bin/env bash
# Test machines for the deploy tests: Debian 12 systems that boot systemd (systemd-nspawn from a
# debootstrapped root), each in its own network namespace on one bridge, answering SSH as root
# with a generated key. Nothing leaves this machine: the bridge has no route out.
#
#   tests/fleet/hosts.sh rootfs                       # build the cached base root (once)
#   tests/fleet/hosts.sh up NAME [NAME...]            # boot machines (in parallel), wait for SSH
#   tests/fleet/hosts.sh ssh NAME [command...]
#   tests/fleet/hosts.sh ip NAME
#   tests/fleet/hosts.sh key                          # path of the SSH private key
#   tests/fleet/hosts.sh down                         # stop every machine, remove the bridge
#
# Env: BITRIVER_FLEET_DIR (state, default /var/tmp/bitriver-fleet), BITRIVER_FLEET_ROOTFS (cached
# base root, default /var/cache/bitriver-fleet-rootfs), BITRIVER_FLEET_NET (first three octets of
# the subnet, default 10.233.0), BITRIVER_FLEET_BRIDGE (default brfleet0).
#
# The base root holds the package's runtime libraries (RocksDB, FFmpeg) because the machines have
# no route to a mirror: `apt install ./bitriver.deb` must resolve its dependencies offline. It is
# rebuilt when the package list below changes (its hash is stored beside it). Each machine writes
# only to its own overlay, so the cached root stays clean. The host has no systemd as PID 1, hence
# nspawn's --register=no --keep-unit.
set -euo pipefail

FLEET_DIR=${BITRIVER_FLEET_DIR:-/var/tmp/bitriver-fleet}
ROOTFS=${BITRIVER_FLEET_ROOTFS:-/var/cache/bitriver-fleet-rootfs}
NET=${BITRIVER_FLEET_NET:-10.233.0}
BR=${BITRIVER_FLEET_BRIDGE:-brfleet0}

# What Ansible needs (python3, sshd), what the role uses (nftables, openssl via ca-certificates),
# the tests' probes (curl, procps) and the package's runtime libraries.
BASE_PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,iproute2,ca-certificates,curl,procps,nftables
RUNTIME_PACKAGES="librocksdb7.8 libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4"

log() { printf 'fleet: %s\n' "$*" >&2; }

need_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

stamp() { printf '%s\n%s\n' "$BASE_PACKAGES" "$RUNTIME_PACKAGES" | sha256sum | cut -c1-16; }

rootfs() {
  need_tools
  if [[ -x $ROOTFS/usr/sbin/sshd && "$(cat "$ROOTFS.stamp" 2>/dev/null)" == "$(stamp)" ]]; then
    return 0
  fi
  mkdir -p "$(dirname "$ROOTFS")"
  exec 8>"$ROOTFS.lock"
  flock 8
  if [[ -x $ROOTFS/usr/sbin/sshd && "$(cat "$ROOTFS.stamp" 2>/dev/null)" == "$(stamp)" ]]; then
    return 0
  fi
  local mirror tmp=$ROOTFS.tmp
  mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  [[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  [[ -n $mirror ]] || mirror=http://deb.debian.org/debian
  log "debootstrapping Debian 12 into $ROOTFS from $mirror (once; a few minutes)"
  rm -rf "$tmp"
  if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$tmp" "$mirror" >"$ROOTFS.log" 2>&1; then
    log "debootstrap failed; see $ROOTFS.log"
    return 1
  fi
  # Same suites as a stock install, so the libraries match what the package was built against.
  cat >"$tmp/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
SOURCES
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  # shellcheck disable=SC2086
  if ! chroot "$tmp" sh -c "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
      apt-get -y -qq upgrade && apt-get install -y -qq --no-install-recommends $RUNTIME_PACKAGES &&
      apt-get clean" >>"$ROOTFS.log" 2>&1; then
    log "installing runtime libraries failed; see $ROOTFS.log"
    return 1
  fi
  # No console login prompt; sshd accepts the fleet key for root.
  chroot "$tmp" systemctl mask console-getty.service getty@tty1.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  mkdir -p "$tmp/root/.ssh"
  chmod 700 "$tmp/root/.ssh"
  rm -rf "$ROOTFS"
  mv "$tmp" "$ROOTFS"
  stamp >"$ROOTFS.stamp"
  log "base root ready ($(du -sh "$ROOTFS" | cut -f1))"
}

ip_of() {
  local addr
  addr=$(awk -v n="$1" '$1==n{print $2}' "$FLEET_DIR/hosts" 2>/dev/null)
  [[ -n $addr ]] || { log "no machine named $1"; return 1; }
  echo "$addr"
}

sshx() {
  local name=$1
  shift
  ssh -q -i "$FLEET_DIR/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=3 -o BatchMode=yes -o LogLevel=ERROR "root@$(ip_of "$name")" "$@"
}

up() {
  rootfs
  mkdir -p "$FLEET_DIR"
  [[ -f $FLEET_DIR/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -f "$FLEET_DIR/id_ed25519"
  if ! ip link show "$BR" >/dev/null 2>&1; then
    ip link add "$BR" type bridge
    ip addr add "$NET.1/24" dev "$BR"
    ip link set "$BR" up
  fi
  : >>"$FLEET_DIR/hosts"
  local i name addr ns
  i=$(($(wc -l <"$FLEET_DIR/hosts") + 10))
  for name in "$@"; do
    [[ $name =~ ^[a-z0-9-]{1,10}$ ]] || { log "machine names are 1 to 10 of a-z, 0-9, '-': $name"; return 2; }
    addr="$NET.$i"
    i=$((i + 1))
    ns="bf-$name"
    ip netns add "$ns"
    ip link add "vf-$name" type veth peer name eth0 netns "$ns"
    ip link set "vf-$name" master "$BR" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$NET.1"
    rm -rf "${FLEET_DIR:?}/$name"
    mkdir -p "$FLEET_DIR/$name/upper/root/.ssh" "$FLEET_DIR/$name/upper/etc"
    cp "$FLEET_DIR/id_ed25519.pub" "$FLEET_DIR/$name/upper/root/.ssh/authorized_keys"
    echo "$name" >"$FLEET_DIR/$name/upper/etc/hostname"
    echo "$name $addr" >>"$FLEET_DIR/hosts"
    # CAP_NET_ADMIN: the role loads an nftables ruleset inside the machine's own namespace.
    systemd-nspawn -q -D "$ROOTFS" --overlay="$ROOTFS:$FLEET_DIR/$name/upper:/" \
      --boot --register=no --keep-unit -M "bf-$name" --hostname="$name" \
      --network-namespace-path="/run/netns/$ns" --capability=CAP_NET_ADMIN \
      >"$FLEET_DIR/$name/console.log" 2>&1 </dev/null &
    echo $! >"$FLEET_DIR/$name/pid"
  done
  for name in "$@"; do
    local ok=0 t
    for t in $(seq 1 120); do
      if sshx "$name" true 2>/dev/null; then
        ok=1
        break
      fi
      sleep 0.5
    done
    ((ok)) || { log "$name did not answer SSH; see $FLEET_DIR/$name/console.log"; return 1; }
    log "$name up at $(ip_of "$name")"
  done
}

down() {
  [[ -f $FLEET_DIR/hosts ]] || { ip link del "$BR" 2>/dev/null || true; return 0; }
  local name addr pid
  while read -r name addr; do
    pid=$(cat "$FLEET_DIR/$name/pid" 2>/dev/null || true)
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  done <"$FLEET_DIR/hosts"
  for _ in $(seq 1 20); do
    local alive=0
    while read -r name addr; do
      pid=$(cat "$FLEET_DIR/$name/pid" 2>/dev/null || true)
      [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && alive=1
    done <"$FLEET_DIR/hosts"
    ((alive)) || break
    sleep 0.5
  done
  while read -r name addr; do
    pid=$(cat "$FLEET_DIR/$name/pid" 2>/dev/null || true)
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
    ip netns del "bf-$name" 2>/dev/null || true
    ip link del "vf-$name" 2>/dev/null || true
    rm -rf "${FLEET_DIR:?}/$name"
  done <"$FLEET_DIR/hosts"
  ip link del "$BR" 2>/dev/null || true
  rm -f "$FLEET_DIR/hosts"
}

cmd=${1:-}
shift || true
case $cmd in
  rootfs) rootfs ;;
  up) up "$@" ;;
  ssh) sshx "$@" ;;
  ip) ip_of "$1" ;;
  key) echo "$FLEET_DIR/id_ed25519" ;;
  down) down ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
