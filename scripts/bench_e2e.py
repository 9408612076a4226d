"""Whole clip on the GPU: UMT5-XXL encode + 4 LCM steps + VAE decode (random weights, real shapes).

    python scripts/bench_e2e.py                      # 480x832x81: fp8, gguf q4_k, bf16 + ComfyUI baseline; 720p fp8
    python scripts/bench_e2e.py --runs 480p:fp8
    python scripts/bench_e2e.py --runs 480p:bf16,480p:fp8,480p:int8,480p:q4_k,480p:q8_0,480p:fp8+swap40,480p:fp8+8bit
    python scripts/bench_e2e.py --smoke              # CPU, tiny DiT/UMT5/VAE: checks the script runs

Models are resident (an H100 holds them all) unless a run says +swapN (N blocks streamed from
pinned RAM by the pack's engine, the rest resident); "steps vs our bf16" compares the 4 steps
with the Wan4Step bf16 row of the same run. The ComfyUI baseline is its own bf16
WanModel forward (4 steps) + its own Wan VAE decode through VAEDecode, with the pack's
UMT5 encode time (ComfyUI's encode of the same 512 tokens is ~30 ms either way). Every row is
timed warm: one forward, one decode and one encode run before it (until session 9 the encode was
not, so a process's first row carried UMT5's one-time warm-up, ~0.4 s on the H200).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

SMOKE_RUNS = "tiny:bf16,tiny:fp8,tiny:q4_k,tiny:comfy,tiny:fp8+swap1,tiny:fp8+8bit"
ATTENTION_MODS = ("auto", "8bit", "sage", "flash", "fa4")  # +<backend> picks the attention (default sdpa = cuDNN)


def clip(model, opts, vae, shape, frames_expected, encode, decode, sig, g, dev):
    """One clip: encode, 4 LCM steps (x0 = x - sigma v, re-noise), decode. Returns the phase times
    and the frames (the same noise every call: g is seeded by the caller)."""
    t0 = time.perf_counter()
    ctx = encode()
    bl.sync(dev)
    t1 = time.perf_counter()
    x = torch.randn(shape, device=dev, generator=g)
    with torch.inference_mode():
        for i in range(len(sig) - 1):
            s, s2 = float(sig[i]), float(sig[i + 1])
            v = model(x.to(torch.bfloat16), torch.tensor([s * 1000], device=dev), ctx.to(torch.bfloat16),
                      transformer_options=dict(opts)).float()
            x0 = x - s * v
            x = x0 if s2 == 0 else (1 - s2) * x0 + s2 * torch.randn(shape, device=dev, generator=g)
    bl.sync(dev)
    t2 = time.perf_counter()
    frames = decode(vae, (x * 0.5).float())
    bl.sync(dev)
    t3 = time.perf_counter()
    assert frames.shape[0] == frames_expected and torch.isfinite(frames).all()
    return t1 - t0, t2 - t1, t3 - t2, t3 - t0, frames


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two ComfyUI IMAGE batches (values in [0, 1])."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="480p:fp8,480p:q4_k,480p:bf16,480p:comfy,720p:fp8",
                    help="size:format[+swapN][+<attention>][+compile], format in bf16/fp8/int8/q4_k/q8_0/comfy; "
                         "+swapN streams N blocks from pinned RAM (Wan4Step Block Swap's engine), +8bit / +auto / "
                         "+sage / +flash / +fa4 pick the attention backend (default: SDPA asking for cuDNN; the row "
                         "names the backend it got), +compile torch.compiles the block")
    ap.add_argument("--vae-conv", default="auto", choices=["auto", "cudnn", "gemm"],
                    help="the pack's VAE: WanVAE.conv_backend (auto, the default: the implicit-GEMM kernel "
                         "for the convs it wins on sm90; cudnn: session 8's path)")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), runs=SMOKE_RUNS)
    dev = torch.device("cpu" if args.smoke else "cuda")
    bl.import_comfy(bl.comfy_args(dev))
    import comfy.model_management as mm
    import comfy.sd

    import nodes as comfy_nodes

    pack = bl.import_pack()
    from bench_forward import build
    from bench_umt5 import build as build_te
    from bench_umt5 import prompt, random_weights, smoke_config

    from wan4step import schedule
    from wan4step.offload.plan import spread
    from wan4step.offload.wan import plan_swap
    from wan4step.tiny.vae import TINY_VAE, tiny_vae_state_dict
    from wan4step.umt5.model import UMT5_XXL
    from wan4step.vae.formats import VAEFile
    from wan4step.vae.model import VAEConfig

    cfg = bl.config(args.smoke)
    te_cfg = smoke_config() if args.smoke else UMT5_XXL
    vae_cfg = TINY_VAE if args.smoke else VAEConfig(dim=96)  # 96: the real Wan2.1 VAE's width
    te = build_te(te_cfg, random_weights(te_cfg, dev.type, "fp8"), activation_quant=True)
    ids, mask = prompt(te_cfg, dev.type)
    vae_sd = tiny_vae_state_dict(vae_cfg, seed=0)
    # bf16 like ComfyUI on a GPU; float32 on the CPU, as ComfyUI does there (torch 2.14's CPU bf16 conv3d
    # takes ~25 s for one 64x64 layer)
    gpu = dev.type == "cuda"
    vae_ours = pack.nodes.vae_loader.comfy_vae_from(VAEFile("<random>", vae_sd, vae_cfg, "original", "memory",
                                                            torch.float32), "bf16" if gpu else "fp32", tiling="auto")
    vae_ours.first_stage_model.conv_backend = args.vae_conv
    vae_core = comfy.sd.VAE(sd=vae_sd, dtype=torch.bfloat16 if gpu else torch.float32)

    def encode():
        with torch.inference_mode():
            return te.encode(ids, mask, dtype=torch.bfloat16)

    def decode(vae, z):
        with torch.inference_mode():
            return comfy_nodes.VAEDecode().decode(vae, {"samples": z})[0]

    rows = []
    # (size, format) and (size, "") -> the first such row's label and frames
    refs: dict[tuple[str, str], tuple[str, torch.Tensor]] = {}
    models: dict[str, torch.nn.Module] = {}
    for run in args.runs.split(","):
        sname, spec = run.split(":")
        fmt, *mods = spec.split("+")
        if "compile" in mods and dev.type != "cuda":
            bl.skip_cuda(run)
            continue
        swap = next((int(m[4:]) for m in mods if m.startswith("swap")), 0)
        attention = next((m for m in mods if m in ATTENTION_MODS), "sdpa")
        size = bl.SIZES[sname]
        key = ("bf16" if fmt == "comfy" else fmt) + (f"+swap{swap}" if swap else "")
        if key not in models:
            models.clear()
            bl.free_cuda_cache()
            if swap:  # streamed blocks built on the CPU, streamed through the pack's engine (as bench_stream.py)
                n = cfg.num_layers
                model = bl.build_wan(cfg, fmt, dev, pack.nodes.comfy_compat.model.make_ops({}), streamed=spread(swap, n))
                plan = plan_swap(model, swap, dev, prefetch=2, pin=dev.type == "cuda")
                for name, wrapped in plan.patches.items():
                    model.blocks[int(name.split(".")[1])] = wrapped
                plan.streamer.ensure_device()
            else:
                model = build(key, dev, cfg, pack)
            models[key] = model
        model = models[key]
        fast, fast_opts = bl.fast_options(pack, model, attention, dev, compile="compile" in mods)
        opts = {} if fmt == "comfy" else fast_opts
        vae = vae_core if fmt == "comfy" else vae_ours
        sig = schedule.sigmas()
        g = torch.Generator(device=dev).manual_seed(0)
        shape = size.latent_shape(cfg.in_dim)

        try:
            with torch.inference_mode():  # warm-up: one forward at this size + one decode
                model(torch.randn(shape, device=dev, dtype=torch.bfloat16), torch.tensor([1000.0], device=dev),
                      torch.zeros(1, bl.TEXT_TOKENS, cfg.text_dim, device=dev, dtype=torch.bfloat16),
                      transformer_options=dict(opts))
            decode(vae, torch.zeros(shape, device=dev))
            encode()  # the process's first encode pays UMT5's warm-up (0.4 s on the H200): not per clip
            mm.soft_empty_cache()
            bl.reset_peak(dev)
            te_s, steps_s, vae_s, total, frames = clip(model, opts, vae, shape, size.frames, encode, decode, sig, g,
                                                       dev)
            peak = bl.peak_gib(dev)
        except torch.OutOfMemoryError as exc:
            print(f"{run}: OOM {exc}")
            continue
        label = "ComfyUI bf16 + ComfyUI VAE" if fmt == "comfy" else f"Wan4Step {spec}" + (
            f" (attention {fast.name})" if attention != "sdpa" else "") + (
            f" (VAE conv {args.vae_conv})" if args.vae_conv != "auto" else "")
        rows.append((label, sname, te_s, steps_s, vae_s, total, peak))
        print(f"{label:28s} {sname}: encode {te_s:.3f} s, 4 steps {steps_s:.2f} s ({steps_s / 4:.2f} s/step), "
              f"decode {vae_s:.2f} s, total {total:.2f} s, peak {peak:.1f} GiB", flush=True)
        # the decoded-frame check: PSNR against the first row of the same size and weights (e.g.
        # fp8 with cuDNN attention vs fp8+8bit; random weights: a weak measure, reported, not judged)
        # (and against the size's first row: e.g. bf16, for the difference FP8 linears alone make)
        cpu = frames.cpu()
        for key in dict.fromkeys([(sname, fmt), (sname, "")]):
            ref = refs.setdefault(key, (label, cpu))
            if ref[0] != label:
                print(f"{'':28s} {sname}: decoded frames vs {ref[0]}: PSNR {psnr(cpu, ref[1]):.1f} dB", flush=True)
        del frames, cpu
    base = {r[1]: r[5] for r in rows if r[0].startswith("ComfyUI")}
    bf16 = {r[1]: r[3] for r in rows if r[0] == "Wan4Step bf16"}
    print()
    print(bl.md_table(["pipeline", "size", "encode s", "4 steps s", "s/step", "decode s", "clip s", "vs ComfyUI",
                       "steps vs our bf16", "peak GiB"],
                      [(label, sname, f"{te_s:.3f}", f"{steps_s:.2f}", f"{steps_s / 4:.2f}", f"{vae_s:.2f}",
                        f"{total:.2f}", f"{total / base[sname]:.2f}x" if sname in base else "-",
                        f"{steps_s / bf16[sname]:.3f}x" if sname in bf16 else "-", f"{peak:.1f}")
                       for label, sname, te_s, steps_s, vae_s, total, peak in rows]))
    print(bl.device_line(dev))


if __name__ == "__main__":
    main()
