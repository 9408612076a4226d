"""The LoRA engine without ComfyUI: key conventions, the GPU re-encoders, merging per encoding.

Oracles: gguf's numpy quantizers (legacy types) and dequantizer, the pack's numpy K-quant encoder
(`quant/gguf_encode.py`, itself checked against gguf's dequantizer in test_gguf.py). The comparison
with ComfyUI's own LoRA loader is tests/integration/test_lora_merge.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import quants as gq

from wan4step.errors import FormatError, UnsupportedQuantError, WrongModelError
from wan4step.lora import merge_lora, parse_lora
from wan4step.lora.gguf_torch import ENCODERS, encode
from wan4step.lora.keys import expected_shapes
from wan4step.quant import gguf_encode
from wan4step.quant.gguf_dequant import dequantize
from wan4step.quant.scaled import dequantize_rowwise, quantize_rowwise
from wan4step.quant.weights import GGUF, QuantWeight
from wan4step.tiny.dit import TINY_DIT, tiny_dit_state_dict
from wan4step.wan_config import T2V_1_3B
from wan4step_dev.fixtures.lora import make_lora

LOW = 60_000  # the extractor's 1M-parameter rule scaled to the tiny model


@pytest.mark.parametrize("convention,want", [("lightx2v", "lightx2v"), ("kijai", "kijai"),
                                             ("lora_A/lora_B", "lora_A/lora_B")])
def test_each_convention_parses_to_the_weights_it_targets(convention, want):
    sd = make_lora(TINY_DIT, convention, rank=8, lowrank_min_params=LOW)
    lora = parse_lora(sd, TINY_DIT)
    assert lora.convention == want and lora.rank == 8
    shapes = expected_shapes(TINY_DIT)
    for key, t in lora.targets.items():
        assert key in shapes
        assert (t.up is None) == (t.down is None)
    if convention == "lightx2v":  # modulation differences and the 5-D patch embedding as a full difference
        assert "blocks.0.modulation" in lora.targets and "head.modulation" in lora.targets
        assert lora.targets["patch_embedding.weight"].diff.dim() == 5
    if convention == "kijai":
        assert lora.targets["blocks.1.self_attn.norm_q.weight"].diff is not None
        assert lora.targets["blocks.1.ffn.0.bias"].diff is not None
    if convention == "lora_A/lora_B":
        assert lora.targets["blocks.0.self_attn.q.weight"].scale == 0.5  # alpha = rank / 2


def test_kohya_names_map_back_to_module_paths():
    g = torch.Generator().manual_seed(0)
    sd = {"lora_unet_blocks_1_cross_attn_o.lora_up.weight": torch.randn(256, 4, generator=g),
          "lora_unet_blocks_1_cross_attn_o.lora_down.weight": torch.randn(4, 256, generator=g),
          "lora_unet_blocks_1_cross_attn_o.alpha": torch.tensor(2.0)}
    lora = parse_lora(sd, TINY_DIT)
    assert list(lora.targets) == ["blocks.1.cross_attn.o.weight"] and lora.targets["blocks.1.cross_attn.o.weight"].scale == 0.5


def test_wrong_loras_are_named():
    i2v = {"diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight": torch.zeros(256, 4),
           "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight": torch.zeros(4, 256)}
    with pytest.raises(WrongModelError, match="another Wan2.1 model"):
        parse_lora(i2v, TINY_DIT)
    small = make_lora(T2V_1_3B, "kijai", rank=4, blocks_only=True)
    with pytest.raises(WrongModelError, match="does not fit"):
        parse_lora({k: v for k, v in small.items() if k.startswith("diffusion_model.blocks.0.")}, TINY_DIT)
    with pytest.raises(UnsupportedQuantError, match="DoRA"):
        parse_lora({"diffusion_model.blocks.0.ffn.0.dora_scale": torch.ones(512, 1)}, TINY_DIT)
    with pytest.raises(FormatError, match="one half"):
        parse_lora({"diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.zeros(512, 4)}, TINY_DIT)
    with pytest.raises(FormatError, match="match no weight"):
        parse_lora({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 256)}, TINY_DIT)


# -- the device re-encoders ---------------------------------------------------------

def _weights(rows=96, cols=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    w[5] = 0.0  # an all-zero row: zero scales
    w[6] = 0.01  # a constant row
    w[7, :256] *= 40  # outliers in one super-block
    return w


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1])
def test_legacy_encoders_equal_ggufs_reference_quantizer(qtype):
    w = _weights()
    want = gq.quantize(w.numpy(), qtype)
    got = encode(w, qtype).numpy()
    assert np.array_equal(np.ascontiguousarray(want).view(np.uint8).reshape(got.shape), got)


@pytest.mark.parametrize("qtype", [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K])
def test_k_quant_encoders_match_the_numpy_encoder(qtype):
    w = _weights(seed=int(qtype))
    want = gguf_encode.encode(w.numpy(), qtype)
    got = encode(w, qtype).numpy()
    assert got.shape == want.shape
    assert (got == want).mean() > 0.999  # a sum in another order may move a scale by one ulp
    ref = gq.dequantize(want.reshape(-1), qtype).reshape(w.shape)  # gguf's own decoder, for both
    dec = gq.dequantize(got.reshape(-1), qtype).reshape(w.shape)
    err_ref = np.linalg.norm(ref - w.numpy()) / np.linalg.norm(w.numpy())
    err = np.linalg.norm(dec - w.numpy()) / np.linalg.norm(w.numpy())
    assert err == pytest.approx(err_ref, rel=0.01)


def test_every_tier_type_has_an_encoder():
    assert set(ENCODERS) == set(gguf_encode.FP16_FIELDS)


# -- merging --------------------------------------------------------------------------

def _lora(seed=1, convention="kijai"):
    return parse_lora(make_lora(TINY_DIT, convention, rank=8, seed=seed, size=0.1, lowrank_min_params=LOW), TINY_DIT)


def test_float_merge_is_linear_in_strength_and_zero_is_a_no_op():
    base = {k: v.float() for k, v in tiny_dit_state_dict().items()}
    lora = _lora()
    zero = dict(base)
    assert merge_lora(zero, lora, 0.0, device="cpu").merged == 0 and all(zero[k] is base[k] for k in base)
    one, two = dict(base), dict(base)
    merge_lora(one, lora, 1.0, device="cpu")
    merge_lora(two, lora, 2.0, device="cpu")
    for k in lora.targets:
        torch.testing.assert_close(two[k] - base[k], 2 * (one[k] - base[k]), rtol=1e-4, atol=1e-6)


def test_progress_reports_each_block_and_the_non_block_weights():
    calls = []
    merge_lora({k: v.bfloat16() for k, v in tiny_dit_state_dict().items()}, _lora(convention="lightx2v"), 1.0,
               device="cpu", progress=lambda d, n, what: calls.append((d, n, what)))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert "non-block" in calls[0][2] and "block 1" in calls[-1][2]


@pytest.mark.parametrize("kind", ["fp8", "int8"])
def test_w8a8_merge_keeps_the_rows_format_within_one_quantization(kind):
    sd = tiny_dit_state_dict()
    state = {}
    for k, v in sd.items():
        if k.endswith(("self_attn.q.weight", "ffn.0.weight")):
            q, s = quantize_rowwise(v.bfloat16(), kind)
            state[k] = QuantWeight(kind, q, tuple(v.shape), s.float())
        else:
            state[k] = v
    lora = _lora()
    exact = {k: (dequantize_rowwise(w.data, w.scale, torch.float32) if isinstance(w, QuantWeight) else w)
             for k, w in state.items()}
    merge_lora(exact, lora, 1.0, device="cpu")
    merge_lora(state, lora, 1.0, device="cpu")
    # one code step (fp8: 3 mantissa bits; int8: 1/127 of the row's peak) plus the bf16 rounding of the
    # merged weight and of the scale (LightX2V quantizes a bf16 weight and keeps bf16 scales)
    step = (2.0**-3 if kind == "fp8" else 1 / 127) + 2.0**-7
    for k, w in state.items():
        if isinstance(w, QuantWeight):
            assert w.kind == kind and w.scale.shape == (w.shape[0], 1) and w.scale.dtype == torch.float32
            got = dequantize_rowwise(w.data, w.scale, torch.float32)
            err = (got - exact[k]).abs() / exact[k].abs().amax(dim=1, keepdim=True)
            assert err.max() <= step, (k, err.max())


@pytest.mark.parametrize("tier", ["Q8_0", "Q4_K", "Q6_K"])
def test_gguf_merge_reencodes_the_same_type(tier):
    qtype = Q[tier]
    sd = tiny_dit_state_dict()
    key = "blocks.0.ffn.0.weight"
    raw = encode(sd[key], qtype)
    state = dict(sd)
    state[key] = QuantWeight(GGUF, raw, tuple(sd[key].shape), qtype=int(qtype))
    untouched = dict(state)
    merge_lora(untouched, _lora(), 0.0, device="cpu")
    assert untouched[key] is state[key]
    lora = parse_lora({k: v for k, v in make_lora(TINY_DIT, "kijai", rank=8, size=0.1).items()
                       if ".blocks.0.ffn.0.lora" in k}, TINY_DIT)
    report = merge_lora(state, lora, 1.0, device="cpu")
    merged = state[key]
    assert merged.kind == GGUF and merged.qtype == int(qtype) and merged.data.shape == raw.shape
    assert report.encodings == {f"{Q(qtype).name} -> {Q(qtype).name}": 1}
    exact = dequantize(raw, qtype, merged.shape, torch.float32) + (lora.targets[key].up.float() @ lora.targets[key].down.float())
    got = dequantize(merged.data, qtype, merged.shape, torch.float32)
    once = dequantize(encode(exact, qtype), qtype, merged.shape, torch.float32)
    assert torch.equal(got, once)  # the merged weight is the exact merge encoded once


def test_q8_0_reencoding_of_an_unchanged_weight_is_lossless():
    w = _weights()
    raw = encode(w, Q.Q8_0)
    again = encode(dequantize(raw, Q.Q8_0, tuple(w.shape), torch.float32), Q.Q8_0)
    assert torch.equal(raw, again)
