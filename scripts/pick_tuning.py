"""Print WAN4STEP_TUNING for the fastest gelu_quant configuration in a bench_fused.py log.

    python scripts/pick_tuning.py fused.log   ->   gelu_quant=16,gelu_quant_programs_per_sm=1
"""

from __future__ import annotations

import re
import sys


def main() -> None:
    best = None
    for line in open(sys.argv[1]):
        m = re.match(r"gelu_quant\s+warps (\d+)(?: persist (\d+)/SM)?\s+([\d.]+) ms", line)
        if m and (best is None or float(m[3]) < best[2]):
            best = (int(m[1]), int(m[2] or 0), float(m[3]))
    if best:
        print(f"gelu_quant={best[0]},gelu_quant_programs_per_sm={best[1]}")


if __name__ == "__main__":
    main()
