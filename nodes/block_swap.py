"""Wan4Step Block Swap: MODEL -> MODEL that streams DiT blocks from CPU RAM (or disk) during sampling."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
from comfy_api.latest import io

from ..wan4step.errors import SettingsError
from ..wan4step.offload.wan import choose_k, plan_swap

log = logging.getLogger("wan4step")
WRAPPER_KEY = "wan4step_block_swap"


class _Swap:
    """Per-MODEL state: the plan is made at the first sampling run, when the latent size is known."""

    def __init__(self, blocks_to_swap: int, prefetch: int, pin: bool, disk: bool, embeddings: bool) -> None:
        self.requested = blocks_to_swap
        self.prefetch, self.pin, self.disk, self.embeddings = prefetch, pin, disk, embeddings
        self.plan = None
        self.planned = False

    def __call__(self, executor, noise, *args, **kwargs):
        patcher = executor.class_obj.model_patcher
        if not self.planned:
            self._make_plan(patcher, tuple(noise.shape))
        attached = []
        if self.plan is not None:
            self._apply(patcher)
            attached = self._attach_patches(patcher)
            self.plan.streamer.ensure_device()
        try:
            return executor(noise, *args, **kwargs)
        finally:
            for undo in attached:
                undo()
            if self.plan is not None:
                self.plan.streamer.release_device()
                stats = self.plan.streamer.stats
                log.info("Wan4Step Block Swap: %d copies, %.2f GiB moved, %d stalls", stats.copies, stats.bytes / 2**30, stats.stalls)

    def _make_plan(self, patcher, latent_shape) -> None:
        dm = patcher.model.diffusion_model
        device = patcher.load_device
        k = choose_k(dm, self.requested, device, latent_shape, self.prefetch)
        self.planned = True
        if k == 0 and not self.embeddings:
            log.info("Wan4Step Block Swap: everything fits on %s; no blocks streamed", device)
            return
        # Another clone of this model (e.g. the same model with a LoRA, sampled before) may have
        # baked its patches into the shared weights; unload it so the pinned copies are pristine.
        comfy.model_management.unload_model_and_clones(patcher)
        self.plan = plan_swap(dm, k, device, self.prefetch, self.pin, self.disk, self.embeddings)
        log.info(self.plan.describe(len(dm.blocks)))

    def _attach_patches(self, patcher) -> list:
        """ComfyUI never sees the streamed modules' weights, so it cannot patch them; give their
        LoRA (and other weight) patches to them as use-time weight functions instead, the way
        ComfyUI's own lowvram mode does, and take them off again after sampling."""
        undo = []
        for name, wrapped in self.plan.patches.items():
            for sub, m in wrapped.inner.named_modules():
                for param in ("weight", "bias"):
                    stale = getattr(m, f"{param}_lowvram_function", None)
                    if stale is not None:
                        # left by an earlier DynamicVRAM load of this model: ComfyUI no longer
                        # manages this module, so only the patches attached below may apply
                        setattr(m, f"{param}_lowvram_function", None)
                        undo.append(lambda m=m, a=f"{param}_lowvram_function", v=stale: setattr(m, a, v))
                    key = ".".join(p for p in ("diffusion_model", name, sub, param) if p)
                    if key not in patcher.patches:
                        continue
                    tensor = getattr(m, param, None)
                    funcs = getattr(m, f"{param}_function", None)
                    if getattr(tensor, "tensor_type", None) is not None:
                        # ComfyUI-GGUF applies patches listed on its GGMLTensor after decoding
                        old = list(getattr(tensor, "patches", []))
                        tensor.patches = old + [(patcher.patches[key], key)]
                        undo.append(lambda t=tensor, o=old: setattr(t, "patches", o))
                    elif isinstance(funcs, list):
                        fn = comfy.model_patcher.LowVramPatch(key, patcher.patches)
                        funcs.append(fn)
                        undo.append(lambda f=funcs, fn=fn: f.remove(fn))
                    else:
                        log.warning("Wan4Step Block Swap: cannot apply the patch of %s to a streamed block", key)
        return undo

    def _apply(self, patcher) -> None:
        """Swap the streamed modules in (object patches: ComfyUI puts them in place at load and
        restores the originals at unload) and tell model management what is really resident."""
        first = next(iter(self.plan.patches))
        if f"diffusion_model.{first}" in patcher.object_patches:
            return
        total = patcher.model_size()
        for name, wrapped in self.plan.patches.items():
            patcher.add_object_patch(f"diffusion_model.{name}", wrapped)
        patcher.size = total - self.plan.streamed_param_bytes


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
                                     "(decided at the first sampling run). 40 = stream every block (8 GB cards)."),
                io.Int.Input("prefetch", default=2, min=1, max=8,
                             tooltip="How many blocks are copied ahead of use. 2 hides the copy behind compute; each extra "
                                     "one costs one block of VRAM (FP8 352 MB, GGUF Q4 ~290 MB, bf16 704 MB)."),
                io.Boolean.Input("pin_memory", default=True,
                                 tooltip="Page-locked RAM: 6x faster copies (53.6 vs 8.6 GB/s measured). Turn off only if "
                                         "the OS refuses to pin that much memory."),
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
        m = model.clone()
        swap = _Swap(blocks_to_swap, prefetch, pin_memory, source == "disk", offload_embeddings)
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, swap)
        m.wan4step_swap = swap
        return io.NodeOutput(m)


NODES = [Wan4StepBlockSwap]
