"""Attention backends with a safe fallback.

Measured on the H100 at 480p (L = 32,760, 40 heads x 128, torch 2.11,
scripts/profile_block.py): SDPA's cuDNN backend 38-39 ms per layer, its flash
backend 60-62 ms (what both PyTorch's default order and ComfyUI 0.33's
flash-first priority pick, i.e. 66 % of ComfyUI's 98 ms block), memory-efficient
124 ms; sageattention 1.0.6 49 ms (slower than cuDNN on Hopper; its paper reports
~2x over FlashAttention2 on an RTX 4090). So `sdpa` here asks for cuDNN first, and
`auto` picks sageattention only on Ampere/Ada where it wins.
A missing or broken optional package (Windows without Triton: KeyError
'None-triton') falls back to SDPA with one warning, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger("wan4step")
BACKENDS = ("auto", "sdpa", "sage", "flash")
_warned: set[str] = set()


try:  # torch >= 2.5: choose the backend order ourselves
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    sdpa_kernel(_ORDER, set_priority=True)
except (ImportError, TypeError):  # older torch: its own order
    sdpa_kernel = None


def _sdpa(q, k, v):
    if sdpa_kernel is not None and q.is_cuda:
        with sdpa_kernel(_ORDER, set_priority=True):
            return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def _load_sage() -> Callable | None:
    try:
        from sageattention import sageattn

        def sage(q, k, v):
            return sageattn(q, k, v, tensor_layout="HND", is_causal=False)

        return sage
    except Exception as exc:  # ImportError, or Triton's KeyError('None-triton') on Windows
        _warn("sage", f"sageattention unavailable ({type(exc).__name__}: {exc}); using PyTorch SDPA")
        return None


def _load_flash() -> Callable | None:
    try:
        from flash_attn import flash_attn_func

        def flash(q, k, v):  # flash-attn wants [B, L, H, D]
            return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

        return flash
    except Exception as exc:
        _warn("flash", f"flash-attn unavailable ({type(exc).__name__}: {exc}); using PyTorch SDPA")
        return None


def _warn(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("Wan4Step: %s", msg)


def resolve(name: str, device: torch.device | None = None) -> tuple[str, Callable]:
    """(effective backend name, function(q, k, v) on [B, H, L, D] tensors)."""
    if name not in BACKENDS:
        raise ValueError(f"attention must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        cap = torch.cuda.get_device_capability(device) if device is not None and device.type == "cuda" else None
        name = "sage" if cap is not None and cap < (9, 0) and cap >= (8, 0) and _load_sage() else "sdpa"
    if name == "sage" and device is not None and device.type == "cuda":
        fn = _load_sage()
        if fn is not None:
            return "sage", _guarded("sage", fn)
    if name == "flash" and device is not None and device.type == "cuda":
        fn = _load_flash()
        if fn is not None:
            return "flash", _guarded("flash", fn)
    if name in ("sage", "flash") and (device is None or device.type != "cuda"):
        _warn(name + "-cpu", f"{name} attention needs a CUDA GPU; using PyTorch SDPA")
    return "sdpa", _sdpa


def _guarded(name: str, fn: Callable) -> Callable:
    """Fall back to SDPA for good if the optional kernel fails at run time (e.g. unsupported arch)."""
    state = {"ok": True}

    def call(q, k, v):
        if state["ok"]:
            try:
                return fn(q, k, v)
            except Exception as exc:
                state["ok"] = False
                _warn(name + "-run", f"{name} attention failed ({type(exc).__name__}: {exc}); using PyTorch SDPA")
        return _sdpa(q, k, v)

    return call


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, fn: Callable = _sdpa) -> torch.Tensor:
    """[B, L, C] in, [B, L, C] out; heads of C // heads channels."""
    B, Lq, C = q.shape
    Lk = k.shape[1]
    d = C // heads
    qh = q.view(B, Lq, heads, d).transpose(1, 2)
    kh = k.view(B, Lk, heads, d).transpose(1, 2)
    vh = v.view(B, Lk, heads, d).transpose(1, 2)
    out = fn(qh, kh, vh)
    return out.transpose(1, 2).reshape(B, Lq, C)
