"""Whole Wan2.1 T2V-14B DiT forward (random weights, real shapes): ComfyUI's block code vs the pack's.

Run on the GPU machine (one process, every number measured side by side):

    python scripts/bench_forward.py                       # 480x832x81 and 288x512x33, all formats
    python scripts/bench_forward.py --formats bf16,fp8 --sizes 480p
    python scripts/bench_forward.py --device cpu --tiny   # smoke test of the script itself

Rows (seconds per forward = one sampling step at cfg 1, median of --iters after a warm-up):
  comfy bf16        ComfyUI 0.33's own WanModel forward, bf16 weights resident (the baseline)
  ours <fmt>        the same ComfyUI module tree, blocks run by the pack's fused forward, weights in <fmt>
  comfyui-gguf <q>  city96 ComfyUI-GGUF's ops on the same random GGUF bytes, ComfyUI's block code
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _comfy_import import import_comfy, import_comfyui_gguf, import_pack  # noqa: E402

SIZES = {"480p": (480, 832, 81), "720p": (720, 1280, 81), "small": (288, 512, 33)}
GGUF_FORMATS = {"q4_k": "Q4_K", "q5_k": "Q5_K", "q6_k": "Q6_K", "q8_0": "Q8_0"}


def build(fmt: str, device, cfg: dict, pack, ggml=None):
    """A ComfyUI WanModel of the 14B config with random weights stored as `fmt`."""
    import gguf
    from comfy.ldm.wan.model import WanModel

    from wan4step.quant.gguf_encode import random_raw
    from wan4step.quant.linear import QuantLinear
    from wan4step.quant.scaled import quantize_rowwise
    from wan4step.quant.weights import GGUF, QuantWeight

    if fmt.startswith("comfyui-gguf"):
        ops = ggml.ops.GGMLOps
    else:
        ops = pack.nodes.comfy_compat.model.make_ops({})
    g = torch.Generator(device=device).manual_seed(0)
    with torch.device(device):
        model = WanModel(model_type="t2v", device=device, dtype=torch.bfloat16, operations=ops, **cfg).eval()
    done: set[int] = set()
    for name, m in model.named_modules():
        lin = isinstance(m, torch.nn.Linear) or isinstance(m, QuantLinear)
        if not lin:
            continue
        out_f, in_f = m.out_features, m.in_features
        is_block = name.startswith("blocks.")
        bias = (torch.randn(out_f, device=device, generator=g) * 0.02).to(torch.bfloat16)
        if fmt.startswith("comfyui-gguf") and is_block:
            qt = gguf.GGMLQuantizationType[fmt.split(":")[1]]
            raw = random_raw(qt, (out_f, in_f), device=device, generator=g)
            m.weight = torch.nn.Parameter(ggml.ops.GGMLTensor(raw, tensor_type=qt, tensor_shape=torch.Size((out_f, in_f))),
                                          requires_grad=False)
            m.bias = torch.nn.Parameter(bias, requires_grad=False)
        elif isinstance(m, QuantLinear):
            w = torch.randn(out_f, in_f, device=device, generator=g) / in_f**0.5
            if fmt in ("fp8", "int8") and is_block:
                q, s = quantize_rowwise(w, fmt)
                m.assign_weight(QuantWeight(fmt, q, (out_f, in_f), s), bias)
            elif fmt in GGUF_FORMATS and is_block:
                qt = gguf.GGMLQuantizationType[GGUF_FORMATS[fmt]]
                m.assign_weight(QuantWeight(GGUF, random_raw(qt, (out_f, in_f), device=device, generator=g), (out_f, in_f),
                                         qtype=int(qt)), bias)
            else:
                m.assign_weight(w.to(torch.bfloat16), bias)
            del w
        else:
            m.weight = torch.nn.Parameter((torch.randn(out_f, in_f, device=device, generator=g) / in_f**0.5).to(torch.bfloat16),
                                          requires_grad=False)
            m.bias = torch.nn.Parameter(bias, requires_grad=False)
        for p in m.parameters(recurse=False):
            done.add(id(p))
    for name, p in model.named_parameters():
        if id(p) in done:
            continue
        if name.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight")):
            p.data.fill_(1.0)
        else:
            p.data.normal_(0, 0.02, generator=g)
    return model


def timed(fn, device, iters: int) -> tuple[float, float]:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return statistics.median(times), peak


def profile_once(fn, title: str) -> None:
    """Where one whole forward's GPU time goes (blocks, and what is outside them)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    print(f"== {title}: top kernels of one forward")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--formats", default="bf16,fp8,int8,q4_k,q8_0,comfyui-gguf:Q4_K,comfyui-gguf:Q8_0")
    ap.add_argument("--sizes", default="480p,small")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--attention", default="sdpa")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="2 blocks of dim 256: a smoke test of the script")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top kernels of one forward per row")
    args = ap.parse_args()
    device = torch.device(args.device)
    comfy_path = import_comfy(() if device.type == "cuda" else ("--cpu",))
    pack = import_pack()
    ggml = import_comfyui_gguf(comfy_path)
    cfg = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, text_dim=4096, freq_dim=256, in_dim=16, out_dim=16)
    sizes = {k: SIZES[k] for k in args.sizes.split(",")}
    if args.tiny:
        cfg.update(dim=256, ffn_dim=512, num_heads=2, num_layers=2)
        sizes = {"tiny": (64, 64, 9)}
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
        fast = pack.nodes.comfy_compat.fast_forward.FastBlocks(model, args.attention, device)
        patches = {"dit": {("double_block", i): fast.make(i) for i in range(len(model.blocks))}}
        for sname, (h, w, f) in sizes.items():
            x = torch.randn(1, 16, (f - 1) // 4 + 1, h // 8, w // 8, device=device, dtype=torch.bfloat16)
            t = torch.tensor([937.5], device=device)
            ctx = (torch.randn(1, 512, 4096, device=device) * 0.1).to(torch.bfloat16)
            with torch.inference_mode():
                def run(opts, m=model, x=x, t=t, ctx=ctx):
                    return lambda: m(x, t, ctx, transformer_options=dict(opts))

                variants = []
                if fmt == "bf16":
                    variants.append(("comfy bf16", run({})))
                if fmt.startswith("comfyui-gguf"):
                    variants.append((fmt, run({})))
                else:
                    variants.append((f"ours {fmt}", run({"patches_replace": patches})))
                outs = {}
                for label, fn in variants:
                    try:
                        sec, peak = timed(fn, device, args.iters)
                        outs[label] = fn().float()
                    except Exception as exc:
                        print(f"{label} {sname} failed: {type(exc).__name__}: {exc}")
                        continue
                    if label == "comfy bf16":
                        base[sname] = sec
                    rows.append((label, sname, sec, peak))
                    print(f"{label:22s} {sname:6s} {sec:8.3f} s  peak {peak:6.2f} GiB", flush=True)
                    if args.profile and device.type == "cuda":
                        profile_once(fn, f"{label} {sname}")
                if len(outs) == 2:
                    a, b = outs.values()
                    print(f"    fused vs ComfyUI block code: rel diff {((a - b).norm() / b.norm()).item():.2e}")
        del model, fast, patches
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\n| path | size | s / forward | vs comfy bf16 | peak GiB |\n|---|---|---|---|---|")
    for label, sname, sec, peak in rows:
        ratio = f"{sec / base[sname]:.3f}x" if sname in base else "-"
        print(f"| {label} | {sname} | {sec:.3f} | {ratio} | {peak:.2f} |")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
