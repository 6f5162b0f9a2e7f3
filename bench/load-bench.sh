#!/usr/bin/env bash
# Viewers one node carries, and the load generator's CPU beside wrk (issue 16's benchmark).
#
# One release `bitriver` (--roles all: ingest, 4-rung transcode ladder, origin and edge on :8081;
# a 1080p source with the 1080p:6000 rung falls behind real time on 2 cores, so 720p..240p),
# one ~2.5 Mbit/s 720p stream published by ffmpeg over RTMP (a pre-encoded clip looped with
# -c copy, so no encoder competes for the cores), then `bitriver-load viewers` against the edge for
# every N in $POINTS, $ROUNDS alternated rounds (100,250,400,100,250,400,...). Then, for the points
# in $WRK_POINTS, wrk drives the same edge with the same request mix (one media playlist per part,
# the parts of the rendition the viewers picked), the same connections (2 per viewer) and the same
# request rate as the viewers measured at that N, and both CPU figures are printed per 1,000 viewers.
#
#   export CARGO_TARGET_DIR=/var/cache/bitriver-target
#   cargo build --release -p bitriver-node --bin bitriver -p bitriver-bench --bin bitriver-load
#   bench/load-bench.sh     # POINTS="100 250 400" WRK_POINTS="250" ROUNDS=3 RAMP=10 DURATION=25
#
# Needs ffmpeg, wrk, curl, jq, python3. Results (JSON per run, logs, summary) go to $OUT.
set -euo pipefail

TARGET=${CARGO_TARGET_DIR:-target}
BITRIVER=${BITRIVER:-$TARGET/release/bitriver}
LOAD=${LOAD:-$TARGET/release/bitriver-load}
POINTS=${POINTS:-"100 250 400"}
WRK_POINTS=${WRK_POINTS:-"250"}
ROUNDS=${ROUNDS:-3}
RAMP=${RAMP:-10}
DURATION=${DURATION:-25}
WRK_SECONDS=${WRK_SECONDS:-20}
LADDER=${LADDER:-720p:3500,480p:2000,360p:1200,240p:700}
SOURCE=${SOURCE:-1280x720}
BANDWIDTH=${BANDWIDTH:-5000000}
HTTP=${HTTP:-127.0.0.1:8080}
EDGE=${EDGE:-127.0.0.1:8081}
RTMP=${RTMP:-127.0.0.1:1935}
OUT=${OUT:-$(mktemp -d /tmp/load-bench.XXXXXX)}
mkdir -p "$OUT"
for tool in ffmpeg wrk curl jq python3; do
  command -v $tool >/dev/null || { echo "load-bench: $tool is missing" >&2; exit 1; }
done
[ -x "$BITRIVER" ] && [ -x "$LOAD" ] || { echo "load-bench: build $BITRIVER and $LOAD first" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The tables, from the files in $OUT (SUMMARY_ONLY=1 OUT=DIR prints them again).
summary() {
python3 - "$OUT" "$RAMP" "$POINTS" "$WRK_POINTS" "$ROUNDS" <<'EOF'
import json, sys, glob, re, statistics
out, ramp, points, wrk_points, rounds = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])
def mmm(xs, fmt="{:.2f}"):
    xs = sorted(xs)
    if not xs:
        return "-"
    return "/".join(fmt.format(x) for x in (xs[0], statistics.median(xs), xs[-1]))
