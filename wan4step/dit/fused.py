"""Fused elementwise kernels of the Wan block (Triton on CUDA, torch elsewhere).

Profiling ComfyUI's block at 480p (32,760 tokens x 5,120) shows ~20 ms of its
94 ms spent outside matmuls and attention: LayerNorm then modulate as separate
bf16 passes, RMSNorm then RoPE in fp32 with several temporaries. Each kernel
here reads its input once and writes its output once, computing in fp32 and
rounding once.
"""

from __future__ import annotations

import logging

import torch

from ..quant.act_quant import QUANT_KERNELS, empty_codes, quantize_act, row_parts, triton_failed
from ..quant.act_quant import use_triton as use_act_triton
from ..quant.weights import INT8
from ..settings import SETTINGS

log = logging.getLogger("wan4step")

try:
    import triton
    import triton.language as tl

    from ..quant.act_quant import quant_codes, quant_scale, quantize_row, round_to

    _TRITON = True
except ImportError:  # optional: CPU-only installs, Windows without triton
    _TRITON = False


# Launch choices, measured on an H100 at the 14B shapes by scripts/bench_fused.py
# (docs/bench/fused_sweep.log). Each program holds a whole row in registers; walking rows in
# chunks (re-read from L1/L2) was measured too and was 10-45 % slower at these widths. These row
# kernels are latency-bound (2-3 dependent reductions per row), so what counts is rows in flight:
# LayerNorm at 4 warps with the row split 4096 + 1024 (ln_split) quantizes a bf16 row in
# 0.252 ms against 0.364 ms padded to 8192 at 8 warps; several rows per program or a register cap
# were no faster. A persistent gelu_quant (a program per SM walking rows, prefetching the next)
# was measured slower (0.81 ms against 0.66) and dropped; warps and register caps move it < 5 %.
TUNING: dict[str, int] = {"ln": 4, "ln_split": 1, "gelu_quant": 16}


def _env_tuning(spec: str) -> dict[str, int]:
    """A/B runs of the benchmarks: WAN4STEP_TUNING="ln=8,gelu_quant=32"; a malformed entry is skipped."""
    out = {}
    for kv in filter(None, spec.split(",")):
        key, _, val = kv.partition("=")
        key = key.strip()
        ok = (0, 1) if key.endswith("_split") else (1, 2, 4, 8, 16, 32)
        if key in TUNING and val.strip().isdigit() and int(val) in ok:
            out[key] = int(val)
        else:
            log.warning("wan4step: ignoring WAN4STEP_TUNING entry %r (expected one of %s = a power of two <= 32, "
                        "or 0/1 for ln_split)",
                        kv, ", ".join(TUNING))
    return out


TUNING.update(_env_tuning(SETTINGS.tuning))
_KERNELS_ON = _TRITON and SETTINGS.fused  # WAN4STEP_FUSED=0 turns the kernels off (settings.py)
_ON_CPU_TOO = SETTINGS.triton_interpret  # the interpreter runs them on CPU tensors (tests)


def _use_triton(x: torch.Tensor) -> bool:
    return _KERNELS_ON and (x.is_cuda or _ON_CPU_TOO)


