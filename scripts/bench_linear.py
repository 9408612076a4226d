"""W8A8 FP8 / INT8 linears (LightX2V distill_fp8 / distill_int8) vs bf16, at the Wan2.1 T2V-14B shapes.

Run on the GPU (the lead runs it on the H100; < 2 min):

    python scripts/bench_linear.py                  # M = 32,760 tokens (480x832, 81 frames)
    python scripts/bench_linear.py --iters 10
    python scripts/bench_linear.py --device cpu --small   # the tiny model's shapes on the CPU
    python scripts/bench_linear.py --smoke                # the same, one timed call each: checks the script runs

Columns, medians of CUDA-event timings (after warmup) in one process, ms per linear
and (ratio to bf16):

  bf16        F.linear(x, W_bf16, b) with x [M, in] bf16 — the baseline
  fp8 mm      torch._scaled_mm alone (x already quantized) — the floor of the FP8 path
  fp8 naive   torch act-quant (amax, divide, clamp, cast as separate ops) + _scaled_mm
  fp8 fused   scaled_linear: fused Triton act-quant + _scaled_mm (what QuantLinear runs)
  int8 mm     torch._int_mm alone (int32 out)
  int8 naive  torch act-quant + _int_mm + torch rescale (several passes over the int32 result)
  int8 fused  scaled_linear: fused act-quant + _int_mm + one fused Triton rescale
  aq naive / aq fused   the FP8 activation quantizer alone, torch vs Triton
  check       fused quantizer codes == torch reference bit for bit (fp8 & int8), and
              the relative RMS difference of fp8/int8 fused vs the W8A8 emulation

The per-block row sums the ten linears of one DiT block: self_attn q/k/v/o,
cross_attn q/o and ffn.0/ffn.2 on the M video tokens, cross_attn k/v on the
512 text tokens. Attention itself is not included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

from wan4step.quant import scaled  # noqa: E402
from wan4step.quant.act_quant import HAVE_TRITON, quantize_act_reference, quantize_act_triton  # noqa: E402
from wan4step.quant.scaled import quantize_rowwise, scaled_linear  # noqa: E402


def linears(cfg) -> list[tuple[str, int, int, str, int]]:
    """(name, out, in, rows: "video" | "text", count per block) for the ten linears of a block of `cfg`."""
    s = bl.block_linear_shapes(cfg)
    return [("self q/k/v/o", *s["self_attn.q"], "video", 4), ("cross q/o", *s["cross_attn.q"], "video", 2),
            ("cross k/v", *s["cross_attn.k"], "text", 2), ("ffn.0", *s["ffn.0"], "video", 1),
            ("ffn.2", *s["ffn.2"], "video", 1)]


SMALL_TOKENS = (300, 64)  # --small: video and text rows


def timer(device: torch.device, warmup: int, iters: int):
    """Median milliseconds of one call (benchlib's timer, fixed settings)."""
    return lambda fn: bl.median_ms(fn, device, iters, warmup)


def naive_int8(x, q, s, bias):
    xq, sa = quantize_act_reference(x, "int8")
    acc = torch._int_mm(xq, q.t())
    return (acc.float() * sa * s.float().reshape(1, -1) + bias.float()).to(torch.bfloat16)


def bench_shape(name, n, k, m, device, run, native_fp8, native_int8):
    g = torch.Generator(device=device).manual_seed(0)
    w = bl.random_weight("bf16", (n, k), device=device, generator=g)
    b = (0.02 * torch.randn(n, device=device, generator=g)).to(torch.bfloat16)
    x = torch.randn(m, k, device=device, generator=g).to(torch.bfloat16)
    q8, s8 = quantize_rowwise(w, "fp8")
    qi, si = quantize_rowwise(w, "int8")
    r: dict[str, float | str] = {"bf16": run(lambda: F.linear(x, w, b))}
    triton_ok = HAVE_TRITON and device.type == "cuda"
    if native_fp8:
        xq, sa = quantize_act_reference(x, "fp8")
        sb = s8.float().reshape(1, -1)
        r["fp8 mm"] = run(lambda: torch._scaled_mm(xq, q8.t(), scale_a=sa, scale_b=sb, bias=b,
                                                   out_dtype=torch.bfloat16, use_fast_accum=True))

        def fp8_naive():
            xq2, sa2 = quantize_act_reference(x, "fp8")
            return torch._scaled_mm(xq2, q8.t(), scale_a=sa2, scale_b=sb, bias=b,
                                    out_dtype=torch.bfloat16, use_fast_accum=True)

        r["fp8 naive"] = run(fp8_naive)
    r["fp8 fused"] = run(lambda: scaled_linear(x, q8, s8, b, "fp8"))
    if native_int8:
        xqi, _ = quantize_act_reference(x, "int8")
        r["int8 mm"] = run(lambda: torch._int_mm(xqi, qi.t()))
        r["int8 naive"] = run(lambda: naive_int8(x, qi, si, b))
    r["int8 fused"] = run(lambda: scaled_linear(x, qi, si, b, "int8"))
    r["aq naive"] = run(lambda: quantize_act_reference(x, "fp8"))
    if triton_ok:
        r["aq fused"] = run(lambda: quantize_act_triton(x, "fp8"))
    # correctness on the device: the fused quantizer vs the torch reference, fused linear vs emulation
    checks = []
    if triton_ok:
        for kind in ("fp8", "int8"):
            qa, sa_ = quantize_act_triton(x, kind)
            qb, sb_ = quantize_act_reference(x, kind)
            same = torch.equal(qa.view(torch.uint8), qb.view(torch.uint8)) and torch.equal(sa_, sb_)
            checks.append(f"{kind} codes {'==' if same else '!='}")
    for kind, q, s in (("fp8", q8, s8), ("int8", qi, si)):
        y = scaled_linear(x, q, s, b, kind).float()
        e = scaled._emulated(*quantize_act_reference(x, kind), q, s, b, x.dtype).float()
        checks.append(f"{kind} {((y - e).norm() / e.norm()).item():.1e}")
    r["check"] = ", ".join(checks)
    return r


COLS = ["bf16", "fp8 mm", "fp8 naive", "fp8 fused", "int8 mm", "int8 naive", "int8 fused", "aq naive", "aq fused"]


def cell(r, col):
    v = r.get(col)
    if v is None:
        return "-"
    if col == "bf16" or col.startswith("aq"):
        return f"{v:.3f}"
    return f"{v:.3f} ({v / r['bf16']:.2f}x)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokens", type=int, default=32760, help="video tokens M (480x832x81 frames -> 32,760)")
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="the tiny model's shapes (e.g. on the CPU)")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), device="cpu", small=True, iters=1, warmup=0)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device; use --smoke (or --device cpu --small) for a CPU check")
    shapes = linears(bl.config(args.small))
    m_video, m_text = SMALL_TOKENS if args.small else (args.tokens, bl.TEXT_TOKENS)
    run = timer(device, args.warmup, args.iters)
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    native_fp8 = cap is not None and cap >= (8, 9)
    native_int8 = cap is not None and cap >= (8, 0)
    name = torch.cuda.get_device_name(device) if cap else "cpu"
    print(f"# {name} (sm_{cap[0]}{cap[1]})" if cap else "# cpu", f"torch {torch.__version__}",
          f"triton {'yes' if HAVE_TRITON else 'no'}", f"M video={m_video} text={m_text}",
          f"fp8 path={scaled.pick_path(device, 'fp8', 5120, 5120)}",
          f"int8 path={scaled.pick_path(device, 'int8', 5120, 5120)}", sep=" | ")
    rows = []
    block: dict[str, float] = {}
    for lname, n, k, which, count in shapes:
        m = m_video if which == "video" else m_text
        r = bench_shape(lname, n, k, m, device, run, native_fp8, native_int8)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append((f"{lname} [{m}x{k}]->{n}", r))
        for col in COLS:
            if isinstance(r.get(col), float):
                block[col] = block.get(col, 0.0) + count * r[col]
    block_row = {c: v for c, v in block.items() if all(isinstance(r.get(c), float) for _, r in rows)}
    rows.append(("per block (10 linears)", block_row))
    head = ["linear"] + COLS + ["check"]
    print(bl.text_table(head, [[label] + [cell(r, c) for c in COLS] + [str(r.get("check", ""))] for label, r in rows],
                        sep=" | "))
    if "fp8 fused" in block_row:
        steps = 4 * bl.T2V_14B.num_layers  # 4 steps x 40 blocks, one forward per step (CFG-distilled)
        print(f"# linears per video (4 steps x 40 blocks): bf16 {block_row['bf16'] * steps / 1e3:.1f} s, "
              f"fp8 {block_row['fp8 fused'] * steps / 1e3:.1f} s, int8 {block_row['int8 fused'] * steps / 1e3:.1f} s")


if __name__ == "__main__":
    main()
