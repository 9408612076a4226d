"""Run every Wan block through the pack's fused forward, on ComfyUI's module tree.

Installed as `patches_replace["dit"][("double_block", i)]`, the hook ComfyUI's
WanModel offers per block, so the MODEL stays ComfyUI's (LoRA, other patches,
model management) while the block math is ours. Falls back to ComfyUI's own
block whenever something the fast path does not model is present.
"""

from __future__ import annotations

import comfy.model_management

from ..wan4step import attention as attn
from ..wan4step.dit.block import block_forward, supports
from ..wan4step.dit.fused import rope_tables
from ..wan4step.offload.wrap import on_device

KEY = "wan4step_fast"


class FastBlocks:
    def __init__(self, dm, attention: str, device) -> None:
        self.dm = dm
        self.name, self.fn = attn.resolve(attention, device)
        self._rope_src = None
        self._rope = None

    def rope(self, freqs):
        if freqs is not self._rope_src:
            self._rope_src, self._rope = freqs, rope_tables(freqs)
        return self._rope

    def make(self, i: int):
        def replace(args, extra):
            comfy.model_management.throw_exception_if_processing_interrupted()
            topts = args["transformer_options"]
            patches = topts.get("patches", {})
            if not supports(args["vec"]) or "attn1_patch" in patches or "attn2_patch" in patches:
                return extra["original_block"](args)
            with on_device(self.dm.blocks[i]) as blk:
                return {"img": block_forward(blk, args["img"], args["vec"], self.rope(args["pe"]), args["txt"], self.fn)}

        return replace


def install(model, attention: str = "auto"):
    """Return a clone of `model` whose blocks run the fused forward."""
    m = model.clone()
    dm = m.model.diffusion_model
    fast = FastBlocks(dm, attention, m.load_device)
    for i in range(len(dm.blocks)):
        m.set_model_patch_replace(fast.make(i), "dit", "double_block", i)
    m.wan4step_attention = fast.name
    return m
