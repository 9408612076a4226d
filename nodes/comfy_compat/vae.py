"""The engine's Wan2.1 VAE as a real `comfy.sd.VAE`.

`comfy.sd.VAE.__init__` (600 lines, one branch per VAE family) detects the Wan2.1 VAE from its
state dict and sets every field core nodes and model management read: compression ratios and index
formulas, process_input/output, pad value, working dtypes and vae_dtype (from --bf16-vae & co),
device, output device. Rebuilding that by hand would silently miss the next field a release adds,
so the constructor runs as is, and then exactly the fields in `REPLACED` are swapped for the
engine's (all read by `VAE.decode` / `encode` / `decode_tiled` / `encode_tiled`):

- `first_stage_model`: the engine's `WanVAE`, holding the very tensors ComfyUI just loaded (no
  second copy); its methods are the ones `comfy.sd.VAE` calls (decode/encode, decode_tiled/
  encode_tiled, decode_output_shape), and `comfy_has_chunked_io` makes `VAE.decode` pre-allocate
  the output on ComfyUI's intermediate device so frames stream into it;
- `patcher` (+ `size`): a fresh ModelPatcher around it, as the constructor makes, so model
  management loads/offloads it like any VAE; `patcher.cached_patcher_init` is a reload factory,
  so Select VAE Device / multi-GPU clones rebuild this VAE, not ComfyUI's;
- `handles_tiling = True`: VAEDecodeTiled / VAEEncodeTiled and the OOM fallback call the engine's
  tiling (tile-major, exact in time) instead of ComfyUI's generic re-decoding tiler;
- `memory_used_decode` / `memory_used_encode`: the engine's peak-VRAM model.

`tests/integration/test_vae_node.py` checks against the ComfyUI in use that the constructor sets
each replaced field and that the methods read them.
"""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import torch

from ...wan4step.vae.formats import VAEFile
from ...wan4step.vae.model import MEMORY_MARGIN, WanVAE
from ...wan4step.vae.tiled import encode_vram_bytes
from . import interrupts

REPLACED = ("first_stage_model", "patcher", "size", "handles_tiling", "memory_used_decode", "memory_used_encode")
MODEL_HOOKS = ("comfy_has_chunked_io",)  # read by VAE.decode / encode on first_stage_model


def comfy_vae(file: VAEFile, dtype: torch.dtype | None = None, tiling: str = "auto", tile_size: int = 512,
              tile_overlap: int = 64, disable_dynamic: bool = False, progress=None, reload=None) -> comfy.sd.VAE:
    """A `comfy.sd.VAE` for `file` that computes with the engine. `progress(done, total)` is called after
    every decoded piece; `reload` is a `cached_patcher_init` (factory, args) tuple."""
    vae = comfy.sd.VAE(sd=file.state_dict, dtype=dtype)
    vae.throw_exception_if_invalid()
    theirs = vae.first_stage_model.state_dict()
    with torch.device("meta"):
        ours = WanVAE(file.config)
    ours.load_state_dict({k: v.to(vae.vae_dtype) for k, v in theirs.items()}, strict=True, assign=True)
    ours.requires_grad_(False).eval()
    del theirs
    mm.archive_model_dtypes(ours)
    ours.comfy_has_chunked_io = True
    ours.output_device = vae.output_device
    ours.output_dtype = vae.vae_output_dtype()
    ours.tiling = tiling
    ours.tile = (max(1, tile_size // 8),) * 2
    ours.overlap = tile_overlap // 8
    ours.progress = progress
    interrupts.check_in(ours)  # Cancel stops a decode within a layer (the engine's units are whole stages)

    # what ComfyUI frees before a decode; "auto" asks for the untiled peak (so the DiT is
    # unloaded when that makes room) and tiles only if it still does not fit
    def memory_decode(shape, dt):
        tile = ours.tile if tiling == "on" else None
        return int(ours.decode_vram_bytes(shape, mm.dtype_size(dt), tile=tile) * MEMORY_MARGIN * 1.05)

    def memory_encode(shape, dt):
        return int(encode_vram_bytes(ours, tuple(shape), mm.dtype_size(dt)) * MEMORY_MARGIN)

    patcher_cls = comfy.model_patcher.ModelPatcher if disable_dynamic else comfy.model_patcher.CoreModelPatcher
    vae.first_stage_model = ours
    vae.patcher = patcher_cls(ours, load_device=vae.device, offload_device=mm.vae_offload_device())
    vae.size = None
    vae.model_size()
    vae.handles_tiling = True
    vae.memory_used_decode = memory_decode
    vae.memory_used_encode = memory_encode
    if reload is not None:
        vae.patcher.cached_patcher_init = reload
    return vae
