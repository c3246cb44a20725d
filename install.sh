#!/usr/bin/env bash
# Installs what WorldStudio needs on a Debian machine with Python >= 3.11 (no GPU needed).
#   bash install.sh          system library for open3d + the Python package (editable) and its dependencies
#   bash install.sh --test   the same, plus test needs: Debian's chromium (browser tests) and pytest/playwright
set -euo pipefail
cd "$(dirname "$0")"

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "error: need root (or sudo) to install Debian packages: $*" >&2; exit 1; fi; }

debs="libusb-1.0-0"                  # open3d imports only with it
[ "$with_tests" = 1 ] && debs="$debs chromium"   # browser tests drive Debian's chromium (never a downloaded one)
missing=""
for p in $debs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

python=${PYTHON:-python3}
extra=""
[ "$with_tests" = 1 ] && extra="[test]"
# torch==2.13.0 first, on its own: it resolves to the machine's local CPU wheel.
"$python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$python" -m pip install -q --disable-pip-version-check -e ".$extra"
echo "WorldStudio installed."
