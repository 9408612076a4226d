"""ggml block encoders in torch, so a merged weight is re-encoded on the GPU.

`quant/gguf_encode.py` is the pack's numpy encoder (the tests' reference); on one CPU core it
takes ~15 minutes to encode the 14B model's linears as Q4_K (measured: 15.7 M weights/s), which
is no way to load a model. These are the same algorithms as tensor ops on whatever device holds
the weights:

- legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): gguf-py's reference quantizers
  (`gguf/quants.py` `quantize_blocks`; Q8_0 rounds half away from zero like its `np_roundf`),
  float32 arithmetic in the same order, so the bytes equal `gguf.quants.quantize` exactly;
- K-quants (Q2_K..Q6_K): `gguf_encode`'s per-sub-block scale (and min) from the range, two
  least-squares refinements, sub-scales quantized against the fp16 super-scale. Its sums over a
  sub-block may add in another order than numpy's pairwise sum, so a scale can differ in its last
  bit and a code flip between neighbours; the tests bound that (same error, >99 % equal bytes).
"""

from __future__ import annotations

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import UnsupportedQuantError

Q = GGMLQuantizationType
_CHUNK = 1 << 24  # weights encoded per pass: bounds the temporaries (~10 float32 copies)


def _f16(x: torch.Tensor) -> torch.Tensor:
    """float32 (n,) -> (n, 2) bytes of its fp16."""
    return x.reshape(-1).to(torch.float16).contiguous().view(torch.uint8).reshape(-1, 2)


def _f16_round(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    nz = b != 0
    return torch.where(nz, a / torch.where(nz, b, torch.ones_like(b)), torch.zeros_like(a))


def _pack_planes(v: torch.Tensor, bits: int) -> torch.Tensor:
    """(n, count, k) small ints -> (n, k) bytes, plane i at bit bits*i."""
    out = torch.zeros(v.shape[:1] + v.shape[2:], dtype=torch.int32, device=v.device)
    for i in range(v.shape[1]):
        out |= v[:, i].to(torch.int32) << (bits * i)
    return (out & 0xFF).to(torch.uint8)


def _pack_bits_lsb(bits: torch.Tensor) -> torch.Tensor:
    """(n, 8k) bits -> (n, k) bytes, least significant bit first (numpy packbits bitorder='little')."""
    n = bits.shape[0]
    w = torch.arange(8, device=bits.device, dtype=torch.int32)
    return ((bits.to(torch.int32).reshape(n, -1, 8) << w).sum(-1)).to(torch.uint8)


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int32).to(torch.uint8)


# -- legacy types: gguf-py's reference quantizers ---------------------------------

