"""UMT5 text encoder: engine vs transformers' UMT5EncoderModel, the four layouts, the tokenizer, errors.

Oracles nobody here wrote: `transformers.UMT5EncoderModel` (the encoder),
`sentencepiece` (tokenization), `gguf`'s TensorNameMap (llama.cpp tensor names)
and its numpy dequantizer + reader (GGUF weights), `safetensors` (Comfy-Org
fp8_scaled decoding: fp8 * scale_weight, ComfyUI's comfy/utils.py convert_old_quants).
Sequences are 192 tokens (not 512) to keep a 2-core CPU fast; a 161-token prompt
still exercises the logarithmic position buckets (distance >= 8, up to 128+).
"""

from __future__ import annotations

import functools
import os
import pickle

import gguf
import numpy as np
import pytest
import torch

from wan4step.errors import FormatError, MissingFileError, WrongModelError
from wan4step.quant.weights import QuantWeight
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
from wan4step.umt5 import (
    LAYOUTS,
    UMT5_XXL,
    UMT5Encoder,
    UMT5Tokenizer,
    build_encoder,
    canonical_shapes,
    clean_text,
    config_from_shapes,
    file_tokenizer,
    from_canonical,
    load_text_encoder,
    read_umt5,
    to_canonical,
)
from wan4step.umt5.tokenizer import SpieceSpec, resolve_tokenizer, spiece_from_gguf

Q = gguf.GGMLQuantizationType
L = 192
PROMPTS = ["A cat walks along the beach at sunset, cinematic lighting", "a robot " * 80]


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return tiny_umt5_state_dict()


@pytest.fixture(scope="module")
def spiece() -> bytes:
    return tiny_spiece_model()


@pytest.fixture(scope="module")
def files(tmp_path_factory, sd, spiece) -> dict[str, str]:
    d = tmp_path_factory.mktemp("umt5")
    return {
        "comfy_fp16": str(write_comfy(d / "umt5_xxl_fp16.safetensors", sd, spiece)),
        "comfy_fp8_scaled": str(write_comfy_fp8_scaled(d / "umt5_xxl_fp8_e4m3fn_scaled.safetensors", sd, spiece)),
        "lightx2v_bf16": str(write_lightx2v_pth(d / "models_t5_umt5-xxl-enc-bf16.pth", sd, "bf16")),
        "lightx2v_fp8": str(write_lightx2v_pth(d / "models_t5_umt5-xxl-enc-fp8.pth", sd, "fp8")),
        "lightx2v_int8": str(write_lightx2v_pth(d / "models_t5_umt5-xxl-enc-int8.pth", sd, "int8")),
        "gguf_q8_0": str(write_gguf(d / "umt5-xxl-encoder-Q8_0.gguf", sd, spiece)),
        "gguf_q4_k": str(write_gguf(d / "umt5-xxl-encoder-Q4_K.gguf", sd, spiece, qtype=Q.Q4_K, embed_qtype=Q.Q4_K)),
        "tokenizer_dir": str(write_tokenizer_dir(d / "google" / "umt5-xxl", spiece)),
    }


@pytest.fixture(scope="module")
def batch(spiece):
    return UMT5Tokenizer(spiece)(PROMPTS, length=L)


def hf_encode(weights: dict[str, torch.Tensor], ids, mask) -> torch.Tensor:
    """transformers' UMT5EncoderModel (fp32) on the given canonical weights, padding zeroed."""
    from transformers import UMT5Config, UMT5EncoderModel

    c = TINY_UMT5
    model = UMT5EncoderModel(UMT5Config(
        vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff, num_layers=c.num_layers,
        num_heads=c.num_heads, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
        relative_attention_max_distance=128, dropout_rate=0.0)).eval()
    result = model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    assert set(result.missing_keys) <= {"encoder.embed_tokens.weight"} and not result.unexpected_keys  # tied to shared
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state * mask[..., None]


@functools.cache
def _oracle_cache():
    return {}


