"""The embedded tiny model set: every format the pack reads, written into a ComfyUI models folder.

The demo runs on it when no real weights are present, and the integration tests
use it as their fixture. Deterministic: the same bytes every time, so a
version marker decides whether an existing set can be reused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

BUNDLE_VERSION = 2
MARKER = "wan4step_tiny.json"

# file names inside each ComfyUI model folder
DIT_BF16 = "wan4step_tiny/wan2.1_t2v_tiny_bf16.safetensors"
DIT_GGUF = "wan4step_tiny/wan2.1_t2v_tiny_Q4_K_M.gguf"
DIT_GGUF_Q8 = "wan4step_tiny/wan2.1_t2v_tiny_Q8_0.gguf"
DIT_FP8 = "wan4step_tiny/distill_fp8/"
DIT_INT8 = "wan4step_tiny/distill_int8/"
# VACE-merged, like QuantStack's Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-<TIER>.gguf (loader mode t2v or vace)
DIT_VACE_GGUF = "wan4step_tiny/wan2.1_t2v_tiny_vace_Q8_0.gguf"
UMT5 = "wan4step_tiny/umt5_tiny_fp16.safetensors"
VAE = "wan4step_tiny/wan_2.1_vae_tiny.safetensors"

FILES = {
    "diffusion_models": [DIT_BF16, DIT_GGUF, DIT_GGUF_Q8, DIT_FP8, DIT_INT8, DIT_VACE_GGUF],
    "text_encoders": [UMT5],
    "vae": [VAE],
}


def _current(models_dir: Path) -> bool:
    marker = models_dir / MARKER
    if not marker.is_file():
        return False
    try:
        if json.loads(marker.read_text()).get("version") != BUNDLE_VERSION:
            return False
    except ValueError:
        return False
    return all((models_dir / folder / name.rstrip("/")).exists() for folder, names in FILES.items() for name in names)


def write_tiny_models(models_dir: str | Path, force: bool = False) -> dict[str, list[str]]:
    """Write (or reuse) the tiny set under `models_dir`; returns {folder: [names]} as the loaders list them."""
    from ..formats.gguf_file import write_gguf
    from ..formats.lightx2v_dir import write_lightx2v_dir
    from .dit import tiny_dit_state_dict, tiny_vace_state_dict
    from .umt5 import tiny_spiece_model, tiny_umt5_state_dict, write_comfy
    from .vae import write_tiny_vae

    models_dir = Path(models_dir)
    if not force and _current(models_dir):
        return FILES
    for folder in FILES:
        shutil.rmtree(models_dir / folder / "wan4step_tiny", ignore_errors=True)
    dit = tiny_dit_state_dict()
    dd = models_dir / "diffusion_models"
    (dd / DIT_BF16).parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in dit.items()}, str(dd / DIT_BF16))
    write_gguf(dd / DIT_GGUF, dit, "Q4_K_M")
    write_gguf(dd / DIT_GGUF_Q8, dit, "Q8_0")
    write_lightx2v_dir(dd / DIT_FP8, dit, "fp8")
    write_lightx2v_dir(dd / DIT_INT8, dit, "int8")
    write_gguf(dd / DIT_VACE_GGUF, tiny_vace_state_dict(), "Q8_0")
    te = models_dir / "text_encoders" / UMT5
    te.parent.mkdir(parents=True, exist_ok=True)
    write_comfy(te, tiny_umt5_state_dict(), tiny_spiece_model())
    write_tiny_vae(models_dir / "vae" / VAE, fmt="safetensors", dtype=torch.bfloat16)
    (models_dir / MARKER).write_text(json.dumps({"version": BUNDLE_VERSION, "files": FILES}, indent=1))
    return FILES
