#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium is installed (the status page test drives it).
# Quick and silent when it is already there; otherwise `apt-get update` once, then install.
# Exit status: 0 installed (prints its path), 2 cannot install here (prints why on stderr).
set -euo pipefail

find_chromium() {
  command -v chromium || command -v chromium-browser || true
}

found="$(find_chromium)"
if [[ -n "$found" ]]; then
  echo "$found"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing and apt-get is not available on this system" >&2
  exit 2
fi
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "chromium is missing and installing it needs root (run: apt-get install -y chromium)" >&2
    exit 2
  fi
else
  SUDO=()
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get update -qq >/dev/null 2>&1; then
  echo "chromium is missing and apt-get update failed (no network to the Debian mirrors?)" >&2
  exit 2
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
  echo "chromium is missing and apt-get install chromium failed" >&2
  exit 2
fi

found="$(find_chromium)"
if [[ -z "$found" ]]; then
  echo "apt-get installed chromium but no chromium binary is on PATH" >&2
  exit 2
fi
echo "$found"
