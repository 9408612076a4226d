"""RMS norm over channels (+ SiLU), the VAE's only non-conv op on every activation.

Eager torch needs a reduction and three elementwise passes (scale by 1/||x||, by gamma, SiLU),
each reading and writing the whole activation; at 480x832x81 the decoder's activations are
~6 GB per layer, so those passes cost about as much as a third of the convolutions. On CUDA the
Triton kernel below does it in one read and one write, into any channels-last destination
(the causal conv's input buffer behind its history frames), in float32 registers.

Semantics (the original's `F.normalize(x, dim=1) * sqrt(C) * gamma`): y = x / max(||x||, 1e-12)
* sqrt(C) * gamma, then optionally y * sigmoid(y).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..fallback import attempt, switch

try:  # optional: Triton is absent on many Windows installs; the eager path is always there
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - depends on the install
    triton = None

EPS = 1e-12
USE_TRITON = True  # a switch for A/B benchmarks (scripts/bench_vae.py --no-triton)


def rms_norm_eager(x: torch.Tensor, gamma: torch.Tensor, *, silu: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """Reference/fallback: any device, layout and dtype (the norm is reduced in float32)."""
    c = x.shape[1]
    shape = (1, c) + (1,) * (x.ndim - 2)
    inv = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32).clamp_min_(EPS).reciprocal_()
    if out is None:
        out = torch.empty_like(x)
    torch.mul(x, inv, out=out)  # float32 product, one rounding into out's dtype
    del inv
    out.mul_((gamma.float() * math.sqrt(c)).to(out.dtype).view(shape))
    if silu:
        F.silu(out, inplace=True)
    return out


def _rows(t: torch.Tensor) -> torch.Tensor | None:
    """t [1, C, ...] channels-last and dense -> the [pixels, C] row-major view; else None."""
    if t.shape[0] != 1:
        return None
    perm = t.permute(0, *range(2, t.ndim), 1)
    return perm.reshape(-1, t.shape[1]) if perm.is_contiguous() else None


if triton is not None:

    @triton.jit
    def _rms_norm_kernel(x_ptr, g_ptr, y_ptr, n_rows, C, scale, eps, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, SILU: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BLOCK_C)
        mask = (rows[:, None] < n_rows) & (cols[None, :] < C)
        offs = rows[:, None] * C + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        inv = scale / tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), eps)
        g = tl.load(g_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
        y = x * inv[:, None] * g[None, :]
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def rms_norm_triton(x: torch.Tensor, gamma: torch.Tensor, *, silu: bool, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """The fused kernel when x and out are dense channels-last with batch 1; None otherwise."""
    if triton is None:
        return None
    if out is None:
        out = torch.empty_like(x)
    xr, yr = _rows(x), _rows(out)
    if xr is None or yr is None:
        return None
    n, c = xr.shape
    block_c = triton.next_power_of_2(c)
    block_r = max(1, 4096 // block_c)
    _rms_norm_kernel[(triton.cdiv(n, block_r),)](
        xr, gamma.contiguous(), yr, n, c, math.sqrt(c), EPS, BLOCK_R=block_r, BLOCK_C=block_c, SILU=silu, num_warps=4
    )
    return out


# (device, dtype, C, silu) combinations: checked against eager torch on first use; a failure or a
# disagreement switches the fused path off for all of them (one warning)
_KERNEL = switch("VAE fused RMS-norm kernel", "eager torch")


def _self_check(x: torch.Tensor, gamma: torch.Tensor, silu: bool) -> bool:
    """First use of a (device, dtype, C, silu): the kernel must compile and agree with eager
    torch on a slice of the real input; otherwise the fused path is switched off (one warning;
    OOM and interrupts propagate: fallback.py)."""
    key = (x.device, x.dtype, x.shape[1], silu)
    if key in _KERNEL.checked:
        return True
    probe_x = x[:, :, :1] if x.ndim == 5 else x[:1]

    def probe() -> None:
        got = rms_norm_triton(probe_x, gamma, silu=silu)
        want = rms_norm_eager(probe_x, gamma, silu=silu)
        if got is not None and not torch.allclose(got.float(), want.float(), rtol=2**-6, atol=2**-6):
            raise ValueError("results differ from eager torch")

    if not _KERNEL.check_once(key, lambda: attempt(probe, "Wan4Step VAE: fused RMS-norm kernel", "eager torch")):
        global USE_TRITON
        USE_TRITON = False
        return False
    return True


def rms_norm(x: torch.Tensor, gamma: torch.Tensor, *, silu: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = RMSNorm(x) (* sigmoid), written into `out` if given. Fused on CUDA, eager elsewhere."""
    if USE_TRITON and triton is not None and x.is_cuda and x.numel() and _self_check(x, gamma, silu):
        y = rms_norm_triton(x, gamma, silu=silu, out=out)
        if y is not None:
            return y
    return rms_norm_eager(x, gamma, silu=silu, out=out)
