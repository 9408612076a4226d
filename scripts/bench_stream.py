"""Block streaming vs resident, side by side in one process (14B shapes, random weights).

    python scripts/bench_stream.py                       # fp8, gguf Q4_K_M, bf16 at 480p and 288x512x33
    python scripts/bench_stream.py --formats fp8 --sizes small
    python scripts/bench_stream.py --swap 10,20,40 --formats fp8 --sizes 480p
    python scripts/bench_stream.py --smoke               # CPU, tiny model: checks the script runs

For each format and size: resident (all 40 blocks on the GPU), the pack's streamer with 40
blocks swapped under an emulated small card (a ballast allocation of total - budget bytes
made before the model is built, so every memory query sees the smaller card), and a naive
synchronous per-block `.to(device)` swap. Prints s/forward, peak VRAM (ballast excluded),
bytes streamed per forward, achieved H2D bandwidth, and the streamed time against the
floor max(resident compute, bytes / pinned H2D bandwidth) measured in the same run, the
overlap (share of the copy time hidden behind compute) and the process RSS (pinned slabs included).
GGUF tiers (gguf:Q4_K_M) are built with the tier's real per-tensor type mix (gguf_file.tier_types).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

GiB = bl.GiB


def pinned_bandwidth(device) -> float:
    src = torch.empty(1 * GiB, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty_like(src, device=device)
    for _ in range(2):
        dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    return 5 * GiB / (time.perf_counter() - t0)


class NaiveSwap(torch.nn.Module):
    """What simple block swaps do: a blocking .to(device) before each block, back to CPU after."""

    def __init__(self, block, device):
        super().__init__()
        object.__setattr__(self, "inner", block)
        self.device = device

    def forward(self, *a, **k):
        self.inner.to(self.device)
        try:
            return self.inner(*a, **k)
        finally:
            self.inner.to("cpu")


def run(pack, cfg, fmt, mode, size, device, budget_gib, iters, attention="sdpa", swap=40):
    from wan4step.offload.plan import spread
    from wan4step.offload.wan import plan_swap

    ballast = bl.Ballast(budget_gib, device)
    n = cfg.num_layers
    k = 0 if mode == "resident" else (swap if mode == "stream" else n)
    model = bl.build_wan(cfg, fmt, device, pack.nodes.comfy_compat.model.make_ops({}), streamed=spread(k, n))
    plan = None
    if mode == "stream":
        plan = plan_swap(model, k, device, prefetch=2, pin=device.type == "cuda")
        for name, wrapped in plan.patches.items():
            model.blocks[int(name.split(".")[1])] = wrapped
        plan.streamer.ensure_device()
    elif mode == "naive":
        for i in range(n):
            model.blocks[i] = NaiveSwap(model.blocks[i], device)
    _, opts = bl.fast_options(pack, model, attention, device) if mode != "naive" else (None, {})
    x = torch.randn(size.latent_shape(cfg.in_dim), device=device, dtype=torch.bfloat16)
    t = torch.tensor([937.5], device=device)
    ctx = (torch.randn(1, bl.TEXT_TOKENS, cfg.text_dim, device=device) * 0.1).to(torch.bfloat16)
    bl.free_cuda_cache()
    bl.reset_peak(device)
    with torch.inference_mode():
        sec = bl.measure(lambda m=model, x=x: m(x, t, ctx, transformer_options=dict(opts)), device, iters,
                         warmup=1).median_s
    peak = bl.peak_gib(device, minus_bytes=ballast.bytes)
    ram = bl.rss_gib()  # pinned slabs of the streamed blocks included
    streamed = plan.streamer.streamed_bytes if plan else (
        sum(bl.module_bytes(b.inner) for b in model.blocks) if mode == "naive" else 0)
    stalls = plan.streamer.stats.stalls if plan else 0
    if plan:
        plan.streamer.close()
    del model, plan, x
    ballast.release()
    bl.free_cuda_cache()
    return sec, peak, streamed, stalls, ram


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", default="fp8,gguf:Q4_K_M,bf16")
    ap.add_argument("--sizes", default="480p,small")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--naive", default="small", help="sizes on which to also time the naive .to() swap")
    ap.add_argument("--swap", default="40", help="blocks streamed, a comma list (e.g. 10,20,40)")
    ap.add_argument("--budget", type=float, default=0, help="emulated card in GiB (default 8, bf16 16)")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), formats="fp8,gguf:Q4_K_M,bf16", sizes="tiny", naive="tiny", swap="1",
                       iters=1)
    device = torch.device("cpu" if args.smoke else "cuda")
    cfg = bl.config(args.smoke)
    bl.import_comfy(bl.comfy_args(device))
    pack = bl.import_pack()
    if device.type == "cuda":
        bw = pinned_bandwidth(device)
        print(f"pinned H2D bandwidth: {bw / 1e9:.1f} GB/s", flush=True)
    else:
        bw = float("inf")
        bl.skip_cuda("pinned bandwidth, the emulated card and the copy floor")
    rows = []
    for fmt in args.formats.split(","):
        wf = bl.Format.parse(fmt)
        budget = args.budget or (16 if wf.kind == "bf16" else 8)
        for size in bl.sizes(args.sizes):
            sname = size.name
            res = {}
            modes = ([("resident", 0, 0)] + [("stream", budget, int(k)) for k in args.swap.split(",")]
                     + ([("naive", 0, cfg.num_layers)] if sname in args.naive.split(",") else []))
            for mode, b, k in modes:
                key = f"{mode}{k if mode == 'stream' else ''}"
                try:
                    res[key] = run(pack, cfg, wf, mode, size, device, b, args.iters, swap=k)
                except torch.OutOfMemoryError as exc:
                    res[key] = None
                    print(f"{fmt} {sname} {key}: OUT OF MEMORY ({str(exc).splitlines()[0][:120]})", flush=True)
                    bl.free_cuda_cache()
                if res[key]:
                    s, peak, by, st, ram = res[key]
                    print(f"{fmt:12s} {sname:6s} {key:8s} budget {b or 'full':>4} GiB: {s:7.3f} s/forward  peak {peak:6.2f} GiB"
                          f"  RAM {ram:6.2f} GiB  streamed {by / GiB:6.2f} GiB  stalls {st}", flush=True)
            naive = res.get("naive")
            for k in args.swap.split(","):
                if res.get("resident") and res.get(f"stream{k}"):
                    r = res["resident"][0]
                    s, peak, by, _, ram = res[f"stream{k}"]
                    floor = max(r, by / bw)
                    # share of the copy time hidden behind compute (1 = fully overlapped)
                    overlap = 1.0 if by == 0 else min(1.0, max(0.0, 1 - (s - r) / (by / bw))) if by / bw else float("nan")
                    rows.append((fmt, sname, int(k), r, s, s / r, by / GiB, by / s / 1e9, s / floor, overlap, peak, ram,
                                 budget, naive[0] / r if naive else None))
    print()
    print(bl.md_table(["format", "size", "blocks streamed", "resident s", "streamed s", "streamed/resident", "GiB/forward",
                       "achieved GB/s", "vs max(compute, bytes/BW)", "overlap", "peak VRAM GiB", "RAM GiB", "budget GiB",
                       "naive .to()/resident"],
                      [(fmt, sname, k, f"{r:.3f}", f"{s:.3f}", f"{ratio:.3f}x", f"{gib:.2f}", f"{gbs:.1f}",
                        f"{vs_floor:.3f}x", f"{overlap:.2f}", f"{peak:.2f}", f"{ram:.1f}", budget,
                        f"{naive:.2f}x" if naive else "-")
                       for fmt, sname, k, r, s, ratio, gib, gbs, vs_floor, overlap, peak, ram, budget, naive in rows]))
    print(bl.device_line(device) + (f", pinned H2D {bw / 1e9:.1f} GB/s" if device.type == "cuda" else ""))

if __name__ == "__main__":
    main()
