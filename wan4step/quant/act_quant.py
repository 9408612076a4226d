"""Dynamic per-token activation quantization for W8A8 matmuls (FP8 e4m3 / INT8).

Every row (token) of `x` [M, K] gets its own scale, written as an [M, 1] float32
column, and the row is cast to 8-bit codes with that scale. Why a fused kernel:
measured on the H100 at M = 32,760 tokens, the naive torch version (abs, amax,
divide, clamp, cast as separate ops, each a full pass over x plus fp32
temporaries) costs 1.8-4.8 ms per linear, as much as the FP8 matmul itself. The
Triton kernel reads x once and writes q and the scale once.

Semantics reproduced (LightX2V runs these kernels behind its W8A8 linears,
lightx2v/common/ops/mm/mm_weight.py):

FP8 (`fp8-sgl`, the scheme of LightX2V's wan_t2v_distill_fp8_4step_cfg.json;
sgl-kernel csrc/gemm/per_token_quant_fp8.cu):
    amax  = max_k |float32(x[m, k])|
    scale = amax / 448                        (fp32, IEEE division; stored as is)
    inv   = 1 / scale, or 0 when scale == 0   (fp32, IEEE division)
    q     = e4m3(clamp(float32(x) * inv, -448, 448))
            cast = round-to-nearest-even with e4m3fn subnormals (the CUDA
            __nv_fp8_e4m3 conversion, and torch's .to(float8_e4m3fn)).
    An all-zero row gives scale 0 and codes 0.

INT8 (`int8-vllm`; vllm csrc/quantization/compressed_tensors/
int8_quant_kernels.cu, dynamic_scaled_int8_quant_kernel, symmetric):
    amax  = max_k |float32(x[m, k])|
    scale = amax / 127                        (fp32, stored)
    inv   = 127 / amax                        (fp32, a separate division)
    q     = saturate_int8(round_half_even(float32(x) * inv))   (cvt.rni.sat.s8)
    An all-zero row: vllm computes 0 * inf = NaN, which cvt turns into 0; here
    scale 0 and codes 0 directly (same codes, no NaN).

LightX2V's other kernels for the same files differ only in last-bit details
(ties and one rounding of the reciprocal): fp8-triton/fp8-torchao divide
(x / scale) instead of multiplying by 1/scale, int8-sgl (sglang's
per_token_quant_int8) rounds ties away from zero. We follow the two above: fp8-sgl
is what the T2V distill FP8 config names; LightX2V ships no T2V INT8 distill
config, and its int8 examples (configs/quantization/wan_i2v.json) use int8-vllm.

The Triton kernel does the rounding itself in fp32 integer/bit arithmetic
(values it then casts to fp8 are already on the e4m3 grid) because Triton's
CPU interpreter rounds fp32->fp8 wrongly at binade edges (31.09 -> 16), and the
tests must be able to check the kernel bit-exactly on a CPU under
TRITON_INTERPRET=1. Divisions use `div_rn` since Triton's plain `/` on fp32 is
the approximate `div.full.f32`; fp-contraction is switched off at launch so
`x * inv` is rounded before the round-to-integer trick adds to it (an FMA would
round once, and differ on near-ties from the kernels above and the reference).
"""

from __future__ import annotations

import os

import torch

from ..fallback import switch
from .weights import FP8, INT8

try:  # Triton is optional: ComfyUI on Windows often has none
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except Exception:  # pragma: no cover - depends on the install
    triton = None
    tl = None
    HAVE_TRITON = False

FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
INT8_MAX = 127.0