# ---------------------------------------------------------------------------- LayerNorm + modulate
def ln_modulate_reference(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm (no affine) then `* (1 + scale) + shift`; x [B, L, C], shift/scale [B, C]."""
    xf = x.float()
    y = torch.nn.functional.layer_norm(xf, (x.shape[-1],), eps=eps)
    return (y * (1 + scale.float()[:, None]) + shift.float()[:, None]).to(x.dtype)


if _TRITON:

    @triton.jit
    def _ln_kernel(X, SHIFT, SCALE, Y, Q, S, L, C, eps, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
                   QUANT: tl.constexpr, IS_INT8: tl.constexpr):
        """One row of LayerNorm + modulate; QUANT: write the row's W8A8 codes instead of y.

        The row is held as two power-of-two parts (act_quant.row_parts). Both variants are this
        one function; the compiler may still order a row's sums differently in the two (their
        stores differ in width), so y can differ by an ulp on rare elements (tests bound it).
        """
        row = tl.program_id(0).to(tl.int64)
        b = row // L
        oa = tl.arange(0, BLOCK_A)
        ob = BLOCK_A + tl.arange(0, BLOCK_B)
        ma, mb = oa < C, ob < C
        xa = tl.load(X + row * C + oa, mask=ma, other=0.0).to(tl.float32)
        xb = tl.load(X + row * C + ob, mask=mb, other=0.0).to(tl.float32)
        mean = (tl.sum(xa, axis=0) + tl.sum(xb, axis=0)) / C
        da = tl.where(ma, xa - mean, 0.0)
        db = tl.where(mb, xb - mean, 0.0)
        var = (tl.sum(da * da, axis=0) + tl.sum(db * db, axis=0)) / C
        rstd = 1.0 / tl.sqrt(var + eps)
        # loaded only now (L1 hits after the first row of an SM): fewer live registers per row
        sca = 1.0 + tl.load(SCALE + b * C + oa, mask=ma, other=0.0).to(tl.float32)
        scb = 1.0 + tl.load(SCALE + b * C + ob, mask=mb, other=0.0).to(tl.float32)
        sha = tl.load(SHIFT + b * C + oa, mask=ma, other=0.0).to(tl.float32)
        shb = tl.load(SHIFT + b * C + ob, mask=mb, other=0.0).to(tl.float32)
        ya = da * rstd * sca + sha
        yb = db * rstd * scb + shb
        if QUANT:
            # round to the activation dtype first: the codes are those of quantize_act(ln_modulate(x))
            ya = tl.where(ma, round_to(ya, X.dtype.element_ty), 0.0)
            yb = tl.where(mb, round_to(yb, X.dtype.element_ty), 0.0)
            scale, inv = quant_scale(tl.maximum(tl.max(tl.abs(ya), axis=0), tl.max(tl.abs(yb), axis=0)), IS_INT8)
            tl.store(Q + row * C + oa, quant_codes(ya, inv, IS_INT8), mask=ma)
            tl.store(Q + row * C + ob, quant_codes(yb, inv, IS_INT8), mask=mb)
            tl.store(S + row, scale)
        else:
            tl.store(Y + row * C + oa, round_to(ya, Y.dtype.element_ty).to(Y.dtype.element_ty), mask=ma)
            tl.store(Y + row * C + ob, round_to(yb, Y.dtype.element_ty).to(Y.dtype.element_ty), mask=mb)


def _ln_launch(x, shift, scale, y, q, s, eps, quant: bool, is_int8: bool) -> None:
    B, L, C = x.shape
    block_a, block_b = row_parts(C, split=bool(TUNING["ln_split"]))
    # no FMA contraction: y rounds like the reference's separate multiply and add
    _ln_kernel[(B * L,)](x, shift.contiguous(), scale.contiguous(), y, q, s, L, C, eps,
                         BLOCK_A=block_a, BLOCK_B=block_b, QUANT=quant, IS_INT8=is_int8,
                         num_warps=TUNING["ln"], enable_fp_fusion=False)


def ln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    if not _use_triton(x):
        return ln_modulate_reference(x, shift, scale, eps)
    x = x.contiguous()
    y = torch.empty_like(x)
    _ln_launch(x, shift, scale, y, y, y, eps, quant=False, is_int8=False)
    return y


def ln_modulate_quant(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, kind: str, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_act(ln_modulate(x))` in one pass: per-token W8A8 codes [B*L, C] and scales [B*L, 1].

    The bf16 LayerNorm output is never written: the kernel rounds it to x's dtype in
    registers and quantizes the row it already holds (saves a write and a read of
    B*L*C activations per use, and one quantizer pass per linear that shares it).
    """
    B, L, C = x.shape
    if not _fused_quant(x, kind):
        return quantize_act(ln_modulate(x, shift, scale, eps).reshape(B * L, C), kind)
    x = x.contiguous()
    q, s = empty_codes(B * L, C, kind, x.device)
    try:
        _ln_launch(x, shift, scale, x, q, s, eps, quant=True, is_int8=(kind == INT8))
    except Exception as e:  # noqa: BLE001 - a Triton that cannot build this for the GPU: the unfused pair is the same math
        _fused_failed(kind, e)
        return quantize_act(ln_modulate(x, shift, scale, eps).reshape(B * L, C), kind)
    return q, s


