"""Whole clip on the GPU: UMT5-XXL encode + 4 LCM steps + VAE decode (random weights, real shapes).

    python scripts/bench_e2e.py                      # 480x832x81: fp8, gguf q4_k, bf16 + ComfyUI baseline; 720p fp8
    python scripts/bench_e2e.py --runs 480p:fp8
    python scripts/bench_e2e.py --runs 480p:bf16,480p:fp8,480p:int8,480p:q4_k,480p:q8_0,480p:fp8+swap40,480p:fp8+sage

Models are resident (an H100 holds them all) unless a run says +swapN (N blocks streamed from
pinned RAM by the pack's engine, the rest resident); "steps vs our bf16" compares the 4 steps
with the Wan4Step bf16 row of the same run. The ComfyUI baseline is its own bf16
WanModel forward (4 steps) + its own Wan VAE decode through VAEDecode, with the pack's
UMT5 encode time (ComfyUI's encode of the same 512 tokens is ~30 ms either way).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _comfy_import import import_comfy, import_pack  # noqa: E402

SIZES = {"480p": (480, 832, 81), "720p": (720, 1280, 81), "small": (288, 512, 33)}
CFG = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, text_dim=4096, freq_dim=256, in_dim=16, out_dim=16)


def sync():
    torch.cuda.synchronize()


def clip(model, opts, vae, shape, frames_expected, encode, decode, sig, g, dev):
    """One clip: encode, 4 LCM steps (x0 = x - sigma v, re-noise), decode. Returns the phase times."""
    t0 = time.perf_counter()
    ctx = encode()
    sync()
    t1 = time.perf_counter()
    x = torch.randn(shape, device=dev, generator=g)
    with torch.inference_mode():
        for i in range(len(sig) - 1):
            s, s2 = float(sig[i]), float(sig[i + 1])
            v = model(x.to(torch.bfloat16), torch.tensor([s * 1000], device=dev), ctx.to(torch.bfloat16),
                      transformer_options=dict(opts)).float()
            x0 = x - s * v
            x = x0 if s2 == 0 else (1 - s2) * x0 + s2 * torch.randn(shape, device=dev, generator=g)
    sync()
    t2 = time.perf_counter()
    frames = decode(vae, (x * 0.5).float())
    sync()
    t3 = time.perf_counter()
    assert frames.shape[0] == frames_expected and torch.isfinite(frames).all()
    return t1 - t0, t2 - t1, t3 - t2, t3 - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="480p:fp8,480p:q4_k,480p:bf16,480p:comfy,720p:fp8",
                    help="size:format[+swap40][+sage][+compile], format in bf16/fp8/int8/q4_k/q8_0/comfy; "
                         "+swapN streams N blocks from pinned RAM (Wan4Step Block Swap's engine), +sage asks for "
                         "sageattention (the row names the backend it got), +compile torch.compiles the block")
    args = ap.parse_args()
    import_comfy()
    import comfy.model_management as mm
    import comfy.sd

    import nodes as comfy_nodes

    pack = import_pack()
    from bench_forward import build
    from bench_umt5 import build as build_te
    from bench_umt5 import prompt, random_weights

    from wan4step import schedule
    from wan4step.tiny.vae import tiny_vae_state_dict
    from wan4step.umt5.model import UMT5_XXL
    from wan4step.vae.formats import VAEFile
    from wan4step.vae.model import VAEConfig

    dev = torch.device("cuda")
    te = build_te(UMT5_XXL, random_weights(UMT5_XXL, "cuda", "fp8"), activation_quant=True)
    ids, mask = prompt(UMT5_XXL, "cuda")
    vae_sd = tiny_vae_state_dict(VAEConfig(dim=96), seed=0)
    vae_ours = pack.nodes.vae_loader.comfy_vae_from(VAEFile("<random>", vae_sd, VAEConfig(dim=96), "original", "memory",
                                                            torch.float32), "bf16", tiling="auto")
    vae_core = comfy.sd.VAE(sd=vae_sd, dtype=torch.bfloat16)

    def encode():
        with torch.inference_mode():
            return te.encode(ids, mask, dtype=torch.bfloat16)

    def decode(vae, z):
        with torch.inference_mode():
            return comfy_nodes.VAEDecode().decode(vae, {"samples": z})[0]

    rows = []
    models: dict[str, tuple] = {}
    for run in args.runs.split(","):
        sname, spec = run.split(":")
        fmt, *mods = spec.split("+")
        swap = next((int(m[4:]) for m in mods if m.startswith("swap")), 0)
        attention = "sage" if "sage" in mods else "sdpa"
        h, w, f = SIZES[sname]
        key = ("bf16" if fmt == "comfy" else fmt) + (f"+swap{swap}" if swap else "")
        if key not in models:
            for k in list(models):
                del models[k]
            gc.collect()
            torch.cuda.empty_cache()
            if swap:  # blocks built on the CPU, streamed through the pack's engine (as bench_stream.py)
                from bench_advisor import build_model

                from wan4step.offload.plan import spread
                from wan4step.offload.wan import plan_swap

                tiers = {"q4_k": "Q4_K_M", "q5_k": "Q5_K_M", "q6_k": "Q6_K", "q8_0": "Q8_0"}
                kind, tier = ("gguf", tiers[fmt]) if fmt in tiers else (fmt, None)
                model = build_model(pack, kind, tier, set(spread(swap, 40)), dev, CFG)
                plan = plan_swap(model, swap, dev, prefetch=2, pin=True)
                for name, wrapped in plan.patches.items():
                    model.blocks[int(name.split(".")[1])] = wrapped
                plan.streamer.ensure_device()
            else:
                model = build(key, dev, CFG, pack)
            models[key] = model
        model = models[key]
        fast = pack.nodes.comfy_compat.fast_forward.FastBlocks(model, attention, dev, compile="compile" in mods)
        patches = {"dit": {("double_block", i): fast.make(i) for i in range(40)}}
        opts = {} if fmt == "comfy" else {"patches_replace": patches}
        vae = vae_core if fmt == "comfy" else vae_ours
        sig = schedule.sigmas()
        g = torch.Generator(device=dev).manual_seed(0)
        shape = (1, 16, (f - 1) // 4 + 1, h // 8, w // 8)

        try:
            with torch.inference_mode():  # warm-up: one forward at this size + one decode
                model(torch.randn(shape, device=dev, dtype=torch.bfloat16), torch.tensor([1000.0], device=dev),
                      torch.zeros(1, 512, 4096, device=dev, dtype=torch.bfloat16), transformer_options=dict(opts))
            decode(vae, torch.zeros(shape, device=dev))
            mm.soft_empty_cache()
            torch.cuda.reset_peak_memory_stats()
            te_s, steps_s, vae_s, total = clip(model, opts, vae, shape, f, encode, decode, sig, g, dev)
            peak = torch.cuda.max_memory_allocated() / 2**30
        except torch.OutOfMemoryError as exc:
            print(f"{run}: OOM {exc}")
            continue
        label = "ComfyUI bf16 + ComfyUI VAE" if fmt == "comfy" else f"Wan4Step {spec}" + (
            f" (attention {fast.name})" if "sage" in mods else "")
        rows.append((label, sname, te_s, steps_s, vae_s, total, peak))
        print(f"{label:28s} {sname}: encode {te_s:.3f} s, 4 steps {steps_s:.2f} s ({steps_s / 4:.2f} s/step), "
              f"decode {vae_s:.2f} s, total {total:.2f} s, peak {peak:.1f} GiB", flush=True)
    base = {r[1]: r[5] for r in rows if r[0].startswith("ComfyUI")}
    bf16 = {r[1]: r[3] for r in rows if r[0] == "Wan4Step bf16"}
    print("\n| pipeline | size | encode s | 4 steps s | s/step | decode s | clip s | vs ComfyUI | steps vs our bf16"
          " | peak GiB |\n|" + "---|" * 10)
    for label, sname, te_s, steps_s, vae_s, total, peak in rows:
        ratio = f"{total / base[sname]:.2f}x" if sname in base else "-"
        vs_bf16 = f"{steps_s / bf16[sname]:.3f}x" if sname in bf16 else "-"
        print(f"| {label} | {sname} | {te_s:.3f} | {steps_s:.2f} | {steps_s / 4:.2f} | {vae_s:.2f} | {total:.2f} | {ratio} |"
              f" {vs_bf16} | {peak:.1f} |")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
