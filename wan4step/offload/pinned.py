"""Page-locked host slabs at their exact size.

torch's pinned allocator (`pin_memory=True`) serves every request from a caching
allocator that rounds it up to a power of two. Measured on the H100 host
(bench_stream.py, docs/bench/stream_fp8_small.log): 10 streamed FP8 blocks of
0.33 GiB locked 5.0 GiB of RAM, 20 locked 10.0 GiB, i.e. 52 % more than the
weights. Registering an ordinary allocation with `cudaHostRegister` locks exactly
the bytes asked for, and the copies out of it are just as asynchronous.

The registrations belong to a `PinnedSlabs` owner that also holds the slabs, so
memory is always unregistered before it can be freed (on `close()` or when the
owner is collected); views of a slab that outlive the owner keep working as
ordinary, pageable memory.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import weakref
from typing import Protocol

import torch

log = logging.getLogger("wan4step")
PAGE = mmap.PAGESIZE


def _clear_last_error() -> None:
    """Reset the CUDA runtime's per-thread error after a failed call we handled ourselves.

    A failed `cudaHostRegister` leaves its code in `cudaGetLastError`, and torch checks
    that after every kernel launch: it would raise it later, from an unrelated kernel.
    torch binds no `cudaGetLastError`, so it is called on the runtime torch loaded
    (where the symbol is not reachable, e.g. on Windows, nothing is done).
    """
    try:
        ctypes.CDLL(None).cudaGetLastError()
    except (AttributeError, OSError, TypeError):
        pass


class CudaHostRegister:
    """The engine's own pinner: `cudaHostRegister` on the slab, nothing else to ask."""

    fallback_to_torch = True  # a refused registration still pins, through torch's rounding allocator

    def pin(self, buf: torch.Tensor) -> bool:
        if int(torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), buf.nbytes, 0)) == 0:
            return True
        _clear_last_error()
        return False

    def unpin(self, buf: torch.Tensor) -> None:
        if int(torch.cuda.cudart().cudaHostUnregister(buf.data_ptr())) != 0:
            _clear_last_error()


class HostPinner(Protocol):
    """How a host page-locks memory: `pin(buf)` locks the whole page-aligned uint8 tensor in place
    (False: leave it pageable, e.g. the host's pinned-memory budget is spent or pinning is off),
    `unpin(buf)` undoes it. ComfyUI's lives in nodes/comfy_compat/memory.py."""

    def pin(self, buf: torch.Tensor) -> bool: ...

    def unpin(self, buf: torch.Tensor) -> None: ...


def _unpin_all(pinner, bufs: list[torch.Tensor]) -> None:
    while bufs:
        pinner.unpin(bufs.pop())


class PinnedSlabs:
    """Allocates host byte slabs page-locked at their exact size (CUDA), or plain ones.

    `pinner` is the host's (ComfyUI's budget and switches); without one the engine registers the
    slabs itself, and falls back to torch's pinned allocator if CUDA refuses a registration.
    """

    def __init__(self, pin: bool, pinner: HostPinner | None = None) -> None:
        if pinner is None:
            pin = pin and torch.cuda.is_available()
            pinner = CudaHostRegister()
        self.pin = pin
        self.pinner = pinner
        self._slabs: list[torch.Tensor] = []
        self._pinned: list[torch.Tensor] = []
        self._finalizer = weakref.finalize(self, _unpin_all, pinner, self._pinned)
        self._fallback = False
        self._refused = 0
        self._bytes = 0

    def empty(self, nbytes: int) -> torch.Tensor:
        """An uninitialised uint8 host tensor of `nbytes`, page-locked when pinning was asked for."""
        if not self.pin or nbytes == 0:
            return torch.empty(nbytes, dtype=torch.uint8)
        if not self._fallback:
            # whole pages of an anonymous mapping of its own: page-aligned, so a registration never
            # shares a page with another allocation (two registrations touching one page fail) and
            # the tensor's storage starts where the registration does (torch's is_pinned() is true)
            size = -(-nbytes // PAGE) * PAGE
            buf = torch.frombuffer(mmap.mmap(-1, size), dtype=torch.uint8)  # the tensor keeps the map alive
            if self.pinner.pin(buf):
                self._slabs.append(buf)
                self._pinned.append(buf)
                self._bytes += size
                return buf[:nbytes]
            if not getattr(self.pinner, "fallback_to_torch", False):
                self._refused += size
                return buf[:nbytes]  # the host said no: stream from pageable memory
            self._fallback = True
            log.warning("wan4step: cudaHostRegister failed; pinning through torch instead, "
                        "which rounds each block up to a power of two of RAM")
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    @property
    def pinned_bytes(self) -> int:
        """Bytes locked through registration, whole pages (torch-pinned fallbacks not counted)."""
        return self._bytes

    @property
    def refused_bytes(self) -> int:
        """Bytes the host pinner refused to lock (they stream from pageable memory, ~6x slower)."""
        return self._refused

    def close(self) -> None:
        """Unlock every slab now; tensors still viewing them become ordinary host memory."""
        self._finalizer()
        self._slabs.clear()
        self._bytes = 0
