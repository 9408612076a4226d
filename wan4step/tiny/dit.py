"""A tiny Wan2.1 T2V DiT: real architecture, 2 blocks, dim 256 (2 heads of 128).

Head dim 128 and a 4096-wide text embedding are what ComfyUI's Wan detection
assumes, so the tiny model loads through ComfyUI's own code unchanged.
"""

from __future__ import annotations

import torch

from ..wan_config import WanConfig, expected_keys

TINY_DIT = WanConfig(dim=256, ffn_dim=512, num_layers=2)


def tiny_dit_state_dict(cfg: WanConfig = TINY_DIT, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 weights, scaled like a trained model (unit-ish activations).

    Biases and norms are random too, so a key-mapping mistake changes the output.
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    d, f = cfg.dim, cfg.ffn_dim
    shapes = {
        "patch_embedding.weight": (d, cfg.in_dim, *cfg.patch_size),
        "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, cfg.text_dim),
        "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d),
        "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, cfg.freq_dim),
        "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d),
        "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d),
        "time_projection.1.bias": (6 * d,),
        "head.head.weight": (cfg.out_dim * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2], d),
        "head.head.bias": (cfg.out_dim * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2],),
        "head.modulation": (1, 2, d),
    }
    for key in expected_keys(cfg):
        if key in shapes:
            shape = shapes[key]
        elif key.endswith("modulation"):
            shape = (1, 6, d)
        elif key.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight", "norm3.bias")):
            shape = (d,)
        elif ".ffn.0." in key:
            shape = (f, d) if key.endswith("weight") else (f,)
        elif ".ffn.2." in key:
            shape = (d, f) if key.endswith("weight") else (d,)
        else:  # attention linears
            shape = (d, d) if key.endswith("weight") else (d,)
        t = torch.randn(shape, generator=g)
        if key.endswith("weight") and len(shape) >= 2:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = t / fan_in**0.5
        elif key.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight")):
            t = 1.0 + 0.1 * t
        elif key.endswith("modulation"):
            t = 0.1 * t
        else:  # biases
            t = 0.02 * t
        sd[key] = t.contiguous()
    return sd
