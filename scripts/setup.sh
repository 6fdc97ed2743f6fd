#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system libraries, the CPU torch wheel, kdpipe.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need=()
dpkg -s libusb-1.0-0 >/dev/null 2>&1 || need+=(libusb-1.0-0)   # open3d-cpu links it
command -v chromium >/dev/null 2>&1 || need+=(chromium)         # HTML report tests
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# torch first and exact: the CPU wheel is on disk; a looser spec pulls GBs of CUDA wheels.
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e ".[dev]"
