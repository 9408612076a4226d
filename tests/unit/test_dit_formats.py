"""DiT loading: content sniffing, key maps both ways, and every bad-input error names the file and the problem."""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch

from wan4step.errors import FormatError, WrongModelError
from wan4step.formats import load_dit
from wan4step.formats.gguf_file import write_gguf
from wan4step.formats.keymaps import canonical_to_diffusers, diffusers_to_canonical, to_canonical
from wan4step.tiny.dit import TINY_DIT, TINY_VACE, TINY_VACE_DIT, tiny_dit_state_dict, tiny_vace_state_dict
from wan4step.wan_config import T2V_14B, VACE_14B, WanConfig, detect_config, detect_vace, expected_keys, expected_shapes


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
    assert "'builtins.print'" in str(e.value)  # the blocked global, quoted
    assert "weights_only" not in str(e.value).split("Found:")[1]  # not torch's "re-run with weights_only=False"
    zipped = tmp_path / "module.pth"
    torch.save({"blocks.0.ffn": torch.nn.Linear(2, 2)}, zipped)  # a pickled module: torch names the global itself
    with pytest.raises(FormatError, match="'torch.nn.modules.linear.Linear'"):
        load_dit(zipped)
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


def _shapes_14b(layers=40, vace_layers=0):
    return expected_shapes(WanConfig(T2V_14B.dim, T2V_14B.ffn_dim, layers),
                           None if not vace_layers else VACE_14B.__class__(vace_layers, 96))


def test_14b_file_without_its_last_block_is_refused_naming_it():
    shapes = _shapes_14b()
    assert detect_config(shapes) == T2V_14B
    for k in [k for k in shapes if k.startswith("blocks.39.")]:
        del shapes[k]
    with pytest.raises(FormatError, match=r"1 of 40 blocks are missing: blocks\.39") as e:
        detect_config(shapes, "wan-14b-Q4_K_M.gguf")
    assert "wan-14b-Q4_K_M.gguf" in str(e.value) and "download it again" in str(e.value)
    more = _shapes_14b(41)
    with pytest.raises(WrongModelError, match="41 blocks where Wan2.1 T2V-14B has 40"):
        detect_config(more)


def test_14b_vace_without_its_last_vace_block_is_refused_naming_it():
    shapes = _shapes_14b(40, 8)
    assert detect_vace(shapes, detect_config(shapes)) == VACE_14B
    for k in [k for k in shapes if k.startswith("vace_blocks.7.")]:
        del shapes[k]
    with pytest.raises(FormatError, match=r"1 of 8 blocks are missing: vace_blocks\.7"):
        detect_vace(shapes, detect_config(shapes))


def test_vace_block_count_comfyui_cannot_place_is_refused():
    shapes = expected_shapes(WanConfig(256, 512, 3), TINY_VACE)  # 2 VACE blocks over 3 blocks: steps of 1 give 3 hosts
    with pytest.raises(WrongModelError, match="2 VACE blocks cannot be spread over 3 blocks"):
        detect_vace(shapes, detect_config(shapes))


def test_gap_and_wrong_shape_in_safetensors_are_named(tmp_path, sd):
    gap = {k: v for k, v in tiny_dit_state_dict(TINY_VACE_DIT).items() if not k.startswith("blocks.1.")}
    with pytest.raises(FormatError, match=r"blocks are missing: blocks\.1"):
        load_dit(_save(tmp_path / "gap.safetensors", gap))
    bad = dict(sd, **{"blocks.0.cross_attn.k.weight": torch.zeros(256, 128)})
    with pytest.raises(FormatError, match=r"'blocks\.0\.cross_attn\.k\.weight' has the wrong shape") as e:
        load_dit(_save(tmp_path / "bad.safetensors", bad))
    assert "Expected: [256, 256]" in str(e.value) and "Found: [256, 128]" in str(e.value)


@pytest.mark.parametrize("name", ["model.safetensors", "model.gguf", "model.pth"])
def test_empty_file_is_called_empty(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"")
    with pytest.raises(FormatError, match="empty") as e:
        load_dit(p)
    assert name in str(e.value)


def test_empty_block_file_is_called_empty(tmp_path, sd):
    from wan4step.formats.lightx2v_dir import write_lightx2v_dir

    root = write_lightx2v_dir(tmp_path / "distill_int8", sd, "int8")
    (root / "block_1.safetensors").write_bytes(b"")
    with pytest.raises(FormatError, match="block_1.safetensors: the file is empty"):
        load_dit(root)


