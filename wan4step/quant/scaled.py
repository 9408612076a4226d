"""LightX2V's row-wise FP8/INT8 weights and the W8A8 matmul that uses them.

Weights (`quantize_rowwise`) — LightX2V tools/convert/quant/quant.py
(`QuantWeightFP8.load_fp8_weight`, `QuantWeightINT8.load_int8_weight`, the same
code since tools/convert/converter.py `quantize_tensor` of July 2025), applied to
the 2-D `self_attn`/`cross_attn`/`ffn` weights of every block, computed in the
source tensor's dtype (bf16 for the released checkpoints):

    amax  = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-5)
    scale = amax / qmax                       qmax = 127 (INT8) or 448 (FP8 e4m3fn)
    INT8: q = clamp(round(w / scale), -128, 127).to(int8)      round = half to even
    FP8:  q = qtorch.float_quantize(clip(w / scale, -448, 448).float(), exp=4, man=3,
                                    rounding="nearest").to(float8_e4m3fn)
    stored: `<linear>.weight` = q [out, in], `<linear>.weight_scale` = scale [out, 1]
    in the source dtype (bf16 scales for a bf16 source).

qtorch (0.3.0, quant_cpu.cpp / float_kernel.cu `float_quantize`) rounds "nearest"
by adding half an ulp to the fp32 bit pattern and truncating: ties go AWAY from
zero, not to even as `.to(float8_e4m3fn)` would; below 2**-6 it adds and removes
2**-6 around that rounding so subnormals land on the 2**-9 grid. Ties are common
here (a bf16 quotient has 8 significant bits, e4m3 keeps 4), so this module
reproduces qtorch bit for bit instead of calling torch's cast. The arithmetic is
the converter's own torch ops in the same order, so the result is what the
converter gives on the same device (on CUDA torch computes `t / 448` as
`t * (1/448)`; the converter's default device was CUDA).

Compute (`scaled_linear`), W8A8 with dynamic per-token activation scales
(act_quant.py documents the activation rounding):
    y = (acc * scale_x[m]) * scale_w[n] + bias,   acc = sum_k q_x[m, k] * q_w[n, k]
- FP8 on CUDA sm_89+: `torch._scaled_mm` (cuBLASLt, row-wise fp32 scales, bf16
  out, bias fused, fast accumulation as in LightX2V's fp8-sgl / fp8-torchao
  paths, whose sm90 CUTLASS kernels are the FP8FastAccum schedules).
- INT8 on CUDA sm_80+: `torch._int_mm` (int32 accumulators, exact) and one fused
  Triton epilogue for the rescale + bias + cast.
- Everywhere else (CPU; FP8 on sm_86 and older; shapes the kernels refuse):
  W8A8 emulation. The activations are quantized exactly as on the fast path,
  then the 8-bit codes (exactly representable in bf16 and fp32) are multiplied in
  float and rescaled. We emulate W8A8 instead of running a dequantized weight
  against bf16 activations (W8A16) so that a picture does not depend on the GPU
  it was made on: every device computes LightX2V's W8A8 numbers, up to the
  summation order of the accumulator. LightX2V has no W8A16 path for these files
  either: its fp8 schemes all quantize the activations.
"""

from __future__ import annotations

import functools

import torch

from ..errors import UnsupportedQuantError
from ..fallback import switch
from .act_quant import HAVE_TRITON, quantize_act
from .weights import FP8, INT8

FP8_MAX = 448.0
INT8_MAX = 127
USE_FAST_ACCUM = True  # what LightX2V's sm90 FP8 kernels (sgl-kernel, vllm CUTLASS FP8FastAccum) do

_EMULATE, _SCALED_MM, _INT_MM = "emulate", "scaled_mm", "int_mm"
# (cuda index, kind) whose native kernel raised once (an old cuBLASLt, a shape the library refuses)
_NATIVE = switch("native W8A8 matmul", "W8A8 emulation")
_broken = _NATIVE.off


# -- weights -------------------------------------------------------------------
def _qtorch_e4m3_nearest(x: torch.Tensor) -> torch.Tensor:
    """qtorch float_quantize(x, exp=4, man=3, 'nearest') for float32 |x| <= 448 (as float32)."""
    bits = x.view(torch.int32)
    half, keep = 1 << 19, ~((1 << 20) - 1)  # 23 - 3 mantissa bits dropped
    normal = ((bits + half) & keep).view(torch.float32)
    exp = ((bits >> 23) & 0xFF) - 127
    shift = torch.where(bits < 0, -(2.0**-6), 2.0**-6).to(torch.float32)
    shifted = (x + shift).view(torch.int32)
    sub = ((shifted + half) & keep).view(torch.float32) - shift
    # |x| <= 448 after the converter's clip, so qtorch's exponent clipping (at 480) never fires
    return torch.where(exp < -6, sub, normal)