def oracle(name, weights, ids, mask):
    cache = _oracle_cache()
    if name not in cache:
        cache[name] = hf_encode(weights, ids, mask)
    return cache[name]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# -- architecture --------------------------------------------------------------------------


def test_config_from_shapes_reads_tiny_and_xxl():
    assert config_from_shapes(canonical_shapes(TINY_UMT5)) == TINY_UMT5
    assert config_from_shapes(canonical_shapes(UMT5_XXL)) == UMT5_XXL
    assert UMT5_XXL.name == "UMT5-XXL" and abs(UMT5_XXL.param_count() / 1e9 - 5.68) < 0.05


def test_engine_matches_transformers_umt5(sd, batch):
    ids, mask = batch
    assert int(mask[1].sum()) > 128  # long prompt: buckets beyond max_distance are used
    model = UMT5Encoder(TINY_UMT5)
    model.load_weights(sd)
    ours = model.encode(ids, mask)
    ref = oracle("fp32", sd, ids, mask)
    assert ours.shape == (2, L, 4096)
    assert (ours[0, int(mask[0].sum()):] == 0).all()
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=2e-5)


def test_intermediate_layer_matches_transformers_hidden_state(sd, batch):
    from transformers import UMT5Config, UMT5EncoderModel

    ids, mask = batch
    model = UMT5Encoder(TINY_UMT5)
    model.load_weights(sd)
    with torch.no_grad():
        _, inter = model(ids[:1], mask[:1], intermediate_output=0, final_layer_norm_intermediate=False)
        c = TINY_UMT5
        hf = UMT5EncoderModel(UMT5Config(vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
                                         num_layers=c.num_layers, num_heads=c.num_heads,
                                         feed_forward_proj="gated-gelu", dropout_rate=0.0)).eval()
        hf.load_state_dict(sd, strict=False)
        hidden = hf(input_ids=ids[:1], attention_mask=mask[:1], output_hidden_states=True).hidden_states[1]
    n = int(mask[0].sum())
    torch.testing.assert_close(inter[:, :n], hidden[:, :n], rtol=1e-4, atol=2e-5)


# -- key maps ------------------------------------------------------------------------------

WAN_BLOCK0 = {  # the original Wan2.1 t5.py / LightX2V names, as released
    "encoder.block.0.layer.0.SelfAttention.q.weight": "blocks.0.attn.q.weight",
    "encoder.block.0.layer.0.SelfAttention.o.weight": "blocks.0.attn.o.weight",
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": "blocks.0.pos_embedding.embedding.weight",
    "encoder.block.0.layer.0.layer_norm.weight": "blocks.0.norm1.weight",
    "encoder.block.0.layer.1.DenseReluDense.wi_0.weight": "blocks.0.ffn.gate.0.weight",
    "encoder.block.0.layer.1.DenseReluDense.wi_1.weight": "blocks.0.ffn.fc1.weight",
    "encoder.block.0.layer.1.DenseReluDense.wo.weight": "blocks.0.ffn.fc2.weight",
    "encoder.block.0.layer.1.layer_norm.weight": "blocks.0.norm2.weight",
    "shared.weight": "token_embedding.weight",
    "encoder.final_layer_norm.weight": "norm.weight",
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_key_maps_round_trip_both_ways(layout):
    keys = list(canonical_shapes(UMT5_XXL))
    names = [from_canonical(k, layout) for k in keys]
    assert len(set(names)) == len(keys)
    assert [to_canonical(n, layout) for n in names] == keys
    assert to_canonical("blocks.0.attn.q.bias", layout) is None
    assert to_canonical("encoder.block.0.layer.2.foo.weight", layout) is None


def test_key_maps_agree_with_wan_names_and_llama_cpp():
    for canon, wan in WAN_BLOCK0.items():
        assert from_canonical(canon, "wan") == wan
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.T5ENCODER, UMT5_XXL.num_layers)
    for canon in canonical_shapes(UMT5_XXL):
        assert from_canonical(canon, "gguf") == names.get_name(canon, try_suffixes=(".weight",)), canon


