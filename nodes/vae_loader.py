"""Wan4Step VAE Loader: a Wan2.1 VAE file -> a ComfyUI VAE that decodes through the pack's engine.

How the VAE object is made, and why this way (the least fragile one found in comfy/sd.py):
the output IS a `comfy.sd.VAE`, built by ComfyUI's own constructor from the (original-key) state
dict, so ComfyUI's Wan2.1 detection sets every attribute core nodes and model management read
(compression ratios and index formulas, process_input/output, pad value, vae_dtype from
--bf16-vae & co, device, output device). Then exactly these documented hooks are replaced:
- `first_stage_model`: the engine's `WanVAE`, holding the very tensors ComfyUI just loaded (no
  second copy); its method names are the ones `comfy.sd.VAE` calls (decode/encode, decode_tiled/
  encode_tiled, decode_output_shape);
- `patcher`: a fresh `CoreModelPatcher` around it (what the constructor makes), so model
  management loads/offloads it like any VAE;
- `handles_tiling = True`: VAEDecodeTiled / VAEEncodeTiled and the OOM fallback call the engine's
  tiling (tile-major, exact in time) instead of ComfyUI's generic re-decoding tiler;
- `comfy_has_chunked_io` on the model: VAE.decode pre-allocates the output on ComfyUI's
  intermediate device and the engine streams frames into it (the GPU never holds the video);
- `memory_used_decode/encode`: the engine's peak-VRAM model;
- `patcher.cached_patcher_init`: a reload factory, so Select VAE Device / multi-GPU clones rebuild
  this VAE, not ComfyUI's.
Subclassing VAE or building one without its constructor would have to re-create every attribute
the constructor sets, and silently miss the next one a ComfyUI release adds.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..wan4step.vae.formats import VAEFile, read_vae_state_dict
from ..wan4step.vae.model import MEMORY_MARGIN, WanVAE
from ..wan4step.vae.tiled import encode_vram_bytes
from . import interrupts

DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TILING = ("auto", "on", "off")


class _Progress:
    """ComfyUI progress bar + interrupt check, called by the engine after every decoded piece."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        import comfy.model_management
        import comfy.utils

        comfy.model_management.throw_exception_if_processing_interrupted()
        if self.bar is None or self.bar.total != total or done <= 1:
            self.bar = comfy.utils.ProgressBar(total)
        self.bar.update_absolute(done, total)


def make_comfy_vae(path: str, dtype: str = "auto", tiling: str = "auto", tile_size: int = 512,
                   tile_overlap: int = 64, disable_dynamic: bool = False):
    """A `comfy.sd.VAE` for the Wan2.1 VAE file at `path` that computes with the pack's engine."""
    file = read_vae_state_dict(path)  # the pack's reader: clear errors for wrong/truncated files
    vae = comfy_vae_from(file, dtype, tiling, tile_size, tile_overlap, disable_dynamic)
    vae.patcher.cached_patcher_init = (_reload_patcher, (path, dtype, tiling, tile_size, tile_overlap))
    return vae


