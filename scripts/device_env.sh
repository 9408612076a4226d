# Source on the GPU machine (device tool): unpack the carried ComfyUI checkout and wheels.
# The carried files live in the git-ignored .carry/ folder (see docs/BENCHMARKS.md).
mkdir -p /tmp/w /tmp/site
tar -xJf .carry/wheels.tar.xz -C /tmp/w
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/w/*.whl
tar -xJf .carry/comfy_kitchen_site.tar.xz -C /tmp/site
tar -xJf .carry/av_site.tar.xz -C /tmp/site
tar -xJf .carry/comfyui.tar.xz -C /tmp
export PYTHONPATH=/tmp/site
export COMFYUI_PATH=/tmp/ComfyUI
export PYTHONUNBUFFERED=1
