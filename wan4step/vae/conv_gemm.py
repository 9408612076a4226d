"""The decoder's causal convs as implicit GEMMs over TMA tiles (Triton, sm90+): an experiment.

Why: at 480x832x81 the decode is ~0.26 PFLOP of convolutions with 96-384 channels and takes
0.80 s on the H200: a third of the tensor cores' dense bf16 rate for the whole decode, ~40 % if
the convolutions take ~0.65 s of it, so cuDNN's 3-D kernels may leave room (the issue asks for
< 0.6 s; scripts/profile_vae.py measures the split). A conv of a channels-last activation is a
GEMM whose K loop walks the kernel taps: for tap (dt, dh, dw) the A tile is the output tile's
pixels shifted by (dt, dh-1, dw-1), a box the tensor memory accelerator loads straight into
shared memory, with the zeros of the spatial padding filled in by the hardware for coordinates
outside the frame (negative ones included). No im2col buffer, no padded copy; bias and the
residual block's shortcut in the epilogue, bf16 out.

Tiles: a program computes a run of BW output pixels of one row for BN (+ BN2) output channels;
the K loop runs over taps x BK-channel slices (BK divides the input channels), float32
accumulation. A one-row box: with two or more rows per box Triton 3.6 reshapes A through
registers (local_load + layout conversion before each wgmma, seen in its sm90 TTGIR); one row
keeps A in shared memory for the wgmma, three stages deep.

Status: on the H200, with pick_tile's tiles, it takes 0.68-0.89x cuDNN's time for the 96-channel
3x3x3 convs, 0.81-0.86x for the 192-channel ones at 720p and 0.98-1.16x at 480p (before counting
the bias and shortcut passes its epilogue saves), 1.4-2.4x for 384 channels; so
`WanVAE.conv_backend` "auto" (the default) runs only the 96/192-channel ones here (`preferred`).
Whole untiled decodes: 0.91x (480p) and 0.82x (720p) the cuDNN path with torch's adds, 0.97x and
0.89x cuDNN with the fused bias pass (docs/bench/vae_conv_h200_s10.log). Checked by
tests/unit/test_vae_conv_gemm.py (Triton interpreter vs F.conv3d) and tests/gpu. Batch 1, stride
1, odd spatial kernels with "same" padding, channels a multiple of 16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

try:  # optional: Triton (and its tensor descriptors) may be absent; cuDNN is always there
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor
except Exception:  # pragma: no cover - depends on the install
    triton = None


@dataclass(frozen=True)
class Tile:
    bw: int  # output pixels per program: a run of one row (a box of one row keeps A in shared memory)
    bn: int  # output channels per program
    bk: int  # input channels per K step
    bn2: int = 0  # a second accumulator of bn2 channels after the first bn (96 = 64 + 32: no padding)
    stages: int = 3
    warps: int = 4

    def __str__(self) -> str:
        n = f"{self.bn}+{self.bn2}" if self.bn2 else str(self.bn)
        return f"{self.bw}x{n}x{self.bk} s{self.stages} w{self.warps}"


def pick_tile(w: int, cin: int, cout: int) -> Tile:
    """The fastest tile of scripts/bench_vae_conv.py --sweep on the H200 (docs/bench/vae_conv_h200_s10.log)
    for the shapes `preferred` sends here (the lowest sum over 480p and 720p, with and without the
    residual): 96 channels as 64 + 32 over runs of 256 pixels, 8 warps, 3 stages (128 pixels below
    512: less wasted tail); 192 as 128 + 64 over runs of 128, 8 warps, 4 stages. Other
    shapes (only with conv_backend "gemm"): 128 output channels per program, BK 64 where it
    divides the input channels."""
    bk = 64 if cin % 64 == 0 else (32 if cin % 32 == 0 else 16)
    if cout == 96:
        return Tile(256, 64, bk, bn2=32, stages=3, warps=8) if w >= 512 else Tile(128, 64, bk, bn2=32)
    if cout == 192:
        return Tile(128, 128, bk, bn2=64, stages=4, warps=8)
    bw = 64 if w % 128 and w % 64 == 0 else 128
    return Tile(bw, 128 if cout % 128 == 0 else 64 if cout % 64 == 0 else 32, bk)


def preferred(cin: int, cout: int, kernel: tuple[int, ...]) -> bool:
    """Whether conv_backend "auto" runs this conv here: the 96- and 192-channel 3x3(x3) convs of
    the decoder's two full-resolution stages (per call 0.68-1.16x cuDNN's time, module docstring;
    with the bias and shortcut in its epilogue the whole decode is faster with them here than on
    cuDNN at both sizes). cuDNN stays faster for 384 channels (1.4-2.4x), 1x1 convs and the
    16-channel input conv."""
    return cin == cout and cout in (96, 192) and tuple(kernel[-2:]) == (3, 3)


def supported(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """Why x [1, Ci, T, H, W] (channels-last 3-D) cannot take this path with `weight`, or None."""
    if triton is None:
        return "triton with tensor descriptors is not installed"
    if not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        return "needs a CUDA GPU"
    if x.is_cuda and torch.cuda.get_device_capability(x.device) < (9, 0):
        return "needs sm90 (TMA)"
    if x.ndim != 5 or x.shape[0] != 1:
        return "batch 1 only"
    if x.is_cuda and x.dtype not in (torch.bfloat16, torch.float16):
        return f"{x.dtype} (bf16/fp16 only)"
    if not x.is_contiguous(memory_format=torch.channels_last_3d) or x.data_ptr() % 16:
        return "needs a dense, aligned channels-last input"
    co, ci, kt, kh, kw = weight.shape
    if ci != x.shape[1] or ci % 16 or co % 16 or kh % 2 == 0 or kw % 2 == 0:
        return f"shape {tuple(weight.shape)}"
    if x.shape[2] < kt:
        return "fewer frames than temporal taps"
    return None


def gemm_weight(weight: torch.Tensor) -> torch.Tensor:
    """[Co, Ci, kt, kh, kw] -> [kt*kh*kw*Ci, Co], rows in the kernel's K order (tap, channel)."""
    co = weight.shape[0]
    return weight.permute(2, 3, 4, 1, 0).reshape(-1, co).contiguous()


