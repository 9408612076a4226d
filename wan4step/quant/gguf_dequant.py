"""Where a GGUF byte becomes a number: ggml block formats decoded in torch.

One small function per quant type, each working on a `(n_blocks, type_size)`
uint8 view of the raw bytes, in a table keyed by `gguf.GGMLQuantizationType`.
Every function reproduces `gguf.quants.dequantize` (the numpy reference of
llama.cpp's formats) bit for bit: the arithmetic is float32 in the reference's
order of operations (e.g. `(d * sc) * q - dmin * m`, never fused), and only the
final float32 result is cast to the requested dtype. Running in torch means the
decode happens on whatever device holds the bytes (the GPU in practice), so RAM
and the PCIe bus only ever carry the stored encoding.

Layouts (ggml's, see `gguf.quants` for the reference decoder):
- Q4_0/Q5_0/Q8_0: 32 weights per block, fp16 scale d; x = d * q.
- Q4_1/Q5_1: 32 weights, fp16 d and m; x = d * q + m.
- Q2_K..Q6_K: 256 weights per super-block, sub-blocks of 16 or 32 with
  4/6/8-bit sub-scales (and sub-mins) relative to fp16 super-scales.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import FormatError, UnsupportedQuantError

Q = GGMLQuantizationType

# The tiers QuantStack / city96 publish for Wan use only these.
SUPPORTED_TYPES: frozenset[int] = frozenset(
    int(t)
    for t in (
        Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1,
        Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K,
    )
)
FLOAT_TYPES: frozenset[int] = frozenset(int(t) for t in (Q.F32, Q.F16, Q.BF16))

TIER_FIX = (
    "use a QuantStack Wan2.1-T2V-14B GGUF of tier Q2_K, Q3_K_S/M/L, Q4_0, Q4_1, Q4_K_S/M, "
    "Q5_0, Q5_1, Q5_K_S/M, Q6_K or Q8_0 (or F16/BF16); IQ*, TQ* and MXFP4 files are not supported."
)


def type_name(qtype: int) -> str:
    try:
        return Q(int(qtype)).name
    except ValueError:
        return f"unknown ggml type id {int(qtype)}"


def check_supported(qtype: int, path: str | Path | None = None, tensor: str | None = None) -> None:
    """Raise `UnsupportedQuantError` naming the type (and file/tensor) if we cannot decode it."""
    if int(qtype) in SUPPORTED_TYPES:
        return
    where = f" (tensor '{tensor}')" if tensor else ""
    raise UnsupportedQuantError(
        f"GGUF quantization type {type_name(qtype)}{where} is not supported",
        path=path,
        expected="one of " + ", ".join(Q(t).name for t in sorted(SUPPORTED_TYPES)),
        found=type_name(qtype),
        fix=TIER_FIX,
    )


def block_geometry(qtype: int) -> tuple[int, int]:
    """(weights per block, bytes per block) of a ggml type."""
    check_supported(qtype)
    return GGML_QUANT_SIZES[Q(int(qtype))]


def row_bytes(qtype: int, shape: Sequence[int]) -> int:
    """Bytes of one row (the last, contiguous logical dim) of a tensor of this type and shape."""
    block, size = block_geometry(qtype)
    cols = int(shape[-1]) if len(shape) else 1
    if cols % block:
        raise FormatError(
            f"a {type_name(qtype)} row must hold whole blocks of {block} weights",
            expected=f"last dimension a multiple of {block}",
            found=f"shape {tuple(shape)}",
        )
    return cols // block * size


def tensor_bytes(qtype: int, shape: Sequence[int]) -> int:
    rows = 1
    for s in shape[:-1]:
        rows *= int(s)
    return rows * row_bytes(qtype, shape)


# -- bit helpers ---------------------------------------------------------------

def _f16(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The fp16 stored at byte `at` of every block, as float32 (n, 1)."""
    return blocks[:, at : at + 2].contiguous().view(torch.float16).to(torch.float32)


