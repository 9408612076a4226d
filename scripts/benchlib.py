"""What every benchmark script shares: shapes, timers, random weights, ballast, ComfyUI import, tables.

One place for each thing the bench/profile scripts need, so a number in docs/BENCHMARKS.md
means the same in every script:

- shapes: `T2V_14B` (and `tiny_config()` for `--smoke`) from `wan4step.wan_config`, the clip sizes
  (`SIZES`, `Size.latent_shape`, `Size.tokens`), `comfy_kwargs(cfg)` for ComfyUI's `WanModel`;
- timing: `measure(fn, device)` -> `Timing` (CUDA events around every call after a warm-up and a
  sync, perf_counter on the CPU; `.median_ms`, `.min_ms`, `.median_s`), `sync(device)`;
- memory: `Ballast(budget_gib)` (the allocation that makes a big card look small to every memory
  query), `reset_peak`, `peak_gib`, `rss_gib`;
- weights: `Format.parse("fp8" | "int8" | "bf16" | "q4_k" | "Q4_K_M" | "gguf:Q4_K_M")`, then
  `random_weight` (one linear, built a few rows at a time on the device, so nothing but the
  weight's own bytes is held), `canonical_state` (the pack's loader output), `build_wan`
  (ComfyUI's WanModel with the pack's or ComfyUI-GGUF's ops);
- ComfyUI: `import_comfy`, `import_pack`, `import_comfyui_gguf`, `fast_options` (the pack's
  fused forward as ComfyUI's block patch);
- output: `md_table`, `text_table`, `device_line`;
- `--smoke`: `add_smoke(ap)` and `skip_cuda(what)`: every script runs on the CPU at tiny shapes in
  seconds (tests/unit/test_bench_smoke.py), so a broken import fails CI instead of a GPU run.

Nothing here imports torch at module level: bench_comfy_offload's child must set ComfyUI's
allocator and comfy-aimdo up before torch loads.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Appended, not prepended: ComfyUI owns a top-level module called `nodes`, and the repo's own
# `nodes/` package must never shadow it.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from wan4step.wan_config import BLOCK_LINEARS, T2V_14B, WanConfig, block_index, expected_shapes  # noqa: E402

GiB = 1024**3
TEXT_TOKENS = 512  # the UMT5 context length the DiT's cross-attention sees
NORM_KEYS = ("norm_q.weight", "norm_k.weight", "norm3.weight")  # filled with ones (identity norms)


# ---------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Size:
    """A clip size in pixels and frames (what the Empty latent node is given)."""

    name: str
    height: int
    width: int
    frames: int

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1

    def latent_shape(self, channels: int = 16) -> tuple[int, int, int, int, int]:
        return (1, channels, self.latent_frames, self.height // 8, self.width // 8)

    def tokens(self, cfg: WanConfig = T2V_14B) -> int:
        """Video tokens of one forward: latent frames x the patchified latent grid."""
        _, ph, pw = cfg.patch_size
        return self.latent_frames * (self.height // 8 // ph) * (self.width // 8 // pw)

    @property
    def whf(self) -> tuple[int, int, int]:
        """(width, height, frames), the advisor's argument order."""
        return (self.width, self.height, self.frames)

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.frames}"


SIZES: dict[str, Size] = {
    "480p": Size("480p", 480, 832, 81),  # 32,760 tokens
    "720p": Size("720p", 720, 1280, 81),  # 75,600 tokens
    "small": Size("small", 288, 512, 33),  # 5,184 tokens
    "tiny": Size("tiny", 64, 64, 9),  # --smoke
}


def sizes(spec: str) -> list[Size]:
    """A comma list of size names (480p, 720p, small, tiny) or HxWxF."""
    out = []
    for s in spec.split(","):
        if s in SIZES:
            out.append(SIZES[s])
        else:
            h, w, f = (int(v) for v in s.lower().split("x"))
            out.append(Size(s, h, w, f))
    return out


def tiny_config() -> WanConfig:
    """The tiny DiT (dim 256, 2 blocks): the tests' and the demo's model, and every `--smoke` run's."""
    from wan4step.tiny.dit import TINY_DIT

    return TINY_DIT


def config(smoke: bool) -> WanConfig:
    return tiny_config() if smoke else T2V_14B