if triton is not None:

    @triton.jit
    def _epilogue(acc, bias_ptr, y_desc, r_desc, row, w0, n0, CO, BW: tl.constexpr, BN: tl.constexpr,
                  HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr):
        if HAS_BIAS:
            cols = n0 + tl.arange(0, BN)
            acc += tl.load(bias_ptr + cols, mask=cols < CO, other=0.0).to(tl.float32)[None, :]
        if HAS_RES:  # the residual block's shortcut, added before the one rounding to bf16
            acc += r_desc.load([row, w0, n0]).reshape(BW, BN).to(tl.float32)
        y_desc.store([row, w0, n0], acc.to(y_desc.dtype).reshape(1, BW, BN))

    @triton.jit
    def _conv_kernel(
        x_desc,
        w_desc,
        w2_desc,
        y_desc,
        y2_desc,
        r_desc,
        r2_desc,
        bias_ptr,
        H,
        W,
        CO,
        n_w,
        n_n,
        KT: tl.constexpr,
        KH: tl.constexpr,
        KW: tl.constexpr,
        CI: tl.constexpr,
        BW: tl.constexpr,
        BN: tl.constexpr,
        BN2: tl.constexpr,
        BK: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        HAS_RES: tl.constexpr,
        STAGES: tl.constexpr,
    ):
        """Output pixels [w0, w0+BW) of row h of frame t, channels [n0, n0+BN) (+ BN2 more).
        Program ids run output channels fastest, so neighbours share their A tiles in L2.
        x_desc views the input as [T*H, W, Ci], so a frame's row is one box coordinate."""
        pid = tl.program_id(0)
        pn = pid % n_n
        rest = pid // n_n
        pw = rest % n_w
        rest = rest // n_w
        h = rest % H
        t = rest // H
        w0 = pw * BW
        n0 = pn * (BN + BN2)
        NK: tl.constexpr = CI // BK
        acc = tl.zeros([BW, BN], dtype=tl.float32)
        if BN2:
            acc2 = tl.zeros([BW, BN2], dtype=tl.float32)
        for i in tl.range(0, KT * KH * KW * NK, num_stages=STAGES):
            tap = i // NK
            kk = (i - tap * NK) * BK
            dt = tap // (KH * KW)
            r = tap - dt * (KH * KW)
            dh = r // KW
            dw = r - dh * KW
            hs = h + dh - KH // 2
            # a row above or below the frame is zero padding: point the box at row -1, which the
            # hardware fills with zeros, not at a neighbouring frame's row
            row = tl.where((hs >= 0) & (hs < H), (t + dt) * H + hs, -1)
            a = x_desc.load([row, w0 + dw - KW // 2, kk]).reshape(BW, BK)
            acc = tl.dot(a, w_desc.load([i * BK, n0]), acc)
            if BN2:
                acc2 = tl.dot(a, w2_desc.load([i * BK, n0 + BN]), acc2)
        row_out = t * H + h
        _epilogue(acc, bias_ptr, y_desc, r_desc, row_out, w0, n0, CO, BW, BN, HAS_BIAS, HAS_RES)
        if BN2:
            _epilogue(acc2, bias_ptr, y2_desc, r2_desc, row_out, w0, n0 + BN, CO, BW, BN2, HAS_BIAS, HAS_RES)


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, w2: torch.Tensor | None = None,
           tile: Tile | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """F.conv3d(x, weight, bias, padding=(0, kh//2, kw//2)) (+ residual) for x [1, Ci, T, H, W]
    channels-last: [1, Co, T-kt+1, H, W] channels-last. `w2`: gemm_weight(weight), when the caller
    caches it; `residual`: a tensor of the output's shape and layout, added in float32 before the
    output's one rounding (the residual block's shortcut, without a pass of its own)."""
    why = supported(x, weight)
    if why is not None:
        raise ValueError(f"conv_gemm: {why}")
    co, ci, kt, kh, kw = weight.shape
    _, _, t_in, h, w = x.shape
    t_out = t_in - kt + 1
    shape = (1, co, t_out, h, w)
    if residual is not None and (tuple(residual.shape) != shape or residual.dtype != x.dtype
                                 or not residual.is_contiguous(memory_format=torch.channels_last_3d)):
        raise ValueError(f"conv_gemm: residual {tuple(residual.shape)} {residual.dtype} is not a dense "
                         f"channels-last {shape} {x.dtype}")
    tile = tile or pick_tile(w, ci, co)
    w2 = gemm_weight(weight) if w2 is None else w2
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last_3d)

    def rows(t: torch.Tensor, frames: int, c: int) -> torch.Tensor:
        return t[0].permute(1, 2, 3, 0).reshape(frames * h, w, c)  # a view: [T*H, W, C]

    yv = y if residual is None else residual
    bn2 = tile.bn2 or tile.bn  # unused descriptors when bn2 == 0 (a valid box all the same)
    descs = (
        TensorDescriptor.from_tensor(rows(x, t_in, ci), [1, tile.bw, tile.bk]),
        TensorDescriptor.from_tensor(w2, [tile.bk, tile.bn]),
        TensorDescriptor.from_tensor(w2, [tile.bk, bn2]),
        TensorDescriptor.from_tensor(rows(y, t_out, co), [1, tile.bw, tile.bn]),
        TensorDescriptor.from_tensor(rows(y, t_out, co), [1, tile.bw, bn2]),
        TensorDescriptor.from_tensor(rows(yv, t_out, co), [1, tile.bw, tile.bn]),
        TensorDescriptor.from_tensor(rows(yv, t_out, co), [1, tile.bw, bn2]),
    )
    n_w, n_n = triton.cdiv(w, tile.bw), triton.cdiv(co, tile.bn + tile.bn2)
    _conv_kernel[(t_out * h * n_w * n_n,)](
        *descs, bias if bias is not None else w2, h, w, co, n_w, n_n, KT=kt, KH=kh, KW=kw, CI=ci, BW=tile.bw,
        BN=tile.bn, BN2=tile.bn2, BK=tile.bk, HAS_BIAS=bias is not None, HAS_RES=residual is not None,
        STAGES=tile.stages, num_warps=tile.warps)
    return y
