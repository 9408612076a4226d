"""A tiny UMT5 encoder + sentencepiece tokenizer, and writers for every supported layout.

d_model is 4096 because the Wan DiT's text embedding is 4096 wide (and
ComfyUI's Wan detection assumes it); everything else is small: 2 layers,
2 heads of 64, d_ff 256, a 512-row embedding and a ~500-piece tokenizer trained
here, deterministically, on generated video prompts. ~12 M parameters.

The writers mirror the real files' conventions (see `wan4step.umt5.formats`):
Comfy-Org fp16 / fp8_e4m3fn_scaled safetensors with an embedded `spiece_model`,
LightX2V `.pth` (Wan names; fp8/int8 with per-row `weight_scale`, like its
converter), city96/llama.cpp GGUF (`t5encoder`, tokenizer as metadata), and
the `google/umt5-xxl` tokenizer folder LightX2V ships beside its `.pth`.
"""

from __future__ import annotations

import functools
import io
import json
import random
from pathlib import Path

import torch

from ..quant.gguf_encode import encode as gguf_encode
from ..quant.scaled import quantize_rowwise
from ..umt5.formats import COMFY, GGUF_LAYOUT, WAN, from_canonical
from ..umt5.model import LINEARS, UMT5Config, canonical_shapes
from ..umt5.tokenizer import EOS_ID, PAD_ID, SPIECE_FILE, UNK_ID, SpieceSpec

TINY_UMT5 = UMT5Config(vocab_size=512, d_model=4096, d_kv=64, d_ff=256, num_heads=2, num_layers=2)
TINY_SPIECE_PIECES = 500  # < vocab_size, like UMT5-XXL's 256300 pieces in 256384 rows

_SUBJECTS = ["a cat", "a small dog", "an old man", "a young woman", "two horses", "a red car", "a robot",
             "a flock of birds", "a fisherman", "children", "a dragon", "a cyclist", "a chef", "a ballerina",
             "a golden retriever", "an astronaut", "a sailboat", "a train", "a panda", "a street musician"]
_ACTIONS = ["walks along", "runs across", "dances on", "flies over", "sits beside", "jumps into", "drives through",
            "sleeps under", "plays near", "looks at", "swims in", "climbs", "paints", "cooks in", "rides through"]
_PLACES = ["the beach at sunset", "a snowy forest", "a busy city street", "a quiet lake", "the mountains",
           "a neon-lit alley", "a wheat field", "an ancient temple", "the ocean waves", "a rainy café",
           "a desert canyon", "a flower garden", "the night sky", "a crowded market", "a frozen river"]
_STYLES = ["cinematic lighting", "slow motion", "aerial view", "close-up shot", "4k, highly detailed",
           "soft focus", "vintage film look", "warm colors", "dramatic clouds", "handheld camera",
           "wide angle", "golden hour", "studio lighting", "shallow depth of field", "timelapse"]
_ADJECTIVES = ["bright", "misty", "ancient", "futuristic", "colorful", "gloomy", "peaceful", "chaotic", "tiny",
               "enormous", "shiny", "dusty", "frozen", "burning", "floating", "glowing", "wooden", "metallic",
               "transparent", "fluffy", "elegant", "rusty", "electric", "velvet", "crystal", "marble", "paper"]
_COLORS = ["crimson", "turquoise", "violet", "amber", "emerald", "silver", "ivory", "indigo", "scarlet", "cobalt",
           "magenta", "olive", "charcoal", "lavender", "bronze", "teal", "peach", "mustard", "jade", "azure"]
_EXTRA = ["Über den Dächern", "crème brûlée", "naïve façade", "São Paulo", "Zürich", "el niño", "déjà vu",
          "“quoted” words", "rock & roll", "100% real", "3 people, 2 cats", "hello — world", "A.I. generated"]


def tiny_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        s = (f"{rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)} {rng.choice(_PLACES)}, {rng.choice(_STYLES)}, "
             f"{rng.choice(_ADJECTIVES)} {rng.choice(_COLORS)} {rng.choice(_ADJECTIVES)} light, {rng.randint(1, 9999)} frames")
        if rng.random() < 0.2:
            s += f", {rng.choice(_EXTRA)}"
        if rng.random() < 0.3:
            s = s.capitalize() + "."
        lines.append(s)
    return lines


@functools.lru_cache(maxsize=1)
def tiny_spiece_model() -> bytes:
    """A UMT5-style unigram sentencepiece model (pad 0, eos 1, unk 2, no bos, NFKC).

    Deterministic: one thread, fixed seed, fixed corpus (a test checks it).
    """
    import sentencepiece as spm

    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(0)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()),
        model_writer=buf,
        vocab_size=TINY_SPIECE_PIECES,
        model_type="unigram",
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        num_threads=1,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return buf.getvalue()


