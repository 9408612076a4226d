"""LightX2V distill_fp8/ / distill_int8/ block folders: layout, round trip, errors, lazy reading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from wan4step.errors import FormatError, MissingFileError, WrongModelError
from wan4step.formats.lightx2v_dir import (
    INDEX,
    NON_BLOCK,
    is_lightx2v_dir,
    read_lightx2v_dir,
    write_lightx2v_dir,
)
from wan4step.quant.scaled import quantize_rowwise
from wan4step.quant.weights import FP8, INT8, QuantWeight
from wan4step.tiny.dit import TINY_DIT, tiny_dit_state_dict
from wan4step.wan_config import BLOCK_LINEARS, WanConfig, expected_keys


def release_like(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released checkpoints quantize bf16 weights (so scales are bf16)."""
    return {k: v.to(torch.bfloat16) if v.dim() == 2 else v for k, v in sd.items()}


@pytest.fixture(scope="module")
def tiny_sd():
    return release_like(tiny_dit_state_dict())


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tiny_sd):
    root = tmp_path_factory.mktemp("lx2v")
    return {kind: write_lightx2v_dir(root / kind, tiny_sd, kind) for kind in (FP8, INT8)}


def fresh(dirs, kind, tmp_path) -> Path:
    dst = tmp_path / kind
    shutil.copytree(dirs[kind], dst)
    return dst


