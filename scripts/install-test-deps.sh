#!/usr/bin/env bash
# Installs what roomcast's tests need beyond Rust and Node: Debian's Chromium (driven by
# playwright-core; never a downloaded browser), ffmpeg (the OBS stand-in pushing RTMP), and the
# npm packages in package-lock.json.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
command -v ffmpeg >/dev/null 2>&1 || apt_packages+=(ffmpeg)

if ((${#apt_packages[@]})); then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-test-deps: need ${apt_packages[*]} but am not root and have no sudo." >&2
    echo "  Install them yourself: apt-get install --no-install-recommends ${apt_packages[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: apt-get install ${apt_packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-test-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
