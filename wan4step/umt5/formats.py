"""UMT5 checkpoints in the four layouts people download, read into one key space.

Canonical keys are ComfyUI's / transformers' T5 names (`shared.weight`,
`encoder.block.N.layer.0.SelfAttention.q.weight`, ...): they are what the
Comfy-Org files already use, what ComfyUI's LoRA loader and CLIPSave expect,
and what the `transformers` oracle loads. Layouts:

| layout  | who ships it                                   | names                                   |
| ------- | ---------------------------------------------- | --------------------------------------- |
| comfy   | Comfy-Org umt5_xxl_fp16 / _fp8_e4m3fn_scaled    | canonical (+ `scale_weight`, `scaled_fp8`, `spiece_model`) |
| wan     | LightX2V / Wan2.1 models_t5_umt5-xxl-enc-*.pth  | `token_embedding`, `blocks.N.attn.q`, `ffn.gate.0`/`fc1`/`fc2`, `norm1/2` (+ `weight_scale`) |
| gguf    | city96 umt5-xxl-encoder-*.gguf (llama.cpp)      | `token_embd`, `enc.blk.N.attn_q`, `ffn_gate`/`ffn_up`/`ffn_down` |

The container (safetensors / .pth / GGUF) is sniffed from the bytes and the
layout from the key names, so e.g. a Wan-named safetensors file also loads.
Quantized weights come back as `QuantWeight`; nothing is dequantized here.
"""

from __future__ import annotations

import json
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FormatError, UnsupportedQuantError, WrongModelError, describe_head
from ..formats.pth_file import read_pth
from ..quant.weights import FP8, GGUF, INT8, QuantWeight
from .model import UMT5Config, block_index, config_from_shapes

COMFY, WAN, GGUF_LAYOUT = "comfy", "wan", "gguf"
LAYOUTS = (COMFY, WAN, GGUF_LAYOUT)

# canonical block-relative name -> (wan name, gguf name)
_BLOCK_NAMES: dict[str, tuple[str, str]] = {
    "layer.0.SelfAttention.q.weight": ("attn.q.weight", "attn_q.weight"),
    "layer.0.SelfAttention.k.weight": ("attn.k.weight", "attn_k.weight"),
    "layer.0.SelfAttention.v.weight": ("attn.v.weight", "attn_v.weight"),
    "layer.0.SelfAttention.o.weight": ("attn.o.weight", "attn_o.weight"),
    "layer.0.SelfAttention.relative_attention_bias.weight": ("pos_embedding.embedding.weight", "attn_rel_b.weight"),
    "layer.0.layer_norm.weight": ("norm1.weight", "attn_norm.weight"),
    "layer.1.DenseReluDense.wi_0.weight": ("ffn.gate.0.weight", "ffn_gate.weight"),  # the GELU branch
    "layer.1.DenseReluDense.wi_1.weight": ("ffn.fc1.weight", "ffn_up.weight"),  # the linear branch
    "layer.1.DenseReluDense.wo.weight": ("ffn.fc2.weight", "ffn_down.weight"),
    "layer.1.layer_norm.weight": ("norm2.weight", "ffn_norm.weight"),
}
_GLOBAL_NAMES: dict[str, tuple[str, str]] = {
    "shared.weight": ("token_embedding.weight", "token_embd.weight"),
    "encoder.final_layer_norm.weight": ("norm.weight", "enc.output_norm.weight"),
}
_BLOCK_PREFIX = {COMFY: "encoder.block.{}.", WAN: "blocks.{}.", GGUF_LAYOUT: "enc.blk.{}."}
_BLOCK_RES = {name: re.compile("^" + re.escape(p).replace(r"\{\}", r"(\d+)")) for name, p in _BLOCK_PREFIX.items()}
_COL = {WAN: 0, GGUF_LAYOUT: 1}
_FROM_LAYOUT_BLOCK = {lay: {v[_COL[lay]]: k for k, v in _BLOCK_NAMES.items()} for lay in (WAN, GGUF_LAYOUT)}
_FROM_LAYOUT_GLOBAL = {lay: {v[_COL[lay]]: k for k, v in _GLOBAL_NAMES.items()} for lay in (WAN, GGUF_LAYOUT)}


def from_canonical(key: str, layout: str) -> str:
    """Canonical key -> the layout's name (KeyError for a non-canonical key)."""
    if layout == COMFY:
        return key
    if key in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[key][_COL[layout]]
    i = block_index(key)
    if i is None:
        raise KeyError(key)
    rest = key[len(_BLOCK_PREFIX[COMFY].format(i)):]
    return _BLOCK_PREFIX[layout].format(i) + _BLOCK_NAMES[rest][_COL[layout]]


