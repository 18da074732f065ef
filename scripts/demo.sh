#!/usr/bin/env bash
# Set up (if needed) and run the main job: the phantom subject through the whole pipeline, with a
# napari screenshot report (rendered under a virtual X server). Outputs go to demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=xcb
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/napari-myelin demo --out "${DEMO_OUT:-demo_out}" "$@"