def _recip(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


def _round_away(x: torch.Tensor) -> torch.Tensor:
    a = x.abs()
    f = torch.floor(a)
    return torch.sign(x) * (f + torch.floor(2 * (a - f)))


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    d = b.abs().amax(dim=1, keepdim=True) / 127
    qs = _round_away(b * _recip(d))
    return torch.cat([_f16(d), qs.to(torch.int8).view(torch.uint8)], dim=1)


def _signed_peak(b: torch.Tensor) -> torch.Tensor:
    return torch.take_along_dim(b, b.abs().argmax(dim=-1, keepdim=True), dim=-1)


def _nibbles(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) codes -> (n, 16) bytes: element i in the low nibble of byte i, element 16+i high."""
    q = q.reshape(q.shape[0], 2, 16)
    return (q[:, 0] & 0x0F) | (q[:, 1] << 4)


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    d = _signed_peak(b) / -8
    qs = torch.trunc(b * _recip(d) + 8.5).to(torch.uint8).clamp(0, 15)
    return torch.cat([_f16(d), _nibbles(qs)], dim=1)


def _q4_1(b: torch.Tensor) -> torch.Tensor:
    hi, lo = b.amax(dim=-1, keepdim=True), b.amin(dim=-1, keepdim=True)
    d = (hi - lo) / 15
    qs = torch.trunc((b - lo) * _recip(d) + 0.5).to(torch.uint8).clamp(0, 15)
    return torch.cat([_f16(d), _f16(lo), _nibbles(qs)], dim=1)


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    d = _signed_peak(b) / -16
    q = torch.trunc(b * _recip(d) + 16.5).to(torch.uint8).clamp(0, 31)
    return torch.cat([_f16(d), _pack_bits_lsb(q >> 4), _nibbles(q)], dim=1)


def _q5_1(b: torch.Tensor) -> torch.Tensor:
    hi, lo = b.amax(dim=-1, keepdim=True), b.amin(dim=-1, keepdim=True)
    d = (hi - lo) / 31
    q = torch.trunc((b - lo) * _recip(d) + 0.5).to(torch.uint8).clamp(0, 31)
    return torch.cat([_f16(d), _f16(lo), _pack_bits_lsb(q >> 4), _nibbles(q)], dim=1)


# -- K-quants: gguf_encode's algorithm --------------------------------------------

def _symmetric(sub: torch.Tensor, qmin: int, qmax: int, smin: int, smax: int):
    peak = _signed_peak(sub)[..., 0]
    scale = peak / qmin
    for _ in range(2):
        q = torch.clamp(torch.round(_safe_div(sub, scale[..., None])), qmin, qmax)
        qq = (q * q).sum(-1)
        scale = torch.where(qq > 0, _safe_div((sub * q).sum(-1), qq), scale)
    big = torch.take_along_dim(scale, scale.abs().argmax(dim=-1, keepdim=True), dim=-1)[:, 0]
    d = _f16_round(big / smin)
    sc = torch.clamp(torch.round(_safe_div(scale, d[:, None])), smin, smax).to(torch.int32)
    dl = (d[:, None] * sc.to(torch.float32))[..., None]
    q = torch.clamp(torch.round(_safe_div(sub, dl)), qmin, qmax).to(torch.int32)
    return d, sc, q


def _asymmetric(sub: torch.Tensor, qmax: int, smax: int):
    lo = torch.clamp(sub.amin(dim=-1), max=0.0)
    hi = sub.amax(dim=-1)
    scale = (hi - lo) / qmax
    off = -lo
    n = sub.shape[-1]
    for _ in range(2):
        q = torch.clamp(torch.round(_safe_div(sub + off[..., None], scale[..., None])), 0, qmax)
        sq, sqq, sx, sqx = q.sum(-1), (q * q).sum(-1), sub.sum(-1), (q * sub).sum(-1)
        det = n * sqq - sq * sq
        ok = det > 0
        s_new = _safe_div(n * sqx - sq * sx, torch.where(ok, det, torch.ones_like(det)))
        o_new = _safe_div(s_new * sq - sx, torch.full_like(sx, n))
        good = ok & (s_new > 0) & (o_new >= 0)
        scale = torch.where(good, s_new, scale)
        off = torch.where(good, o_new, off)
    d = _f16_round(scale.amax(dim=-1) / smax)
    dmin = _f16_round(off.amax(dim=-1) / smax)
    sc = torch.clamp(torch.round(_safe_div(scale, d[:, None])), 0, smax).to(torch.int32)
    m = torch.clamp(torch.round(_safe_div(off, dmin[:, None])), 0, smax).to(torch.int32)
    dl = (d[:, None] * sc.to(torch.float32))[..., None]
    ml = (dmin[:, None] * m.to(torch.float32))[..., None]
    q = torch.clamp(torch.round(_safe_div(sub + ml, dl)), 0, qmax).to(torch.int32)
    return d, dmin, sc, m, q


def _k_scales(sc: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    sc, m = _u8(sc), _u8(m)
    a = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    b = (m[:, :4] & 63) | ((m[:, 4:] >> 4) << 6)
    c = (sc[:, 4:] & 15) | ((m[:, 4:] & 15) << 4)
    return torch.cat([a, b, c], dim=1)


def _q6_k(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    d, sc, q = _symmetric(x.reshape(n, 16, 16), -32, 31, -128, 127)
    u = _u8(q + 32).reshape(n, 256)
    lo = (u & 15).reshape(n, 2, 2, 64)
    ql = torch.cat([_pack_planes(lo[:, h], 4) for h in range(2)], dim=1)
    hi = (u >> 4).reshape(n, 2, 4, 32)
    qh = torch.cat([_pack_planes(hi[:, h], 2) for h in range(2)], dim=1)
    return torch.cat([ql, qh, sc.to(torch.int8).view(torch.uint8), _f16(d)], dim=1)


def _q3_k(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    d, sc, q = _symmetric(x.reshape(n, 16, 16), -4, 3, -32, 31)
    u = _u8(q + 4).reshape(n, 256)
    hmask = _pack_planes((u >> 2).reshape(n, 8, 32), 1)
    lo = (u & 3).reshape(n, 2, 4, 32)
    qs = torch.cat([_pack_planes(lo[:, h], 2) for h in range(2)], dim=1)
    s = _u8(sc + 32)
    low = _pack_planes((s & 15).reshape(n, 2, 8), 4)
    high = _pack_planes((s >> 4).reshape(n, 4, 4), 2)
    return torch.cat([hmask, qs, low, high, _f16(d)], dim=1)


def _q2_k(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    d, dmin, sc, m, q = _asymmetric(x.reshape(n, 16, 16), 3, 15)
    scales = _u8(sc | (m << 4))
    lo = q.reshape(n, 2, 4, 32)
    qs = torch.cat([_pack_planes(lo[:, h], 2) for h in range(2)], dim=1)
    return torch.cat([scales, qs, _f16(d), _f16(dmin)], dim=1)


def _q4_k(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    d, dmin, sc, m, q = _asymmetric(x.reshape(n, 8, 32), 15, 63)
    lo = q.reshape(n, 4, 2, 32)
    qs = torch.cat([_pack_planes(lo[:, c], 4) for c in range(4)], dim=1)
    return torch.cat([_f16(d), _f16(dmin), _k_scales(sc, m), qs], dim=1)


def _q5_k(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    d, dmin, sc, m, q = _asymmetric(x.reshape(n, 8, 32), 31, 63)
    u = _u8(q)
    qh = _pack_planes((u >> 4).reshape(n, 8, 32), 1)
    lo = (u & 15).reshape(n, 4, 2, 32)
    qs = torch.cat([_pack_planes(lo[:, c], 4) for c in range(4)], dim=1)
    return torch.cat([_f16(d), _f16(dmin), _k_scales(sc, m), qh, qs], dim=1)


ENCODERS = {
    int(Q.Q8_0): _q8_0, int(Q.Q4_0): _q4_0, int(Q.Q4_1): _q4_1, int(Q.Q5_0): _q5_0, int(Q.Q5_1): _q5_1,
    int(Q.Q2_K): _q2_k, int(Q.Q3_K): _q3_k, int(Q.Q4_K): _q4_k, int(Q.Q5_K): _q5_k, int(Q.Q6_K): _q6_k,
}


def encode(w: torch.Tensor, qtype: int) -> torch.Tensor:
    """A float weight [.., cols] -> uint8 [rows, bytes_per_row] ggml blocks of `qtype`, on w's device.

    The layout `QuantWeight(kind="gguf")` holds and `gguf_dequant.dequantize` reads.
    """
    qtype = int(qtype)
    if qtype not in ENCODERS:
        raise UnsupportedQuantError(
            f"cannot re-encode a merged weight as {Q(qtype).name}",
            expected="one of " + ", ".join(Q(t).name for t in ENCODERS),
            fix="choose Q8_0 as the re-encoding target for this file.",
        )
    block, size = GGML_QUANT_SIZES[Q(qtype)]
    cols = w.shape[-1]
    if cols % block:
        raise ValueError(f"{Q(qtype).name} needs the last dimension to be a multiple of {block}, got {tuple(w.shape)}")
    flat = w.reshape(-1, cols).to(torch.float32)
    rows = flat.shape[0]
    out = torch.empty(rows, cols // block * size, dtype=torch.uint8, device=w.device)
    step = max(1, _CHUNK // cols)
    fn = ENCODERS[qtype]
    for r in range(0, rows, step):
        part = flat[r : r + step]
        out[r : r + step] = fn(part.reshape(-1, block)).reshape(part.shape[0], -1)
    return out