def to_canonical(key: str, layout: str) -> str | None:
    """The layout's name -> canonical key, or None when it is not a UMT5 encoder key."""
    if layout == COMFY:
        i = block_index(key)
        if key in _GLOBAL_NAMES or (i is not None and key[len(_BLOCK_PREFIX[COMFY].format(i)):] in _BLOCK_NAMES):
            return key
        return None
    if key in _FROM_LAYOUT_GLOBAL[layout]:
        return _FROM_LAYOUT_GLOBAL[layout][key]
    m = _BLOCK_RES[layout].match(key)
    if m is None:
        return None
    canon_rest = _FROM_LAYOUT_BLOCK[layout].get(key[m.end():])
    return None if canon_rest is None else _BLOCK_PREFIX[COMFY].format(m.group(1)) + canon_rest


# -- what a file turned out to be ---------------------------------------------------------


@dataclass
class UMT5File:
    path: Path
    container: str  # "safetensors" | "pth" | "gguf"
    layout: str
    encoding: str  # human-readable: "fp16", "bf16", "fp8 (per-row scale)", "GGUF Q8_0", ...
    state: dict[str, torch.Tensor | QuantWeight]
    config: UMT5Config
    activation_quant: bool = True  # see UMT5Encoder
    spiece_model: bytes | None = None  # a tokenizer embedded in the file (Comfy-Org)
    gguf_tokenizer: dict | None = None  # llama.cpp tokenizer metadata (city96 GGUF)
    ignored: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        from ..quant.weights import tensor_nbytes

        return sum(tensor_nbytes(t) for t in self.state.values())


# -- containers ------------------------------------------------------------------------


