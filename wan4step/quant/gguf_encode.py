"""ggml block encoders in numpy, for the test fixtures and the tiny demo model.

`gguf` can quantize the legacy types (Q4_0 ... Q8_0, BF16) but not the K-quants,
and the QuantStack tiers are mostly K-quants, so this module encodes those too.
These are not llama.cpp's optimal-scale searches: every sub-block gets its own
scale (and min) from its range, refined once by least squares, then the
sub-scales are quantized against the super-block's fp16 scale. That is enough
for valid, sensible encodings whose error matches the bit width (the tests
check both, decoding with gguf's own numpy dequantizer).

`random_raw` builds valid random blocks directly in torch (random bytes with
sane fp16 scales), for benchmarks at the 14B shapes where encoding 70M weights
in numpy would take minutes.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gq

from .gguf_dequant import SUPPORTED_TYPES, check_supported

Q = GGMLQuantizationType
QK_K = 256


def _f16(x: np.ndarray) -> np.ndarray:
    """float32 (n,) -> (n, 2) bytes of its fp16."""
    return np.ascontiguousarray(x, dtype=np.float32).astype(np.float16).reshape(-1, 1).view(np.uint8)


def _f16_round(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1), 0.0).astype(np.float32)


def _pack_planes(v: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of the decoder's planes: (n, count, k) small ints -> (n, k) bytes, plane i at bit bits*i."""
    out = np.zeros(v.shape[:1] + v.shape[2:], dtype=np.uint8)
    for i in range(v.shape[1]):
        out |= (v[:, i].astype(np.uint8) << np.uint8(bits * i)).astype(np.uint8)
    return out


# -- symmetric K-quants (Q3_K, Q6_K): x = d * sc * q ----------------------------

def _symmetric(sub: np.ndarray, qmin: int, qmax: int, smin: int, smax: int):
    """sub (n, S, L) -> (d (n,) fp16-rounded, sc (n, S) int, q (n, S, L) int in [qmin, qmax]).

    Each sub-block's largest-magnitude value maps to `qmin` (the side with one
    more level), refined by a least-squares scale for the chosen q; sub-scales
    are then signed integers relative to the block scale d.
    """
    idx = np.abs(sub).argmax(axis=-1)[..., None]
    peak = np.take_along_axis(sub, idx, axis=-1)[..., 0]
    scale = peak / qmin  # (n, S), may be negative
    for _ in range(2):
        q = np.clip(np.rint(_safe_div(sub, scale[..., None])), qmin, qmax)
        qq = (q * q).sum(-1)
        scale = np.where(qq > 0, _safe_div((sub * q).sum(-1), qq), scale)
    # block scale: the sub-scale with the largest magnitude maps to smin
    bi = np.abs(scale).argmax(axis=-1)[:, None]
    big = np.take_along_axis(scale, bi, axis=-1)[:, 0]
    d = _f16_round(big / smin)
    sc = np.clip(np.rint(_safe_div(scale, d[:, None])), smin, smax).astype(np.int32)
    dl = (d[:, None] * sc.astype(np.float32))[..., None]
    q = np.clip(np.rint(_safe_div(sub, dl)), qmin, qmax).astype(np.int32)
    return d, sc, q


