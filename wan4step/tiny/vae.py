"""A tiny Wan2.1 VAE: the real architecture (z_dim 16, dim_mult 1,2,4,4, 2 residual blocks,
temporal down/up sampling, middle attention) at dim 16 instead of 96, ~3.6 M parameters.

ComfyUI's own loader reads `dim` from `decoder.head.0.gamma`, so the same files load through
core `VAELoader` (the integration tests' oracle) and through this pack.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..vae.formats import original_to_diffusers
from ..vae.model import VAEConfig, WanVAEModel

TINY_VAE = VAEConfig(dim=16)


def tiny_vae_state_dict(cfg: VAEConfig = TINY_VAE, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 weights in original keys, deterministic, scaled so activations stay O(1) and the
    decoded video mostly inside [-1, 1] (diffusers clamps its output; a saturated oracle is blind).

    Norm gains and biases are random too, so a key-mapping mistake changes the output.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in WanVAEModel(cfg).state_dict().items()}
    sd = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=g)
        if key.endswith("gamma"):
            t = 1.0 + 0.1 * t
        elif key.endswith("bias"):
            t = 0.02 * t
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = t / fan_in**0.5
            if key == "decoder.head.2.weight":
                t = 0.3 * t
        sd[key] = t.contiguous()
    return sd


def write_tiny_vae(path: str | Path, fmt: str = "pth", dtype: torch.dtype = torch.float32,
                   cfg: VAEConfig = TINY_VAE, seed: int = 0) -> Path:
    """Write the tiny VAE as `Wan2.1_VAE.pth` would be ('pth': torch.save of the original keys),
    as Comfy-Org's file ('safetensors': original keys) or as diffusers' ('diffusers' safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.to(dtype) for k, v in tiny_vae_state_dict(cfg, seed).items()}
    if fmt == "pth":
        torch.save(sd, path)
    elif fmt in ("safetensors", "diffusers"):
        from safetensors.torch import save_file

        if fmt == "diffusers":
            sd = original_to_diffusers(sd, cfg.num_res_blocks)
        save_file(sd, str(path))
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return path
