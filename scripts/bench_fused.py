"""The block's elementwise kernels at the 14B shapes, per launch configuration (H100, one process).
    python scripts/bench_fused.py                 # M = 32,760 tokens (480x832x81)
    python scripts/bench_fused.py --tokens 7920   # 288x512x33
Each row: median CUDA-event time of one call, the bytes it must move (read + write, once each),
and the achieved bandwidth, per num_warps (each program holds a whole row in registers).
The torch rows are what the kernels replace. wan4step.dit.fused.TUNING holds the choice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gguf import timeit  # noqa: E402

from wan4step.dit import fused  # noqa: E402
from wan4step.quant.act_quant import quantize_act  # noqa: E402


def timed(fn) -> float:
    """Median CUDA-event milliseconds of one call (bench_gguf's timer)."""
    return timeit(fn, torch.device("cuda"), iters=20, warmup=3)


LN_CONFIGS = [(0, 8), (0, 4), (1, 8), (1, 4), (1, 16)]  # (ln_split, warps); (0, 8) was the kernel before
GELU_CONFIGS = [16, 32, 8]


def differing(x, sh, sc) -> float:
    """The fraction of codes in which this configuration's quantizing LayerNorm and the two-pass path
    (ln_modulate, then quantize_act) differ: the compiler may order a row's sums differently in each."""
    q, s = fused.ln_modulate_quant(x, sh[0][None], sc[0][None], "fp8")
    rq, rs = quantize_act(fused.ln_modulate(x, sh[0][None], sc[0][None]).view(q.shape), "fp8")
    return (q.view(torch.uint8) != rq.view(torch.uint8)).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32760)
    args = ap.parse_args()
    dev = torch.device("cuda")
    M, C, F = args.tokens, 5120, 13824
    x = torch.randn(1, M, C, device=dev, dtype=torch.bfloat16) * 4
    sh, sc = (torch.randn(1, C, device=dev, dtype=torch.bfloat16) * 0.1 for _ in range(2))
    h = torch.randn(M, F, device=dev, dtype=torch.bfloat16) * 2
    ang = torch.randn(M, 64, device=dev)
    cos, sin, w = ang.cos(), ang.sin(), torch.randn(C, device=dev, dtype=torch.bfloat16)
    gate = torch.randn(1, 1, C, device=dev, dtype=torch.bfloat16)
    rows = []

    def row(name: str, cfg: str, fn, nbytes: int) -> None:
        try:
            ms = timed(fn)
        except Exception as exc:  # a configuration Triton cannot build here
            print(f"{name} {cfg}: {type(exc).__name__}: {exc}")
            return
        rows.append((name, cfg, ms, nbytes / ms / 1e9))
        print(f"{name:22s} {cfg:18s} {ms:7.3f} ms  {nbytes / ms / 1e9:6.2f} TB/s", flush=True)

    act, act8 = M * C * 2, M * C
    with torch.inference_mode():
        row("torch layer_norm+mod", "-", lambda: torch.nn.functional.layer_norm(x, (C,)) * (1 + sc) + sh, 2 * act)
        row("act_quant fp8", "row", lambda: quantize_act(x.view(M, C), "fp8"), act + act8)
        row("torch gelu", "-", lambda: torch.nn.functional.gelu(h, approximate="tanh"), 4 * M * F)
        row("addcmul (residual)", "-", lambda: torch.addcmul(x, x, gate), 3 * act)
        row("rmsnorm_rope", "row", lambda: fused.rmsnorm_rope(x, w, cos, sin, 40), 2 * act)
        saved = dict(fused.TUNING)
        x32 = x.float()
        for split, warps in LN_CONFIGS:
            cfg = f"split {split} warps {warps}"
            fused.TUNING.update(ln=warps, ln_split=split)
            diff = differing(x, sh, sc)
            row("ln_modulate", cfg, lambda: fused.ln_modulate(x, sh[0][None], sc[0][None]), 2 * act)
            row(f"ln_modulate_quant ({diff:.1e} codes differ from two-pass)", cfg,
                lambda: fused.ln_modulate_quant(x, sh[0][None], sc[0][None], "fp8"), act + act8)
            row("ln_modulate_quant fp32 x", cfg,
                lambda: fused.ln_modulate_quant(x32, sh[0][None], sc[0][None], "fp8"), 2 * act + act8)
        for warps in GELU_CONFIGS:
            fused.TUNING.update(gelu_quant=warps)
            row("gelu_quant", f"warps {warps}", lambda: fused.gelu_quant(h, "fp8"), 3 * M * F)
        fused.TUNING.update(saved)
    print("\n| kernel | config | ms | TB/s |\n|---|---|---|---|")
    for name, cfg, ms, bw in rows:
        print(f"| {name} | {cfg} | {ms:.3f} | {bw:.2f} |")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, M = {M}")


if __name__ == "__main__":
    main()