def comfy_kwargs(cfg: WanConfig) -> dict[str, Any]:
    """ComfyUI's `WanModel(**kwargs)` for this config (t2v; ComfyUI's heads = dim // 128 too)."""
    return dict(dim=cfg.dim, ffn_dim=cfg.ffn_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers,
                text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, in_dim=cfg.in_dim, out_dim=cfg.out_dim,
                eps=cfg.eps)


def block_linear_shapes(cfg: WanConfig) -> dict[str, tuple[int, int]]:
    """The ten linears of one block -> [out, in], in execution order."""
    shapes = expected_shapes(WanConfig(dim=cfg.dim, ffn_dim=cfg.ffn_dim, num_layers=1))
    return {lin: shapes[f"blocks.0.{lin}.weight"] for lin in BLOCK_LINEARS}  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def _device(device) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sync(device=None) -> None:
    import torch

    if _device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Wall times of single calls, in ms."""

    times_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def median_s(self) -> float:
        return self.median_ms / 1e3

    @property
    def min_s(self) -> float:
        return self.min_ms / 1e3


def measure(fn: Callable[[], Any], device=None, iters: int = 10, warmup: int = 2) -> Timing:
    """Time `iters` calls of `fn` after `warmup` untimed ones.

    CUDA: one pair of events around each call, after a synchronize (so the start event is
    stamped when the call is issued, not behind earlier queued work); the call's output is
    dropped before the next. CPU: perf_counter around each call.
    """
    import torch

    dev = _device(device)
    for _ in range(warmup):
        fn()
    out = Timing()
    if dev.type == "cuda":
        for _ in range(max(1, iters)):
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.times_ms.append(a.elapsed_time(b))
    else:
        for _ in range(max(1, iters)):
            t = time.perf_counter()
            fn()
            out.times_ms.append((time.perf_counter() - t) * 1e3)
    return out


def median_ms(fn: Callable[[], Any], device=None, iters: int = 10, warmup: int = 2) -> float:
    return measure(fn, device, iters, warmup).median_ms


# ---------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------
class Ballast:
    """An allocation of (total - budget) bytes on the GPU, so every memory query (torch, NVML,
    ComfyUI, the advisor) sees a card of `budget_gib`. Make it before the model is built.
    No-op (0 bytes) without a budget or on the CPU."""

    def __init__(self, budget_gib: float | None, device="cuda") -> None:
        import torch

        self.tensor = None
        self.total = 0
        dev = _device(device)
        if budget_gib and dev.type == "cuda":
            _, self.total = torch.cuda.mem_get_info(dev)
            size = self.total - int(budget_gib * GiB)
            if size > 0:
                self.tensor = torch.empty(size, dtype=torch.uint8, device=dev)

    @property
    def bytes(self) -> int:
        return self.tensor.numel() if self.tensor is not None else 0

    def release(self) -> None:
        self.tensor = None


def reset_peak(device=None) -> None:
    import torch

    if _device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device=None, minus_bytes: int = 0) -> float:
    """torch's peak allocated bytes since `reset_peak`, less `minus_bytes` (a ballast), in GiB; 0 on the CPU."""
    import torch

    if _device(device).type != "cuda":
        return 0.0
    return (torch.cuda.max_memory_allocated() - minus_bytes) / GiB


def rss_gib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / GiB


def free_cuda_cache() -> None:
    """Collect garbage and hand torch's cached blocks back (CUDA only: a collection costs ~0.5 s once
    ComfyUI is imported, and the CPU allocator keeps no cache)."""
    import gc

    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
# random weights
# ---------------------------------------------------------------------------------------
CHUNK_ELEMS = 1 << 19  # weights are drawn this many elements at a time (2 MiB of fp32)