@pytest.mark.parametrize("kind", [FP8, INT8])
def test_layout_matches_the_converter(dirs, kind):
    root = dirs[kind]
    names = sorted(p.name for p in root.iterdir())
    assert names == ["block_0.safetensors", "block_1.safetensors", "config.json", INDEX, NON_BLOCK]
    qdtype = torch.float8_e4m3fn if kind == FP8 else torch.int8
    with safe_open(str(root / "block_1.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert all(k.startswith("blocks.1.") for k in keys)  # full keys, no prefix
        for lin in BLOCK_LINEARS:
            w, s = f.get_tensor(f"blocks.1.{lin}.weight"), f.get_tensor(f"blocks.1.{lin}.weight_scale")
            assert w.dtype == qdtype and s.dtype == torch.bfloat16 and s.shape == (w.shape[0], 1)
        assert f.get_tensor("blocks.1.norm3.weight").dtype == torch.float32  # converter's non_linear_dtype
        assert f.get_tensor("blocks.1.self_attn.q.bias").dtype == torch.float32
        assert f.get_tensor("blocks.1.modulation").dtype == torch.float32
    with safe_open(str(root / NON_BLOCK), "pt") as f:
        assert not any(k.startswith("blocks.") for k in f.keys())
        assert f.get_tensor("patch_embedding.weight").dtype == torch.float32
    index = json.loads((root / INDEX).read_text())
    assert index["weight_map"]["blocks.0.ffn.2.weight_scale"] == "block_0.safetensors"
    assert index["weight_map"]["head.modulation"] == NON_BLOCK
    assert json.loads((root / "config.json").read_text())["num_layers"] == 2


@pytest.mark.parametrize("kind", [FP8, INT8])
def test_round_trip(dirs, tiny_sd, kind):
    assert is_lightx2v_dir(dirs[kind])
    sd = read_lightx2v_dir(dirs[kind])
    assert set(sd) == set(expected_keys(TINY_DIT))
    for key, value in sd.items():
        lin = key.split(".", 2)[-1].removesuffix(".weight")
        if key.endswith(".weight") and lin in BLOCK_LINEARS:
            assert isinstance(value, QuantWeight) and value.kind == kind
            q, scale = quantize_rowwise(tiny_sd[key], kind)
            assert value.shape == tuple(tiny_sd[key].shape)
            assert torch.equal(value.data.view(torch.uint8), q.view(torch.uint8))
            assert value.scale.dtype == torch.float32 and torch.equal(value.scale, scale.float())
        else:
            assert isinstance(value, torch.Tensor)
            assert torch.equal(value, tiny_sd[key].float())


def test_bf16_block_dir_reads_as_plain_tensors(tmp_path, tiny_sd):
    root = write_lightx2v_dir(tmp_path / "bf16", tiny_sd, "bf16")
    sd = read_lightx2v_dir(root)
    assert sd["blocks.0.ffn.0.weight"].dtype == torch.bfloat16
    assert not any(isinstance(v, QuantWeight) for v in sd.values())


def test_is_lightx2v_dir(tmp_path, dirs):
    assert not is_lightx2v_dir(tmp_path)
    assert not is_lightx2v_dir(dirs[FP8] / NON_BLOCK)  # a file, not a folder
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert not is_lightx2v_dir(tmp_path)


def test_missing_block_file_is_named(dirs, tmp_path):
    root = fresh(dirs, FP8, tmp_path)
    (root / "block_1.safetensors").unlink()
    with pytest.raises(MissingFileError) as e:
        read_lightx2v_dir(root)
    msg = str(e.value)
    assert "block_1.safetensors" in msg and "incomplete" in msg and str(root) in msg


def test_missing_block_found_without_index_or_config(dirs, tmp_path, tiny_sd):
    three = WanConfig(dim=256, ffn_dim=512, num_layers=3)
    root = write_lightx2v_dir(tmp_path / "three", release_like(tiny_dit_state_dict(three)), INT8)
    (root / INDEX).unlink()
    (root / "config.json").unlink()
    (root / "block_1.safetensors").unlink()
    with pytest.raises(MissingFileError, match="block_1.safetensors"):
        read_lightx2v_dir(root)


def test_missing_non_block(dirs, tmp_path):
    root = fresh(dirs, INT8, tmp_path)
    (root / NON_BLOCK).unlink()
    with pytest.raises(MissingFileError, match="non_block.safetensors"):
        read_lightx2v_dir(root)


def test_truncated_block_file(dirs, tmp_path):
    root = fresh(dirs, FP8, tmp_path)
    f = root / "block_0.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(FormatError) as e:
        read_lightx2v_dir(root)
    assert "block_0.safetensors" in str(e.value) and "truncated" in str(e.value)


def test_mixed_fp8_and_int8_blocks(dirs, tmp_path):
    root = fresh(dirs, FP8, tmp_path)
    shutil.copy(dirs[INT8] / "block_1.safetensors", root / "block_1.safetensors")
    with pytest.raises(FormatError) as e:
        read_lightx2v_dir(root)
    msg = str(e.value)
    assert "mixes" in msg and "fp8: block_0.safetensors" in msg and "int8: block_1.safetensors" in msg


def test_block_file_of_another_block(dirs, tmp_path):
    root = fresh(dirs, FP8, tmp_path)
    shutil.copy(root / "block_0.safetensors", root / "block_1.safetensors")
    with pytest.raises(FormatError, match="block_1.safetensors.*another block"):
        read_lightx2v_dir(root)


def test_quantized_weight_without_scale(dirs, tmp_path):
    from safetensors.torch import save_file

    root = fresh(dirs, INT8, tmp_path)
    path = root / "block_0.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "blocks.0.cross_attn.v.weight_scale"}
    save_file(tensors, str(path))
    with pytest.raises(FormatError) as e:
        read_lightx2v_dir(root)
    assert "block_0.safetensors" in str(e.value) and "blocks.0.cross_attn.v.weight" in str(e.value)


def test_i2v_folder_is_refused(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    sd["img_emb.proj.1.weight"] = torch.randn(256, 1280)
    for i in range(TINY_DIT.num_layers):
        sd[f"blocks.{i}.cross_attn.k_img.weight"] = torch.randn(256, 256)
    root = write_lightx2v_dir(tmp_path / "i2v", sd, FP8)
    with pytest.raises(WrongModelError) as e:
        read_lightx2v_dir(root)
    assert "I2V" in str(e.value) and str(root) in str(e.value)


def test_folder_of_another_model_is_refused(tmp_path):
    from safetensors.torch import save_file

    root = tmp_path / "other"
    root.mkdir()
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4)}, str(root / NON_BLOCK))
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(8, 8, dtype=torch.int8)}, str(root / "block_0.safetensors"))
    with pytest.raises(WrongModelError) as e:
        read_lightx2v_dir(root)
    assert "not a Wan2.1" in str(e.value) and str(root) in str(e.value)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_reading_maps_files_instead_of_loading_them(tmp_path):
    # dim 1024 / ffn 4096: 2 blocks of ~16 MB of int8 codes plus a 16 MB fp32 text embedding
    cfg = WanConfig(dim=1024, ffn_dim=4096, num_layers=2)
    src = release_like(tiny_dit_state_dict(cfg))
    root = write_lightx2v_dir(tmp_path / "big", src, INT8)
    want, _ = quantize_rowwise(src["blocks.1.ffn.0.weight"], INT8)
    del src
    on_disk = sum(p.stat().st_size for p in root.iterdir())
    assert on_disk > 40e6
    before = _rss_bytes()
    sd = read_lightx2v_dir(root)
    grown = _rss_bytes() - before
    assert grown < 0.15 * on_disk, f"reading grew RSS by {grown / 1e6:.1f} MB for {on_disk / 1e6:.1f} MB of files"
    w = sd["blocks.1.ffn.0.weight"]
    assert isinstance(w, QuantWeight) and w.data.shape == (4096, 1024)
    assert torch.equal(w.data, want)  # the mapped bytes are the real codes
