#!/usr/bin/env bash
# Set up pc3d in ./.venv: system packages (where possible), torch, then `pip install -e .[test,dev]`.
# Idempotent: every step checks before it acts, so a second run only re-checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
DEB_PACKAGES="libusb-1.0-0 libvulkan1 mesa-vulkan-drivers"
TORCH_CPU="torch==2.13.0"

missing=""
for p in $DEB_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    else
        echo "setup: open3d needs these system packages; install them with:"
        echo "    sudo apt-get update && sudo apt-get install -y$missing"
    fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    # A bare `torch` would pull a multi-GB CUDA build; CPU machines take the pinned CPU wheel.
    echo "setup: installing $TORCH_CPU"
    $PIP install -q "$TORCH_CPU"
fi
echo "setup: installing pc3d (editable) with test and dev extras"
$PIP install -q -e ".[test,dev]"
"$VENV/bin/python" -m pc3d info
