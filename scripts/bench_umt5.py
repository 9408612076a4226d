"""UMT5-XXL encode time for one 512-token prompt: GPU resident vs CPU offload, bf16 / FP8 / INT8 weights.

Run on the GPU machine (the lead runs it on the H100):

    python scripts/bench_umt5.py                      # real UMT5-XXL shapes (5.7 B parameters)
    python scripts/bench_umt5.py --skip-cpu           # GPU rows only (the CPU rows take minutes)
    python scripts/bench_umt5.py --layers 1 --vocab 2048 --device cpu   # one real-width layer on the CPU
    python scripts/bench_umt5.py --smoke              # CPU, the tiny UMT5: checks the script runs

Random weights at the real shapes (vocab 256384, d_model 4096, 64 heads x 64,
d_ff 10240, 24 layers) through the pack's engine encoder (`wan4step.umt5`), the
same module the Wan4Step UMT5 Loader's CLIP runs. One table, medians, one process:

  weights     bf16; fp8 / int8 = LightX2V row-wise (W8A8: activations quantized per
              token, `_scaled_mm` / `_int_mm`); fp8 w/o = the same FP8 bytes decoded and
              multiplied in the compute dtype (ComfyUI's semantics for fp8_scaled TEs)
  where       gpu = weights resident in VRAM (node device "gpu");
              gpu+copy = weights in (pageable) RAM, copied in, encode, copied back out
              (node device "gpu_then_free", what ComfyUI's load/unload does);
              cpu = encode on the CPU (node device "cpu", the 8-16 GB card path)
  compute     activation dtype (the node uses bf16 on GPUs, fp32 on the CPU)
  ms          wall time of one encode (CUDA-synchronized); vs gpu bf16 = ratio to row 1
  VRAM GB     peak allocated during the row (weights included)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

from wan4step.quant.weights import QuantWeight  # noqa: E402
from wan4step.umt5.model import UMT5_XXL, UMT5Config, UMT5Encoder, canonical_shapes  # noqa: E402

LINEAR_SUFFIXES = ("SelfAttention.q.weight", "SelfAttention.k.weight", "SelfAttention.v.weight",
                   "SelfAttention.o.weight", "wi_0.weight", "wi_1.weight", "wo.weight")


def random_weights(cfg: UMT5Config, device: str, kind: str) -> dict[str, torch.Tensor | QuantWeight]:
    """Canonical weights at trained-like scales, built on `device` (fast on a GPU); linears in `kind`."""
    g = torch.Generator(device=device).manual_seed(0)
    out: dict[str, torch.Tensor | QuantWeight] = {}
    for key, shape in canonical_shapes(cfg).items():
        if key.endswith(LINEAR_SUFFIXES):
            out[key] = bl.random_weight(kind, shape, device=device, generator=g)
        elif key.endswith("layer_norm.weight"):
            out[key] = bl.random_tensor(shape, device=device, generator=g, mean=1.0, std=0.1)
        else:  # the token embedding and the relative-position biases
            out[key] = bl.random_tensor(shape, device=device, generator=g, std=0.5)
    return out


def build(cfg: UMT5Config, weights, activation_quant: bool) -> UMT5Encoder:
    model = UMT5Encoder(cfg, activation_quant=activation_quant)
    model.load_weights(weights)
    return model.eval()


def prompt(cfg: UMT5Config, device: str, tokens: int = 120, length: int = bl.TEXT_TOKENS):
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(1, length, dtype=torch.long)
    ids[0, :tokens] = torch.randint(3, cfg.vocab_size, (tokens,), generator=g)
    ids[0, tokens - 1] = 1
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[0, :tokens] = 1
    return ids.to(device), mask.to(device)


def smoke_config() -> UMT5Config:
    from wan4step.tiny.umt5 import TINY_UMT5

    return TINY_UMT5


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=UMT5_XXL.num_layers)
    ap.add_argument("--vocab", type=int, default=UMT5_XXL.vocab_size)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--cpu-iters", type=int, default=1)
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--kinds", default="bf16,fp8,int8")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), device="cpu", iters=1, cpu_iters=1, kinds="bf16,fp8")
    if args.smoke:
        cfg = smoke_config()
    else:
        cfg = UMT5Config(vocab_size=args.vocab, d_model=UMT5_XXL.d_model, d_kv=UMT5_XXL.d_kv, d_ff=UMT5_XXL.d_ff,
                         num_heads=UMT5_XXL.num_heads, num_layers=args.layers)
    dev = args.device
    gpu = dev.startswith("cuda")
    print(f"# UMT5 {cfg.name}, {cfg.param_count() / 1e9:.2f} B params, 512-token prompt (120 real tokens)")
    print(f"# {bl.device_line(dev)}, CPU threads {torch.get_num_threads()}")
    if not gpu:
        bl.skip_cuda("the gpu and gpu+copy rows")
    rows: list[tuple[str, str, str, float, float]] = []
    cpu_ids, cpu_mask = prompt(cfg, "cpu")
    ids, mask = prompt(cfg, dev)

    def run_row(weights_name, where, compute, fn, device, iters, warmup=2):
        bl.reset_peak(device)
        ms = bl.median_ms(fn, device, iters, warmup)
        peak = bl.peak_gib(device)
        rows.append((weights_name, where, compute, ms, peak))
        print(f"  {weights_name:8s} {where:9s} {compute:5s} {ms:10.1f} ms", flush=True)

    for kind in [k for k in args.kinds.split(",") if k]:
        weights = random_weights(cfg, dev, kind)
        variants = [(kind, True)] + ([("fp8 w/o", False)] if kind == "fp8" else [])
        if gpu:
            for name, aq in variants:
                model = build(cfg, weights, aq)
                for compute, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                    if kind != "bf16" and compute == "fp32":
                        continue
                    with torch.no_grad():
                        run_row(name, "gpu", compute, lambda m=model, d=dt: m.encode(ids, mask, dtype=d), dev,
                                args.iters)
                del model
            # gpu_then_free: weights in RAM, copied in for the encode and back out after it
            host = {k: v.to("cpu") for k, v in weights.items()}
            del weights
            torch.cuda.empty_cache()
            model = build(cfg, host, True)

            def copy_encode_free(m=model, i=ids, k=mask):
                m.to(dev)
                with torch.no_grad():
                    m.encode(i, k, dtype=torch.bfloat16)
                m.to("cpu")

            run_row(kind, "gpu+copy", "bf16", copy_encode_free, dev, max(2, args.iters // 4), warmup=1)
            weights = host
        if not args.skip_cpu:
            for name, aq in variants:
                model = build(cfg, {k: v.to("cpu") for k, v in weights.items()}, aq)
                for compute, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                    if kind != "bf16" and compute == "bf16":
                        continue
                    with torch.no_grad():
                        run_row(name, "cpu", compute, lambda m=model, d=dt: m.encode(cpu_ids, cpu_mask, dtype=d),
                                "cpu", args.cpu_iters, warmup=0)
                del model
        del weights
        if gpu:
            torch.cuda.empty_cache()

    base = rows[0][3]
    print()
    print(bl.md_table(["weights", "where", "compute", "ms / encode", f"vs {rows[0][0]} {rows[0][1]} {rows[0][2]}",
                       "peak VRAM GB"],
                      [(w, where, compute, f"{ms:.1f}", f"{ms / base:.2f}", f"{peak:.1f}")
                       for w, where, compute, ms, peak in rows], align="lllrrr"))


if __name__ == "__main__":
    main()
