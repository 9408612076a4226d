"""Triton kernels of the 8-bit attention (the method and its torch twin: reference.py).

Three launches per call, on q/k/v as the block makes them ([B, H, L, D] views of [B, L, H*D]
tensors; any strides with a unit channel stride, no copies):

1. `_stats_kernel`: per chunk of tokens and (batch, head), per channel: amax |q|, and sum, min,
   max of k and of v. One read of q, k, v; torch folds the chunks (finish_stats).
2. `_quant_q_kernel` / `_quant_kv_kernel`: one read of q, k, v each; write INT8 codes of
   q / alpha per token, of (k - mean) * alpha per key block, and e4m3 codes of (v - mean) / scale,
   transposed to [D, L] (the FP8 tensor-core instruction wants P·V's B operand K-major).
3. `_attn8_kernel`: one program per (BLOCK_M queries, batch x head); INT8 Q·Kᵀ into int32,
   base-2 online softmax, FP8 (or fp16) P·V with a fresh FP32 product per key block.

The inner loop is limited by the exponentials (one per score; the SFU issues 16 a clock per
SM against 1,024 INT8 MACs a clock on the tensor cores), so it spends no other SFU work on a
score: the int32 -> float conversion is an integer add of 1.5 * 2^23 read back as float (exact
for |s| < 2^22: 128 channels x 127 x 127 < 2.1e6), folded with the scale and the row max into
one FMA. `EXP_SPLIT` computes every second exponential as a degree-3 polynomial on the FMA units
(relative error 7.5e-5, far below e4m3's 2^-4 step) instead of the SFU; on the H200 that was ~10 %
slower (the loop turned out issue-bound: ~9.4 instructions per score), so it is off by default.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..quant.act_quant import EMULATED_CASTS, _round_to_e4m3_grid, quant_codes, quant_scale, round_to

P_LOG2 = tl.constexpr(8.8)  # reference.P_LOG2
MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2**23
MAGIC_BITS = tl.constexpr(0x4B400000)  # its bit pattern


# ---------------------------------------------------------------------------- statistics
@triton.jit
def _stats_kernel(Q, K, V, OUT, Lq, Lk, H, n_chunks,
                  sqb, sqh, sql, skb, skh, skl, svb, svh, svl,
                  CHUNK: tl.constexpr, BLOCK_L: tl.constexpr, D: tl.constexpr):
    """OUT [7, B*H, n_chunks, D]: q amax, k sum, k min, k max, v sum, v min, v max of one chunk.

    Accumulates elementwise in [BLOCK_L, D] registers and reduces over tokens once at the end
    (a reduction over axis 0 per tile crosses warps through shared memory: measured 1.5 ms at
    480p that way, against a read of q, k and v that needs ~0.25 ms)."""
    chunk = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, D)
    qa = tl.zeros([BLOCK_L, D], tl.float32)
    ks = tl.zeros([BLOCK_L, D], tl.float32)
    vs = tl.zeros([BLOCK_L, D], tl.float32)
    kmin = tl.full([BLOCK_L, D], float("inf"), tl.float32)
    kmax = tl.full([BLOCK_L, D], -float("inf"), tl.float32)
    vmin = tl.full([BLOCK_L, D], float("inf"), tl.float32)
    vmax = tl.full([BLOCK_L, D], -float("inf"), tl.float32)
    for i in range(0, CHUNK, BLOCK_L):
        rows = chunk * CHUNK + i + tl.arange(0, BLOCK_L)
        mq = (rows < Lq)[:, None]
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None].to(tl.int64) * sql + offs_d[None, :], mask=mq, other=0.0)
        qa = tl.maximum(qa, tl.abs(q.to(tl.float32)))
        mk = (rows < Lk)[:, None]
        k = tl.load(K + b * skb + h * skh + rows[:, None].to(tl.int64) * skl + offs_d[None, :], mask=mk, other=0.0)
        k = k.to(tl.float32)
        ks += k
        kmin = tl.minimum(kmin, tl.where(mk, k, float("inf")))
        kmax = tl.maximum(kmax, tl.where(mk, k, -float("inf")))
        v = tl.load(V + b * svb + h * svh + rows[:, None].to(tl.int64) * svl + offs_d[None, :], mask=mk, other=0.0)
        v = v.to(tl.float32)
        vs += v
        vmin = tl.minimum(vmin, tl.where(mk, v, float("inf")))
        vmax = tl.maximum(vmax, tl.where(mk, v, -float("inf")))
    nbh = tl.num_programs(1).to(tl.int64)
    base = OUT + (bh * n_chunks + chunk) * D + offs_d
    step = nbh * n_chunks * D
    tl.store(base, tl.max(qa, axis=0))
    tl.store(base + step, tl.sum(ks, axis=0))
    tl.store(base + 2 * step, tl.min(kmin, axis=0))
    tl.store(base + 3 * step, tl.max(kmax, axis=0))
    tl.store(base + 4 * step, tl.sum(vs, axis=0))
    tl.store(base + 5 * step, tl.min(vmin, axis=0))
    tl.store(base + 6 * step, tl.max(vmax, axis=0))


# ---------------------------------------------------------------------------- quantization
@triton.jit
def _quant_q_kernel(Q, QIA, Q8, QS, Lq, Lq_pad, H, sqb, sqh, sql, BLOCK_L: tl.constexpr, D: tl.constexpr):
    """Rows of q / alpha -> INT8 codes per token (act_quant's rule) and fp32 scales; pad rows 0."""
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    rows = pid * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, D)
    m = (rows < Lq)[:, None]
    x = tl.load(Q + b * sqb + h * sqh + rows[:, None].to(tl.int64) * sql + offs_d[None, :], mask=m, other=0.0)
    x = x.to(tl.float32) * tl.load(QIA + bh * D + offs_d)[None, :]
    scale, inv = quant_scale(tl.max(tl.abs(x), axis=1), True)
    out = (bh * Lq_pad + rows).to(tl.int64)
    tl.store(Q8 + out[:, None] * D + offs_d[None, :], quant_codes(x, inv[:, None], True))
    tl.store(QS + out, scale)


