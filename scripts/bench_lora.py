"""Base model + distill LoRA: merged once at load (the pack) vs applied by ComfyUI, in one run.

Random weights at the real Wan2.1 T2V-14B shapes and a random rank-64 LoRA on the 400 block
linears (LightX2V's key layout, `wan4step_dev/fixtures/lora.py`). Every row samples like KSampler at
cfg 1 (`comfy.sample.sample`, lcm / simple, 4 steps) on a MODEL built the way a user gets it:

  ours <fmt>               the pack's loader + fused forward on a <fmt> file, no LoRA: the step a
                           distilled file of that format costs (same bytes, same kernels)
  ours <fmt> merged        the same file with the LoRA merged at load (`wan4step.lora.merge_lora` on
                           the GPU: bf16 exact, FP8 re-quantized per channel, GGUF re-encoded as its type)
  ours <fmt> + LoRA/use    the pack's MODEL + core's LoRA loader (ComfyUI applies it at every use)
  comfy <fmt> + LoRA       UNETLoader + LoraLoaderModelOnly (core bakes it into bf16 / fp8 weights)
  comfyui-gguf <q> (+ LoRA) UnetLoaderGGUF (+ LoraLoaderModelOnly: ComfyUI-GGUF patches per forward)

s/step = median of steps 2..4 (after a CUDA sync in the sampler callback); "first" = step 1, which
also pays loading and, for core, baking the LoRA. "merge" = the pack's merge time (GPU). Ratios:
each row against the distilled row of its format (`ours <fmt>`) and against `comfy bf16 + LoRA`.
"vs per-use" = relative difference of the final latent to `ours <fmt> + LoRA/use` (the exact LoRA):
re-quantization error only.

    python scripts/bench_lora.py                          # 480x832x81: bf16, fp8, q4_k, q8_0 (~10 min, H100/H200)
    python scripts/bench_lora.py --formats fp8,q4_k --size small
    python scripts/bench_lora.py --tiny                   # CPU, 2 blocks of dim 256, ComfyUI --cpu
    python scripts/bench_lora.py --smoke                  # the same for bf16, fp8, q4_k: checks the script runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402
from bench_comfy_offload import load_model, random_state_dict, sample, setup_comfy  # noqa: E402

GGUF = {"q4_k": "Q4_K", "q8_0": "Q8_0", "q5_k": "Q5_K", "q6_k": "Q6_K"}


def ours(torch, pack, cfg, state, fmt):
    from wan4step.formats.dit import LoadedDiT

    mp = pack.nodes.comfy_compat.model.build_model(LoadedDiT(Path(f"random-{fmt}"), fmt, cfg, state), torch.bfloat16)
    return pack.nodes.comfy_compat.fast_forward.install(mp, "sdpa")


def free(torch):
    """Unload every MODEL and return the memory (the caller drops its references first)."""
    import comfy.model_management as mm

    mm.unload_all_models()
    bl.free_cuda_cache()
    mm.soft_empty_cache()
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(torch, label, mp, size, cuda, rows, ref=None):
    stamps: list[float] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        out = sample(torch, mp, size, 4, cuda, stamps)
    except Exception as exc:  # one failed path must not hide the others
        print(f"{label}: failed: {type(exc).__name__}: {exc}", flush=True)
        return None
    steps = [b - a for a, b in zip(stamps[:-2], stamps[1:-1], strict=True)]
    per = statistics.median(steps[1:]) if len(steps) > 1 else steps[0]
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    diff = None
    if ref is not None:
        diff = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    rows.append({"label": label, "step": per, "first": steps[0], "peak": peak, "diff": diff})
    print(f"{label:28s} {per:8.3f} s/step  first {steps[0]:7.2f} s  peak {peak:6.2f} GiB"
          + (f"  vs per-use {diff:.2e}" if diff is not None else ""), flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default="bf16,fp8,q4_k,q8_0")
    ap.add_argument("--size", default="480p", choices=list(bl.SIZES))
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--mode", default="dynamic", choices=["dynamic", "lowvram"],
                    help="ComfyUI's memory mode (dynamic = 0.33's default DynamicVRAM, lowvram = --disable-dynamic-vram)")
    ap.add_argument("--tiny", action="store_true", help="CPU: 2 blocks of dim 256, ComfyUI --cpu")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), tiny=True, formats="bf16,fp8,q4_k")

    cfg = bl.config(args.tiny)
    size = bl.SIZES[args.size].whf
    flags = [] if args.mode == "dynamic" else ["--disable-dynamic-vram"]
    if args.tiny:
        size, flags = bl.SIZES["tiny"].whf, ["--cpu", "--disable-dynamic-vram"]
    cuda = not args.tiny
    torch, _, active, shapes = setup_comfy(flags, cuda, None, cfg)
    import comfy.sd

    from wan4step.lora import merge_lora, parse_lora
    from wan4step_dev.fixtures.lora import make_lora

    pack = bl.import_pack()
    ggml = bl.import_comfyui_gguf()
    device = torch.device("cuda" if cuda else "cpu")
    lora_sd = make_lora(cfg, "lightx2v", rank=args.rank, seed=1, size=0.05, device=device, blocks_only=True)
    lora = parse_lora(lora_sd, cfg)
    lora_cpu = {k: v.cpu() for k, v in lora_sd.items()}
    print(f"LoRA: rank {args.rank}, {len(lora.targets)} block linears, "
          f"{sum(t.nbytes() for t in lora.targets.values()) / 1e9:.2f} GB; size {size}; ComfyUI {active}", flush=True)
    rows: list[dict] = []
    merges: dict[str, tuple[float, str]] = {}

    for fmt in args.formats.split(","):
        print(f"== {fmt}", flush=True)
        # the distilled file of this format: ours, no LoRA
        state = bl.canonical_state(cfg, bl.Format.parse(fmt), device)
        mp = ours(torch, pack, cfg, state, fmt)
        run(torch, f"ours {fmt}", mp, size, cuda, rows)
        # the pack's MODEL + core's LoRA loader (applied at every use on quantized weights)
        per_use = comfy.sd.load_lora_for_models(mp, None, lora_cpu, 1.0, 0)[0]
        ref = run(torch, f"ours {fmt} + LoRA/use", per_use, size, cuda, rows)
        del per_use, mp
        free(torch)
        # merged once at load
        t0 = time.perf_counter()
        report = merge_lora(state, lora, 1.0, device=device)
        if cuda:
            torch.cuda.synchronize()
        merges[fmt] = (time.perf_counter() - t0, ", ".join(f"{k} x{n}" for k, n in report.encodings.items()))
        print(f"merge {fmt}: {merges[fmt][0]:.2f} s ({merges[fmt][1]})", flush=True)
        mp = ours(torch, pack, cfg, state, fmt)
        run(torch, f"ours {fmt} merged", mp, size, cuda, rows, ref=ref)
        del mp, state, ref
        free(torch)
        # ComfyUI's own loaders on the same format + core's LoRA loader
        if fmt in ("bf16", "fp8"):
            sd = random_state_dict(torch, shapes, fmt, None)
            mp = load_model(torch, sd, fmt, None)
            run(torch, f"comfy {fmt}", mp, size, cuda, rows)
            mp_l = comfy.sd.load_lora_for_models(mp, None, lora_cpu, 1.0, 0)[0]
            run(torch, f"comfy {fmt} + LoRA", mp_l, size, cuda, rows)
            del mp_l, mp, sd
            free(torch)
        elif fmt in GGUF and ggml is not None:
            gfmt = f"gguf-{GGUF[fmt].lower()}"
            sd = random_state_dict(torch, shapes, gfmt, ggml)
            mp = load_model(torch, sd, gfmt, ggml)
            run(torch, f"comfyui-gguf {GGUF[fmt]}", mp, size, cuda, rows)
            mp_l = comfy.sd.load_lora_for_models(mp, None, lora_cpu, 1.0, 0)[0]
            run(torch, f"comfyui-gguf {GGUF[fmt]} + LoRA", mp_l, size, cuda, rows)
            del mp_l, mp, sd
            free(torch)
        elif fmt in GGUF:
            print("ComfyUI-GGUF not found: its rows are skipped", flush=True)

    by = {r["label"]: r for r in rows}
    core = by.get("comfy bf16 + LoRA")
    table = []
    for r in rows:
        fmt = r["label"].split()[1]
        dist = by.get(f"ours {fmt}")
        table.append((r["label"], f"{r['step']:.3f}",
                      f"{r['step'] / dist['step']:.3f}x" if dist and r["label"].startswith("ours") else "-",
                      f"{r['step'] / core['step']:.3f}x" if core else "-", f"{r['first']:.2f}", f"{r['peak']:.2f}",
                      f"{r['diff']:.2e}" if r["diff"] is not None else "-"))
    print()
    print(bl.md_table(["path", "s/step", "vs distilled same format", "vs comfy bf16 + LoRA", "first step s", "peak GiB",
                       "vs per-use"], table))
    print()
    print(bl.md_table(["format", "merge s (GPU)", "encodings"],
                      [(fmt, f"{sec:.2f}", enc) for fmt, (sec, enc) in merges.items()]))
    print(bl.device_line(device))

if __name__ == "__main__":
    main()
