#!/usr/bin/env bash
# System packages the test suite uses: Chromium + ChromeDriver (browser tests), ffmpeg (checking MP4s),
# HAProxy (replicas behind a real balancer: tests/test_balancer.py, and `haproxy -c` on deploy/).
# Installs them with apt-get when running as root (CI, containers) or with passwordless sudo; otherwise it
# says what to install and the tests that need them skip. Set SPLATCAST_SKIP_APT=1 to skip entirely.
set -euo pipefail
packages=(chromium chromium-driver ffmpeg haproxy)
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "${SPLATCAST_SKIP_APT:-0}" = "1" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]}; install them (apt-get install ${packages[*]}) or the tests that need them skip" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "system-deps: missing ${missing[*]}; run: sudo apt-get install ${packages[*]} (tests that need them skip)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
