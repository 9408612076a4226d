"""8-bit attention written here in Triton from the SageAttention2 method (reference.py has it step by step).

`attn8(q, k, v)` takes [B, H, L, D] q/k/v (the block's strided views are fine) and returns
[B, H, Lq, D] in q's dtype, as a view of a [B, Lq, H, D] tensor (so `attention()`'s reshape back to
[B, L, C] copies nothing). Three passes: statistics (one read of q, k, v), quantization (one read
of each, 8-bit codes written), the attention kernel. `pv_mode(capability)` says which P·V the GPU
runs: e4m3 on sm89 and newer (Triton has FP8 there), fp16 on sm80/86.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from .. import fallback
from .reference import finish_stats, pad_to

try:
    import triton

    from . import kernels as _k

    HAVE_TRITON = True
except Exception:  # pragma: no cover - CPU-only installs, Windows without triton
    HAVE_TRITON = False
try:  # Gluon with Hopper's TMA / asynchronous MMA (Triton 3.6, as tested): the sm90 kernel
    from . import hopper as _hopper

    HAVE_GLUON = HAVE_TRITON
except Exception:  # pragma: no cover - older or newer Triton without that API: the Triton kernel runs
    HAVE_GLUON = False


@dataclass(frozen=True)
class Config:
    block_m: int = 128
    block_n: int = 128
    num_warps: int = 8
    num_stages: int = 3
    exp_split: bool = False  # every second exp2 as a polynomial on the FMA units (kernels._exp2_poly)
    gluon: bool = False  # the Gluon kernel for sm90 (hopper.py; block_n 128, head dim 128, FP8 P·V)
    ws: bool = False  # its warp-specialized form: a producer warp + two consumer warpgroups of block_m rows
    ones: bool = False  # ws only: softmax row sums as P·1 on the tensor cores (sums of P's e4m3 codes)

    def __str__(self) -> str:
        return (f"m{self.block_m}n{self.block_n}w{self.num_warps}s{self.num_stages}"
                f"{'x' if self.exp_split else ''}{' gluon' if self.gluon else ''}{' ws' if self.ws else ''}"
                f"{' ones' if self.ones else ''}")


# Launch choices per compute capability. sm90: the warp-specialized Gluon kernel (hopper.py; a producer
# warp, two 64-row consumer warpgroups on one K/V ring) with its row sums on the tensor cores, 10-11 %
# faster than with them on the FMA units (docs/bench/attention_h200_s8.log), which was 3.5 % faster than the
# one-warpgroup Gluon kernel (docs/bench/attention_h200_s7.log), which was 5 % faster than the Triton one at the same
# tiles (docs/bench/attention_h200_gluon.log); where it cannot run, the Triton
# kernel at the fastest of its sweep on the H200
# (scripts/bench_attention.py --sweep, docs/bench/attention_h200.log): BLOCK_M 64 with one warpgroup
# lets two programs share an SM, so one's softmax runs while the other's tensor-core products do;
# BLOCK_M 128 with two warpgroups was ~10 % slower, BLOCK_N 64 ~15 %, 2 or 4 stages 8 % / 45 %, the
# polynomial exp2 split ~10 % (the loop is issue-bound, not SFU-bound). Elsewhere not measured:
# 64 x 64 tiles in two stages fit sm86/sm89's 99 KB of shared memory without spilling (ptxas, Triton 3.8).
CONFIGS: dict[tuple[int, int], Config] = {
    (9, 0): Config(64, 128, 4, 3, gluon=True, ws=True, ones=True),
}
DEFAULT_CONFIG = Config(64, 64, 4, 2)
HEAD_DIMS = (64, 128)
# below this many keys (text cross-attention has 512) the q quantize pass costs more than 8-bit saves
MIN_KEYS = 1024
Q_PAD = 128  # q codes are padded to whole 128-row blocks (the largest BLOCK_M)


def pv_mode(capability: tuple[int, int]) -> str | None:
    """'fp8' (e4m3 P·V) on sm89+, 'fp16' on sm80/86, None below (no INT8 tensor-core path worth it)."""
    if capability >= (8, 9):
        return "fp8"
    if capability >= (8, 0):
        return "fp16"
    return None


def config_for(capability: tuple[int, int]) -> Config:
    return CONFIGS.get(capability, DEFAULT_CONFIG)


_GLUON = fallback.switch("attn8's Hopper kernel (Gluon)", "attn8's Triton kernel")
GLUON_MAX_REL = 5e-3  # Gluon vs Triton kernel on the same codes (P's fp16 step may round a tie apart)
# With P·1 row sums the Gluon kernel normalizes by the sum of P's e4m3 codes, not of P: ~1 % from the
# Triton kernel's output, so it is held to its error against float32 attention instead
GLUON_ERR_RATIO = 1.25


def gluon_disagrees(glu: torch.Tensor, tri: torch.Tensor, ref: torch.Tensor, ones: bool) -> str | None:
    """Why the Gluon kernel's output is not acceptable next to the Triton kernel's on the same codes
    (ref: float32 attention of the same inputs), or None."""
    from .structured import accuracy

    if not ones:
        rel = accuracy(glu, tri)[1]
        return None if rel < GLUON_MAX_REL else f"it differs from the Triton kernel (relative L2 {rel:.2e})"
    err, err_tri = accuracy(glu, ref)[1], accuracy(tri, ref)[1]
    if err <= GLUON_ERR_RATIO * err_tri + 1e-3:
        return None
    return f"its error against float32 attention is {err:.2e}, the Triton kernel's {err_tri:.2e}"


def _gluon_self_check(device: torch.device, cfg: Config) -> None:
    """Both kernels on the same small structured problem (odd lengths, two key blocks and a partial
    one): the Gluon kernel must match the Triton kernel (or, with P·1 row sums, be as accurate), or it is
    not used on this GPU."""
    from .structured import sdpa_fp32, structured_qkv

    q, k, v = structured_qkv(1, 2, 300, 333, seed=0, device=device)
    st = stats(q, k, v)
    tri = attention_codes(*quantize(q, k, v, st, 128, True), st[3], st[4], 1, 2, 300, 333, torch.float32,
                          Config(64, 128, 4, 3), True)
    glu = attention_codes(*quantize(q, k, v, st, 128, True, key_order=True), st[3], st[4], 1, 2, 300, 333,
                          torch.float32, cfg, True)
    why = gluon_disagrees(glu, tri, sdpa_fp32(q, k, v) if cfg.ones else tri, cfg.ones)
    if why:
        raise RuntimeError(why)


def _device_key(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _use_gluon(cfg: Config, q: torch.Tensor, pv_fp8: bool) -> bool:
    if not (cfg.gluon and HAVE_GLUON and q.is_cuda and pv_fp8 and q.shape[-1] == _hopper.BLOCK_N
            and cfg.block_n == _hopper.BLOCK_N and torch.cuda.get_device_capability(q.device)[0] == 9):
        return False
    return _GLUON.check_once(_device_key(q.device), lambda: fallback.attempt(
        lambda: _gluon_self_check(q.device, cfg), "attn8's Hopper kernel (Gluon)", "attn8's Triton kernel"))


def usable(q: torch.Tensor, k: torch.Tensor) -> str | None:
    """None when attn8 can run these inputs here, else why not."""
    if not HAVE_TRITON:
        return "triton is not installed"
    if not (q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        return "needs a CUDA GPU"
    if q.shape[-1] not in HEAD_DIMS:
        return f"head dim {q.shape[-1]} (supported: {HEAD_DIMS})"
    if q.is_cuda and pv_mode(torch.cuda.get_device_capability(q.device)) is None:
        return "needs sm80 or newer"
    if k.shape[2] == 0 or q.shape[2] == 0:
        return "empty sequence"
    return None


def _unit_inner(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def stats(q, k, v, chunk: int = 512, block_l: int = 16, num_warps: int = 4):
    """(q_inv_alpha, k_alpha, k_mean, v_mean, v_scale), each [B*H, D] float32 (reference.finish_stats)."""
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    n_chunks = triton.cdiv(max(Lq, Lk), chunk)
    part = torch.empty(7, B * H, n_chunks, D, device=q.device, dtype=torch.float32)
    _k._stats_kernel[(n_chunks, B * H)](
        q, k, v, part, Lq, Lk, H, n_chunks, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), v.stride(0), v.stride(1), v.stride(2), CHUNK=chunk, BLOCK_L=block_l, D=D, num_warps=num_warps)
    return finish_stats(part[0].amax(1), part[1].sum(1), part[2].amin(1), part[3].amax(1), part[4].sum(1),
                        part[5].amin(1), part[6].amax(1), Lk)


def quantize(q, k, v, st, block_n: int, pv_fp8: bool, key_order: bool = False):
    """Codes as the attention kernel reads them (reference.quantize_reference's layout, [B*H, ...])."""
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    qia, ka, km, vm, vs = st
    lq, lk = pad_to(Lq, Q_PAD), pad_to(Lk, block_n)
    dev = q.device
    q8 = torch.empty(B * H, lq, D, device=dev, dtype=torch.int8)
    qs = torch.empty(B * H, lq, device=dev, dtype=torch.float32)
    k8 = torch.empty(B * H, lk, D, device=dev, dtype=torch.int8)
    ks = torch.empty(B * H, lk // block_n, device=dev, dtype=torch.float32)
    vt = torch.empty(B * H, D, lk, device=dev, dtype=torch.float8_e4m3fn if pv_fp8 else torch.float16)
    _k._quant_q_kernel[(lq // 64, B * H)](q, qia, q8, qs, Lq, lq, H, q.stride(0), q.stride(1), q.stride(2),
                                          BLOCK_L=64, D=D, num_warps=4, enable_fp_fusion=False)
    _k._quant_kv_kernel[(lk // block_n, B * H)](
        k, v, ka, km, vm, 1.0 / vs, k8, ks, vt, Lk, lk, H, k.stride(0), k.stride(1), k.stride(2), v.stride(0),
        v.stride(1), v.stride(2), BLOCK_N=block_n, D=D, PV_FP8=pv_fp8, KEY_ORDER=key_order, num_warps=4,
        enable_fp_fusion=False)
    return q8, qs, k8, ks, vt


def attention_codes(q8, qs, k8, ks, vt, vm, vs, B, H, Lq, Lk, dtype, cfg: Config, pv_fp8: bool) -> torch.Tensor:
    """cfg.gluon: V's codes must be in key order (quantize(..., key_order=True))."""
    if cfg.gluon:
        return _hopper.attention_codes(q8, qs, k8, ks, vt, vm, vs, B, H, Lq, Lk, dtype, cfg.block_m, cfg.num_stages,
                                       cfg.num_warps, ws=cfg.ws, ones=cfg.ones)
    D = q8.shape[-1]
    out = torch.empty(B, Lq, H, D, device=q8.device, dtype=dtype)
    _k._attn8_kernel[(triton.cdiv(Lq, cfg.block_m), B * H)](
        q8, qs, k8, ks, vt, vm, vs, out, Lq, Lk, q8.shape[1], k8.shape[1], H, D**-0.5 * 1.4426950408889634,
        out.stride(0), out.stride(2), out.stride(1), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, D=D,
        PV_FP8=pv_fp8, EXP_SPLIT=cfg.exp_split, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages)
    return out.transpose(1, 2)


def attn8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: Config | None = None,
          pv_fp8: bool | None = None) -> torch.Tensor:
    """Non-causal attention, softmax scale 1/sqrt(D), like SDPA's default; [B, H, L, D] in and out."""
    why = usable(q, k)
    if why is not None:
        raise RuntimeError(f"attn8 cannot run here: {why}")
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    cap = torch.cuda.get_device_capability(q.device) if q.is_cuda else (9, 0)
    cfg = cfg or config_for(cap)
    if pv_fp8 is None:
        pv_fp8 = pv_mode(cap) == "fp8"
    q, k, v = _unit_inner(q), _unit_inner(k), _unit_inner(v)
    st = stats(q, k, v)
    if _use_gluon(cfg, q, pv_fp8):
        try:
            codes = quantize(q, k, v, st, cfg.block_n, pv_fp8, key_order=True)
            return attention_codes(*codes, st[3], st[4], B, H, Lq, Lk, q.dtype, cfg, pv_fp8)
        except Exception as exc:  # noqa: BLE001 - fail() re-raises OOM and interrupts
            _GLUON.fail(_device_key(q.device), exc)
    cfg = replace(cfg, gluon=False, ws=False, ones=False, num_stages=min(cfg.num_stages, 3))
    q8, qs, k8, ks, vt = quantize(q, k, v, st, cfg.block_n, pv_fp8)
    return attention_codes(q8, qs, k8, ks, vt, st[3], st[4], B, H, Lq, Lk, q.dtype, cfg, pv_fp8)
