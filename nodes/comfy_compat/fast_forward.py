"""Run every Wan block through the pack's fused forward, on ComfyUI's module tree.

Installed as `patches_replace["dit"][("double_block", i)]`, the hook ComfyUI's
WanModel offers per block, so the MODEL stays ComfyUI's (LoRA, other patches,
model management) while the block math is ours. Falls back to ComfyUI's own
block whenever something the fast path does not model is present.
"""

from __future__ import annotations

import logging

import comfy.model_management
import torch

from ...wan4step import attention as attn
from ...wan4step.dit.block import block_forward, has_use_time_patches, supports
from ...wan4step.dit.fused import rope_tables
from ...wan4step.offload.wrap import on_device

KEY = "wan4step_fast"
log = logging.getLogger("wan4step")
_compiled = None  # one torch.compile wrapper for every model: dynamo caches per code object anyway


def _compiled_block_forward():
    """block_forward under torch.compile. Blocks are arguments, so one graph serves all 40 blocks
    and streamed blocks (same shapes, weights in the GPU ring) reuse it instead of recompiling."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(block_forward, dynamic=False)
    return _compiled


class FastBlocks:
    def __init__(self, dm, attention: str, device, compile: bool = False) -> None:
        self.dm = dm
        self.name, self.fn = attn.resolve(attention, device)
        self._rope_src = None
        self._rope = None
        self.compile = compile
        self._forward = _compiled_block_forward() if compile else block_forward

    def forward(self, blk, *args):
        if self._forward is block_forward:
            return block_forward(blk, *args)
        try:
            return self._forward(blk, *args)
        except (torch.OutOfMemoryError, comfy.model_management.InterruptProcessingException):
            raise
        except Exception as exc:  # no C/C++ compiler, no Triton for this GPU, an op dynamo cannot trace
            out = block_forward(blk, *args)  # if eager fails too, that error is the real one
            self._forward = block_forward
            log.warning("Wan4Step: torch.compile of the block failed (%s: %s); running uncompiled",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return out

    def rope(self, freqs):
        if freqs is not self._rope_src:
            self._rope_src, self._rope = freqs, rope_tables(freqs)
        return self._rope

    def make(self, i: int):
        def replace(args, extra):
            comfy.model_management.throw_exception_if_processing_interrupted()
            topts = args["transformer_options"]
            patches = topts.get("patches", {})
            block = self.dm.blocks[i]
            if (not supports(args["vec"]) or "attn1_patch" in patches or "attn2_patch" in patches
                    or has_use_time_patches(getattr(block, "inner", block))):
                return extra["original_block"](args)
            with on_device(block) as blk:
                return {"img": self.forward(blk, args["img"], args["vec"], self.rope(args["pe"]), args["txt"], self.fn)}

        return replace


def install(model, attention: str = "auto", compile: bool = False):
    """Return a clone of `model` whose blocks run the fused forward (under torch.compile if asked)."""
    m = model.clone()
    dm = m.model.diffusion_model
    fast = FastBlocks(dm, attention, m.load_device, compile)
    for i in range(len(dm.blocks)):
        m.set_model_patch_replace(fast.make(i), "dit", "double_block", i)
    m.wan4step_attention = fast.name
    return m
