"""Two ComfyUI hooks the fused block forward needs beyond `patches_replace["dit"]`.

- Another pack's attention override (`transformer_options["optimized_attention_override"]`, set by
  `ModelPatcher.set_model_optimized_attention`): the fused block's attention then calls ComfyUI's
  `optimized_attention`, which hands the call to the override with the arguments ComfyUI's own Wan
  block passes ([B, L, H*D], heads=H).
- The running diffusion model: a DIFFUSION_MODEL wrapper puts it into the per-forward
  `transformer_options`, so a clone whose model was rebuilt (e.g. `clone(disable_dynamic=True)`,
  `clone(model_override=...)`) runs its own blocks, not the ones the forward was installed on.
"""

from __future__ import annotations

import comfy.ldm.modules.attention as comfy_attention

OVERRIDE = "optimized_attention_override"
DM_KEY = "wan4step_fast_dm"  # the running diffusion model, in the per-forward transformer_options


def comfy_attention_fn(transformer_options: dict):
    """An engine attention function ([B, H, L, D] in and out) that calls ComfyUI's
    `optimized_attention` the way ComfyUI's Wan block does, so the override in
    `transformer_options` handles the call. The layout changes are views."""

    def fn(q, k, v):
        b, h, lq, d = q.shape
        out = comfy_attention.optimized_attention(
            q.transpose(1, 2).reshape(b, lq, h * d), k.transpose(1, 2).reshape(b, k.shape[2], h * d),
            v.transpose(1, 2).reshape(b, v.shape[2], h * d), heads=h, transformer_options=transformer_options)
        return out.view(b, lq, h, d).transpose(1, 2)

    return fn


def diffusion_model_wrapper(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper (WanModel.forward's transformer_options is its 6th argument)."""
    topts = kwargs.get("transformer_options")
    if topts is None:
        topts = args[5] if len(args) > 5 else None
    if isinstance(topts, dict):
        topts[DM_KEY] = executor.class_obj
    return executor(*args, **kwargs)
