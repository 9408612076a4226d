"""One-pass Triton decoders for the common GGUF tiers (Q4_K, Q5_K, Q6_K, Q8_0).

The torch decoders in `gguf_dequant` launch a dozen small kernels per weight and
materialise float32 intermediates (~12 bytes of traffic per weight). These read
the block bytes once and write bf16/fp16 once (~2.6 bytes per weight for Q4_K),
with the same float32 arithmetic in the same order as `gguf.quants` and FMA
contraction disabled (`enable_fp_fusion=False`), so they are bit-exact vs the
torch path (tests run them under TRITON_INTERPRET=1 on the CPU).

Each program decodes `BLOCKS` ggml blocks seen as a (BLOCKS, block_size) matrix
through `decode_tile`, the one copy of the bit layouts. Scales are
computed once per (block, scale unit), quant bits per element; all loads hit L1
since a block is 34-210 bytes.
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
def round_half(val, OUT_BF16: tl.constexpr, BY_HAND: tl.constexpr):
    """float32 -> bf16 (OUT_BF16) or fp16, round to nearest even as torch's `.to()` does.

    BY_HAND does bf16 in integer ops (NaN -> 0x7FC0, as torch) because the interpreter's own
    f32->bf16 cast truncates and the tests need the bits exact; compiled code may use the
    hardware cast (cvt.rn), which rounds the same way.
    """
    if OUT_BF16:
        if BY_HAND:
            bits = val.to(tl.uint32, bitcast=True)
            r = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            r = tl.where(val != val, 0x7FC0, r)
            out = r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            out = val.to(tl.bfloat16)
    else:
        out = val.to(tl.float16)
    return out


@triton.jit
def _store(dst, offs, val, mask, OUT_BF16: tl.constexpr):
    """Store float32 `val` rounded to bf16/fp16 into the int16 view `dst` (the bf16 cast by hand, see `round_half`)."""
    tl.store(dst + offs, round_half(val, OUT_BF16, True).to(tl.int16, bitcast=True), mask=mask)


# -- per-element decoding of a (rows, K-chunk) tile ----------------------------------
# A tile is addressed as (row, sub-block unit u, element el in the unit): weight column
# k = u * SUB + el, where SUB is the weights sharing one scale (32 for Q8_0 = the whole
# block, 32 for Q4_K/Q5_K, 16 for Q6_K). Scale arithmetic then runs once per (row, u)
# and only the quant bits per element, in the same float32 order as `gguf.quants`.
# `decode_tile` is the one place the bit layouts live (the one-pass decoders below call it).

# qtype -> (weights per block, bytes per block, weights per scale unit SUB)
GEOMETRY: dict[int, tuple[int, int, int]] = {
    int(Q.Q8_0): (32, 34, 32),
    int(Q.Q4_K): (256, 144, 32),
    int(Q.Q5_K): (256, 176, 32),
    int(Q.Q6_K): (256, 210, 16),
}


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
def _q8_0_unit(base, el, mask):
    d = _f16_at(base, 0, mask)
    q = tl.load(base + 2 + el, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)
    return q * d


@triton.jit
def _q4_k_unit(base, j, el, mask):
    sc, mn = _k_scale_min(base, j, mask)
    d = _f16_at(base, 0, mask) * sc
    m = _f16_at(base, 2, mask) * mn
    # element e = j*32 + el = c*64 + h*32 + el lives in qs[c*32 + el] at bit 4h (c = j // 2, h = j % 2)
    byte = tl.load(base + 16 + (j // 2) * 32 + el, mask=mask, other=0)
    q = ((byte >> ((j % 2) * 4)) & 15).to(tl.float32)
    return d * q - m


@triton.jit
def _q5_k_unit(base, j, el, mask):
    sc, mn = _k_scale_min(base, j, mask)
    d = _f16_at(base, 0, mask) * sc
    m = _f16_at(base, 2, mask) * mn
    byte = tl.load(base + 48 + (j // 2) * 32 + el, mask=mask, other=0)
    hbit = (tl.load(base + 16 + el, mask=mask, other=0) >> j) & 1  # qh[el] bit j
    q = (((byte >> ((j % 2) * 4)) & 15) | (hbit << 4)).to(tl.float32)
    return d * q - m


@triton.jit
def _q6_k_unit(base, j, el, mask):
    # j: one of the 16 sub-blocks of 16 weights, each with its own int8 scale
    sc = tl.load(base + 192 + j, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)
    d = _f16_at(base, 208, mask) * sc
    e = j * 16 + el
    h = e // 128
    r = e % 128
    lo = (tl.load(base + h * 64 + r % 64, mask=mask, other=0) >> ((r // 64) * 4)) & 15
    hi = (tl.load(base + 128 + h * 32 + r % 32, mask=mask, other=0) >> ((r // 32) * 2)) & 3
    q = ((lo | (hi << 4)).to(tl.int32) - 32).to(tl.float32)
    return d * q


@triton.jit
def decode_tile(src, rows, u, el, row_bytes, mask, QTYPE: tl.constexpr):
    """float32 weights at (rows, u * SUB + el) of a row-major matrix of ggml blocks, `row_bytes` apart.

    rows (int64) broadcasts as [R, 1, 1], u (scale unit along the row) as [1, S, 1], el (0..SUB-1)
    as [1, 1, SUB]; `mask` must be shaped like rows & u (a whole unit is in or out). The result is
    [R, S, SUB], bit-identical to `gguf_dequant` in float32 (compile with enable_fp_fusion=False).
    """
    if QTYPE == 8:  # Q8_0: one 32-weight block per unit
        val = _q8_0_unit(src + rows * row_bytes + u * 34, el, mask)
    elif QTYPE == 12:  # Q4_K: 8 units of 32 per 144-byte super-block
        val = _q4_k_unit(src + rows * row_bytes + (u // 8) * 144, u % 8, el, mask)
    elif QTYPE == 13:  # Q5_K: 8 units of 32 per 176-byte super-block
        val = _q5_k_unit(src + rows * row_bytes + (u // 8) * 176, u % 8, el, mask)
    else:  # Q6_K: 16 units of 16 per 210-byte super-block
        tl.static_assert(QTYPE == 14)
        val = _q6_k_unit(src + rows * row_bytes + (u // 16) * 210, u % 16, el, mask)
    return val


@triton.jit
def _decode_kernel(
    src, dst, n_blocks, QTYPE: tl.constexpr, BLOCK: tl.constexpr, SIZE: tl.constexpr, SUB: tl.constexpr,
    BLOCKS: tl.constexpr, OUT_BF16: tl.constexpr,
):
    """BLOCKS whole blocks per program, seen as a (BLOCKS, BLOCK) matrix with SIZE bytes per row."""
    blk = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)[:, None, None]
    u = tl.arange(0, BLOCK // SUB)[None, :, None]
    el = tl.arange(0, SUB)[None, None, :]
    mask = (blk < n_blocks) & (u >= 0)
    val = decode_tile(src, blk, u, el, SIZE, mask, QTYPE)
    _store(dst, blk * BLOCK + u * SUB + el, val, mask, OUT_BF16)


# qtype -> blocks per program (about 2K weights each)
_PER_PROGRAM = {int(Q.Q8_0): 64, int(Q.Q4_K): 8, int(Q.Q5_K): 8, int(Q.Q6_K): 8}


def triton_dequantize(data: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """Decode `data` (uint8, contiguous ggml blocks) to a new `shape` tensor of `dtype` in one kernel."""
    qtype = int(qtype)
    block, size, sub = GEOMETRY[qtype]
    per_prog = _PER_PROGRAM[qtype]
    data = data.contiguous()
    n_blocks = data.numel() // size
    n = 1
    for s in shape:
        n *= int(s)
    if n_blocks * block != n or data.numel() != n_blocks * size:
        raise ValueError(f"{Q(qtype).name}: {data.numel()} bytes do not hold a {tuple(shape)} tensor")
    out = torch.empty(tuple(int(s) for s in shape), dtype=dtype, device=data.device)
    bf16 = dtype == torch.bfloat16
    grid = (triton.cdiv(n_blocks, per_prog),)
    _decode_kernel[grid](
        data, out.view(torch.int16), n_blocks, QTYPE=qtype, BLOCK=block, SIZE=size, SUB=sub,
        BLOCKS=per_prog, OUT_BF16=bf16, num_warps=4, enable_fp_fusion=False,
    )
    return out


def _decoder(qtype: int) -> Callable[[torch.Tensor, Sequence[int], torch.dtype], torch.Tensor]:
    return lambda data, shape, dtype: triton_dequantize(data, qtype, shape, dtype)


TRITON_DECODERS = {q: _decoder(q) for q in GEOMETRY}
