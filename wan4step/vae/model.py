"""The Wan2.1 video VAE in plain torch, built for streamed (frame-chunked, tiled) inference.

Architecture (Wan2.1 `wan/modules/vae.py`, also ComfyUI's `comfy/ldm/wan/vae.py`): a causal 3-D
conv autoencoder, 8x spatial and 4x temporal compression, 16 latent channels. Encoder: conv1 ->
[2 residual blocks + downsample] x 4 (the last without downsample; the 2nd and 3rd downsample time
too) -> middle (res, per-frame spatial attention, res) -> RMS norm, SiLU, conv -> 2*z channels ->
1x1x1 `conv1` (mu, log-var). Decoder: 1x1x1 `conv2` -> conv1 -> middle -> [3 residual blocks +
upsample] x 4 (the 1st and 2nd upsample time too) -> RMS norm, SiLU, conv -> RGB.

Parameter names are the original release's keys (`Wan2.1_VAE.pth`), which ComfyUI also uses, so
a state dict moves between the three without renaming (diffusers' names: `formats.py`).

Time is causal: every 3-tap temporal conv sees the two frames before it (zeros before the start),
so a clip can be decoded a chunk at a time if each conv keeps its last two input frames (the
"causal cache", a `Stream`). Two semantics of the original decoder are part of the model and must
be kept by any chunking (the oracle tests check them against diffusers):
- the first latent frame is decoded alone and is not temporally upsampled (1 latent frame -> 1
  frame; every later latent frame -> 4 frames);
- each temporal upsample's `time_conv` starts from zero history *after* that first frame.
Hence the first latent frame is always its own chunk; after it, any chunking gives the same video.
The encoder mirrors this (first frame alone, then the temporal downsamples stride over the rest).

Speed/memory choices (the decoder is ~0.3 PFLOP at 480x832x81, dominated by the 96- and
192-channel 3x3x3 convs at the two highest resolutions):
- `Stream.channels_last` keeps activations channels-last (NDHWC) on CUDA, the layout cuDNN's bf16
  implicit-GEMM conv kernels want; no layout conversions between layers.
- RMS norm + SiLU is one fused pass (`kernels.py`) that writes straight into the conv's input
  buffer behind the two cached frames, so the causal "cat" costs no extra copy of the activation.
- The zero-history first frame runs each 3-tap conv as its last tap only (the other taps see zeros).
- Nearest 2x upsampling and the time interleave of the temporal upsample are one strided copy.
Nothing is computed in float32 except the norm's reduction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..fallback import attempt, switch
from . import conv_bias, conv_gemm, kernels

CACHE_FRAMES = 2  # history a 3-tap causal conv needs
MEMORY_MARGIN = 1.1  # on top of the memory model (allocator rounding, cuDNN workspaces)

# The latent normalization of Wan2.1 (per channel). The DiT works on (z - mean) / std; the VAE on z.
# ComfyUI applies it in `comfy/latent_formats.py: Wan21.process_in/process_out`, called by the
# sampler (`comfy/samplers.py`: process_latent_in before sampling, process_latent_out after), so a
# ComfyUI LATENT holds VAE-space z and VAE.decode takes it as is. So does this engine's decode.
LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


def _latent_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, len(LATENT_MEAN)) + (1,) * (z.ndim - 2)
    mean = torch.tensor(LATENT_MEAN, dtype=torch.float32, device=z.device).view(shape)
    std = torch.tensor(LATENT_STD, dtype=torch.float32, device=z.device).view(shape)
    return mean, std


def normalize_latent(z: torch.Tensor) -> torch.Tensor:
    """VAE-space latent -> the DiT's space: (z - mean) / std (ComfyUI: Wan21.process_in)."""
    mean, std = _latent_stats(z)
    return ((z.float() - mean) / std).to(z.dtype)


def denormalize_latent(x: torch.Tensor) -> torch.Tensor:
    """The DiT's latent -> VAE space: x * std + mean (ComfyUI: Wan21.process_out)."""
    mean, std = _latent_stats(x)
    return (x.float() * std + mean).to(x.dtype)


