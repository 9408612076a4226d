"""Attention inputs shaped like Wan's, and the accuracy metrics the 8-bit backend is held to.

Random Gaussian q/k/v flatter the quantizers: every channel has the same range and the
logits of 128 unit channels are all within a few units, so any 8-bit scheme looks exact.
The activations of a trained DiT are not like that, and these are the properties that
break naive INT8 Q·Kᵀ (SageAttention, arXiv 2410.02367, section 3; SageAttention2,
arXiv 2411.10958, section 3):

- K carries a large offset shared by all tokens, per channel (the k projection's bias
  and RMSNorm weight), several times its per-token spread. It changes no softmax row (it
  adds one constant per query), but it sets the INT8 range of K;
- a few channels of q and k are much larger than the rest (outlier channels of the
  RMSNorm weights);
- logits span a wide range: 3D RoPE makes a token match its neighbours far better than
  the rest, so some rows are sharp and others diffuse.

`structured_qkv` builds q/k/v with each of these; the seed and shapes vary them. Metrics
are computed in float64 against a float32 reference.
"""

from __future__ import annotations

import math

import torch


def structured_qkv(
    B: int, H: int, Lq: int, Lk: int, D: int = 128, *, seed: int = 0, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16, k_offset: float = 4.0, locality: float = 1.0, outliers: int = 3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B, H, Lq, D], k/v [B, H, Lk, D] as strided views of [B, L, H*D] tensors (the block's layout).

    k_offset: the shared per-channel offset of K in units of its per-token spread; locality:
    amplitude of the positional component q and k share (larger = sharper rows); outliers:
    channels per head scaled up 4-8x in q, k and v.
    """
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)  # drawn where it is used: a 480p set in ms on a GPU

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32, device=device)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float32, device=device)

    def weight(big: float) -> torch.Tensor:  # RMSNorm-like per-channel gains with a few outliers
        w = 1.0 + 0.25 * randn(H, D)
        idx = torch.randint(0, D, (H, outliers), generator=g, device=device)
        w.scatter_(1, idx, big * (1.0 + rand(H, outliers)))
        return w

    # positional component: R sinusoids of the token position, projected per head, shared by q and k
    R = 16
    freqs = torch.exp(torch.linspace(math.log(0.5), math.log(200.0), R, device=device))
    proj = randn(H, 2 * R, D) / math.sqrt(R)

    def positional(L: int) -> torch.Tensor:
        pos = torch.arange(L, dtype=torch.float32, device=device) / max(L, 1)
        ang = 2 * math.pi * pos[:, None] * freqs[None, :]
        feats = torch.cat([ang.cos(), ang.sin()], -1)  # [L, 2R]
        return torch.einsum("lr,hrd->lhd", feats, proj)  # [L, H, D]

    # a per-head random spread: some heads diffuse, some sharp
    sharp = locality * (0.05 + 0.95 * rand(H, 1))
    q = (randn(B, Lq, H, D) + sharp * positional(Lq) + 0.5 * randn(H, D)) * weight(4.0)
    k = (randn(B, Lk, H, D) + sharp * positional(Lk) + k_offset * randn(H, D)) * weight(6.0)
    v = (randn(B, Lk, H, D) + randn(H, D)) * weight(5.0)

    def heads(t: torch.Tensor) -> torch.Tensor:
        b, L = t.shape[:2]
        return t.reshape(b, L, H * D).to(dtype).view(b, L, H, D).transpose(1, 2)

    return heads(q), heads(k), heads(v)


def sdpa_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The reference: SDPA on float32 copies (math or memory-efficient kernel, never 8-bit)."""
    return torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())


def accuracy(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(cosine similarity, relative L2 error) of the whole output, in float64."""
    a, b = out.double().flatten(), ref.double().flatten()
    cos = float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300))
    rel = float((a - b).norm() / b.norm().clamp_min(1e-300))
    return cos, rel


# what a backend must reach per call against sdpa_fp32 (issue 20)
MIN_COSINE = 0.999
MAX_REL_L2 = 0.03


def passes(out: torch.Tensor, ref: torch.Tensor) -> bool:
    cos, rel = accuracy(out, ref)
    return bool(torch.isfinite(out).all()) and cos >= MIN_COSINE and rel <= MAX_REL_L2
