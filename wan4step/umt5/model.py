"""The UMT5 encoder Wan2.1 conditions on, in plain torch, sized from the weights.

The module tree mirrors the canonical key space (ComfyUI's / transformers' T5
names: `shared`, `encoder.block.N.layer.0.SelfAttention.q`, ...), so the state
dict of `UMT5Encoder` *is* the canonical dict, ComfyUI's LoRA key mapping and
CLIPSave see the names they know, and every Parameter sits on a leaf module
(ComfyUI's partial loader only moves leaf modules).

UMT5 vs T5 v1.1: every layer has its own relative-position bias table
(T5 shares layer 0's). Attention is unscaled (the 1/sqrt(d) is folded into the
weights at training time). The FFN is gated GELU (tanh): wi_0 is the gate that
goes through GELU, wi_1 the linear branch (Wan's `ffn.gate.0` / `ffn.fc1`).

Every linear is `QuantLinear`, so the weights stay in their stored encoding
(bf16, FP8/INT8 + per-row scale, GGUF blocks) until the matmul.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import FormatError, WrongModelError
from ..quant.linear import QuantLinear
from ..quant.weights import FP8, INT8, QuantWeight

NUM_BUCKETS = 32  # UMT5 (all sizes); read from the bias table's rows anyway
MAX_DISTANCE = 128  # not stored in any checkpoint; 128 for every T5/UMT5 release
WAN_TEXT_DIM = 4096  # the Wan2.1 DiT's text_embedding input width
WAN_TEXT_LEN = 512  # the Wan2.1 DiT was trained on 512-token padded contexts

LINEARS: tuple[str, ...] = (
    "layer.0.SelfAttention.q",
    "layer.0.SelfAttention.k",
    "layer.0.SelfAttention.v",
    "layer.0.SelfAttention.o",
    "layer.1.DenseReluDense.wi_0",
    "layer.1.DenseReluDense.wi_1",
    "layer.1.DenseReluDense.wo",
)
_BLOCK_RE = re.compile(r"^encoder\.block\.(\d+)\.")


@dataclass(frozen=True)
class UMT5Config:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int
    num_buckets: int = NUM_BUCKETS
    max_distance: int = MAX_DISTANCE
    eps: float = 1e-6

    @property
    def inner_dim(self) -> int:
        return self.d_kv * self.num_heads

    @property
    def name(self) -> str:
        if self == UMT5_XXL:
            return "UMT5-XXL"
        return (
            f"UMT5 (d_model {self.d_model}, {self.num_layers} layers, {self.num_heads} heads, "
            f"d_ff {self.d_ff}, vocab {self.vocab_size})"
        )

    def param_count(self) -> int:
        return sum(math.prod(s) for s in canonical_shapes(self).values())


UMT5_XXL = UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=24)


def canonical_shapes(cfg: UMT5Config) -> dict[str, tuple[int, ...]]:
    """Every canonical key of a UMT5 encoder and its (logical) shape."""
    d, inner, f = cfg.d_model, cfg.inner_dim, cfg.d_ff
    out: dict[str, tuple[int, ...]] = {"shared.weight": (cfg.vocab_size, d)}
    for i in range(cfg.num_layers):
        p = f"encoder.block.{i}."
        out[p + "layer.0.SelfAttention.q.weight"] = (inner, d)
        out[p + "layer.0.SelfAttention.k.weight"] = (inner, d)
        out[p + "layer.0.SelfAttention.v.weight"] = (inner, d)
        out[p + "layer.0.SelfAttention.o.weight"] = (d, inner)
        out[p + "layer.0.SelfAttention.relative_attention_bias.weight"] = (cfg.num_buckets, cfg.num_heads)
        out[p + "layer.0.layer_norm.weight"] = (d,)
        out[p + "layer.1.DenseReluDense.wi_0.weight"] = (f, d)
        out[p + "layer.1.DenseReluDense.wi_1.weight"] = (f, d)
        out[p + "layer.1.DenseReluDense.wo.weight"] = (d, f)
        out[p + "layer.1.layer_norm.weight"] = (d,)
    out["encoder.final_layer_norm.weight"] = (d,)
    return out


def block_index(key: str) -> int | None:
    m = _BLOCK_RE.match(key)
    return int(m.group(1)) if m else None


def _need(shapes: Mapping[str, Sequence[int]], key: str, path: str | None) -> tuple[int, ...]:
    if key not in shapes:
        raise FormatError(
            f"the UMT5 weights have no '{key}'",
            path=path,
            expected="a complete UMT5 encoder state dict",
            found=f"{len(shapes)} tensors",
            fix="the file is incomplete or not a UMT5 text encoder; download umt5_xxl_fp16.safetensors "
            "(Comfy-Org) or models_t5_umt5-xxl-enc-bf16.pth (LightX2V) again.",
        )
    return tuple(int(s) for s in shapes[key])


def config_from_shapes(shapes: Mapping[str, Sequence[int]], path: str | None = None) -> UMT5Config:
    """Read the architecture from canonical shapes; refuse T5 v1.1 and non-4096-wide encoders.

    heads come from the relative-attention bias table ([buckets, heads]), d_kv
    from q's rows / heads, so a 2-head tiny model loads through the same code
    as the 64-head XXL.
    """
    emb = _need(shapes, "shared.weight", path)
    layers = 1 + max((block_index(k) for k in shapes if block_index(k) is not None), default=-1)
    if layers == 0:
        _need(shapes, "encoder.block.0.layer.0.SelfAttention.q.weight", path)
    q = _need(shapes, "encoder.block.0.layer.0.SelfAttention.q.weight", path)
    bias0 = _need(shapes, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", path)
    wi0 = _need(shapes, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", path)
    if layers > 1 and "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in shapes:
        raise WrongModelError(
            "this is a T5 v1.1 encoder (e.g. the T5-XXL of Flux / SD3), not UMT5: only its first layer "
            "has a relative-position bias table",
            path=path,
            expected="UMT5-XXL (a bias table in every layer, vocab 256384)",
            found=f"T5 with vocab {emb[0]}, {layers} layers",
            fix="Wan2.1 needs umt5_xxl_fp16.safetensors / umt5_xxl_fp8_e4m3fn_scaled.safetensors (Comfy-Org), "
            "models_t5_umt5-xxl-enc-*.pth (LightX2V) or a UMT5-XXL GGUF (city96).",
        )
    heads = bias0[1]
    if heads <= 0 or q[0] % heads:
        raise WrongModelError("inconsistent attention shapes", path=path,
                              found=f"q {q}, relative bias {bias0}")
    cfg = UMT5Config(
        vocab_size=emb[0],
        d_model=emb[1],
        d_kv=q[0] // heads,
        d_ff=wi0[0],
        num_heads=heads,
        num_layers=layers,
        num_buckets=bias0[0],
    )
    if cfg.d_model != WAN_TEXT_DIM:
        raise WrongModelError(
            f"this UMT5 is {cfg.d_model} wide; the Wan2.1 DiT needs 4096-wide text embeddings (UMT5-XXL)",
            path=path,
            expected="UMT5-XXL (d_model 4096)",
            found=cfg.name,
            fix="use the UMT5-XXL encoder (umt5_xxl_fp16.safetensors or models_t5_umt5-xxl-enc-bf16.pth).",
        )
    return cfg


# -- modules -------------------------------------------------------------------------------


def _param(t: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(t, requires_grad=False)


class RMSNorm(torch.nn.Module):
    """T5 layer norm: no mean subtraction, no bias; statistics in float32."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight: torch.nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return y * self.weight.to(device=x.device, dtype=x.dtype)