def _planes(b: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """(..., k) bytes -> (..., count, k): plane i holds bits [bits*i, bits*(i+1)) of each byte."""
    shifts = torch.arange(0, bits * count, bits, dtype=torch.uint8, device=b.device).view(count, 1)
    return (b.unsqueeze(-2) >> shifts) & ((1 << bits) - 1)


def _lsb_bits(b: torch.Tensor) -> torch.Tensor:
    """(n, k) bytes -> (n, 8k) bits, byte by byte, least significant bit first (a little-endian bitfield)."""
    shifts = torch.arange(8, dtype=torch.uint8, device=b.device)
    return ((b.unsqueeze(-1) >> shifts) & 1).reshape(b.shape[0], -1)


def _k_scale_min(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: twelve bytes -> eight 6-bit scales and eight 6-bit mins, as float32 (n, 8).

    Bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7,
    bytes 4-7 the same for the mins, bytes 8-11 the low nibbles of scales 4-7
    (low half) and mins 4-7 (high half).
    """
    s = s.reshape(-1, 3, 4)
    a, m, lo = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([a & 63, (lo & 15) | ((a >> 2) & 48)], dim=-1)
    mn = torch.cat([m & 63, (lo >> 4) | ((m >> 2) & 48)], dim=-1)
    return sc.to(torch.float32), mn.to(torch.float32)


# -- one function per type: (n_blocks, type_size) uint8 -> (n_blocks, block_size) float32

def _q8_0(b: torch.Tensor) -> torch.Tensor:
    return b[:, 2:].view(torch.int8).to(torch.float32) * _f16(b, 0)


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    q = _planes(b[:, 2:], 4, 2).reshape(-1, 32).to(torch.int8) - 8
    return _f16(b, 0) * q.to(torch.float32)


def _q4_1(b: torch.Tensor) -> torch.Tensor:
    q = _planes(b[:, 4:], 4, 2).reshape(-1, 32).to(torch.float32)
    return _f16(b, 0) * q + _f16(b, 2)


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    q = _planes(b[:, 6:], 4, 2).reshape(-1, 32) | (_lsb_bits(b[:, 2:6]) << 4)
    return _f16(b, 0) * (q.to(torch.int8) - 16).to(torch.float32)


def _q5_1(b: torch.Tensor) -> torch.Tensor:
    q = _planes(b[:, 8:], 4, 2).reshape(-1, 32) | (_lsb_bits(b[:, 4:8]) << 4)
    return _f16(b, 0) * q.to(torch.float32) + _f16(b, 2)


def _q2_k(b: torch.Tensor) -> torch.Tensor:
    # scales[16] (low nibble: scale, high: min) | qs[64] (2-bit) | d | dmin
    n = b.shape[0]
    sc = b[:, :16]
    dl = (_f16(b, 80) * (sc & 15).to(torch.float32)).view(n, 16, 1)
    ml = (_f16(b, 82) * (sc >> 4).to(torch.float32)).view(n, 16, 1)
    q = _planes(b[:, 16:80].reshape(n, 2, 32), 2, 4).reshape(n, 16, 16).to(torch.float32)
    return (dl * q - ml).reshape(n, 256)


def _q3_k(b: torch.Tensor) -> torch.Tensor:
    # hmask[32] (3rd bit, set = no offset) | qs[64] (low 2 bits) | scales[12] (16 x 6-bit, +32) | d
    n = b.shape[0]
    s = b[:, 96:108]
    low = _planes(s[:, :8], 4, 2).reshape(n, 16)
    high = _planes(s[:, 8:12], 2, 4).reshape(n, 16)
    sc = ((low | (high << 4)).to(torch.int8) - 32).to(torch.float32)
    dl = (_f16(b, 108) * sc).view(n, 16, 1)
    ql = _planes(b[:, 32:96].reshape(n, 2, 32), 2, 4).reshape(n, 16, 16).to(torch.int8)
    qh = _planes(b[:, :32].reshape(n, 1, 32), 1, 8).reshape(n, 16, 16)
    q = (ql - ((qh ^ 1) << 2).to(torch.int8)).to(torch.float32)
    return (dl * q).reshape(n, 256)


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    # d | dmin | scales[12] | qs[128] (4-bit, 8 sub-blocks of 32)
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    d = (_f16(b, 0) * sc).view(n, 8, 1)
    m = (_f16(b, 2) * mn).view(n, 8, 1)
    q = _planes(b[:, 16:].reshape(n, 4, 32), 4, 2).reshape(n, 8, 32).to(torch.float32)
    return (d * q - m).reshape(n, 256)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    # d | dmin | scales[12] | qh[32] (5th bit, bit j = sub-block j) | qs[128]
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    d = (_f16(b, 0) * sc).view(n, 8, 1)
    m = (_f16(b, 2) * mn).view(n, 8, 1)
    ql = _planes(b[:, 48:].reshape(n, 4, 32), 4, 2).reshape(n, 8, 32)
    qh = _planes(b[:, 16:48].reshape(n, 1, 32), 1, 8).reshape(n, 8, 32)
    q = (ql | (qh << 4)).to(torch.float32)
    return (d * q - m).reshape(n, 256)


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    # ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales[16] int8 | d ; q - 32
    n = b.shape[0]
    d = (_f16(b, 208) * b[:, 192:208].view(torch.int8).to(torch.float32)).view(n, 16, 1)
    ql = _planes(b[:, :128].reshape(n, 2, 64), 4, 2).reshape(n, 8, 32)
    qh = _planes(b[:, 128:192].reshape(n, 2, 32), 2, 4).reshape(n, 8, 32)
    q = ((ql | (qh << 4)).to(torch.int8) - 32).reshape(n, 16, 16).to(torch.float32)
    return (d * q).reshape(n, 256)


BLOCK_DECODERS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    int(Q.Q8_0): _q8_0,
    int(Q.Q4_0): _q4_0,
    int(Q.Q4_1): _q4_1,
    int(Q.Q5_0): _q5_0,
    int(Q.Q5_1): _q5_1,
    int(Q.Q2_K): _q2_k,
    int(Q.Q3_K): _q3_k,
    int(Q.Q4_K): _q4_k,
    int(Q.Q5_K): _q5_k,
    int(Q.Q6_K): _q6_k,
}

_FLOAT_VIEWS = {int(Q.F32): torch.float32, int(Q.F16): torch.float16, int(Q.BF16): torch.bfloat16}


def _as_bytes(data: torch.Tensor) -> torch.Tensor:
    if data.dtype != torch.uint8:
        data = data.contiguous().view(torch.uint8)
    return data


def dequantize(
    data: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """Decode raw ggml bytes (uint8 [rows, bytes_per_row] or flat) to a `shape` tensor of `dtype`.

    Runs on `data.device`. Bit-exact vs `gguf.quants.dequantize` followed by a
    cast to `dtype`. For F32/F16/BF16 with a matching `dtype` the result may be
    a view of `data` (no copy).
    """
    qtype = int(qtype)
    check_supported(qtype)
    shape = tuple(int(s) for s in shape)
    data = _as_bytes(data)
    block, size = GGML_QUANT_SIZES[Q(qtype)]
    n = 1
    for s in shape:
        n *= s
    # counted over the whole tensor, not per row: a converter may have stored it reshaped
    # to [n / 256, 256] (comfy.gguf.orig_shape), and blocks decode in flat order either way
    want = n // block * size
    if n % block or data.numel() != want:
        raise FormatError(
            f"{type_name(qtype)} tensor holds the wrong number of bytes",
            expected=f"{want} bytes for shape {shape} (whole blocks of {block} weights)",
            found=f"{data.numel()} bytes",
            fix="the file is damaged; download it again.",
        )
    if qtype in _FLOAT_VIEWS:
        return data.reshape(-1).view(_FLOAT_VIEWS[qtype]).reshape(shape).to(dtype)
    blocks = data.reshape(-1, size)
    return BLOCK_DECODERS[qtype](blocks).reshape(shape).to(dtype)
