"""Wan4Step VAE Loader: a Wan2.1 VAE file -> a ComfyUI VAE that decodes through the pack's engine.

The output IS a `comfy.sd.VAE` (ComfyUI's own constructor, then the engine swapped in):
`comfy_compat/vae.py` says how and why, and which fields it replaces.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..wan4step.vae.formats import VAEFile, read_vae_state_dict
from .comfy_compat.progress import NodeProgress
from .comfy_compat.vae import comfy_vae

DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TILING = ("auto", "on", "off")


class _Progress:
    """The decode's/encode's bar + interrupt check, called by the engine with units of work
    (wan4step/vae/tiled.py: the middle's frames and every upsampling stage, not only finished frames)."""

    def __init__(self) -> None:
        self.bar: NodeProgress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != max(int(total), 1) or done < self.bar.done:
            self.bar = NodeProgress(total)
        self.bar.set(done)


def make_comfy_vae(path: str, dtype: str = "auto", tiling: str = "auto", tile_size: int = 512,
                   tile_overlap: int = 64, disable_dynamic: bool = False):
    """A `comfy.sd.VAE` for the Wan2.1 VAE file at `path` that computes with the pack's engine."""
    file = read_vae_state_dict(path)  # the pack's reader: clear errors for wrong/truncated files
    return comfy_vae(file, DTYPES[dtype], tiling, tile_size, tile_overlap, disable_dynamic, progress=_Progress(),
                     reload=(_reload_patcher, (path, dtype, tiling, tile_size, tile_overlap)))


def comfy_vae_from(file: VAEFile, dtype: str = "auto", tiling: str = "auto", tile_size: int = 512,
                   tile_overlap: int = 64, disable_dynamic: bool = False):
    """make_comfy_vae for an already read file (the H100 bench builds one from random weights)."""
    return comfy_vae(file, DTYPES[dtype], tiling, tile_size, tile_overlap, disable_dynamic, progress=_Progress())


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
