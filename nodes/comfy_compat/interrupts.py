"""ComfyUI's Cancel / POST /interrupt, checked inside long engine calls.

ComfyUI raises its interrupt only where something asks: core's ops check on every call
(`comfy.ops.run_every_op`), progress reports (progress.py: per block while sampling, per
sub-layer of a text encode, per unit of VAE work). A VAE unit is a whole upsampling stage over a
chunk of frames (seconds on a CPU: a 256x256x33 tiny-VAE decode took 16.6 s to stop on 2 cores
when only finished frames checked). `check_in(model)` adds a forward pre-hook that checks the
flag to every submodule, so a stop lands within one layer and the engine stays free of ComfyUI
imports. A check is a lock and a bool: far below the cost of any layer it guards.
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
