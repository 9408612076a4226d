"""GGUF: torch decoders vs gguf's numpy reference, our encoders, the file reader/writer, errors.

The oracle is `gguf.quants.dequantize` (numpy, maintained with llama.cpp); nothing
here checks our code against itself.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wan4step.errors import FormatError, UnsupportedQuantError, WrongModelError
from wan4step.formats import load_dit
from wan4step.formats.gguf_file import FIX_5D_FILE, TIERS, read_gguf, tier_types, write_gguf
from wan4step.quant import gguf_matmul
from wan4step.quant.gguf_dequant import SUPPORTED_TYPES, dequantize, row_bytes
from wan4step.quant.gguf_encode import encode, random_raw
from wan4step.quant.gguf_matmul import gguf_linear
from wan4step.quant.linear import QuantLinear
from wan4step.quant.weights import GGUF, QuantWeight
from wan4step.tiny.dit import TINY_DIT, TINY_VACE, TINY_VACE_DIT, tiny_dit_state_dict, tiny_vace_state_dict
from wan4step.wan_config import expected_keys

Q = gguf.GGMLQuantizationType
ALL = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
K_TYPES = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]

# relative RMS error of our encodings of Gaussian weights (measured ~0.75x these bounds)
REL_ERR = {
    Q.F32: 1e-7, Q.F16: 1e-3, Q.BF16: 4e-3, Q.Q8_0: 0.008, Q.Q6_K: 0.025, Q.Q5_1: 0.05, Q.Q5_K: 0.05,
    Q.Q5_0: 0.055, Q.Q4_1: 0.1, Q.Q4_K: 0.095, Q.Q4_0: 0.11, Q.Q3_K: 0.19, Q.Q2_K: 0.35,
}


def _ref(raw: np.ndarray, qtype) -> np.ndarray:
    return gguf.quants.dequantize(raw, Q(qtype))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.int32)


def _weights(rows=16, cols=512, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, cols)) / 32).astype(np.float32)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- decoders -----------------------------------------------------------------------

def test_supported_types():
    assert SUPPORTED_TYPES == {int(t) for t in ALL}


@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_dequant_bit_exact_on_our_encodings(qtype):
    x = _weights()
    raw = encode(x, qtype)
    assert raw.dtype == np.uint8 and raw.shape == (16, row_bytes(qtype, x.shape))
    ref = _ref(raw, qtype).reshape(x.shape)
    out = dequantize(torch.from_numpy(raw), qtype, x.shape, torch.float32).numpy()
    np.testing.assert_array_equal(_bits(out), _bits(ref))
    # flat bytes decode the same
    flat = dequantize(torch.from_numpy(raw.reshape(-1)), qtype, x.shape, torch.float32).numpy()
    np.testing.assert_array_equal(_bits(flat), _bits(ref))


@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_dequant_bit_exact_on_random_bytes(qtype):
    """Random quant bits (every pattern is a valid encoding) with finite fp16 scales."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    shape = (12, block * 8)
    raw = random_raw(qtype, shape, generator=torch.Generator().manual_seed(int(qtype)))
    ref = _ref(raw.numpy(), qtype).reshape(shape)
    assert np.isfinite(ref).all()
    out = dequantize(raw, qtype, shape, torch.float32).numpy()
    np.testing.assert_array_equal(_bits(out), _bits(ref))


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q8_0, Q.Q3_K, Q.F16, Q.BF16], ids=lambda t: t.name)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dequant_casts_the_float32_result(qtype, dtype):
    shape = (4, 512)
    raw = random_raw(qtype, shape, generator=torch.Generator().manual_seed(7))
    want = torch.from_numpy(_ref(raw.numpy(), qtype).reshape(shape)).to(dtype)
    got = dequantize(raw, qtype, shape, dtype)
    assert got.dtype == dtype and torch.equal(got.view(torch.int16), want.view(torch.int16))


def test_dequant_rejects_wrong_byte_count():
    raw = random_raw(Q.Q4_K, (2, 256))
    with pytest.raises(FormatError, match="wrong number of bytes"):
        dequantize(raw[:1], Q.Q4_K, (2, 256), torch.float32)


