"""Whole Wan2.1 T2V-14B DiT forward (random weights, real shapes): ComfyUI's block code vs the pack's.

Run on the GPU machine (one process, every number measured side by side):

    python scripts/bench_forward.py                       # 480x832x81 and 288x512x33, all formats
    python scripts/bench_forward.py --formats bf16,fp8 --sizes 480p
    python scripts/bench_forward.py --smoke               # CPU, tiny model: checks the script runs

Rows (seconds per forward = one sampling step at cfg 1, median of --iters after a warm-up):
  comfy bf16        ComfyUI 0.33's own WanModel forward, bf16 weights resident (the baseline)
  ours <fmt>        the same ComfyUI module tree, blocks run by the pack's fused forward, weights in <fmt>
  comfyui-gguf <q>  city96 ComfyUI-GGUF's ops on the same random GGUF bytes, ComfyUI's block code
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402


def build(fmt: str, device, cfg, pack, ggml=None):
    """A ComfyUI WanModel of `cfg` with random weights stored as `fmt` (`comfyui-gguf:<type>`: ComfyUI-GGUF's ops)."""
    if fmt.startswith("comfyui-gguf"):
        return bl.build_wan(cfg, fmt.split(":")[1], device, ggml.ops.GGMLOps, ggml=ggml)
    return bl.build_wan(cfg, fmt, device, pack.nodes.comfy_compat.model.make_ops({}))


def timed(fn, device, iters: int) -> tuple[float, float]:
    """(median seconds, peak GiB) of `fn` over `iters` calls after one warm-up."""
    fn()
    bl.reset_peak(device)
    sec = bl.measure(fn, device, iters, warmup=0).median_s
    return sec, bl.peak_gib(device)


def profile_once(fn, title: str) -> None:
    """Where one whole forward's GPU time goes (blocks, and what is outside them)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    print(f"== {title}: top kernels of one forward")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", default="bf16,fp8,int8,q4_k,q8_0,comfyui-gguf:Q4_K,comfyui-gguf:Q8_0")
    ap.add_argument("--sizes", default="480p,small")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--attention", default="sdpa")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="2 blocks of dim 256 at 64x64x9")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top kernels of one forward per row")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), device="cpu", tiny=True, iters=1, profile=False,
                       formats="bf16,fp8,int8,q4_k,comfyui-gguf:Q4_K")
    device = torch.device(args.device)
    comfy_path = bl.import_comfy(bl.comfy_args(device, base=()))
    pack = bl.import_pack()
    ggml = bl.import_comfyui_gguf(comfy_path)
    cfg = bl.config(args.tiny)
    sizes = bl.sizes("tiny" if args.tiny else args.sizes)
    rows = []
    base: dict[str, float] = {}
    for fmt in args.formats.split(","):
        if fmt.startswith("comfyui-gguf") and ggml is None:
            print(f"skip {fmt}: ComfyUI-GGUF not found")
            continue
        try:
            model = build(fmt, device, cfg, pack, ggml)
        except Exception as exc:  # report and go on: one broken path must not hide the others
            print(f"build {fmt} failed: {type(exc).__name__}: {exc}")
            continue
        fast, fast_opts = bl.fast_options(pack, model, args.attention, device)
        for size in sizes:
            x = torch.randn(size.latent_shape(cfg.in_dim), device=device, dtype=torch.bfloat16)
            t = torch.tensor([937.5], device=device)
            ctx = (torch.randn(1, bl.TEXT_TOKENS, cfg.text_dim, device=device) * 0.1).to(torch.bfloat16)
            with torch.inference_mode():
                def run(opts, m=model, x=x, t=t, ctx=ctx):
                    return lambda: m(x, t, ctx, transformer_options=dict(opts))

                variants = []
                if fmt == "bf16":
                    variants.append(("comfy bf16", run({})))
                if fmt.startswith("comfyui-gguf"):
                    variants.append((fmt, run({})))
                else:
                    variants.append((f"ours {fmt}", run(fast_opts)))
                outs = {}
                for label, fn in variants:
                    try:
                        sec, peak = timed(fn, device, args.iters)
                        outs[label] = fn().float()
                    except Exception as exc:
                        print(f"{label} {size.name} failed: {type(exc).__name__}: {exc}")
                        continue
                    if label == "comfy bf16":
                        base[size.name] = sec
                    rows.append((label, size.name, sec, peak))
                    print(f"{label:22s} {size.name:6s} {sec:8.3f} s  peak {peak:6.2f} GiB", flush=True)
                    if args.profile and device.type == "cuda":
                        profile_once(fn, f"{label} {size.name}")
                if len(outs) == 2:
                    a, b = outs.values()
                    print(f"    fused vs ComfyUI block code: rel diff {((a - b).norm() / b.norm()).item():.2e}")
        del model, fast, fast_opts
        bl.free_cuda_cache()
    print()
    print(bl.md_table(["path", "size", "s / forward", "vs comfy bf16", "peak GiB"],
                      [(label, s, f"{sec:.3f}", f"{sec / base[s]:.3f}x" if s in base else "-", f"{peak:.2f}")
                       for label, s, sec, peak in rows]))
    print(bl.device_line(device))


if __name__ == "__main__":
    main()
