"""Attention backends, the one place they are chosen, with a checked fallback.

Backends (`BACKENDS`; the Model Loader's `attention` combo):
- `sdpa`: PyTorch SDPA asking for cuDNN first. On the H100 at 480p (L = 32,760, 40 heads x 128,
  torch 2.11, scripts/profile_block.py): cuDNN 38-39 ms per self-attention, SDPA's flash backend
  60-62 ms (what PyTorch's default order and ComfyUI 0.33's flash-first priority pick),
  memory-efficient 124 ms.
- `8bit`: the pack's INT8 Q·Kᵀ + FP8 P·V attention (wan4step/attn8, SageAttention2's method in
  Triton; fp16 P·V on sm80/86). On the H200 (scripts/bench_attention.py, docs/bench/attention_h200.log,
  one process): 480p self-attention 29.2 ms against cuDNN's 38.5 (0.76x), 720p 152.2 ms against
  203.7 (0.75x), with the Triton kernel; on sm90 a Gluon version of it runs: 28.0 ms against
  the Triton kernel's 29.5 and cuDNN's 38.2 in one run (attn8/hopper.py, attention_h200_gluon.log),
  then warp-specialized, 3.5 % faster again (kernel 25.96 ms at 480p, attention_h200_s7.log), and
  with its row sums on the tensor cores 10 % faster again (23.4 ms, attention_h200_s8.log).
  Self-attention only: text cross-attention (512 keys) stays on SDPA below
  `attn8.MIN_KEYS` keys (8-bit measured 1.60 ms against cuDNN's 0.63 there: the passes over 32,760
  queries cost more than the short key loop saves).
- `sage`: the sageattention package (1.0.6 is a Triton build of SageAttention 1): 49 ms on the
  H100, slower than cuDNN; its paper reports ~2x FlashAttention2 on an RTX 4090.
- `flash`: the flash-attn 2 package. `fa4`: the flash-attn-4 package (CuTe DSL, Hopper/Blackwell,
  bf16/fp16).

`auto` tries `AUTO_ORDER[arch]` in turn and takes the first backend that loads and passes the
accuracy check (`check`: cosine >= 0.999 and relative L2 <= 3 % against float32 SDPA on small inputs
shaped like Wan's, wan4step/attn8/structured.py; once per backend and device), falling back with
one warning. `8bit` picked by name is checked too (it is the pack's own kernel on GPUs nobody here
measured); other packages picked by name run as asked (sageattention 1.0.6 measured 3.5-4.6 %
relative L2 on those inputs, over the bar).
sm90 is measured (`8bit` 0.73-0.76x cuDNN's time per whole call before the warp-specialized kernel,
above). The other architectures could not be measured here and follow published anchors: SageAttention2
(arXiv 2411.10958) reports INT8 Q·Kᵀ + FP8 P·V at ~3x FlashAttention2 on the RTX 4090 (sm89);
SageAttention (arXiv 2410.02367) reports INT8 Q·Kᵀ + fp16 P·V at ~2x FlashAttention2 on the RTX 4090,
with the same instructions on Ampere (sm80/86); so `8bit` leads there and on consumer Blackwell (sm120).
On datacenter Blackwell (sm100) FlashAttention-4 (arXiv 2603.05451) reports up to 1.3x cuDNN 9.13 on the
B200, so `fa4` leads where it is installed, else cuDNN.
A missing or broken optional package (Windows without Triton: KeyError 'None-triton') falls
back to SDPA with one warning, never a crash; so does a kernel that fails at run time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import fallback

log = logging.getLogger("wan4step")
BACKENDS = ("auto", "sdpa", "8bit", "sage", "flash", "fa4")
# not in the UI: the 8-bit method run by its torch reference on any device (slow; tests and the CPU demo)
REFERENCE_8BIT = "8bit-reference"
_warned: set[str] = set()

# auto's candidates per compute capability, best first (see the module docstring for the evidence)
AUTO_ORDER: dict[tuple[int, int], tuple[str, ...]] = {
    (8, 0): ("8bit", "sdpa"), (8, 6): ("8bit", "sdpa"), (8, 7): ("8bit", "sdpa"), (8, 9): ("8bit", "sdpa"),
    (9, 0): ("8bit", "sdpa"),
    (10, 0): ("fa4", "sdpa"), (10, 3): ("fa4", "sdpa"),
    (12, 0): ("8bit", "sdpa"), (12, 1): ("8bit", "sdpa"),
}


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


def _load_sage(device: torch.device) -> Callable | None:
    from sageattention import sageattn

    def sage(q, k, v):
        return sageattn(q, k, v, tensor_layout="HND", is_causal=False)

    return sage


def _load_flash(device: torch.device) -> Callable | None:
    from flash_attn import flash_attn_func

    def flash(q, k, v):  # flash-attn wants [B, L, H, D]
        return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    return flash


def _load_fa4(device: torch.device) -> Callable | None:
    from flash_attn.cute import flash_attn_func  # the flash-attn-4 package

    def fa4(q, k, v):  # [B, L, H, D] views of the block's tensors; returns (out, lse) or out
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)

    return fa4


def _load_8bit(device: torch.device) -> Callable | None:
    from . import attn8

    if not attn8.HAVE_TRITON:
        raise ImportError("triton is not installed")
    if attn8.pv_mode(torch.cuda.get_device_capability(device)) is None:
        raise RuntimeError("needs an sm80 or newer GPU")

    @torch.compiler.disable  # Triton launches with Python-side buffers: keep dynamo out (a graph break)
    def eight_bit(q, k, v):
        if k.shape[2] < attn8.MIN_KEYS or attn8.usable(q, k) is not None:
            return _sdpa(q, k, v)
        return attn8.attn8(q, k, v)

    return eight_bit


_LOADERS: dict[str, Callable[[torch.device], Callable | None]] = {
    "8bit": _load_8bit, "sage": _load_sage, "flash": _load_flash, "fa4": _load_fa4}
# one policy for every fast path (wan4step/fallback.py): a backend that fails at run time is switched
# off for good (SDPA answers), one that fails its accuracy check is not used; OOM and the host's
# interrupt always propagate, so a cancel or an OOM never turns a backend off
_RUN = fallback.switch("attention backend", "PyTorch SDPA")
_ACCURACY = fallback.switch("attention accuracy check", "the next backend")


def _warn(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("Wan4Step: %s", msg)


def check(name: str, fn: Callable, device: torch.device) -> bool:
    """Whether `fn` meets the accuracy bar on `device` (once per backend and device; cached).

    Self-attention (1,024 tokens) and text cross-attention (512 keys) of 4 heads x 128 on
    structured inputs, against float32 SDPA. Compiles the backend's kernels on the way.
    """
    from .attn8.structured import accuracy, passes, sdpa_fp32, structured_qkv

    def accurate() -> bool:
        with torch.no_grad():
            for lq, lk, seed in ((1024, 1024, 11), (1024, 512, 12)):
                q, k, v = structured_qkv(1, 4, lq, lk, seed=seed, device=device)
                out = fn(q, k, v)
                if not passes(out, sdpa_fp32(q, k, v)):
                    cos, rel = accuracy(out, sdpa_fp32(q, k, v))
                    _warn(name + "-acc", f"{name} attention failed its accuracy check on {device} "
                                         f"(cosine {cos:.5f}, relative L2 {rel:.4f}); using the next backend")
                    return False
        return True

    return _ACCURACY.check_once((name, str(device)), accurate)


def _try(name: str, device: torch.device | None, checked: bool = True) -> Callable | None:
    """The backend function (accuracy-checked if `checked`), or None (with one warning saying why)."""
    if device is None or device.type != "cuda":
        _warn(name + "-cpu", f"{name} attention needs a CUDA GPU; using PyTorch SDPA")
        return None
    try:
        fn = _LOADERS[name](device)
        if fn is None or (checked and not check(name, _guarded(name, fn, fallback=False), device)):
            return None
    except Exception as exc:  # ImportError, Triton's KeyError('None-triton') on Windows, a kernel that fails
        if fallback.must_propagate(exc):
            raise
        _warn(name, f"{name} attention unavailable ({type(exc).__name__}: {exc}); using the next backend")
        return None
    return _guarded(name, fn)


def resolve(name: str, device: torch.device | None = None) -> tuple[str, Callable]:
    """(effective backend name, function(q, k, v) on [B, H, L, D] tensors)."""
    if name == REFERENCE_8BIT:
        return name, _reference_8bit
    if name not in BACKENDS:
        raise ValueError(f"attention must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        if device is None or device.type != "cuda":
            return "sdpa", _sdpa
        order = AUTO_ORDER.get(torch.cuda.get_device_capability(device), ("sdpa",))
        for cand in order:
            if cand == "sdpa":
                break
            fn = _try(cand, device)
            if fn is not None:
                return cand, fn
        return "sdpa", _sdpa
    if name != "sdpa":  # a package the user picked runs as asked; the pack's own kernel is checked on any GPU
        fn = _try(name, device, checked=(name == "8bit"))
        if fn is not None:
            return name, fn
    return "sdpa", _sdpa


def _reference_8bit(q, k, v):
    from . import attn8
    from .attn8.reference import attn8_reference

    if k.shape[2] < attn8.MIN_KEYS:  # as the GPU backend: text cross-attention stays on SDPA
        return _sdpa(q, k, v)
    return attn8_reference(q, k, v).to(q.dtype)


def _guarded(name: str, fn: Callable, fallback: bool = True) -> Callable:
    """`fn`, switched off for good (SDPA answers) the first time it fails at run time, e.g. on an
    architecture its kernels were not built for. Without `fallback` (the accuracy check) a failure
    raises. OOM and interrupts always propagate (wan4step/fallback.py)."""
    return _RUN.guard(name, fn, _sdpa, f"{name} attention") if fallback else fn


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