def quantize_act_reference(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of the per-token quantizer: (q [M, K], scale [M, 1] fp32).

    Works on any device; it is the CPU path and the oracle for the Triton kernel.
    """
    if x.dim() != 2:
        raise ValueError(f"quantize_act expects [M, K], got {tuple(x.shape)}")
    xf = x.float()
    amax = xf.abs().amax(dim=1, keepdim=True)
    zero = amax == 0
    one = torch.ones_like(amax)
    # Divide by tensors, never by Python scalars: torch on CUDA turns `t / 448.0`
    # into `t * (1 / 448.0)`, one rounding more than the kernels this reproduces.
    if kind == FP8:
        scale = amax / torch.full_like(amax, FP8_MAX)
        inv = torch.where(zero, torch.zeros_like(amax), torch.reciprocal(torch.where(zero, one, scale)))
        q = (xf * inv).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    elif kind == INT8:
        scale = amax / torch.full_like(amax, INT8_MAX)
        inv = torch.where(zero, torch.zeros_like(amax), torch.full_like(amax, INT8_MAX) / torch.where(zero, one, amax))
        q = torch.round(xf * inv).clamp_(-128.0, 127.0).to(torch.int8)
    else:
        raise ValueError(f"unknown W8A8 kind {kind!r} (expected 'fp8' or 'int8')")
    return q, scale


if HAVE_TRITON:
    # Under TRITON_INTERPRET (the CPU tests) the fp32 -> e4m3 cast rounds wrongly at binade
    # edges and fp32 -> bf16 truncates, so values are rounded with integer arithmetic there;
    # GPUs use the native converts, one instruction each (same values: tests/gpu checks them
    # against torch's casts bit for bit).
    EMULATED_CASTS = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")

    @triton.jit
    def _round_to_e4m3_grid(v):
        """fp32 |v| <= 448 -> nearest e4m3fn value (ties to even), still as fp32."""
        vbits = v.to(tl.int32, bitcast=True)
        a = tl.abs(v)
        bits = a.to(tl.int32, bitcast=True)
        # normal range: keep 3 mantissa bits, round half to even (carry may bump the exponent)
        lsb = (bits >> 20) & 1
        normal = ((bits + 0x7FFFF + lsb) & -1048576).to(tl.float32, bitcast=True)
        # subnormal range (< 2**-6): the grid is 2**-9; 12582912 = 1.5 * 2**23, and
        # (v + 1.5 * 2**23) - 1.5 * 2**23 rounds |v| < 2**22 to an integer, ties to even
        sub = ((a * 512.0 + 12582912.0) - 12582912.0) * (1.0 / 512.0)
        r = tl.where(a < 0.015625, sub, normal)
        sign = vbits & -2147483648
        return (r.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)

    @triton.jit
    def round_to(v, DTYPE: tl.constexpr):
        """fp32 -> nearest DTYPE value (ties to even), kept as fp32: what storing v as DTYPE gives.

        Under the CPU interpreter bf16 is rounded with integer arithmetic, because the
        interpreter truncates fp32 -> bf16 casts (the GPU's cvt.rn rounds to nearest even).
        """
        if DTYPE == tl.bfloat16 and EMULATED_CASTS:
            bits = v.to(tl.int32, bitcast=True)
            r = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
            return r.to(tl.float32, bitcast=True)
        else:
            return v.to(DTYPE).to(tl.float32)

    @triton.jit
    def quant_scale(amax, IS_INT8: tl.constexpr):
        """Row amax -> (stored fp32 scale, multiplier applied to the row)."""
        safe = tl.maximum(amax, 1e-30)
        if IS_INT8:
            scale = tl.math.div_rn(amax, 127.0)
            inv = tl.where(amax > 0.0, tl.math.div_rn(127.0, safe), 0.0)
        else:
            scale = tl.math.div_rn(amax, 448.0)
            inv = tl.where(amax > 0.0, tl.math.div_rn(1.0, tl.maximum(scale, 1e-30)), 0.0)
        return scale, inv

    @triton.jit
    def quant_codes(x, inv, IS_INT8: tl.constexpr):
        """fp32 values and their row's multiplier -> 8-bit codes."""
        if IS_INT8:
            r = (x * inv + 12582912.0) - 12582912.0
            return tl.minimum(tl.maximum(r, -128.0), 127.0).to(tl.int8)
        else:
            v = tl.minimum(tl.maximum(x * inv, -448.0), 448.0)
            if EMULATED_CASTS:
                return _round_to_e4m3_grid(v).to(tl.float8e4nv)
            else:  # the GPU's cvt.rn e4m3: round to nearest even in one instruction
                return v.to(tl.float8e4nv, fp_downcast_rounding="rtne")

    @triton.jit
    def quantize_row(x, IS_INT8: tl.constexpr):
        """One row (fp32, masked lanes 0) -> (codes, fp32 scale)."""
        scale, inv = quant_scale(tl.max(tl.abs(x), axis=0), IS_INT8)
        return quant_codes(x, inv, IS_INT8), scale

    @triton.jit
    def _act_quant_kernel(X, Q, S, K, stride_xm, stride_qm, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
                          IS_INT8: tl.constexpr):
        """One row as two power-of-two parts (5120 = 4096 + 1024; see row_parts)."""
        row = tl.program_id(0).to(tl.int64)
        oa = tl.arange(0, BLOCK_A)
        ob = BLOCK_A + tl.arange(0, BLOCK_B)
        ma, mb = oa < K, ob < K
        xa = tl.load(X + row * stride_xm + oa, mask=ma, other=0.0).to(tl.float32)
        xb = tl.load(X + row * stride_xm + ob, mask=mb, other=0.0).to(tl.float32)
        scale, inv = quant_scale(tl.maximum(tl.max(tl.abs(xa), axis=0), tl.max(tl.abs(xb), axis=0)), IS_INT8)
        tl.store(Q + row * stride_qm + oa, quant_codes(xa, inv, IS_INT8), mask=ma)
        tl.store(Q + row * stride_qm + ob, quant_codes(xb, inv, IS_INT8), mask=mb)
        tl.store(S + row, scale)


def row_parts(k: int, split: bool = True) -> tuple[int, int]:
    """A row of k elements as two power-of-two blocks (the largest power of two <= k, and the rest
    rounded up): 5120 -> 4096 + 1024, where one block padded to 8192 wastes 3/8 of the registers
    and lanes of these row-per-program kernels (measured: LayerNorm+quantize 0.36 -> 0.25 ms at 480p)."""
    if not split:
        return triton.next_power_of_2(k), 1
    a = 1 << (k.bit_length() - 1)
    return a, triton.next_power_of_2(max(k - a, 1))


ACT_WARPS = {"small": 4, "large": 16}  # rows up to 8192 wide / wider (scripts/bench_fused.py)


def empty_codes(m: int, k: int, kind: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Output buffers of a per-token quantizer: codes [m, k] and fp32 scales [m, 1]."""
    qdtype = torch.float8_e4m3fn if kind == FP8 else torch.int8
    return torch.empty((m, k), dtype=qdtype, device=device), torch.empty((m, 1), dtype=torch.float32, device=device)


def quantize_act_triton(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused kernel: one program per row, the whole row in registers (K <= 16384 for Wan).

    Runs on CUDA, or on CPU tensors when TRITON_INTERPRET=1 was set before
    triton was imported (the tests do that in a subprocess).
    """
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed")
    if x.dim() != 2:
        raise ValueError(f"quantize_act expects [M, K], got {tuple(x.shape)}")
    if kind not in (FP8, INT8):
        raise ValueError(f"unknown W8A8 kind {kind!r} (expected 'fp8' or 'int8')")
    if x.stride(1) != 1:
        x = x.contiguous()
    m, k = x.shape
    q, scale = empty_codes(m, k, kind, x.device)
    if m == 0:
        return q, scale
    a, b = row_parts(k)
    _act_quant_kernel[(m,)](
        x, q, scale, k, x.stride(0), q.stride(0), BLOCK_A=a, BLOCK_B=b, IS_INT8=(kind == INT8),
        num_warps=ACT_WARPS["small" if a + b <= 8192 else "large"], enable_fp_fusion=False,
    )
    return q, scale


# kinds (fp8/int8) whose Triton quantizers failed to compile or launch here; shared with the
# quantizing LayerNorm/GELU kernels of dit/fused.py, which use the same Triton helpers
QUANT_KERNELS = switch("fused W8A8 quantizer", "separate torch passes (same codes)")
triton_failed = QUANT_KERNELS.off


def use_triton(x: torch.Tensor, kind: str) -> bool:
    """Whether the fused Triton quantizers can run for `x` (the torch reference runs otherwise)."""
    if not HAVE_TRITON or x.device.type != "cuda" or kind in triton_failed or x.shape[-1] > 65536:
        return False
    # Triton has no float8e4nv below sm_89 (FP8 then runs emulated, with the torch quantizer)
    return kind == INT8 or torch.cuda.get_device_capability(x.device) >= (8, 9)


def quantize_act(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token W8A8 activation quantizer: fused Triton on CUDA, torch elsewhere.

    Both give the same codes and scales bit for bit (tests/unit/test_scaled.py).
    """
    if use_triton(x, kind):
        try:
            return quantize_act_triton(x, kind)
        except Exception as e:  # noqa: BLE001 - a Triton that cannot build for this GPU: correct, just slower
            QUANT_KERNELS.fail(kind, e, f"fused {kind} activation quantizer")
    return quantize_act_reference(x, kind)