# -- formats -------------------------------------------------------------------------------

EXPECT = {
    "comfy_fp16": ("safetensors", "comfy", "fp16"),
    "comfy_fp8_scaled": ("safetensors", "comfy", "fp8_e4m3fn_scaled (per-tensor scale)"),
    "lightx2v_bf16": ("pth", "wan", "bf16"),
    "lightx2v_fp8": ("pth", "wan", "fp8 (per-row scale)"),
    "lightx2v_int8": ("pth", "wan", "int8 (per-row scale)"),
    "gguf_q8_0": ("gguf", "gguf", "GGUF Q8_0"),
    "gguf_q4_k": ("gguf", "gguf", "GGUF Q4_K"),
}


@pytest.mark.parametrize("name", list(EXPECT))
def test_every_layout_reads_into_the_canonical_space(files, name):
    f = read_umt5(files[name])
    assert (f.container, f.layout, f.encoding) == EXPECT[name]
    assert f.config == TINY_UMT5
    assert set(f.state) == set(canonical_shapes(TINY_UMT5))
    assert f.activation_quant == (name in ("lightx2v_fp8", "lightx2v_int8"))  # LightX2V runs them W8A8
    assert (f.spiece_model is not None) == name.startswith("comfy")
    assert (f.gguf_tokenizer is not None) == name.startswith("gguf")


def _expected_weights(name: str, path: str) -> dict[str, torch.Tensor]:
    """Decode each file with code that is not the reader under test."""
    if name.startswith("gguf"):
        # raw bytes via the fast reader (checked against gguf.GGUFReader below, which takes
        # seconds on the tokenizer metadata), decoded by gguf's numpy reference
        from wan4step.umt5.gguf_reader import read_gguf

        back = {from_canonical(k, "gguf"): k for k in canonical_shapes(TINY_UMT5)}
        out = {}
        for t in read_gguf(path)[1]:
            arr = gguf.quants.dequantize(np.asarray(t.data).reshape(t.shape[0] if len(t.shape) > 1 else 1, -1), t.qtype)
            out[back[t.name]] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(t.shape)
        return out
    if name == "comfy_fp8_scaled":
        from safetensors import safe_open

        out = {}
        with safe_open(path, framework="pt") as f:
            for k in f.keys():
                if k.endswith(".weight"):
                    w = f.get_tensor(k).float()
                    s = k[: -len(".weight")] + ".scale_weight"
                    out[k] = w * f.get_tensor(s).float() if s in f.keys() else w
        return out
    raw = torch.load(path, weights_only=True)
    back = {from_canonical(k, "wan"): k for k in canonical_shapes(TINY_UMT5)}
    return {back[k]: (v.float() * raw[k + "_scale"].float() if k + "_scale" in raw else v.float())
            for k, v in raw.items() if not k.endswith("_scale")}


@pytest.mark.parametrize("name", ["comfy_fp8_scaled", "lightx2v_fp8", "lightx2v_int8", "gguf_q8_0", "gguf_q4_k"])
def test_quantized_formats_compute_exactly_on_their_decoded_weights(files, batch, name):
    """Weight-only path vs transformers on independently decoded weights: the reader, the
    key map, scales, GGUF blocks and the quantized-embedding row lookup are all exact."""
    ids, mask = batch
    model = build_encoder(read_umt5(files[name]))
    model.activation_quant = False
    ours = model.encode(ids[:1], mask[:1])
    ref = hf_encode(_expected_weights(name, files[name]), ids[:1], mask[:1])
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=5e-5)


# Output error vs the fp32 model, relative L2. The tiny random model amplifies weight error
# ~3x (bf16's 2^-9 rounding gives 0.6 %); per-weight rms errors: fp16 0.03 %, bf16 0.2 %,
# Q8_0 0.4 %, int8 row-absmax/127 ~1 %, fp8 e4m3 (3 mantissa bits) ~2.5 % (per-tensor scale
# the same, the exponent absorbs it), Q4_K ~6 %; W8A8 adds the same error again on the
# activations. Bounds are 1.5-2.5x the measured values; a wrong key map, scale or transposition
# gives errors of order 1.
TOLERANCE = {"comfy_fp16": 0.002, "lightx2v_bf16": 0.012, "gguf_q8_0": 0.03, "lightx2v_int8": 0.05,
             "comfy_fp8_scaled": 0.1, "lightx2v_fp8": 0.14, "gguf_q4_k": 0.3}