@dataclass(frozen=True)
class Format:
    """How the block linears are stored: bf16, fp8 / int8 (LightX2V row-wise W8A8), or GGUF.

    `gguf` is one ggml type for every block linear ("Q4_K") or a QuantStack tier ("Q4_K_M"), whose
    per-tensor mix (Q6_K for some v and ffn.2, ...) comes from `gguf_file.tier_types`.
    """

    kind: str
    gguf: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Format:
        s = spec.strip()
        if s.lower() in ("bf16", "fp8", "int8"):
            return cls(s.lower())
        name = s.split(":", 1)[1] if s.lower().startswith("gguf:") else s
        name = name.upper()
        import gguf

        from wan4step.formats.gguf_file import TIERS

        if name not in TIERS and name not in gguf.GGMLQuantizationType.__members__:
            raise SystemExit(f"unknown weight format {spec!r}: bf16, fp8, int8, a ggml type (q4_k) or a tier (Q4_K_M)")
        return cls("gguf", name)

    def __str__(self) -> str:
        return self.kind if self.gguf is None else self.gguf.lower()

    def qtypes(self, cfg: WanConfig) -> dict[str, int]:
        """Block linear key -> ggml type (GGUF formats only)."""
        import gguf

        from wan4step.formats.gguf_file import TIERS, tier_types

        shapes = expected_shapes(cfg)
        keys = [k for k in shapes if is_block_linear(k)]
        if self.gguf in TIERS:
            types = tier_types(shapes, self.gguf)
            return {k: types[k] for k in keys}
        return dict.fromkeys(keys, int(gguf.GGMLQuantizationType[self.gguf]))


def is_block_linear(key: str) -> bool:
    return block_index(key) is not None and key.endswith(tuple(f".{lin}.weight" for lin in BLOCK_LINEARS))


def _chunks(rows: int, cols: int) -> list[tuple[int, int]]:
    step = max(1, CHUNK_ELEMS // max(1, cols))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def random_tensor(shape: Sequence[int], *, device, generator, dst=None, std: float = 0.02, mean: float = 0.0,
                  dtype=None):
    """N(mean, std) of `dtype` (bf16) allocated once on `dst` (default `device`), drawn on `device`
    a few rows at a time."""
    import torch

    dtype = dtype or torch.bfloat16
    dst = device if dst is None else dst
    out = torch.empty(tuple(shape), dtype=dtype, device=dst)
    flat = out.view(-1, shape[-1]) if len(shape) > 1 else out.view(1, -1)
    for r0, r1 in _chunks(*flat.shape):
        part = torch.randn(r1 - r0, flat.shape[1], device=device, generator=generator) * std + mean
        flat[r0:r1].copy_(part)
    return out


def random_weight(kind: str, shape: Sequence[int], *, device, generator, dst=None, qtype: int | None = None):
    """A random [out, in] linear weight in its stored encoding, allocated once on `dst` (default `device`).

    Values are drawn on `device` a few rows at a time and copied into the final tensor, so besides
    the weight's own bytes only a few MiB of temporaries are held (under a ballast nothing but the
    plan's resident bytes fits). Statistics: N(0, 1/in) rows; fp8 / int8 quantized row-wise as
    LightX2V's converter does (fp32 scales [out, 1], as the pack's loaders keep them); GGUF random
    valid blocks (`gguf_encode.random_raw`: the decode cost does not depend on the values).
    Returns a bf16 tensor or a `QuantWeight`.
    """
    import torch

    from wan4step.quant.gguf_dequant import row_bytes
    from wan4step.quant.gguf_encode import random_raw
    from wan4step.quant.scaled import quantize_rowwise
    from wan4step.quant.weights import GGUF, QuantWeight

    out_f, in_f = (int(s) for s in shape)
    dst = device if dst is None else dst
    chunks = _chunks(out_f, in_f)
    if kind == GGUF:
        data = torch.empty(out_f, row_bytes(qtype, (out_f, in_f)), dtype=torch.uint8, device=dst)
        for r0, r1 in chunks:
            data[r0:r1].copy_(random_raw(qtype, (r1 - r0, in_f), device=device, generator=generator))
        return QuantWeight(GGUF, data, (out_f, in_f), qtype=int(qtype))
    if kind in ("fp8", "int8"):
        data = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn if kind == "fp8" else torch.int8, device=dst)
        scale = torch.empty(out_f, 1, dtype=torch.float32, device=dst)
        for r0, r1 in chunks:
            q, s = quantize_rowwise(torch.randn(r1 - r0, in_f, device=device, generator=generator) / in_f**0.5, kind)
            data[r0:r1].copy_(q)
            scale[r0:r1].copy_(s)
        return QuantWeight(kind, data, (out_f, in_f), scale)
    if kind != "bf16":
        raise ValueError(f"unknown weight kind {kind!r}")
    return random_tensor((out_f, in_f), device=device, generator=generator, dst=dst, std=in_f**-0.5)


