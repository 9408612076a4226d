"""Fused GGUF dequant-matmul: y = x @ decode(W)^T + b in one Triton kernel (Q8_0, Q4_K, Q5_K, Q6_K).

Why: decode + cuBLAS (`gguf_matmul`'s path) writes the whole bf16 weight to
memory (2 bytes per weight) and reads it back in the matmul. This kernel reads
only the ggml bytes (0.56-1.06 per weight) and decodes each (BLOCK_N, BLOCK_K)
tile of W in registers, straight into `tl.dot` with float32 accumulation; the
bias is added in the epilogue and y is written once in x.dtype.

The price: each W tile is decoded once per BLOCK_M rows of x, ceil(M / BLOCK_M)
times in all, and that integer/float work competes with the tensor cores.
Measured on the H100 (`scripts/bench_gguf_fused.py`, triton 3.6, best config):
it loses to decode + cuBLAS at every 14B shape, by 1.4-3.7x at M = 512 and
2.8-6x at M = 5184 and 32,760 (Q6_K worst, its decode is the longest). There
is little to win there anyway: decode + cuBLAS is about 1.1x (0.99-1.34x) a
resident bf16 weight for M >= 5184 (1.8-2.8x at M = 512). Hence `gguf_matmul`
keeps it off unless WAN4STEP_GGUF_FUSED=1. M < 512 (where the weight read is
most of the cost) has not been measured.

Decoding goes through `gguf_triton.decode_tile`, the jit helper the one-pass
decoders use, with the same float32 arithmetic and FMA contraction disabled,
so the weights fed to the dot are bit-identical to `gguf_dequant.dequantize`.
`decode_tiles` runs exactly that tile path (`_w_tile`) and stores the tiles,
so tests can check the bits without the matmul.

Under TRITON_INTERPRET=1 (the CPU tests) two things differ, both outside the
decode: the bf16 cast is done by hand (the interpreter's truncates) and the
dot runs on float32 copies of its bf16/fp16 operands (the interpreter's bf16
dot multiplies raw bits). The products are exact either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .gguf_triton import GEOMETRY, decode_tile, round_half

FUSED_TYPES: frozenset[int] = frozenset(GEOMETRY)


@dataclass(frozen=True)
class Config:
    """One kernel shape. BLOCK_K must be a power-of-two multiple of the type's scale unit (16 or 32).

    W_IS_A computes y^T = W x^T, so the decoded tile is the dot's A operand: Hopper's wgmma
    can take A from registers (no shared-memory round trip for the decoded W), and for small
    M the 64-row wgmma minimum falls on BLOCK_N instead of BLOCK_M.
    """

    BLOCK_M: int
    BLOCK_N: int
    BLOCK_K: int
    num_warps: int
    num_stages: int
    W_IS_A: bool = False
    GROUP_M: int = 8


# (largest M, config): first row with M <= largest M wins. From `bench_gguf_fused.py --sweep` on
# the H100 (triton 3.6): 256x128x64 with W as the A operand was the fastest candidate for every
# type and 14B shape at M = 512, 5184 and 32760 (decode work scales with M / BLOCK_M, so the
# tallest M tile wins); 64-row tiles for M <= 256 keep enough programs in flight (unmeasured).
CONFIG_TABLE: list[tuple[int, Config]] = [
    (64, Config(32, 128, 128, 4, 3, W_IS_A=True)),
    (256, Config(64, 128, 64, 4, 3, W_IS_A=True)),
    (1 << 62, Config(256, 128, 64, 8, 3, W_IS_A=True)),
]
# one M per row of CONFIG_TABLE, for `gguf_matmul`'s first-use check of every config it may run
CHECK_M: tuple[int, ...] = (48, 200, 1100)

CANDIDATES: list[Config] = [
    Config(32, 128, 128, 4, 3, W_IS_A=True),
    Config(64, 128, 64, 4, 3),
    Config(64, 128, 64, 4, 3, W_IS_A=True),
    Config(128, 128, 64, 8, 3),
    Config(128, 128, 64, 8, 3, W_IS_A=True),
    Config(128, 256, 64, 8, 3),
    Config(128, 128, 128, 8, 2),
    Config(256, 128, 64, 8, 3, W_IS_A=True),
    Config(256, 128, 128, 8, 2, W_IS_A=True),  # s3 needs 228 KiB of shared memory: over the H100's limit
    Config(256, 128, 64, 8, 4, W_IS_A=True),  # ~5% faster than s3 on Q4_K at M >= 5184 (not swept on the rest)
    Config(256, 64, 64, 8, 3, W_IS_A=True),
]


def pick_config(m: int, n: int, k: int, qtype: int) -> Config:
    """The CONFIG_TABLE row for M (n, k, qtype: reserved for per-shape tuning)."""
    for top, cfg in CONFIG_TABLE:
        if m <= top:
            return cfg
    return CONFIG_TABLE[-1][1]


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _w_tile(
    w, offs_n, k0, N, K, row_bytes, QTYPE: tl.constexpr, SUB: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, EVEN: tl.constexpr, OUT_BF16: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Rows offs_n, columns k0 .. k0+BLOCK_K of W decoded to bf16/fp16: a [BLOCK_N, BLOCK_K] tile."""
    rows = offs_n.to(tl.int64)[:, None, None]
    u = (k0 // SUB + tl.arange(0, BLOCK_K // SUB))[None, :, None]
    el = tl.arange(0, SUB)[None, None, :]
    if EVEN:  # a constant mask folds away: unpredicated loads
        mask = tl.full((BLOCK_N, BLOCK_K // SUB, 1), 1, tl.int1)
    else:
        mask = (rows < N) & (u < K // SUB)
    val = decode_tile(w, rows, u, el, row_bytes, mask, QTYPE)
    return tl.reshape(round_half(val, OUT_BF16, INTERPRET), (BLOCK_N, BLOCK_K))


@triton.jit
def _fused_kernel(
    x, w, bias, y, M, N, K, row_bytes, stride_xm,
    QTYPE: tl.constexpr, SUB: tl.constexpr, HAS_BIAS: tl.constexpr, OUT_BF16: tl.constexpr,
    INTERPRET: tl.constexpr, EVEN_W: tl.constexpr, EVEN_K: tl.constexpr, W_IS_A: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # grouped launch order: GROUP_M row-tiles of x sweep the N tiles together, so W tiles stay in L2
    pid = tl.program_id(0)
    # no tl.cdiv / tl.zeros here: those are jit functions of triton's standard library, which the
    # interpreter cannot call when triton was imported before TRITON_INTERPRET was set (the tests)
    num_m = (M + BLOCK_M - 1) // BLOCK_M
    num_n = (N + BLOCK_N - 1) // BLOCK_N
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x + offs_m.to(tl.int64)[:, None] * stride_xm + offs_k[None, :]
    m_mask = offs_m[:, None] < M
    if W_IS_A:
        acc = tl.full((BLOCK_N, BLOCK_M), 0.0, tl.float32)
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            xt = tl.load(x_ptrs, mask=m_mask, other=0.0)
        else:
            xt = tl.load(x_ptrs, mask=m_mask & (k0 + offs_k[None, :] < K), other=0.0)
        wt = _w_tile(w, offs_n, k0, N, K, row_bytes, QTYPE, SUB, BLOCK_N, BLOCK_K, EVEN_W, OUT_BF16, INTERPRET)
        if INTERPRET:
            xt = xt.to(tl.float32)
            wt = wt.to(tl.float32)
        if W_IS_A:
            acc = tl.dot(wt, tl.trans(xt), acc)
        else:
            acc = tl.dot(xt, tl.trans(wt), acc)
        x_ptrs += BLOCK_K
    if W_IS_A:
        acc = tl.trans(acc)
    n_ok = offs_n < N
    if HAS_BIAS:
        acc += tl.load(bias + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out = round_half(acc, OUT_BF16, INTERPRET).to(tl.int16, bitcast=True)
    tl.store(y + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :], out, mask=m_mask & n_ok[None, :])


@triton.jit
def _decode_tiles_kernel(
    w, out, N, K, row_bytes, QTYPE: tl.constexpr, SUB: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, EVEN_W: tl.constexpr, OUT_BF16: tl.constexpr, INTERPRET: tl.constexpr,
):
    """The fused kernel's W path alone: one `_w_tile` per program, stored instead of multiplied."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    wt = _w_tile(w, offs_n, k0, N, K, row_bytes, QTYPE, SUB, BLOCK_N, BLOCK_K, EVEN_W, OUT_BF16, INTERPRET)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    tl.store(out + offs_n.to(tl.int64)[:, None] * K + offs_k[None, :], wt.to(tl.int16, bitcast=True), mask=mask)


def _check_args(data: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype):
    if qtype not in GEOMETRY:
        raise ValueError(f"no fused kernel for ggml type {qtype}")
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"fused GGUF linear computes in bf16/fp16, not {dtype}")
    block, size, sub = GEOMETRY[qtype]
    if len(shape) != 2:
        raise ValueError(f"a linear weight is 2-D, got shape {tuple(shape)}")
    n, k = (int(s) for s in shape)
    if data.dtype != torch.uint8:
        data = data.contiguous().view(torch.uint8)
    data = data.contiguous()
    if k % block or data.numel() != n * (k // block) * size:
        raise ValueError(f"{data.numel()} bytes do not hold a ({n}, {k}) tensor of ggml type {qtype}")
    return data, n, k, k // block * size, sub


def _check_config(cfg: Config, sub: int) -> None:
    units = cfg.BLOCK_K // sub
    if cfg.BLOCK_K % sub or units & (units - 1):
        raise ValueError(f"BLOCK_K={cfg.BLOCK_K} is not a power-of-two multiple of the scale unit {sub}")


def fused_linear(
    x: torch.Tensor, data: torch.Tensor, qtype: int, shape: Sequence[int], bias: torch.Tensor | None = None,
    config: Config | None = None,
) -> torch.Tensor:
    """F.linear(x, dequantize(data, qtype, shape, x.dtype), bias) in one kernel; x is bf16/fp16 [..., K]."""
    qtype = int(qtype)
    data, n, k, row_bytes, sub = _check_args(data, qtype, shape, x.dtype)
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} features, the weight {k}")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y.view(*x.shape[:-1], n)
    if bias is not None:
        bias = bias.contiguous()
        if bias.numel() != n:
            raise ValueError(f"bias has {bias.numel()} entries, the output {n}")
    cfg = config or pick_config(m, n, k, qtype)
    _check_config(cfg, sub)
    grid = (triton.cdiv(m, cfg.BLOCK_M) * triton.cdiv(n, cfg.BLOCK_N),)
    _fused_kernel[grid](
        x2, data, bias if bias is not None else y, y.view(torch.int16), m, n, k, row_bytes, x2.stride(0),
        QTYPE=qtype, SUB=sub, HAS_BIAS=bias is not None, OUT_BF16=x.dtype == torch.bfloat16,
        INTERPRET=_interpreting(), EVEN_W=n % cfg.BLOCK_N == 0 and k % cfg.BLOCK_K == 0,
        EVEN_K=k % cfg.BLOCK_K == 0, W_IS_A=cfg.W_IS_A, BLOCK_M=cfg.BLOCK_M, BLOCK_N=cfg.BLOCK_N,
        BLOCK_K=cfg.BLOCK_K, GROUP_M=cfg.GROUP_M, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        enable_fp_fusion=False,
    )
    return y.view(*x.shape[:-1], n)


def decode_tiles(
    data: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype, config: Config | None = None,
) -> torch.Tensor:
    """Debug entry: W decoded tile by tile through the fused kernel's own `_w_tile`, as a (N, K) tensor.

    With `config` (default: the one `fused_linear` picks for M = 1) it uses the same BLOCK_N/BLOCK_K
    and masks as the matmul would, so bit-equality with `dequantize` covers the fused decode path.
    """
    qtype = int(qtype)
    data, n, k, row_bytes, sub = _check_args(data, qtype, shape, dtype)
    cfg = config or pick_config(1, n, k, qtype)
    _check_config(cfg, sub)
    out = torch.empty(n, k, dtype=dtype, device=data.device)
    grid = (triton.cdiv(n, cfg.BLOCK_N), triton.cdiv(k, cfg.BLOCK_K))
    _decode_tiles_kernel[grid](
        data, out.view(torch.int16), n, k, row_bytes, QTYPE=qtype, SUB=sub, BLOCK_N=cfg.BLOCK_N,
        BLOCK_K=cfg.BLOCK_K, EVEN_W=n % cfg.BLOCK_N == 0 and k % cfg.BLOCK_K == 0,
        OUT_BF16=dtype == torch.bfloat16, INTERPRET=_interpreting(), num_warps=4, enable_fp_fusion=False,
    )
    return out


def linear_tolerance(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact y in float64, per-element bound on |a - b|) for two bf16/fp16 results a, b of x @ w^T + bias.

    Both sides multiply the same bf16/fp16 values (exact in float32) and differ only in summation
    order and rounding: each is within 2u|y| of the exact y (u = 2^-8 bf16, 2^-11 fp16; one rounding
    of the sum, one more where a library adds the bias after rounding) plus the float32 summation
    error, at most K * 2^-24 * (|x| @ |w|^T). The difference is bounded by twice that, plus 2^-24
    for fp16's subnormal spacing.
    """
    xd, wd = x.reshape(-1, x.shape[-1]).double(), w.double()
    y = xd @ wd.T
    mag = xd.abs() @ wd.abs().T
    if bias is not None:
        y = y + bias.double()
        mag = mag + bias.double().abs()
    u = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    bound = 4 * u * y.abs() + 2 * x.shape[-1] * 2.0**-24 * mag + 2.0**-24
    return y, bound


def _fused(qtype: int) -> Callable[..., torch.Tensor]:
    def fn(x: torch.Tensor, data: torch.Tensor, shape: Sequence[int], bias: torch.Tensor | None = None):
        return fused_linear(x, data, qtype, shape, bias)

    return fn


# qtype -> fn(x, data, shape, bias) -> y, the table `gguf_matmul._FUSED_LINEARS` is filled from
FUSED_LINEARS: dict[int, Callable[..., torch.Tensor]] = {q: _fused(q) for q in GEOMETRY}
