"""Run every Wan block through the pack's fused forward, on ComfyUI's module tree.

Installed as `patches_replace["dit"][("double_block", i)]`, the hook ComfyUI's
WanModel offers per block, so the MODEL stays ComfyUI's (LoRA, other patches,
model management) while the block math is ours. Falls back to ComfyUI's own
block whenever something the fast path does not model is present (a use-time patch
on a q/k norm weight it reads directly; on norm3 only, norm3 runs as a module).
Other packs' attention overrides are used; state is in `transformer_options` (dit_hooks.py).

VACE models (ComfyUI's VaceWanModel): the main blocks take the same hook and run
fused; the VACE blocks have no hook (VaceWanModel calls them directly after their
host block), so they always run ComfyUI's own block code, on the pack's linears.
"""

from __future__ import annotations

import logging

import comfy.patcher_extension
import torch

from ...wan4step import attention as attn
from ...wan4step import fallback
from ...wan4step.dit.block import block_forward, supports
from ...wan4step.dit.fused import rope_tables
from ...wan4step.offload.wrap import on_device
from . import memory
from .dit_hooks import DM_KEY, OVERRIDE, comfy_attention_fn, diffusion_model_wrapper
from .patches import direct_weights_patched

KEY = "wan4step_fast"
log = logging.getLogger("wan4step")
_compiled = None  # one torch.compile wrapper for every model: dynamo caches per code object anyway
_COMPILE = fallback.switch("torch.compile of the block", "the uncompiled block")


def _compiled_block_forward():
    """block_forward under torch.compile. Blocks are arguments, so one graph serves all 40 blocks
    and streamed blocks (same shapes, weights in the GPU ring) reuse it instead of recompiling."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(block_forward, dynamic=False)
    return _compiled


class FastBlocks:
    def __init__(self, dm, attention: str, device, compile: bool = False) -> None:
        self.dm = dm  # when no DIFFUSION_MODEL wrapper ran (bench scripts call the model directly)
        self.attention = attention
        self.name, self.fn = attn.resolve(attention, device)
        self._rope_src = None
        self._rope = None
        self.compile = compile
        self._forward = _compiled_block_forward() if compile else block_forward

    def clone(self) -> FastBlocks:
        return self  # settings only; the rope cache is keyed by the freqs tensor it was made from

    def forward(self, blk, *args):
        if self._forward is block_forward:
            return block_forward(blk, *args)
        if "block" in _COMPILE.off:
            return block_forward(blk, *args)
        try:
            return self._forward(blk, *args)
        except Exception as exc:  # noqa: BLE001 - no C/C++ compiler, no Triton for this GPU, an op dynamo cannot trace
            _COMPILE.fail("block", exc, "torch.compile of the block")  # OOM and interrupts are re-raised here
        return block_forward(blk, *args)  # if eager fails too, that error is the real one

    def rope(self, freqs):
        if freqs is not self._rope_src:
            self._rope_src, self._rope = freqs, rope_tables(freqs)
        return self._rope

    def make(self, i: int):
        def replace(args, extra):
            memory.interrupt_point()
            topts = args["transformer_options"]
            patches = topts.get("patches", {})
            block = (topts.get(DM_KEY) or self.dm).blocks[i]
            if not supports(args["vec"]) or "attn1_patch" in patches or "attn2_patch" in patches:
                return extra["original_block"](args)
            qk_patched, norm3_patched = direct_weights_patched(getattr(block, "inner", block))
            if qk_patched:
                return extra["original_block"](args)
            fn = comfy_attention_fn(topts) if OVERRIDE in topts else self.fn
            with on_device(block) as blk:
                return {"img": self.forward(blk, args["img"], args["vec"], self.rope(args["pe"]), args["txt"], fn,
                                            not norm3_patched)}

        return replace


def install(model, attention: str = "auto", compile: bool = False):
    """Return a clone of `model` whose blocks run the fused forward (under torch.compile if asked)."""
    m = model.clone()
    dm = m.model.diffusion_model
    fast = FastBlocks(dm, attention, m.load_device, compile)
    for i in range(len(dm.blocks)):
        m.set_model_patch_replace(fast.make(i), "dit", "double_block", i)
    m.model_options["transformer_options"][KEY] = fast
    m.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, diffusion_model_wrapper)
    return m


def info(model) -> FastBlocks | None:
    """The fused forward's holder of a MODEL (its `name` is the attention backend it resolved to)."""
    return model.model_options.get("transformer_options", {}).get(KEY)
