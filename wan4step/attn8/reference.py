"""Torch reference of the 8-bit attention: the same quantization and the same block order as
the Triton kernels, step by step, so the CPU tests can hold the kernels to it.

Method (SageAttention, arXiv 2410.02367; SageAttention2, arXiv 2411.10958), per (batch, head):

1. Smooth K: subtract its mean over tokens, per channel. q·(k_j - m) = q·k_j - q·m, and q·m
   is the same for every key of a query row, so softmax does not change; the shared offset
   no longer sets K's INT8 range. V is smoothed the same way (its mean is added back to the
   output, exact because each softmax row sums to one).
2. Balance Q's and K's channels: q_d / a_d and k_d * a_d with a_d = sqrt(amax|q_d| / amax|k_d|)
   leave every q·k unchanged and give both the same per-channel range (the SmoothQuant
   migration, arXiv 2211.10438, applied to Q·Kᵀ; not in SageAttention). On inputs with a few
   outlier channels in K (structured.py) it cut the relative L2 error of the INT8 Q·Kᵀ from
   2.7 % to 0.7 % at no cost in the kernel: the balancing happens in the quantize pass.
3. INT8 Q per token and INT8 K per block of `block_n` tokens: scale = amax / 127, codes
   round-half-even(x * 127 / amax) (the per-token rule of quant/act_quant.py).
4. S = Q8 · K8ᵀ exactly in int32, times scale_q · scale_k · softmax_scale · log2(e), so the
   softmax runs in base 2 (exp2 is the GPU's native exponential).
5. Online softmax over key blocks. P = exp2(s - rowmax + P_LOG2) lies in (0, 2^P_LOG2]
   (the static P scale of SageAttention2, just under e4m3's 448), is rounded to FP8 e4m3 (or
   fp16 on sm80/86, where Triton has no FP8) and multiplies V's codes: V is quantized to
   e4m3 per channel (scale = channel amax / 448), so the channel scale factors out of the
   sum. Each block's P·V is a fresh product, added to the running FP32 accumulator
   (SageAttention2's two-level accumulation: the FP8 tensor-core accumulator is not full FP32).
6. out = acc · v_scale / rowsum(P) + v_mean.
"""

from __future__ import annotations

import math

import torch

LOG2E = 1.4426950408889634
P_LOG2 = 8.8  # P's largest value 2^8.8 = 445.7 rounds to e4m3's 448 and never overflows it
FP8_MAX = 448.0
INT8_MAX = 127.0
MAGIC = 12582912.0  # 1.5 * 2**23: integers below 2**22 added to it are exact floats


def finish_stats(q_amax, k_sum, k_min, k_max, v_sum, v_min, v_max, Lk: int):
    """Per-channel statistics [B, H, D] -> (q_inv_alpha, k_alpha, k_mean, v_mean, v_scale), float32.

    Shared by the torch and the Triton paths (the kernels only gather the sums/extremes).
    """
    km, vm = k_sum / Lk, v_sum / Lk
    k_amax = torch.maximum(k_max - km, km - k_min)
    ok = (q_amax > 0) & (k_amax > 0)
    alpha = torch.where(ok, (q_amax / torch.where(ok, k_amax, 1.0)).sqrt(), 1.0).clamp(2.0**-20, 2.0**20)
    v_amax = torch.maximum(v_max - vm, vm - v_min)
    vs = torch.where(v_amax > 0, v_amax / FP8_MAX, 1.0)
    return 1.0 / alpha, alpha, km, vm, vs


def stats_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    qf, kf, vf = q.float(), k.float(), v.float()
    return finish_stats(qf.abs().amax(2), kf.sum(2), kf.amin(2), kf.amax(2), vf.sum(2), vf.amin(2), vf.amax(2),
                        k.shape[2])


