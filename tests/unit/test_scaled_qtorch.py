"""FP8 weight codes vs qtorch itself, the library LightX2V's converter rounds with.

Separate from test_scaled.py because importing qtorch compiles its C++ extension
(about 40 s on a 2-core machine, once; torch caches it in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import pytest
import torch

from wan4step.quant.scaled import quantize_rowwise

qtorch_quant = pytest.importorskip("qtorch.quant")


def converter_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LightX2V tools/convert quant.py QuantWeightFP8 steps, with the real qtorch rounding."""
    amax = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-5)
    scale = amax / 448.0
    scaled = torch.clip(w / scale, -448.0, 448.0)
    q = qtorch_quant.float_quantize(scaled.float().contiguous(), 4, 3, rounding="nearest")
    return q.to(torch.float8_e4m3fn), scale


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fp8_codes_equal_qtorch(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(256, 512, generator=g) * torch.logspace(-3, 1, 256).reshape(-1, 1)
    w[3, 5] = 0.0
    w[7] *= 1e-4  # rows whose small entries fall into the e4m3 subnormal range
    w = w.to(dtype)
    q, scale = quantize_rowwise(w, "fp8")
    q_ref, scale_ref = converter_fp8(w)
    assert torch.equal(scale, scale_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


def test_every_bf16_value_rounds_like_qtorch():
    from wan4step.quant.scaled import _qtorch_e4m3_nearest

    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).float()
    every = every[torch.isfinite(every) & (every.abs() <= 448)].contiguous()
    got = _qtorch_e4m3_nearest(every)
    want = qtorch_quant.float_quantize(every, 4, 3, rounding="nearest")
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
