"""A tiny Wan2.1 T2V DiT: real architecture, 2 blocks, dim 256 (2 heads of 128), and its VACE twin.

Head dim 128 and a 4096-wide text embedding are what ComfyUI's Wan detection
assumes, so the tiny model loads through ComfyUI's own code unchanged.

`tiny_vace_state_dict` adds a VACE addon (`vace_patch_embedding`, `vace_blocks.N`
with `before_proj`/`after_proj`, see `wan_config`) to exactly the T2V weights of
`tiny_dit_state_dict`: the VACE-merged fixture loaded in mode t2v must give the
plain T2V fixture's output bit for bit.
"""

from __future__ import annotations

import torch

from ..wan_config import VaceConfig, WanConfig, expected_shapes, is_vace_key

TINY_DIT = WanConfig(dim=256, ffn_dim=512, num_layers=2)
# 4 blocks with VACE blocks after blocks 0 and 2, so the interleaving of VACE and main
# blocks (and its streaming order) is exercised. in_dim stays the real 96: ComfyUI's
# WAN21_Vace feeds 16 + 16 latent channels (inactive/reactive control video) + 64 mask.
TINY_VACE_DIT = WanConfig(dim=256, ffn_dim=512, num_layers=4)
TINY_VACE = VaceConfig(num_layers=2, in_dim=96)


def _draw(key: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """float32 weights, scaled like a trained model (unit-ish activations).

    Biases and norms are random too, so a key-mapping mistake changes the output.
    """
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
    return t.contiguous()


def tiny_dit_state_dict(cfg: WanConfig = TINY_DIT, seed: int = 0) -> dict[str, torch.Tensor]:
    """Canonical float32 T2V weights for `cfg`, drawn in `expected_shapes` order from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return {key: _draw(key, shape, g) for key, shape in expected_shapes(cfg).items()}


def tiny_vace_state_dict(
    cfg: WanConfig = TINY_VACE_DIT, vace: VaceConfig = TINY_VACE, seed: int = 0, vace_seed: int = 1
) -> dict[str, torch.Tensor]:
    """`tiny_dit_state_dict(cfg, seed)` plus a VACE addon drawn from `vace_seed`.

    `after_proj` is scaled up (x4) so the control signal visibly moves the output: a
    test that feeds a VACE model the wrong control input must fail.
    """
    sd = tiny_dit_state_dict(cfg, seed)
    g = torch.Generator().manual_seed(vace_seed)
    for key, shape in expected_shapes(cfg, vace).items():
        if is_vace_key(key):
            t = _draw(key, shape, g)
            sd[key] = t * 4 if ".after_proj.weight" in key else t
    return sd
