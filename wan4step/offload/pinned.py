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


def _unregister(ptrs: list[int]) -> None:
    while ptrs:
        if int(torch.cuda.cudart().cudaHostUnregister(ptrs.pop())) != 0:
            _clear_last_error()


class PinnedSlabs:
    """Allocates host byte slabs page-locked at their exact size (CUDA), or plain ones."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin and torch.cuda.is_available()
        self._slabs: list[torch.Tensor] = []
        self._ptrs: list[int] = []
        self._finalizer = weakref.finalize(self, _unregister, self._ptrs)
        self._fallback = False
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
            err = int(torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), size, 0))
            if err == 0:
                self._slabs.append(buf)
                self._ptrs.append(buf.data_ptr())
                self._bytes += size
                return buf[:nbytes]
            self._fallback = True
            _clear_last_error()
            log.warning("wan4step: cudaHostRegister failed (cudaError %d); pinning through torch instead, "
                        "which rounds each block up to a power of two of RAM", err)
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    @property
    def pinned_bytes(self) -> int:
        """Bytes locked through registration, whole pages (torch-pinned fallbacks not counted)."""
        return self._bytes

    def close(self) -> None:
        """Unlock every slab now; tensors still viewing them become ordinary host memory."""
        self._finalizer()
        self._slabs.clear()
        self._bytes = 0
