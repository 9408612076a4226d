"""Wan4Step Block Swap: MODEL -> MODEL that streams DiT blocks from CPU RAM (or disk) during sampling."""

from __future__ import annotations

from comfy_api.latest import io

from ..wan4step.errors import SettingsError
from .comfy_compat import block_swap as swap_compat


class Wan4StepBlockSwap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepBlockSwap",
            display_name="Wan4Step Block Swap",
            category="Wan4Step",
            description="Streams DiT blocks from CPU RAM (pinned, in their stored format) or from disk into a small ring "
                        "of GPU buffers ahead of use, so a 14B model runs on 8-16 GB cards at (almost) resident speed. "
                        "Works with this pack's loader, ComfyUI's UNETLoader and ComfyUI-GGUF's UnetLoaderGGUF.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan2.1 T2V MODEL from any loader."),
                io.Int.Input("blocks_to_swap", default=-1, min=-1, max=40,
                             tooltip="-1 = auto: the fewest blocks that let the rest fit in free VRAM at this latent size "
                                     "(decided again at every sampling run; a larger video streams more blocks). "
                                     "40 = stream every block (8 GB cards). A VACE model's VACE blocks are streamed in "
                                     "the same proportion (40 = all 8)."),
                io.Int.Input("prefetch", default=2, min=1, max=8,
                             tooltip="How many blocks are copied ahead of use. 2 hides the copy behind compute; each extra "
                                     "one costs one block of VRAM (FP8 352 MB, GGUF Q4 ~290 MB, bf16 704 MB)."),
                io.Boolean.Input("pin_memory", default=True,
                                 tooltip="Page-locked RAM: 6x faster copies (53.6 vs 8.6 GB/s measured), within ComfyUI's "
                                         "pinned-memory budget (off with ComfyUI's --disable-pinned-memory). Turn off only "
                                         "if the OS refuses to pin that much memory."),
                io.Combo.Input("source", options=["ram", "disk"], default="ram",
                               tooltip="ram: streamed blocks live in CPU RAM. disk: they stay memory-mapped in the model "
                                       "file and are read ahead on a thread (for machines with less RAM than the model)."),
                io.Boolean.Input("offload_embeddings", default=False, advanced=True,
                                 tooltip="Also stream the text/time embeddings and the head (saves ~0.1 GB of VRAM)."),
            ],
            outputs=[io.Model.Output(tooltip="The same model, streaming during sampling.")],
        )

    @classmethod
    def execute(cls, model, blocks_to_swap, prefetch, pin_memory, source, offload_embeddings=False) -> io.NodeOutput:
        # values on a link skip ComfyUI's min/max check: refuse them here rather than clamp
        for name, v, lo, hi in (("blocks_to_swap", blocks_to_swap, -1, 40), ("prefetch", prefetch, 1, 8)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise SettingsError(f"{name} {v!r} is outside {lo}..{hi}", fix=f"set {name} from {lo} to {hi}.")
        if source not in ("ram", "disk"):
            raise SettingsError(f"source {str(source)[:40]!r} is not ram or disk", fix="pick ram or disk.")
        holder = swap_compat.SwapHolder(blocks_to_swap, prefetch, pin_memory, source == "disk", offload_embeddings)
        return io.NodeOutput(swap_compat.install(model.clone(), holder))


NODES = [Wan4StepBlockSwap]