@dataclass(frozen=True)
class VAEConfig:
    """Shapes of a Wan2.1-family VAE. The release is `WAN21_VAE`; tests use a narrower `dim`."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    image_channels: int = 3

    @property
    def spatial_ratio(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_ratio(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def bottleneck_dim(self) -> int:
        return self.dim * self.dim_mult[-1]

    def frames_out(self, latent_frames: int) -> int:
        return 1 + self.temporal_ratio * (latent_frames - 1) if latent_frames > 0 else 0

    def frames_in(self, frames: int) -> int:
        """Latent frames for `frames` pixel frames (extra frames past 1 + 4k are dropped, as ComfyUI does)."""
        return 1 + (frames - 1) // self.temporal_ratio if frames > 0 else 0


WAN21_VAE = VAEConfig()


# -- the causal stream ---------------------------------------------------------------------------
class _Started:
    """Marker: a temporal upsample has passed the first frame; its time conv starts from zeros."""

    def __repr__(self) -> str:
        return "STARTED"


STARTED = _Started()


class Stream:
    """Per-layer causal history of one stream (one video, or one spatial tile of it).

    `slots[i]` is None (nothing seen), a tensor of the last 1-2 input frames of the layer with
    slot i (fewer than 2 frames means zeros before them), or `STARTED`. `channels_last` picks the
    activation layout (NDHWC on CUDA).
    """

    def __init__(self, n_slots: int, channels_last: bool) -> None:
        self.slots: list = [None] * n_slots
        self.channels_last = channels_last

    @property
    def fmt(self) -> torch.memory_format:
        return torch.channels_last_3d if self.channels_last else torch.contiguous_format

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.fmt)


def _cast(p: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """The parameter on x's device and dtype (a no-op when loaded; ComfyUI's lowvram mode may leave
    weights of plain modules on the CPU)."""
    if p is None or (p.device == x.device and p.dtype == x.dtype):
        return p
    return p.to(device=x.device, dtype=x.dtype, non_blocking=True)


def frames_2d(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W] (a view for channels-last input)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def frames_5d(y: torch.Tensor, batch: int, st: Stream) -> torch.Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W] in the stream's layout (a view for channels-last input)."""
    n, c, h, w = y.shape
    return st.layout(y.reshape(batch, n // batch, c, h, w).transpose(1, 2))


# -- layers ------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """x / ||x||_channels * sqrt(C) * gamma (the original's F.normalize form, eps 1e-12)."""

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def normalize(self, x: torch.Tensor, silu: bool, out: torch.Tensor | None = None) -> torch.Tensor:
        return kernels.rms_norm(x, _cast(self.gamma, x).reshape(-1), silu=silu, out=out)


class CausalConv3d(nn.Conv3d):
    """Conv3d whose temporal padding is causal: 2 history frames (from the Stream) instead of 1+1.

    `slot` indexes this layer's history in a Stream (-1 for 1-tap convs, which need none).
    `gemm`: run as conv_gemm's implicit GEMM where it applies (WanVAE.conv_backend sets it).
    """

    gemm = False

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=padding)
        self.history = 2 * self.padding[0]
        self.spatial_padding = (0, self.padding[1], self.padding[2])
        self.slot = -1

    def run(self, buf: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Convolve a prepared input: history frames + new frames (output = new frames), or a
        single zero-history frame (then only the last temporal tap sees non-zeros); + residual."""
        w, b = _cast(self.weight, buf), _cast(self.bias, buf)
        # the RGB head in channels-last (the CUDA layout): 3 output channels would miss cuDNN's
        # tensor-core kernels, so compute 8 and keep 3
        narrow = self.out_channels % 8 != 0 and buf.shape[1] > 1 and buf.is_contiguous(memory_format=torch.channels_last_3d)
        if narrow:
            w, b = self._padded(w, b)
        if self.history and buf.shape[2] == 1:
            w = w[:, :, -1:]
        if self.gemm and not narrow and self.stride == (1, 1, 1):
            y = _gemm_conv(self, buf, w, b, residual)
            if y is not None:
                return y
        if narrow or not buf.is_cuda:
            y = F.conv3d(buf, w, b, self.stride, self.spatial_padding)
            y = y[:, : self.out_channels] if narrow else y
            return y if residual is None else y.add_(residual)
        # on CUDA torch adds cuDNN's bias in a pass that does not vectorize: one fused pass instead,
        # with the shortcut (conv_bias.py)
        return conv_bias.add_(F.conv3d(buf, w, None, self.stride, self.spatial_padding), b, residual)

    def _padded(self, w: torch.Tensor, b: torch.Tensor | None):
        """Weight/bias zero-padded to a multiple of 8 output channels (cached for one decode call)."""
        key = (w.data_ptr(), w.device, w.dtype)
        cached = getattr(self, "_pad8", None)
        if cached is None or cached[0] != key:
            co = -(-self.out_channels // 8) * 8
            wp = w.new_zeros((co, *w.shape[1:])).contiguous(memory_format=torch.channels_last_3d)
            wp[: self.out_channels] = w
            bp = None if b is None else torch.cat([b, b.new_zeros(co - self.out_channels)])
            cached = self._pad8 = (key, wp, bp)
        return cached[1], cached[2]

    def forward(self, x: torch.Tensor, st: Stream | None = None) -> torch.Tensor:  # noqa: D102
        if self.history == 0:
            return self.run(x)
        return self.run(causal_input(x, self, st))


CONV_BACKENDS = ("auto", "cudnn", "gemm")
# (device, dtype, weight shape, tile) of the implicit-GEMM conv: checked against cuDNN on first use
# (2 rows of the real width, so the tile the real call takes); a failure or a disagreement switches
# that key back to F.conv3d (one warning)
_GEMM = switch("VAE implicit-GEMM conv (Triton)", "cuDNN's conv3d")
GEMM_CHECK_TOL = 2**-7  # of the output's largest value: bf16 rounding and another summation order


def _gemm_self_check(key, w: torch.Tensor, b: torch.Tensor | None, like: torch.Tensor, residual: bool) -> bool:
    def probe() -> None:
        g = torch.Generator(like.device).manual_seed(0)
        cl = torch.channels_last_3d
        x = torch.randn((1, w.shape[1], w.shape[2] + 1, 2, like.shape[-1]), generator=g, device=like.device,
                        dtype=like.dtype).contiguous(memory_format=cl)
        want = F.conv3d(x, w, b, padding=(0, w.shape[3] // 2, w.shape[4] // 2))
        r = torch.randn(want.shape, generator=g, device=like.device, dtype=like.dtype).contiguous(memory_format=cl)
        r = r if residual else None
        got = conv_gemm.conv3d(x, w, b, residual=r).float()
        want = want.float() + (0 if r is None else r.float())
        err = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
        if not err <= GEMM_CHECK_TOL:
            raise ValueError(f"max difference {err:.2e} of the output's scale against cuDNN")

    return _GEMM.check_once(key, lambda: attempt(probe, "Wan4Step VAE: implicit-GEMM conv", "cuDNN's conv3d"))


def _gemm_conv(conv: CausalConv3d, buf: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
               residual: torch.Tensor | None) -> torch.Tensor | None:
    """conv_gemm.conv3d where it applies and passed its check, else None (the caller runs cuDNN)."""
    if conv_gemm.supported(buf, w) is not None:
        return None
    if residual is not None and not residual.is_contiguous(memory_format=torch.channels_last_3d):
        return None
    res = residual is not None
    key = (buf.device, buf.dtype, *w.shape, conv_gemm.pick_tile(buf.shape[-1], w.shape[1], w.shape[0]), res)
    if key in _GEMM.off or not _gemm_self_check(key, w, b, buf, res):
        return None
    # per layer and call (clear_derived): the weights cannot change within one, and a key without
    # data_ptr holds one matrix even where ComfyUI's lowvram casts a fresh weight copy per use
    cache = conv.__dict__.setdefault("_gemm", {})
    wkey = (tuple(w.shape), w.device, w.dtype)
    w2 = cache.get(wkey)
    if w2 is None:
        w2 = cache[wkey] = conv_gemm.gemm_weight(w)
    try:
        return conv_gemm.conv3d(buf, w, b, w2=w2, residual=residual)
    except Exception as exc:  # noqa: BLE001 - fail() re-raises OOM and interrupts
        _GEMM.fail(key, exc)
        return None


def causal_input(x: torch.Tensor, conv: CausalConv3d, st: Stream, norm: RMSNorm | None = None) -> torch.Tensor:
    """The input of `conv` for new frames x: [history (or zeros), f(x)] with f = SiLU(RMSNorm) or id.

    f(x) is written straight into the buffer behind the history (no separate cat copy), and the
    last two frames become the new history. A zero-history single frame skips the buffer.
    """
    prev = st.slots[conv.slot]
    b, c, t, h, w = x.shape
    if prev is None and t == 1:
        out = norm.normalize(x, silu=True) if norm is not None else x
        st.slots[conv.slot] = out
        return out
    n_hist = conv.history
    buf = torch.empty((b, c, n_hist + t, h, w), dtype=x.dtype, device=x.device, memory_format=st.fmt)
    have = 0 if prev is None else prev.shape[2]
    if have < n_hist:
        buf[:, :, : n_hist - have].zero_()
    if have:
        buf[:, :, n_hist - have : n_hist].copy_(prev)
    if norm is not None:
        norm.normalize(x, silu=True, out=buf[:, :, n_hist:])
    else:
        buf[:, :, n_hist:].copy_(x)
    st.slots[conv.slot] = buf[:, :, -CACHE_FRAMES:].clone()
    return buf


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # indices are the original's: 0 norm, 1 SiLU, 2 conv, 3 norm, 4 SiLU, 5 dropout, 6 conv
        self.residual = nn.Sequential(
            RMSNorm(cin), nn.SiLU(), CausalConv3d(cin, cout, 3, padding=1),
            RMSNorm(cout), nn.SiLU(), nn.Dropout(0.0), CausalConv3d(cout, cout, 3, padding=1),
        )  # fmt: skip
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, st: Stream) -> torch.Tensor:
        n1, c1, n2, c2 = self.residual[0], self.residual[2], self.residual[3], self.residual[6]
        buf = causal_input(x, c1, st, n1)
        h = c1.run(buf)
        del buf  # each activation is freed as soon as its consumer has read it (peak VRAM)
        buf = causal_input(h, c2, st, n2)
        del h
        if isinstance(self.shortcut, CausalConv3d):  # the shortcut conv runs after c2 (peak VRAM)
            h = c2.run(buf)
            del buf
            return self.shortcut.run(x, residual=h)  # 1x1x1, no history: shortcut(x) + h in one pass
        return c2.run(buf, residual=x)  # x + conv: in the GEMM's epilogue where it runs


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no time mixing, no history)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, st: Stream) -> torch.Tensor:
        b, c, t, h, w = x.shape
        f = frames_2d(x)
        y = F.conv2d(self.norm.normalize(f, silu=False), _cast(self.to_qkv.weight, f), _cast(self.to_qkv.bias, f))
        # [N, 3C, H, W] -> [N, 1, HW, 3C] -> q, k, v (contiguous, so SDPA may pick its fused
        # kernels; head dim 384 rules out flash attention but not the memory-efficient one)
        y = y.permute(0, 2, 3, 1).reshape(b * t, 1, h * w, 3 * c)
        q, k, v = (part.contiguous() for part in y.split(c, dim=-1))
        o = F.scaled_dot_product_attention(q, k, v)
        del y, q, k, v
        o = o.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        o = F.conv2d(o, _cast(self.proj.weight, o), _cast(self.proj.bias, o))
        return frames_5d(o, b, st).add_(x)


# rows (or columns) of a 3x3 kernel summed into the 2 taps each output parity of a nearest-2x
# upsample actually sees: even outputs see inputs (i-1, i, i) -> taps (w0, w1+w2), odd ones see
# (i, i, i+1) -> taps (w0+w1, w2)
_PARITY_TAPS = (((0,), (1, 2)), ((0, 1), (2,)))


def subpixel_weight(conv: nn.Conv2d, like: torch.Tensor) -> torch.Tensor:
    """conv's 3x3 weight [Co, Ci, 3, 3] as four 2x2 kernels stacked [4*Co, Ci, 2, 2] (parity
    (a, b) at block 2a+b), summed in float32; cached for one decode call (`clear_derived`: no
    version counters, since ComfyUI's inference-mode tensors have none)."""
    w = conv.weight
    key = (w.data_ptr(), like.device, like.dtype)
    cached = getattr(conv, "_subpixel", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    w32 = w.detach().to(device=like.device, dtype=torch.float32)
    blocks = []
    for ra in _PARITY_TAPS:
        rows = torch.stack([w32[:, :, list(g)].sum(2) for g in ra], dim=2)  # [Co, Ci, 2, 3]
        for cb in _PARITY_TAPS:
            blocks.append(torch.stack([rows[:, :, :, list(g)].sum(3) for g in cb], dim=3))
    k = torch.cat(blocks, 0).to(like.dtype)
    if like.is_cuda:
        k = k.contiguous(memory_format=torch.channels_last)
    conv._subpixel = (key, k)
    return k


def _upsample_conv(x: torch.Tensor, conv: nn.Conv2d, split_time: bool, st: Stream) -> torch.Tensor:
    """Nearest 2x spatial upsample + 3x3 conv, computed as four 2x2 "sub-pixel" convs on the
    low-resolution frames: 2.25x fewer FLOPs than conv-after-upsample and no 4x-sized upsampled
    tensor (the largest activation of the decoder otherwise). One cuDNN call (4*Co outputs), then
    each parity is written to its pixels of the output with the bias added.

    With split_time (temporal upsample), channels [0:C) of x are the even output frames and
    [C:2C) the odd ones; they are interleaved into frames first.
    """
    b, cx, t, h, w = x.shape
    if split_time:
        c = cx // 2
        frames = torch.empty((b, t, 2, h, w, c), dtype=x.dtype, device=x.device)
        frames.copy_(x.view(b, 2, c, t, h, w).permute(0, 3, 1, 4, 5, 2))
        frames = frames.view(b * t * 2, h, w, c).permute(0, 3, 1, 2)  # channels-last [N, C, H, W]
    else:
        frames = frames_2d(x)
    k = subpixel_weight(conv, frames)
    y = F.conv2d(frames, k, None, padding=1)  # [N, 4*Co, H+1, W+1]
    del frames
    n, co = y.shape[0], k.shape[0] // 4
    ym = y.permute(0, 2, 3, 1)  # [N, H+1, W+1, 4*Co] (a view when channels-last)
    out = torch.empty((n, h, 2, w, 2, co), dtype=x.dtype, device=x.device)
    bias = _cast(conv.bias, x)
    for a in (0, 1):
        for bb in (0, 1):
            blk = 2 * a + bb
            src = ym[:, a : a + h, bb : bb + w, blk * co : (blk + 1) * co]
            if bias is None:
                out[:, :, a, :, bb].copy_(src)
            else:
                torch.add(src, bias, out=out[:, :, a, :, bb])
    del y, ym
    return frames_5d(out.view(n, 2 * h, 2 * w, co).permute(0, 3, 1, 2), b, st)


class Resample(nn.Module):
    """Spatial 2x up/down sampling, with a causal time conv for the temporal ('3d') modes."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.slot = -1
        # index 0 of `resample` is the original's parameter-free Upsample / ZeroPad2d
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(nn.Identity(), nn.Conv2d(dim, dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.Identity(), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    @property
    def temporal(self) -> bool:
        return self.mode.endswith("3d")

    def forward(self, x: torch.Tensor, st: Stream) -> torch.Tensor | None:
        if self.mode == "upsample2d":
            return _upsample_conv(x, self.resample[1], False, st)
        if self.mode == "upsample3d":
            if st.slots[self.slot] is None:  # the first frame is not temporally upsampled, and
                st.slots[self.slot] = STARTED  # time_conv's history starts (with zeros) after it
                return _upsample_conv(x, self.resample[1], False, st)
            y = self.time_conv.run(causal_input(x, self.time_conv, st))
            return _upsample_conv(y, self.resample[1], True, st)
        # downsampling (encoder): ZeroPad2d((0, 1, 0, 1)) + stride-2 conv on every frame
        f = F.pad(frames_2d(x), (0, 1, 0, 1))
        x = frames_5d(F.conv2d(f, _cast(self.resample[1].weight, f), _cast(self.resample[1].bias, f), stride=2), x.shape[0], st)
        del f
        if self.mode == "downsample2d":
            return x
        return self._time_down(x, st)

    def _time_down(self, x: torch.Tensor, st: Stream) -> torch.Tensor | None:
        """Stride-2, 3-tap time conv over the stream [f0, f1, ...]: f0 passes through alone, then
        windows (f0,f1,f2), (f2,f3,f4), ... as frames arrive; `slots` holds the frames not yet
        consumed (1-2), so chunks of any size give the same result. None when no frame is ready."""
        out = []
        pending = st.slots[self.slot]
        if pending is None:
            out.append(x[:, :, :1])
            pending, x = x[:, :, :1], x[:, :, 1:]
        s = torch.cat([pending, x], dim=2) if x.shape[2] else pending
        n = (s.shape[2] - 1) // 2
        if n:
            out.append(self.time_conv.run(s[:, :, : 2 * n + 1]))
        st.slots[self.slot] = st.layout(s[:, :, 2 * n :].clone())
        if not out:
            return None
        return st.layout(torch.cat(out, dim=2) if len(out) > 1 else out[0])


class Encoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(cfg.image_channels, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(cin, cout))
                cin = cout
            if i != len(cfg.dim_mult) - 1:
                layers.append(Resample(cout, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        out = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(out, out), AttentionBlock(out), ResidualBlock(out, out))
        self.head = nn.Sequential(RMSNorm(out), nn.SiLU(), CausalConv3d(out, cfg.z_dim * 2, 3, padding=1))

    def down(self, x: torch.Tensor, st: Stream) -> torch.Tensor | None:
        """conv1 + the downsampling stages (spatially local: this part can be tiled)."""
        x = self.conv1(st.layout(x), st)
        for layer in self.downsamples:
            x = layer(x, st)
            if x is None:
                return None
        return x

    def bottom(self, x: torch.Tensor, st: Stream) -> torch.Tensor:
        """middle (with full-frame attention) + head."""
        for layer in self.middle:
            x = layer(x, st)
        return self.head[2].run(causal_input(x, self.head[2], st, self.head[0]))


class Decoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        dims = [cfg.dim * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
        up_time = cfg.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0])
        )
        layers: list[nn.Module] = []
        self.stages: list[tuple[int, int]] = []  # [start, stop) of each stage in `upsamples`
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            start = len(layers)
            if i > 0:
                cin //= 2  # the previous upsample halved the channels
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(cin, cout))
                cin = cout
            if i != len(cfg.dim_mult) - 1:
                layers.append(Resample(cout, "upsample3d" if up_time[i] else "upsample2d"))
            self.stages.append((start, len(layers)))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], cfg.image_channels, 3, padding=1))


class WanVAEModel(nn.Module):
    """Weights and per-chunk building blocks; the clip-level loops (chunking, tiling, output
    writing) are in `tiled.py`, the public API on `WanVAE` (`__init__.py`)."""

    def __init__(self, cfg: VAEConfig = WAN21_VAE) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder3d(cfg)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        n = 0
        for m in self.modules():
            if (isinstance(m, CausalConv3d) and m.history) or (isinstance(m, Resample) and m.temporal):
                m.slot = n
                n += 1
        self.n_slots = n

    # -- streams and layout -------------------------------------------------------------------
    def new_stream(self, device: torch.device, channels_last: bool | None = None) -> Stream:
        if channels_last is None:
            channels_last = device.type == "cuda"
        return Stream(self.n_slots, channels_last)

    def clear_derived(self) -> None:
        """Drop weights derived from the parameters (sub-pixel kernels, padded head) so a call
        sees weights patched or moved since the last one."""
        for m in self.modules():
            for name in ("_subpixel", "_pad8", "_gemm"):
                if name in m.__dict__:
                    del m.__dict__[name]

    def use_channels_last(self, on: bool) -> None:
        """Store the 5-D/4-D conv weights channels-last (once; cuDNN would convert them per call)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Conv2d)):
                fmt = (torch.channels_last_3d if m.weight.ndim == 5 else torch.channels_last) if on else torch.contiguous_format
                if not m.weight.is_contiguous(memory_format=fmt):
                    m.weight.data = m.weight.data.contiguous(memory_format=fmt)

    # -- decoder pieces -----------------------------------------------------------------------
    def decode_middle(self, z: torch.Tensor, st: Stream) -> torch.Tensor:
        """Latent chunk -> bottleneck features (conv2, conv1, middle). Full frames: the attention
        here is global over each frame, so tiles start below it and stay exact up to conv padding."""
        x = st.layout(z)
        x = F.conv3d(x, _cast(self.conv2.weight, x), _cast(self.conv2.bias, x))
        x = self.decoder.conv1(x, st)
        for layer in self.decoder.middle:
            x = layer(x, st)
        return x

    def decode_upsample(self, x: torch.Tensor, st: Stream, caps: list[int], stage: int = 0,
                        on_stage: Callable[[int, int], None] | None = None) -> Iterator[torch.Tensor]:
        """Bottleneck features -> RGB frames, depth first: before a stage, x is split into pieces of
        at most caps[stage] frames and each piece runs through all the remaining stages before the
        next one starts (the causal history makes that exact), bounding every activation.
        on_stage(stage, input frames) is called after a stage ran on a piece (progress)."""
        dec = self.decoder
        if stage == len(dec.stages):
            yield dec.head[2].run(causal_input(x, dec.head[2], st, dec.head[0]))
            return
        if x.shape[2] > caps[stage]:
            for piece in x.split(caps[stage], dim=2):
                yield from self.decode_upsample(piece, st, caps, stage, on_stage)
            return
        frames = x.shape[2]
        x = st.layout(x)
        start, stop = dec.stages[stage]
        for layer in dec.upsamples[start:stop]:
            x = layer(x, st)
        if on_stage is not None:
            on_stage(stage, frames)
        yield from self.decode_upsample(x, st, caps, stage + 1, on_stage)

    def stage_shapes(self) -> list[tuple[int, int, int, int]]:
        """Per decoder stage, in elements per latent pixel per input frame of the stage:
        (residual activation, widest upsample tensor, output, frame multiplier)."""
        out = []
        scale = 1
        dec = self.decoder
        for start, stop in dec.stages:
            layers = list(dec.upsamples[start:stop])
            width = max(b.residual[2].out_channels for b in layers if isinstance(b, ResidualBlock))
            px = scale * scale
            last = layers[-1]
            if isinstance(last, Resample):
                tgrow = 2 if last.mode == "upsample3d" else 1
                # time conv out (2C), sub-pixel conv out (4 * C/2 per output frame), result (C/2 at 4x px)
                up = max(2 * width, 2 * width * tgrow) * px
                out.append((width * px, up, 2 * width * tgrow * px, tgrow))
                scale *= 2
            else:
                out.append((width * px, 0, width * px, 1))
        return out

    # -- encoder pieces -----------------------------------------------------------------------
    def encode_down(self, x: torch.Tensor, st: Stream) -> torch.Tensor | None:
        return self.encoder.down(x, st)

    def encode_bottom(self, x: torch.Tensor, st: Stream) -> torch.Tensor:
        """Bottleneck features -> mu (the mean of the posterior; what ComfyUI and diffusers' mode() give)."""
        h = self.encoder.bottom(st.layout(x), st)
        h = F.conv3d(h, _cast(self.conv1.weight, h), _cast(self.conv1.bias, h))
        return h[:, : self.cfg.z_dim]


def pass_caps(model: WanVAEModel, tile_h: int, tile_w: int, max_elements: int) -> list[int]:
    """Frames per pass for each decoder stage so no stage tensor exceeds ~max_elements."""
    caps = []
    for res, up, out, _ in model.stage_shapes():
        per_frame = max(res, up, out) * tile_h * tile_w
        caps.append(max(1, max_elements // max(1, per_frame)))
    return caps


def decoder_activation_bytes(model: WanVAEModel, frames: int, tile_h: int, tile_w: int, caps: list[int],
                             itemsize: int) -> int:
    """Peak activations of the depth-first upsampling path for a chunk of `frames` latent frames:
    the outputs still held by the outer stages plus the working set of the deepest one."""
    px = tile_h * tile_w
    held = peak = 0
    f = frames
    shapes = model.stage_shapes()
    for i, ((res, up, out, tgrow), cap) in enumerate(zip(shapes, caps, strict=True)):
        f = max(1, min(f, cap))
        work = max((3 * f + 2) * res, int(2.5 * up * f)) * px  # x + [history, x] + conv out | upsample
        peak = max(peak, held + work)
        if i + 1 < len(shapes):
            held += f * out * px
        f *= tgrow
    return peak * itemsize


def decoder_history_bytes(model: WanVAEModel, tile_h: int, tile_w: int, itemsize: int) -> int:
    """VRAM of one decoder tile's causal history (2 frames per 3-tap conv of the upsampling path)."""
    total = 0
    scale = 1
    dec = model.decoder
    for start, stop in dec.stages:
        for layer in dec.upsamples[start:stop]:
            if isinstance(layer, ResidualBlock):
                total += (layer.residual[2].in_channels + layer.residual[6].in_channels) * scale * scale
            elif isinstance(layer, Resample) and layer.mode == "upsample3d":
                total += layer.time_conv.in_channels * scale * scale
        if isinstance(dec.upsamples[stop - 1], Resample):
            scale *= 2
    total += dec.head[2].in_channels * scale * scale
    return CACHE_FRAMES * total * tile_h * tile_w * itemsize


class WanVAE(WanVAEModel):
    """The engine's Wan2.1 VAE: weights + decode/encode with the pack's chunking and tiling.

    Method names and signatures are the ones ComfyUI's `comfy.sd.VAE` calls on its
    `first_stage_model` (decode with `output_buffer`, decode_tiled/encode_tiled with latent/pixel
    tile sizes, encode with `device`), so the node adapter can hand this module to ComfyUI as is.
    Settings (attributes): `tiling` "off" | "on" | "auto" for decode() ("auto": tile only when
    the untiled decode would not fit in free VRAM), `tile` (latent px, h, w), `overlap` (latent
    px), `max_pass_elements`, `cudnn_benchmark`, `channels_last` (None: on CUDA), `conv_backend`
    ("auto": conv_gemm's implicit GEMM for the 96- and 192-channel 3x3x3 convs on sm90, where it
    measured faster than cuDNN, cuDNN for the rest; "cudnn"; "gemm": the GEMM wherever it applies),
    `output_device`/`output_dtype` (None: the latent's device, float32), `progress(done, total)`.
    """

    def __init__(self, cfg: VAEConfig = WAN21_VAE) -> None:
        super().__init__(cfg)
        self.tiling = "auto"
        self.tile: tuple[int, int] = (64, 64)
        self.overlap = 8
        # largest activation per pass (elements): untiled decodes take bigger passes (fewer history
        # copies per frame, bigger GEMMs); tiled ones exist to save memory
        self.max_pass_elements = 96 * 2**20
        self.tiled_pass_elements = 48 * 2**20
        self.cudnn_benchmark = True
        self.conv_backend = "auto"
        self.channels_last: bool | None = None  # None: on CUDA
        self.output_device: torch.device | None = None
        self.output_dtype: torch.dtype = torch.float32
        self.progress = None

    # -- decode -------------------------------------------------------------------------------
    def decode_output_shape(self, latent_shape) -> tuple[int, ...]:
        b, _, t, h, w = latent_shape
        r = self.cfg.spatial_ratio
        return (b, self.cfg.image_channels, self.cfg.frames_out(t), h * r, w * r)

    def decode(self, z: torch.Tensor, output_buffer: torch.Tensor | None = None, **_options) -> torch.Tensor:
        """VAE-space latent [B, 16, T, h, w] -> video [B, 3, 1+4(T-1), 8h, 8w] in about [-1, 1]."""
        tile = None
        if self.tiling == "on" or (self.tiling == "auto" and not self._fits_untiled(z)):
            tile = self.tile
        return self._decode(z, tile, self.overlap, output_buffer)

    def decode_tiled(self, z: torch.Tensor, tile_x: int = 64, tile_y: int = 64, overlap: int = 8,
                     tile_t: int | None = None, overlap_t: int | None = None,
                     output_buffer: torch.Tensor | None = None) -> torch.Tensor:
        """Tiled decode; tile sizes and overlap in latent pixels (ComfyUI's VAEDecodeTiled passes
        px / 8). tile_t/overlap_t are ignored: chunking in time is exact and free here."""
        return self._decode(z, (tile_y, tile_x), overlap, output_buffer)

    def decode_vram_bytes(self, latent_shape, itemsize: int, tile: tuple[int, int] | None = None,
                          overlap: int | None = None) -> int:
        from .tiled import decode_vram_bytes, plan_spans

        overlap = self.overlap if overlap is None else overlap
        return decode_vram_bytes(self, tuple(latent_shape), itemsize, tile=tile, overlap=overlap,
                                 max_pass_elements=self._pass_elements(latent_shape, tile, overlap, plan_spans))

    def _pass_elements(self, shape, tile, overlap, plan_spans) -> int:
        if tile is None:
            return self.max_pass_elements
        n = len(plan_spans(shape[-2], tile[0], overlap)) * len(plan_spans(shape[-1], tile[1], overlap))
        return self.max_pass_elements if n == 1 else self.tiled_pass_elements

    def _fits_untiled(self, z: torch.Tensor) -> bool:
        if not z.is_cuda:
            return True
        need = self.decode_vram_bytes(z.shape, z.element_size())
        free, _ = torch.cuda.mem_get_info(z.device)
        free += torch.cuda.memory_reserved(z.device) - torch.cuda.memory_allocated(z.device)
        return need * MEMORY_MARGIN <= free

    @torch.no_grad()
    def _decode(self, z, tile, overlap, output_buffer):
        from .tiled import decode_video

        dev = z.device
        z = z.to(self.conv2.weight.dtype)  # compute in the model's dtype (ComfyUI already casts)
        from .tiled import plan_spans

        with _compute_setup(self, dev):
            return decode_video(self, z, tile=tile, overlap=overlap, out=output_buffer,
                                out_dtype=self.output_dtype, out_device=self.output_device or dev,
                                max_pass_elements=self._pass_elements(z.shape, tile, overlap, plan_spans),
                                channels_last=self.channels_last, progress=self.progress)

    # -- encode -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, device: torch.device | str | None = None, **_options) -> torch.Tensor:
        """Video [B, 3, T, H, W] in [-1, 1] (any device) -> mu [B, 16, 1+(T-1)//4, H/8, W/8]."""
        return self._encode(x, device, None, 64)

    def encode_tiled(self, x: torch.Tensor, tile_x: int = 512, tile_y: int = 512, overlap: int = 64,
                     tile_t: int | None = None, overlap_t: int | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """Tiled encode; tile sizes and overlap in pixels. tile_t/overlap_t ignored (exact chunking)."""
        return self._encode(x, device, (tile_y, tile_x), overlap)

    @torch.no_grad()
    def _encode(self, x, device, tile, overlap):
        from .tiled import encode_video

        dev = torch.device(device) if device is not None else self.conv1.weight.device
        with _compute_setup(self, dev):
            return encode_video(self, x, device=dev, dtype=self.conv1.weight.dtype, tile=tile, overlap=overlap,
                                channels_last=self.channels_last, progress=self.progress)


class _compute_setup:
    """Channels-last weights and cuDNN autotuning on CUDA for the duration of one call (the
    benchmark flag is restored: it is process-global and ComfyUI's other models may not want it)."""

    def __init__(self, model: WanVAE, device: torch.device) -> None:
        self.model, self.cuda = model, device.type == "cuda"

    def __enter__(self):
        self.model.clear_derived()
        backend = self.model.conv_backend
        if backend not in CONV_BACKENDS:
            raise ValueError(f"WanVAE.conv_backend {backend!r}: expected one of {', '.join(CONV_BACKENDS)}")
        for m in self.model.modules():
            if isinstance(m, CausalConv3d):
                m.gemm = backend == "gemm" or (backend == "auto" and conv_gemm.preferred(
                    m.in_channels, m.out_channels, m.kernel_size))
        if self.cuda:
            self.model.use_channels_last(self.model.channels_last is not False)
            self.prev = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = self.prev or self.model.cudnn_benchmark
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.backends.cudnn.benchmark = self.prev
        return False


__all__ = [
    "CACHE_FRAMES",
    "LATENT_MEAN",
    "LATENT_STD",
    "STARTED",
    "WAN21_VAE",
    "Stream",
    "VAEConfig",
    "WanVAE",
    "WanVAEModel",
    "decoder_activation_bytes",
    "decoder_history_bytes",
    "denormalize_latent",
    "normalize_latent",
    "pass_caps",
]
