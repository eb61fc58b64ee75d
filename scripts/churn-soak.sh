#!/usr/bin/env bash
# The long leak check: a release server, 5 minutes of churn after a 30 s warm-up, then its
# RSS, descriptors, threads, tasks and gauges compared with the post-warm-up baseline.
# Usage: scripts/churn-soak.sh [minutes]   (exit 1 on a leak)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-5}
cargo build --release --locked --quiet
mkdir -p target/perf
log=$(mktemp)
target/release/roomcast serve --http 127.0.0.1:0 --rtc-port 0 --workers 1 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  url=$(grep -oE 'HTTP listening on http://[0-9.:]+' "$log" | awk '{print $4}') && [ -n "$url" ] && break
  sleep 0.1
done
[ -n "${url:-}" ] || { cat "$log" >&2; echo "server did not start" >&2; exit 1; }
target/release/roomcast load --server "$url" --duration $((minutes * 60)) --json target/perf/churn-soak.json \
  churn --rooms 4 --size 4 --min-stay-ms 200 --max-stay-ms 800 --leak-check --warmup 30
