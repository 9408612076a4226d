"""Progress of the long phases in ComfyUI's UI: the node's bar and the queue panel.

ComfyUI turns a progress report into a `progress` message and a `progress_state` message (every
node's state and value; frontend 1.49 draws the node bars and the panel's current-node percentage
from it). `comfy.utils.ProgressBar` sends through the same hook but drops updates less than
100 ms apart; a phase here reports a few dozen to a few hundred ticks in total, so `NodeProgress`
sends each tick that moves the bar by at least 1/`messages` of the way instead, whatever the
clock says (fast machines and the tiny test models see every stage too).

- sampling: `sample_custom` reports after every transformer block (steps x blocks ticks) through
  ComfyUI's own per-block hook (`patches["double_block"]`, read-only: it returns the block's
  output as it is) and keeps ComfyUI's per-step callback (previews);
- text encoding: `EncodeTicks` counts the UMT5 encoder's attention and feed-forward layers;
- VAE decode: the engine reports units of work (wan4step/vae/tiled.py);
- download: bytes.
"""

from __future__ import annotations


class NodeProgress:
    """Report `done` of `total` units for the node ComfyUI is running (or `node_id`)."""

    def __init__(self, total: int, node_id: str | None = None, messages: int = 100) -> None:
        self.total = max(int(total), 1)
        self.node_id = node_id
        self.every = max(1, self.total // max(1, messages))
        self.done = 0
        self.sent = -1

    def set(self, done: float) -> None:
        import comfy.model_management
        import comfy.utils

        comfy.model_management.throw_exception_if_processing_interrupted()
        done = min(max(int(done), self.done), self.total)  # never backwards
        self.done = done
        if done == self.sent or (done < self.total and self.sent >= 0 and done - self.sent < self.every):
            return
        hook = comfy.utils.PROGRESS_BAR_HOOK  # ComfyUI's progress hook (what ProgressBar calls)
        if hook is not None:
            hook(done, self.total, None, node_id=self.node_id)
        self.sent = done

    def add(self, units: float = 1) -> None:
        self.set(self.done + units)


def _with_block_patch(model_options: dict, patch) -> dict:
    """A copy of `model_options` with `patch` added to ComfyUI's per-block hooks (nothing shared
    with the original is changed)."""
    import comfy.model_patcher

    opts = comfy.model_patcher.create_model_options_clone(model_options)
    to = dict(opts.get("transformer_options") or {})
    patches = dict(to.get("patches") or {})
    patches["double_block"] = [*patches.get("double_block", []), patch]
    to["patches"] = patches
    opts["transformer_options"] = to
    return opts


def sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, noise_mask=None,
                  callback=None, seed=None):
    """Sample like `comfy.sample.sample_custom`, reporting progress after every transformer block.

    The per-block hook goes into the guider's own copy of the model options, so the MODEL (and
    what Block Swap attached to it) is used as it is; ComfyUI's per-step `callback` (previews) is
    kept. A model without a `blocks` list (not a DiT ComfyUI knows) gets the plain per-step bar."""
    import comfy.model_management
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    steps = len(sigmas) - 1
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    blocks = len(getattr(dm, "blocks", None) or [])
    if blocks and steps >= 1:
        bar = NodeProgress(steps * blocks, messages=steps * blocks)
        state = {"step": 0}

        def after_block(args):
            bar.set(state["step"] * blocks + int(args.get("block_index", 0)) + 1)
            return {"img": args["img"]}

        step_callback = callback

        def callback(step, x0, x, total_steps):  # noqa: F811 - the sampler's callback, counting steps
            if step_callback is not None:
                step_callback(step, x0, x, total_steps)
            state["step"] = min(step + 1, steps)
            bar.set(state["step"] * blocks)

        guider.model_options = _with_block_patch(model.model_options, after_block)
    samples = guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=noise_mask, callback=callback, seed=seed)
    return samples.to(device=comfy.model_management.intermediate_device(),
                      dtype=comfy.model_management.intermediate_dtype())


class EncodeTicks:
    """Progress of one text encode: start, each layer's attention and feed-forward, final norm.

    Forward hooks on the norms that open each sub-layer (ComfyUI's T5 names:
    encoder.block[i].layer[0|1].layer_norm, encoder.final_layer_norm: the modules the encoder
    calls); `start()` opens a bar for the running node, the hooks tick it, `stop()` fills it."""

    def __init__(self, encoder) -> None:
        self.bar: NodeProgress | None = None
        self.units = 1
        stack = getattr(encoder, "encoder", None)
        norms = [getattr(sub, "layer_norm", None) for blk in getattr(stack, "block", []) for sub in blk.layer]
        norms.append(getattr(stack, "final_layer_norm", None))
        for norm in norms:
            if norm is not None:
                norm.register_forward_hook(self._tick)
                self.units += 1

    def _tick(self, *_args) -> None:
        if self.bar is not None:
            self.bar.add(1)

    def start(self) -> None:
        self.bar = NodeProgress(self.units, messages=self.units)
        self.bar.set(1)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.set(self.units)
        self.bar = None
