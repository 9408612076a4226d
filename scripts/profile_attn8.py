"""attn8's sm90 kernel alone, a few calls at one size: for a profiler, or a quick timing (issue 20).

    python scripts/profile_attn8.py [--size 480p] [KEY=VAL ...]
    python scripts/profile_attn8.py --smoke    # CPU, 48 tokens: the 8-bit method's torch reference only
    ncu --set full -k regex:attn8_sm90 --launch-skip 2 --launch-count 1 -o prof \\
        python scripts/profile_attn8.py --reps 1

KEY=VAL pairs go to hopper.attention_codes (ws=1, stages=3, consumer_regs=240, ...; ws defaults to 1,
the kernel attn8.CONFIGS runs on sm90). Prints the median time and the relative L2 difference to that
kernel's output on the same codes, so a variant's speed and correctness come from one run.
docs/bench/attention_h200_s8.log has the profile of the kept kernel and the variants measured with it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

from wan4step import attn8  # noqa: E402
from wan4step.attn8.reference import attn8_reference  # noqa: E402
from wan4step.attn8.structured import accuracy, sdpa_fp32, structured_qkv  # noqa: E402

FLAGS = ("ws", "half_kv_probe")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="480p")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("kw", nargs="*", help="hopper.attention_codes keywords, KEY=VAL")
    bl.add_smoke(ap)
    a = bl.smoke_or(ap.parse_args(), size="tiny")
    kw = {k: (v == "1" if k in FLAGS else int(v)) for k, v in (x.split("=", 1) for x in a.kw)}
    kw.setdefault("ws", True)
    H, L = bl.T2V_14B.num_heads, bl.SIZES[a.size].tokens()
    if a.smoke:
        q, k, v = structured_qkv(1, H, L, L, seed=7, device="cpu")
        cos, rel = accuracy(attn8_reference(q, k, v, block_n=128), sdpa_fp32(q, k, v))
        print(f"{a.size}: the 8-bit method in torch against float32 SDPA: cos {cos:.5f}, rel. L2 {rel:.4f}")
        bl.skip_cuda("attn8's sm90 kernel (Gluon)")
        return
    bl.require_cuda("profile_attn8.py")
    from wan4step.attn8 import hopper

    q, k, v = structured_qkv(1, H, L, L, seed=7, device="cuda")
    st = attn8.stats(q, k, v)
    codes = attn8.quantize(q, k, v, st, hopper.BLOCK_N, True, key_order=True)
    run = lambda: hopper.attention_codes(*codes, st[3], st[4], 1, H, L, L, q.dtype, **kw)  # noqa: E731
    kept = hopper.attention_codes(*codes, st[3], st[4], 1, H, L, L, torch.float32, ws=True).float()
    rel = ((run().float() - kept).norm() / kept.norm()).item()
    ms = bl.median_ms(run, torch.device("cuda"), a.reps, 2)
    print(f"{a.size} {kw}: {ms:.2f} ms  (rel. L2 to the kept kernel in float32: {rel:.2e})", flush=True)


if __name__ == "__main__":
    main()
