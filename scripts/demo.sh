#!/usr/bin/env bash
# The main job: set up (venv, ComfyUI), boot ComfyUI headless with the pack, queue the bundled
# text-to-video workflow and write an mp4 (tiny embedded model unless real weights are present).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
exec "${WAN4STEP_VENV:-$REPO/.venv}/bin/python" "$REPO/scripts/demo.py" "$@"
