"""Fused elementwise kernels of the Wan block (Triton on CUDA, torch elsewhere).

Profiling ComfyUI's block at 480p (32,760 tokens x 5,120) shows ~20 ms of its
94 ms spent outside matmuls and attention: LayerNorm then modulate as separate
bf16 passes, RMSNorm then RoPE in fp32 with several temporaries. Each kernel
here reads its input once and writes its output once, computing in fp32 and
rounding once.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl

    _TRITON = True
except ImportError:  # optional: CPU-only installs, Windows without triton
    _TRITON = False


def _use_triton(x: torch.Tensor) -> bool:
    if not _TRITON or os.environ.get("WAN4STEP_FUSED", "1") == "0":
        return False
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


# ---------------------------------------------------------------------------- LayerNorm + modulate
def ln_modulate_reference(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm (no affine) then `* (1 + scale) + shift`; x [B, L, C], shift/scale [B, C]."""
    xf = x.float()
    y = torch.nn.functional.layer_norm(xf, (x.shape[-1],), eps=eps)
    return (y * (1 + scale.float()[:, None]) + shift.float()[:, None]).to(x.dtype)


if _TRITON:

    @triton.jit
    def _ln_modulate_kernel(X, SHIFT, SCALE, Y, L, C, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        b = row // L
        offs = tl.arange(0, BLOCK)
        mask = offs < C
        x = tl.load(X + row * C + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / C
        d = tl.where(mask, x - mean, 0.0)
        var = tl.sum(d * d, axis=0) / C
        rstd = 1.0 / tl.sqrt(var + eps)
        sh = tl.load(SHIFT + b * C + offs, mask=mask, other=0.0).to(tl.float32)
        sc = tl.load(SCALE + b * C + offs, mask=mask, other=0.0).to(tl.float32)
        y = d * rstd * (1.0 + sc) + sh
        tl.store(Y + row * C + offs, y.to(Y.dtype.element_ty), mask=mask)


def ln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    if not _use_triton(x):
        return ln_modulate_reference(x, shift, scale, eps)
    B, L, C = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    block = triton.next_power_of_2(C)
    _ln_modulate_kernel[(B * L,)](
        x, shift.contiguous(), scale.contiguous(), y, L, C, eps, BLOCK=block, num_warps=8 if block >= 4096 else 4
    )
    return y


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
        offs = tl.arange(0, BLOCK)  # pair index
        mask = offs < C // 2
        base = X + row * C + 2 * offs
        x0 = tl.load(base, mask=mask, other=0.0).to(tl.float32)
        x1 = tl.load(base + 1, mask=mask, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x0 * x0 + x1 * x1, axis=0) / C + eps)
        v0 = x0 * rstd * tl.load(W + 2 * offs, mask=mask, other=0.0).to(tl.float32)
        v1 = x1 * rstd * tl.load(W + 2 * offs + 1, mask=mask, other=0.0).to(tl.float32)
        if ROPE:
            j = offs % HALF_D
            c = tl.load(COS + pos * HALF_D + j, mask=mask, other=1.0)
            s = tl.load(SIN + pos * HALF_D + j, mask=mask, other=0.0)
            y0 = v0 * c - v1 * s
            y1 = v0 * s + v1 * c
        else:
            y0 = v0
            y1 = v1
        out = Y + row * C + 2 * offs
        tl.store(out, y0.to(Y.dtype.element_ty), mask=mask)
        tl.store(out + 1, y1.to(Y.dtype.element_ty), mask=mask)


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