@pytest.mark.parametrize("qtype", [Q.IQ4_XS, Q.IQ2_XXS, Q.TQ1_0, Q.MXFP4, Q.Q8_1], ids=lambda t: t.name)
def test_unsupported_types_are_named(qtype):
    with pytest.raises(UnsupportedQuantError) as e:
        dequantize(torch.zeros(1024, dtype=torch.uint8), qtype, (1, 256), torch.float32)
    msg = str(e.value)
    assert qtype.name in msg and "Q4_K_S/M" in msg and "QuantStack" in msg


def test_row_bytes():
    assert row_bytes(Q.Q4_K, (13824, 5120)) == 20 * 144
    assert row_bytes(Q.Q6_K, (5120, 13824)) == 54 * 210
    assert row_bytes(Q.Q8_0, (5120, 5120)) == 160 * 34
    assert row_bytes(Q.F16, (3, 100)) == 200
    with pytest.raises(FormatError, match="multiple of 256"):
        row_bytes(Q.Q4_K, (4, 100))


# -- encoders -----------------------------------------------------------------------

@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_encoder_error_matches_bit_width(qtype):
    x = _weights(64, 1024, seed=1)
    err = _rel(_ref(encode(x, qtype), qtype).reshape(x.shape), x)
    assert err <= REL_ERR[qtype]
    if qtype not in (Q.F32, Q.F16):
        assert err >= REL_ERR[qtype] / 3  # really quantized at that width, not stored wider


