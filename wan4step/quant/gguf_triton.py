"""One-pass Triton decoders for the common GGUF tiers (Q4_K, Q5_K, Q6_K, Q8_0).

The torch decoders in `gguf_dequant` launch a dozen small kernels per weight and
materialise float32 intermediates (~12 bytes of traffic per weight). These read
the block bytes once and write bf16/fp16 once (~2.6 bytes per weight for Q4_K),
with the same float32 arithmetic in the same order as `gguf.quants` and FMA
contraction disabled (`enable_fp_fusion=False`), so they are bit-exact vs the
torch path (tests run them under TRITON_INTERPRET=1 on the CPU).

Each program decodes `BLOCKS` ggml blocks laid out as a (BLOCKS, block_size)
tile; every output element gathers its own quant byte and scale bytes, which
all hit L1 since a block is 34-210 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import triton
import triton.language as tl
from gguf import GGMLQuantizationType

Q = GGMLQuantizationType


@triton.jit
def _f16_at(base, at: tl.constexpr, mask):
    """The little-endian fp16 at byte `at` of each block, as float32."""
    lo = tl.load(base + at, mask=mask, other=0).to(tl.uint16)
    hi = tl.load(base + at + 1, mask=mask, other=0).to(tl.uint16)
    return (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _store(dst, offs, val, mask, OUT_BF16: tl.constexpr):
    """Store float32 `val` rounded to dst's type; bf16 by hand (round to nearest even, NaN -> 0x7FC0,
    as torch does) because the interpreter's own f32->bf16 cast truncates, and the tests need it exact."""
    if OUT_BF16:
        bits = val.to(tl.uint32, bitcast=True)
        r = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        r = tl.where(val != val, 0x7FC0, r)
        tl.store(dst + offs, r.to(tl.uint16).to(tl.int16, bitcast=True), mask=mask)
    else:
        tl.store(dst + offs, val.to(dst.dtype.element_ty), mask=mask)


@triton.jit
def _q8_0_kernel(src, dst, n_blocks, BLOCKS: tl.constexpr, OUT_BF16: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)[:, None]
    e = tl.arange(0, 32)[None, :]
    mask = blk < n_blocks
    base = src + blk * 34
    d = _f16_at(base, 0, mask)
    q = tl.load(base + 2 + e, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)
    _store(dst, blk * 32 + e, q * d, mask, OUT_BF16)


@triton.jit
def _k_scale_min(base, j, mask):
    """Q4_K/Q5_K: 6-bit scale and min of sub-block j (0..7) from the twelve bytes at offset 4."""
    jj = j % 4
    a = tl.load(base + 4 + jj, mask=mask, other=0)
    b = tl.load(base + 8 + jj, mask=mask, other=0)
    c = tl.load(base + 12 + jj, mask=mask, other=0)
    low = j < 4
    sc = tl.where(low, a & 63, (c & 15) | ((a >> 6) << 4))
    mn = tl.where(low, b & 63, (c >> 4) | ((b >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _q4_k_kernel(src, dst, n_blocks, BLOCKS: tl.constexpr, OUT_BF16: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)[:, None]
    e = tl.arange(0, 256)[None, :]
    mask = blk < n_blocks
    base = src + blk * 144
    j = e // 32
    sc, mn = _k_scale_min(base, j, mask)
    d = _f16_at(base, 0, mask) * sc
    m = _f16_at(base, 2, mask) * mn
    # element e = c*64 + h*32 + l lives in qs[c*32 + l] at bit 4h
    byte = tl.load(base + 16 + (e // 64) * 32 + e % 32, mask=mask, other=0)
    q = ((byte >> ((j % 2) * 4)) & 15).to(tl.float32)
    _store(dst, blk * 256 + e, d * q - m, mask, OUT_BF16)


@triton.jit
def _q5_k_kernel(src, dst, n_blocks, BLOCKS: tl.constexpr, OUT_BF16: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)[:, None]
    e = tl.arange(0, 256)[None, :]
    mask = blk < n_blocks
    base = src + blk * 176
    j = e // 32
    sc, mn = _k_scale_min(base, j, mask)
    d = _f16_at(base, 0, mask) * sc
    m = _f16_at(base, 2, mask) * mn
    byte = tl.load(base + 48 + (e // 64) * 32 + e % 32, mask=mask, other=0)
    hbit = (tl.load(base + 16 + e % 32, mask=mask, other=0) >> j) & 1  # qh[l] bit j
    q = (((byte >> ((j % 2) * 4)) & 15) | (hbit << 4)).to(tl.float32)
    _store(dst, blk * 256 + e, d * q - m, mask, OUT_BF16)


@triton.jit
def _q6_k_kernel(src, dst, n_blocks, BLOCKS: tl.constexpr, OUT_BF16: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)[:, None]
    e = tl.arange(0, 256)[None, :]
    mask = blk < n_blocks
    base = src + blk * 210
    h = e // 128
    r = e % 128
    sc = tl.load(base + 192 + e // 16, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)
    d = _f16_at(base, 208, mask) * sc
    lo = (tl.load(base + h * 64 + r % 64, mask=mask, other=0) >> ((r // 64) * 4)) & 15
    hi = (tl.load(base + 128 + h * 32 + r % 32, mask=mask, other=0) >> ((r // 32) * 2)) & 3
    q = ((lo | (hi << 4)).to(tl.int32) - 32).to(tl.float32)
    _store(dst, blk * 256 + e, d * q, mask, OUT_BF16)


# qtype -> (kernel, weights per block, bytes per block, blocks per program)
_KERNELS = {
    int(Q.Q8_0): (_q8_0_kernel, 32, 34, 64),
    int(Q.Q4_K): (_q4_k_kernel, 256, 144, 8),
    int(Q.Q5_K): (_q5_k_kernel, 256, 176, 8),
    int(Q.Q6_K): (_q6_k_kernel, 256, 210, 8),
}


def triton_dequantize(data: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """Decode `data` (uint8, contiguous ggml blocks) to a new `shape` tensor of `dtype` in one kernel."""
    kernel, block, size, per_prog = _KERNELS[int(qtype)]
    data = data.contiguous()
    n_blocks = data.numel() // size
    n = 1
    for s in shape:
        n *= int(s)
    if n_blocks * block != n or data.numel() != n_blocks * size:
        raise ValueError(f"{Q(int(qtype)).name}: {data.numel()} bytes do not hold a {tuple(shape)} tensor")
    out = torch.empty(tuple(int(s) for s in shape), dtype=dtype, device=data.device)
    bf16 = dtype == torch.bfloat16
    grid = (triton.cdiv(n_blocks, per_prog),)
    kernel[grid](
        data, out.view(torch.int16) if bf16 else out, n_blocks,
        BLOCKS=per_prog, OUT_BF16=bf16, num_warps=4, enable_fp_fusion=False,
    )
    return out


def _decoder(qtype: int) -> Callable[[torch.Tensor, Sequence[int], torch.dtype], torch.Tensor]:
    return lambda data, shape, dtype: triton_dequantize(data, qtype, shape, dtype)


TRITON_DECODERS = {q: _decoder(q) for q in _KERNELS}
