#!/usr/bin/env bash
# The whole roomcast test suite, as the README and CI run it:
#   formatting and lints, Rust unit and integration tests (real server, str0m clients),
#   fuzz-target smoke runs, and the browser end-to-end tests (headless Chromium).
# Installs what it needs first (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
# The web client has no build step; TypeScript checks its JSDoc types (web-client/jsconfig.json).
npm run --silent typecheck:web

echo "== Rust tests"
cargo build --workspace --locked
cargo test --workspace --all-features --locked

echo "== fuzz smoke (each cargo-fuzz target for ${ROOMCAST_FUZZ_SECONDS:-15} s)"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked --quiet cargo-fuzz
# cargo-fuzz passes rustc flags that stable only accepts with RUSTC_BOOTSTRAP; -s none
# needs no sanitizer runtime, so the one stable toolchain on the machine is enough.
(
  cd fuzz
  for target in $(cargo fuzz list); do
    log=$(mktemp)
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --release "$target" -- \
        -max_total_time="${ROOMCAST_FUZZ_SECONDS:-15}" >"$log" 2>&1; then
      tail -n 60 "$log" >&2
      echo "fuzz target $target failed; the crashing input is under fuzz/artifacts/$target/" >&2
      exit 1
    fi
    echo "$target: $(grep -E '^Done' "$log")"
    rm -f "$log"
  done
)

echo "== browser tests (headless Chromium)"
ROOMCAST_BIN="$PWD/target/debug/roomcast" npm run --silent test:browser
