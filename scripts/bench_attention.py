"""Attention backends side by side at the Wan2.1-14B shapes, in one process (issue 20).

    python scripts/bench_attention.py [--sweep] [--log docs/bench/attention_h200.log] [--sizes 480p,720p]
    python scripts/bench_attention.py --smoke     # CPU, 48 tokens: SDPA and the 8-bit method's torch reference

Prints one table: per backend and shape (480p / 720p self-attention, L = 32,760 / 75,600 tokens;
their cross-attention on 512 text keys; 40 heads x 128, B = 1, the block's strided [B, H, L, D]
views), the median ms per call, TFLOP/s (4 * Lq * Lk * D * H flops), the ratio to cuDNN, and the
accuracy against float32 SDPA on structured inputs (wan4step/attn8/structured.py): cosine and
relative L2. Backends: SDPA cuDNN, SDPA flash, sageattention if importable, flash-attn-4 if
importable, the pack's 8-bit attention per kept launch config (+ its fp16-P·V sm80 variant), and
the 8-bit passes apart (statistics, quantization, kernel).

--sweep first times the 8-bit kernel's launch configs at 480p (compiled in parallel worker
processes, then timed one after another) and benches the fastest; without it the configs in
wan4step/attn8.CONFIGS are used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

from wan4step import attn8  # noqa: E402
from wan4step.attn8.structured import accuracy, sdpa_fp32, structured_qkv  # noqa: E402
from wan4step.wan_config import HEAD_DIM  # noqa: E402

H, D = bl.T2V_14B.num_heads, HEAD_DIM
SIZES = {name: bl.SIZES[name].tokens() for name in ("480p", "720p", "tiny")}  # 32,760 / 75,600 / 48 tokens
TEXT = bl.TEXT_TOKENS
LOG: list[str] = []
DEVICE = torch.device("cuda")


def say(line: str = "") -> None:
    print(line, flush=True)
    LOG.append(line)


def median_ms(fn, reps: int, warm: int = 2) -> float:
    return bl.median_ms(fn, DEVICE, reps, warm if DEVICE.type == "cuda" else 0)


def sweep_configs() -> list[attn8.Config]:
    """Tile shapes, warps and pipeline depths around the best of the H200 sweeps (64 x 128 tiles, one
    warpgroup, 3 stages), with and without the polynomial exp2 split."""
    C = attn8.Config
    return [C(64, 128, 4, 3), C(64, 128, 4, 2), C(64, 128, 4, 4), C(64, 64, 4, 3), C(64, 64, 4, 4),
            C(128, 128, 8, 3), C(128, 128, 8, 4), C(128, 64, 8, 3), C(64, 128, 4, 3, exp_split=True),
            C(128, 128, 8, 3, exp_split=True)]


def _precompile(args) -> str:
    """Worker: compile one config's kernels into Triton's on-disk cache on a tiny problem whose integer
    arguments fall in the same divisibility classes (mod 16) as the real shapes."""
    cfg, lq, lk = args
    try:
        q, k, v = structured_qkv(1, H, lq, lk, device="cuda")
        attn8.attn8(q, k, v, cfg=cfg)
        torch.cuda.synchronize()
        return f"{cfg} ok"
    except Exception as exc:  # the main process reports it when it times this config
        return f"{cfg} failed: {type(exc).__name__}: {str(exc)[:200]}"


def precompile(cfgs, shapes) -> None:
    t = time.time()
    jobs = [(c, 16 + lq % 16, 16 + lk % 16) for c in cfgs for lq, lk in shapes]
    ctx = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(12, os.cpu_count() or 4), mp_context=ctx) as ex:
        for r in ex.map(_precompile, jobs):
            if "failed" in r:
                say(f"  precompile {r}")
    say(f"precompiled {len(jobs)} kernels sets in {time.time() - t:.1f} s")


def run_sweep(L: int) -> list[tuple[float, attn8.Config]]:
    cfgs = sweep_configs()
    precompile(cfgs, [(L, L)])
    q, k, v = structured_qkv(1, H, L, L, seed=1, device="cuda")
    ref = reference(q, k, v)
    res = []
    say(f"\n== 8-bit launch configs at L = {L} (whole call: stats + quantize + kernel; kernel alone)")
    for cfg in cfgs:
        try:
            out = attn8.attn8(q, k, v, cfg=cfg)
            cos, rel = accuracy(out, ref)
            t = median_ms(lambda cfg=cfg: attn8.attn8(q, k, v, cfg=cfg), 7)
            st = attn8.stats(q, k, v)
            codes = attn8.quantize(q, k, v, st, cfg.block_n, True, key_order=cfg.gluon)
            tk = median_ms(lambda cfg=cfg, codes=codes, st=st: attn8.attention_codes(
                *codes, st[3], st[4], 1, H, L, L, q.dtype, cfg, True), 7)
            say(f"  {str(cfg):16s} {t:8.2f} ms  kernel {tk:8.2f} ms  {flops(L, L) / tk / 1e9:6.0f} TFLOP/s  "
                f"cos {cos:.5f} rel {rel:.4f}")
            res.append((t, cfg))
        except Exception as exc:
            say(f"  {str(cfg):16s} failed: {type(exc).__name__}: {str(exc)[:300]}")
    res.sort(key=lambda r: r[0])
    gluon_rows(q, k, v, ref, L)
    return res


GLUON_VARIANTS = {  # name -> hopper.attention_codes keywords (64-row warpgroups, 128-key blocks)
    "1wg s3": {"stages": 3},  # one warpgroup per program, two programs per SM, loads issued in the loop
    # warp-specialized: a producer warp and two consumer warpgroups sharing the K/V ring, one program per SM
    "ws s3": {"ws": True, "stages": 3}, "ws s4": {"ws": True, "stages": 4}, "ws s5": {"ws": True, "stages": 5},
    # ... with the softmax row sums as P·1 on the tensor cores (what attn8.CONFIGS runs on sm90)
    "ws s3 ones": {"ws": True, "stages": 3, "ones": True},
}


def gluon_rows(q, k, v, ref, L: int, variants=("1wg s3", "ws s3", "ws s3 ones")) -> list[tuple[float, str]]:
    """The Gluon kernel for sm90 (wan4step/attn8/hopper.py) in its variants, kernel alone on the same
    codes (V in key order), with accuracy against float32 SDPA; and a probe of whether it is bound by L2
    traffic: the kernel again with TMA bringing only half of each K and V tile (same MMAs and softmax
    on partly stale tiles: its output is garbage, its time is the point)."""
    if torch.cuda.get_device_capability()[0] != 9:
        return []
    if not attn8.HAVE_GLUON:
        say("  the Gluon kernel is not importable with this Triton")
        return []
    from wan4step.attn8 import hopper
    st = attn8.stats(q, k, v)
    codes = attn8.quantize(q, k, v, st, 128, True, key_order=True)
    say(f"\n== Gluon kernel (sm90; wan4step/attn8/hopper.py), kernel alone, same codes, L = {L}")
    res = []
    for name in variants:
        kw = GLUON_VARIANTS[name]
        run = lambda kw=kw, half=False: hopper.attention_codes(  # noqa: E731
            *codes, st[3], st[4], 1, H, L, L, q.dtype, half_kv_probe=half, **kw)
        try:
            cos, rel = accuracy(run(), ref)
            tk = median_ms(run, 7)
            th = float("nan") if kw.get("ws") else median_ms(lambda run=run: run(half=True), 5)
        except Exception as exc:
            say(f"  {name} gluon failed: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        res.append((tk, name))
        say(f"  {name:24s} kernel {tk:8.2f} ms  {flops(L, L) / tk / 1e9:6.0f} TFLOP/s  "
            f"cos {cos:.5f} rel {rel:.4f};  half the K/V bytes {th:8.2f} ms ({th / tk:.3f}x)")
    return sorted(res)


def stats_sweep(L: int) -> None:
    """attn8.stats's launch shapes (one read of q, k and v; 1 GB at 480p)."""
    q, k, v = structured_qkv(1, H, L, L, seed=3, device="cuda")
    say(f"\n== statistics pass at L = {L} (chunk, rows per step, warps)")
    for chunk, bl_, w in ((512, 16, 4), (512, 32, 4), (1024, 32, 8), (256, 16, 4), (512, 64, 8), (2048, 64, 8)):
        t = median_ms(lambda c=chunk, b=bl_, w=w: attn8.stats(q, k, v, c, b, w), 11)
        say(f"  chunk {chunk:5d} block_l {bl_:3d} warps {w}: {t:.3f} ms ({3 * q.numel() * 2 / t / 1e6:.0f} GB/s)")