@triton.jit
def _quant_kv_kernel(K, V, KA, KM, VM, VIS, K8, KS, VT, Lk, Lk_pad, H, skb, skh, skl, svb, svh, svl,
                     BLOCK_N: tl.constexpr, D: tl.constexpr, PV_FP8: tl.constexpr, KEY_ORDER: tl.constexpr):
    """One key block: (k - mean) * alpha -> INT8 codes with one scale; (v - mean) / scale -> e4m3
    (fp16 where PV_FP8 is off) stored transposed, VT [B*H, D, Lk_pad]. Pad rows get code 0.
    KEY_ORDER stores V's keys in the order the Gluon kernel for sm90 (hopper.py) feeds P to its P·V."""
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    m = (rows < Lk)[:, None]
    k = tl.load(K + b * skb + h * skh + rows[:, None].to(tl.int64) * skl + offs_d[None, :], mask=m, other=0.0)
    km = tl.load(KM + bh * D + offs_d)[None, :]
    ka = tl.load(KA + bh * D + offs_d)[None, :]
    k = tl.where(m, (k.to(tl.float32) - km) * ka, 0.0)
    scale, inv = quant_scale(tl.max(tl.max(tl.abs(k), axis=1), axis=0), True)
    out = (bh * Lk_pad + rows).to(tl.int64)
    tl.store(K8 + out[:, None] * D + offs_d[None, :], quant_codes(k, inv, True))
    tl.store(KS + bh * (Lk_pad // BLOCK_N) + pid, scale)
    v = tl.load(V + b * svb + h * svh + rows[:, None].to(tl.int64) * svl + offs_d[None, :], mask=m, other=0.0)
    vm = tl.load(VM + bh * D + offs_d)[None, :]
    vis = tl.load(VIS + bh * D + offs_d)[None, :]
    v = tl.where(m, (v.to(tl.float32) - vm) * vis, 0.0)
    col = rows
    if KEY_ORDER:  # key 32c + 16h + 8g + 2t + e -> column 32c + 16h + 4t + 2g + e
        col = (rows // 16) * 16 + ((rows // 2) % 4) * 4 + ((rows // 8) % 2) * 2 + rows % 2
    vt_ptr = VT + (bh * D + offs_d[None, :]).to(tl.int64) * Lk_pad + col[:, None]
    if PV_FP8:
        tl.store(vt_ptr, quant_codes(v, 1.0, False))
    else:
        tl.store(vt_ptr, v.to(tl.float16))


# ---------------------------------------------------------------------------- attention
@triton.jit
def _exp2_poly(x):
    """2^x on the FMA units: x = n + f, |f| <= 1/2, 2^f by a degree-3 fit (max rel. error 7.5e-5),
    n added to the exponent bits. x is clamped to >= -125 (the result stays a normal float)."""
    x = tl.maximum(x, -125.0)
    t = x + MAGIC  # round to nearest integer, held in the low mantissa bits
    f = x - (t - MAGIC)
    p = 0.05517164466845283 * f + 0.24261116577656272
    p = p * f + 0.69326099391394
    p = p * f + 0.9999280710942264
    n = t.to(tl.int32, bitcast=True) - MAGIC_BITS
    return (p.to(tl.int32, bitcast=True) + (n << 23)).to(tl.float32, bitcast=True)


@triton.jit
def _to_e4m3(p):
    if EMULATED_CASTS:  # the CPU interpreter rounds fp32 -> fp8 wrongly at binade edges
        return _round_to_e4m3_grid(p.to(tl.float32)).to(tl.float8e4nv)
    else:
        return p.to(tl.float8e4nv, fp_downcast_rounding="rtne")


@triton.jit
def _softmax_pv(s, c, v_ptrs, ks_ptr, acc, l_i, m_i, start, Lk,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr, PV_FP8: tl.constexpr,
                EXP_SPLIT: tl.constexpr):
    """One key block after S = Q8·K8ᵀ: base-2 online softmax, P -> e4m3 (fp16), P·V into a fresh
    FP32 product added to acc (the FMA that rescales acc adds it too)."""
    cc = c * tl.load(ks_ptr)  # per row: scale_q * scale_k * softmax scale * log2(e)
    if MASK:
        valid = (start + tl.arange(0, BLOCK_N) < Lk)[None, :]
        s = tl.where(valid, s, -(1 << 30))
    m_new = tl.maximum(m_i, tl.max(s, axis=1).to(tl.float32) * cc)
    # x = s * cc - (m_new - P_LOG2), with s read from (s + 1.5 * 2^23)'s bits: one FMA
    bias = MAGIC * cc + (m_new - P_LOG2)
    x = (s + MAGIC_BITS).to(tl.float32, bitcast=True) * cc[:, None] - bias[:, None]
    if MASK:
        x = tl.where(valid, x, -float("inf"))
    if EXP_SPLIT:  # every second column on the FMA units: half the SFU work
        x0, x1 = tl.split(tl.reshape(x, [BLOCK_M, BLOCK_N // 2, 2]))
        p = tl.reshape(tl.join(tl.math.exp2(x0), _exp2_poly(x1)), [BLOCK_M, BLOCK_N])
    else:
        p = tl.math.exp2(x)
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    v = tl.load(v_ptrs)  # [BLOCK_N, D], from the [D, L] layout
    if PV_FP8:
        pv = tl.dot(_to_e4m3(p), v)
    else:
        pv = tl.dot(p.to(tl.float16), v)
    acc = acc * alpha[:, None] + pv  # two-level accumulation: a fresh product per block
    return acc, l_i, m_new


@triton.jit
def _attn8_kernel(Q8, QS, K8, KS, VT, VM, VS, Out, Lq, Lk, Lq_pad, Lk_pad, H, qk_scale, sob, soh, sol,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr, PV_FP8: tl.constexpr,
                  EXP_SPLIT: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    q = tl.load(Q8 + (bh * Lq_pad + offs_m)[:, None] * D + offs_d[None, :])
    c = tl.load(QS + bh * Lq_pad + offs_m) * qk_scale
    k_ptrs = K8 + bh * Lk_pad * D + offs_n[None, :] * D + offs_d[:, None]
    v_ptrs = VT + bh * D * Lk_pad + offs_d[None, :].to(tl.int64) * Lk_pad + offs_n[:, None]
    ks_ptr = KS + bh * (Lk_pad // BLOCK_N)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    n_full = Lk // BLOCK_N
    for j in range(0, n_full):  # whole key blocks: no masks
        s = tl.dot(q, tl.load(k_ptrs + j * BLOCK_N * D))  # [BLOCK_M, BLOCK_N] int32, exact
        acc, l_i, m_i = _softmax_pv(s, c, v_ptrs + j * BLOCK_N, ks_ptr + j, acc, l_i, m_i, j * BLOCK_N, Lk,
                                    BLOCK_M, BLOCK_N, False, PV_FP8, EXP_SPLIT)
    if n_full * BLOCK_N < Lk:  # the last, partial block (its pad keys have zero codes; masked to -inf)
        s = tl.dot(q, tl.load(k_ptrs + n_full * BLOCK_N * D))
        acc, l_i, m_i = _softmax_pv(s, c, v_ptrs + n_full * BLOCK_N, ks_ptr + n_full, acc, l_i, m_i, n_full * BLOCK_N,
                                    Lk, BLOCK_M, BLOCK_N, True, PV_FP8, EXP_SPLIT)
    vs = tl.load(VS + bh * D + offs_d)
    vm = tl.load(VM + bh * D + offs_d)
    out = acc * (vs[None, :] / l_i[:, None]) + vm[None, :]
    o_ptrs = Out + b * sob + h * soh + offs_m[:, None].to(tl.int64) * sol + offs_d[None, :]
    tl.store(o_ptrs, round_to(out, Out.dtype.element_ty).to(Out.dtype.element_ty), mask=(offs_m < Lq)[:, None])