def sniff_container(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 8:
        raise FormatError("the file is empty or truncated", path=path,
                          fix="download the text encoder again.")
    if head[:4] == b"GGUF":
        return "gguf"
    (n,) = struct.unpack("<Q", head[:8])
    if 0 < n < 100_000_000 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # zip (torch >= 1.6) or legacy pickle
        return "pth"
    raise FormatError(
        "not a model file this loader can read",
        path=path,
        expected="a .safetensors, .pth or .gguf UMT5 text encoder",
        found=describe_head(head),
        fix="pick the UMT5 file itself (not a folder, archive or web page saved by mistake).",
    )


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)`: tensors only; a pickle with code is refused, not run."""
    return read_pth(path, "use the official LightX2V/Wan file (models_t5_umt5-xxl-enc-*.pth) or a .safetensors UMT5")


def _read_gguf(path: Path) -> tuple[dict[str, torch.Tensor | QuantWeight], dict]:
    import gguf

    from .gguf_reader import read_gguf

    try:
        fields, tensors = read_gguf(path)
    except FormatError:
        raise
    except Exception as exc:  # struct/unicode errors on a damaged header
        raise FormatError("cannot read the GGUF file: it is truncated or damaged", path=path,
                          found=f"{type(exc).__name__}: {str(exc)[:160]}",
                          fix="the download was probably interrupted; delete the file and download it again.") from None
    meta = {"arch": fields.get("general.architecture")}
    if meta["arch"] not in ("t5encoder", "t5"):
        what = {"wan": "a Wan diffusion model", "llama": "a Llama text encoder", "qwen2vl": "a Qwen2-VL text encoder",
                "clip": "a CLIP model"}.get(str(meta["arch"]), f"a '{meta['arch']}' model")
        raise WrongModelError(
            f"this GGUF holds {what}, not a UMT5 text encoder",
            path=path,
            expected="general.architecture 't5encoder' (city96 umt5-xxl-encoder-*.gguf)",
            found=f"general.architecture {meta['arch']!r}",
            fix="pick a UMT5-XXL GGUF (e.g. umt5-xxl-encoder-Q8_0.gguf) in the text encoder loader; "
            "diffusion-model GGUFs go in the model loader.",
        )
    tok = {k: fields.get("tokenizer.ggml." + k) for k in (
        "model", "tokens", "scores", "token_type", "add_space_prefix", "remove_extra_whitespaces",
        "precompiled_charsmap", "unknown_token_id", "eos_token_id", "padding_token_id", "bos_token_id")}
    meta["tokenizer"] = tok if tok.get("tokens") else None
    Q = gguf.GGMLQuantizationType
    float_types = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}
    out: dict[str, torch.Tensor | QuantWeight] = {}
    for t in tensors:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the memmap is read-only; nothing writes to it
            data = torch.from_numpy(t.data)
        if t.qtype in float_types:
            out[t.name] = data.view(float_types[t.qtype]).reshape(t.shape)
        else:
            rows = 1
            for s in t.shape[:-1]:
                rows *= s
            out[t.name] = QuantWeight(GGUF, data.reshape(rows, -1), t.shape, None, t.qtype)
    return out, meta


# -- layouts ---------------------------------------------------------------------------

_OTHER_MODELS: tuple[tuple[str, str], ...] = (
    ("text_model.encoder.layers.", "a CLIP text encoder (CLIP-L/G, used by SD/SDXL/Flux)"),
    ("transformer.resblocks.", "an OpenCLIP text encoder"),
    ("vision_model.", "a CLIP vision encoder"),
    ("visual.", "a CLIP vision encoder"),
    ("model.layers.", "a decoder-only LLM text encoder (Llama/Qwen/Gemma)"),
    ("model.diffusion_model.", "a diffusion model checkpoint"),
    ("head.modulation", "a Wan diffusion model"),
    ("patch_embedding.weight", "a Wan diffusion model"),
    ("decoder.conv1.", "a VAE"),
    ("decoder.head.", "a VAE"),
)
_COMFY_MARKERS = ("encoder.final_layer_norm.weight", "shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight")


def detect_layout(keys: list[str], path: Path) -> tuple[str, str]:
    """(layout, key prefix to strip) from the key names; refuses other model kinds by name."""
    keyset = set(keys)
    for marker in _COMFY_MARKERS:
        for k in keys:
            if k.endswith(marker):
                prefix = k[: -len(marker)]
                if prefix + "encoder.block.0.layer.1.DenseReluDense.wi.weight" in keyset:
                    raise WrongModelError(
                        "this is an original T5 (v1.0, ungated FFN), not UMT5", path=path,
                        expected="UMT5-XXL", fix="use umt5_xxl_fp16.safetensors or a LightX2V umt5 .pth.")
                return COMFY, prefix
    if "token_embedding.weight" in keyset or any(k.startswith("blocks.0.attn.") for k in keys):
        return WAN, ""
    if "token_embd.weight" in keyset or any(k.startswith("enc.blk.") for k in keys):
        return GGUF_LAYOUT, ""
    for needle, what in _OTHER_MODELS:
        if any(needle in k for k in keys):
            raise WrongModelError(
                f"this is {what}, not the UMT5-XXL text encoder Wan2.1 uses",
                path=path,
                expected="UMT5-XXL weights (umt5_xxl_*.safetensors, models_t5_umt5-xxl-enc-*.pth, umt5-xxl-encoder-*.gguf)",
                found=f"{len(keys)} tensors such as {', '.join(sorted(keys)[:3])}",
                fix="pick the UMT5-XXL file in 'text_encoder_name'.",
            )
    raise FormatError(
        "no UMT5 encoder weights found in the file",
        path=path,
        expected="keys like 'encoder.block.0.layer.0.SelfAttention.q.weight', 'blocks.0.attn.q.weight' or 'enc.blk.0.attn_q.weight'",
        found=f"{len(keys)} tensors such as {', '.join(sorted(keys)[:3])}",
        fix="pick the UMT5-XXL file in 'text_encoder_name'.",
    )


_SCALE_SUFFIXES = (".weight_scale", ".scale_weight")
_IGNORED_SUFFIXES = (".scale_input", ".input_scale")  # ComfyUI ignores these for text encoders (full-precision mm)
_IGNORED_PREFIXES = ("decoder.", "lm_head.", "encoder.embed_tokens.")  # full T5 checkpoints; embed_tokens == shared


def _scale_of(raw: Mapping[str, torch.Tensor], layout_key: str) -> torch.Tensor | None:
    base = layout_key[: -len(".weight")]
    for suf in _SCALE_SUFFIXES:
        if base + suf in raw:
            return raw[base + suf]
    return None


def _as_weight(key: str, t: torch.Tensor, scale: torch.Tensor | None, path: Path) -> torch.Tensor | QuantWeight:
    """Stored tensor (+ optional scale) -> plain tensor or QuantWeight with a [out, 1] float32 scale."""
    if isinstance(t, QuantWeight):
        return t
    if t.dtype in (torch.float8_e4m3fn, torch.int8) and t.dim() == 2:
        if scale is None:
            if t.dtype == torch.int8:
                raise FormatError(f"int8 tensor '{key}' has no scale", path=path,
                                  expected=f"'{key}_scale' (LightX2V int8)", fix="download the file again.")
            scale = torch.ones(())
        scale = scale.float()
        if scale.numel() == 1:  # Comfy-Org fp8_scaled: one scale per tensor
            scale = scale.reshape(1, 1).expand(t.shape[0], 1).contiguous()
        elif scale.numel() == t.shape[0]:
            scale = scale.reshape(-1, 1)
        else:
            raise FormatError(f"scale of '{key}' has shape {list(scale.shape)}", path=path,
                              expected=f"one value, or [{t.shape[0]}, 1]", fix="download the file again.")
        return QuantWeight(FP8 if t.dtype == torch.float8_e4m3fn else INT8, t, tuple(t.shape), scale)
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):  # 1-D fp8, or e5m2: decode now (exact in bf16)
        out = t.to(torch.bfloat16)
        return out * scale.to(torch.bfloat16) if scale is not None else out
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise UnsupportedQuantError(f"tensor '{key}' is stored as {t.dtype}", path=path,
                                    expected="bf16/fp16/fp32, FP8 e4m3 or INT8 with scales, or GGUF",
                                    fix="use one of the supported UMT5 files (Comfy-Org, LightX2V, city96 GGUF).")
    return t


def _describe(state: Mapping[str, torch.Tensor | QuantWeight], layout: str, comfy_scaled: bool) -> str:
    lin = [v for k, v in state.items() if k.endswith("SelfAttention.q.weight")]
    w = lin[0] if lin else next(iter(state.values()))
    if isinstance(w, QuantWeight):
        if w.kind == GGUF:
            return f"GGUF {w.type_name()}"
        if comfy_scaled:
            return "fp8_e4m3fn_scaled (per-tensor scale)"
        return f"{w.kind} (per-row scale)"
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(w.dtype, str(w.dtype))


def read_umt5(path: str | Path) -> UMT5File:
    """Read any supported UMT5 file into canonical keys; errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FormatError("the text encoder file does not exist", path=path,
                          fix="put the file in ComfyUI/models/text_encoders/ and refresh the page.")
    container = sniff_container(path)
    meta: dict = {}
    if container == "gguf":
        raw, meta = _read_gguf(path)
    elif container == "safetensors":
        from ..formats.safetensors_file import open_safetensors  # zero-copy mmap views, truncation checked

        raw, meta = open_safetensors(path)
    else:
        raw = _read_pth(path)
    spiece = raw.pop("spiece_model", None)
    spiece_bytes = bytes(spiece.to(torch.uint8).numpy().tobytes()) if isinstance(spiece, torch.Tensor) else None
    comfy_scaled = "scaled_fp8" in raw
    raw.pop("scaled_fp8", None)
    layout, prefix = detect_layout(list(raw), path)

    quant_meta = {}
    if isinstance(meta, dict) and "_quantization_metadata" in meta:
        quant_meta = json.loads(meta["_quantization_metadata"]).get("layers", {})
    state: dict[str, torch.Tensor | QuantWeight] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for k, t in raw.items():
        key = k[len(prefix):] if prefix and k.startswith(prefix) else k
        if key.endswith(_SCALE_SUFFIXES) or key.endswith(".comfy_quant"):
            continue
        if key.endswith(_IGNORED_SUFFIXES) or key.startswith(_IGNORED_PREFIXES):
            ignored.append(k)
            continue
        canon = to_canonical(key, layout)
        if canon is None:
            unknown.append(k)
            continue
        layer = key[: -len(".weight")]
        fmt = quant_meta.get(layer, {}).get("format") if quant_meta else None
        if k[: -len(".weight")] + ".comfy_quant" in raw:
            fmt = json.loads(bytes(raw[k[: -len(".weight")] + ".comfy_quant"].tolist()).decode()).get("format")
        if fmt not in (None, "float8_e4m3fn"):
            raise UnsupportedQuantError(f"layer '{layer}' uses ComfyUI quantization format '{fmt}'", path=path,
                                        expected="fp16/bf16, float8_e4m3fn (scaled), LightX2V fp8/int8 or GGUF",
                                        fix="use umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors.")
        state[canon] = _as_weight(k, t, _scale_of(raw, k), path)
    if "shared.weight" not in state and prefix + "encoder.embed_tokens.weight" in raw:
        state["shared.weight"] = raw[prefix + "encoder.embed_tokens.weight"]
    if unknown:
        raise FormatError(
            f"{len(unknown)} tensors are not part of a UMT5 encoder",
            path=path,
            expected=f"only UMT5 encoder tensors ({layout} layout)",
            found=", ".join(sorted(unknown)[:5]),
            fix="the file mixes models or is not a UMT5 text encoder; pick the UMT5-XXL file.",
        )
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    cfg = config_from_shapes(shapes, str(path))
    row_scaled = layout == WAN and any(k.endswith(".weight_scale") for k in raw)
    return UMT5File(
        path=path,
        container=container,
        layout=layout,
        encoding=_describe(state, layout, comfy_scaled or bool(quant_meta)),
        state=state,
        config=cfg,
        # LightX2V's fp8/int8 T5 runs W8A8; ComfyUI runs its scaled-fp8 text encoders weight-only.
        activation_quant=row_scaled,
        spiece_model=spiece_bytes,
        gguf_tokenizer=meta.get("tokenizer") if container == "gguf" else None,
        ignored=ignored,
    )
