"""ComfyUI's Cancel / POST /interrupt, checked inside long engine calls (adapter side).

ComfyUI raises its interrupt only where something asks: core's ops check on every call
(`comfy.ops.run_every_op`), the progress hook once per step, this pack's fused forward once
per block. The engine's VAE and UMT5 run their own modules, so a decode or a CPU text encode
did not stop until it finished (a 320x320x41 tiny-VAE decode took 4.6 s to stop on 2 cores).
`check_in(model)` adds a forward pre-hook that checks the flag to every submodule, so the
engine stays free of ComfyUI imports and a stop lands within one layer. A check is a lock and
a bool: far below the cost of any layer it guards.
"""

from __future__ import annotations

import torch

_MARK = "_wan4step_interrupt_hooks"


def _check(_module, _args) -> None:
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def check_in(model: torch.nn.Module) -> torch.nn.Module:
    """Make every module call under `model` a point where ComfyUI's interrupt is raised (once per model)."""
    if getattr(model, _MARK, False):
        return model
    for m in model.modules():
        m.register_forward_pre_hook(_check)
    setattr(model, _MARK, True)
    return model