def _encode_q6_k(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    d, sc, q = _symmetric(x.reshape(n, 16, 16), -32, 31, -128, 127)
    u = (q + 32).reshape(n, 256).astype(np.uint8)
    # element e = h*128 + k*64 + m: low nibble in ql[h*64 + m] at bit 4k
    lo = (u & 15).reshape(n, 2, 2, 64)
    ql = np.concatenate([_pack_planes(lo[:, h], 4) for h in range(2)], axis=1)
    # element e = h*128 + s*32 + l: high 2 bits in qh[h*32 + l] at bit 2s
    hi = (u >> 4).reshape(n, 2, 4, 32)
    qh = np.concatenate([_pack_planes(hi[:, h], 2) for h in range(2)], axis=1)
    return np.concatenate([ql, qh, sc.astype(np.int8).view(np.uint8), _f16(d)], axis=1)


def _encode_q3_k(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    d, sc, q = _symmetric(x.reshape(n, 16, 16), -4, 3, -32, 31)
    u = (q + 4).reshape(n, 256).astype(np.uint8)
    # element e = j*32 + l: third bit in hmask[l] at bit j
    hmask = _pack_planes((u >> 2).reshape(n, 8, 32), 1)
    # element e = h*128 + s*32 + l: low 2 bits in qs[h*32 + l] at bit 2s
    lo = (u & 3).reshape(n, 2, 4, 32)
    qs = np.concatenate([_pack_planes(lo[:, h], 2) for h in range(2)], axis=1)
    s = (sc + 32).astype(np.uint8)  # 6-bit
    low = _pack_planes((s & 15).reshape(n, 2, 8), 4)  # scale i<8: low nibble of byte i; i>=8: high nibble of i-8
    high = _pack_planes((s >> 4).reshape(n, 4, 4), 2)  # scale i: byte 8 + i%4, bit 2*(i//4)
    return np.concatenate([hmask, qs, low, high, _f16(d)], axis=1)


# -- asymmetric K-quants (Q2_K, Q4_K, Q5_K): x = d * sc * q - dmin * m ----------

def _asymmetric(sub: np.ndarray, qmax: int, smax: int):
    """sub (n, S, L) -> (d, dmin (n,) fp16-rounded, sc, m (n, S) in [0, smax], q (n, S, L) in [0, qmax]).

    Each sub-block spans [min(x, 0), max(x)] (mins are stored unsigned, so the
    offset never goes above zero), refined by a least-squares (scale, min) fit for
    the chosen q, then both are quantized against the block's fp16 d and dmin.
    """
    lo = np.minimum(sub.min(axis=-1), 0.0)
    hi = sub.max(axis=-1)
    scale = (hi - lo) / qmax
    off = -lo  # >= 0
    for _ in range(2):
        q = np.clip(np.rint(_safe_div(sub + off[..., None], scale[..., None])), 0, qmax)
        L = sub.shape[-1]
        sq, sqq, sx, sqx = q.sum(-1), (q * q).sum(-1), sub.sum(-1), (q * sub).sum(-1)
        det = L * sqq - sq * sq
        ok = det > 0
        s_new = _safe_div(L * sqx - sq * sx, np.where(ok, det, 1))
        o_new = _safe_div(s_new * sq - sx, np.full_like(sx, L))
        good = ok & (s_new > 0) & (o_new >= 0)
        scale = np.where(good, s_new, scale)
        off = np.where(good, o_new, off)
    d = _f16_round(scale.max(axis=-1) / smax)
    dmin = _f16_round(off.max(axis=-1) / smax)
    sc = np.clip(np.rint(_safe_div(scale, d[:, None])), 0, smax).astype(np.int32)
    m = np.clip(np.rint(_safe_div(off, dmin[:, None])), 0, smax).astype(np.int32)
    dl = (d[:, None] * sc.astype(np.float32))[..., None]
    ml = (dmin[:, None] * m.astype(np.float32))[..., None]
    q = np.clip(np.rint(_safe_div(sub + ml, dl)), 0, qmax).astype(np.int32)
    return d, dmin, sc, m, q


def _encode_q2_k(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    d, dmin, sc, m, q = _asymmetric(x.reshape(n, 16, 16), 3, 15)
    scales = (sc | (m << 4)).astype(np.uint8)
    lo = q.reshape(n, 2, 4, 32)  # element e = h*128 + s*32 + l -> qs[h*32 + l] at bit 2s
    qs = np.concatenate([_pack_planes(lo[:, h], 2) for h in range(2)], axis=1)
    return np.concatenate([scales, qs, _f16(d), _f16(dmin)], axis=1)


def _k_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins -> the twelve packed bytes of Q4_K/Q5_K."""
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    a = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    b = (m[:, :4] & 63) | ((m[:, 4:] >> 4) << 6)
    c = (sc[:, 4:] & 15) | ((m[:, 4:] & 15) << 4)
    return np.concatenate([a, b, c], axis=1).astype(np.uint8)


def _encode_q4_k(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    d, dmin, sc, m, q = _asymmetric(x.reshape(n, 8, 32), 15, 63)
    # element e = c*64 + h*32 + l -> qs[c*32 + l] at bit 4h
    lo = q.reshape(n, 4, 2, 32)
    qs = np.concatenate([_pack_planes(lo[:, c], 4) for c in range(4)], axis=1)
    return np.concatenate([_f16(d), _f16(dmin), _k_scales(sc, m), qs], axis=1)


def _encode_q5_k(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    d, dmin, sc, m, q = _asymmetric(x.reshape(n, 8, 32), 31, 63)
    u = q.astype(np.uint8)
    qh = _pack_planes((u >> 4).reshape(n, 8, 32), 1)  # element j*32 + l -> qh[l] at bit j
    lo = (u & 15).reshape(n, 4, 2, 32)
    qs = np.concatenate([_pack_planes(lo[:, c], 4) for c in range(4)], axis=1)
    return np.concatenate([_f16(d), _f16(dmin), _k_scales(sc, m), qh, qs], axis=1)


_K_ENCODERS = {
    int(Q.Q2_K): _encode_q2_k,
    int(Q.Q3_K): _encode_q3_k,
    int(Q.Q4_K): _encode_q4_k,
    int(Q.Q5_K): _encode_q5_k,
    int(Q.Q6_K): _encode_q6_k,
}


def encode(x: np.ndarray | torch.Tensor, qtype: int) -> np.ndarray:
    """Encode a float array (last dim a multiple of the block size) as ggml bytes.

    Returns uint8 [*x.shape[:-1], bytes_per_row] for every type, floats included,
    i.e. exactly what a GGUF file stores and what `dequantize` takes.
    """
    qtype = int(qtype)
    check_supported(qtype)
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float32).cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    block, size = GGML_QUANT_SIZES[Q(qtype)]
    if x.shape[-1] % block:
        raise ValueError(f"{Q(qtype).name} needs the last dimension to be a multiple of {block}, got {x.shape}")
    lead = x.shape[:-1]
    if qtype == Q.F32:
        return x.view(np.uint8).reshape(*lead, -1)
    if qtype == Q.F16:
        return x.astype(np.float16).view(np.uint8).reshape(*lead, -1)
    if qtype in _K_ENCODERS:
        blocks = _K_ENCODERS[qtype](x.reshape(-1, block))
        assert blocks.shape[1] == size and blocks.dtype == np.uint8
        return blocks.reshape(*lead, -1)
    # legacy types and BF16: gguf's own encoders (ports of llama.cpp's reference quantizers)
    out = gq.quantize(x, Q(qtype))
    return np.ascontiguousarray(out).view(np.uint8).reshape(*lead, -1)


# -- random valid blocks, for benchmarks and decoder tests ----------------------

# byte offsets of the fp16 scales inside a block; every other byte may be anything
FP16_FIELDS: dict[int, tuple[int, ...]] = {
    int(Q.Q8_0): (0,),
    int(Q.Q4_0): (0,),
    int(Q.Q4_1): (0, 2),
    int(Q.Q5_0): (0,),
    int(Q.Q5_1): (0, 2),
    int(Q.Q2_K): (80, 82),
    int(Q.Q3_K): (108,),
    int(Q.Q4_K): (0, 2),
    int(Q.Q5_K): (0, 2),
    int(Q.Q6_K): (208,),
}


def random_raw(
    qtype: int,
    shape: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    scale: float = 1e-3,
) -> torch.Tensor:
    """uint8 [rows, bytes_per_row]: random bytes with finite, weight-sized fp16 scales.

    Every bit pattern of the quant fields is a valid encoding, so this exercises
    all code paths of a decoder; only the fp16 scales are made sane (|N(0, scale)|
    -ish, never inf/nan) so decoded values are finite and comparable bit for bit.
    """
    qtype = int(qtype)
    check_supported(qtype)
    rows, cols = shape
    block, size = GGML_QUANT_SIZES[Q(qtype)]
    if qtype in (Q.F32, Q.F16, Q.BF16):
        dt = {int(Q.F32): torch.float32, int(Q.F16): torch.float16, int(Q.BF16): torch.bfloat16}[qtype]
        w = torch.randn(rows, cols, generator=generator, device=device) * scale * 30
        return w.to(dt).view(torch.uint8)
    n = rows * cols // block
    raw = torch.randint(0, 256, (n, size), dtype=torch.uint8, generator=generator, device=device)
    for at in FP16_FIELDS[qtype]:
        s = (torch.randn(n, 1, generator=generator, device=device) * scale).to(torch.float16)
        raw[:, at : at + 2] = s.view(torch.uint8)
    return raw.reshape(rows, cols // block * size)


assert set(FP16_FIELDS) | {int(Q.F32), int(Q.F16), int(Q.BF16)} == set(SUPPORTED_TYPES)