def comfy_vae_from(file: VAEFile, dtype: str = "auto", tiling: str = "auto", tile_size: int = 512,
                   tile_overlap: int = 64, disable_dynamic: bool = False):
    """make_comfy_vae for an already read file (the H100 bench builds one from random weights)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd

    vae = comfy.sd.VAE(sd=file.state_dict, dtype=DTYPES[dtype])
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
    ours.progress = _Progress()
    interrupts.check_in(ours)  # Cancel stops a decode within a layer, not a chunk of frames

    patcher_cls = comfy.model_patcher.ModelPatcher if disable_dynamic else comfy.model_patcher.CoreModelPatcher
    vae.first_stage_model = ours
    vae.patcher = patcher_cls(ours, load_device=vae.device, offload_device=mm.vae_offload_device())
    vae.size = None
    vae.model_size()
    vae.handles_tiling = True

    # what ComfyUI frees before a decode; "auto" asks for the untiled peak (so the DiT is
    # unloaded when that makes room) and tiles only if it still does not fit
    def memory_decode(shape, dt):
        tile = ours.tile if tiling == "on" else None
        return int(ours.decode_vram_bytes(shape, mm.dtype_size(dt), tile=tile) * MEMORY_MARGIN * 1.05)

    def memory_encode(shape, dt):
        return int(encode_vram_bytes(ours, tuple(shape), mm.dtype_size(dt)) * MEMORY_MARGIN)

    vae.memory_used_decode = memory_decode
    vae.memory_used_encode = memory_encode
    return vae


def _reload_patcher(path, dtype, tiling, tile_size, tile_overlap, device=None, disable_dynamic=False):
    """`cached_patcher_init` factory (see comfy.sd.load_vae_patcher): a fresh patcher of this VAE."""
    return make_comfy_vae(path, dtype, tiling, tile_size, tile_overlap, disable_dynamic=disable_dynamic).patcher


class Wan4StepVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        import folder_paths

        return io.Schema(
            node_id="Wan4StepVAELoader",
            display_name="Wan4Step VAE Loader",
            category="Wan4Step",
            description="Loads the Wan2.1 VAE (Wan2.1_VAE.pth or Comfy-Org wan_2.1_vae.safetensors; diffusers layout "
                        "too) as a normal ComfyUI VAE that works with VAE Decode, VAE Decode (Tiled) and VAE Encode, "
                        "but decodes with the pack's faster engine: exact frame chunking, and tiles that cost only "
                        "their overlap.",
            inputs=[
                io.Combo.Input("vae_name", options=folder_paths.get_filename_list("vae"),
                               tooltip="A file in models/vae: Wan2.1_VAE.pth (original release) or wan_2.1_vae.safetensors "
                                       "(Comfy-Org). The Wan2.2 VAE (48 channels) and image VAEs are refused with a note."),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="Compute dtype. auto: ComfyUI's choice (bf16 on recent GPUs). fp32 is ~2x slower "
                                       "and needs ~2x the VRAM; fp16 can overflow on some clips."),
                io.Combo.Input("tiling", options=list(TILING), default="auto",
                               tooltip="For VAE Decode: auto tiles only when the untiled decode would not fit in free VRAM "
                                       "(81 frames untiled: about 3 GB at 480p, 6 GB at 720p); on always tiles (about 2 GB "
                                       "at either size, 5-25 % slower); off never does. VAE Decode (Tiled) always tiles "
                                       "with its own sizes."),
                io.Int.Input("tile_size", default=512, min=128, max=4096, step=32, advanced=True,
                             tooltip="Tile size in pixels when tiling. Tiles are spread evenly, so a frame is cut into as "
                                     "few equal tiles as fit; VRAM grows with the tile area."),
                io.Int.Input("tile_overlap", default=64, min=0, max=1024, step=8, advanced=True,
                             tooltip="Overlap between tiles in pixels, blended linearly. 64 hides the seams; more costs "
                                     "time, less may show them. At most tile_size / 4."),
            ],
            outputs=[io.Vae.Output(tooltip="A ComfyUI VAE: wire it into VAE Decode / VAE Decode (Tiled) / VAE Encode.")],
        )

    @classmethod
    def execute(cls, vae_name: str, dtype: str = "auto", tiling: str = "auto", tile_size: int = 512,
                tile_overlap: int = 64) -> io.NodeOutput:
        import folder_paths

        from .model_files import opened

        exts = tuple(folder_paths.supported_pt_extensions)
        with opened(("vae",), vae_name, field="vae_name", extensions=exts, folders_ok=False) as path:
            vae = make_comfy_vae(str(path), dtype, tiling, tile_size, tile_overlap)
        return io.NodeOutput(vae)


NODES = [Wan4StepVAELoader]