@pytest.mark.parametrize("name", list(TOLERANCE))
def test_formats_within_their_quantization_error_of_fp32(files, sd, batch, name):
    ids, mask = batch
    ref = oracle("fp32", sd, ids, mask)
    ours = build_encoder(read_umt5(files[name])).encode(ids, mask)  # W8A8 for LightX2V fp8/int8
    assert rel(ours, ref) < TOLERANCE[name]


# -- tokenizer -----------------------------------------------------------------------------


def test_tiny_tokenizer_is_deterministic(spiece):
    tiny_spiece_model.cache_clear()
    assert tiny_spiece_model() == spiece
    tok = UMT5Tokenizer(spiece)
    assert (tok.pad_id, tok.eos_id, tok.num_pieces) == (0, 1, 500)


def test_clean_text_is_wans():
    assert clean_text("  a  cat\n\t walks  ") == "a cat walks"
    assert clean_text("rock &amp;amp; roll") == "rock & roll"  # html.unescape twice
    assert clean_text("cafÃ© crÃ¨me") == "café crème"  # ftfy repairs mojibake


def test_tokenizer_is_sentencepiece_plus_eos_padded_and_truncated(spiece):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_proto=spiece)
    tok = UMT5Tokenizer(spiece)
    text = "A  cat &amp; a dog\nrun, cinematic lighting"
    ids, mask = tok([text, "x " * 600])
    expect = sp.encode(clean_text(text)) + [1]
    assert ids[0, : len(expect)].tolist() == expect and (ids[0, len(expect):] == 0).all()
    assert mask[0].sum() == len(expect) and ids.shape == (2, 512)
    assert mask[1].all() and ids[1, -1] == 1  # truncated to 511 tokens + </s>, like Wan's HF tokenizer


def test_spiece_proto_round_trip(spiece):
    import sentencepiece

    spec = SpieceSpec.parse(spiece)
    assert (spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id) == (0, 1, 2, -1)
    assert spec.normalizer_name == "nmt_nfkc" and len(spec.precompiled_charsmap) > 1000
    again = SpieceSpec.parse(spec.serialize())
    assert again == spec
    a = sentencepiece.SentencePieceProcessor(model_proto=spiece)
    b = sentencepiece.SentencePieceProcessor(model_proto=spec.serialize())
    text = "Über crème ＡＢＣ ½  café, “quoted” — a cat 12 frames"
    assert a.encode(text) == b.encode(text)


def test_tokenizer_rebuilt_from_gguf_metadata_matches_original(files, spiece):
    f = read_umt5(files["gguf_q8_0"])
    rebuilt = UMT5Tokenizer(spiece_from_gguf(f.gguf_tokenizer))
    orig = UMT5Tokenizer(spiece)
    for text in ["Über crème ＡＢＣ ½  café", "a panda climbs a frozen river, 4k, highly detailed", "zqxv ☃ 中文"]:
        assert rebuilt.ids(text) == orig.ids(text)


def test_tokenizer_resolution_order(files, tmp_path, spiece):
    # LightX2V: the .pth has no tokenizer; the google/umt5-xxl folder beside it is found
    tok = file_tokenizer(read_umt5(files["lightx2v_bf16"]))
    assert tok.source.endswith(os.path.join("google", "umt5-xxl"))
    assert "embedded" in file_tokenizer(read_umt5(files["comfy_fp16"])).source
    assert "GGUF metadata" in file_tokenizer(read_umt5(files["gguf_q8_0"])).source
    # an explicit folder wins over the embedded one
    assert file_tokenizer(read_umt5(files["comfy_fp16"]), files["tokenizer_dir"]).source == files["tokenizer_dir"]


