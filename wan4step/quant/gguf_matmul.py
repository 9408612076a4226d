"""y = x W^T + b with W in a ggml block encoding: W decoded to x.dtype on x's device, then one matmul.

At the 14B shapes with M = 32,760 tokens the matmul is 2-6 ms and the decode is memory-bound
(read ~0.6 bytes, write 2 bytes per weight), so the decode is what a kernel can shave;
`scripts/bench_gguf.py` measures both. Decode + cuBLAS costs about 1.1x a resident bf16 weight
at M >= 5184.

Kernel dispatch lives in `_DEQUANT_KERNELS` (one-pass Triton decoders that write bf16/fp16
directly, CUDA only): a type missing from the table falls back to the torch path, which is
bit-exact vs gguf's numpy reference, and so are the Triton decoders.

A fused dequant-matmul (W tiles decoded in registers straight into `tl.dot`) was built and
measured 2-6x slower than decode + cuBLAS at every 14B shape on the H100 (each W tile is decoded
again per block of x rows, competing with the tensor cores); it was removed (docs/BENCHMARKS.md,
"GGUF linears").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..fallback import attempt, switch
from ..settings import SETTINGS
from .gguf_dequant import dequantize, type_name

# qtype -> fn(data, shape, dtype) -> weight; filled lazily on the first CUDA call
_DEQUANT_KERNELS: dict[int, Callable[[torch.Tensor, Sequence[int], torch.dtype], torch.Tensor]] = {}
_kernels_loaded = False
# qtypes whose Triton decoder failed `_self_check` (or a launch) here
_DECODERS = switch("Triton GGUF decoder", "the torch decoder")
_DECODERS_OFF, _DECODERS_CHECKED = _DECODERS.off, _DECODERS.checked  # hot-path aliases (sets, updated in place)
log = logging.getLogger("wan4step")

# settings.py: WAN4STEP_GGUF_TRITON=0 forces the torch decoders (A/B checks, bug reports)
_USE_TRITON = SETTINGS.gguf_triton


def _load_kernels() -> None:
    global _kernels_loaded
    _kernels_loaded = True
    if not _USE_TRITON:
        return
    try:
        from .gguf_triton import TRITON_DECODERS
    except Exception:  # no triton (Windows without triton-windows, CPU builds): torch path, same numbers
        return
    _DEQUANT_KERNELS.update(TRITON_DECODERS)


def _self_check(qtype: int, kernel, device: torch.device) -> bool:
    """The kernel must match the torch decoder bit for bit on this GPU (fallback.attempt: logs a
    refusal, re-raises OOM and interrupts).

    A Triton build that fails to compile (no C compiler on Windows, an old
    driver) or rounds differently drops back to the torch path with a warning
    instead of producing different weights.
    """
    from .gguf_encode import random_raw

    def probe() -> None:
        raw = random_raw(qtype, (4, 512), device=device, generator=torch.Generator(device=device).manual_seed(0))
        for dtype in (torch.bfloat16, torch.float16):
            if not torch.equal(kernel(raw, (4, 512), dtype).view(torch.int16), dequantize(raw, qtype, (4, 512), dtype).view(torch.int16)):
                raise ValueError("differs from the torch decoder")

    return attempt(probe, f"Triton GGUF decoder for {type_name(qtype)}", _DECODERS.fallback)


def dequantize_on_device(data: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """`dequantize`, through a one-pass Triton kernel where one exists for this type on CUDA."""
    if data.is_cuda and dtype in (torch.bfloat16, torch.float16):
        if not _kernels_loaded:
            _load_kernels()
        qtype = int(qtype)
        kernel = _DEQUANT_KERNELS.get(qtype)
        if kernel is not None and qtype not in _DECODERS_OFF and (
                qtype in _DECODERS_CHECKED or _DECODERS.check_once(qtype, lambda: _self_check(qtype, kernel, data.device))):
            return kernel(data, shape, dtype)
    return dequantize(data, qtype, shape, dtype)


def gguf_linear(
    x: torch.Tensor, data: torch.Tensor, qtype: int, shape: Sequence[int], bias: torch.Tensor | None = None
) -> torch.Tensor:
    """F.linear(x, decode(data), bias): W decoded to x.dtype on x's device, then one matmul."""
    w = dequantize_on_device(data, int(qtype), shape, x.dtype)
    return F.linear(x, w, bias)