def gluon_mode(sizes: list[str]) -> None:
    """--gluon: every Gluon variant at the first size, the fastest two again at the others."""
    best = []
    for i, size in enumerate(sizes):
        L = SIZES[size]
        q, k, v = structured_qkv(1, H, L, L, seed=7, device=DEVICE)
        ref = reference(q, k, v)
        names = tuple(GLUON_VARIANTS) if i == 0 else tuple(["1wg s3"] + [n for _, n in best[:2] if n != "1wg s3"])
        res = gluon_rows(q, k, v, ref, L, names)
        best = best or res
        del q, k, v, ref
        torch.cuda.empty_cache()
    stats_sweep(SIZES[sizes[0]])


def flops(lq: int, lk: int) -> float:
    return 4.0 * lq * lk * D * H


def reference(q, k, v) -> torch.Tensor:
    """float32 SDPA through the memory-efficient kernel (O(L) memory; the math one needs L^2)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not q.is_cuda:
        return sdpa_fp32(q, k, v)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        return torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())


def backends(best: list[attn8.Config]) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if DEVICE.type != "cuda":
        from wan4step.attn8.reference import attn8_reference

        bl.skip_cuda("SDPA cuDNN/flash, sageattention, flash-attn-4 and the 8-bit kernels")
        return {"SDPA (CPU)": torch.nn.functional.scaled_dot_product_attention,
                "8bit-reference (torch)": lambda q, k, v: attn8_reference(q, k, v).to(q.dtype)}
    def sdpa_with(be):
        def f(q, k, v):
            with sdpa_kernel([be]):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return f

    out = {"cuDNN (SDPA)": sdpa_with(SDPBackend.CUDNN_ATTENTION), "flash (SDPA)": sdpa_with(SDPBackend.FLASH_ATTENTION)}
    try:
        from sageattention import sageattn

        out["sageattention " + getattr(sys.modules.get("sageattention"), "__version__", "")] = (
            lambda q, k, v: sageattn(q, k, v, tensor_layout="HND", is_causal=False))
    except Exception as exc:
        say(f"sageattention not importable: {type(exc).__name__}: {exc}")
    try:
        from wan4step.attention import _load_fa4

        out["flash-attn-4"] = _load_fa4(torch.device("cuda"))
    except Exception as exc:
        say(f"flash-attn-4 not importable: {type(exc).__name__}: {str(exc)[:200]}")
    for cfg in best:
        out[f"8bit {cfg}"] = lambda q, k, v, cfg=cfg: attn8.attn8(q, k, v, cfg=cfg)
    if best[0].gluon:  # the Triton kernel, which runs where the Gluon one cannot
        tri = replace(best[0], gluon=False, ws=False)
        out[f"8bit {tri} (Triton)"] = lambda q, k, v: attn8.attn8(q, k, v, cfg=tri)
    out[f"8bit {best[0]} fp16 P.V (sm80 path)"] = lambda q, k, v: attn8.attn8(q, k, v, cfg=best[0], pv_fp8=False)
    return out


def bench_shape(label: str, L: int, lk: int, fns: dict, cfg: attn8.Config, rows: list) -> None:
    q, k, v = structured_qkv(1, H, L, lk, seed=7, device=DEVICE)
    ref = reference(q, k, v)
    reps = (5 if L > 40000 and lk == L else 11) if DEVICE.type == "cuda" else 1
    base = None
    for name, fn in fns.items():
        try:
            out = fn(q, k, v)
            cos, rel = accuracy(out, ref)
            del out
            t = median_ms(lambda fn=fn: fn(q, k, v), reps)
        except Exception as exc:
            say(f"  {label} {name}: failed: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        base = t if name.startswith(("cuDNN", "SDPA (CPU)")) else base
        rows.append((label, name, t, flops(L, lk) / t / 1e9, t / base if base else float("nan"), cos, rel))
        say(f"  {label:11s} {name:40s} {t:9.3f} ms")
    if DEVICE.type != "cuda":
        return
    st = attn8.stats(q, k, v)  # the 8-bit passes apart
    codes = attn8.quantize(q, k, v, st, cfg.block_n, True, key_order=cfg.gluon)
    ts = median_ms(lambda: attn8.stats(q, k, v), reps)
    tq = median_ms(lambda: attn8.quantize(q, k, v, st, cfg.block_n, True, key_order=cfg.gluon), reps)
    tk = median_ms(lambda: attn8.attention_codes(*codes, st[3], st[4], 1, H, L, lk, q.dtype, cfg, True), reps)
    say(f"  {label} 8bit {cfg} passes: stats {ts:.3f} ms, quantize {tq:.3f} ms, kernel {tk:.3f} ms "
        f"({flops(L, lk) / tk / 1e9:.0f} TFLOP/s)")


def table(sizes: list[str], best: list[attn8.Config]) -> None:
    fns = backends(best)
    rows: list = []
    for size in sizes:
        L = SIZES[size]
        for kind, lk in (("self", L), ("cross", TEXT)):
            bench_shape(f"{size} {kind}", L, lk, fns, best[0], rows)
            torch.cuda.empty_cache()
    say(f"\n== attention per call, {bl.device_line(DEVICE)}, "
        f"triton {__import__('triton').__version__}; structured inputs, accuracy vs float32 SDPA")
    say(bl.text_table(["shape", "backend", "ms", "TFLOP/s", "vs cuDNN", "cos", "rel L2"],
                      [(shape, name, f"{t:.3f}", f"{tf:.0f}", f"{ratio:.3f}", f"{cos:.5f}", f"{rel:.4f}")
                       for shape, name, t, tf, ratio, cos, rel in rows]))


def main(argv=None) -> None:
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sizes", default="480p,720p")
    ap.add_argument("--log", default="")
    ap.add_argument("--gluon", action="store_true", help="only the sm90 Gluon kernel's variants and the stats pass")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), sweep=False, sizes="tiny")
    if args.smoke:
        DEVICE = torch.device("cpu")
        say(f"# {bl.device_line(DEVICE)}, {time.strftime('%Y-%m-%d %H:%M')}")
        table(args.sizes.split(","), [attn8.config_for((9, 0))])
        return
    bl.require_cuda("bench_attention.py")
    say(f"# {torch.cuda.get_device_name()} (sm{''.join(map(str, torch.cuda.get_device_capability()))}), "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    cap = torch.cuda.get_device_capability()
    best = [attn8.config_for(cap)]
    if args.gluon:
        gluon_mode(args.sizes.split(","))
    elif args.sweep:
        res = run_sweep(SIZES["480p"])
        if res:
            best = [r[1] for r in res[:1]]
            default = attn8.config_for(cap)
            best += [default] if default != best[0] else [r[1] for r in res[1:2]]
    else:
        precompile(best, [(SIZES[s], SIZES[s]) for s in args.sizes.split(",")] + [(SIZES["480p"], TEXT)])
    if not args.gluon:
        table(args.sizes.split(","), best)
    if args.log:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        Path(args.log).write_text("\n".join(LOG) + "\n")


if __name__ == "__main__":
    main()
