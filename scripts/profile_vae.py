"""Where the engine's VAE decode spends its time: kernels and convolution shapes (issue 20, item 3).

    python scripts/profile_vae.py [--sizes 480 720] [--top 25]
    python scripts/profile_vae.py --smoke      # CPU, tiny VAE: checks the script runs

Engine only (no ComfyUI): random weights at the real shapes (dim 96), a random VAE-space latent
on the GPU, decode untiled with the settings the VAE loader uses. Prints the wall time of a warm
decode, then one decode under torch.profiler: CUDA time per kernel family (convolutions, the
fused RMS norm, copies, adds) and per convolution shape with its achieved TFLOP/s, so the next
speed-up is chosen from numbers, not guesses.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

from wan4step.tiny.vae import tiny_vae_state_dict  # noqa: E402
from wan4step.vae.model import VAEConfig, WanVAE  # noqa: E402

SIZES = {"480": (480, 832), "720": (720, 1280)}
FAMILIES = (  # kernel-name substrings -> family, first match wins (attention first: its kernels say cutlass)
    ("attention", ("fmha", "attention", "flash", "softmax")),
    ("rms norm", ("_rms_norm",)),
    ("conv", ("conv", "xmma", "implicit", "cutlass", "sm90_", "sm80_", "gemm", "nhwc", "fprop", "winograd")),
    ("copy", ("copy", "Copy", "cat")),
    ("add/bias", ("add", "Add")),
    ("fill", ("fill", "Fill", "zero")),
)


def family(name: str) -> str:
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def conv_flops(shapes: list) -> float:
    """2 * output elements * (Cin/groups * kernel volume) for aten::convolution(input, weight, ...)."""
    if len(shapes) < 2 or not shapes[0] or not shapes[1]:
        return 0.0
    x, w = shapes[0], shapes[1]
    spatial_in = x[2:]
    k = w[2:]
    # output spatial size ~ input minus (kernel-1) for the valid temporal taps, padded spatially;
    # the time dim of a causal conv input includes its 2 history frames
    out = [spatial_in[0] - (k[0] - 1)] + list(spatial_in[1:]) if len(k) == 3 else list(spatial_in)
    n = x[0] * w[0]
    for d in out:
        n *= d
    kv = w[1]
    for d in k:
        kv *= d
    return 2.0 * n * kv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["480", "720"])
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--pass-elements", type=int, default=None)
    ap.add_argument("--conv", default="auto", choices=["auto", "cudnn", "gemm"], help="WanVAE.conv_backend")
    bl.add_smoke(ap)
    a = bl.smoke_or(ap.parse_args(), sizes=["32x48"], frames=5, dim=16, top=8)
    dev = torch.device("cpu" if a.smoke else "cuda")
    if not a.smoke:
        bl.require_cuda("profile_vae.py")
    dtype = torch.float32 if a.smoke else torch.bfloat16
    cfg = VAEConfig(dim=a.dim)
    vae = WanVAE(cfg)
    vae.load_state_dict(tiny_vae_state_dict(cfg, seed=0))
    vae = vae.to(device=dev, dtype=dtype).eval()
    vae.tiling = "off"
    vae.conv_backend = a.conv
    if a.pass_elements:
        vae.max_pass_elements = a.pass_elements
    print(f"{bl.device_line(dev)}; conv backend {a.conv}", flush=True)
    acts = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else []
    )
    for s in a.sizes:
        h, w = SIZES.get(s) or tuple(int(v) for v in s.lower().split("x"))
        z = torch.randn(
            1,
            cfg.z_dim,
            cfg.frames_in(a.frames),
            h // 8,
            w // 8,
            device=dev,
            dtype=dtype,
            generator=torch.Generator(dev).manual_seed(0),
        )
        with torch.inference_mode():
            vae.decode(z)
            bl.sync(dev)
            t0 = time.perf_counter()
            vae.decode(z)
            bl.sync(dev)
            wall = time.perf_counter() - t0
            with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
                vae.decode(z)
                bl.sync(dev)
        print(f"\n{h}x{w}x{a.frames}: decode {wall:.3f} s (warm, untiled, output on the device)")
        events = prof.key_averages()
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        by_fam: dict[str, float] = defaultdict(float)
        for e in kernels:
            by_fam[family(e.key)] += e.self_device_time_total / 1e6
        total = sum(by_fam.values())
        if total:
            print(
                f"  GPU kernel time {total:.3f} s: "
                + ", ".join(
                    f"{k} {v:.3f} s ({100 * v / total:.0f} %)" for k, v in sorted(by_fam.items(), key=lambda kv: -kv[1])
                )
            )
            for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[: a.top]:
                print(f"  {e.self_device_time_total / 1e3:9.1f} ms  x{e.count:<5d} {family(e.key):9s} {e.key[:110]}")
        print("  convolutions by shape (input, weight): calls, time, TFLOP/s")
        convs = [e for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::convolution"]
        for e in sorted(convs, key=lambda e: -e.device_time_total)[: a.top]:
            t = e.device_time_total / 1e6 if dev.type == "cuda" else e.cpu_time_total / 1e6
            fl = conv_flops(e.input_shapes) * e.count
            rate = f"{fl / t / 1e12:6.0f}" if t else "     -"
            print(f"  {t * 1e3:9.1f} ms  x{e.count:<4d} {rate} TFLOP/s  {e.input_shapes[0]} {e.input_shapes[1]}")


if __name__ == "__main__":
    main()
