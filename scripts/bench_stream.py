"""Block streaming vs resident, side by side in one process (14B shapes, random weights).

    python scripts/bench_stream.py                       # fp8, gguf Q4_K_M, bf16 at 480p and 288x512x33
    python scripts/bench_stream.py --formats fp8 --sizes small
    python scripts/bench_stream.py --swap 10,20,40 --formats fp8 --sizes 480p

For each format and size: resident (all 40 blocks on the GPU), the pack's streamer with 40
blocks swapped under an emulated small card (a ballast allocation of total - budget bytes
made before the model is built, so every memory query sees the smaller card), and a naive
synchronous per-block `.to(device)` swap. Prints s/forward, peak VRAM (ballast excluded),
bytes streamed per forward, achieved H2D bandwidth, and the streamed time against the
floor max(resident compute, bytes / pinned H2D bandwidth) measured in the same run, the
overlap (share of the copy time hidden behind compute) and the process RSS (pinned slabs included).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _comfy_import import import_comfy, import_pack  # noqa: E402
from bench_advisor import CFG_14B, SIZES, build_model, module_bytes  # noqa: E402

GiB = 1024**3


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


def run(pack, kind, tier, mode, size, device, budget_gib, iters, attention="sdpa", swap=40):
    from wan4step.offload.plan import spread
    from wan4step.offload.wan import plan_swap

    free, total = torch.cuda.mem_get_info()
    ballast = torch.empty(max(0, total - int(budget_gib * GiB)), dtype=torch.uint8, device=device) if budget_gib else None
    ballast_bytes = ballast.numel() if ballast is not None else 0
    n = CFG_14B["num_layers"]
    k = 0 if mode == "resident" else (swap if mode == "stream" else n)
    model = build_model(pack, kind, tier, set(spread(k, n)), device, CFG_14B)
    plan = None
    if mode == "stream":
        plan = plan_swap(model, k, device, prefetch=2, pin=True)
        for name, wrapped in plan.patches.items():
            model.blocks[int(name.split(".")[1])] = wrapped
        plan.streamer.ensure_device()
    elif mode == "naive":
        for i in range(n):
            model.blocks[i] = NaiveSwap(model.blocks[i], device)
    fast = pack.nodes.comfy_compat.fast_forward.FastBlocks(model, attention, device)
    patches = {"dit": {("double_block", i): fast.make(i) for i in range(n)}} if mode != "naive" else {}
    w, h, f = size
    x = torch.randn(1, 16, (f - 1) // 4 + 1, h // 8, w // 8, device=device, dtype=torch.bfloat16)
    t = torch.tensor([937.5], device=device)
    ctx = (torch.randn(1, 512, 4096, device=device) * 0.1).to(torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        for i in range(iters + 1):
            t0 = time.perf_counter()
            model(x, t, ctx, transformer_options={"patches_replace": patches})
            torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - ballast_bytes) / GiB
    ram = psutil.Process().memory_info().rss / GiB  # pinned slabs of the streamed blocks included
    streamed = plan.streamer.streamed_bytes if plan else (sum(module_bytes(b.inner) for b in model.blocks) if mode == "naive" else 0)
    stalls = plan.streamer.stats.stalls if plan else 0
    if plan:
        plan.streamer.close()
    del model, plan, fast, ballast, x
    gc.collect()
    torch.cuda.empty_cache()
    return statistics.median(times), peak, streamed, stalls, ram


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--formats", default="fp8,gguf:Q4_K_M,bf16")
    ap.add_argument("--sizes", default="480p,small")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--naive", default="small", help="sizes on which to also time the naive .to() swap")
    ap.add_argument("--swap", default="40", help="blocks streamed, a comma list (e.g. 10,20,40)")
    ap.add_argument("--budget", type=float, default=0, help="emulated card in GiB (default 8, bf16 16)")
    args = ap.parse_args()
    device = torch.device("cuda")
    import_comfy()
    pack = import_pack()
    bw = pinned_bandwidth(device)
    print(f"pinned H2D bandwidth: {bw / 1e9:.1f} GB/s", flush=True)
    rows = []
    for fmt in args.formats.split(","):
        kind, _, tier = fmt.partition(":")
        tier = tier or None
        budget = args.budget or (16 if kind == "bf16" else 8)
        for sname in args.sizes.split(","):
            size = SIZES[sname]
            res = {}
            modes = ([("resident", 0, 0)] + [("stream", budget, int(k)) for k in args.swap.split(",")]
                     + ([("naive", 0, 40)] if sname in args.naive.split(",") else []))
            for mode, b, k in modes:
                key = f"{mode}{k if mode == 'stream' else ''}"
                try:
                    res[key] = run(pack, kind, tier, mode, size, device, b, args.iters, swap=k)
                except torch.OutOfMemoryError as exc:
                    res[key] = None
                    print(f"{fmt} {sname} {key}: OUT OF MEMORY ({str(exc).splitlines()[0][:120]})", flush=True)
                    gc.collect()
                    torch.cuda.empty_cache()
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
                    overlap = 1.0 if by == 0 else min(1.0, max(0.0, 1 - (s - r) / (by / bw)))
                    rows.append((fmt, sname, int(k), r, s, s / r, by / GiB, by / s / 1e9, s / floor, overlap, peak, ram,
                                 budget, naive[0] / r if naive else None))
    print("\n| format | size | blocks streamed | resident s | streamed s | streamed/resident | GiB/forward | achieved GB/s"
          " | vs max(compute, bytes/BW) | overlap | peak VRAM GiB | RAM GiB | budget GiB | naive .to()/resident |\n|"
          + "---|" * 14)
    for fmt, sname, k, r, s, ratio, gib, gbs, vs_floor, overlap, peak, ram, budget, naive in rows:
        nv = f"{naive:.2f}x" if naive else "-"
        print(f"| {fmt} | {sname} | {k} | {r:.3f} | {s:.3f} | {ratio:.3f}x | {gib:.2f} | {gbs:.1f} | {vs_floor:.3f}x |"
              f" {overlap:.2f} | {peak:.2f} | {ram:.1f} | {budget} | {nv} |")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, pinned H2D {bw / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
