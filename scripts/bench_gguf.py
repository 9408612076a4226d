"""GGUF decode and decode+matmul at the Wan2.1 T2V-14B shapes, against a bf16 matmul and ComfyUI-GGUF.

Run on the GPU (the lead runs it on the H100):

    python scripts/bench_gguf.py                 # M = 32,760 tokens (480x832x81)
    python scripts/bench_gguf.py --types Q4_K --iters 5
    python scripts/bench_gguf.py --device cpu --small   # smoke test of the script itself

Weights are random valid blocks built directly on the device (random bytes with
sane fp16 scales: `gguf_encode.random_raw`); decode cost does not depend on the
values. Columns, all medians of CUDA-event timings in one process:

  bf16 mm      F.linear(x, W_bf16) with x [M, in] bf16 — the floor
  deq torch    our table-driven torch decoder -> bf16 (bit-exact vs gguf numpy)
  deq triton   our one-pass Triton decoder -> bf16 (bit-exact; the path gguf_linear takes)
  deq comfy    ComfyUI-GGUF's dequantize (its default: fp16 math, then .to(bf16)), when importable
  linear       gguf_linear(x, bytes) = decode + matmul, what QuantLinear runs
  lin/mm       linear / bf16 mm: the price of keeping the weight quantized
  comfy/ours   deq comfy / our decoder on this device
  exact        Triton == torch decoder bit for bit on the whole tensor, and both == gguf numpy on 16 rows
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import gguf  # noqa: E402

from wan4step.quant import gguf_matmul  # noqa: E402
from wan4step.quant.gguf_dequant import dequantize  # noqa: E402
from wan4step.quant.gguf_encode import random_raw  # noqa: E402

Q = gguf.GGMLQuantizationType
SHAPES = {"qkvo 5120x5120": (5120, 5120), "ffn.0 13824x5120": (13824, 5120), "ffn.2 5120x13824": (5120, 13824)}
SMALL = {"small 256x512": (256, 512), "small 512x256": (512, 256)}


def load_comfy_dequant():
    """ComfyUI-GGUF's dequant.py imported by path (it needs only torch, gguf, tqdm), or None."""
    roots = []
    if os.environ.get("COMFYUI_PATH"):
        roots.append(Path(os.environ["COMFYUI_PATH"]) / "custom_nodes" / "ComfyUI-GGUF")
    roots.append(Path.home() / ".cache" / "wan4step" / "ComfyUI" / "custom_nodes" / "ComfyUI-GGUF")
    for root in roots:
        f = root / "dequant.py"
        if f.is_file():
            try:
                spec = importlib.util.spec_from_file_location("comfyui_gguf_dequant", f)
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
                return mod, str(root)
            except Exception as e:  # noqa: BLE001 - a missing tqdm etc. just drops the column
                print(f"# ComfyUI-GGUF at {root} not importable: {e}")
    return None, None


def timeit(fn, device: torch.device, iters: int, warmup: int = 2) -> float:
    """Median milliseconds of `fn()` over `iters` runs."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    else:
        import time

        for _ in range(iters):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=32760, help="tokens (rows of x)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--types", default="Q4_K,Q5_K,Q6_K,Q8_0")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny shapes (smoke test)")
    args = ap.parse_args()

    device = torch.device(args.device)
    shapes = SMALL if args.small else SHAPES
    comfy, comfy_root = load_comfy_dequant()
    triton_ok = False
    if device.type == "cuda":
        gguf_matmul._load_kernels()
        triton_ok = bool(gguf_matmul._DEQUANT_KERNELS)
        print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, M = {args.m}, iters {args.iters}")
    else:
        print(f"# {device}, torch {torch.__version__}, M = {args.m}, iters {args.iters}")
    print(f"# ComfyUI-GGUF: {comfy_root or 'not found (column skipped)'}; Triton decoders: {'on' if triton_ok else 'off'}")

    g = torch.Generator(device=device).manual_seed(0)
    head = (
        f"{'type':5s} {'shape':18s} {'bf16 mm':>8s} {'deq torch':>9s} {'deq triton':>10s} {'deq comfy':>9s} "
        f"{'linear':>8s} {'lin/mm':>7s} {'torch/trit':>10s} {'comfy/ours':>10s} {'trit GB/s':>9s} {'exact':>6s}"
    )
    print(head)
    print("-" * len(head))
    for tname in args.types.split(","):
        qtype = Q[tname.strip()]
        for sname, shape in shapes.items():
            print(bench_one(qtype, sname, shape, args.m, args.iters, device, g, comfy, triton_ok))
            if device.type == "cuda":
                torch.cuda.empty_cache()


def bench_one(qtype, sname, shape, m, iters, device, g, comfy, triton_ok) -> str:
    out_f, in_f = shape
    raw = random_raw(qtype, shape, device=device, generator=g)
    x = torch.randn(m, in_f, device=device, generator=g, dtype=torch.bfloat16)
    w16 = dequantize(raw, qtype, shape, torch.bfloat16)

    t_mm = timeit(lambda: F.linear(x, w16), device, iters)
    t_torch = timeit(lambda: dequantize(raw, qtype, shape, torch.bfloat16), device, iters)
    t_trit = float("nan")
    exact = "n/a"
    if triton_ok and int(qtype) in gguf_matmul._DEQUANT_KERNELS:
        kern = gguf_matmul._DEQUANT_KERNELS[int(qtype)]
        t_trit = timeit(lambda: kern(raw, shape, torch.bfloat16), device, iters)
        same = torch.equal(kern(raw, shape, torch.bfloat16).view(torch.int16), w16.view(torch.int16))
        exact = "yes" if same else "NO"
    ref = torch.from_numpy(gguf.quants.dequantize(raw[:16].cpu().numpy(), qtype)).to(torch.bfloat16)
    if not torch.equal(ref.view(torch.int16), w16[:16].cpu().view(torch.int16)):
        exact = "NO-ref"
    elif exact == "n/a":
        exact = "ref"
    t_comfy = float("nan")
    if comfy is not None and qtype in comfy.dequantize_functions:
        t_comfy = timeit(lambda: comfy.dequantize(raw, qtype, shape, dtype=None).to(torch.bfloat16), device, iters)
    t_lin = timeit(lambda: gguf_matmul.gguf_linear(x, raw, qtype, shape, None), device, iters)
    have_trit = t_trit == t_trit
    ours = t_trit if have_trit else t_torch
    gbs = (raw.numel() + w16.numel() * 2) / (t_trit * 1e-3) / 1e9 if have_trit else float("nan")
    return (
        f"{qtype.name:5s} {sname:18s} {t_mm:8.3f} {t_torch:9.3f} {t_trit:10.3f} {t_comfy:9.3f} "
        f"{t_lin:8.3f} {t_lin / t_mm:7.3f} {t_torch / ours:10.2f} {t_comfy / ours:10.2f} {gbs:9.0f} {exact:>6s}"
    )

if __name__ == "__main__":
    main()
