"""GGUF decode and decode+matmul at the Wan2.1 T2V-14B shapes, against a bf16 matmul and ComfyUI-GGUF.

Run on the GPU (the lead runs it on the H100):

    python scripts/bench_gguf.py                 # M = 32,760 tokens (480x832x81)
    python scripts/bench_gguf.py --types Q4_K --iters 5
    python scripts/bench_gguf.py --device cpu --small   # the tiny model's shapes on the CPU
    python scripts/bench_gguf.py --smoke                # the same, one call each: checks the script runs

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
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402
import gguf  # noqa: E402

from wan4step.quant import gguf_matmul  # noqa: E402
from wan4step.quant.gguf_dequant import dequantize  # noqa: E402
from wan4step.quant.gguf_encode import random_raw  # noqa: E402

Q = gguf.GGMLQuantizationType


def shapes(cfg) -> dict[str, tuple[int, int]]:
    s = bl.block_linear_shapes(cfg)
    return {f"{name} {o}x{i}": (o, i) for name, (o, i) in
            (("qkvo", s["self_attn.q"]), ("ffn.0", s["ffn.0"]), ("ffn.2", s["ffn.2"]))}


def load_comfy_dequant():
    """ComfyUI-GGUF's dequant.py imported by path (it needs only torch, gguf, tqdm), or None."""
    comfy = bl.comfyui_path()
    root = comfy / "custom_nodes" / "ComfyUI-GGUF" if comfy else None
    if root is None or not (root / "dequant.py").is_file():
        return None, None
    try:
        spec = importlib.util.spec_from_file_location("comfyui_gguf_dequant", root / "dequant.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod, str(root)
    except Exception as e:  # noqa: BLE001 - a missing tqdm etc. just drops the column
        print(f"# ComfyUI-GGUF at {root} not importable: {e}")
        return None, None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=32760, help="tokens (rows of x)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--types", default="Q4_K,Q5_K,Q6_K,Q8_0")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="the tiny model's shapes")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), device="cpu", small=True, iters=1, m=300, types="Q4_K,Q8_0")

    device = torch.device(args.device)
    linear_shapes = shapes(bl.config(args.small))
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
    head = ["type", "shape", "bf16 mm", "deq torch", "deq triton", "deq comfy", "linear", "lin/mm", "torch/trit",
            "comfy/ours", "trit GB/s", "exact"]
    rows = []
    for tname in args.types.split(","):
        qtype = Q[tname.strip()]
        for sname, shape in linear_shapes.items():
            rows.append(bench_one(qtype, sname, shape, args.m, args.iters, device, g, comfy, triton_ok))
            print(" ".join(rows[-1]), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print()
    print(bl.text_table(head, rows))


def bench_one(qtype, sname, shape, m, iters, device, g, comfy, triton_ok) -> list[str]:
    out_f, in_f = shape
    raw = random_raw(qtype, shape, device=device, generator=g)
    x = torch.randn(m, in_f, device=device, generator=g, dtype=torch.bfloat16)
    w16 = dequantize(raw, qtype, shape, torch.bfloat16)

    t_mm = bl.median_ms(lambda: F.linear(x, w16), device, iters)
    t_torch = bl.median_ms(lambda: dequantize(raw, qtype, shape, torch.bfloat16), device, iters)
    t_trit = float("nan")
    exact = "n/a"
    if triton_ok and int(qtype) in gguf_matmul._DEQUANT_KERNELS:
        kern = gguf_matmul._DEQUANT_KERNELS[int(qtype)]
        t_trit = bl.median_ms(lambda: kern(raw, shape, torch.bfloat16), device, iters)
        same = torch.equal(kern(raw, shape, torch.bfloat16).view(torch.int16), w16.view(torch.int16))
        exact = "yes" if same else "NO"
    ref = torch.from_numpy(gguf.quants.dequantize(raw[:16].cpu().numpy(), qtype)).to(torch.bfloat16)
    if not torch.equal(ref.view(torch.int16), w16[:16].cpu().view(torch.int16)):
        exact = "NO-ref"
    elif exact == "n/a":
        exact = "ref"
    t_comfy = float("nan")
    if comfy is not None and qtype in comfy.dequantize_functions:
        t_comfy = bl.median_ms(lambda: comfy.dequantize(raw, qtype, shape, dtype=None).to(torch.bfloat16), device, iters)
    t_lin = bl.median_ms(lambda: gguf_matmul.gguf_linear(x, raw, qtype, shape, None), device, iters)
    have_trit = t_trit == t_trit
    ours = t_trit if have_trit else t_torch
    gbs = (raw.numel() + w16.numel() * 2) / (t_trit * 1e-3) / 1e9 if have_trit else float("nan")
    return [qtype.name, sname, f"{t_mm:.3f}", f"{t_torch:.3f}", f"{t_trit:.3f}", f"{t_comfy:.3f}", f"{t_lin:.3f}",
            f"{t_lin / t_mm:.3f}", f"{t_torch / ours:.2f}", f"{t_comfy / ours:.2f}", f"{gbs:.0f}", exact]

if __name__ == "__main__":
    main()
