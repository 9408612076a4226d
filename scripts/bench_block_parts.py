"""Time the parts of one Wan2.1-14B block at 480p, to see where FP8 and bf16 still differ.

    python scripts/bench_block_parts.py [--tokens 32760]

Prints, each measured in this one run on random data of the 14B shapes:
  - self- and cross-attention per SDPA backend, on the pack's [B, H, L, D] views;
  - the block's elementwise passes (LayerNorm(+quantize), GELU+quantize, per-token quantize,
    RMSNorm+RoPE, the gated residual) with the bandwidth each achieves;
  - the FP8 / bf16 GEMMs of the block, q/k/v as three GEMMs and as one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _comfy_import  # noqa: E402,F401  (puts the repo on sys.path)
from profile_block import ms  # noqa: E402


def gemm_row(name: str, m: int, n: int, k: int, act=None) -> str:
    """One linear of the block in FP8 (per-token x per-channel scales) and in bf16, with bias."""
    import torch.nn.functional as F

    from wan4step.quant.act_quant import quantize_act
    from wan4step.quant.scaled import quantize_rowwise, scaled_matmul

    dev, bf = torch.device("cuda"), torch.bfloat16
    w = torch.randn(n, k, device=dev, dtype=bf) * 0.02
    b = torch.randn(n, device=dev, dtype=bf) * 0.01
    wq8, ws = quantize_rowwise(w, "fp8")
    a16 = torch.randn(m, k, device=dev, dtype=bf)
    a8, s8 = act if act is not None else quantize_act(a16, "fp8")
    t8 = ms(lambda: scaled_matmul(a8, s8, wq8, ws, b, "fp8", bf))
    t16 = ms(lambda: F.linear(a16, w, b))
    flop = 2 * m * n * k
    return (f"{name:22s} fp8 {t8:6.3f} ms ({flop / t8 / 1e9:5.0f} TFLOPS)   bf16 {t16:6.3f} ms "
            f"({flop / t16 / 1e9:5.0f} TFLOPS)   fp8/bf16 {t8 / t16:5.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32760)
    args = ap.parse_args()
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wan4step.dit import fused
    from wan4step.quant.act_quant import quantize_act
    from wan4step.quant.scaled import quantize_rowwise, scaled_matmul

    dev = torch.device("cuda")
    L, C, H, FF = args.tokens, 5120, 40, 13824
    bf = torch.bfloat16
    torch.manual_seed(0)

    def gbps(nbytes: float, t: float) -> str:
        return f"{t:7.3f} ms  {nbytes / t / 1e6:6.0f} GB/s"

    with torch.inference_mode():
        print("== attention (pack layout: [1, L, C] viewed as [1, H, L, 128])")
        q = torch.randn(1, L, C, device=dev, dtype=bf).view(1, L, H, 128).transpose(1, 2)
        k, v = (torch.randn(1, L, C, device=dev, dtype=bf).view(1, L, H, 128).transpose(1, 2) for _ in range(2))
        kc, vc = (torch.randn(1, 512, C, device=dev, dtype=bf).view(1, 512, H, 128).transpose(1, 2) for _ in range(2))
        for be in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            row = f"{be.name:20s}"
            for name, kk, vv in (("self", k, v), ("cross", kc, vc)):
                try:
                    with sdpa_kernel([be]):
                        row += f"  {name} {ms(lambda kk=kk, vv=vv: F.scaled_dot_product_attention(q, kk, vv)):7.2f} ms"
                except RuntimeError as exc:
                    row += f"  {name} n/a ({str(exc)[:40]})"
            print(row)
        del k, v

        print("\n== elementwise passes (one 480p block has 3 LayerNorms, 3 RMSNorms, 1 GELU, 3 residuals)")
        x32 = torch.randn(1, L, C, device=dev)
        x16 = x32.to(bf)
        sh, sc = (torch.randn(1, C, device=dev) * 0.1 for _ in range(2))
        y16 = torch.randn(1, L, C, device=dev, dtype=bf)
        gate = torch.randn(1, 1, C, device=dev)
        h = torch.randn(L, FF, device=dev, dtype=bf)
        n32, n16, n8 = L * C * 4, L * C * 2, L * C
        print("ln_modulate        fp32 x ->bf16", gbps(n32 + n16, ms(lambda: fused.ln_modulate(x32, sh, sc))))
        print("ln_modulate_quant  fp32 x ->fp8 ", gbps(n32 + n8, ms(lambda: fused.ln_modulate_quant(x32, sh, sc, "fp8"))))
        print("ln_modulate_quant  bf16 x ->fp8 ", gbps(n16 + n8, ms(lambda: fused.ln_modulate_quant(x16, sh, sc, "fp8"))))
        print("gelu_quant         bf16 h ->fp8 ", gbps(L * FF * 3, ms(lambda: fused.gelu_quant(h, "fp8"))))
        print("quantize_act       bf16 x ->fp8 ", gbps(n16 + n8, ms(lambda: quantize_act(y16.view(L, C), "fp8"))))
        wq = torch.ones(C, device=dev, dtype=bf)
        cos, sin = torch.rand(L, 64, device=dev), torch.rand(L, 64, device=dev)
        print("rmsnorm_rope       bf16 -> bf16 ", gbps(2 * n16, ms(lambda: fused.rmsnorm_rope(y16, wq, cos, sin, H))))
        print("addcmul x32 + y16 * g32 -> fp32 ", gbps(2 * n32 + n16, ms(lambda: torch.addcmul(x32, y16, gate))))
        print("add     x32 + y16       -> fp32 ", gbps(2 * n32 + n16, ms(lambda: x32 + y16)))
        g16 = gate[0].to(bf)
        print("addcmul x16 + y16 * g16 -> bf16 ", gbps(3 * n16, ms(lambda: torch.addcmul(x16, y16, g16[:, None]))))
        print("gated_residual (pack)   -> bf16 ", gbps(3 * n16, ms(lambda: fused.gated_residual(x16, y16, g16))))

        print("\n== GEMMs, M = tokens (fp8: per-token x per-channel scales, fast accumulation; bf16: cuBLAS)")
        xq, sa = quantize_act(y16.view(L, C), "fp8")
        shapes = {"q/k/v/o (5120x5120)": (C, C), "ffn.0 (13824x5120)": (FF, C), "ffn.2 (5120x13824)": (C, FF)}
        for name, (n, kdim) in shapes.items():
            print(gemm_row(name, L, n, kdim, (xq, sa) if kdim == C else None))
        w3 = torch.randn(3 * C, C, device=dev, dtype=bf) * 0.02
        b3 = torch.randn(3 * C, device=dev, dtype=bf) * 0.01
        w3q, w3s = quantize_rowwise(w3, "fp8")
        parts = [(w3q[i * C:(i + 1) * C], w3s[i * C:(i + 1) * C], b3[i * C:(i + 1) * C]) for i in range(3)]
        t3 = ms(lambda: [scaled_matmul(xq, sa, wq_, s_, b_, "fp8", bf) for wq_, s_, b_ in parts])
        t1 = ms(lambda: scaled_matmul(xq, sa, w3q, w3s, b3, "fp8", bf))
        a16 = y16.view(L, C)
        u3 = ms(lambda: [F.linear(a16, w3[i * C:(i + 1) * C], b3[i * C:(i + 1) * C]) for i in range(3)])
        u1 = ms(lambda: F.linear(a16, w3, b3))
        print(f"q,k,v as 3 GEMMs: fp8 {t3:6.3f} ms  bf16 {u3:6.3f} ms;  as one [15360, 5120]: fp8 {t1:6.3f} ms  "
              f"bf16 {u1:6.3f} ms")


if __name__ == "__main__":
    main()
