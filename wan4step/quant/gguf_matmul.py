"""y = x W^T + b with W in a ggml block encoding.

Today: decode W to x.dtype on x's device, then one cuBLAS/CPU matmul. At the
14B shapes with M = 32,760 tokens the matmul is 2-6 ms and the decode is
memory-bound (read ~0.6 bytes, write 2 bytes per weight), so the decode is
what a kernel can shave; `scripts/bench_gguf.py` measures both.

Kernel dispatch lives in `_DEQUANT_KERNELS` (one-pass Triton decoders that write
bf16/fp16 directly, CUDA only) and `_FUSED_LINEARS` (fused dequant-matmul
kernels, none yet): a type missing from a table falls back to the torch path,
which is bit-exact vs gguf's numpy reference, and so are the Triton decoders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .gguf_dequant import dequantize, type_name

# qtype -> fn(data, shape, dtype) -> weight; filled lazily on the first CUDA call
_DEQUANT_KERNELS: dict[int, Callable[[torch.Tensor, Sequence[int], torch.dtype], torch.Tensor]] = {}
# qtype -> fn(x, data, shape, bias) -> y; fused dequant-matmul kernels (a later task)
_FUSED_LINEARS: dict[int, Callable[..., torch.Tensor]] = {}
_kernels_loaded = False
_CHECKED: set[int] = set()  # types whose Triton decoder passed `_self_check`
log = logging.getLogger("wan4step")

# WAN4STEP_GGUF_TRITON=0 forces the torch decoders (for A/B checks and bug reports)
_USE_TRITON = os.environ.get("WAN4STEP_GGUF_TRITON", "1") != "0"


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
    """Once per type and process: the kernel must match the torch decoder bit for bit on this GPU.

    A Triton build that fails to compile (no C compiler on Windows, an old
    driver) or rounds differently drops back to the torch path with a warning
    instead of producing different weights.
    """
    from .gguf_encode import random_raw

    try:
        raw = random_raw(qtype, (4, 512), device=device, generator=torch.Generator(device=device).manual_seed(0))
        for dtype in (torch.bfloat16, torch.float16):
            if not torch.equal(kernel(raw, (4, 512), dtype).view(torch.int16), dequantize(raw, qtype, (4, 512), dtype).view(torch.int16)):
                raise ValueError("differs from the torch decoder")
        return True
    except Exception as e:  # noqa: BLE001 - any failure means: use the torch decoder
        log.warning("wan4step: Triton GGUF decoder for %s disabled (%s); using the torch decoder", type_name(qtype), e)
        return False


def dequantize_on_device(data: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """`dequantize`, through a one-pass Triton kernel where one exists for this type on CUDA."""
    if data.is_cuda and dtype in (torch.bfloat16, torch.float16):
        if not _kernels_loaded:
            _load_kernels()
        qtype = int(qtype)
        kernel = _DEQUANT_KERNELS.get(qtype)
        if kernel is not None and qtype not in _CHECKED:
            if not _self_check(qtype, kernel, data.device):
                _DEQUANT_KERNELS.pop(qtype, None)
                kernel = None
            _CHECKED.add(qtype)
        if kernel is not None:
            return kernel(data, shape, dtype)
    return dequantize(data, qtype, shape, dtype)


def gguf_linear(
    x: torch.Tensor, data: torch.Tensor, qtype: int, shape: Sequence[int], bias: torch.Tensor | None = None
) -> torch.Tensor:
    """F.linear(x, decode(data), bias) with the weight decoded to x.dtype on x.device."""
    fused = _FUSED_LINEARS.get(int(qtype)) if x.is_cuda else None
    if fused is not None:
        return fused(x, data, shape, bias)
    w = dequantize_on_device(data, qtype, shape, x.dtype)
    return F.linear(x, w, bias)