class TokenEmbedding(torch.nn.Module):
    """Embedding rows looked up where the table lives, then moved to the ids' device.

    The table may stay quantized (GGUF blocks, FP8/INT8 + per-row scale): only
    the rows a prompt uses are decoded. The `out_dtype` keyword is what
    ComfyUI's text-encoder wrapper passes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight: torch.nn.Parameter | None = None
        self.weight_scale: torch.nn.Parameter | None = None
        self.qkind: str | None = None
        self.qtype: int | None = None
        self.logical_shape: tuple[int, ...] = ()

    def assign(self, w: torch.Tensor | QuantWeight) -> None:
        # (not `set_weight`: ComfyUI's LoRA patcher calls any `set_<param>` method it finds)
        if isinstance(w, QuantWeight):
            self.qkind, self.qtype, self.logical_shape = w.kind, w.qtype, tuple(w.shape)
            self.weight = _param(w.data)
            scale = w.scale
            if scale is not None and scale.numel() == 1:
                scale = scale.reshape(1, 1).expand(w.shape[0], 1).contiguous()
            self.weight_scale = _param(scale) if scale is not None else None
        else:
            self.qkind, self.qtype, self.logical_shape = None, None, tuple(w.shape)
            self.weight = _param(w)
            self.weight_scale = None

    def forward(self, ids: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = out_dtype or torch.float32
        flat = ids.reshape(-1).to(self.weight.device)
        rows = self.weight[flat]
        if self.qkind is not None:
            scale = self.weight_scale[flat] if self.weight_scale is not None else None
            rows = QuantWeight(self.qkind, rows, (flat.numel(), self.logical_shape[1]), scale, self.qtype).dequantize(dtype)
        rows = rows.to(device=ids.device, dtype=dtype)
        return rows.reshape(*ids.shape, rows.shape[-1])


class RelativeBias(torch.nn.Module):
    """One layer's [num_buckets, num_heads] relative-position bias table."""

    def __init__(self) -> None:
        super().__init__()
        self.weight: torch.nn.Parameter | None = None

    def forward(self, buckets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        table = self.weight.to(device=buckets.device, dtype=dtype)
        return table[buckets].permute(2, 0, 1).unsqueeze(0)  # [1, heads, Lq, Lk]


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device) -> torch.Tensor:
    """Bidirectional T5 bucketing of (key - query): half the buckets per sign,
    exact for |d| < num_buckets/4, logarithmic up to max_distance, clamped after."""
    pos = torch.arange(length, dtype=torch.long, device=device)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    out = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    large = exact + (
        torch.log(rel.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    large = large.clamp(max=half - 1)
    return out + torch.where(rel < exact, rel, large)


class SelfAttention(torch.nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = QuantLinear(cfg.d_model, cfg.inner_dim, bias=False)
        self.k = QuantLinear(cfg.d_model, cfg.inner_dim, bias=False)
        self.v = QuantLinear(cfg.d_model, cfg.inner_dim, bias=False)
        self.o = QuantLinear(cfg.inner_dim, cfg.d_model, bias=False)
        self.relative_attention_bias = RelativeBias()


class LayerSelfAttention(torch.nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.SelfAttention = SelfAttention(cfg)
        self.layer_norm = RMSNorm(cfg.eps)


class DenseGatedGelu(torch.nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.wi_0 = QuantLinear(cfg.d_model, cfg.d_ff, bias=False)
        self.wi_1 = QuantLinear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = QuantLinear(cfg.d_ff, cfg.d_model, bias=False)


class LayerFF(torch.nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.DenseReluDense = DenseGatedGelu(cfg)
        self.layer_norm = RMSNorm(cfg.eps)


class Block(torch.nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.layer = torch.nn.ModuleList([LayerSelfAttention(cfg), LayerFF(cfg)])


class Stack(torch.nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.block = torch.nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.final_layer_norm = RMSNorm(cfg.eps)


class UMT5Encoder(torch.nn.Module):
    """UMT5 encoder; construction allocates nothing, `load_weights` fills it.

    `activation_quant`: FP8/INT8 linears quantize activations per token on the
    GPU (LightX2V's W8A8, the reference of its fp8/int8 `.pth` files) when
    True; when False they are dequantized and multiplied in the compute dtype
    (ComfyUI's semantics for its fp8_scaled text encoders, `full_precision_mm`).
    """

    def __init__(self, cfg: UMT5Config, activation_quant: bool = True) -> None:
        super().__init__()
        self.config = cfg
        self.num_layers = cfg.num_layers
        self.activation_quant = activation_quant
        self.shared = TokenEmbedding()
        self.encoder = Stack(cfg)

    # -- weights -----------------------------------------------------------------------
    def load_weights(self, sd: Mapping[str, torch.Tensor | QuantWeight], path: str | None = None,
                     strict: bool = True) -> tuple[list[str], list[str]]:
        """Take canonical tensors as they are (no copy, no dtype change).

        Returns (missing, unexpected) like `load_state_dict`; with `strict`,
        raises a FormatError naming the first offending keys instead.
        """
        shapes = canonical_shapes(self.config)
        missing = [k for k in shapes if k not in sd]
        unexpected = [k for k in sd if k not in shapes]
        if strict and (missing or unexpected):
            raise FormatError(
                "the UMT5 weights do not match the architecture read from their shapes",
                path=path,
                expected=f"{len(shapes)} tensors of {self.config.name}",
                found=(f"missing {missing[:4]}" if missing else "") + (f" unexpected {unexpected[:4]}" if unexpected else ""),
                fix="the file is damaged or a different model; download it again.",
            )
        modules = dict(self.named_modules())
        for key, want in shapes.items():
            if key not in sd:
                continue
            value = sd[key]
            got = tuple(value.shape)
            if got != want:
                raise FormatError(f"tensor '{key}' has shape {list(got)}", path=path,
                                  expected=f"{list(want)} for {self.config.name}",
                                  fix="the file is damaged or mixes two models; download it again.")
            mod = modules[key.rsplit(".", 1)[0]]
            if isinstance(mod, QuantLinear):
                mod.assign_weight(value)
            elif isinstance(mod, TokenEmbedding):
                mod.assign(value)
            else:
                if isinstance(value, QuantWeight):
                    value = value.dequantize(torch.float32)
                mod.weight = _param(value)
        return missing, unexpected

    def get_input_embeddings(self) -> TokenEmbedding:
        return self.shared

    # -- compute -----------------------------------------------------------------------
    def _linear(self, lin: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        if lin.qkind in (FP8, INT8) and not self.activation_quant:
            return F.linear(x, lin.dequantized_weight(x.dtype, x.device))
        return lin(x)

    def _attention(self, att: SelfAttention, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h = att.num_heads
        q = self._linear(att.q, x).view(b, n, h, -1).transpose(1, 2)
        k = self._linear(att.k, x).view(b, n, h, -1).transpose(1, 2)
        v = self._linear(att.v, x).view(b, n, h, -1).transpose(1, 2)
        # T5 attention is unscaled: scale=1 (the 1/sqrt(d_kv) lives in the trained q weights).
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        return self._linear(att.o, out.transpose(1, 2).reshape(b, n, -1))

    def _ffn(self, ff: DenseGatedGelu, x: torch.Tensor) -> torch.Tensor:
        gate = F.gelu(self._linear(ff.wi_0, x), approximate="tanh")
        return self._linear(ff.wo, gate * self._linear(ff.wi_1, x))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        embeds: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        intermediate_output: int | None = None,
        final_layer_norm_intermediate: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states [B, L, d_model] (after the final norm) and an optional
        intermediate layer's output; masked positions are *not* zeroed here."""
        x = self.shared(input_ids, out_dtype=dtype) if embeds is None else embeds.to(dtype)
        b, n, _ = x.shape
        cfg = self.config
        buckets = relative_position_buckets(n, cfg.num_buckets, cfg.max_distance, x.device)
        key_mask = None
        if attention_mask is not None:
            keep = attention_mask.to(device=x.device).bool().reshape(b, 1, 1, n)
            key_mask = torch.zeros(b, 1, 1, n, dtype=dtype, device=x.device).masked_fill(~keep, torch.finfo(dtype).min)
        if intermediate_output is not None and intermediate_output < 0:
            intermediate_output += cfg.num_layers
        inter = None
        for i, blk in enumerate(self.encoder.block):
            att_layer, ff_layer = blk.layer[0], blk.layer[1]
            bias = att_layer.SelfAttention.relative_attention_bias(buckets, dtype)
            if key_mask is not None:
                bias = bias + key_mask
            x = x + self._attention(att_layer.SelfAttention, att_layer.layer_norm(x), bias)
            x = x + self._ffn(ff_layer.DenseReluDense, ff_layer.layer_norm(x))
            if i == intermediate_output:
                inter = x.clone()
        x = self.encoder.final_layer_norm(x)
        if inter is not None and final_layer_norm_intermediate:
            inter = self.encoder.final_layer_norm(inter)
        return x, inter

    @torch.no_grad()
    def encode(self, ids: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """What the Wan DiT consumes: hidden states with padded positions zeroed
        (ComfyUI's zero_out_masked; Wan trims them and pads with zeros again)."""
        x, _ = self(ids, mask, dtype=dtype)
        return x * mask.to(device=x.device, dtype=x.dtype).unsqueeze(-1)
