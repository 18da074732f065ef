#!/usr/bin/env bash
# Set up napari-myelin on a fresh Debian machine with Python 3.11: system libraries for napari's
# OpenGL canvas under Xvfb (Qt's offscreen platform has no OpenGL), a virtual environment in .venv,
# the CPU build of PyTorch (pinned, so pip does not pull several GB of CUDA packages) and the
# plugin with its test extra. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb libgl1-mesa-dri libglx-mesa0 libegl1 xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-cursor0 \
libdbus-1-3 libfontconfig1"
if ! command -v xvfb-run >/dev/null 2>&1 || [ "$(dpkg-query -W -f='${Status}\n' $APT_PACKAGES 2>/dev/null | grep -c 'install ok installed')" -lt "$(echo $APT_PACKAGES | wc -w)" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "[setup] installing Xvfb, Mesa and xcb libraries (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $APT_PACKAGES >/dev/null
  else
    echo "[setup] please run: sudo apt-get install -y $APT_PACKAGES" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
pip_install() {  # pip, minus its notes about this machine's unused local index folders
  "$VPY" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU build)"
  pip_install "torch==2.13.0"
fi
echo "[setup] installing napari-myelin[test,docs]"
pip_install -e ".[test,docs]"
echo "[setup] done: $("$VPY" -c 'import napari_myelin; print("napari-myelin", napari_myelin.__version__)')"
