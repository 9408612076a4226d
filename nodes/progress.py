"""Progress of the long phases in ComfyUI's UI: the node's bar and the queue panel.

ComfyUI turns a progress report into a `progress` message and a `progress_state` message (every
node's state and value; frontend 1.49 draws the node bars and the panel's current-node percentage
from it). `comfy.utils.ProgressBar` sends through the same hook but drops updates less than
100 ms apart; a phase here reports a few dozen to a few hundred ticks in total, so `NodeProgress`
sends each tick that moves the bar by at least 1/`messages` of the way instead, whatever the
clock says (fast machines and the tiny test models see every stage too).

- sampling: `per_block` reports after every transformer block (steps x blocks ticks) through
  ComfyUI's own per-block hook (`patches["double_block"]`, read-only: it returns the block's
  output as it is) and keeps ComfyUI's per-step callback (previews);
- text encoding: `encode_ticks` counts the UMT5 encoder's attention and feed-forward layers;
- VAE decode: the engine reports units of work (wan4step/vae/tiled.py);
- download: bytes.
"""

from __future__ import annotations

from collections.abc import Callable


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


def per_block(model, steps: int, callback: Callable | None):
    """(model clone that reports after every block, sampler callback that keeps count of the steps).

    A model without a `blocks` list (not a DiT ComfyUI knows) is returned as it is."""
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    blocks = len(getattr(dm, "blocks", None) or [])
    if not blocks or steps < 1:
        return model, callback
    bar = NodeProgress(steps * blocks, messages=steps * blocks)
    state = {"step": 0}

    def after_block(args):
        bar.set(state["step"] * blocks + int(args.get("block_index", 0)) + 1)
        return {"img": args["img"]}

    def step_done(step, x0, x, total_steps):
        if callback is not None:
            callback(step, x0, x, total_steps)
        state["step"] = min(step + 1, steps)
        bar.set(state["step"] * blocks)

    m = model.clone()
    m.set_model_double_block_patch(after_block)
    return m, step_done


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