print("\nviewers (min/median/max over rounds; after ramp = t > ramp + 2 s)")
print("| viewers | req/s | Mbit/s | p99 latency s (run) | worst 1-s p99 after ramp s | stalls in ramp | stalls after ramp | errors | generator cores | generator cores / 1,000 viewers | node cores | carried |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for n in points:
    rows = []
    for r in range(1, rounds + 1):
        j = json.load(open(f"{out}/viewers-{n}-{r}.json"))
        # The last point is the teardown (viewers stopping); `stalls` is a running count.
        tl = j["timeline"][:-1]
        s, pts = j["summary"], [p for p in tl if p["t"] > ramp + 2]
        at_ramp = max((p["stalls"] for p in tl if p["t"] <= ramp + 2), default=0)
        own = statistics.mean(p["own_cpu"] for p in pts if p.get("own_cpu") is not None)
        node = statistics.mean(p["target_cpu"] for p in pts if p.get("target_cpu") is not None)
        worst = max((p["latency"]["p99"] for p in pts if p.get("latency")), default=float("nan"))
        rows.append(dict(rps=statistics.mean(p["requests_per_s"] for p in pts), mbit=statistics.mean(p["mbit_per_s"] for p in pts),
                         p99=s["latency_ms"]["p99"] / 1000, worst=worst / 1000, stalls=pts[-1]["stalls"] - at_ramp, ramp_stalls=at_ramp,
                         errors=s["errors"], own=own, per=own / int(n) * 1000, node=node))
    ok = all(r["p99"] < 2 and r["stalls"] == 0 for r in rows)
    c = lambda k, f="{:.2f}": mmm([r[k] for r in rows], f)
    print(f"| {n} | {c('rps','{:.0f}')} | {c('mbit','{:.0f}')} | {c('p99')} | {c('worst')} | {c('ramp_stalls','{:.0f}')} | {c('stalls','{:.0f}')} | {c('errors','{:.0f}')} | {c('own')} | {c('per')} | {c('node')} | {'yes' if ok else 'no'} |")
print("\nwrk at the viewers' request rate (min/median/max over rounds)")
print("| viewers | connections | req/s | Mbit/s | errors + non-2xx | wrk cores | wrk cores / 1,000 viewers | node cores |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for n in wrk_points:
    rows = []
    for f in sorted(glob.glob(f"{out}/wrk-{n}-*.txt")):
        txt = open(f).read()
        u, s_, e = map(float, open(f.replace(".txt", ".time")).read().split()[-3:])
        b, a = map(float, open(f.replace(".txt", ".nodecpu")).read().split())
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1))
        tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", txt)
        mult = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[tr.group(2)]
        bad = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses:|timeout|read|write|connect) (\d+)", txt))
        rows.append(dict(bad=bad, rps=rps, mbit=float(tr.group(1)) * mult * 8 / 1e6, cores=(u + s_) / e,
                         per=(u + s_) / e / int(n) * 1000, node=(a - b) / e))
    c = lambda k, f="{:.2f}": mmm([r[k] for r in rows], f)
    print(f"| {n} | {2 * int(n)} | {c('rps','{:.0f}')} | {c('mbit','{:.0f}')} | {c('bad','{:.0f}')} | {c('cores')} | {c('per')} | {c('node')} |")
EOF
  [ -f "$OUT/republished" ] && cat "$OUT/republished" || true
}
if [ -n "${SUMMARY_ONLY:-}" ]; then summary; exit; fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The source: 20 s of testsrc2 at ~2.5 Mbit/s (2400k video + 96k AAC), 1-s GOP, looped.
CLIP=${CLIP:-$OUT/clip-$SOURCE.flv}
if [ ! -s "$CLIP" ]; then
  echo "encoding $CLIP"
  ffmpeg -hide_banner -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=$SOURCE:rate=30" \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 -c:v libx264 -preset veryfast -tune zerolatency \
    -g 30 -keyint_min 30 -sc_threshold 0 -b:v 2400k -maxrate 2400k -bufsize 2400k -pix_fmt yuv420p \
    -c:a aac -b:a 96k -f flv "$CLIP"
fi

env $(env | grep -o '^BITRIVER_LIVE_[A-Z_]*' | sed 's/^/-u /') \
  "$BITRIVER" --mode development --data "$OUT/data" --addr "$HTTP" --edge-addr "$EDGE" --rtmp-addr "$RTMP" \
  --transcode-ladder "$LADDER" --log-format text \
  >"$OUT/node.log" 2>&1 &
pids+=($!)
node_pid=$!
for _ in $(seq 100); do curl -sf "http://$HTTP/healthz" >/dev/null && break; sleep 0.2; done
owner=$(curl -sf -X POST "http://$HTTP/api/users" -H 'Content-Type: application/json' \
  -d '{"displayName":"Bench","email":"bench@example.com","roles":["creator"]}' | jq -r .id)
channel=$(curl -sf -X POST "http://$HTTP/api/channels" -H 'Content-Type: application/json' \
  -d "{\"ownerId\":\"$owner\",\"title\":\"Load bench\",\"tags\":[\"bench\"]}")
