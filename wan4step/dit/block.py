"""The pack's forward of one Wan2.1 T2V block, on the block's own modules and weights.

Same math as ComfyUI's `WanAttentionBlock.forward` (and the original Wan),
reorganised for speed: LayerNorm+modulate and RMSNorm+RoPE are single fused
passes, the FFN's GELU rides in the up-projection's cuBLASLt epilogue for bf16
weights, and quantized linears (FP8/INT8/GGUF) run their own kernels through
`QuantLinear`. With W8A8 weights the activations are quantized where they are made: the
LayerNorm kernel writes q/k/v's shared per-token codes, the GELU pass writes ffn.2's
(measured at 480p on an H100: 59.4 ms per FP8 block vs 60.0 ms with a quantizer per linear).
Any module tree shaped like ComfyUI's block works (ComfyUI's own ops, ComfyUI-GGUF's, this pack's).

The forward reads a few weights directly instead of calling their modules (`DIRECT_WEIGHTS`:
the q/k RMSNorm weights, and norm3's when `fuse_norm3`). A host that patches weights at use time
(a LoRA applied when the module runs) must check those modules first and run its own block, or
pass `fuse_norm3=False` when only norm3 carries such a patch: `nodes/comfy_compat/fast_forward.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import attention
from ..quant.linear import QuantLinear
from .fused import gated_residual, gelu_quant, ln_modulate, ln_modulate_quant, rmsnorm_rope


def _param(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t if (t.device == like.device and t.dtype == like.dtype) else t.to(device=like.device, dtype=like.dtype)


def linear_gelu(linear: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(linear(x)); for plain bf16/fp16 weights on CUDA the GELU is the GEMM's epilogue."""
    if (
        isinstance(linear, QuantLinear)
        and linear.qkind is None
        and not linear.weight_transforms
        and x.is_cuda
        and linear.weight.device == x.device
        and linear.weight.dtype == x.dtype
        and linear.bias is not None
        and x.dtype in (torch.bfloat16, torch.float16)
    ):
        x2 = x.reshape(-1, x.shape[-1])
        out = torch._addmm_activation(_param(linear.bias, x), x2, linear.weight.t(), use_gelu=True)
        return out.view(*x.shape[:-1], out.shape[-1])
    return F.gelu(linear(x), approximate="tanh")


def _shared_w8a8(x: torch.Tensor, *linears: torch.nn.Module) -> str | None:
    """The W8A8 kind when every linear would quantize `x` per token the same way itself."""
    kinds = {lin.w8a8_kind(x) if isinstance(lin, QuantLinear) else None for lin in linears}
    return kinds.pop() if len(kinds) == 1 else None


