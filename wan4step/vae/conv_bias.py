"""A cuDNN conv's bias (and the residual block's shortcut) in one vectorized pass.

Why: `F.conv3d(x, w, bias)` on CUDA runs cuDNN without the bias and then adds it in a broadcasting
elementwise kernel that cannot vectorize; the residual add is another full pass. In a 480p
decode (scripts/profile_vae.py, H200) those adds took 0.13 s of 0.75 s GPU time, more than any
conv kernel family but two. Here the bias and the shortcut are added to the conv's bf16 output
in float32 with one rounding, one read of each operand and one write, on the flat channels-last
memory (channel = offset mod C).

Used by CausalConv3d.run for the convs that stay on cuDNN (conv_gemm.py fuses both into its
epilogue); checked against eager torch on first use per (device, dtype, C, residual), with eager
torch as the fallback (one warning).
"""

from __future__ import annotations

import torch

from ..fallback import attempt, switch

try:  # optional: Triton is absent on many Windows installs; the eager path is always there
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - depends on the install
    triton = None

BLOCK = 4096
USE_TRITON = True  # a switch for A/B benchmarks (scripts/bench_vae_conv.py)
_KERNEL = switch("VAE fused conv bias + shortcut add (Triton)", "eager torch adds")


if triton is not None:

    @triton.jit
    def _bias_add_kernel(y_ptr, b_ptr, r_ptr, n, C, HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y += tl.load(b_ptr + offs % C, mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            y += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def _dense_channels_last(t: torch.Tensor) -> bool:
    return t.ndim == 5 and t.shape[0] == 1 and t.is_contiguous(memory_format=torch.channels_last_3d)


def eager(y: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """y += bias (+ residual), in place, as torch does it (two roundings with a residual)."""
    y.add_(bias.view(1, -1, *([1] * (y.ndim - 2))))
    return y if residual is None else y.add_(residual)


def _triton(y: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    n = y.numel()
    _bias_add_kernel[(triton.cdiv(n, BLOCK),)](
        y, bias.contiguous(), residual if residual is not None else y, n, y.shape[1],
        HAS_RES=residual is not None, BLOCK=BLOCK, num_warps=8)
    return y


def _self_check(key, y: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None) -> bool:
    def probe() -> None:
        g = torch.Generator(y.device).manual_seed(0)
        cl = torch.channels_last_3d
        shape = (1, y.shape[1], 1, 2, 33)
        a = torch.randn(shape, generator=g, device=y.device, dtype=y.dtype).contiguous(memory_format=cl)
        r = None if residual is None else torch.randn(shape, generator=g, device=y.device, dtype=y.dtype).contiguous(memory_format=cl)
        want = a.float() + bias.float().view(1, -1, 1, 1, 1) + (0 if r is None else r.float())
        got = _triton(a.clone(memory_format=cl), bias, r).float()
        if not torch.allclose(got, want, rtol=2**-7, atol=2**-7):
            raise ValueError("results differ from float32 torch")

    return _KERNEL.check_once(key, lambda: attempt(probe, "Wan4Step VAE: fused conv bias add", "eager torch adds"))


def add_(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """y + bias (+ residual), in y's memory. One Triton pass for dense channels-last CUDA
    tensors of batch 1 (residual in the same layout); eager torch otherwise."""
    if bias is None:
        return y if residual is None else y.add_(residual)
    fused = (USE_TRITON and triton is not None and y.is_cuda and y.numel() and _dense_channels_last(y)
             and (residual is None or (_dense_channels_last(residual) and residual.shape == y.shape
                                       and residual.dtype == y.dtype)))
    if fused:
        key = (y.device, y.dtype, y.shape[1], residual is not None)
        if _self_check(key, y, bias, residual):
            try:
                return _triton(y, bias, residual)
            except Exception as exc:  # noqa: BLE001 - fail() re-raises OOM and interrupts
                _KERNEL.fail(key, exc)
    return eager(y, bias, residual)