def canonical_state(cfg: WanConfig, fmt: Format, device, *, dst=None, seed: int = 0) -> dict:
    """A random DiT state dict as the pack's loaders return it (canonical keys; block linears in `fmt`,
    everything else bf16; q/k/norm3 norms ones)."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    qtypes = fmt.qtypes(cfg) if fmt.kind == "gguf" else {}
    sd: dict = {}
    for key, shape in expected_shapes(cfg).items():
        if key.endswith(NORM_KEYS):
            sd[key] = torch.ones(shape, dtype=torch.bfloat16, device=dst or device)
        elif is_block_linear(key):
            sd[key] = random_weight(fmt.kind, shape, device=device, generator=g, dst=dst, qtype=qtypes.get(key))
        elif len(shape) == 2 and key.endswith(".weight"):
            sd[key] = random_weight("bf16", shape, device=device, generator=g, dst=dst)
        else:
            sd[key] = random_tensor(shape, device=device, generator=g, dst=dst)
    return sd


def build_wan(cfg: WanConfig, fmt: Format | str, device, ops, *, streamed: Iterable[int] = (), seed: int = 0,
              ggml=None):
    """ComfyUI's WanModel of `cfg` built with `ops`, random weights in `fmt`.

    Blocks in `streamed` end up on the CPU (for the pack's block streamer), everything else on `device`;
    every weight is allocated once, where it ends up (`random_weight`). `ggml` (ComfyUI-GGUF's
    package) with `ops = ggml.ops.GGMLOps` stores the GGUF block linears as its GGMLTensors; otherwise
    `ops` is the pack's (`pack.nodes.comfy_compat.model.make_ops({})`) and weights go through
    `QuantLinear.assign_weight`. Embeddings and the head stay bf16, as in the published files.
    """
    import torch
    from comfy.ldm.wan.model import WanModel

    from wan4step.quant.linear import QuantLinear

    fmt = Format.parse(fmt) if isinstance(fmt, str) else fmt
    streamed = set(streamed)
    with torch.device("cpu"):  # CPU pages are only touched where a weight is kept there
        model = WanModel(model_type="t2v", device="cpu", dtype=torch.bfloat16, operations=ops,
                         **comfy_kwargs(cfg)).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    qtypes = fmt.qtypes(cfg) if fmt.kind == "gguf" else {}

    def home(name: str):
        if name.startswith("blocks."):
            return "cpu" if int(name.split(".")[1]) in streamed else device
        return device

    done: set[int] = set()
    for name, m in model.named_modules():
        if not isinstance(m, (QuantLinear, torch.nn.Linear)):
            continue
        out_f, in_f = m.out_features, m.in_features
        dst = home(name)
        key = name + ".weight"
        bias = random_tensor((out_f,), device=device, generator=g, dst=dst)
        kind = fmt.kind if is_block_linear(key) else "bf16"
        w = random_weight(kind, (out_f, in_f), device=device, generator=g, dst=dst, qtype=qtypes.get(key))
        if isinstance(m, QuantLinear):
            m.assign_weight(w, bias)
        elif ggml is not None and kind == "gguf":
            t = ggml.ops.GGMLTensor(w.data, tensor_type=w.qtype, tensor_shape=torch.Size((out_f, in_f)))
            m.weight = torch.nn.Parameter(t, requires_grad=False)
            m.bias = torch.nn.Parameter(bias, requires_grad=False)
        else:
            m.weight = torch.nn.Parameter(w, requires_grad=False)
            m.bias = torch.nn.Parameter(bias, requires_grad=False)
        done.update(id(p) for p in m.parameters(recurse=False))
    for name, p in model.named_parameters():  # norms, modulation, patch embedding: small
        if id(p) in done:
            continue
        if name.endswith(NORM_KEYS):
            p.data = torch.ones(p.shape, dtype=p.dtype, device=home(name))
        else:
            p.data = random_tensor(p.shape, device=device, generator=g, dst=home(name), dtype=p.dtype)
    for name, b in model.named_buffers():
        if b.device.type == "cpu" and home(name) != "cpu":
            b.data = b.data.to(device)
    return model


def module_bytes(m) -> int:
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


# ---------------------------------------------------------------------------------------
# ComfyUI and the pack
# ---------------------------------------------------------------------------------------
def comfyui_path() -> Path | None:
    """The ComfyUI checkout the tests use (COMFYUI_PATH, else ~/.cache/wan4step/ComfyUI), or None."""
    from wan4step_dev.comfy_server import find_comfyui as find

    return find()


def find_comfyui() -> Path:
    """`comfyui_path()`, or exit saying how to get one."""
    from wan4step_dev.comfy_server import HOW_TO_GET_COMFYUI

    path = comfyui_path()
    if path is None:
        raise SystemExit(HOW_TO_GET_COMFYUI)
    return path


def import_comfy(extra_args: Sequence[str] = ("--disable-dynamic-vram",)) -> Path:
    """A real ComfyUI imported into this process, its CLI args parsed from `extra_args` (first call wins)."""
    path = find_comfyui()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    argv = sys.argv
    sys.argv = ["main.py", *extra_args]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
    finally:
        sys.argv = argv
    import comfy.model_management  # noqa: F401
    import comfy.ops  # noqa: F401

    return path


def comfy_args(device, base: Sequence[str] = ("--disable-dynamic-vram",)) -> tuple[str, ...]:
    """ComfyUI CLI flags for a bench on `device`: `base`, plus --cpu without CUDA."""
    return tuple(base) + (() if _device(device).type == "cuda" else ("--cpu",))


def import_pack(name: str = "ComfyUI_Wan4Step_bench"):
    """This repository as ComfyUI imports a custom-node package (sharing the tests' copy of the engine)."""
    from wan4step_dev.packaging_alias import load_pack

    return load_pack(name)


def import_comfyui_gguf(comfy_path: Path | None = None):
    """city96's ComfyUI-GGUF package (from the checkout's custom_nodes), or None."""
    name = "ComfyUI_GGUF_bench"
    if name in sys.modules:
        return sys.modules[name]
    d = (comfy_path or find_comfyui()) / "custom_nodes" / "ComfyUI-GGUF"
    if not d.is_dir():
        return None
    spec = importlib.util.spec_from_file_location(name, d / "__init__.py", submodule_search_locations=[str(d)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def fast_options(pack, model, attention: str, device, compile: bool = False) -> tuple[Any, dict]:
    """The pack's fused block forward on a ComfyUI WanModel, as ComfyUI's `patches_replace` option.

    Returns (FastBlocks, transformer_options); the options are copied per call by the callers."""
    fast = pack.nodes.comfy_compat.fast_forward.FastBlocks(model, attention, device, compile=compile)
    patches = {("double_block", i): fast.make(i) for i in range(len(model.blocks))}
    return fast, {"patches_replace": {"dit": patches}}


# ---------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------
def md_table(head: Sequence[str], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A markdown table; `align` per column: "l" (---) or "r" (---:)."""
    marks = ["---:" if a == "r" else "---" for a in (align or ["l"] * len(head))]
    lines = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(head: Sequence[str], rows: Iterable[Sequence[Any]], sep: str = "  ") -> str:
    """Columns padded to their widest cell (text left, numbers right), a dashed rule under the head."""
    cells = [[str(h) for h in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(head))]

    def fmt(row):
        return sep.join((c.rjust(w) if _numeric(c) else c.ljust(w)) for c, w in zip(row, widths, strict=False)).rstrip()

    out = [fmt(cells[0]), "-" * len(fmt(["-" * w for w in widths]))]
    return "\n".join(out + [fmt(r) for r in cells[1:]])


def _numeric(s: str) -> bool:
    try:
        float(s.rstrip("x%").split(" ")[0])
        return True
    except ValueError:
        return False


def device_line(device=None) -> str:
    """"device: <GPU>, torch <v>" (what the docs' numbers name)."""
    import torch

    dev = _device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return f"device: {name}, torch {torch.__version__}"


# ---------------------------------------------------------------------------------------
# --smoke
# ---------------------------------------------------------------------------------------
SMOKE_HELP = ("CPU, tiny shapes, a few seconds: checks that the script runs end to end (CUDA-only rows are "
              "skipped with a note); tests/unit/test_bench_smoke.py runs it")


def add_smoke(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)


def skip_cuda(what: str) -> None:
    print(f"skip {what}: needs CUDA (--smoke runs on the CPU)", flush=True)


def require_cuda(script: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"{script} needs a CUDA GPU; none found (use --smoke for a CPU check of the script)")


def smoke_or(args: argparse.Namespace, **overrides) -> argparse.Namespace:
    """With --smoke, the given argument values replace the command line's."""
    if getattr(args, "smoke", False):
        for k, v in overrides.items():
            setattr(args, k, v)
    return args