def _affine_ln(norm: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(shift, scale, eps) that make `ln_modulate` compute this affine LayerNorm, or None.

    LayerNorm's `* w + b` is the modulation `* (1 + (w - 1)) + b`; w - 1 and 1 + (w - 1) are exact in
    fp32 for bf16/fp16 weights, so it is the same function. Running norm3 through the fused
    kernels lets FP8/INT8 weights take cross-attention q's codes straight from the LayerNorm pass.
    """
    w, b = getattr(norm, "weight", None), getattr(norm, "bias", None)
    if (
        not isinstance(norm, torch.nn.LayerNorm)
        or w is None
        or b is None
        or tuple(norm.normalized_shape) != (x.shape[-1],)
    ):
        return None
    shift = b.to(device=x.device, dtype=torch.float32).view(1, -1)
    scale = w.to(device=x.device, dtype=torch.float32).view(1, -1) - 1
    return shift, scale, float(norm.eps)


# modules whose weights block_forward reads directly instead of calling them; norm3's too, unless
# the caller passes fuse_norm3=False (then norm3 runs itself, applying whatever it carries)
DIRECT_WEIGHTS = ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k")
NORM3 = "norm3"


def supports(e0: torch.Tensor) -> bool:
    """The fast path handles one timestep per sample (T2V); per-frame timesteps go to ComfyUI's block."""
    return e0.ndim == 4 and e0.shape[1] == 1


def block_forward(
    block: torch.nn.Module,
    x: torch.Tensor,
    e0: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    context: torch.Tensor,
    attn_fn,
    fuse_norm3: bool = True,
) -> torch.Tensor:
    """x [B, L, C]; e0 [B, 1, 6, C] (time projection); rope = (cos, sin) [L, D/2]; context [B, 512, C].

    attn_fn(q, k, v) on [B, H, L, D] (`attention.resolve`); fuse_norm3=False calls norm3 as a module.
    """
    heads = block.num_heads
    # ComfyUI's patch embedding hands block 0 a transposed view; residual ops keep their input's
    # layout, so without this every block would run strided (copies + slow kernels: ~5 ms/block at 480p)
    x = x.contiguous()
    e = (_param(block.modulation, x).unsqueeze(0) + e0)[:, 0]  # [B, 6, C]
    cos, sin = rope
    sa, ca = block.self_attn, block.cross_attn

    # self-attention; with W8A8 weights, q/k/v take one set of codes made by the LayerNorm kernel
    kind = _shared_w8a8(x, sa.q, sa.k, sa.v)
    if kind is not None:
        yq = ln_modulate_quant(x, e[:, 0], e[:, 1], kind)
        qo, ko, vo = (lin.forward_quantized(*yq, x) for lin in (sa.q, sa.k, sa.v))
        del yq
    else:
        y = ln_modulate(x, e[:, 0], e[:, 1])
        qo, ko, vo = sa.q(y), sa.k(y), sa.v(y)
        del y
    q = rmsnorm_rope(qo, _param(sa.norm_q.weight, x), cos, sin, heads)
    del qo
    k = rmsnorm_rope(ko, _param(sa.norm_k.weight, x), cos, sin, heads)
    del ko
    a = attention(q, k, vo, heads, attn_fn)
    del q, k, vo
    x = gated_residual(x, sa.o(a), e[:, 2])
    del a

    # cross-attention (no modulation; affine LayerNorm, through the same LayerNorm kernels)
    affine = _affine_ln(block.norm3, x) if fuse_norm3 else None
    kind3 = _shared_w8a8(x, ca.q) if affine is not None else None
    if kind3 is not None:
        shift, scale, eps = affine
        qo = ca.q.forward_quantized(*ln_modulate_quant(x.view(1, -1, x.shape[-1]), shift, scale, kind3, eps), x)
    else:
        xn = ln_modulate(x.view(1, -1, x.shape[-1]), *affine).view_as(x) if affine is not None else block.norm3(x)
        qo = ca.q(xn)
        del xn
    q = rmsnorm_rope(qo, _param(ca.norm_q.weight, x), None, None, heads)
    del qo
    k = rmsnorm_rope(ca.k(context), _param(ca.norm_k.weight, x), None, None, heads)
    x = x + ca.o(attention(q, k, ca.v(context), heads, attn_fn))
    del q, k

    # feed-forward; W8A8: LayerNorm and GELU each write codes, never a bf16 activation
    ffn0, ffn2 = block.ffn[0], block.ffn[2]
    kind2 = _shared_w8a8(x, ffn2)
    if _shared_w8a8(x, ffn0) is not None:
        h, gelu_done = ffn0.forward_quantized(*ln_modulate_quant(x, e[:, 3], e[:, 4], ffn0.qkind), x), False
    else:
        y = ln_modulate(x, e[:, 3], e[:, 4])
        h, gelu_done = (linear_gelu(ffn0, y), True) if kind2 is None else (ffn0(y), False)
        del y
    if kind2 is not None:
        out = ffn2.forward_quantized(*gelu_quant(h, kind2), x)
    else:
        out = ffn2(h if gelu_done else F.gelu(h, approximate="tanh"))
    del h
    return gated_residual(x, out, e[:, 5])