def tiny_umt5_state_dict(cfg: UMT5Config = TINY_UMT5, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 canonical weights, scaled so activations stay O(1) and every part matters
    (attention logits ~1 although T5 does not scale them, a visible position bias)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in canonical_shapes(cfg).items():
        t = torch.randn(shape, generator=g)
        if key == "shared.weight":
            t = 0.5 * t
        elif key.endswith("relative_attention_bias.weight"):
            t = 0.5 * t
        elif key.endswith("layer_norm.weight"):
            t = 1.0 + 0.1 * t
        elif key.endswith(("SelfAttention.q.weight", "SelfAttention.k.weight")):
            t = t / (shape[1] ** 0.5 * cfg.d_kv ** 0.25)
        else:
            t = t / shape[1] ** 0.5
        sd[key] = t.contiguous()
    return sd


def _is_linear(key: str) -> bool:
    return any(key.endswith(lin + ".weight") for lin in LINEARS)


# -- writers ----------------------------------------------------------------------------


def write_comfy(path: str | Path, sd: dict[str, torch.Tensor], spiece: bytes | None = None,
                dtype: torch.dtype = torch.float16) -> Path:
    """Comfy-Org `umt5_xxl_fp16.safetensors` layout (canonical names + `spiece_model`)."""
    from safetensors.torch import save_file

    out = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    if spiece is not None:
        out["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8).clone()
    save_file(out, str(path))
    return Path(path)


def write_comfy_fp8_scaled(path: str | Path, sd: dict[str, torch.Tensor], spiece: bytes | None = None) -> Path:
    """Comfy-Org `umt5_xxl_fp8_e4m3fn_scaled.safetensors`: fp8 linears with one float32
    `scale_weight` each (decoded = fp8 * scale), a `scaled_fp8` marker, the rest fp16."""
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in sd.items():
        if _is_linear(k):
            scale = v.float().abs().amax().clamp(min=1e-12) / 448.0
            out[k] = (v.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
            out[k[: -len(".weight")] + ".scale_weight"] = scale.reshape(())
        else:
            out[k] = v.to(torch.float16).contiguous()
    if spiece is not None:
        out["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8).clone()
    save_file(out, str(path))
    return Path(path)


def write_lightx2v_pth(path: str | Path, sd: dict[str, torch.Tensor], kind: str = "bf16") -> Path:
    """LightX2V `models_t5_umt5-xxl-enc-{bf16,fp8,int8}.pth` (original Wan names).

    fp8/int8: the attn/ffn linears quantized per row with a float32 `weight_scale`
    [out, 1]; everything else bf16 (the converter's `--non_linear_dtype torch.bfloat16`).
    """
    if kind not in ("bf16", "fp8", "int8"):
        raise ValueError(kind)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        name = from_canonical(k, WAN)
        if kind != "bf16" and _is_linear(k):
            # the converter quantizes the released bf16 weights; scales come out bf16 [out, 1]
            q, scale = quantize_rowwise(v.to(torch.bfloat16), kind)
            out[name] = q
            out[name + "_scale"] = scale
        else:
            out[name] = v.to(torch.bfloat16).contiguous()
    torch.save(out, str(path))
    return Path(path)


def write_gguf(path: str | Path, sd: dict[str, torch.Tensor], spiece: bytes | None = None,
               qtype: int | None = None, embed_qtype: int | None = None) -> Path:
    """city96 / llama.cpp `umt5-xxl-encoder-*.gguf`: arch `t5encoder`, llama.cpp names,
    linears (and the token embedding) in a ggml quant type (K-quants through the pack's
    encoder; Q8_0 where a row is not a whole number of blocks), norms and bias tables F32,
    the tokenizer as `tokenizer.ggml.*` metadata."""
    import gguf
    import numpy as np

    Q = gguf.GGMLQuantizationType
    qtype = Q.Q8_0 if qtype is None else Q(qtype)
    embed_qtype = Q.Q8_0 if embed_qtype is None else Q(embed_qtype)
    w = gguf.GGUFWriter(str(path), arch="t5encoder")
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    d, f = shapes["shared.weight"][1], shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]
    heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][1]
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block."))
    w.add_context_length(512)
    w.add_embedding_length(d)
    w.add_feed_forward_length(f)
    w.add_block_count(layers)
    w.add_head_count(heads)
    w.add_key_length(shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0] // heads)
    w.add_value_length(shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0] // heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_relative_attn_buckets_count(shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][0])
    if spiece is not None:
        spec = SpieceSpec.parse(spiece)
        w.add_tokenizer_model("t5")
        w.add_token_list([p for p, _, _ in spec.pieces])
        w.add_token_scores([s for _, s, _ in spec.pieces])
        w.add_token_types([t for _, _, t in spec.pieces])
        w.add_add_space_prefix(spec.add_dummy_prefix)
        w.add_remove_extra_whitespaces(spec.remove_extra_whitespaces)
        if spec.precompiled_charsmap:
            w.add_precompiled_charsmap(spec.precompiled_charsmap)
        w.add_unk_token_id(spec.unk_id)
        w.add_eos_token_id(spec.eos_id)
        w.add_pad_token_id(spec.pad_id)
    for k, v in sd.items():
        name = from_canonical(k, GGUF_LAYOUT)
        arr = v.float().numpy()
        if _is_linear(k) or k == "shared.weight":
            t = embed_qtype if k == "shared.weight" else qtype
            if arr.shape[-1] % gguf.GGML_QUANT_SIZES[t][0]:
                t = Q.Q8_0  # llama-quantize's fallback when a row is not a whole number of K-blocks
            data = gguf_encode(arr, t)
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=t)
        else:
            w.add_tensor(name, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def write_tokenizer_dir(folder: str | Path, spiece: bytes) -> Path:
    """The `google/umt5-xxl` folder LightX2V ships (only `spiece.model` is read)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPIECE_FILE).write_bytes(spiece)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
         "extra_ids": 0, "model_max_length": 512}))
    return folder


LAYOUT_WRITERS = {COMFY: write_comfy, WAN: write_lightx2v_pth, GGUF_LAYOUT: write_gguf}
