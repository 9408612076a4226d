"""ComfyUI's OWN offloading of the Wan2.1 T2V-14B DiT at emulated small cards (random weights, real shapes).

The counterpart of scripts/bench_stream.py (the pack's block streamer): here ComfyUI decides
what stays on the GPU. Every row runs in a fresh child process (ComfyUI's memory mode is
process-wide), which, in this order:

  1. parses ComfyUI's CLI args (`comfy.cli_args.args`) for the mode: `dynamic` = no flag
     (DynamicVRAM, the 0.33 default) or `lowvram` = `--disable-dynamic-vram` (the legacy
     estimate-based ModelPatcher that loads the model partially); imports `cuda_malloc` and
     initialises comfy-aimdo before torch is imported, as ComfyUI's main.py does;
  2. allocates a ballast of (total - budget) bytes on cuda:0, so every memory query that
     ComfyUI and comfy-aimdo make sees the smaller card (no ballast for `resident`);
  3. imports comfy.model_management and, for `dynamic`, does what main.py does next:
     `comfy_aimdo.control.init_devices`, CoreModelPatcher = ModelPatcherDynamic,
     `comfy.memory_management.aimdo_enabled = True` (the active mode is printed);
  4. builds the model as a user gets it: a random state dict with the key names and shapes of
     ComfyUI's own WanModel (14B), through `comfy.sd.load_diffusion_model_state_dict`:
       bf16       bf16 weights, model_options {} (UNETLoader, weight_dtype default)
       fp8        2-D weights stored float8_e4m3fn (an fp8 checkpoint), model_options dtype
                  float8_e4m3fn (UNETLoader weight_dtype fp8_e4m3fn)
       fp8-cast   bf16 weights, model_options dtype float8_e4m3fn (weight_dtype fp8 on a bf16 file)
       gguf-q4_k  (any gguf-<type> that wan4step's random_raw supports) random GGUF bytes for the
                  block linears, F16/F32 for the rest as in city96's files, loaded the way
                  ComfyUI-GGUF's UnetLoaderGGUF does (GGMLOps + GGUFModelPatcher.clone);
  5. samples like KSampler at cfg 1: `comfy.sample.sample` (what `nodes.common_ksampler` calls),
     sampler lcm, scheduler simple, 4 steps, random conditioning [1, 512, 4096], so ComfyUI's
     load_models_gpu loads / partially loads / offloads the model itself.

Reported per row: s/step = median of steps 2..N (sampler-callback timestamps after a CUDA
sync; step 1 includes ComfyUI loading the model and is listed apart), total = the whole
sample call, peak VRAM = max over the sampling of (device used per cudaMemGetInfo, polled
every 20 ms) minus the ballast, i.e. CUDA context + torch + comfy-aimdo's own allocations,
comparable with the budget; peak RAM = max RSS polled during sampling; max RSS =
getrusage ru_maxrss of the whole child (includes building the random weights); weights on GPU
= ComfyUI's ModelPatcher.loaded_size() after sampling. OOM is reported as a row.

    python scripts/bench_comfy_offload.py                 # the default grid (~8 min on an H100)
    python scripts/bench_comfy_offload.py --configs bf16:480p:8:dynamic,bf16:480p:8:lowvram
    python scripts/bench_comfy_offload.py --formats bf16,fp8 --sizes small --budgets 8,12 --modes dynamic,lowvram
    python scripts/bench_comfy_offload.py --tiny          # CPU, tiny model, one child per row (--cpu, no ballast)
    python scripts/bench_comfy_offload.py --smoke         # CPU, tiny model, rows in this process: checks the script runs
    python scripts/bench_comfy_offload.py --configs bf16:small:12:dynamic+swap,bf16:small:12:lowvram+swap
        # "+swap": the pack's Block Swap (auto) applied to ComfyUI's own MODEL, under that memory mode

Differences to a real workflow: the state dict lives in anonymous memory (a file would be
mmapped, ComfyUI's comfy-aimdo mmap for safetensors); weights are random; no text encoder
or VAE is loaded, so the DiT has the card to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402  (imports no torch: the child sets ComfyUI's allocator up first)

GiB = bl.GiB
SIZES = {name: size for name, size in bl.SIZES.items() if name != "tiny"}
MODES = {"dynamic": [], "lowvram": ["--disable-dynamic-vram"]}
# (format, size, budget GiB or None = resident, mode), most important first: ~6-8 min on an H100
DEFAULT_GRID = [
    ("bf16", "480p", None, "dynamic"),
    ("bf16", "480p", 8, "dynamic"),
    ("bf16", "480p", 8, "lowvram"),
    ("bf16", "small", None, "dynamic"),
    ("bf16", "small", 12, "dynamic"),
    ("bf16", "small", 12, "lowvram"),
    ("fp8", "small", 8, "dynamic"),
    ("gguf-q4_k", "480p", 12, "dynamic"),
    ("gguf-q4_k", "small", 8, "dynamic"),
]
TINY_GRID = [("bf16", "tiny", None, "dynamic"), ("bf16", "tiny", None, "lowvram"),
             ("fp8", "tiny", None, "dynamic"), ("gguf-q4_k", "tiny", None, "dynamic")]
# --smoke: in this process, so ComfyUI's flags are those of the first row; +swap runs the pack's Block Swap
SMOKE_GRID = [("bf16", "tiny", None, "dynamic+swap"), ("fp8", "tiny", None, "dynamic"),
              ("gguf-q4_k", "tiny", None, "dynamic")]


# ---------------------------------------------------------------------------------------
# child: one configuration in its own process
# ---------------------------------------------------------------------------------------
def setup_comfy(flags: list[str], cuda: bool, budget_gib: float | None, cfg):
    """ComfyUI as main.py sets it up, with a ballast allocated before model_management sees the card.

    Returns (torch, ballast bytes, active-mode text, WanModel state-dict shapes)."""
    path = bl.find_comfyui()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    argv, sys.argv = sys.argv, ["main.py", *flags]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        from comfy.cli_args import args, enables_dynamic_vram
    finally:
        sys.argv = argv
    if cuda and "torch" not in sys.modules:
        import cuda_malloc  # noqa: F401  (main.py: picks cudaMallocAsync via PYTORCH_CUDA_ALLOC_CONF before torch loads)
    elif cuda:  # setting the allocator after torch loaded fails at CUDA init ("allocator backend parsed at runtime")
        print("torch was imported first (wan4step.errors subclasses torch's OOM): torch's native CUDA allocator, "
              "not cudaMallocAsync, for every row of this run", flush=True)
    try:
        import comfy_aimdo.control as aimdo
    except ImportError as exc:
        aimdo = None
        print(f"comfy-aimdo not importable ({exc}): DynamicVRAM cannot be enabled", flush=True)
    if aimdo is not None and enables_dynamic_vram():  # main.py, before torch is imported
        headroom = None if args.reserve_vram is None else int(args.reserve_vram * GiB)
        try:
            aimdo.init(simple_vram_headroom=headroom, nvml_pressure=not getattr(args, "disable_nvml_pressure", False))
        except TypeError:  # older comfy-aimdo protocols, as main.py falls back
            try:
                aimdo.init(simple_vram_headroom=headroom)
            except TypeError:
                aimdo.init()

    import torch

    ballast = None
    if cuda and budget_gib:
        free, total = torch.cuda.mem_get_info()
        ballast = bl.Ballast(budget_gib, "cuda")
        if ballast.bytes:
            _HELD.append(ballast)  # alive for the whole child: a dropped ballast is a free card again
            print(f"ballast {ballast.bytes / GiB:.2f} GiB of {total / GiB:.2f} GiB (free before {free / GiB:.2f}): "
                  f"the card looks like {budget_gib:g} GiB", flush=True)
        else:
            print(f"budget {budget_gib:g} GiB >= the card's {total / GiB:.2f} GiB: no ballast", flush=True)
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher

    shapes = wan_shapes(cfg)  # before DynamicVRAM makes ComfyUI's Linear lazy (no weight until loaded)
    active = "legacy ModelPatcher" + (" (cpu)" if not cuda else "")
    supported = mm.is_nvidia() or (mm.is_amd() and getattr(mm, "rocm_version", (0, 0)) >= (7, 14))
    if args.enable_dynamic_vram or (enables_dynamic_vram() and supported):  # main.py's DynamicVRAM block
        if not args.enable_dynamic_vram and mm.torch_version_numeric < (2, 8):
            active += " (DynamicVRAM needs torch >= 2.8)"
        elif aimdo is not None:
            headroom = int(getattr(args, "vram_headroom", 0) * GiB)
            try:
                ok = aimdo.init_devices((d.index, headroom) for d in mm.get_all_torch_devices())
            except TypeError:
                ok = aimdo.init_devices(d.index for d in mm.get_all_torch_devices())
            if ok:
                aimdo.set_log_info()
                comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
                comfy.memory_management.aimdo_enabled = True
                active = "DynamicVRAM (comfy-aimdo)"
            else:
                active += " (no working comfy-aimdo)"
    dev = mm.get_torch_device()
    try:
        import importlib.metadata

        versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("comfy-aimdo", "comfy-kitchen"))
    except Exception:  # not installed as a distribution
        versions = "comfy-aimdo ?"
    print(f"ComfyUI mode: {active}; flags {flags or 'none'}; device {mm.get_torch_device_name(dev)}; "
          f"vram_state {mm.vram_state.name}; torch {torch.__version__}, {versions}", flush=True)
    if ballast is not None:
        free_now = torch.cuda.mem_get_info()[0]
        print(f"after setup ComfyUI sees {mm.get_free_memory(dev) / GiB:.2f} GiB free (cudaMemGetInfo "
              f"{free_now / GiB:.2f} GiB)", flush=True)
    return torch, (ballast.bytes if ballast is not None else 0), active, shapes


_HELD: list = []  # the ballast tensor lives here until the child exits


def wan_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ComfyUI's WanModel (t2v) for `cfg`, built on the meta device."""
    import comfy.ops
    import torch
    from comfy.ldm.wan.model import WanModel

    with torch.device("meta"):
        m = WanModel(model_type="t2v", dtype=torch.bfloat16, operations=comfy.ops.disable_weight_init,
                     **bl.comfy_kwargs(cfg))
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def random_state_dict(torch, shapes: dict, fmt: str, ggml, seed: int = 0, device=None) -> dict:
    """A checkpoint as a user's file holds it, in RAM: ComfyUI's WanModel keys, random weights.

    Drawn on the GPU (14B in bf16 is 28 GB: 14e9 normals take minutes on a CPU) a few rows at a
    time and copied to the CPU (`benchlib.random_weight` / `random_tensor`). bf16: every tensor bf16;
    fp8: 2-D weights float8_e4m3fn (an fp8 checkpoint, no scales); gguf-<type>: the 2-D block
    linears as ComfyUI-GGUF GGMLTensors of random blocks, 1-D tensors and .modulation F32, the rest
    F16, as in city96's files."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=device).manual_seed(seed)

    def draw(k, shape, dtype):
        if k.endswith(bl.NORM_KEYS):
            return torch.ones(shape, dtype=dtype)
        std = shape[1] ** -0.5 if len(shape) == 2 else 0.02
        return bl.random_tensor(shape, device=device, generator=g, dst="cpu", std=std, dtype=dtype)

    qtype = None
    if fmt.startswith("gguf-"):
        import gguf

        qtype = gguf.GGMLQuantizationType[fmt.split("-", 1)[1].upper()]
    sd = {}
    for k, shape in shapes.items():
        if qtype is None:
            fp8 = fmt == "fp8" and len(shape) == 2 and k.endswith(".weight")
            sd[k] = draw(k, shape, torch.float8_e4m3fn if fp8 else torch.bfloat16)
            continue
        if k.startswith("blocks.") and len(shape) == 2:
            raw = bl.random_weight("gguf", shape, device=device, generator=g, dst="cpu", qtype=int(qtype)).data
            sd[k] = ggml.ops.GGMLTensor(raw, tensor_type=qtype, tensor_shape=torch.Size(shape))
            continue
        f32 = len(shape) <= 1 or k.endswith("modulation")
        t = draw(k, shape, torch.float32 if f32 else torch.float16)
        tt = gguf.GGMLQuantizationType.F32 if f32 else gguf.GGMLQuantizationType.F16
        sd[k] = ggml.ops.GGMLTensor(t, tensor_type=tt, tensor_shape=t.shape)
    if qtype is not None:  # ComfyUI-GGUF's loader marks the largest quantized tensor for its VRAM estimate
        big = max((k for k in sd if k.startswith("blocks.") and len(shapes[k]) == 2), key=lambda k: sd[k].numel())
        sd[big].is_largest_weight = True
    bl.free_cuda_cache()  # the draws' cached blocks go back before ComfyUI looks at free memory
    return sd


def load_model(torch, sd: dict, fmt: str, ggml):
    """What UNETLoader / UnetLoaderGGUF do after reading the file."""
    import comfy.sd

    if fmt.startswith("gguf-"):
        ops = ggml.ops.GGMLOps()
        ops.Linear.dequant_dtype = None  # UnetLoaderGGUF's defaults
        ops.Linear.patch_dtype = None
        mp = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"custom_operations": ops})
        mp = ggml.nodes.GGUFModelPatcher.clone(mp)
        mp.patch_on_device = False
        return mp
    opts = {"dtype": torch.float8_e4m3fn} if fmt.startswith("fp8") else {}
    return comfy.sd.load_diffusion_model_state_dict(sd, model_options=opts)


class Monitor(threading.Thread):
    """Polls device memory in use (cudaMemGetInfo) and this process's RSS."""

    def __init__(self, torch, cuda: bool, interval: float = 0.02):
        super().__init__(daemon=True)
        import psutil

        self.torch, self.cuda, self.interval = torch, cuda, interval
        self.proc = psutil.Process()
        self.stop = threading.Event()
        self.peak_used = self.peak_rss = 0
        self.poll()

    def poll(self):
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
        if self.cuda:
            free, total = self.torch.cuda.mem_get_info()
            self.peak_used = max(self.peak_used, total - free)

    def run(self):
        while not self.stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # the context may be gone after a CUDA error; the main thread reports it
                return

    def finish(self):
        self.stop.set()
        self.join()
        try:
            self.poll()
        except Exception:
            pass