@torch.no_grad()
def quantize_rowwise(w: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(q [out, in], scale [out, 1] in w.dtype), exactly as LightX2V's converter makes them."""
    if w.dim() != 2:
        raise ValueError(f"quantize_rowwise expects a 2-D weight, got {tuple(w.shape)}")
    if not w.is_floating_point():
        raise ValueError(f"quantize_rowwise expects a float weight, got {w.dtype}")
    amax = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-5)
    if kind == INT8:
        scale = amax / INT8_MAX
        q = torch.clamp(torch.round(w / scale), -128, 127).to(torch.int8)
    elif kind == FP8:
        scale = amax / FP8_MAX
        scaled = torch.clip(w / scale, -FP8_MAX, FP8_MAX)
        q = _qtorch_e4m3_nearest(scaled.float().contiguous()).to(torch.float8_e4m3fn)
    else:
        raise UnsupportedQuantError(f"unknown row-wise quant kind {kind!r}", expected="'fp8' or 'int8'")
    return q.reshape(w.shape), scale.view(w.shape[0], -1)


def dequantize_rowwise(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """q * scale row by row, in float32, then cast (used for LoRA patching and the W8A16 debug path)."""
    return (q.to(torch.float32) * scale.to(torch.float32).reshape(q.shape[0], 1)).to(dtype)


# -- compute -------------------------------------------------------------------
@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def pick_path(device: torch.device, kind: str, k: int, n: int) -> str:
    """Which implementation `scaled_linear` uses for this device, kind and weight shape."""
    if device.type != "cuda":
        return _EMULATE
    index = device.index if device.index is not None else torch.cuda.current_device()
    if (index, kind) in _broken:
        return _EMULATE
    cap = _capability(index)
    if kind == FP8 and cap >= (8, 9) and k % 16 == 0 and n % 16 == 0:
        return _SCALED_MM
    if kind == INT8 and cap >= (8, 0) and k % 8 == 0 and n % 8 == 0:
        return _INT_MM
    return _EMULATE


def scaled_linear(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, kind: str
) -> torch.Tensor:
    """y = x W^T + b with W = q * scale (row-wise) and x quantized per token (W8A8).

    x: [..., in] float; q: [out, in] float8_e4m3fn or int8; scale: [out, 1] any
    float dtype; bias: [out] or None. Returns x.dtype.
    """
    _check_kind(kind)
    n, k = q.shape
    if x.shape[-1] != k:
        raise ValueError(f"input has {x.shape[-1]} features, the weight expects {k}")
    lead = x.shape[:-1]
    xq, sa = quantize_act(x.reshape(-1, k), kind)
    return scaled_matmul(xq, sa, q, scale, bias, kind, x.dtype).reshape(*lead, n)


def _check_kind(kind: str) -> None:
    if kind not in (FP8, INT8):
        raise UnsupportedQuantError(f"scaled_linear cannot compute with kind {kind!r}", expected="'fp8' or 'int8'")


def scaled_matmul(
    xq: torch.Tensor,
    sa: torch.Tensor,
    q: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    kind: str,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """The matmul half of `scaled_linear`, on activations already quantized by `quantize_act`
    (or a fused kernel that gives the same codes): [M, out] in `out_dtype`.

    Split out so one quantized activation can feed several linears (q/k/v share
    their input) and so quantization can ride in the kernel that makes the input.
    """
    _check_kind(kind)
    n, k = q.shape
    if xq.shape[-1] != k:
        raise ValueError(f"input has {xq.shape[-1]} features, the weight expects {k}")
    if q.device != xq.device:
        q, scale = q.to(xq.device), scale.to(xq.device)
    path = pick_path(xq.device, kind, k, n)
    y = None
    if path != _EMULATE:
        try:
            if path == _SCALED_MM:
                y = _fp8_scaled_mm(xq, sa, q, scale, bias)
            else:
                y = _int8_int_mm(xq, sa, q, scale, bias, out_dtype)
        except Exception as e:  # noqa: BLE001 - fail() re-raises OOM and interrupts, never switches them off
            index = xq.device.index if xq.device.index is not None else torch.cuda.current_device()
            _NATIVE.fail((index, kind), e, f"native {kind} matmul on {xq.device}")
    if y is None:
        y = _emulated(xq, sa, q, scale, bias, out_dtype)
    return y.to(out_dtype)


def _fp8_scaled_mm(xq, sa, q, scale, bias):
    sb = scale.reshape(1, -1).to(torch.float32)
    b = bias.to(torch.bfloat16) if bias is not None else None
    return torch._scaled_mm(
        xq, q.t(), scale_a=sa, scale_b=sb, bias=b, out_dtype=torch.bfloat16, use_fast_accum=USE_FAST_ACCUM
    )


def _int8_int_mm(xq, sa, q, scale, bias, out_dtype):
    m = xq.shape[0]
    if m <= 16:  # cuBLASLt int8 wants more than 16 rows
        xq = torch.cat([xq, xq.new_zeros(32 - m, xq.shape[1])])
    acc = torch._int_mm(xq, q.t())[:m]
    return rescale(acc, sa, scale, bias, out_dtype if out_dtype.is_floating_point else torch.bfloat16)


# torch.mm(..., out_dtype=float32) on bf16 inputs: missing in older torch (TypeError) or for a GPU
_FP32_ACC = switch("bf16 matmul with fp32 accumulation", "a bf16 matmul (rounded sums)")


def _emulated(xq, sa, q, scale, bias, out_dtype):
    if xq.device.type == "cuda":
        # codes are exact in bf16; accumulate in fp32 where this torch can
        acc = None
        if "mm" not in _FP32_ACC.off:
            try:
                acc = torch.mm(xq.to(torch.bfloat16), q.to(torch.bfloat16).t(), out_dtype=torch.float32)
            except (TypeError, RuntimeError) as e:
                _FP32_ACC.fail("mm", e, "torch.mm(out_dtype=float32)")  # OOM and interrupts re-raised
        if acc is None:
            acc = (xq.to(torch.bfloat16) @ q.to(torch.bfloat16).t()).float()
    else:
        acc = xq.to(torch.float32) @ q.to(torch.float32).t()
    return rescale(acc, sa, scale, bias, out_dtype if out_dtype.is_floating_point else torch.float32)


def rescale(
    acc: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """out = (acc * sa) * sb + bias in fp32, cast once: one Triton pass on CUDA, torch elsewhere."""
    if acc.device.type == "cuda" and HAVE_TRITON:
        return _rescale_triton(acc, sa, sb, bias, out_dtype)
    y = acc.to(torch.float32) * sa.to(torch.float32).reshape(-1, 1)
    y = y * sb.to(torch.float32).reshape(1, -1)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(out_dtype)


if HAVE_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _rescale_kernel(ACC, SA, SB, BIAS, OUT, M, N, stride_am, stride_om,
                        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        mm, mn = rm < M, rn < N
        mask = mm[:, None] & mn[None, :]
        rows = rm.to(tl.int64)[:, None]
        acc = tl.load(ACC + rows * stride_am + rn[None, :], mask=mask, other=0).to(tl.float32)
        sa = tl.load(SA + rm, mask=mm, other=0.0).to(tl.float32)
        sb = tl.load(SB + rn, mask=mn, other=0.0).to(tl.float32)
        y = (acc * sa[:, None]) * sb[None, :]
        if HAS_BIAS:
            y = y + tl.load(BIAS + rn, mask=mn, other=0.0).to(tl.float32)[None, :]
        tl.store(OUT + rows * stride_om + rn[None, :], y.to(OUT.dtype.element_ty), mask=mask)


def _rescale_triton(acc, sa, sb, bias, out_dtype):
    if acc.stride(1) != 1:
        acc = acc.contiguous()
    m, n = acc.shape
    out = torch.empty((m, n), dtype=out_dtype, device=acc.device)
    sa = sa.reshape(-1).to(torch.float32).contiguous()
    sb = sb.reshape(-1).contiguous()
    b = bias.contiguous() if bias is not None else sb  # dummy pointer when there is no bias
    grid = (triton.cdiv(m, 32), triton.cdiv(n, 128))
    _rescale_kernel[grid](acc, sa, sb, b, out, m, n, acc.stride(0), out.stride(0),
                          HAS_BIAS=bias is not None, BLOCK_M=32, BLOCK_N=128, num_warps=4)
    return out
