#!/usr/bin/env bash
# Reproduces the load numbers in docs/performance.md: a release server pinned to CPU 0 with
# one worker, the load tool pinned to CPU 1, one scenario per run, JSON results in
# target/perf/. Usage: scripts/bench-load.sh [seconds per run] [broadcast sizes...]
#        scripts/bench-load.sh simulcast [seconds per run]   (only the 12×12 meeting runs)
set -euo pipefail
cd "$(dirname "$0")/.."
only_simulcast=false
if [ "${1:-}" = simulcast ]; then only_simulcast=true; shift; fi
seconds=${1:-20}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(50 100 200 400 600)
cargo build --release --locked --quiet
mkdir -p target/perf
bin=target/release/roomcast

run() { # name, load arguments...
  local name=$1; shift
  local log; log=$(mktemp)
  taskset -c 0 "$bin" serve --http 127.0.0.1:0 --rtc-port 0 --workers 1 --max-participants 5000 2>"$log" &
  local server=$!
  local url=""
  for _ in $(seq 1 100); do
    url=$(grep -oE 'HTTP listening on http://[0-9.:]+' "$log" | awk '{print $4}' || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  echo "== $name"
  taskset -c 1 "$bin" load --server "$url" --duration "$seconds" --quiet --json "target/perf/$name.json" "$@" || true
  kill "$server"; wait "$server" 2>/dev/null || true
  rm -f "$log"
}

# A 12-person meeting (everyone publishes and receives the 11 others), 1.5 Mbit/s 720p30
# cameras: one stream each; simulcast; simulcast with 320-pixel grid tiles.
meeting() {
  run meeting-12x12 room --rooms 1 --publishers 12 --bitrate 1500000
  run meeting-12x12-simulcast room --rooms 1 --publishers 12 --bitrate 1500000 --simulcast
  run meeting-12x12-simulcast-tiles320 room --rooms 1 --publishers 12 --bitrate 1500000 --simulcast --tile-width 320
}
if $only_simulcast; then meeting; exit 0; fi

for n in "${sizes[@]}"; do
  run "broadcast-$n" broadcast --subscribers "$n"
done
run meeting-6x6 room --rooms 1 --publishers 6
run rooms-20x4 room --rooms 20 --publishers 4
meeting