def int8_codes(x: torch.Tensor, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x float32, amax broadcastable to x: (int8 codes, float32 scale), act_quant's INT8 rule."""
    zero = amax == 0
    safe = torch.where(zero, torch.ones_like(amax), amax)
    scale = amax / torch.full_like(amax, INT8_MAX)
    inv = torch.where(zero, torch.zeros_like(amax), torch.full_like(amax, INT8_MAX) / safe)
    return torch.round(x * inv).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def e4m3(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to the e4m3fn grid (nearest, ties to even), kept as float32."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float()


def pad_to(n: int, block: int) -> int:
    return -(-n // block) * block


def quantize_reference(q, k, v, stats, block_n: int, pv_fp8: bool = True, q_pad: int = 128):
    """Codes and scales as the kernels lay them out (tokens padded with zero codes to whole blocks):
    q8 [B, H, Lq_pad, D] int8, qs [B, H, Lq_pad]; k8 [B, H, Lk_pad, D] int8, ks [B, H, Lk_pad / block_n];
    vt [B, H, D, Lk_pad]: e4m3 codes of (v - v_mean) / v_scale (fp16 values where pv_fp8 is off)."""
    qia, ka, km, vm, vs = stats
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    qf = torch.nn.functional.pad(q.float() * qia[:, :, None], (0, 0, 0, pad_to(Lq, q_pad) - Lq))
    q8, qs = int8_codes(qf, qf.abs().amax(-1, keepdim=True))
    lk = pad_to(Lk, block_n)
    kf = (k.float() - km[:, :, None]) * ka[:, :, None]
    kf = torch.nn.functional.pad(kf, (0, 0, 0, lk - Lk)).view(B, H, lk // block_n, block_n, D)
    k8, ks = int8_codes(kf, kf.abs().amax((-1, -2), keepdim=True))
    vf = torch.nn.functional.pad((v.float() - vm[:, :, None]) * (1.0 / vs[:, :, None]), (0, 0, 0, lk - Lk))
    vt = e4m3(vf).to(torch.float8_e4m3fn) if pv_fp8 else vf.to(torch.float16)
    return q8, qs[..., 0], k8.view(B, H, lk, D), ks.view(B, H, lk // block_n), vt.transpose(-1, -2).contiguous()


def attention_from_codes(q8, qs, k8, ks, vt, vm, vs, Lq: int, Lk: int, block_n: int, sm_scale: float,
                         pv_fp8: bool = True, code_sums: bool = False) -> torch.Tensor:
    """Steps 4-6 on codes, key block by key block as the kernel walks them; float32 [B, H, Lq, D].
    code_sums: the row sums are of P's codes (what P·V multiplies), as the sm90 kernel's P·1 MMA
    makes them (hopper.py, ONES), not of P in float32."""
    q8, qs = q8[:, :, :Lq], qs[:, :, :Lq]
    B, H, _, D = q8.shape
    qd = q8.float()  # integer sums below 2^24: exact in float32 (128 x 127 x 127 < 2.1e6)
    c = qs * (sm_scale * LOG2E)
    m = torch.full((B, H, Lq), -math.inf)
    lsum = torch.zeros(B, H, Lq)
    acc = torch.zeros(B, H, Lq, D)
    for j in range(ks.shape[-1]):
        sl = slice(j * block_n, (j + 1) * block_n)
        s = qd @ k8[:, :, sl].float().transpose(-1, -2)  # exact int32 values
        cj = c * ks[:, :, j, None]
        valid = torch.arange(j * block_n, (j + 1) * block_n) < Lk
        m_new = torch.maximum(m, torch.where(valid, s, -math.inf).amax(-1) * cj)
        # the kernel's arithmetic: s read as (s + 1.5 * 2^23) - 1.5 * 2^23, folded into the bias
        bias = MAGIC * cj + (m_new - P_LOG2)
        x = torch.where(valid, (s + MAGIC) * cj[..., None] - bias[..., None], -math.inf)
        p = torch.exp2(x)
        alpha = torch.exp2(m - m_new)
        pq = e4m3(p) if pv_fp8 else p.to(torch.float16).float()
        lsum = lsum * alpha + (pq if code_sums else p).sum(-1)
        acc = acc * alpha[..., None] + pq @ vt[:, :, :, sl].float().transpose(-1, -2)
        m = m_new
    return acc * (vs[:, :, None] / lsum[..., None]) + vm[:, :, None]


def attn8_reference(q, k, v, block_n: int = 64, pv_fp8: bool = True) -> torch.Tensor:
    """The whole 8-bit attention in torch (float32 out), [B, H, L, D] in."""
    stats = stats_reference(q, k, v)
    q8, qs, k8, ks, vt = quantize_reference(q, k, v, stats, block_n, pv_fp8)
    return attention_from_codes(q8, qs, k8, ks, vt, stats[3], stats[4], q.shape[2], k.shape[2], block_n,
                                q.shape[-1] ** -0.5, pv_fp8)


def key_order(n: int) -> torch.Tensor:
    """Column of each key in the V the sm90 kernel reads (kernels._quant_kv_kernel's KEY_ORDER): key
    32c + 16h + 8g + 2t + e at 32c + 16h + 4t + 2g + e, the order in which a thread of its P·V MMA
    holds P (hopper._as_operand)."""
    r = torch.arange(n)
    return (r // 16) * 16 + ((r // 2) % 4) * 4 + ((r // 8) % 2) * 2 + r % 2
