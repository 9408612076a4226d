"""LightX2V's current release (lightx2v/Wan2.1-Distill-Models): single files and *_split/ folders.

Fixtures from `wan4step_dev.fixtures.layouts` (converter.py's conventions, cited there). Each
loads through the pack into W8A8 QuantWeights (fp8/int8 codes + per-row scales), its
decode is exactly `codes * scale`, and the single file and the split folder of one
kind give the same tensors.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from wan4step.errors import FormatError
from wan4step.formats import load_dit
from wan4step.quant.weights import FP8, INT8, QuantWeight
from wan4step.tiny.dit import TINY_DIT, tiny_dit_state_dict, tiny_vace_state_dict
from wan4step.wan_config import BLOCK_LINEARS
from wan4step_dev.fixtures.layouts import (
    LIGHTX2V_KINDS,
    LIGHTX2V_T2V_FILES,
    write_lightx2v_single,
    write_lightx2v_split,
)

QKIND = {"fp8": FP8, "fp8_comfyui": FP8, "int8": INT8}


@pytest.fixture(scope="module")
def sd():
    return tiny_dit_state_dict()


@pytest.fixture(scope="module")
def files(tmp_path_factory, sd):
    d = tmp_path_factory.mktemp("lx2v_release")
    out = {}
    for kind in LIGHTX2V_KINDS:
        out[kind] = write_lightx2v_single(d / LIGHTX2V_T2V_FILES[kind], sd, kind)
        out[kind + "_split"] = write_lightx2v_split(d / LIGHTX2V_T2V_FILES[kind].replace(".safetensors", "_split"), sd, kind)
    return out


def _read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_single_files_carry_the_converters_keys_and_dtypes(files):
    lin = "blocks.1.ffn.0"
    bf16 = _read(files["bf16"])
    assert all(v.dtype == torch.bfloat16 for v in bf16.values()) and "scaled_fp8" not in bf16
    for kind, qdtype, nl in (("fp8", torch.float8_e4m3fn, torch.bfloat16), ("int8", torch.int8, torch.float32)):
        t = _read(files[kind])
        assert t[lin + ".weight"].dtype == qdtype
        assert t[lin + ".weight_scale"].shape == (512, 1) and t[lin + ".weight_scale"].dtype == torch.bfloat16
        assert t["blocks.1.norm3.weight"].dtype == nl and t["text_embedding.0.weight"].dtype == nl  # not targets
        assert "scaled_fp8" not in t and not any(k.endswith(".scale_weight") for k in t)
        assert sum(k.endswith(".weight_scale") for k in t) == 10 * TINY_DIT.num_layers
    c = _read(files["fp8_comfyui"])
    assert c["scaled_fp8"].dtype == torch.float8_e4m3fn and c["scaled_fp8"].shape == (2,)
    assert c[lin + ".weight"].dtype == torch.float8_e4m3fn and c[lin + ".scale_weight"].shape == ()
    assert not any(k.endswith(".weight_scale") for k in c)


@pytest.mark.parametrize("kind", LIGHTX2V_KINDS)
def test_each_file_loads_as_w8a8_and_matches_its_split_folder(files, sd, kind):
    single, split = load_dit(files[kind]), load_dit(files[kind + "_split"])
    assert single.format.startswith("safetensors") and split.format.startswith("lightx2v")
    assert single.state.keys() == split.state.keys() == sd.keys()
    raw = _read(files[kind])
    for key, v in single.state.items():
        w = split.state[key]
        linear = key.endswith(tuple(f".{n}.weight" for n in BLOCK_LINEARS)) and key.startswith("blocks.")
        if kind == "bf16" or not linear:
            assert not isinstance(v, QuantWeight) and torch.equal(v, w), key
            continue
        assert isinstance(v, QuantWeight) and v.kind == QKIND[kind], key
        assert v.scale.shape == (v.shape[0], 1) and v.scale.dtype == torch.float32
        assert torch.equal(v.data, w.data) and torch.equal(v.scale, w.scale), key
        scale = raw[key + "_scale"] if kind != "fp8_comfyui" else raw[key.replace(".weight", ".scale_weight")]
        # the decode is exactly codes * the stored scale (per row, or the one per-tensor value on every row)
        want = raw[key].float() * scale.float().reshape(-1, 1) if scale.dim() else raw[key].float() * scale.float()
        assert torch.equal(v.dequantize(torch.float32), want), key
        assert (v.dequantize(torch.float32) - sd[key]).norm() / sd[key].norm() < 0.05


def test_per_tensor_scale_is_one_value_on_every_row(files):
    v = load_dit(files["fp8_comfyui"]).state["blocks.0.self_attn.q.weight"]
    assert torch.unique(v.scale).numel() == 1


def test_bad_scale_shape_is_named(tmp_path, sd):
    from safetensors.torch import save_file

    t = _read(write_lightx2v_single(tmp_path / "x.safetensors", sd, "int8"))
    t["blocks.0.ffn.2.weight_scale"] = t["blocks.0.ffn.2.weight_scale"][:7]
    save_file(t, str(tmp_path / "bad.safetensors"))
    with pytest.raises(FormatError, match="blocks.0.ffn.2.weight_scale.*does not match") as e:
        load_dit(tmp_path / "bad.safetensors")
    assert "bad.safetensors" in str(e.value)


def test_split_folder_of_a_vace_model_puts_vace_blocks_in_block_files(tmp_path):
    vsd = tiny_vace_state_dict()
    root = write_lightx2v_split(tmp_path / "vace_split", vsd, "int8")
    with safe_open(str(root / "block_1.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "vace_blocks.1.after_proj.weight" in keys and "blocks.1.ffn.0.weight" in keys  # converter's re.search grouping
    with safe_open(str(root / "block_1.safetensors"), "pt") as f:
        assert f.get_tensor("vace_blocks.1.self_attn.q.weight").dtype == torch.int8  # key part [2] is a target
        assert f.get_tensor("vace_blocks.1.after_proj.weight").dtype == torch.float32  # ... "after_proj" is not
    t2v, vace = load_dit(root), load_dit(root, "vace")
    assert not any(k.startswith("vace_") for k in t2v.state) and t2v.skipped_bytes > 0
    assert vace.vace is not None and vace.vace.num_layers == 2