id=$(jq -r .id <<<"$channel")
key=$(jq -r .streamKey <<<"$channel")
MASTER="http://$EDGE/hls/$id/master.m3u8"
rungs=$(($(tr -cd , <<<"$LADDER" | wc -c) + 2)) # the ladder and the source
ffmpeg_pid=
# (Re)publish until the master lists every rung. The ladder drops a rung for the rest of the
# session when it falls 2 s behind real time (CPU starvation); the next run then needs a new session.
publish() {
  [ -n "$ffmpeg_pid" ] && { kill "$ffmpeg_pid" 2>/dev/null || true; wait "$ffmpeg_pid" 2>/dev/null || true; sleep 2; }
  ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i "$CLIP" -c copy -f flv \
    "rtmp://$RTMP/live/$key" >>"$OUT/ffmpeg.log" 2>&1 &
  ffmpeg_pid=$!
  pids+=($ffmpeg_pid)
  for _ in $(seq 150); do
    [ "$(curl -sf "$MASTER" | grep -c EXT-X-STREAM-INF || true)" -ge "$rungs" ] && break
    sleep 0.2
  done
  sleep 5
}
ensure_ladder() {
  if [ "$(curl -sf "$MASTER" | grep -c EXT-X-STREAM-INF || true)" -lt "$rungs" ]; then
    echo "  a rung was dropped (transcode fell behind): republishing before $1" | tee -a "$OUT/republished"
    publish
  fi
}
publish
echo "master: $MASTER"
curl -sf "$MASTER" | tee "$OUT/master.m3u8"
cpu_s() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }

# Viewers: alternated rounds.
for round in $(seq "$ROUNDS"); do
  for n in $POINTS; do
    json="$OUT/viewers-$n-$round.json"
    ensure_ladder "viewers-$n-$round"
    echo "round $round: $n viewers"
    "$LOAD" viewers --url "$MASTER" --viewers "$n" --ramp "$RAMP" --duration "$DURATION" \
      --bandwidth "$BANDWIDTH" --metrics "http://$HTTP/metrics" --json "$json" --quiet >"$OUT/viewers-$n-$round.txt" || echo "bitriver-load exited $?"
    sleep 3
  done
done

# wrk at the viewers' request rate. The rendition the viewers picked, its parts, one playlist
# request per part; the Lua script's delay() paces each connection so the total is the target rate.
variant=$(jq -r '.summary.variants | max_by(.viewers) | .variant' "$OUT/viewers-$(set -- $POINTS; echo $1)-1.json" 2>/dev/null || true)
for n in $WRK_POINTS; do
  rate=$(python3 - "$OUT" "$n" "$RAMP" <<'EOF'
import json, sys, glob, statistics
out, n, ramp = sys.argv[1], sys.argv[2], float(sys.argv[3])
rates = []
for f in glob.glob(f"{out}/viewers-{n}-*.json"):
    pts = [p for p in json.load(open(f))["timeline"] if p["t"] > ramp + 2]
    rates.append(statistics.mean(p["requests_per_s"] for p in pts))
print(round(statistics.median(rates)))
EOF
)
  conns=$((2 * n))
  for round in $(seq "$ROUNDS"); do
    python3 - "$EDGE" "$id" "$OUT/master.m3u8" "$OUT/urls.lua" "$variant" <<'EOF'
import sys, re, urllib.request
edge, cid, master, out, variant = sys.argv[1:6]
base = f"http://{edge}/hls/{cid}/"
lines = open(master).read().splitlines()
media = [l for l in lines if l and not l.startswith("#")]
pick = next((m for m in media if variant and variant in m), None) or media[0]
pl_url = base + pick
pl = urllib.request.urlopen(pl_url).read().decode()
pl_path = pl_url.split(edge, 1)[1]
dirn = pl_path.rsplit("/", 1)[0] + "/"
parts = [dirn + m for m in re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', pl)]
mp = re.search(r'#EXT-X-MAP:URI="([^"]+)"', pl)
urls = []
for p in parts:
    urls += [p, pl_path]
with open(out, "w") as f:
    f.write("urls = {" + ",".join(f'"{u}"' for u in urls) + "}\n")
print(f"wrk urls: {len(parts)} parts of {pick} and its playlist", file=sys.stderr)
EOF
    delay=$(python3 -c "print($conns * 1000.0 / $rate)")
    cat >"$OUT/wrk.lua" <<EOF
dofile("$OUT/urls.lua")
local i = 0
function setup(thread) thread:set("offset", math.random(#urls)) end
function init() i = offset end
function request() i = i % #urls + 1; return wrk.format("GET", urls[i]) end
function delay() return math.random(0, 2 * $delay) end
EOF
    echo "wrk round $round: $conns connections, target $rate req/s"
    ensure_ladder "wrk-$n-$round"
    before=$(cpu_s "$node_pid")
    /usr/bin/time -f "%U %S %e" -o "$OUT/wrk-$n-$round.time" \
      wrk -t2 -c "$conns" -d "${WRK_SECONDS}s" --timeout 10s -s "$OUT/wrk.lua" "http://$EDGE" >"$OUT/wrk-$n-$round.txt" || echo "wrk exited $?"
    after=$(cpu_s "$node_pid")
    echo "$before $after" >"$OUT/wrk-$n-$round.nodecpu"
    sleep 3
  done
done

summary
echo "results: $OUT"
