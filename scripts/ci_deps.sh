#!/usr/bin/env bash
# System packages the test suite needs beyond Python: a real headless browser for the
# `cutalign inspect` HTML test (tests/inspection). Debian/Ubuntu; run as root (CI images are).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(chromium --version 2>/dev/null || true)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium
chromium --version
