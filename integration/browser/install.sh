#!/usr/bin/env bash
# Idempotent: installs Debian chromium + chromium-driver only when missing,
# then prints versions. Must run as root (or via sudo).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends chromium chromium-driver
fi
chromium --version 2>/dev/null  # the Debian wrapper prints a harmless "[: unexpected operator" line
chromedriver --version
