"""ComfyUI's memory rules, handed to the engine as its small interfaces.

- Pinned memory: ComfyUI page-locks host memory only while `--disable-pinned-memory` is off and
  within a budget (`model_management.MAX_PINNED_MEMORY`, ~40-90 % of RAM on NVIDIA/AMD, none
  elsewhere), counting every lock in `TOTAL_PINNED_MEMORY` and freeing other models' locks to
  make room. Block Swap's slabs go through the same `pin_memory` / `unpin_memory`, so they count
  in that budget and obey the switch (`ComfyPinner`, `pin_decision`).
- Free VRAM for Block Swap's plan: ComfyUI's own count (`get_free_memory`: CUDA's free bytes plus
  torch's cached-but-unused ones) plus what the model being planned holds on the GPU already.
- Interrupts: ComfyUI's cancel exception must never switch an engine fast path off
  (`wan4step.fallback.propagate_also`, registered when this module is imported).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_management as mm
import torch
from comfy.cli_args import args

from ...wan4step import fallback

log = logging.getLogger("wan4step")
GiB = 1024**3

fallback.propagate_also(mm.InterruptProcessingException)


@dataclass(frozen=True)
class PinDecision:
    pin: bool
    reason: str


def pin_decision(asked: bool) -> PinDecision:
    """Whether Block Swap may page-lock its slabs here, and why (for the log)."""
    if not asked:
        return PinDecision(False, "pin_memory is off on the node")
    if args.disable_pinned_memory:
        return PinDecision(False, "ComfyUI runs with --disable-pinned-memory")
    if mm.MAX_PINNED_MEMORY <= 0:
        return PinDecision(False, "ComfyUI keeps no pinned-memory budget on this machine (pinning is for NVIDIA/AMD GPUs)")
    left = max(0, mm.MAX_PINNED_MEMORY - mm.TOTAL_PINNED_MEMORY)
    return PinDecision(True, f"within ComfyUI's pinned-memory budget ({left / GiB:.1f} of "
                             f"{mm.MAX_PINNED_MEMORY / GiB:.1f} GiB free)")


class ComfyPinner:
    """`wan4step.offload.pinned.HostPinner` through ComfyUI's own page-locking: each slab counts in
    ComfyUI's budget, may first free other models' locks, and is refused once the budget is spent
    (that slab then streams from pageable RAM)."""

    def pin(self, buf: torch.Tensor) -> bool:
        size = buf.nbytes
        if mm.MAX_PINNED_MEMORY <= 0:
            return False
        if mm.TOTAL_PINNED_MEMORY + size > mm.MAX_PINNED_MEMORY:
            free_room = getattr(mm, "ensure_pin_registerable", None)
            if free_room is not None:
                free_room(size)
            if mm.TOTAL_PINNED_MEMORY + size > mm.MAX_PINNED_MEMORY:
                return False
        return bool(mm.pin_memory(buf))

    def unpin(self, buf: torch.Tensor) -> None:
        mm.unpin_memory(buf)


def free_vram_for(patcher) -> int:
    """Bytes a model could use on its device now: ComfyUI's free count plus what it holds there already."""
    return int(mm.get_free_memory(patcher.load_device)) + int(patcher.loaded_size())


def interrupt_point() -> None:
    """ComfyUI's cancel check (raises its InterruptProcessingException)."""
    mm.throw_exception_if_processing_interrupted()
