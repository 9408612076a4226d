"""The fused conv bias (+ shortcut) pass (wan4step/vae/conv_bias.py): its Triton kernel under the
interpreter against float32 torch, and the eager path every CPU decode takes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from wan4step.vae import conv_bias

REPO = Path(__file__).resolve().parents[2]

_INTERP = textwrap.dedent(
    """
    import os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch
    from wan4step.vae import conv_bias as cb

    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last_3d
    # channel counts that do and do not divide the block; sizes that leave a partial last block
    for c, shape, dtype in [(96, (2, 3, 5), torch.float16), (384, (1, 4, 7), torch.float16), (3, (2, 2, 9), torch.float32)]:
        y = torch.randn(1, c, *shape, generator=g).to(dtype).contiguous(memory_format=cl)
        b = torch.randn(c, generator=g).to(dtype)
        r = torch.randn(1, c, *shape, generator=g).to(dtype).contiguous(memory_format=cl)
        for res in (None, r):
            want = y.float() + b.float().view(1, -1, 1, 1, 1) + (0 if res is None else res.float())
            got = cb._triton(y.clone(memory_format=cl), b, res)
            assert got.dtype == dtype and got.is_contiguous(memory_format=cl)
            # one rounding of the float32 sum: within half an ulp of the output dtype
            tol = 2**-11 if dtype == torch.float16 else 1e-6
            err = ((got.float() - want).abs() / want.abs().clamp_min(1)).max().item()
            assert err <= tol, (c, shape, dtype, res is None, err)
    print("ok")
    """
)


def test_bias_kernel_under_interpreter_matches_float32():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", _INTERP], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_cpu_tensors_take_torch_adds_in_place():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(1, 8, 2, 3, 4, generator=g)
    b, r = torch.randn(8, generator=g), torch.randn(1, 8, 2, 3, 4, generator=g)
    want = y + b.view(1, -1, 1, 1, 1) + r
    out = conv_bias.add_(y, b, r)
    assert out.data_ptr() == y.data_ptr() and torch.equal(out, want)
    assert torch.equal(conv_bias.add_(y.clone(), None, None), y)
