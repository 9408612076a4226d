"""DiT loading: content sniffing, key maps both ways, and every bad-input error names the file and the problem."""

from __future__ import annotations

import pickle

import pytest
import safetensors.torch
import torch

from wan4step.errors import FormatError, WrongModelError
from wan4step.formats import load_dit
from wan4step.formats.keymaps import canonical_to_diffusers, diffusers_to_canonical, to_canonical
from wan4step.tiny.dit import TINY_DIT, tiny_dit_state_dict
from wan4step.wan_config import T2V_14B, detect_config, expected_keys


@pytest.fixture(scope="module")
def sd():
    return tiny_dit_state_dict()


def _save(path, sd):
    safetensors.torch.save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, str(path))
    return path


def test_diffusers_key_map_is_a_bijection_on_every_key(sd):
    pytest.importorskip("diffusers")
    from diffusers import WanTransformer3DModel

    ref = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16,
                                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=512, num_layers=2,
                                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    theirs = set(ref.state_dict())
    ours = set(expected_keys(TINY_DIT))
    assert {canonical_to_diffusers(k) for k in ours} == theirs
    assert {diffusers_to_canonical(k) for k in theirs} == ours
    assert all(diffusers_to_canonical(canonical_to_diffusers(k)) == k for k in ours)


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "diffusion_model."])
def test_prefixed_and_diffusers_files_load_to_canonical(tmp_path, sd, prefix):
    p = _save(tmp_path / "m.safetensors", {prefix + k: v for k, v in sd.items()})
    assert set(load_dit(p).state) == set(sd)
    d = _save(tmp_path / "d.safetensors", {canonical_to_diffusers(k): v for k, v in sd.items()})
    loaded = load_dit(d).state
    assert set(loaded) == set(sd)
    assert torch.equal(loaded["blocks.1.norm3.weight"], sd["blocks.1.norm3.weight"].to(torch.bfloat16))


def test_file_type_is_read_from_content_not_name(tmp_path, sd):
    p = _save(tmp_path / "looks_like.gguf", sd)  # a safetensors file with the wrong extension
    assert load_dit(p).format.startswith("safetensors")
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(FormatError, match="model.safetensors"):
        load_dit(junk)


def test_truncated_file(tmp_path, sd):
    p = _save(tmp_path / "t.safetensors", sd)
    p.write_bytes(p.read_bytes()[:-1000])
    with pytest.raises(FormatError, match="truncated") as e:
        load_dit(p)
    assert "t.safetensors" in str(e.value) and "download" in str(e.value)


def test_missing_and_unexpected_tensors_are_named(tmp_path, sd):
    broken = dict(sd)
    del broken["blocks.1.ffn.2.weight"]
    with pytest.raises(FormatError, match="blocks.1.ffn.2.weight"):
        load_dit(_save(tmp_path / "missing.safetensors", broken))
    extra = dict(sd, **{"lora_unet_foo.weight": torch.zeros(2)})
    with pytest.raises(FormatError, match="lora_unet_foo"):
        load_dit(_save(tmp_path / "extra.safetensors", extra))


def test_pth_with_pickled_code_is_refused(tmp_path, sd):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"blocks.0.modulation": Evil()}, f)
    with pytest.raises(FormatError, match="pickled") as e:
        load_dit(p)
    assert "evil.pth" in str(e.value)
    ok = tmp_path / "ok.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, ok)
    assert load_dit(ok).config == TINY_DIT


def _shapes(cfg, **extra):
    sd = {k: v.shape for k, v in tiny_dit_state_dict().items()}
    sd.update(extra)
    return sd


def test_wrong_variants_are_named():
    with pytest.raises(WrongModelError, match="I2V"):
        detect_config(_shapes(TINY_DIT, **{"img_emb.proj.0.weight": (1280,), "blocks.0.cross_attn.k_img.weight": (256, 256)}))
    s = _shapes(TINY_DIT)
    s["patch_embedding.weight"] = (3072, 48, 1, 2, 2)
    with pytest.raises(WrongModelError, match="Wan2.2 TI2V-5B"):
        detect_config(s)
    s = _shapes(TINY_DIT)
    s["patch_embedding.weight"] = (256, 36, 1, 2, 2)
    with pytest.raises(WrongModelError, match="36 input channels"):
        detect_config(s)
    onethree = {k: v for k, v in _shapes(TINY_DIT).items()}
    onethree["patch_embedding.weight"] = (1536, 16, 1, 2, 2)
    onethree.update({f"blocks.{i}.ffn.0.weight": (8960, 1536) for i in range(30)})
    with pytest.raises(WrongModelError, match="T2V-1.3B"):
        detect_config(onethree)
    with pytest.raises(WrongModelError, match="not a Wan2.1 diffusion model"):
        detect_config({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)})


def test_real_14b_shapes_are_t2v_14b():
    shapes = {k: v for k, v in _shapes(TINY_DIT).items()}
    d, f = T2V_14B.dim, T2V_14B.ffn_dim
    fake = {"patch_embedding.weight": (d, 16, 1, 2, 2), "text_embedding.0.weight": (d, 4096),
            "time_embedding.0.weight": (d, 256), "head.head.weight": (64, d)}
    fake.update({f"blocks.{i}.ffn.0.weight": (f, d) for i in range(40)})
    cfg = detect_config(fake)
    assert cfg == T2V_14B and cfg.name == "Wan2.1 T2V-14B" and shapes


def test_to_canonical_leaves_canonical_alone(sd):
    assert to_canonical(sd) == sd
