#!/usr/bin/env bash
# Makes sure the shipped arm64 bootstraps can be run here: qemu's user-mode emulator and the
# arm64 C library (Debian packages qemu-user-static and libc6-arm64-cross). Installs them with
# apt-get when run as root; otherwise says what to install.
set -euo pipefail
if command -v qemu-aarch64-static >/dev/null && [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing qemu-user-static and libc6-arm64-cross (first use)" >&2
  apt-get install -y -q qemu-user-static libc6-arm64-cross >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q qemu-user-static libc6-arm64-cross >/dev/null; }
  exit 0
fi
echo "The Runtime API test runs the arm64 bootstraps under qemu: install qemu-user-static and libc6-arm64-cross (sudo apt-get install qemu-user-static libc6-arm64-cross)" >&2
exit 1
