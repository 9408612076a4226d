"""y = x W^T + b with W in a ggml block encoding.

Today: decode W to x.dtype on x's device, then one cuBLAS/CPU matmul. At the
14B shapes with M = 32,760 tokens the matmul is 2-6 ms and the decode is
memory-bound (read ~0.6 bytes, write 2 bytes per weight), so the decode is
what a kernel can shave; `scripts/bench_gguf.py` measures both.

Kernel dispatch lives in `_DEQUANT_KERNELS` (one-pass Triton decoders that write
bf16/fp16 directly, CUDA only) and `_FUSED_LINEARS` (`gguf_fused`: one Triton
kernel decoding W tiles in registers straight into the matmul, Q8_0/Q4_K/Q5_K/
Q6_K): a type missing from a table falls back to the torch path, which is
bit-exact vs gguf's numpy reference, and so are the Triton decoders.

The fused kernel is off unless WAN4STEP_GGUF_FUSED=1: it skips the decode's
2-byte-per-weight write and read-back, but re-decodes each W tile once per
BLOCK_M rows of x, which competes with the tensor cores that cuBLAS keeps busy.
`scripts/bench_gguf_fused.py` on the H100 measured it 1.4-6x slower than
decode + cuBLAS at every 14B shape for M = 512..32,760, where decode + cuBLAS
is already about 1.1x a resident bf16 weight (M >= 5184); it stays
opt-in until a version beats that. When on, each (type, dtype) is
checked on first CUDA use against decode + F.linear (an identity x must give
the decoded weight exactly; random x within `linear_tolerance`) at one M per
config it may pick, and a mismatch or a Triton error disables it for that
type, with one warning, back to decode + matmul.
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
# qtype -> fn(x, data, shape, bias) -> y; fused dequant-matmul kernels, filled lazily when enabled
_FUSED_LINEARS: dict[int, Callable[..., torch.Tensor]] = {}
_kernels_loaded = False
_fused_loaded = False
# qtypes whose Triton decoder failed `_self_check` (or a launch) here
_DECODERS = switch("Triton GGUF decoder", "the torch decoder")
_DECODERS_OFF, _DECODERS_CHECKED = _DECODERS.off, _DECODERS.checked  # hot-path aliases (sets, updated in place)
# (qtype, x dtype) whose fused kernel failed `_fused_self_check` (or a launch) here
_FUSED = switch("fused GGUF linear", "decode + matmul")
log = logging.getLogger("wan4step")

# settings.py: WAN4STEP_GGUF_TRITON=0 forces the torch decoders (A/B checks, bug reports) and turns
# the fused kernel off; WAN4STEP_GGUF_FUSED=1 turns the fused dequant-matmul on
_USE_TRITON = SETTINGS.gguf_triton
_USE_FUSED = SETTINGS.gguf_fused


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


def _load_fused() -> None:
    global _fused_loaded
    _fused_loaded = True
    if not (_USE_TRITON and _USE_FUSED):
        return
    try:
        from .gguf_fused import FUSED_LINEARS
    except Exception as e:  # noqa: BLE001 - no triton: decode + matmul, same numbers
        log.warning("wan4step: fused GGUF linear unavailable (%s); using decode + matmul", e)
        return
    _FUSED_LINEARS.update(FUSED_LINEARS)


def _fused_self_check(qtype: int, fn, device: torch.device, dtype: torch.dtype) -> bool:
    """The fused kernel must agree with decode + F.linear here (fallback.attempt: logs a refusal,
    re-raises OOM and interrupts).

    x = identity gives the decoded weight itself (one exact product per output), so any decode
    error shows bit for bit; random x with a bias at one M per row of `gguf_fused.CONFIG_TABLE`
    must stay within `linear_tolerance`. A Triton build that fails to compile or disagrees falls
    back to decode + matmul with a warning.
    """
    from .gguf_encode import random_raw
    from .gguf_fused import CHECK_M, linear_tolerance

    def probe() -> None:
        n, k = 64, 256
        g = torch.Generator(device=device).manual_seed(0)
        raw = random_raw(qtype, (n, k), device=device, generator=g)
        w = dequantize(raw, qtype, (n, k), dtype)
        eye = torch.eye(k, dtype=dtype, device=device)
        if not torch.equal(fn(eye, raw, (n, k), None), w.T):
            raise ValueError("decodes differently from the torch decoder")
        b = torch.randn(n, generator=g, device=device).to(dtype)
        for m in CHECK_M:
            x = torch.randn(m, k, generator=g, device=device).to(dtype)
            y = fn(x, raw, (n, k), b)
            want = F.linear(x, w, b)
            _, bound = linear_tolerance(x, w, b, dtype)
            if not ((y.double() - want.double()).abs() <= bound).all():
                raise ValueError(f"differs from decode + F.linear beyond rounding at M={m}")

    return attempt(probe, f"fused GGUF linear for {type_name(qtype)}", _FUSED.fallback)


def _fused_for(qtype: int, x: torch.Tensor) -> Callable[..., torch.Tensor] | None:
    """The checked fused kernel for this type and x, or None (CPU, fp32, off, failed its check)."""
    if not (x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)):
        return None
    if not _fused_loaded:
        _load_fused()
    fn = _FUSED_LINEARS.get(qtype)
    if fn is None:
        return None
    key = (qtype, x.dtype)
    if key in _FUSED.off:
        return None
    if key not in _FUSED.checked and not _FUSED.check_once(key, lambda: _fused_self_check(qtype, fn, x.device, x.dtype)):
        return None
    return fn


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
    """F.linear(x, decode(data), bias): fused where enabled and checked, else W decoded to x.dtype + matmul."""
    qtype = int(qtype)
    fused = _fused_for(qtype, x)
    if fused is not None:
        try:
            return fused(x, data, shape, bias)
        except Exception as e:  # noqa: BLE001 - e.g. a config the first-use check did not compile
            _FUSED.fail((qtype, x.dtype), e, f"fused GGUF linear for {type_name(qtype)}")
    w = dequantize_on_device(data, qtype, shape, x.dtype)
    return F.linear(x, w, bias)
