#!/usr/bin/env bash
# Set up (if needed) and run the main job on the built-in sample subject.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/napari-myelin info sample_data/sub-01/anat/sub-01_T1w.nii.gz
