#!/usr/bin/env bash
# Build the git-ignored .carry/ folder that scripts/device_env.sh unpacks on the GPU machine, which
# has no network: ComfyUI (the checkout setup.sh made) and the wheels its image lacks, for the
# Python there (3.12; CARRY_PYTHON to change). Needs the package registry once; ~3 min on 2 cores.
#   bash scripts/make_carry.sh            # then: run(..., carry=[".carry"]) with `source scripts/device_env.sh`
# The device tool carries at most 64 MiB: comfy_kitchen keeps only its CUDA backend and the big
# pieces are xz-compressed; the script prints the total and fails above the limit.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/.carry"
PYVER="${CARRY_PYTHON:-3.12}"
COMFY_DIR="${COMFYUI_PATH:-$HOME/.cache/wan4step/ComfyUI}"
PIP="${PIP:-$REPO/.venv/bin/pip}"
LIMIT=$((64 * 1024 * 1024))
[ -f "$COMFY_DIR/main.py" ] || { echo "make_carry: no ComfyUI at $COMFY_DIR (run scripts/setup.sh first)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$OUT" "$tmp/w" "$tmp/big" "$tmp/ck" "$tmp/av"
download() {  # dest spec...
  local dest="$1"; shift
  "$PIP" download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$dest" "$@"
}
# ComfyUI 0.33's requirements.txt pins; the rest as it asks (>=, ~=)
download "$tmp/w" comfy-aimdo==0.4.13 torchsde trampoline gguf einops "simpleeval>=1.0.0" blake3 alembic \
  "SQLAlchemy>=2.0.0" mako greenlet "pydantic~=2.0" pydantic-core annotated-types typing-inspection \
  sageattention==1.0.6 ftfy wcwidth
download "$tmp/big" comfy-kitchen==0.2.31 "av>=16.0.0"
tar -cJf "$OUT/wheels.tar.xz" -C "$tmp/w" .

(cd "$tmp/ck" && python3 -m zipfile -e "$tmp"/big/comfy_kitchen-*.whl . && rm -rf comfy_kitchen/backends/hip)
XZ_OPT=-9 tar -cJf "$OUT/comfy_kitchen_site.tar.xz" -C "$tmp/ck" .
(cd "$tmp/av" && python3 -m zipfile -e "$tmp"/big/av-*.whl .)
XZ_OPT=-9 tar -cJf "$OUT/av_site.tar.xz" -C "$tmp/av" .

# top-level folders only: an unanchored 'models/*' would also drop comfy/ldm/models (ComfyUI's code)
name="$(basename "$COMFY_DIR")"
tar -cJf "$OUT/comfyui.tar.xz" -C "$(dirname "$COMFY_DIR")" --anchored --exclude="$name/.git" --no-anchored \
  --exclude=__pycache__ --anchored --exclude="$name/custom_nodes/ComfyUI-Wan4Step" --exclude="$name/models/*" \
  --exclude="$name/output/*" --exclude="$name/input/*" "$name"

total=$(du -cb "$OUT"/*.tar.xz | tail -1 | cut -f1)
ls -la "$OUT"
echo "make_carry: $((total / 1024 / 1024)) MiB in $OUT (limit 64 MiB)"
[ "$total" -le "$LIMIT" ] || { echo "make_carry: over the device tool's carry limit" >&2; exit 1; }