def test_t2v_mode_creates_no_tensor_for_vace_entries(tmp_path):
    """A VACE tensor whose header entry the reader cannot even type: t2v mode never looks, vace mode refuses."""
    p = _save(tmp_path / "vace.safetensors", tiny_vace_state_dict())
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["vace_blocks.1.ffn.0.weight"]["dtype"] = "F4"  # no such dtype here
    new = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(new) == n
    p.write_bytes(raw[:8] + new + raw[8 + n:])
    loaded = load_dit(p)
    assert loaded.vace is None and not any(k.startswith("vace_") for k in loaded.state)
    with pytest.raises(FormatError, match="vace_blocks.1.ffn.0.weight' has unsupported dtype F4"):
        load_dit(p, "vace")
    assert load_dit(_save(tmp_path / "ok.safetensors", tiny_vace_state_dict()), "vace").vace == TINY_VACE


def test_diffusers_vace_key_map_is_a_bijection():
    pytest.importorskip("diffusers")
    from diffusers import WanVACETransformer3DModel

    ref = WanVACETransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16,
                                    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=512, num_layers=4,
                                    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, vace_layers=[0, 2],
                                    vace_in_channels=96)
    theirs = set(ref.state_dict())
    ours = set(expected_keys(TINY_VACE_DIT, TINY_VACE))
    assert {canonical_to_diffusers(k) for k in ours} == theirs
    assert {diffusers_to_canonical(k) for k in theirs} == ours


_LOW_DATA_LIMIT = textwrap.dedent("""
    import resource, sys
    sys.path.append(sys.argv[2])
    import torch  # noqa: F401  (its own allocations come before the limit)
    from wan4step.formats import load_dit

    def vm_data():
        for line in open("/proc/self/status"):
            if line.startswith("VmData"):
                return int(line.split()[1]) * 1024

    limit = vm_data() + 32 * 2**20  # far less than the file: a private writable map of it cannot fit
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    loaded = load_dit(sys.argv[1])
    total = sum(float(v.float().sum()) for v in loaded.state.values())  # touch every byte
    print("OK", loaded.config.num_layers, round(loaded.stored_bytes / 2**20), total == total)
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="needs Linux RLIMIT_DATA")
def test_file_larger_than_the_data_limit_loads_through_a_read_only_map(tmp_path):
    """A private writable (copy-on-write) map is charged like anonymous memory: Linux refuses it with
    ENOMEM when the file exceeds what may be committed (24 GB RAM, 28.6 GB file). RLIMIT_DATA charges
    exactly those maps (RLIMIT_AS would charge a read-only map too), so it reproduces that refusal here."""
    cfg = WanConfig(dim=512, ffn_dim=2048, num_layers=12)
    p = _save(tmp_path / "big_bf16.safetensors", tiny_dit_state_dict(cfg))
    assert p.stat().st_size > 2.5 * 32 * 2**20
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", _LOW_DATA_LIMIT, str(p), repo], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["OK", "12", str(round(p.stat().st_size / 2**20)), "True"]

def test_scan_counts_the_bytes_each_mode_loads(tmp_path):
    """Header-only sizes (for the advisor): mode t2v of a VACE-merged file loads the T2V part only."""
    from wan4step.formats.scan import scan_dit
    from wan4step_dev.fixtures.layouts import write_lightx2v_split

    vsd = tiny_vace_state_dict()
    for path in (write_gguf(tmp_path / "v.gguf", vsd, "Q4_K_M"), _save(tmp_path / "v.safetensors", vsd),
                 write_lightx2v_split(tmp_path / "v_split", vsd, "fp8")):
        s = scan_dit(path)
        t2v, vace = load_dit(path), load_dit(path, "vace")
        assert s.has_vace and s.vace_bytes == t2v.skipped_bytes, path
        if path.suffix != "":  # the split folder's 8-bit scales are widened to fp32 when loaded
            assert s.loaded_bytes("t2v") == t2v.stored_bytes and s.loaded_bytes("vace") == vace.stored_bytes, path
    plain = scan_dit(_save(tmp_path / "p.safetensors", tiny_dit_state_dict()))
    assert not plain.has_vace and plain.loaded_bytes("vace") == plain.t2v_bytes
