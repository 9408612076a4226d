"""The block's elementwise kernels at the 14B shapes, per launch configuration (one process).

    python scripts/bench_fused.py                 # M = 32,760 tokens (480x832x81)
    python scripts/bench_fused.py --tokens 5184   # 288x512x33
    python scripts/bench_fused.py --smoke         # CPU, tiny shapes (torch fallbacks): checks the script runs

Each row: median CUDA-event time of one call, the bytes it must move (read + write, once each),
and the achieved bandwidth, per launch configuration (each program holds a whole row in registers).
The torch rows are what the kernels replace. wan4step.dit.fused.TUNING holds the choice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

from wan4step.dit import fused  # noqa: E402
from wan4step.quant.act_quant import quantize_act  # noqa: E402

LN_CONFIGS = [(0, 8), (0, 4), (1, 8), (1, 4), (1, 16)]  # (ln_split, warps); (0, 8) was the kernel before
GELU_CONFIGS = [16, 32, 8]


def differing(x, sh, sc) -> float:
    """The fraction of codes in which this configuration's quantizing LayerNorm and the two-pass path
    (ln_modulate, then quantize_act) differ: the compiler may order a row's sums differently in each."""
    q, s = fused.ln_modulate_quant(x, sh[0][None], sc[0][None], "fp8")
    rq, rs = quantize_act(fused.ln_modulate(x, sh[0][None], sc[0][None]).view(q.shape), "fp8")
    return (q.view(torch.uint8) != rq.view(torch.uint8)).float().mean().item()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=bl.SIZES["480p"].tokens())
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), tokens=bl.SIZES["tiny"].tokens())
    dev = torch.device("cpu" if args.smoke else "cuda")
    cfg = bl.config(args.smoke)
    M, C, F = args.tokens, cfg.dim, cfg.ffn_dim
    ln_configs, gelu_configs = (LN_CONFIGS, GELU_CONFIGS) if dev.type == "cuda" else (LN_CONFIGS[:1], GELU_CONFIGS[:1])
    if dev.type != "cuda":
        bl.skip_cuda("the launch-configuration sweep (the CPU runs the torch fallbacks once)")
    x = torch.randn(1, M, C, device=dev, dtype=torch.bfloat16) * 4
    sh, sc = (torch.randn(1, C, device=dev, dtype=torch.bfloat16) * 0.1 for _ in range(2))
    h = torch.randn(M, F, device=dev, dtype=torch.bfloat16) * 2
    ang = torch.randn(M, 64, device=dev)
    cos, sin, w = ang.cos(), ang.sin(), torch.randn(C, device=dev, dtype=torch.bfloat16)
    gate = torch.randn(1, 1, C, device=dev, dtype=torch.bfloat16)
    rows = []

    def row(name: str, cfg: str, fn, nbytes: int) -> None:
        try:
            ms = bl.median_ms(fn, dev, iters=20 if dev.type == "cuda" else 2, warmup=3 if dev.type == "cuda" else 1)
        except Exception as exc:  # a configuration Triton cannot build here
            print(f"{name} {cfg}: {type(exc).__name__}: {exc}")
            return
        rows.append((name, cfg, f"{ms:.3f}", f"{nbytes / ms / 1e9:.2f}"))
        print(f"{name:22s} {cfg:18s} {ms:7.3f} ms  {nbytes / ms / 1e9:6.2f} TB/s", flush=True)

    act, act8 = M * C * 2, M * C
    with torch.inference_mode():
        row("torch layer_norm+mod", "-", lambda: torch.nn.functional.layer_norm(x, (C,)) * (1 + sc) + sh, 2 * act)
        row("act_quant fp8", "row", lambda: quantize_act(x.view(M, C), "fp8"), act + act8)
        row("torch gelu", "-", lambda: torch.nn.functional.gelu(h, approximate="tanh"), 4 * M * F)
        row("addcmul (residual)", "-", lambda: torch.addcmul(x, x, gate), 3 * act)
        row("gated_residual (residual)", "tiled", lambda: fused.gated_residual(x, x, gate[:, 0]), 3 * act)
        row("rmsnorm_rope", "row", lambda: fused.rmsnorm_rope(x, w, cos, sin, cfg.num_heads), 2 * act)
        saved = dict(fused.TUNING)
        x32 = x.float()
        for split, warps in ln_configs:
            name = f"split {split} warps {warps}"
            fused.TUNING.update(ln=warps, ln_split=split)
            diff = differing(x, sh, sc)
            row("ln_modulate", name, lambda: fused.ln_modulate(x, sh[0][None], sc[0][None]), 2 * act)
            row(f"ln_modulate_quant ({diff:.1e} codes differ from two-pass)", name,
                lambda: fused.ln_modulate_quant(x, sh[0][None], sc[0][None], "fp8"), act + act8)
            row("ln_modulate_quant fp32 x", name,
                lambda: fused.ln_modulate_quant(x32, sh[0][None], sc[0][None], "fp8"), 2 * act + act8)
        for warps in gelu_configs:
            fused.TUNING.update(gelu_quant=warps)
            row("gelu_quant", f"warps {warps}", lambda: fused.gelu_quant(h, "fp8"), 3 * M * F)
        fused.TUNING.update(saved)
    print()
    print(bl.md_table(["kernel", "config", "ms", "TB/s"], rows))
    print(f"{bl.device_line(dev)}, M = {M}")


if __name__ == "__main__":
    main()
