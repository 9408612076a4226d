"""Random LoRA files laid out the way each publisher's tool writes them (test fixtures, benchmarks).

- "lightx2v": LightX2V's `tools/extract/lora_extractor.py` (ModelTC/LightX2V at c0b3601):
  every changed tensor of the model; 2-D `.weight`s of at least 1M parameters as
  `diffusion_model.<layer>.lora_up.weight` [out, r] / `.lora_down.weight` [r, in] (`U*sqrt(S)`,
  `sqrt(S)*V` of an SVD), every other tensor as a full difference — `.weight` -> `.diff`
  (norms, small linears, the 5-D patch embedding), `.bias` -> `.diff_b`, `.modulation` ->
  `.diff_m` (`blocks.N.diff_m`, `head.diff_m`); no `alpha`; saved with `safetensors` `save_file`
  and no metadata, bf16 (`--output-dtype bf16`).
- "kijai": `Kijai/WanVideo_comfy` `Lightx2v/..._lora_rank*_bf16.safetensors`: the
  `diffusion_model.` prefix, `lora_down`/`lora_up` pairs on the linears, `diff_b` on their
  biases, `.diff` on the q/k RMSNorms (key lists in kijai/ComfyUI-WanVideoWrapper #1862 and
  Comfy-Org/ComfyUI #10222), no `alpha`, bf16 (the file names say so).
- "lora_A/lora_B": PEFT naming as diffusion-pipe / ai-toolkit save Wan LoRAs
  (`diffusion_model.blocks.N.<linear>.lora_A.weight` / `.lora_B.weight`, tdrussell/diffusion-pipe
  #114), with an `alpha` per layer so the alpha/rank scale is exercised.

`lowrank_min_params` is the extractor's 1M-parameter threshold; the tiny test model's linears are
far smaller, so fixtures of it lower the threshold to give its block linears pairs as the 14B's get.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..wan_config import BLOCK_LINEARS, WanConfig
from .keys import expected_shapes

CONVENTIONS = ("lightx2v", "kijai", "lora_A/lora_B")
PREFIX = "diffusion_model."
EXTRACTOR_MIN_PARAMS = 1_000_000


def _pair(out: int, inp: int, rank: int, g: torch.Generator, size: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    up = torch.randn(out, rank, generator=g, device=device) * (size / rank**0.5)
    down = torch.randn(rank, inp, generator=g, device=device) / inp**0.5
    return up, down


def _is_linear_weight(key: str, shape: tuple[int, ...]) -> bool:
    return key.endswith(".weight") and len(shape) == 2


def make_lora(cfg: WanConfig, convention: str = "lightx2v", *, rank: int = 8, seed: int = 0, size: float = 0.05,
              lowrank_min_params: int = EXTRACTOR_MIN_PARAMS, dtype: torch.dtype = torch.bfloat16,
              device: str | torch.device = "cpu", blocks_only: bool = False) -> dict[str, torch.Tensor]:
    """A random LoRA state dict for a `cfg` model in one publisher's key convention.

    `size` is the relative magnitude of a low-rank delta against a unit-scaled weight.
    `blocks_only`: only the 40 x 10 block linears (what a benchmark of the step cost needs).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {CONVENTIONS}")
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = expected_shapes(cfg)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        is_block_linear = any(key.endswith(f".{lin}.weight") or key.endswith(f".{lin}.bias") for lin in BLOCK_LINEARS) \
            and key.startswith("blocks.")
        if blocks_only and not (is_block_linear and key.endswith(".weight")):
            continue
        numel = 1
        for s in shape:
            numel *= s
        layer = key.rsplit(".", 1)[0]
        if convention == "lightx2v":
            if _is_linear_weight(key, shape) and numel >= lowrank_min_params:
                up, down = _pair(shape[0], shape[1], rank, g, size, device)
                out[f"{PREFIX}{layer}.lora_up.weight"] = up
                out[f"{PREFIX}{layer}.lora_down.weight"] = down
            else:
                diff = torch.randn(shape, generator=g, device=device) * 0.01
                if key.endswith(".weight"):
                    out[f"{PREFIX}{layer}.diff"] = diff
                elif key.endswith(".bias"):
                    out[f"{PREFIX}{layer}.diff_b"] = diff
                else:  # blocks.N.modulation -> blocks.N.diff_m
                    out[f"{PREFIX}{key[: -len('modulation')]}diff_m"] = diff
            continue
        if not (is_block_linear or key.endswith(("norm_q.weight", "norm_k.weight"))):
            continue
        if convention == "kijai":
            if _is_linear_weight(key, shape):
                up, down = _pair(shape[0], shape[1], rank, g, size, device)
                out[f"{PREFIX}{layer}.lora_down.weight"] = down
                out[f"{PREFIX}{layer}.lora_up.weight"] = up
            elif key.endswith(".bias"):
                out[f"{PREFIX}{layer}.diff_b"] = torch.randn(shape, generator=g, device=device) * 0.01
            else:
                out[f"{PREFIX}{layer}.diff"] = torch.randn(shape, generator=g, device=device) * 0.01
        else:  # lora_A/lora_B with alpha = rank / 2 (scale 0.5)
            if _is_linear_weight(key, shape):
                up, down = _pair(shape[0], shape[1], rank, g, size * 2, device)
                out[f"{PREFIX}{layer}.lora_A.weight"] = down
                out[f"{PREFIX}{layer}.lora_B.weight"] = up
                out[f"{PREFIX}{layer}.alpha"] = torch.tensor(rank / 2)
    return {k: (v.to(dtype) if k.endswith((".weight", ".diff", ".diff_b", ".diff_m")) else v) for k, v in out.items()}


def write_lora(path: str | Path, sd: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save with `safetensors.torch.save_file` (what LightX2V's extractor calls; no metadata by default)."""
    import safetensors.torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous().cpu() for k, v in sd.items()}, str(path), metadata=metadata)
    return path
