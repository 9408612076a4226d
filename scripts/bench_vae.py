"""Wan2.1 VAE decode: the pack's engine vs ComfyUI's own Wan VAE, side by side in one process.

Run on the GPU machine (the lead runs it on the H100; about 2 minutes):

    python scripts/bench_vae.py                          # 480x832x81 and 720x1280x81, bf16
    python scripts/bench_vae.py --sizes 480 --reps 1     # quicker
    python scripts/bench_vae.py --no-triton --no-channels-last   # A/B the engine's choices
    python scripts/bench_vae.py --device cpu --dim 16 --sizes 32x48 --frames 5   # tiny, on the CPU
    python scripts/bench_vae.py --smoke                  # the same, one decode each: checks the script runs

Random weights at the real shapes (dim 96, z 16, 127 M parameters), a random VAE-space latent
on the CPU (what a LATENT holds). Every row goes through ComfyUI's core nodes, the way a workflow
runs: VAEDecode for "decode", VAEDecodeTiled with its defaults (tile 512 px, overlap 64,
temporal 64 / 8) for "decode_tiled". "comfy" = ComfyUI's VAELoader VAE (comfy.sd.VAE from the
state dict), "wan4step" = the Wan4Step VAE Loader's VAE (same state dict) with tiling off.
ComfyUI is imported in-process from COMFYUI_PATH or ~/.cache/wan4step/ComfyUI with
--disable-dynamic-vram (weights are plain allocations, so both sides' peaks include them).

Columns: s = best wall time of --reps runs after --warmup (CUDA-synchronized, output on the CPU
as ComfyUI returns it); peak = torch.cuda.max_memory_allocated during the run (reset before it,
the model's own weights resident, the other model unloaded); pred = the engine's memory model
+ its weights (what it tells ComfyUI's model management); ratios and the issue's targets.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

SIZES = {"480": (480, 832), "720": (720, 1280)}
TARGETS = {  # issue: untiled <= 0.8x ComfyUI; tiled <= k x our untiled with peak <= GiB
    "480": (0.80, 1.15, 2.0),
    "720": (0.80, 1.25, 2.5),
}
GiB = bl.GiB


def parse_size(s: str) -> tuple[int, int]:
    if s in SIZES:
        return SIZES[s]
    h, w = s.lower().split("x")
    return int(h), int(w)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["480", "720"], help="480, 720 or HxW (pixels, multiples of 8)")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dim", type=int, default=96, help="VAE base width (96 = the real Wan2.1 VAE)")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--no-comfy", action="store_true", help="skip ComfyUI's own VAE rows")
    ap.add_argument("--no-triton", action="store_true", help="engine: eager RMS norm instead of the fused kernel")
    ap.add_argument("--no-channels-last", action="store_true", help="engine: NCDHW activations")
    ap.add_argument("--no-cudnn-benchmark", action="store_true")
    ap.add_argument("--conv", default="auto", choices=["auto", "cudnn", "gemm"], help="engine: WanVAE.conv_backend")
    ap.add_argument("--pass-elements", type=int, default=None, help="engine: largest activation per untiled pass")
    ap.add_argument("--tiled-pass-elements", type=int, default=None, help="engine: ... per tiled pass")
    ap.add_argument("--dynamic-vram", action="store_true", help="leave ComfyUI's DynamicVRAM on")
    ap.add_argument("--deadline", type=float, default=170.0, help="seconds; later rows are skipped")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), device="cpu", dim=16, sizes=["32x48"], frames=5, reps=1, warmup=0)
    start = time.perf_counter()

    cuda = args.device == "cuda"
    comfy_args = [] if args.dynamic_vram else ["--disable-dynamic-vram"]
    if not cuda:
        comfy_args.append("--cpu")
    bl.import_comfy(tuple(comfy_args))
    import comfy.model_management as mm
    import comfy.sd

    import nodes as comfy_nodes

    pack = bl.import_pack()
    from wan4step.tiny.vae import tiny_vae_state_dict
    from wan4step.vae import kernels
    from wan4step.vae.formats import VAEFile
    from wan4step.vae.model import VAEConfig, denormalize_latent

    kernels.USE_TRITON = not args.no_triton
    cfg = VAEConfig(dim=args.dim)
    t0 = time.perf_counter()
    sd = tiny_vae_state_dict(cfg, seed=0)  # deterministic random weights at the requested width
    print(f"random weights: {sum(v.numel() for v in sd.values()) / 1e6:.1f} M parameters ({time.perf_counter() - t0:.1f} s)")
    file = VAEFile("<random weights>", sd, cfg, "original", "memory", torch.float32)
    dtype_name = args.dtype
    core = None if args.no_comfy else comfy.sd.VAE(sd=sd, dtype=pack.nodes.vae_loader.DTYPES[dtype_name])
    ours = pack.nodes.vae_loader.comfy_vae_from(file, dtype_name, tiling="off")
    engine = ours.first_stage_model
    engine.cudnn_benchmark = not args.no_cudnn_benchmark
    engine.conv_backend = args.conv
    if args.no_channels_last:
        engine.channels_last = False
    if args.pass_elements:
        engine.max_pass_elements = args.pass_elements
    if args.tiled_pass_elements:
        engine.tiled_pass_elements = args.tiled_pass_elements
    weights_bytes = sum(p.numel() * p.element_size() for p in engine.parameters())
    print(f"{bl.device_line(args.device)}, dtype {ours.vae_dtype}, conv {args.conv}, "
          f"triton norm {'off' if args.no_triton else 'on'}, channels-last {'off' if args.no_channels_last else 'on'}")

    # ComfyUI's executor runs every node under torch.inference_mode(); so do these calls
    def decode(vae, latent):
        with torch.inference_mode():
            return comfy_nodes.VAEDecode().decode(vae, {"samples": latent})[0]

    def decode_tiled(vae, latent):  # VAEDecodeTiled's defaults
        with torch.inference_mode():
            return comfy_nodes.VAEDecodeTiled().decode(vae, {"samples": latent}, 512, 64, 64, 8)[0]

    def unload_all():
        mm.unload_all_models()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    def run(vae, fn, latent):
        """(best seconds, peak bytes, last output) or raises."""
        unload_all()
        out = None
        for _ in range(args.warmup):
            out = fn(vae, latent)
            del out
            out = None
        best, peak = float("inf"), 0
        for r in range(max(1, args.reps)):
            if r and time.perf_counter() - start > args.deadline:
                break
            gc.collect()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            out = fn(vae, latent)
            if cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
            if cuda:
                peak = max(peak, torch.cuda.max_memory_allocated())
            if r + 1 < args.reps:
                del out
                out = None
        return best, peak, out

    rows, notes = [], []
    for size in args.sizes:
        h, w = parse_size(size)
        label = f"{h}x{w}x{args.frames}"
        t_lat = (args.frames - 1) // 4 + 1
        g = torch.Generator().manual_seed(1)
        latent = denormalize_latent(torch.randn(1, 16, t_lat, h // 8, w // 8, generator=g))  # VAE space, on the CPU
        res = {}
        cases = [("comfy", "decode", core, decode), ("comfy", "decode_tiled", core, decode_tiled),
                 ("wan4step", "decode", ours, decode), ("wan4step", "decode_tiled", ours, decode_tiled)]
        outs = {}
        for impl, mode, vae, fn in cases:
            if vae is None:
                continue
            if time.perf_counter() - start > args.deadline:
                notes.append(f"{label} {impl} {mode}: skipped (deadline {args.deadline:.0f} s)")
                continue
            try:
                s, peak, out = run(vae, fn, latent)
            except Exception as e:  # keep going: one broken row must not hide the others
                notes.append(f"{label} {impl} {mode}: FAILED {type(e).__name__}: {e}")
                traceback.print_exc()
                unload_all()
                continue
            res[(impl, mode)] = (s, peak)
            if mode == "decode" or impl == "wan4step":
                outs[(impl, mode)] = out
            del out
            pred = None
            if impl == "wan4step":
                tile = (64, 64) if mode == "decode_tiled" else None
                pred = engine.decode_vram_bytes(latent.shape, ours.vae_dtype.itemsize, tile=tile, overlap=8) + weights_bytes
            rows.append((label, impl, mode, s, peak, pred))
            print(f"  {label:>16} {impl:>8} {mode:<12} {s:7.3f} s  peak {peak / GiB:5.2f} GiB", flush=True)
        a, b = outs.get(("wan4step", "decode")), outs.get(("comfy", "decode"))
        if a is not None and b is not None:
            d = (a - b).abs()
            notes.append(f"{label}: wan4step vs comfy decode, pixels in [0,1]: max |diff| {d.max():.4f}, mean {d.mean():.5f} "
                         f"({ours.vae_dtype} on both sides; summation orders differ)")
        c = outs.get(("wan4step", "decode_tiled"))
        if a is not None and c is not None:
            d = (a - c).abs()
            notes.append(f"{label}: wan4step tiled vs untiled: max |diff| {d.max():.4f}, rms {d.pow(2).mean().sqrt():.5f} "
                         f"(random weights: the blend bands are a worst case)")
        outs.clear()
        targets = TARGETS.get(size)
        for i, row in enumerate(rows):
            lab, impl, mode, s, peak, pred = row[:6]
            if lab != label or impl != "wan4step":
                continue
            checks = []
            comfy_s = res.get(("comfy", mode), (None,))[0]
            ours_untiled = res.get(("wan4step", "decode"), (None,))[0]
            if targets and cuda:
                t_untiled, t_tiled, gib = targets
                if mode == "decode" and comfy_s:
                    checks.append(f"vs comfy {s / comfy_s:.2f} (<= {t_untiled}) {'OK' if s <= t_untiled * comfy_s else 'MISS'}")
                if mode == "decode_tiled" and ours_untiled:
                    ok = s <= t_tiled * ours_untiled and peak <= gib * GiB
                    checks.append(f"vs untiled {s / ours_untiled:.2f} (<= {t_tiled}), peak <= {gib} GiB {'OK' if ok else 'MISS'}")
            rows[i] = (lab, impl, mode, s, peak, pred, "; ".join(checks))

    table = []
    for row in rows:
        lab, impl, mode, s, peak, pred = row[:6]
        check = row[6] if len(row) > 6 else ""
        comfy_s = next((r[3] for r in rows if r[0] == lab and r[1] == "comfy" and r[2] == mode), None)
        ours_s = next((r[3] for r in rows if r[0] == lab and r[1] == "wan4step" and r[2] == "decode"), None)
        table.append((lab, impl, mode, f"{s:.3f}", f"{peak / GiB:.2f}" if cuda else "-", f"{pred / GiB:.2f}" if pred else "-",
                      f"{s / comfy_s:.2f}" if comfy_s else "-", f"{s / ours_s:.2f}" if ours_s else "-", check))
    print()
    print(bl.text_table(["size", "impl", "mode", "s", "peak GiB", "pred GiB", "vs comfy", "vs ours", "target"], table))
    for n in notes:
        print("note:", n)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