def sample(torch, mp, size, steps: int, cuda: bool, stamps: list, seed: int = 0):
    """KSampler at cfg 1 (common_ksampler's calls): lcm / simple, empty latent, random conditioning."""
    import comfy.sample

    w, h, f = size
    latent = torch.zeros(1, 16, (f - 1) // 4 + 1, h // 8, w // 8)
    latent = comfy.sample.fix_empty_latent_channels(mp, latent)
    noise = comfy.sample.prepare_noise(latent, seed)
    g = torch.Generator().manual_seed(seed + 1)
    positive = [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]
    negative = [[torch.randn(1, 512, 4096, generator=g) * 0.1, {}]]

    def callback(step, x0, x, total_steps):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    stamps.append(time.perf_counter())
    out = comfy.sample.sample(mp, noise, steps, 1.0, "lcm", "simple", positive, negative, latent, denoise=1.0,
                              callback=callback, disable_pbar=True, seed=seed)
    if cuda:
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())
    return out


def is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def child(spec: dict) -> None:
    import logging
    import resource

    logging.basicConfig(level=logging.INFO, format="  [comfy] %(message)s")
    for h in logging.getLogger().handlers:  # ComfyUI's INFO lines stay (loading / offloading); comfy-kitchen's dump goes
        h.addFilter(lambda r: not str(r.msg).startswith("Found comfy_kitchen backend"))
    res: dict = {"status": "error", "active": "-", "patcher": "-"}
    try:
        run_child(spec, res)
    except BaseException as exc:  # every failure becomes a row
        if is_oom(exc):
            res["status"] = "OOM"
        else:
            res["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
        import traceback

        traceback.print_exc()
    finally:
        res["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB
        Path(spec["result"]).write_text(json.dumps(res))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # skip tearing down 28 GB of (pinned) host memory and the CUDA context: the parent waits on it


def run_child(spec: dict, res: dict) -> None:
    tiny, fmt = spec["tiny"], spec["fmt"]
    cuda = not tiny
    cfg = bl.config(tiny)
    size = bl.SIZES["tiny" if tiny else spec["size"]].whf
    base_mode, _, extra = spec["mode"].partition("+")
    flags = MODES[base_mode] + (["--cpu"] if tiny else []) + spec["comfy_args"]
    torch, ballast, active, shapes = setup_comfy(flags, cuda, spec["budget"], cfg)
    res["active"] = active
    ggml = None
    if fmt.startswith("gguf-"):
        ggml = bl.import_comfyui_gguf()
        if ggml is None:
            raise RuntimeError("ComfyUI-GGUF not found in the checkout's custom_nodes")
    t0 = time.perf_counter()
    sd = random_state_dict(torch, shapes, fmt, ggml)
    t1 = time.perf_counter()
    mp = load_model(torch, sd, fmt, ggml)
    del sd
    t2 = time.perf_counter()
    res["patcher"] = type(mp).__name__
    if extra == "swap":  # the pack's Block Swap ("auto") on ComfyUI's own MODEL, under ComfyUI's memory mode
        mp = bl.import_pack().nodes.block_swap.Wan4StepBlockSwap.execute(mp, -1, 2, True, "ram", False).result[0]
        res["patcher"] += "+Wan4Step Block Swap"
    print(f"built {fmt}: random state dict {t1 - t0:.1f} s, load_diffusion_model_state_dict {t2 - t1:.1f} s, "
          f"{mp.model_size() / GiB:.2f} GiB, patcher {res['patcher']}", flush=True)
    import comfy.ldm.modules.attention as attn

    print(f"attention: {attn.optimized_attention.__name__}", flush=True)
    if cuda:
        try:
            torch.cuda.reset_peak_memory_stats()
        except Exception:  # not every allocator backend keeps peak stats
            pass
    mon = Monitor(torch, cuda)
    mon.start()
    stamps: list[float] = []
    try:
        sample(torch, mp, size, spec["steps"], cuda, stamps)
        res["status"] = "ok"
    except BaseException as exc:
        if not is_oom(exc):
            raise
        res["status"] = "OOM"
        print(f"OOM: {str(exc).splitlines()[0][:200]}", flush=True)
    finally:
        mon.finish()
        res["peak_vram"] = (mon.peak_used - ballast) / GiB if cuda else None
        res["peak_ram"] = mon.peak_rss / GiB
        if cuda:
            try:
                res["torch_reserved"] = torch.cuda.max_memory_reserved() / GiB
            except Exception:
                pass
    if res["status"] == "ok":
        steps = [b - a for a, b in zip(stamps[:-2], stamps[1:-1], strict=True)]  # stamps: start, one per step, end
        res["step1"] = steps[0]
        res["s_step"] = statistics.median(steps[1:]) if len(steps) > 1 else None
        res["total"] = stamps[-1] - stamps[0]
        res["on_gpu"] = mp.loaded_size() / GiB
        res["steps"] = steps
    print(f"result: {json.dumps(res)}", flush=True)


# ---------------------------------------------------------------------------------------
# parent: the grid, one child per row, one table
# ---------------------------------------------------------------------------------------
def parse_budget(b: str) -> float | None:
    return None if b in ("resident", "none", "full", "0") else float(b)


def grid(args) -> list[tuple]:
    if args.configs:
        rows = []
        for c in args.configs.split(","):
            fmt, size, budget, mode = c.split(":")
            rows.append((fmt, size, parse_budget(budget), mode))
    elif args.formats or args.sizes or args.budgets or args.modes:
        rows = [(f, s, parse_budget(b), m)
                for f in (args.formats or "bf16").split(",") for s in (args.sizes or "small").split(",")
                for b in (args.budgets or "resident").split(",") for m in (args.modes or "dynamic").split(",")]
    else:
        rows = TINY_GRID if args.tiny else DEFAULT_GRID
    if args.tiny:  # one tiny size, no ballast on the CPU
        rows = list(dict.fromkeys((f, "tiny", None, m) for f, _, _, m in rows))
    for fmt, size, _, mode in rows:
        if mode.partition("+")[0] not in MODES or mode.partition("+")[2] not in ("", "swap"):
            raise SystemExit(f"unknown mode {mode!r}: one of {', '.join(MODES)}, optionally +swap")
        if size not in SIZES and size != "tiny":
            raise SystemExit(f"unknown size {size!r}: one of {', '.join(SIZES)}")
        if fmt not in ("bf16", "fp8", "fp8-cast") and not fmt.startswith("gguf-"):
            raise SystemExit(f"unknown format {fmt!r}: bf16, fp8, fp8-cast or gguf-<type> (e.g. gguf-q4_k)")
    return rows


def fmt_num(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table_row(row, res) -> list[str]:
    fmt, size, budget, mode = row
    size_s = str(bl.SIZES[size])
    cells = [fmt, f"{size} ({size_s})", "resident" if budget is None else f"{budget:g}", mode, res.get("patcher", "-"),
             fmt_num(res.get("s_step"), 3), fmt_num(res.get("step1"), 2), fmt_num(res.get("total"), 1),
             fmt_num(res.get("peak_vram")), fmt_num(res.get("peak_ram")), fmt_num(res.get("maxrss")), fmt_num(res.get("on_gpu")),
             res.get("status", "-")]
    return cells


HEADER = ["format", "size", "budget GiB", "mode", "patcher", "s/step (2..N)", "step 1 s", "total s", "peak VRAM GiB",
          "peak RAM GiB", "max RSS GiB", "weights on GPU GiB", "status"]


def smoke(args) -> None:
    """The SMOKE_GRID rows through run_child in this process (a real run gives each row a fresh child)."""
    results = []
    for row in SMOKE_GRID:
        fmt, size, budget, mode = row
        res: dict = {"status": "error", "active": "-", "patcher": "-"}
        run_child(dict(fmt=fmt, size=size, budget=budget, mode=mode, steps=args.steps, tiny=True, comfy_args=[]), res)
        res["maxrss"] = bl.rss_gib()
        results.append((row, res))
    print()
    print(bl.md_table(HEADER, [table_row(row, res) for row, res in results]))
    bad = [row for row, res in results if res.get("status") != "ok"]
    if bad:
        raise SystemExit(f"rows failed: {bad}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", help="comma list of format:size:budget:mode, e.g. bf16:480p:8:dynamic,fp8:small:resident:lowvram")
    ap.add_argument("--formats", help="grid: bf16,fp8,fp8-cast,gguf-q4_k,...")
    ap.add_argument("--sizes", help="grid: " + ",".join(SIZES))
    ap.add_argument("--budgets", help="grid: GiB or 'resident', e.g. 8,12,16,resident")
    ap.add_argument("--modes", help="grid: dynamic,lowvram, each optionally +swap (the pack's Block Swap on top)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=240, help="seconds per child")
    ap.add_argument("--total-timeout", type=float, default=540,
                    help="seconds for the whole grid; rows that do not fit are skipped, so the table always prints"
                         " (the device tool stops a command at 600 s)")
    ap.add_argument("--comfy-args", default="", help="extra ComfyUI CLI flags for every child, with '=': --comfy-args='--reserve-vram 1'")
    ap.add_argument("--tiny", action="store_true", help="2 blocks of dim 256 on the CPU (--cpu): a smoke test of the whole path")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    bl.add_smoke(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        return smoke(args)
    if args.child:
        child(json.loads(args.child))
        return
    rows = grid(args)
    print(f"{len(rows)} configurations, each in a fresh process", flush=True)
    results = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, row in enumerate(rows):
            fmt, size, budget, mode = row
            left = args.total_timeout - (time.perf_counter() - t_all)
            if left < 20:
                results.append((row, {"status": "skipped (--total-timeout)"}))
                continue
            limit = min(args.timeout, left - 5)
            result = Path(tmp) / f"{i}.json"
            spec = dict(fmt=fmt, size=size, budget=budget, mode=mode, steps=args.steps, tiny=args.tiny,
                        comfy_args=args.comfy_args.split(), result=str(result))
            print(f"\n=== [{i + 1}/{len(rows)}] {fmt} {size} budget {budget or 'resident'} {mode} ===", flush=True)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                                      timeout=limit)
                rc = proc.returncode
            except subprocess.TimeoutExpired:  # subprocess.run kills the child
                rc = "timeout"
            res = json.loads(result.read_text()) if result.exists() else {}
            if rc == "timeout":
                res["status"] = f"timeout ({limit:.0f} s)"
            elif not res:
                res["status"] = f"crash (rc {rc})"
            results.append((row, res))
            print(f"row ({time.perf_counter() - t0:.0f} s in the child): {' | '.join(table_row(row, res))}", flush=True)
    print()
    print(bl.md_table(HEADER, [table_row(row, res) for row, res in results]))
    print(f"steps {args.steps} (lcm, simple, cfg 1); s/step = median of steps 2..{args.steps}; "
          f"{time.perf_counter() - t_all:.0f} s in all; ComfyUI modes: "
          + "; ".join(sorted({f"{r[3]} -> {res.get('active', '-')}" for r, res in results})))


if __name__ == "__main__":
    main()
