#!/usr/bin/env bash
# Installs what roomcast's tests need beyond Rust and Node: Debian's Chromium (driven by
# playwright-core; never a downloaded browser), Firefox ESR (driven over WebDriver BiDi), ffmpeg (the OBS stand-in pushing RTMP), nginx
# with its stream module (the TLS proxy of nginx/*.conf, in tests/browser/nginx.test.mjs),
# docker-compose (resolves compose.yaml in tests/deploy.rs; no Docker engine needed), coturn
# (the TURN relay of tests/browser/turn.test.mjs, started by the test, never as a service), and
# the npm packages in package-lock.json. iproute2 and nftables shape the simulcast test's network.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
# Firefox ESR: the web client's Firefox test (tests/browser/firefox.test.mjs, WebDriver BiDi).
command -v firefox-esr >/dev/null 2>&1 || apt_packages+=(firefox-esr)
command -v ffmpeg >/dev/null 2>&1 || apt_packages+=(ffmpeg)
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
command -v curl >/dev/null 2>&1 || apt_packages+=(curl)
command -v turnserver >/dev/null 2>&1 || apt_packages+=(coturn)
command -v docker-compose >/dev/null 2>&1 || apt_packages+=(docker-compose)
# /usr/sbin is not on every user's PATH: look for the files the nginx test uses.
[ -x /usr/sbin/nginx ] || apt_packages+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || apt_packages+=(libnginx-mod-stream)
# Network namespaces, a tbf rate limit and random loss for the simulcast test
# (tests/browser/simulcast.test.mjs): ip and tc from iproute2, nft from nftables.
[ -x /usr/sbin/ip ] && [ -x /usr/sbin/tc ] || apt_packages+=(iproute2)
[ -x /usr/sbin/nft ] || apt_packages+=(nftables)

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
