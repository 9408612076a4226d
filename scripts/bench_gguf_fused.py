"""Fused GGUF dequant-matmul vs decode + cuBLAS vs a resident bf16 weight, at the Wan2.1 T2V-14B shapes.

CUDA only. Run from the repo root (the lead runs it on the H100):

    python3 scripts/bench_gguf_fused.py                       # 4 types x 3 shapes x M in 512, 5184, 32760
    python3 scripts/bench_gguf_fused.py --types Q4_K --m 512,5184
    python3 scripts/bench_gguf_fused.py --sweep --m 512,5184,32760   # time every gguf_fused.CANDIDATES config

Weights are random valid blocks (`gguf_encode.random_raw`), x is bf16 [M, K]. Columns,
medians of CUDA-event timings (bench_gguf's `timeit`) in ms:

  a bf16     F.linear(x, W_bf16, b) with the bf16 weight resident: the floor
  b deq+mm   dequantize_on_device (one-pass Triton decoder) + F.linear: today's gguf_linear
  c fused    gguf_fused.fused_linear: one kernel, W decoded per tile in registers
  b/a c/a c/b   ratios; c/b < 1 means the fused kernel wins

Before timing, each type's fused output is checked against decode + F.linear on one shape
(max |diff| / max |y|, and whether every element is within `linear_tolerance`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import gguf  # noqa: E402
from bench_gguf import timeit  # noqa: E402

from wan4step.quant import gguf_matmul  # noqa: E402
from wan4step.quant.gguf_dequant import dequantize  # noqa: E402
from wan4step.quant.gguf_encode import random_raw  # noqa: E402

Q = gguf.GGMLQuantizationType
SHAPES = {"qkvo 5120x5120": (5120, 5120), "ffn.0 13824x5120": (13824, 5120), "ffn.2 5120x13824": (5120, 13824)}


def verify(gf, qtype, device: torch.device, g: torch.Generator) -> str:
    """Fused vs decode + F.linear on (M, N, K) = (1000, 5120, 5120) with a bias, for every config of the table."""
    n, k, m = 5120, 5120, 1000
    raw = random_raw(qtype, (n, k), device=device, generator=g)
    x = torch.randn(m, k, device=device, generator=g, dtype=torch.bfloat16)
    b = torch.randn(n, device=device, generator=g, dtype=torch.bfloat16)
    w = dequantize(raw, qtype, (n, k), torch.bfloat16)
    want = F.linear(x, w, b)
    _, bound = gf.linear_tolerance(x, w, b, torch.bfloat16)
    bits, within, rel = True, True, 0.0
    for cfg in dict.fromkeys(c for _, c in gf.CONFIG_TABLE):
        got = gf.decode_tiles(raw, qtype, (n, k), torch.bfloat16, cfg).view(torch.int16)
        bits &= torch.equal(got, w.view(torch.int16))
        d = (gf.fused_linear(x, raw, qtype, (n, k), b, config=cfg).float() - want.float()).abs()
        within &= bool((d.double() <= bound).all())
        rel = max(rel, float(d.max() / want.float().abs().max()))
    return (
        f"# check {qtype.name} ({len(gf.CONFIG_TABLE)} table configs): decode path == dequantize bit for bit: "
        f"{'yes' if bits else 'NO'}; fused vs decode+linear max|diff|/max|y| = {rel:.2e}, "
        f"within rounding bound: {'yes' if within else 'NO'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default="Q8_0,Q4_K,Q5_K,Q6_K")
    ap.add_argument("--m", default="512,5184,32760", help="token counts (rows of x), comma-separated")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--sweep", action="store_true", help="time every gguf_fused.CANDIDATES config (for the table)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gguf_fused.py needs a CUDA GPU (the fused kernel is Triton, CUDA only); none found.")
    import triton

    from wan4step.quant import gguf_fused as gf

    device = torch.device("cuda")
    types = [Q[t.strip()] for t in args.types.split(",")]
    ms = [int(m) for m in args.m.split(",")]
    gguf_matmul._load_kernels()
    print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, triton {triton.__version__}, "
          f"iters {args.iters}; Triton decoders for (b): {'on' if gguf_matmul._DEQUANT_KERNELS else 'off'}")
    g = torch.Generator(device=device).manual_seed(0)
    for qtype in types:
        print(verify(gf, qtype, device, g))
    if args.sweep:
        sweep(gf, types, ms, args.iters, device, g)
        return

    head = (f"{'type':5s} {'shape':17s} {'M':>6s} {'a bf16':>8s} {'b deq+mm':>9s} {'c fused':>8s} "
            f"{'b/a':>6s} {'c/a':>6s} {'c/b':>6s}  config")
    print(head)
    print("-" * len(head))
    summary = []
    for qtype in types:
        totals = {m: [0.0, 0.0, 0] for m in ms}  # M -> [sum b, sum c, shapes where c < b]
        for sname, (n, k) in SHAPES.items():
            raw = random_raw(qtype, (n, k), device=device, generator=g)
            w16 = dequantize(raw, qtype, (n, k), torch.bfloat16)
            b = torch.randn(n, device=device, generator=g, dtype=torch.bfloat16)
            for m in ms:
                x = torch.randn(m, k, device=device, generator=g, dtype=torch.bfloat16)
                ta, tb, tc = time_three(gf, x, raw, w16, b, qtype, device, args.iters)
                cfg = gf.pick_config(m, n, k, int(qtype))
                tot = totals[m]
                tot[0] += tb
                tot[1] += tc
                tot[2] += tc < tb
                print(f"{qtype.name:5s} {sname:17s} {m:6d} {ta:8.3f} {tb:9.3f} {tc:8.3f} "
                      f"{tb / ta:6.2f} {tc / ta:6.2f} {tc / tb:6.2f}  {cfg_name(cfg)}", flush=True)
            torch.cuda.empty_cache()
        wins = [f"M={m} ({t[1] / t[0]:.2f}x, {t[2]}/3 shapes)" for m, t in totals.items() if t[1] < t[0]]
        loses = [f"M={m} ({t[1] / t[0]:.2f}x, {t[2]}/3 shapes)" for m, t in totals.items() if t[1] >= t[0]]
        summary.append(f"# {qtype.name}: fused (c) vs decode+mm (b), summed over the 3 shapes: "
                       f"wins at {', '.join(wins) or 'no M'}; loses at {', '.join(loses) or 'no M'}")
    print("\n".join(summary))


def time_three(gf, x, raw, w16, b, qtype, device, iters) -> tuple[float, float, float]:
    """ms of (a) resident bf16 linear, (b) decode + linear, (c) fused, on the same x and bias."""
    shape = tuple(w16.shape)
    ta = timeit(lambda: F.linear(x, w16, b), device, iters)
    tb = timeit(lambda: F.linear(x, gguf_matmul.dequantize_on_device(raw, qtype, shape, x.dtype), b), device, iters)
    tc = timeit(lambda: gf.fused_linear(x, raw, qtype, shape, b), device, iters)
    return ta, tb, tc


def time_config(gf, x, raw, qtype, shape, cfg, device, iters) -> float:
    """ms of the fused kernel with one config, inf if it does not compile or run."""
    try:
        return timeit(lambda: gf.fused_linear(x, raw, qtype, shape, None, config=cfg), device, iters)
    except Exception as e:  # noqa: BLE001 - e.g. out of shared memory: report, keep going
        print(f"# {cfg_name(cfg)} failed: {type(e).__name__}: {str(e)[:200]}")
        return float("inf")


def cfg_name(c) -> str:
    return f"{c.BLOCK_M}x{c.BLOCK_N}x{c.BLOCK_K} w{c.num_warps} s{c.num_stages}{' W=A' if c.W_IS_A else ''}"


def sweep(gf, types, ms, iters, device, g) -> None:
    """Every candidate config on every (type, shape, M): ms, and the best per (type, M) summed over shapes."""
    print(f"{'type':5s} {'shape':17s} {'M':>6s}  " + "  ".join(f"{i:>7d}" for i in range(len(gf.CANDIDATES))))
    for i, c in enumerate(gf.CANDIDATES):
        print(f"#   config {i}: {cfg_name(c)}")
    for qtype in types:
        sums = {m: [0.0] * len(gf.CANDIDATES) for m in ms}
        for sname, (n, k) in SHAPES.items():
            raw = random_raw(qtype, (n, k), device=device, generator=g)
            for m in ms:
                x = torch.randn(m, k, device=device, generator=g, dtype=torch.bfloat16)
                row = [time_config(gf, x, raw, qtype, (n, k), c, device, iters) for c in gf.CANDIDATES]
                for i, t in enumerate(row):
                    sums[m][i] += t
                print(f"{qtype.name:5s} {sname:17s} {m:6d}  " + "  ".join(f"{t:7.3f}" for t in row), flush=True)
        for m, s in sums.items():
            best = min(range(len(s)), key=s.__getitem__)
            print(f"# best {qtype.name} M={m}: config {best} {cfg_name(gf.CANDIDATES[best])} ({s[best]:.3f} ms over 3 shapes)")


if __name__ == "__main__":
    main()
