"""Wan4Step UMT5 Loader in a real ComfyUI (in-process): its CLIP against ComfyUI's own Wan text encoder.

ComfyUI's CLIPLoader(type="wan") recognises UMT5-XXL only by a 24th block whose FFN is
10240 wide (comfy/sd.py detect_te_model) and then builds a fixed XXL config, so it
cannot load a tiny file. The reference here is what it builds after detection, with
ComfyUI's own classes and loading code: `comfy.text_encoders.wan.te(...)` +
`WanT5Tokenizer` in a `comfy.sd.CLIP`, state dict from `comfy.utils.load_torch_file` +
`convert_old_quants`, the config sized through ComfyUI's `umt5xxl_model_config` option.
"""

from __future__ import annotations

import pytest
import torch

from wan4step.tiny.umt5 import (
    TINY_UMT5,
    tiny_spiece_model,
    tiny_umt5_state_dict,
    write_comfy,
    write_comfy_fp8_scaled,
    write_gguf,
    write_lightx2v_pth,
    write_tokenizer_dir,
)
from wan4step.umt5 import UMT5Tokenizer

PROMPT = "A golden retriever runs across a wheat field at sunset, cinematic lighting, slow motion"
WEIGHTED = "a cat (walks along:1.3) the beach, (vintage film look:0.8)"


@pytest.fixture(scope="module")
def te_dir(comfy, tmp_path_factory):
    """A temporary models/text_encoders folder registered with ComfyUI's folder_paths."""
    d = tmp_path_factory.mktemp("text_encoders")
    sd, spm = tiny_umt5_state_dict(), tiny_spiece_model()
    write_comfy(d / "umt5_tiny_fp16.safetensors", sd, spm)
    write_comfy_fp8_scaled(d / "umt5_tiny_fp8_e4m3fn_scaled.safetensors", sd, spm)
    (d / "lightx2v").mkdir()
    write_lightx2v_pth(d / "lightx2v" / "models_t5_umt5-xxl-enc-bf16.pth", sd, "bf16")
    write_tokenizer_dir(d / "lightx2v" / "google" / "umt5-xxl", spm)
    write_gguf(d / "umt5-tiny-encoder-Q8_0.gguf", sd, spm)
    write_lightx2v_pth(d / "no_tokenizer.pth", sd, "bf16")
    paths = comfy.folder_paths.folder_names_and_paths["text_encoders"][0]
    paths.insert(0, str(d))
    yield d
    paths.remove(str(d))


def core_wan_clip(comfy, path):
    """ComfyUI's own Wan UMT5 text encoder for a (tiny) Comfy-Org file."""
    import comfy.text_encoders.sd3_clip
    import comfy.text_encoders.wan

    sd, meta = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    sd, _ = comfy.utils.convert_old_quants(sd, model_prefix="", metadata=meta)
    assert comfy.sd.detect_te_model(sd) != comfy.sd.TEModel.T5_XXL  # why CLIPLoader itself cannot be used
    target = type("Target", (), {})()
    target.params = {}
    target.clip = comfy.text_encoders.wan.te(**comfy.text_encoders.sd3_clip.t5_xxl_detect(sd))
    target.tokenizer = comfy.text_encoders.wan.WanT5Tokenizer
    c = TINY_UMT5
    size = {"d_model": c.d_model, "d_ff": c.d_ff, "d_kv": c.d_kv, "num_heads": c.num_heads,
            "num_layers": c.num_layers, "vocab_size": c.vocab_size}
    return comfy.sd.CLIP(target, tokenizer_data={"spiece_model": sd.get("spiece_model")},
                         parameters=comfy.utils.calculate_parameters(sd), state_dict=[sd],
                         model_options={"umt5xxl_model_config": size})


def load(pack, name, tokenizer="auto", device="cpu", precision="fp32"):
    # fp32: the comparisons below are against ComfyUI's own (fp32) text-encoder math
    return pack.nodes.text_encoder.Wan4StepUMT5Loader.execute(name, tokenizer, device, precision).result[0]


def encode(clip, text):
    import nodes as comfy_nodes

    cond = comfy_nodes.CLIPTextEncode().encode(clip, text)[0]
    assert len(cond) == 1
    return cond[0][0], cond[0][1]


def test_clip_is_comfyuis_and_matches_its_wan_text_encoder(comfy, pack, te_dir):
    ours = load(pack, "umt5_tiny_fp16.safetensors")
    core = core_wan_clip(comfy, te_dir / "umt5_tiny_fp16.safetensors")
    assert isinstance(ours, comfy.sd.CLIP)
    for text in (PROMPT, WEIGHTED):
        assert ours.tokenize(text) == core.tokenize(text)
        a, extra_a = encode(ours, text)
        b, extra_b = encode(core, text)
        assert a.shape == b.shape == (1, 512, 4096) and a.dtype == b.dtype == torch.float32
        assert extra_a.keys() == extra_b.keys()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)
    n = len(UMT5Tokenizer(tiny_spiece_model()).ids(PROMPT))
    a, _ = encode(ours, PROMPT)
    assert (a[0, n:] == 0).all() and a[0, :n].abs().sum(-1).min() > 0  # padding zeroed, like Wan's context


