"""Merge-at-load vs ComfyUI applying the same LoRA: core's LoraLoaderModelOnly and ComfyUI-GGUF.

Fixtures are written the way each publisher's tool writes its LoRAs (`wan4step_dev/fixtures/lora.py`
says which tool and keys): LightX2V's extractor (lora_up/lora_down, diff, diff_b, diff_m), Kijai's
files (lora_down/lora_up, diff_b, norm diffs) and PEFT lora_A/lora_B with alpha. The oracle is
ComfyUI's own LoRA code on the same base file and the same LoRA file.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from wan4step.formats import load_dit
from wan4step.formats.gguf_file import write_gguf
from wan4step.formats.lightx2v_dir import write_lightx2v_dir
from wan4step.lora import merge_into
from wan4step.quant.weights import QuantWeight
from wan4step.tiny.dit import TINY_DIT, tiny_dit_state_dict
from wan4step_dev.fixtures.lora import CONVENTIONS, make_lora, write_lora

TINY_LOWRANK = 60_000  # the extractor's 1M-parameter rule, scaled to the tiny model (see fixtures.py)


def _core_nodes():
    return sys.modules.get("nodes") or importlib.import_module("nodes")  # ComfyUI's top-level nodes.py


def _input(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 16, 4096, generator=g) * 0.3


def _forward(comfy, mp):
    x, ctx = _input()
    comfy.mm.load_models_gpu([mp])  # applies core's patches the way sampling does
    with torch.no_grad():
        return mp.model.diffusion_model(x, torch.tensor([900.0]), ctx).float()


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def loras_dir(comfy, tmp_path):
    d = tmp_path / "loras"
    d.mkdir()
    comfy.folder_paths.add_model_folder_path("loras", str(d), is_default=True)  # first: earlier tests' files share names
    return d


def _diff_m_as_core_reads_it(sd):
    """LightX2V's `blocks.N.diff_m` renamed to the key core's key map has (`blocks.N.modulation.diff`);
    ComfyUI 0.33 does not map the original name ("lora key not loaded", Comfy-Org/ComfyUI#8922)."""
    return {(k[: -len("diff_m")] + "modulation.diff" if k.endswith(".diff_m") else k): v for k, v in sd.items()}


def _modulation_diff(sd, key):
    return sd[f"diffusion_model.{key[: -len('modulation')]}diff_m"]


@pytest.mark.parametrize(("convention", "dtype"), [(c, torch.bfloat16) for c in CONVENTIONS] + [("kijai", torch.float16)])
def test_merged_float_weights_equal_core_lora_loader(comfy, pack, tmp_path, loras_dir, convention, dtype):
    base = tmp_path / "base.safetensors"
    safetensors.torch.save_file({k: v.to(dtype) for k, v in tiny_dit_state_dict().items()}, str(base))
    sd = make_lora(TINY_DIT, convention, rank=8, seed=3, size=0.1, lowrank_min_params=TINY_LOWRANK)
    lora_file = write_lora(loras_dir / f"{convention.replace('/', '_')}.safetensors", sd)
    oracle_file = write_lora(loras_dir / "oracle.safetensors", _diff_m_as_core_reads_it(sd))

    core = comfy.sd.load_diffusion_model(str(base), model_options={"dtype": dtype})  # keep the file's dtype on CPU
    with_lora = _core_nodes().LoraLoaderModelOnly().load_lora_model_only(core, oracle_file.name, 0.8)[0]
    want_out = _forward(comfy, with_lora)
    want = with_lora.model.diffusion_model.state_dict()

    loaded = load_dit(base)
    report = merge_into(loaded, lora_file, 0.8, device="cpu")
    touched = 0
    for key, w in loaded.state.items():
        assert w.dtype == dtype, key
        before = tiny_dit_state_dict()[key].to(dtype)
        touched += not torch.equal(w, before)
        if key.endswith("modulation"):  # core never patches these (next test); LightX2V's loader adds diff_m
            if convention == "lightx2v":
                assert torch.equal(w, (before.float() + 0.8 * _modulation_diff(sd, key).float()).to(dtype)), key
            continue
        # bit for bit: same formula, same rounding (core keeps the patch embedding in float32: round its result)
        assert torch.equal(w, want[key].to(dtype)), key
    assert touched == report.merged

    ours = pack.nodes.comfy_compat.model.build_model(loaded, dtype)
    got_out = _forward(comfy, ours)
    plain = _forward(comfy, pack.nodes.comfy_compat.model.build_model(load_dit(base), dtype))
    assert _rel(want_out, plain) > 0.02  # the LoRA really changes the output
    if convention == "lightx2v":  # core's own model and forward, its modulation set as LightX2V's loader makes it
        dm = with_lora.model.diffusion_model
        for key, p in dm.named_parameters():
            if key.endswith("modulation"):
                p.data.copy_(loaded.state[key].reshape(p.shape))
        with torch.no_grad():
            x, ctx = _input()
            want_out = dm(x, torch.tensor([900.0]), ctx).float()
    assert _rel(got_out, want_out) < 2e-3  # same weights; only the two ops classes' rounding differs


def test_core_skips_lightx2v_modulation_diffs_and_the_merge_applies_them(comfy, tmp_path, loras_dir):
    """What the merge does differently from core, on purpose: LightX2V's loader adds `diff_m` to the blocks'
    modulation; core does not map the key (#8922), and even under the key its map has, its ModelPatcher
    (`_load_list`) skips parameters of non-leaf modules like a Wan block, so they are never patched."""
    base = tmp_path / "base.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in tiny_dit_state_dict().items()}, str(base))
    sd = make_lora(TINY_DIT, "lightx2v", rank=8, seed=4, lowrank_min_params=TINY_LOWRANK)
    assert any(k.endswith(".diff_m") for k in sd)
    f = write_lora(loras_dir / "lx.safetensors", sd)
    renamed = write_lora(loras_dir / "lx_renamed.safetensors", _diff_m_as_core_reads_it(sd))
    plain = tiny_dit_state_dict()["blocks.0.modulation"].to(torch.bfloat16)
    for name in (f.name, renamed.name):
        core = comfy.sd.load_diffusion_model(str(base), model_options={"dtype": torch.bfloat16})
        patched = _core_nodes().LoraLoaderModelOnly().load_lora_model_only(core, name, 1.0)[0]
        comfy.mm.load_models_gpu([patched])
        theirs = patched.model.diffusion_model.state_dict()
        assert torch.equal(theirs["blocks.0.modulation"], plain), name
        assert not torch.equal(theirs["blocks.0.ffn.0.bias"], tiny_dit_state_dict()["blocks.0.ffn.0.bias"].bfloat16())
    loaded = load_dit(base)
    report = merge_into(loaded, f, 1.0, device="cpu")
    assert not torch.equal(loaded.state["blocks.0.modulation"], plain)
    assert any("diff_m" in n for n in report.notes)


def _quantized_bases(tmp_path, sd):
    return {
        "fp8": write_lightx2v_dir(tmp_path / "distill_fp8", sd, "fp8"),
        "int8": write_lightx2v_dir(tmp_path / "distill_int8", sd, "int8"),
        "Q8_0": write_gguf(tmp_path / "tiny-Q8_0.gguf", sd, "Q8_0"),
        "Q4_K_M": write_gguf(tmp_path / "tiny-Q4_K_M.gguf", sd, "Q4_K_M"),
    }


# Output error of the merged (re-quantized) model against the exact per-use LoRA, relative to the
# error the base's own quantization has against the float model: re-quantizing must cost about
# one more quantization, not more.
@pytest.mark.parametrize("fmt", ["fp8", "int8", "Q8_0", "Q4_K_M"])
def test_merged_quantized_model_matches_per_use_lora_within_quantization_error(comfy, pack, tmp_path, fmt):
    sd = tiny_dit_state_dict()
    path = _quantized_bases(tmp_path, sd)[fmt]
    lora_sd = make_lora(TINY_DIT, "kijai", rank=8, seed=5, size=0.1, lowrank_min_params=TINY_LOWRANK)
    lora_file = write_lora(tmp_path / "k.safetensors", lora_sd)

    per_use = comfy.sd.load_lora_for_models(pack.nodes.comfy_compat.model.build_model(load_dit(path), torch.float32),
                                            None, lora_sd, 1.0, 0)[0]
    want = _forward(comfy, per_use)  # base decoded + LoRA in float32 at every use
    loaded = load_dit(path)
    merge_into(loaded, lora_file, 1.0, device="cpu")
    kinds = {type(v).__name__ + getattr(v, "kind", "") for k, v in loaded.state.items() if k.endswith("ffn.0.weight")}
    assert kinds == {"QuantWeight" + ("gguf" if fmt.startswith("Q") else fmt)}  # still the file's own encoding
    got = _forward(comfy, pack.nodes.comfy_compat.model.build_model(loaded, torch.float32))

    float_model = pack.nodes.comfy_compat.model.build_model(load_dit(path), torch.float32)
    quant_err = _rel(_forward(comfy, float_model), _forward(comfy, _float_build(comfy, pack, sd)))
    err = _rel(got, want)
    assert err < 1.5 * quant_err + 1e-3, (fmt, err, quant_err)


def _float_build(comfy, pack, sd, dtype=torch.float32):
    from wan4step.formats.dit import LoadedDiT
    from wan4step.wan_config import detect_config

    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    state = {k: v.to(dtype) for k, v in sd.items()}
    loaded = LoadedDiT(Path("float.safetensors"), "float", detect_config(shapes), state)
    return pack.nodes.comfy_compat.model.build_model(loaded, dtype)


def test_gguf_merge_against_comfyui_gguf_lora_loader(comfy, pack, comfyui_gguf, tmp_path, loras_dir):
    """ComfyUI-GGUF + core LoraLoaderModelOnly (LoRA applied per forward) vs the merged GGUF,
    re-encoded as its own type and as Q8_0."""
    sd = tiny_dit_state_dict()
    path = write_gguf(tmp_path / "tiny-Q5_K_M.gguf", sd, "Q5_K_M")
    comfy.folder_paths.add_model_folder_path("unet", str(tmp_path), is_default=True)
    lora_sd = make_lora(TINY_DIT, "kijai", rank=8, seed=6, size=0.2, lowrank_min_params=TINY_LOWRANK)
    lora_file = write_lora(loras_dir / "kijai.safetensors", lora_sd)
    theirs = comfyui_gguf.nodes.UnetLoaderGGUF().load_unet(path.name)[0]
    theirs = _core_nodes().LoraLoaderModelOnly().load_lora_model_only(theirs, lora_file.name, 1.0)[0]
    want = _forward(comfy, theirs)
    plain = _forward(comfy, pack.nodes.comfy_compat.model.build_model(load_dit(path), torch.float32))
    errs = {}
    for target in ("same", "Q8_0"):
        loaded = load_dit(path)
        report = merge_into(loaded, lora_file, 1.0, device="cpu", gguf_target=target)
        assert any(("Q5_K -> Q5_K" if target == "same" else "-> Q8_0") in e for e in report.encodings), report.encodings
        errs[target] = _rel(_forward(comfy, pack.nodes.comfy_compat.model.build_model(loaded, torch.float32)), want)
    assert _rel(want, plain) > 0.05
    assert errs["Q8_0"] < errs["same"] < 0.05, errs


def test_loader_node_merges_a_lora_from_the_loras_folder(comfy, pack, tmp_path, loras_dir):
    sd = tiny_dit_state_dict()
    unet = tmp_path / "unet"
    unet.mkdir()
    write_gguf(unet / "tiny-Q8_0.gguf", sd, "Q8_0")
    comfy.folder_paths.add_model_folder_path("diffusion_models", str(unet), is_default=True)
    lora_file = write_lora(loras_dir / "lightx2v.safetensors",
                           make_lora(TINY_DIT, "lightx2v", rank=8, seed=7, lowrank_min_params=TINY_LOWRANK))
    node = pack.nodes.model_loader.Wan4StepModelLoader
    plain = node.execute("tiny-Q8_0.gguf", "fp32", "sdpa", False).result[0]
    merged = node.execute("tiny-Q8_0.gguf", "fp32", "sdpa", False, lora_name=lora_file.name, lora_strength=1.0).result[0]
    assert "LoRA" in pack.nodes.comfy_compat.model.model_info(merged).loaded
    w = merged.model.diffusion_model.blocks[0].ffn[0]
    assert w.qkind == "gguf"  # merged in place of the GGUF bytes, no per-use patch
    assert not w.weight_function
    assert _rel(_forward(comfy, merged), _forward(comfy, plain)) > 0.01
    with pytest.raises(Exception, match="not found"):
        node.execute("tiny-Q8_0.gguf", "fp32", "sdpa", False, lora_name="missing.safetensors")


def test_merged_gguf_weights_stay_the_files_size(tmp_path):
    sd = tiny_dit_state_dict()
    path = write_gguf(tmp_path / "tiny-Q4_K_M.gguf", sd, "Q4_K_M")
    before = load_dit(path)
    lora_file = write_lora(tmp_path / "l.safetensors", make_lora(TINY_DIT, "lightx2v", lowrank_min_params=TINY_LOWRANK))
    after = load_dit(path)
    merge_into(after, lora_file, 1.0, device="cpu")
    assert after.stored_bytes == before.stored_bytes
    assert all(isinstance(after.state[k], QuantWeight) == isinstance(before.state[k], QuantWeight) for k in before.state)