def test_missing_tokenizer_is_a_clear_error(tmp_path, sd):
    p = write_lightx2v_pth(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", sd, "bf16")
    with pytest.raises(MissingFileError) as e:
        file_tokenizer(read_umt5(p))
    msg = str(e.value)
    assert str(p) in msg and os.path.join("google", "umt5-xxl", "spiece.model") in msg and "Fix:" in msg
    only_json = tmp_path / "tok"
    only_json.mkdir()
    (only_json / "tokenizer.json").write_text("{}")
    with pytest.raises(MissingFileError, match="only tokenizer.json"):
        resolve_tokenizer(p, folder=only_json)


def test_tokenizer_bigger_than_the_embedding_is_refused(tmp_path, sd, spiece):
    small = {k: (v[:300] if k == "shared.weight" else v) for k, v in sd.items()}
    p = write_comfy(tmp_path / "small_vocab.safetensors", small, spiece)
    with pytest.raises(WrongModelError, match="500 pieces but the model's embedding has only 300 rows"):
        file_tokenizer(read_umt5(p))


def test_load_text_encoder_end_to_end(files):
    te = load_text_encoder(files["lightx2v_bf16"])
    context, mask = te.encode(["a cat"])
    n = int(mask.sum())
    assert context.shape == (1, 512, 4096) and n == len(te.tokenizer.ids("a cat"))
    assert context[0, :n].abs().sum(-1).min() > 0 and (context[0, n:] == 0).all()


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["comfy_fp16", "lightx2v_bf16", "gguf_q8_0"])
def test_truncated_file_says_so(files, tmp_path, name):
    src = open(files[name], "rb").read()
    p = tmp_path / os.path.basename(files[name])
    p.write_bytes(src[: len(src) * 2 // 3])
    with pytest.raises(FormatError, match="truncated") as e:
        read_umt5(p)
    assert str(p) in str(e.value) and "download" in str(e.value)


def test_empty_file(tmp_path):
    p = tmp_path / "umt5.safetensors"
    p.write_bytes(b"")
    with pytest.raises(FormatError, match="empty or truncated"):
        read_umt5(p)


class _Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_pth_with_pickled_code_is_refused(tmp_path, sd):
    p = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    with open(p, "wb") as f:
        torch.save({"token_embedding.weight": sd["shared.weight"], "x": _Payload()}, f)
    with pytest.raises(FormatError, match="refused to load: the .pth file contains pickled Python code"):
        read_umt5(p)
    p2 = tmp_path / "legacy.pth"
    p2.write_bytes(pickle.dumps({"a": _Payload()}, protocol=2))
    with pytest.raises(FormatError, match="refused|cannot read"):
        read_umt5(p2)


def test_t5_xxl_v1_1_is_named(tmp_path, sd):
    """Flux/SD3's T5-XXL has UMT5-XXL's widths, but a bias table in layer 0 only."""
    t5 = {k: v for k, v in sd.items() if not (k.endswith("relative_attention_bias.weight") and ".block.0." not in k)}
    p = write_comfy(tmp_path / "t5xxl_fp16.safetensors", t5)
    with pytest.raises(WrongModelError, match="T5 v1.1 encoder .e.g. the T5-XXL of Flux / SD3., not UMT5") as e:
        read_umt5(p)
    assert "umt5_xxl_fp16.safetensors" in str(e.value)


def test_clip_l_is_named(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "clip_l.safetensors"
    save_file({"text_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(8, 4),
               "text_model.embeddings.token_embedding.weight": torch.zeros(8, 4)}, str(p))
    with pytest.raises(WrongModelError, match="CLIP text encoder") as e:
        read_umt5(p)
    assert str(p) in str(e.value)


def test_narrow_umt5_is_refused(tmp_path):
    from wan4step.umt5.model import UMT5Config

    base = UMT5Config(vocab_size=64, d_model=64, d_kv=16, d_ff=96, num_heads=4, num_layers=2)
    p = write_comfy(tmp_path / "umt5_base.safetensors", {k: torch.zeros(s) for k, s in canonical_shapes(base).items()})
    with pytest.raises(WrongModelError, match="4096-wide"):
        read_umt5(p)


def test_missing_tensor_is_named(tmp_path, sd):
    broken = dict(sd)
    del broken["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    f = read_umt5(write_comfy(tmp_path / "broken.safetensors", broken))
    with pytest.raises(FormatError, match=r"missing \['encoder.block.1.layer.1.DenseReluDense.wo.weight'\]"):
        build_encoder(f)


def test_diffusion_model_gguf_is_refused(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "wan.gguf"), arch="wan")
    w.add_tensor("blocks.0.self_attn.q.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(WrongModelError, match="Wan diffusion model, not a UMT5 text encoder"):
        read_umt5(tmp_path / "wan.gguf")


def test_fast_gguf_reader_agrees_with_gguf_reader(files):
    from wan4step.umt5.gguf_reader import read_gguf

    meta, tensors = read_gguf(files["gguf_q4_k"])
    ref = gguf.GGUFReader(files["gguf_q4_k"])
    assert [t.name for t in tensors] == [t.name for t in ref.tensors]
    for ours, theirs in zip(tensors, ref.tensors, strict=True):
        assert ours.qtype == int(theirs.tensor_type)
        assert ours.shape == tuple(reversed(theirs.shape.tolist()))
        assert np.array_equal(ours.data.reshape(-1), np.asarray(theirs.data).view(np.uint8).reshape(-1))
    assert meta["general.architecture"] == "t5encoder" and len(meta["tokenizer.ggml.tokens"]) == 500


def test_quantized_embedding_decodes_only_looked_up_rows(files):
    f = read_umt5(files["gguf_q8_0"])
    assert isinstance(f.state["shared.weight"], QuantWeight)
    model = build_encoder(f)
    rows = model.shared(torch.tensor([[3, 4, 3]]))
    full = f.state["shared.weight"].dequantize(torch.float32)
    torch.testing.assert_close(rows[0], full[[3, 4, 3]])


def test_wan_names_in_a_safetensors_file_load(tmp_path, sd):
    """e.g. Kijai's umt5-xxl-enc-bf16.safetensors: LightX2V/Wan names, safetensors container."""
    from safetensors.torch import save_file

    p = tmp_path / "umt5-xxl-enc-bf16.safetensors"
    save_file({from_canonical(k, "wan"): v.to(torch.bfloat16) for k, v in sd.items()}, str(p))
    f = read_umt5(p)
    assert (f.container, f.layout, f.encoding, f.config) == ("safetensors", "wan", "bf16", TINY_UMT5)


def test_unsupported_comfy_quant_format_is_named(tmp_path, sd):
    import json

    from safetensors.torch import save_file

    from wan4step.errors import UnsupportedQuantError

    out = {k: v.half() for k, v in sd.items()}
    layer = "encoder.block.0.layer.0.SelfAttention.q"
    out[layer + ".comfy_quant"] = torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8)
    p = tmp_path / "umt5_nvfp4.safetensors"
    save_file(out, str(p))
    with pytest.raises(UnsupportedQuantError, match=f"layer '{layer}' uses ComfyUI quantization format 'nvfp4'"):
        read_umt5(p)


def test_clean_text_without_ftfy_warns_once_and_keeps_the_prompt(monkeypatch, caplog):
    """A server missing the optional repair package still encodes (one warning, not a failed job)."""
    import sys

    from wan4step.umt5 import tokenizer as tok

    monkeypatch.setitem(sys.modules, "ftfy", None)  # import ftfy -> ImportError
    monkeypatch.setattr(tok, "_warned_ftfy", [])
    with caplog.at_level("WARNING", logger="wan4step"):
        assert tok.clean_text("  a &amp;amp; red   fox \n") == "a & red fox"
        assert tok.clean_text("second") == "second"
    assert sum("ftfy" in r.getMessage() for r in caplog.records) == 1
