"""Pack all tensors of a module into one flat byte slab, and view them back out.

One slab per block means one host->device copy per block (one DMA, full PCIe
bandwidth) and one GPU buffer that any block fits into; the views are plain
`uint8 -> dtype` reinterpretations, so moving a block never allocates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ALIGN = 256  # bytes; keeps every tensor 16-byte aligned for vector loads and _scaled_mm


@dataclass(frozen=True)
class Entry:
    owner: torch.nn.Module
    name: str
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass
class ModuleLayout:
    entries: list[Entry]
    total: int

    def views(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """Typed tensors over `buf` (a uint8 slab at least `total` long), one per entry."""
        out = []
        for e in self.entries:
            v = buf.narrow(0, e.offset, e.nbytes)
            out.append(v.view(e.dtype).view(e.shape) if e.nbytes else torch.empty(e.shape, dtype=e.dtype, device=buf.device))
        return out

    def bind(self, views: list[torch.Tensor]) -> None:
        """Point every parameter/buffer at `views` (no copy, no allocation)."""
        for e, v in zip(self.entries, views, strict=True):
            getattr(e.owner, e.name).data = v

    def current(self) -> list[torch.Tensor]:
        return [getattr(e.owner, e.name) for e in self.entries]


def _real_shape(t: torch.Tensor) -> tuple[int, ...]:
    # torch.Tensor.size is the storage's shape even for subclasses that override
    # `.shape` with a logical one (ComfyUI-GGUF's GGMLTensor does).
    return tuple(torch.Tensor.size(t))


# host hook: fn(owner module, parameter name) -> the dtype the host computes that tensor in, or None
DtypeOf = Callable[[torch.nn.Module, str], "torch.dtype | None"]


def stream_dtype(owner: torch.nn.Module, name: str, t: torch.Tensor, dtype_of: DtypeOf | None = None) -> torch.dtype:
    """The dtype a tensor is streamed (and computed) in.

    A host may keep weights in the file's dtype and cast them at use (ComfyUI's DynamicVRAM does,
    e.g. a bf16 file run as fp16); it never sees a streamed module, so `dtype_of` tells the
    streamer that dtype and a plain float tensor is cast once, when it is packed: the same weights
    the host would compute with. Quantized storage (FP8/INT8 codes, GGUF bytes, tensor subclasses)
    is never touched.
    """
    want = dtype_of(owner, name) if dtype_of is not None else None
    if (
        isinstance(want, torch.dtype)
        and want.is_floating_point
        and want.itemsize >= 2
        and t.dtype.is_floating_point
        and t.dtype.itemsize >= 2
        and type(t) in (torch.Tensor, torch.nn.Parameter)
    ):
        return want
    return t.dtype


def layout_of(module: torch.nn.Module, dtype_of: DtypeOf | None = None) -> ModuleLayout:
    entries: list[Entry] = []
    offset = 0
    for owner in module.modules():
        for name, t in list(owner._parameters.items()) + list(owner._buffers.items()):
            if t is None:
                continue
            dtype = stream_dtype(owner, name, t, dtype_of)
            nbytes = t.numel() * dtype.itemsize
            entries.append(Entry(owner, name, offset, nbytes, dtype, _real_shape(t)))
            offset += -(-nbytes // ALIGN) * ALIGN
    return ModuleLayout(entries, offset)


def plain(t: torch.Tensor) -> torch.Tensor:
    """The same storage as a plain tensor (drops Parameter / GGMLTensor wrappers and their overrides)."""
    return torch.Tensor.as_subclass(t.detach() if type(t) is torch.nn.Parameter else t, torch.Tensor)


def pack_into(layout: ModuleLayout, slab: torch.Tensor) -> None:
    """Copy the module's current tensors into `slab` (byte-exact, any dtype incl. fp8/ggml bytes;
    cast only where `stream_dtype` asks for it)."""
    for e, t in zip(layout.entries, layout.current(), strict=True):
        if e.nbytes:
            src = plain(t).contiguous()
            if src.dtype != e.dtype:
                src = src.to(e.dtype)
            slab.narrow(0, e.offset, e.nbytes).copy_(src.reshape(-1).view(torch.uint8))
