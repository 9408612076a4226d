"""Profile one Wan2.1-14B block at 480p: ComfyUI's block code vs the pack's, kernel by kernel.

    python scripts/profile_block.py [--tokens 32760] [--attention sdpa] [--formats bf16,fp8,int8] [--rounds 7]
    python scripts/profile_block.py --smoke       # CPU, the tiny model's block: checks the script runs

Prints the time of each variant (median per call, CUDA events), its enqueue time and CUDA-graph
replay time, the attention time per SDPA backend, the formats timed interleaved round by round
(the GPU's clock drifts within a run), and torch.profiler's top CUDA kernels for every variant.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

from wan4step.wan_config import WanConfig  # noqa: E402


def ms(fn, iters: int = 5) -> float:
    """Median ms of one call (benchlib's timer; 2 warm-up calls)."""
    return bl.median_ms(fn, DEVICE, iters=iters, warmup=2)


DEVICE = torch.device("cuda")


def enqueue_and_graph(fn) -> str:
    """CPU time to enqueue one call (a hidden sync shows up as ~the GPU time) and the time of the
    same call replayed as a CUDA graph (no launch gaps): the gap to `ms` is launch overhead."""
    if DEVICE.type != "cuda":
        return "enqueue / CUDA graph: n/a on the CPU"
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    cpu = (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize()
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()  # warm-up on the capture stream
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        graph = f"{ms(g.replay):7.2f} ms"
        del g
    except Exception as exc:  # noqa: BLE001 - a diagnostic; report why it could not capture
        graph = f"n/a ({type(exc).__name__}: {str(exc)[:80]})"
    return f"enqueue {cpu:6.2f} ms (CPU), CUDA graph {graph}"


def main(argv=None) -> None:
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=bl.SIZES["480p"].tokens())
    ap.add_argument("--attention", default="sdpa")
    ap.add_argument("--formats", default="bf16,fp8")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the formats' block timings")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), tokens=bl.SIZES["tiny"].tokens(), rounds=2, formats="bf16,fp8")
    DEVICE = dev = torch.device("cpu" if args.smoke else "cuda")
    bl.import_comfy(bl.comfy_args(dev))
    pack = bl.import_pack()
    from bench_forward import build
    from torch.nn.attention import SDPBackend, sdpa_kernel

    full = bl.config(args.smoke)
    cfg = WanConfig(dim=full.dim, ffn_dim=full.ffn_dim, num_layers=1)
    size = bl.SIZES["tiny" if args.smoke else "480p"]  # the rope grid; --tokens takes its first L positions
    model = build("bf16", dev, cfg, pack)
    blk = model.blocks[0]
    L, C, H = args.tokens, cfg.dim, cfg.num_heads
    x = torch.randn(1, L, C, device=dev, dtype=torch.bfloat16)
    e0 = torch.randn(1, 1, 6, C, device=dev, dtype=torch.bfloat16) * 0.1
    ctx = torch.randn(1, bl.TEXT_TOKENS, C, device=dev, dtype=torch.bfloat16)
    _, _, t, h, w = size.latent_shape()
    freqs = model.rope_encode(t, h, w, device=dev, dtype=torch.bfloat16)[:, :L]
    fast, _ = bl.fast_options(pack, model, args.attention, dev)
    from wan4step.dit import block as fast_block
    from wan4step.dit.block import block_forward

    rope = fast.rope(freqs)
    profiled = []
    timed = {}
    with torch.inference_mode():
        comfy_fn = lambda: blk(x, e=e0, freqs=freqs, context=ctx, transformer_options={})  # noqa: E731
        print(f"ComfyUI block (bf16): {ms(comfy_fn):7.2f} ms")
        print(f"      ComfyUI: {enqueue_and_graph(comfy_fn)}")
        profiled.append(("ComfyUI bf16", comfy_fn))
        for fmt in args.formats.split(","):
            b = blk if fmt == "bf16" else build(fmt, dev, cfg, pack).blocks[0]
            fn = (lambda b=b: block_forward(b, x, e0, rope, ctx, fast.fn))  # noqa: E731
            line = f"ours {fmt:6s} block: {ms(fn):7.2f} ms"
            if fmt in ("fp8", "int8"):
                real = fast_block._shared_w8a8
                fast_block._shared_w8a8 = lambda *a: None
                try:
                    line += f"   (each linear quantizing its own input: {ms(fn):7.2f} ms)"
                finally:
                    fast_block._shared_w8a8 = real
            print(line)
            print(f"      {fmt}: {enqueue_and_graph(fn)}")
            profiled.append((f"ours {fmt}", fn))
            timed[fmt] = fn
        q = torch.randn(1, H, L, 128, device=dev, dtype=torch.bfloat16)
        k, v = torch.randn_like(q), torch.randn_like(q)
        qt = torch.randn(1, L, H, 128, device=dev, dtype=torch.bfloat16).transpose(1, 2)
        kt, vt = torch.randn_like(qt), torch.randn_like(qt)
        F = torch.nn.functional.scaled_dot_product_attention
        print(f"sdpa default  contiguous {ms(lambda: F(q, k, v)):6.2f} ms  transposed {ms(lambda: F(qt, kt, vt)):6.2f} ms")
        for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel([be]):
                    a, b = ms(lambda: F(q, k, v)), ms(lambda: F(qt, kt, vt))
                print(f"sdpa {be.name:20s} contiguous {a:6.2f} ms  transposed {b:6.2f} ms")
            except RuntimeError as exc:
                print(f"sdpa {be.name}: {str(exc)[:120]}")
        from wan4step.attention import resolve

        for name in ("sage", "flash"):  # the pack's optional backends, where installed
            got, fn = resolve(name, dev)
            if got == name:
                print(f"pack {name:20s} transposed {ms(lambda fn=fn: fn(qt, kt, vt)):6.2f} ms")
            else:
                print(f"pack {name}: not installed here")
        if len(timed) > 1:  # formats side by side, interleaved: clocks drift over a run (attention moves ~2 ms)
            rounds = {name: [] for name in timed}
            for _ in range(args.rounds):
                for name, fn in timed.items():
                    rounds[name].append(ms(fn))
            base = rounds["bf16"] if "bf16" in rounds else None
            for name, ts in rounds.items():
                line = f"interleaved x{args.rounds}: {name:6s} median {statistics.median(ts):7.2f} ms"
                if base is not None and name != "bf16":
                    ratios = [t / b for t, b in zip(ts, base, strict=True)]
                    line += (f"   / bf16: median {statistics.median(ratios):.3f} "
                             f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
                print(line)
        from torch.profiler import ProfilerActivity, profile

        activity, key = (ProfilerActivity.CUDA, "cuda_time_total") if dev.type == "cuda" else (
            ProfilerActivity.CPU, "cpu_time_total")
        for name, fn in profiled:
            fn()
            bl.sync(dev)
            with profile(activities=[activity]) as prof:
                fn()
                bl.sync(dev)
            print(f"\n== {name} block: top {activity.name} kernels")
            print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=70))
    print(bl.device_line(dev))


if __name__ == "__main__":
    main()