def _fused_quant(x: torch.Tensor, kind: str) -> bool:
    if not _use_triton(x) or kind in triton_failed:
        return False
    return (not x.is_cuda) or use_act_triton(x, kind)


def _fused_failed(kind: str, e: Exception) -> None:
    """Re-raises OOM and interrupts; any other failure turns the kind's quantizing kernels off."""
    QUANT_KERNELS.fail(kind, e, f"fused {kind} quantizing kernels")


# ---------------------------------------------------------------------------- GELU + quantize
def gelu_quant_reference(h: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_act(torch.nn.functional.gelu(h, approximate="tanh").reshape(-1, h.shape[-1]), kind)


if _TRITON:

    @triton.jit
    def _gelu_quant_kernel(H, Q, S, K, BLOCK: tl.constexpr, IS_INT8: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        mask = offs < K
        h = tl.load(H + row * K + offs, mask=mask, other=0.0).to(tl.float32)
        # gelu_tanh = 0.5 h (1 + tanh u), u = sqrt(2/pi) (h + 0.044715 h^3); 1 + tanh u = 2 / (1 + e^-2u)
        # has no cancellation for negative h (torch's 1 + tanh has; they differ there by ulps)
        u = 0.7978845608028654 * (h + 0.044715 * h * h * h)
        g = h / (1.0 + tl.exp(-2.0 * u))
        # held in h's dtype between the amax and the codes (exact: g is on that grid): half the
        # registers per row (measured 0.66 ms at 480p against 0.75 ms holding fp32)
        g = tl.where(mask, round_to(g, H.dtype.element_ty), 0.0).to(H.dtype.element_ty)
        q, scale = quantize_row(g.to(tl.float32), IS_INT8)
        tl.store(Q + row * K + offs, q, mask=mask)
        tl.store(S + row, scale)


def gelu_quant(h: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_act(gelu_tanh(h))` in one pass (the FFN's hidden state never round-trips as bf16).

    Same math as torch's tanh-GELU in fp32, rounded to h's dtype, then the shared
    per-token quantizer; it can differ from torch's GELU by an ulp of tanh, i.e. on
    rare rounding ties of the bf16 value (tests bound it).
    """
    k = h.shape[-1]
    h2 = h.reshape(-1, k)
    if not _fused_quant(h, kind) or k > 65536:
        return gelu_quant_reference(h2, kind)
    h2 = h2.contiguous()
    q, s = empty_codes(h2.shape[0], k, kind, h2.device)
    try:
        # FMA contraction only changes GELU's fp32 ulps (within the documented tolerance); INT8's
        # round-to-integer trick needs `x * inv` rounded on its own, so INT8 keeps it off
        _gelu_quant_kernel[(h2.shape[0],)](h2, q, s, k, BLOCK=triton.next_power_of_2(k), IS_INT8=(kind == INT8),
                                           num_warps=TUNING["gelu_quant"], enable_fp_fusion=(kind != INT8))
    except Exception as e:  # noqa: BLE001 - as in ln_modulate_quant
        _fused_failed(kind, e)
        return gelu_quant_reference(h2, kind)
    return q, s


# ---------------------------------------------------------------------------- RMSNorm (+ RoPE)
def rope_tables(freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [L, D/2] (fp32) from ComfyUI's rotation-matrix freqs [1, L, 1, D/2, 2, 2]."""
    f = freqs.reshape(freqs.shape[1], freqs.shape[-3], 2, 2)
    return f[..., 0, 0].float().contiguous(), f[..., 1, 0].float().contiguous()


def rmsnorm_rope_reference(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None, heads: int, eps: float = 1e-6
) -> torch.Tensor:
    """RMSNorm over the whole channel dim (Wan's qk norm), then RoPE per head on (even, odd) pairs."""
    B, L, C = x.shape
    xf = x.float()
    v = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    if cos is None:
        return v.to(x.dtype)
    v = v.view(B, L, heads, C // heads // 2, 2)
    c, s = cos[None, :, None], sin[None, :, None]
    y0 = v[..., 0] * c - v[..., 1] * s
    y1 = v[..., 0] * s + v[..., 1] * c
    return torch.stack([y0, y1], -1).reshape(B, L, C).to(x.dtype)


if _TRITON:

    @triton.jit
    def _rmsnorm_rope_kernel(X, W, COS, SIN, Y, L, C, HALF_D, eps, ROPE: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        pos = row % L
        # one contiguous load of the row, split into (even, odd) pairs in registers
        offs = tl.arange(0, 2 * BLOCK)
        mask2 = offs < C
        x = tl.load(X + row * C + offs, mask=mask2, other=0.0).to(tl.float32)
        w = tl.load(W + offs, mask=mask2, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / C + eps)
        v0, v1 = tl.split(tl.reshape(x * rstd * w, (BLOCK, 2)))
        if ROPE:
            pair = tl.arange(0, BLOCK)
            mask = pair < C // 2
            j = pair % HALF_D
            c = tl.load(COS + pos * HALF_D + j, mask=mask, other=1.0)
            s = tl.load(SIN + pos * HALF_D + j, mask=mask, other=0.0)
            y = tl.reshape(tl.join(v0 * c - v1 * s, v0 * s + v1 * c), (2 * BLOCK,))
        else:
            y = tl.reshape(tl.join(v0, v1), (2 * BLOCK,))
        tl.store(Y + row * C + offs, round_to(y, Y.dtype.element_ty).to(Y.dtype.element_ty), mask=mask2)


def rmsnorm_rope(
    x: torch.Tensor,
    weight: torch.Tensor,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    heads: int,
    eps: float = 1e-6,
) -> torch.Tensor:
    if not _use_triton(x):
        return rmsnorm_rope_reference(x, weight, cos, sin, heads, eps)
    B, L, C = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    block = triton.next_power_of_2(C // 2)
    rope = cos is not None
    if rope and cos.shape[0] != L:
        raise ValueError(f"RoPE table has {cos.shape[0]} positions for {L} tokens")
    dummy = weight
    _rmsnorm_rope_kernel[(B * L,)](
        x, weight.contiguous(), cos if rope else dummy, sin if rope else dummy, y, L, C, C // heads // 2, eps,
        ROPE=rope, BLOCK=block, num_warps=8 if block >= 2048 else 4,
    )
    return y


# ---------------------------------------------------------------------------- gated residual
if _TRITON:

    @triton.jit
    def _gated_residual_kernel(X, Y, G, OUT, L, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        b = tl.program_id(2).to(tl.int64)
        cmask = cols < C
        g = tl.load(G + b * C + cols, mask=cmask, other=0.0).to(tl.float32)
        offs = (b * L + rows)[:, None] * C + cols[None, :]
        mask = (rows < L)[:, None] & cmask[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(Y + offs, mask=mask, other=0.0).to(tl.float32)
        r = round_to(tl.fma(y, g[None, :], x), OUT.dtype.element_ty)
        tl.store(OUT + offs, r.to(OUT.dtype.element_ty), mask=mask)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """`torch.addcmul(x, y, gate[:, None])`: x, y [B, L, C], gate [B, C]; a new tensor.

    torch runs this broadcast as its generic (non-vectorized) elementwise kernel: 0.54 ms per call
    at 480p in the block profile, two calls per block; this is one tiled pass that reads the gate
    once per tile. Same rounding as torch (ATen's pointwise_op_impl: alpha = 1 is `fma(b, c, a)` in
    fp32), then once to the result dtype.
    """
    out_dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), gate.dtype)
    if not _use_triton(x) or x.shape != y.shape or gate.shape != (x.shape[0], x.shape[2]):
        return torch.addcmul(x, y, gate.unsqueeze(1))
    B, L, C = x.shape
    x, y, gate = x.contiguous(), y.contiguous(), gate.contiguous()
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    br, bc = 8, 1024
    _gated_residual_kernel[(triton.cdiv(L, br), triton.cdiv(C, bc), B)](x, y, gate, out, L, C, BLOCK_R=br, BLOCK_C=bc,
                                                                        num_warps=8)
    return out