def test_fp8_scaled_matches_comfyuis_decoding(comfy, pack, te_dir):
    ours = load(pack, "umt5_tiny_fp8_e4m3fn_scaled.safetensors")
    core = core_wan_clip(comfy, te_dir / "umt5_tiny_fp8_e4m3fn_scaled.safetensors")
    a, _ = encode(ours, PROMPT)
    b, _ = encode(core, PROMPT)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5)


def test_wan_prompt_cleaning_and_truncation(comfy, pack, te_dir):
    ours = load(pack, "umt5_tiny_fp16.safetensors")
    engine = UMT5Tokenizer(tiny_spiece_model())
    messy = "  a cat &amp;amp; a dog\n\n walk   along the beach  "
    ids = [t for t, _ in ours.tokenize(messy)["umt5xxl"][0]]
    want, _ = engine([messy])
    assert ids == want[0].tolist()  # node tokenization == engine (Wan) tokenization
    long = [t for t, _ in ours.tokenize("frames " * 700)["umt5xxl"][0]]
    assert len(long) == 512 and long[-1] == 1


def test_other_layouts_give_the_same_conditioning(comfy, pack, te_dir):
    ref, _ = encode(load(pack, "umt5_tiny_fp16.safetensors"), PROMPT)
    lx = load(pack, "lightx2v/models_t5_umt5-xxl-enc-bf16.pth")  # tokenizer: google/umt5-xxl beside it
    assert pack.nodes.comfy_compat.clip.text_encoder_info(lx).tokenizer.endswith("umt5-xxl")
    gg = load(pack, "umt5-tiny-encoder-Q8_0.gguf")  # tokenizer rebuilt from GGUF metadata
    for clip, tol in ((lx, 0.012), (gg, 0.03)):  # bf16 / Q8_0 weight rounding (see tests/unit/test_umt5.py)
        c, _ = encode(clip, PROMPT)
        assert ((c - ref).norm() / ref.norm()).item() < tol


def test_device_modes(comfy, pack, te_dir):
    mm = comfy.mm

    def loaded(clip):
        return any(lm.model is not None and lm.model.model is clip.cond_stage_model for lm in mm.current_loaded_models)

    cpu = load(pack, "umt5_tiny_fp16.safetensors", device="cpu")
    assert cpu.patcher.load_device == torch.device("cpu") == cpu.patcher.offload_device
    kept = load(pack, "umt5_tiny_fp16.safetensors", device="gpu")
    assert kept.patcher.load_device == mm.get_torch_device()
    encode(kept, PROMPT)
    assert loaded(kept)  # ComfyUI keeps it until something else needs the memory
    freed = load(pack, "umt5_tiny_fp16.safetensors", device="gpu_then_free")
    encode(freed, PROMPT)
    assert not loaded(freed)
    clone = freed.clone()  # CLIPSetLastLayer / LoRA loaders clone: the behaviour must survive
    encode(clone, PROMPT)
    assert not loaded(clone)


def test_node_schema_lists_files_and_tokenizer_folders(comfy, pack, te_dir):
    schema = pack.nodes.text_encoder.Wan4StepUMT5Loader.define_schema()
    assert (schema.node_id, schema.display_name, schema.category) == ("Wan4StepUMT5Loader", "Wan4Step UMT5 Loader", "Wan4Step")
    inputs = {i.id: i for i in schema.inputs}
    assert {"umt5_tiny_fp16.safetensors", "umt5-tiny-encoder-Q8_0.gguf",
            "lightx2v/models_t5_umt5-xxl-enc-bf16.pth"} <= set(inputs["text_encoder_name"].options)
    assert inputs["tokenizer"].options[0] == "auto" and "lightx2v/google/umt5-xxl/" in inputs["tokenizer"].options
    assert inputs["device"].options == ["gpu", "cpu", "gpu_then_free"]
    assert all(i.tooltip for i in schema.inputs) and schema.outputs[0].tooltip
    assert pack.nodes.text_encoder.Wan4StepUMT5Loader in pack.nodes.text_encoder.NODES
    assert pack.nodes.text_encoder in pack.nodes._MODULES


def test_explicit_tokenizer_folder_and_missing_tokenizer(comfy, pack, te_dir):
    from wan4step.errors import MissingFileError

    clip = load(pack, "no_tokenizer.pth", tokenizer="lightx2v/google/umt5-xxl/")
    assert pack.nodes.comfy_compat.clip.text_encoder_info(clip).tokenizer.endswith("umt5-xxl")
    with pytest.raises(MissingFileError) as e:
        load(pack, "no_tokenizer.pth")
    assert "no_tokenizer.pth" in str(e.value) and "spiece.model" in str(e.value)


def test_registered_in_a_running_comfyui(comfy_server):
    info = comfy_server.object_info()["Wan4StepUMT5Loader"]
    assert (info["display_name"], info["category"], info["output"]) == ("Wan4Step UMT5 Loader", "Wan4Step", ["CLIP"])
    req = info["input"]["required"]
    assert set(req) == {"text_encoder_name", "tokenizer", "device"}
    assert all(spec[1].get("tooltip") for spec in req.values()) and info["output_tooltips"][0]
