"""Block Swap inside ComfyUI: per-model state in `transformer_options`, an OUTER_SAMPLE wrapper that
plans at every sampling run, streamed modules as object patches, LoRA for the streamed blocks.

The state follows core's `comfy_extras/nodes_easycache.py`: a holder object in
`model_options["transformer_options"]`, which `ModelPatcher.clone()` copies along, and a
module-level wrapper that finds it there (nothing is stored on the ModelPatcher).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

from ...wan4step.offload.wan import GiB, SwapPlan, choose_k, original, plan_swap
from ...wan4step.offload.wrap import StreamedModule
from . import memory, patches

log = logging.getLogger("wan4step")
KEY = "wan4step_block_swap"


@dataclass
class _Built:
    """A plan built for one diffusion-model tree: what it was built for, and the plan (None: nothing streamed)."""

    k: int
    latent_shape: tuple
    plan: SwapPlan | None


class SwapHolder:
    """Block Swap's settings and the plans built so far, one per diffusion-model tree.

    Clones of a MODEL share its tree, so `clone()` shares the built plans (one pinned copy of the
    streamed blocks per tree, whichever clone samples). Every sampling run re-plans: the block
    count is computed again for this latent and the VRAM free now, and the plan is rebuilt when it
    must stream more blocks, or when the latent shape changed and fewer suffice. (A mere rise in
    free VRAM at the same size keeps the plan: it fits, and repacking costs a copy of every
    streamed block.)
    """

    def __init__(self, requested: int, prefetch: int, pin: bool, disk: bool, embeddings: bool,
                 built: weakref.WeakKeyDictionary | None = None) -> None:
        self.requested = requested
        self.prefetch, self.pin, self.disk, self.embeddings = prefetch, pin, disk, embeddings
        self.built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary() if built is None else built

    def clone(self) -> SwapHolder:
        return SwapHolder(self.requested, self.prefetch, self.pin, self.disk, self.embeddings, self.built)

    def plan_for(self, patcher) -> SwapPlan | None:
        """The plan this model's last sampling run used."""
        b = self.built.get(patcher.model.diffusion_model)
        return b.plan if b is not None else None

    # -- one sampling run ---------------------------------------------------------
    def run(self, patcher, executor, noise, *args, **kwargs):
        plan = self._plan(patcher, tuple(noise.shape))
        attached = []
        if plan is not None:
            _apply(patcher, plan)
            attached = attach_patches(patcher, plan)
            plan.streamer.ensure_device()
        try:
            return executor(noise, *args, **kwargs)
        finally:
            for undo in attached:
                undo()
            if plan is not None:
                plan.streamer.release_device()
                stats = plan.streamer.stats
                log.info("Wan4Step Block Swap: %d copies, %.2f GiB moved, %d stalls", stats.copies, stats.bytes / GiB,
                         stats.stalls)

    def _plan(self, patcher, latent_shape: tuple) -> SwapPlan | None:
        dm = patcher.model.diffusion_model
        device = patcher.load_device
        free = _free_for_plan(patcher) if self.requested < 0 else None
        k = choose_k(dm, self.requested, device, latent_shape, self.prefetch, free_bytes=free,
                     kind=patches.weights_kind(original(dm.blocks[0])))
        built = self.built.get(dm)
        if built is not None:
            if k == built.k or (k < built.k and latent_shape == built.latent_shape):
                return built.plan
            log.info("Wan4Step Block Swap: re-planning for latent %s%s: %d -> %d blocks streamed", list(latent_shape),
                     f" with {free / GiB:.2f} GiB free" if free is not None else "", built.k, k)
            _drop(patcher, built)
        plan = None
        if k > 0 or self.embeddings:
            # Another clone of this model (e.g. the same model with a LoRA, sampled before) may have
            # baked its patches into the shared weights; unload it so the streamed copies are pristine.
            comfy.model_management.unload_model_and_clones(patcher)
            decision = memory.pin_decision(self.pin)
            log.info("Wan4Step Block Swap: %s streamed blocks: %s", "pinning" if decision.pin else "not pinning",
                     decision.reason)
            plan = plan_swap(dm, k, device, self.prefetch, decision.pin, self.disk, self.embeddings,
                             dtype_of=patches.cast_dtype, pinner=memory.ComfyPinner() if decision.pin else None)
            log.info(plan.describe(len(dm.blocks)))
            refused = plan.streamer.pinned.refused_bytes
            if refused:
                log.warning("Wan4Step Block Swap: ComfyUI's pinned-memory budget is spent; %.2f GiB of streamed "
                            "blocks stay in pageable RAM (copies ~6x slower)", refused / GiB)
        else:
            log.info("Wan4Step Block Swap: everything fits on %s; no blocks streamed", device)
        self.built[dm] = _Built(k, latent_shape, plan)
        return plan


def _free_for_plan(patcher) -> int | None:
    """VRAM "auto" plans for (None: not a CUDA device, nothing is streamed)."""
    return memory.free_vram_for(patcher) if patcher.load_device.type == "cuda" else None


def sample_wrapper(executor, noise, *args, **kwargs):
    """OUTER_SAMPLE wrapper: the holder of the MODEL being sampled runs the sampling."""
    guider = executor.class_obj
    holder = guider.model_options.get("transformer_options", {}).get(KEY)
    if holder is None:
        return executor(noise, *args, **kwargs)
    return holder.run(guider.model_patcher, executor, noise, *args, **kwargs)


def install(model, holder: SwapHolder):
    """Give `model` (a clone the caller owns) Block Swap with these settings."""
    model.model_options["transformer_options"][KEY] = holder
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY, sample_wrapper)
    return model


def holder_of(model) -> SwapHolder | None:
    return model.model_options.get("transformer_options", {}).get(KEY)


def _stand_ins(patcher) -> dict:
    return {k: v for k, v in patcher.object_patches.items() if isinstance(v, StreamedModule)}


def _apply(patcher, plan: SwapPlan) -> None:
    """Swap the streamed modules in (object patches: ComfyUI puts them in place at load and restores
    the originals at unload) and tell model management what is really resident."""
    wanted = {f"diffusion_model.{name}": wrapped for name, wrapped in plan.patches.items()}
    current = _stand_ins(patcher)
    if current.keys() == wanted.keys() and all(current[k] is v for k, v in wanted.items()):
        return
    if current:  # stand-ins of an older plan: put the real blocks back before counting and re-patching
        comfy.model_management.unload_model_and_clones(patcher)
        for k in current:
            patcher.object_patches.pop(k, None)
        patcher.size = 0
    total = patcher.model_size()
    for k, wrapped in wanted.items():
        patcher.add_object_patch(k, wrapped)
    patcher.size = total - plan.streamed_param_bytes


def _drop(patcher, built: _Built) -> None:
    """Retire an older plan: the real blocks back in the tree, its pinned memory unlocked."""
    comfy.model_management.unload_model_and_clones(patcher)
    for k in _stand_ins(patcher):
        patcher.object_patches.pop(k)
    patcher.size = 0
    if built.plan is not None:
        built.plan.streamer.close()


def attach_patches(patcher, plan: SwapPlan) -> list:
    """ComfyUI never sees the streamed modules' weights, so it cannot patch them; give their
    LoRA (and other weight) patches to them as use-time weight functions instead, the way
    ComfyUI's own lowvram mode does, and return the undo steps (run after sampling)."""
    undo = []
    for name, wrapped in plan.patches.items():
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
