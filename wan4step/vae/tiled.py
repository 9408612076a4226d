"""Clip-level decode/encode: temporal chunking with the causal history, spatial tiling, output.

Design (see also docs/VAE.md)
-----------------------------
Temporal: chunking is exact. Every causal conv keeps its last two input frames in a `Stream`, so
a clip decodes a piece at a time with the same result as all at once (first latent frame alone,
then any pieces; `model.py` says why the first frame is special). Pieces are sized per decoder
stage (`pass_caps`: at most ~`max_pass_elements` per activation), depth first, so the VRAM of
a pass does not grow with the clip. There is no temporal *tiling*: ComfyUI's `tile_t`/`overlap_t`
(re-decoding overlapping frame windows and blending them) would only cost time and lose
exactness, so they are accepted and ignored.

Spatial tiling, tile-major: the decoder's bottleneck part (conv2, conv1, middle incl. its global
per-frame attention) runs untiled over the whole clip once (cheap: 1/64 of the pixels) and is kept;
then each spatial tile runs the upsampling stages + head over ALL frames with its own causal
history before the next tile starts. Why tile-major and not "all tiles of one chunk":
- tiling then costs only the overlap (no re-decode: each tile's history makes its time axis exact);
- only one tile's history is alive. The history is 2 frames of every 3-tap conv input: ~1.9 GB
  for a full 480x832 frame in bf16, 4.3 GB at 720p. Keeping every tile's history (chunk-major)
  would need the full-frame history, i.e. no memory saving at all. Tile-major needs the history
  of one tile (~1.0 GB for 480x448 px), independent of the video size;
- the middle's attention sees the whole frame, so a tile differs from the untiled decode only by
  zero padding at its borders in the upsampling convs (receptive field ~12 latent px), which the
  overlap + linear blend hides. (ComfyUI's and diffusers' tilings also cut the attention.)
Tiles are planned evenly (`plan_spans`): n = as few tiles as fit `tile` with >= `overlap`
between neighbours, all of equal size, so e.g. 104 latent columns with tile 64 / overlap 8 become
2 tiles of 56 (7.7 % extra pixels) instead of 64 + a shifted 64 (23 %).

Blending: separable linear ramps over each overlap, weights summing to exactly 1; the first tile
that covers a pixel writes it, later ones add, so the output needs no zero-fill and no division.

Output: written piece by piece into `out` (ComfyUI pre-allocates it on its intermediate device,
normally the CPU, via `comfy_has_chunked_io`). CUDA -> CPU goes through a small ring of pinned
buffers with events, so copies overlap the next pass and the GPU never holds the whole video.

Encode mirrors it: tiles run conv1 + the downsampling stages (pixel tiles aligned to 8 so the
stride-2 grids match), are blended at the bottleneck, and the middle (attention) + head run on
the whole frame.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import SettingsError
from .model import WanVAEModel, decoder_activation_bytes, decoder_history_bytes, pass_caps

DEFAULT_PASS_ELEMENTS = 48 * 2**20  # largest activation per pass (elements); ~100 MB in bf16


@dataclass(frozen=True)
class Span:
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def scaled(self, k: int) -> Span:
        return Span(self.start * k, self.stop * k)


def plan_spans(length: int, tile: int | None, overlap: int, align: int = 1) -> list[Span]:
    """Split [0, length) into the fewest equal tiles of size <= tile overlapping by >= overlap.

    Starts and sizes are multiples of `align` (except the last stop = length). tile None or
    >= length gives one span.
    """
    if length <= 0:
        raise SettingsError("nothing to tile", found=f"length {length}")
    if tile is None or tile >= length:
        return [Span(0, length)]
    if tile < 1:
        raise SettingsError("tile size must be positive", found=f"tile {tile}")
    overlap = max(0, min(overlap, tile // 4))  # as VAEDecodeTiled: tile >= 4 x overlap
    step = tile - overlap
    n = max(2, math.ceil((length - overlap) / step))
    size = math.ceil((length + (n - 1) * overlap) / n)
    size = min(length, math.ceil(size / align) * align)
    spans = []
    for i in range(n):
        start = round(i * (length - size) / (n - 1) / align) * align
        spans.append(Span(start, min(length, start + size)))
    spans[-1] = Span(spans[-1].start, length)
    return spans


def blend_weights(spans: list[Span], scale: int) -> list[torch.Tensor]:
    """1-D float32 weights per span (length span.size*scale): linear ramps over each overlap with
    the neighbours, summing to exactly 1 at every position."""
    out = []
    for i, s in enumerate(spans):
        w = torch.ones(s.size * scale, dtype=torch.float64)
        if i > 0:
            ov = (spans[i - 1].stop - s.start) * scale
            if ov > 0:
                w[:ov] = (torch.arange(ov, dtype=torch.float64) + 0.5) / ov
        if i + 1 < len(spans):
            ov = (s.stop - spans[i + 1].start) * scale
            if ov > 0:
                w[-ov:] *= 1 - (torch.arange(ov, dtype=torch.float64) + 0.5) / ov
        out.append(w.float())
    return out


def _write_rules(ys: list[Span], xs: list[Span], iy: int, ix: int, scale: int) -> list[tuple[int, int, int, int, bool]]:
    """Sub-rectangles (y0, y1, x0, x1, add) of tile (iy, ix) in tile-local output pixels: `add`
    where an earlier tile (row-major order) already wrote, plain write elsewhere."""
    sy, sx = ys[iy], xs[ix]
    h, w = sy.size * scale, sx.size * scale
    top = max(0, (ys[iy - 1].stop - sy.start) * scale) if iy > 0 else 0
    left = max(0, (xs[ix - 1].stop - sx.start) * scale) if ix > 0 else 0
    rules = []
    if top:
        rules.append((0, top, 0, w, True))
    if left:
        rules.append((top, h, 0, left, True))
    rules.append((top, h, left, w, False))
    return [r for r in rules if r[0] < r[1] and r[2] < r[3]]


class _Done:
    """Stands in for a CUDA event when staging is exercised on the CPU (tests)."""

    def synchronize(self) -> None:
        pass


class FrameSink:
    """Writes decoded pieces into the output tensor, asynchronously when CUDA -> CPU: each piece
    is copied into a pinned buffer (a small reused pool) with an event, and written into `out` by
    the CPU `depth - 1` pieces later, while the GPU computes the next ones."""

    def __init__(self, out: torch.Tensor, compute_device: torch.device, depth: int = 3, staged: bool | None = None) -> None:
        self.out = out
        self.cuda = compute_device.type == "cuda"
        self.staged = (out.device.type == "cpu" and self.cuda) if staged is None else staged
        self.depth = depth
        self.pending: collections.deque = collections.deque()
        self.free: list[torch.Tensor] = []

    def _host(self, like: torch.Tensor) -> torch.Tensor:
        n = like.numel()
        for i, buf in enumerate(self.free):
            if buf.dtype == like.dtype and buf.numel() >= n:
                return self.free.pop(i)[:n].view(like.shape)
        try:
            return torch.empty(like.shape, dtype=like.dtype, pin_memory=self.cuda)
        except RuntimeError:  # no pinned memory available: plain (synchronous) copies
            return torch.empty(like.shape, dtype=like.dtype)

    def put(self, b: int, t0: int, y0: int, x0: int, piece: torch.Tensor, rules) -> None:
        """piece [1, C, F, h, w] (already weighted) for out[b, :, t0:, y0:, x0:]."""
        if not self.staged:
            self._apply(piece[0], b, t0, y0, x0, rules)
            return
        piece = piece.contiguous()  # one layout on both sides: a plain async memcpy
        host = self._host(piece)
        host.copy_(piece, non_blocking=self.cuda)
        event = torch.cuda.Event() if self.cuda else _Done()
        if self.cuda:
            event.record()
        self.pending.append((event, host, b, t0, y0, x0, rules))
        while len(self.pending) >= self.depth:
            self._drain()

    def _drain(self) -> None:
        event, host, b, t0, y0, x0, rules = self.pending.popleft()
        event.synchronize()
        self._apply(host[0], b, t0, y0, x0, rules)
        base = host._base if host._base is not None else host
        self.free.append(base.view(-1))

    def _apply(self, src: torch.Tensor, b: int, t0: int, y0: int, x0: int, rules) -> None:
        f = src.shape[1]
        dst = self.out[b, :, t0 : t0 + f, y0 : y0 + src.shape[2], x0 : x0 + src.shape[3]]
        for ry0, ry1, rx0, rx1, add in rules:
            d, s = dst[:, :, ry0:ry1, rx0:rx1], src[:, :, ry0:ry1, rx0:rx1]
            if add:
                d.add_(s.to(d.dtype))
            else:
                d.copy_(s)

    def close(self) -> None:
        while self.pending:
            self._drain()


Progress = Callable[[int, int], None]


def decode_video(
    model: WanVAEModel,
    z: torch.Tensor,
    *,
    tile: tuple[int, int] | None = None,
    overlap: int = 8,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    out_device: torch.device | str | None = None,
    max_pass_elements: int = DEFAULT_PASS_ELEMENTS,
    channels_last: bool | None = None,
    progress: Progress | None = None,
    _stage_output: bool | None = None,
) -> torch.Tensor:
    """VAE-space latent z [B, z_dim, T, h, w] -> video [B, 3, 1+4(T-1), 8h, 8w] (about [-1, 1],
    not clamped). Computes on z's device in z's dtype. tile = (tile_h, tile_w) in latent pixels
    (None: untiled), overlap in latent pixels."""
    cfg = model.cfg
    if z.ndim != 5 or z.shape[1] != cfg.z_dim:
        raise SettingsError("expected a video latent [batch, channels, frames, height, width]",
                            expected=f"{cfg.z_dim} channels, 5 dims", found=f"shape {tuple(z.shape)}")
    bsz, _, t, h, w = z.shape
    r = cfg.spatial_ratio
    shape = (bsz, cfg.image_channels, cfg.frames_out(t), h * r, w * r)
    if out is None:
        out = torch.empty(shape, dtype=out_dtype, device=out_device if out_device is not None else z.device)
    elif tuple(out.shape) != shape:
        raise SettingsError("output buffer has the wrong shape", expected=str(shape), found=str(tuple(out.shape)))
    ys = plan_spans(h, tile[0] if tile else None, overlap)
    xs = plan_spans(w, tile[1] if tile else None, overlap)
    tiled = len(ys) * len(xs) > 1
    wy, wx = blend_weights(ys, r), blend_weights(xs, r)
    sink = FrameSink(out, z.device, staged=_stage_output)
    work = _DecodeWork(model, t, h, w, [(sy.size, sx.size) for sy in ys for sx in xs], bsz, progress)
    for b in range(bsz):
        st = model.new_stream(z.device, channels_last)
        zb = z[b : b + 1]
        mid = torch.empty((1, cfg.bottleneck_dim, t, h, w), dtype=z.dtype, device=z.device, memory_format=st.fmt)
        for i in range(t):  # one latent frame at a time: the middle is cheap, its attention is not
            mid[:, :, i : i + 1] = model.decode_middle(zb[:, :, i : i + 1], st)
            work.middle_frame()
        del st
        for iy, sy in enumerate(ys):
            for ix, sx in enumerate(xs):
                st = model.new_stream(z.device, channels_last)
                caps = pass_caps(model, sy.size, sx.size, max_pass_elements)
                weight = None
                if tiled:
                    weight = (wy[iy].to(z.device)[:, None] * wx[ix].to(z.device)[None, :])
                rules = _write_rules(ys, xs, iy, ix, r)
                t_out = 0
                tile_mid = mid[:, :, :, sy.start : sy.stop, sx.start : sx.stop]
                for chunk in (tile_mid[:, :, :1], tile_mid[:, :, 1:]):
                    if chunk.shape[2] == 0:
                        continue
                    on_stage = work.stage_runner(sy.size * sx.size)
                    for frames in model.decode_upsample(chunk, st, caps, on_stage=on_stage):
                        if weight is not None:
                            frames = frames.float() * weight
                        sink.put(b, t_out, sy.start * r, sx.start * r, frames, rules)
                        t_out += frames.shape[2]
                del st
        del mid
    sink.close()
    work.finish()
    return out


class _DecodeWork:
    """Progress of a decode in units of work, so the bar moves through the whole decode.

    Output frames alone are a poor clock: the middle (attention over every latent frame) runs
    before the first frame comes out, and the depth-first upsampling finishes a wide early stage
    for a whole piece before any frame leaves it. Units here: one per latent frame of the middle
    (weighted like two stage-0 passes over the frame) and, per upsampling stage, its input frames
    times the stage's activation elements per frame over the tile. The first latent frame decodes
    to one frame (no time upsampling), the others to `tgrow` more per time-upsampling stage."""

    def __init__(self, model, t: int, h: int, w: int, tiles: list[tuple[int, int]], batch: int,
                 progress: Progress | None) -> None:
        self.shapes = model.stage_shapes()
        self.progress = progress
        self.mid = 2 * self.shapes[0][0] * h * w
        per_tile = sum(self._chunk(1, a * b, first=True) + self._chunk(t - 1, a * b, first=False) for a, b in tiles)
        self.total = max(1, batch * (t * self.mid + per_tile))
        self.done = 0

    def _chunk(self, frames: int, area: int, first: bool) -> int:
        units = 0
        for res, _up, _out, tgrow in self.shapes:
            units += frames * res * area
            frames *= 1 if first else tgrow
        return units

    def _tick(self, units: int) -> None:
        self.done = min(self.done + units, self.total)
        if self.progress is not None:
            self.progress(self.done, self.total)

    def middle_frame(self) -> None:
        self._tick(self.mid)

    def stage_runner(self, area: int) -> Callable[[int, int], None]:
        return lambda stage, frames: self._tick(frames * self.shapes[stage][0] * area)

    def finish(self) -> None:
        if self.done < self.total:
            self._tick(self.total - self.done)


def encode_video(
    model: WanVAEModel,
    x: torch.Tensor,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    tile: tuple[int, int] | None = None,
    overlap: int = 64,
    chunk_frames: int = 4,
    channels_last: bool | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Video x [B, 3, T, H, W] in [-1, 1] (any device; moved a chunk at a time) -> mu
    [B, z_dim, 1+(T-1)//4, H/8, W/8] on the compute device. H, W multiples of 8; frames past
    1+4k are dropped (as ComfyUI does). tile = (tile_h, tile_w) in pixels, overlap in pixels."""
    cfg = model.cfg
    r = cfg.spatial_ratio
    if x.ndim != 5 or x.shape[1] != cfg.image_channels:
        raise SettingsError("expected a video [batch, channels, frames, height, width]",
                            expected=f"{cfg.image_channels} channels, 5 dims", found=f"shape {tuple(x.shape)}")
    bsz, _, frames, hh, ww = x.shape
    if hh % r or ww % r:
        raise SettingsError("video height and width must be multiples of 8", found=f"{hh}x{ww}",
                            fix="crop or resize the frames (ComfyUI's VAEEncode crops automatically)")
    device = torch.device(device) if device is not None else model.conv1.weight.device
    dtype = dtype or model.conv1.weight.dtype
    t = cfg.frames_in(frames)
    n_frames = cfg.frames_out(t)
    h, w = hh // r, ww // r
    # pixel tiles aligned to the 8-pixel latent grid; blending happens at the bottleneck
    ys = plan_spans(h, tile[0] // r if tile else None, overlap // r)
    xs = plan_spans(w, tile[1] // r if tile else None, overlap // r)
    tiled = len(ys) * len(xs) > 1
    wy, wx = blend_weights(ys, 1), blend_weights(xs, 1)
    chunks = [(0, 1)] + [(s, min(n_frames, s + chunk_frames)) for s in range(1, n_frames, chunk_frames)]
    mus = []
    total, done = bsz * (len(ys) * len(xs) * len(chunks) + t), 0
    for b in range(bsz):
        feats = torch.zeros((1, cfg.bottleneck_dim, t, h, w), dtype=torch.float32 if tiled else dtype, device=device)
        for iy, sy in enumerate(ys):
            for ix, sx in enumerate(xs):
                st = model.new_stream(device, channels_last)
                weight = (wy[iy].to(device)[:, None] * wx[ix].to(device)[None, :]) if tiled else None
                t_lat = 0
                for c0, c1 in chunks:
                    px = x[b : b + 1, :, c0:c1, sy.start * r : sy.stop * r, sx.start * r : sx.stop * r]
                    f = model.encode_down(px.to(device=device, dtype=dtype), st)
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    if f is None:
                        continue
                    dst = feats[:, :, t_lat : t_lat + f.shape[2], sy.start : sy.stop, sx.start : sx.stop]
                    if weight is None:
                        dst.copy_(f)
                    else:
                        dst.add_(f.float() * weight)
                    t_lat += f.shape[2]
                del st
        st = model.new_stream(device, channels_last)
        mu = torch.empty((1, cfg.z_dim, t, h, w), dtype=dtype, device=device)
        for i in range(t):
            mu[:, :, i : i + 1] = model.encode_bottom(feats[:, :, i : i + 1].to(dtype), st)
            done += 1
            if progress is not None:
                progress(done, total)
        mus.append(mu)
        del feats, st
    return torch.cat(mus) if len(mus) > 1 else mus[0]


# -- memory model ----------------------------------------------------------------------------------
def decode_vram_bytes(
    model: WanVAEModel,
    latent_shape: tuple[int, ...],
    itemsize: int,
    *,
    tile: tuple[int, int] | None = None,
    overlap: int = 8,
    max_pass_elements: int = DEFAULT_PASS_ELEMENTS,
    out_on_device: bool = False,
) -> int:
    """Predicted peak VRAM of decode_video beyond the weights: one tile's causal history + the
    stored bottleneck features + the activations of one pass (+ the output if it lives on the
    GPU). Calibrated against the H100 bench (scripts/bench_vae.py prints both)."""
    cfg = model.cfg
    t, h, w = latent_shape[-3], latent_shape[-2], latent_shape[-1]
    ys = plan_spans(h, tile[0] if tile else None, overlap)
    xs = plan_spans(w, tile[1] if tile else None, overlap)
    th, tw = max(s.size for s in ys), max(s.size for s in xs)
    history = decoder_history_bytes(model, th, tw, itemsize)
    mid = cfg.bottleneck_dim * t * h * w * itemsize
    caps = pass_caps(model, th, tw, max_pass_elements)
    act = decoder_activation_bytes(model, max(1, t - 1), th, tw, caps, itemsize)
    out = 0
    if out_on_device:
        out = cfg.image_channels * cfg.frames_out(t) * h * w * cfg.spatial_ratio**2 * 4
    return int(history + mid + act + out)


def encode_vram_bytes(model: WanVAEModel, video_shape: tuple[int, ...], itemsize: int, *, tile: tuple[int, int] | None = None,
                      overlap: int = 64, chunk_frames: int = 4) -> int:
    """Predicted peak VRAM of encode_video beyond the weights (rough: ~8 full-res activations of a chunk)."""
    cfg = model.cfg
    frames, hh, ww = video_shape[-3], video_shape[-2], video_shape[-1]
    th = min(hh, tile[0]) if tile else hh
    tw = min(ww, tile[1]) if tile else ww
    act = 8 * cfg.dim * (chunk_frames + 2) * th * tw * itemsize
    history = 2 * cfg.dim * 8 * th * tw * itemsize
    feats = cfg.bottleneck_dim * cfg.frames_in(frames) * (hh // 8) * (ww // 8) * 4
    return int(act + history + feats)
