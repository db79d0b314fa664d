#!/usr/bin/env bash
# Install Debian's chromium (used headless by tests/e2e/test_dashboard.py) when it is missing.
# Idempotent: does nothing when /usr/bin/chromium is there. No browser is downloaded any other way.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  echo "chromium: present ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "chromium: missing, and installing it needs root (or sudo): apt-get install chromium" >&2
  exit 1
fi

echo "chromium: missing; installing Debian's chromium package (apt-get)"
export DEBIAN_FRONTEND=noninteractive
echo "+ apt-get update"
"${as_root[@]}" apt-get update -q
echo "+ apt-get install -y --no-install-recommends chromium"
"${as_root[@]}" apt-get install -y -q --no-install-recommends chromium
echo "chromium: installed ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
