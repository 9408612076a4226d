"""Stand-in modules that stream their inner module's weights around each call.

A `StreamedModule` replaces a block in the model's ModuleList. It does not
register the block as a child, so anything walking the module tree (ComfyUI's
model management, `.to()`, memory accounting) sees no streamed weights and
never moves them; only the streamer does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .streamer import BlockStreamer


class StreamedModule(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, streamer: BlockStreamer, index: int) -> None:
        super().__init__()
        object.__setattr__(self, "inner", inner)  # deliberately not a registered child
        self.streamer = streamer
        self.index = index

    def forward(self, *args, **kwargs):
        with on_device(self) as block:
            return block(*args, **kwargs)

    def __getattr__(self, name: str):
        # attribute reads (dim, num_heads, ...) go to the real block
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "inner"), name)

    def extra_repr(self) -> str:
        return f"streams {type(self.inner).__name__} #{self.index}"


@contextmanager
def on_device(block: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The real module with its weights on the compute device for the duration of the block:
    a streamed stand-in is entered and exited around it, anything else is yielded as is."""
    if not isinstance(block, StreamedModule):
        yield block
        return
    block.streamer.enter(block.index)
    try:
        yield block.inner
    finally:
        block.streamer.exit(block.index)


def stream_modules(
    modules: list[torch.nn.Module], device, prefetch: int = 2, pin: bool = True, disk: bool = False, **hooks
) -> tuple[BlockStreamer, list[StreamedModule]]:
    """Stand-ins for `modules` around one streamer; `hooks` are BlockStreamer's dtype_of / pinner."""
    streamer = BlockStreamer(modules, device, prefetch=prefetch, pin=pin, disk=disk, **hooks)
    return streamer, [StreamedModule(m, streamer, i) for i, m in enumerate(modules)]