def test_k_quants_beat_legacy_types_of_the_same_size():
    """Q4_K and Q4_0 are both 4.5 bits/weight, Q5_K and Q5_0 5.5: the sub-block scales must pay off."""
    x = _weights(64, 1024, seed=2)
    err = {t: _rel(_ref(encode(x, t), t).reshape(x.shape), x) for t in (Q.Q4_0, Q.Q4_K, Q.Q5_0, Q.Q5_K)}
    assert err[Q.Q4_K] < err[Q.Q4_0] and err[Q.Q5_K] < err[Q.Q5_0]
    ladder = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_0]
    errs = [_rel(_ref(encode(x, t), t).reshape(x.shape), x) for t in ladder]
    assert errs == sorted(errs, reverse=True)


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_k_quant_sub_blocks_get_their_own_scale_and_min(qtype):
    """Sub-blocks 8x apart in magnitude, most with a negative offset: a shared scale (or no min)
    would leave the small ones with errors far above the bit width's."""
    rng = np.random.default_rng(3)
    sub = 16 if qtype in (Q.Q2_K, Q.Q3_K, Q.Q6_K) else 32
    g = rng.standard_normal((32, 1024 // sub, sub))
    mag = 2.0 ** rng.uniform(-3, 0, (32, 1024 // sub, 1))
    x = (g * mag + rng.uniform(-1.0, 0.25, g.shape[:2] + (1,)) * mag).reshape(32, 1024).astype(np.float32) / 32
    y = _ref(encode(x, qtype), qtype).reshape(x.shape)
    e = (y - x).reshape(32, -1, sub)
    per_sub = np.linalg.norm(e, axis=-1) / np.linalg.norm(x.reshape(32, -1, sub), axis=-1)
    assert np.median(per_sub) <= REL_ERR[qtype]


# -- files --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    return tiny_dit_state_dict()


def _base_type(tier: str):
    return Q(TIERS[tier][0])


@pytest.mark.parametrize("tier", ["Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q5_1", "Q5_K_S", "Q6_K", "Q8_0", "F16", "BF16"])
def test_write_read_round_trip(tmp_path, tiny_sd, tier):
    path = write_gguf(tmp_path / f"tiny-{tier}.gguf", tiny_sd, tier)
    sd = read_gguf(path)
    assert sorted(sd) == sorted(expected_keys(TINY_DIT))
    want_types = tier_types({k: tuple(v.shape) for k, v in tiny_sd.items()}, tier)
    for k, v in sd.items():
        orig = tiny_sd[k]
        assert tuple(v.shape) == tuple(orig.shape), k
        if isinstance(v, QuantWeight):
            assert v.kind == GGUF and v.qtype == want_types[k]
            assert v.data.dtype == torch.uint8 and v.data.shape == (orig.shape[0], row_bytes(v.qtype, orig.shape))
            w = v.dequantize(torch.float32)
            # bit-exact vs the reference decoder of the stored bytes, close to the original weights
            np.testing.assert_array_equal(_bits(w.numpy()), _bits(_ref(v.data.numpy(), v.qtype)))
            assert _rel(w.numpy(), orig.numpy()) <= REL_ERR[Q(v.qtype)] * 1.1, k
        else:
            assert {torch.float32: Q.F32, torch.float16: Q.F16, torch.bfloat16: Q.BF16}[v.dtype] == want_types[k]
            assert _rel(v.float().numpy(), orig.numpy()) <= REL_ERR[Q(want_types[k])], k
    reader = gguf.GGUFReader(path)
    assert reader.get_field("general.architecture").contents() == "wan"
    assert reader.get_field("general.file_type").contents() == int(TIERS[tier][1])


def test_tier_type_mixing(tiny_sd):
    shapes = {k: tuple(v.shape) for k, v in tiny_sd.items()}
    t = {k: Q(v) for k, v in tier_types(shapes, "Q4_K_M").items()}
    for i in range(TINY_DIT.num_layers):
        b = f"blocks.{i}."
        assert t[b + "self_attn.v.weight"] == t[b + "cross_attn.v.weight"] == t[b + "ffn.2.weight"] == Q.Q6_K
        assert t[b + "self_attn.q.weight"] == t[b + "ffn.0.weight"] == t[b + "cross_attn.o.weight"] == Q.Q4_K
        assert t[b + "self_attn.q.bias"] == t[b + "norm3.weight"] == t[b + "modulation"] == Q.F32
    assert t["patch_embedding.weight"] == t["head.modulation"] == Q.F32
    assert t["text_embedding.0.weight"] == t["head.head.weight"] == Q.F16
    m = {k: Q(v) for k, v in tier_types(shapes, "Q3_K_M").items()}
    v_types = [m[k] for k in sorted(m) if k.endswith(".v.weight")]
    assert v_types == [Q.Q5_K, Q.Q5_K, Q.Q4_K, Q.Q4_K]  # first two in file order get more bits
    assert {Q(v) for v in tier_types(shapes, "Q8_0").values()} == {Q.Q8_0, Q.F16, Q.F32}
    assert Q(tier_types(shapes, "BF16")["text_embedding.0.weight"]) == Q.BF16


def test_write_refuses_a_non_wan_state_dict(tmp_path):
    with pytest.raises(WrongModelError):
        write_gguf(tmp_path / "x.gguf", {"layers.0.weight": torch.zeros(4, 4)}, "Q8_0")


def _raw_gguf(path: Path, arch: str | None, tensors: dict[str, tuple[np.ndarray, int | None]]) -> Path:
    """A GGUF written with gguf's writer directly, for files our writer would refuse to make."""
    w = gguf.GGUFWriter(path, arch=arch or "x")
    if arch is None:
        w.kv_data[0].pop("general.architecture")
    for name, (arr, raw_dtype) in tensors.items():
        w.add_tensor(name, arr, raw_dtype=None if raw_dtype is None else Q(raw_dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _plain(sd, rename=lambda k: k, skip=()) -> dict[str, tuple[np.ndarray, None]]:
    return {rename(k): (v.numpy(), None) for k, v in sd.items() if k not in skip}


def test_compat_file_without_arch_with_prefix_and_2d_modulation(tmp_path, tiny_sd):
    tensors = _plain(tiny_sd, rename=lambda k: "model.diffusion_model." + k)
    tensors["model.diffusion_model.blocks.0.modulation"] = (tiny_sd["blocks.0.modulation"][0].numpy(), None)
    tensors["first_stage_model.decoder.conv.weight"] = (np.zeros((4, 4), np.float32), None)
    sd = read_gguf(_raw_gguf(tmp_path / "compat.gguf", None, tensors))
    assert sorted(sd) == sorted(expected_keys(TINY_DIT))
    assert sd["blocks.0.modulation"].shape == (1, 6, TINY_DIT.dim)
    assert torch.equal(sd["patch_embedding.weight"], tiny_sd["patch_embedding.weight"])


def test_loading_maps_the_file_instead_of_reading_it(tmp_path, tiny_sd):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc/self/maps (Linux)")
    path = write_gguf(tmp_path / "mapped.gguf", tiny_sd, "Q4_K_M").resolve()
    sd = read_gguf(path)
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((lo, hi))
    assert ranges, "the file is not memory-mapped"
    for k, v in sd.items():
        t = v.data if isinstance(v, QuantWeight) else v
        p = t.data_ptr()
        assert any(lo <= p and p + t.numel() * t.element_size() <= hi for lo, hi in ranges), f"{k} was copied"


# -- errors -------------------------------------------------------------------------

def test_not_a_gguf(tmp_path):
    from safetensors.torch import save_file

    st = tmp_path / "model.gguf"  # the name lies; the content decides
    save_file({"a": torch.zeros(2)}, str(st))
    with pytest.raises(FormatError, match="not a GGUF file") as e:
        read_gguf(st)
    assert str(st) in str(e.value) and "safetensors" in str(e.value)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        read_gguf(empty)
    with pytest.raises(FormatError, match="not found"):
        read_gguf(tmp_path / "missing.gguf")


@pytest.mark.parametrize("keep", [0.6, 0.999, 0.01])
def test_truncated_file(tmp_path, tiny_sd, keep):
    path = write_gguf(tmp_path / "full.gguf", tiny_sd, "Q4_K_M")
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(FormatError, match="truncated") as e:
        read_gguf(cut)
    assert str(cut) in str(e.value) and "download the file again" in str(e.value)


@pytest.mark.parametrize(
    "arch, hint",
    [("flux", "Wan2.1 T2V-14B GGUF"), ("llama", "UMT5 Loader"), ("t5encoder", "UMT5 Loader")],
)
def test_other_architecture(tmp_path, arch, hint):
    path = _raw_gguf(tmp_path / f"{arch}.gguf", arch, {"double_blocks.0.img_attn.proj.weight": (np.zeros((4, 32), np.float32), None)})
    with pytest.raises(WrongModelError) as e:
        read_gguf(path)
    assert f"'{arch}'" in str(e.value) and hint in str(e.value) and str(path) in str(e.value)


def test_wan_arch_but_not_a_wan_dit(tmp_path):
    path = _raw_gguf(tmp_path / "odd.gguf", "wan", {"token_embd.weight": (np.zeros((8, 32), np.float32), None)})
    with pytest.raises(WrongModelError, match="not a Wan2.1 diffusion model"):
        read_gguf(path)


def test_i2v_model_is_named(tmp_path, tiny_sd):
    tensors = _plain(tiny_sd)
    tensors["img_emb.proj.1.weight"] = (np.zeros((256, 1280), np.float32), None)
    with pytest.raises(WrongModelError, match="I2V"):
        read_gguf(_raw_gguf(tmp_path / "i2v.gguf", "wan", tensors))


def test_5d_patch_embedding_inline_as_published(tmp_path, tiny_sd):
    path = write_gguf(tmp_path / "inline.gguf", tiny_sd, "Q8_0")
    t = {t.name: t for t in gguf.GGUFReader(path).tensors}["patch_embedding.weight"]
    assert Q(t.tensor_type) == Q.F32 and len(t.shape) == 5  # what fix_5d_tensors.py appends
    assert torch.equal(read_gguf(path)["patch_embedding.weight"], tiny_sd["patch_embedding.weight"])


def test_missing_5d_patch_embedding_is_read_from_convert_fix_file(tmp_path, tiny_sd):
    path = _raw_gguf(tmp_path / "no5d.gguf", "wan", _plain(tiny_sd, skip={"patch_embedding.weight"}))
    with pytest.raises(FormatError, match=f"no patch_embedding.weight.*{FIX_5D_FILE}") as e:
        read_gguf(path)
    assert "fix_5d_tensors.py" not in str(e.value)  # that script crashes with the current gguf/numpy
    import safetensors.torch

    safetensors.torch.save_file({"patch_embedding.weight": tiny_sd["patch_embedding.weight"][:128].contiguous()},
                                str(tmp_path / FIX_5D_FILE))
    with pytest.raises(FormatError, match="does not hold this model's patch_embedding.weight"):
        read_gguf(path)  # another model's fix file
    safetensors.torch.save_file({"patch_embedding.weight": tiny_sd["patch_embedding.weight"]}, str(tmp_path / FIX_5D_FILE))
    assert torch.equal(read_gguf(path)["patch_embedding.weight"], tiny_sd["patch_embedding.weight"])


def test_write_sidecar_is_convert_py_layout(tmp_path):
    vsd = tiny_vace_state_dict()
    path = write_gguf(tmp_path / "raw.gguf", vsd, "F16", five_d="sidecar")
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert "patch_embedding.weight" not in names and "vace_patch_embedding.weight" not in names
    import safetensors.torch

    fix = safetensors.torch.load_file(str(tmp_path / FIX_5D_FILE))
    assert set(fix) == {"patch_embedding.weight", "vace_patch_embedding.weight"}
    assert fix["vace_patch_embedding.weight"].shape == (256, TINY_VACE.in_dim, 1, 2, 2)
    assert set(load_dit(path, "vace").state) == set(vsd)
    assert "vace_patch_embedding.weight" not in load_dit(path).state


# -- VACE-merged files (QuantStack's ..._StepCfgDistill_VACE-<TIER>.gguf) -----------------

def test_vace_gguf_tier_rule_and_both_modes(tmp_path):
    vsd = tiny_vace_state_dict()
    path = write_gguf(tmp_path / "vace-Q4_K_M.gguf", vsd, "Q4_K_M")
    types = {t.name: Q(t.tensor_type) for t in gguf.GGUFReader(path).tensors}
    # the lcpp patch's rules are by name: VACE blocks quantized like main blocks, the VACE conv never
    assert types["vace_blocks.1.self_attn.v.weight"] == types["vace_blocks.0.ffn.2.weight"] == Q.Q6_K
    assert types["vace_blocks.0.before_proj.weight"] == types["vace_blocks.1.after_proj.weight"] == Q.Q4_K
    assert types["vace_patch_embedding.weight"] == types["vace_blocks.0.after_proj.bias"] == Q.F32
    t2v, vace = load_dit(path), load_dit(path, "vace")
    assert set(t2v.state) == set(expected_keys(TINY_VACE_DIT))
    assert set(vace.state) == set(expected_keys(TINY_VACE_DIT, TINY_VACE)) and vace.vace == TINY_VACE
    vace_bytes = sum(t.n_bytes for t in gguf.GGUFReader(path).tensors if t.name.startswith("vace_"))
    assert t2v.skipped_bytes == vace_bytes and vace.stored_bytes == t2v.stored_bytes + vace_bytes
    with pytest.raises(WrongModelError, match="mode 'vace' needs a VACE-merged model"):
        load_dit(write_gguf(tmp_path / "plain.gguf", tiny_dit_state_dict(TINY_VACE_DIT), "Q8_0"), "vace")


def test_t2v_mode_never_touches_the_vace_tensors(tmp_path):
    """VACE tensors stored in a type the pack cannot decode: t2v mode never looks at them (not even at
    their type), vace mode refuses naming one."""
    vsd = tiny_vace_state_dict()
    tensors = {}
    for k, v in vsd.items():
        if k.startswith("vace_blocks.") and v.dim() == 2:  # garbage bytes, IQ4_XS type
            rows, cols = v.shape
            tensors[k] = (np.full((rows, cols // 256 * gguf.GGML_QUANT_SIZES[Q.IQ4_XS][1]), 0xFF, np.uint8), Q.IQ4_XS)
        else:
            tensors[k] = (v.numpy(), None)
    path = _raw_gguf(tmp_path / "corrupt_vace.gguf", "wan", tensors)
    loaded = load_dit(path)
    assert loaded.vace is None and loaded.skipped_bytes > 0
    assert not any(k.startswith("vace_") for k in loaded.state)
    with pytest.raises(UnsupportedQuantError, match=r"IQ4_XS.*vace_blocks\.|vace_blocks\..*IQ4_XS"):
        load_dit(path, "vace")


def test_missing_block_in_a_gguf_is_named(tmp_path):
    sd = {k: v for k, v in tiny_dit_state_dict(TINY_VACE_DIT).items() if not k.startswith("blocks.2.")}
    path = _raw_gguf(tmp_path / "gap.gguf", "wan", _plain(sd))
    with pytest.raises(FormatError, match=r"1 of 4 blocks are missing: blocks\.2") as e:
        load_dit(path)
    assert "gap.gguf" in str(e.value)


def test_inconsistent_linear_shape_is_refused_at_load(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    sd["blocks.1.ffn.2.weight"] = tiny_sd["blocks.1.ffn.2.weight"].t().contiguous()  # [512, 256] for [256, 512]
    path = write_gguf(tmp_path / "bad-shape.gguf", sd, "Q8_0")
    with pytest.raises(FormatError, match=r"'blocks\.1\.ffn\.2\.weight' has the wrong shape") as e:
        load_dit(path)
    assert "[256, 512]" in str(e.value) and "[512, 256]" in str(e.value)


def test_unsupported_quant_type_in_file(tmp_path, tiny_sd):
    tensors = _plain(tiny_sd)
    name = "blocks.1.ffn.0.weight"
    rows, cols = tiny_sd[name].shape
    tensors[name] = (np.zeros((rows, cols // 256 * gguf.GGML_QUANT_SIZES[Q.IQ4_XS][1]), np.uint8), Q.IQ4_XS)
    path = _raw_gguf(tmp_path / "iq.gguf", "wan", tensors)
    with pytest.raises(UnsupportedQuantError) as e:
        read_gguf(path)
    msg = str(e.value)
    assert "IQ4_XS" in msg and name in msg and str(path) in msg and "Q4_K_S/M" in msg


# -- compute ------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K, Q.Q5_0, Q.Q3_K], ids=lambda t: t.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quant_linear_with_gguf_weight(qtype, dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 512, generator=g) / 512**0.5
    b = torch.randn(64, generator=g) * 0.02
    raw = encode(w, qtype)
    lin = QuantLinear(512, 64)
    lin.load_state_dict({"weight": QuantWeight(GGUF, torch.from_numpy(raw), (64, 512), qtype=int(qtype)), "bias": b})
    assert lin.qkind == GGUF and lin.logical_shape == (64, 512)
    x = torch.randn(3, 5, 512, generator=g).to(dtype)
    ref_w = torch.from_numpy(_ref(raw, qtype).reshape(64, 512)).to(dtype)
    want = F.linear(x, ref_w, b.to(dtype))
    assert torch.equal(lin(x), want)
    assert torch.equal(gguf_linear(x, torch.from_numpy(raw), qtype, (64, 512), b.to(dtype)), want)
    assert re.search(qtype.name, repr(lin))


def test_triton_decoders_bit_exact_in_interpreter(monkeypatch):
    """The one-pass CUDA decoders, run by Triton's CPU interpreter on a tiny tensor with a ragged tail."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    name = "wan4step.quant.gguf_triton"
    sys.modules.pop(name, None)
    try:
        mod = importlib.import_module(name)
        for qtype in (Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K):
            assert int(qtype) in mod.TRITON_DECODERS
            shape = (3, 512)  # 6 K-blocks (kernels take 8 per program), 48 Q8_0 blocks (64)
            raw = random_raw(qtype, shape, generator=torch.Generator().manual_seed(int(qtype)))
            for dtype in (torch.bfloat16, torch.float16):
                got = mod.TRITON_DECODERS[int(qtype)](raw, shape, dtype)
                want = torch.from_numpy(_ref(raw.numpy(), qtype).reshape(shape)).to(dtype)
                assert torch.equal(got.view(torch.int16), want.view(torch.int16)), (qtype.name, dtype)
            assert gguf_matmul._self_check(int(qtype), mod.TRITON_DECODERS[int(qtype)], torch.device("cpu"))
    finally:
        sys.modules.pop(name, None)


def test_a_decoder_that_disagrees_is_not_used(caplog):
    """The first CUDA use of each Triton decoder is checked against the torch one; a mismatch falls back."""
    wrong = lambda data, shape, dtype: torch.zeros(shape, dtype=dtype)  # noqa: E731
    right = lambda data, shape, dtype: dequantize(data, Q.Q4_K, shape, dtype)  # noqa: E731
    with caplog.at_level("WARNING", logger="wan4step"):
        assert not gguf_matmul._self_check(int(Q.Q4_K), wrong, torch.device("cpu"))
    assert "Q4_K" in caplog.text and "torch decoder" in caplog.text
    assert gguf_matmul._self_check(int(Q.Q4_K), right, torch.device("cpu"))
