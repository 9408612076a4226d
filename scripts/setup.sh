#!/usr/bin/env bash
# Create/reuse the project's virtual environment and everything the demo and tests need.
#   - .venv (or $WAN4STEP_VENV) with torch, the pack's requirements and the dev tools
#   - a real ComfyUI: $COMFYUI_PATH, else ~/.cache/wan4step/ComfyUI (cloned at a pinned commit
#     when the network allows), its requirements, city96's ComfyUI-GGUF (for interop tests), and
#     this pack linked into its custom_nodes/
# Safe to run again: it only installs what changed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WAN4STEP_VENV:-$REPO/.venv}"
PY="${PYTHON:-python3}"
COMFY_URL="https://github.com/comfyanonymous/ComfyUI"
COMFY_COMMIT="783545f689a0af730065994b46b382ae24844c99"   # ComfyUI 0.33.0
GGUF_URL="https://github.com/city96/ComfyUI-GGUF"
GGUF_COMMIT="795e45156ece99afbc3efef911e63fcb46e6a20d"
COMFY_DIR="${COMFYUI_PATH:-$HOME/.cache/wan4step/ComfyUI}"

say() { echo "[wan4step setup] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }

stamp="$VENV/.wan4step-setup"
want="$(cat "$REPO/requirements.txt" "$REPO/requirements-dev.txt" "$0" | sha1sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
    say "installing torch + torchvision (set WAN4STEP_TORCH_SPEC to choose a build)"
    # shellcheck disable=SC2086
    pip_install ${WAN4STEP_TORCH_SPEC:-torch torchvision}
  fi
  say "installing requirements.txt and requirements-dev.txt"
  pip_install -r "$REPO/requirements.txt" -r "$REPO/requirements-dev.txt"
  echo "$want" > "$stamp"
fi

# ---- a real ComfyUI ---------------------------------------------------------------------------
fetch_pinned() {  # url commit dir
  local tmp="$3.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  if git -C "$tmp" init -q && git -C "$tmp" remote add origin "$1" &&
     timeout 90 git -C "$tmp" fetch -q --depth 1 origin "$2" 2>/dev/null &&
     git -C "$tmp" checkout -q FETCH_HEAD; then
    rm -rf "$3" && mv "$tmp" "$3"
    return 0
  fi
  rm -rf "$tmp"
  return 1
}

if [ ! -f "$COMFY_DIR/main.py" ]; then
  say "cloning ComfyUI ${COMFY_COMMIT:0:8} into $COMFY_DIR"
  mkdir -p "$(dirname "$COMFY_DIR")"
  if ! fetch_pinned "$COMFY_URL" "$COMFY_COMMIT" "$COMFY_DIR"; then
    say "no ComfyUI: could not clone $COMFY_URL (offline?). Set COMFYUI_PATH to a ComfyUI checkout, or re-run with network access; integration tests and the demo need one."
    exit 0
  fi
fi
if [ ! -d "$COMFY_DIR/custom_nodes/ComfyUI-GGUF" ]; then
  fetch_pinned "$GGUF_URL" "$GGUF_COMMIT" "$COMFY_DIR/custom_nodes/ComfyUI-GGUF" ||
    say "could not fetch ComfyUI-GGUF (offline?); its interop tests will be skipped"
fi
cstamp="$VENV/.wan4step-comfy"
cwant="$(cat "$COMFY_DIR/requirements.txt" | sha1sum | cut -c1-16)"
if [ "$(cat "$cstamp" 2>/dev/null)" != "$cwant" ]; then
  say "installing ComfyUI's requirements (torch left as installed)"
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$COMFY_DIR/requirements.txt" > "$VENV/.comfy-reqs.txt"
  pip_install -r "$VENV/.comfy-reqs.txt"
  if ! "$VPY" -c "import torchaudio" 2>/dev/null; then
    # ComfyUI imports torchaudio; when no build matches the installed torch this one still imports
    pip_install --no-deps torchaudio || pip_install --no-deps "torchaudio==2.11.0" || say "torchaudio unavailable"
  fi
  echo "$cwant" > "$cstamp"
fi
if [ ! -e "$COMFY_DIR/custom_nodes/ComfyUI-Wan4Step" ]; then
  ln -s "$REPO" "$COMFY_DIR/custom_nodes/ComfyUI-Wan4Step"
  say "linked the pack into $COMFY_DIR/custom_nodes/ComfyUI-Wan4Step"
fi
say "ready: ComfyUI at $COMFY_DIR"
