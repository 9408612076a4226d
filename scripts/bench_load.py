"""Load time and RAM of each Wan2.1 T2V-14B file format: Wan4Step Model Loader vs ComfyUI's own loaders.

Issue 3: "load time + peak RAM for each format of a 14B-shape file; loading never
holds two full copies of the weights in RAM". On the GPU machine (lead):

    source scripts/device_env.sh
    python3 scripts/bench_load.py                     # all formats, 40 blocks, then deletes the files
    python3 scripts/bench_load.py --formats gguf,fp8  # skip the 28.6 GB bf16 file
    python3 scripts/bench_load.py --layers 4          # 14B-shape blocks, 4 of them (quick, <= 3.1 GiB per file)
    python3 scripts/bench_load.py --tiny              # dim 256, 2 blocks, on the CPU (~45 s on 2 cores,
                                                      # nearly all of it the five children's imports)
    python3 scripts/bench_load.py --smoke             # --tiny with the loads in this process: checks the script runs

What it does, one format at a time (so the disk holds one model at a time unless --keep):
1. Writes a Wan2.1 T2V file of the 14B shapes (`T2V_14B`, or `--layers N` of its blocks;
   `--tiny`: the tiny model `wan4step.tiny.dit.TINY_DIT`) with random weights into --dir, streaming
   (one tensor at a time; per-shape random tensors are reused across blocks, so the
   writer holds well under 1 GB):
     gguf   QuantStack-style Q4_K_M GGUF (`gguf_file.tier_types`: Q4_K block linears,
            Q6_K for v and ffn.2, F16 other 2-D weights, F32 norms / biases / modulation /
            5-D patch embedding), blocks from `benchlib.random_weight`, gguf's GGUFWriter.
     fp8    LightX2V `distill_fp8/` folder: block_N.safetensors (F8_E4M3 codes of the ten
            block linears + bf16 row-wise `weight_scale` [out, 1], the rest F32),
            non_block.safetensors (F32) and the index json.
     bf16   ComfyUI single-file bf16 safetensors (the Comfy-Org repackaged layout, no key prefix).
   A format whose file does not fit in the free disk (plus 1 GiB) is skipped with a line saying so.
2. Loads it in a fresh child process per (format, loader), so every peak is that loader's own:
     wan4step      the Wan4Step Model Loader node's own `execute` (pack imported as ComfyUI
                   imports it: `load_dit` + `build_model` + fast-forward install) -> a ComfyUI MODEL
     comfyui       ComfyUI's UNETLoader (`nodes.UNETLoader().load_unet`, weight_dtype default), bf16 only
     comfyui-gguf  city96's UnetLoaderGGUF from custom_nodes/ComfyUI-GGUF, gguf only
   The model file is found through ComfyUI's folder_paths (--dir is added as a
   diffusion_models folder), as in the UI. "load s" is the node call's wall time up to a
   MODEL whose weights are on the CPU; with CUDA (and not --no-cuda) the child then times
   `comfy.model_management.load_models_gpu([model])` + synchronize ("to cuda s").
3. Prints one markdown table.

Columns:
  file GiB        bytes on disk (a folder: all its files)
  load s          wall time of the loader node call (file open, parse, ComfyUI model build)
  to cuda s       load_models_gpu of that MODEL (whole model onto the GPU), '-' without CUDA
  peak RSS GiB    the child's VmHWM (/proc/self/status) at the end of the load: its peak RSS
                  since exec, imports included (~0.8 GiB of torch + ComfyUI). Not ru_maxrss: for
                  an exec'd child Linux starts ru_maxrss at the parent's high-water mark from the
                  fork (here: the writer's), which inflates it; the notes still print it. Peak RSS
                  counts file-backed pages of mmapped files that were touched (page cache shared
                  with the kernel, not a private copy) as well as anonymous memory, so a zero-copy
                  mmap loader that touches every page still shows ~file size here. Peak RSS minus
                  the baseline RSS bounds from above any anon spike the 50 ms sampling missed.
  RSS load GiB    VmRSS right after the load (before the GPU move)
  peak anon GiB   the honest "private copies" number: peak RssAnon (/proc/<pid>/status, the
                  process's anonymous = private, non-file memory) sampled every 50 ms by the
                  parent during the load, minus RssAnon right before it (the baseline of torch +
                  ComfyUI imports, printed below the table). A spike shorter than 50 ms can be missed;
                  the value at the end of the load is always included.
  anon/file       peak anon / file size
  +cuda anon GiB  peak RssAnon during the GPU move, above the same baseline (so it includes what
                  the load kept, plus whatever load_models_gpu adds: casts, pinned staging etc.)
  verdict         'no copy (mmap)': peak anon < 0.2x file (weights stay file-backed views);
                  'one copy, no 2nd': < 1.2x (one private copy; the file's pages are only cache);
                  '2ND COPY': >= 1.2x; 'n/a' for files under 256 MiB (allocator noise, --tiny).
Caveats: the page cache cannot be dropped without root, so every load is WARM (the file was
just written and sits in the page cache): load times are RAM-speed reads, not disk reads; a
cold load adds the disk read time of the bytes the loader touches (all of them for a copying
loader, few for a lazy mmap one; a lazy loader pays its reads in "to cuda s" instead).
File-backed pages counted in peak RSS are reclaimable cache.
The comfyui rows are ComfyUI's legacy (non-DynamicVRAM) loading path: ComfyUI is imported without
its main.py, so comfy-aimdo's DynamicVRAM loader (on by default in a ComfyUI 0.33 server on NVIDIA
with comfy-aimdo installed) is not active, whatever --comfy-args says; the pack's own
`build_model` passes disable_dynamic=True anyway. Without CUDA (--cpu) ComfyUI builds the bf16
model in float32, so its private copy is 2x the bf16 file there (the notes print the MODEL dtype).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter  # noqa: E402

from wan4step.formats.gguf_file import ARCH, TIERS, tier_types  # noqa: E402
from wan4step.formats.lightx2v_dir import INDEX, NON_BLOCK, block_file_name  # noqa: E402
from wan4step.wan_config import T2V_14B, WanConfig, block_index, expected_shapes  # noqa: E402

REPO = bl.REPO

Q = GGMLQuantizationType
GIB = 2**30
MARK = "@@bench_load "
GGUF_TIER = "Q4_K_M"
FORMATS = ("gguf", "fp8", "bf16")
LOADERS = {"bf16": ("wan4step", "comfyui"), "fp8": ("wan4step",), "gguf": ("wan4step", "comfyui-gguf")}


# -- the model's shapes -------------------------------------------------------------

def model_shapes(cfg: WanConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical key and its shape (wan_config)."""
    return dict(expected_shapes(cfg))


is_block_linear = bl.is_block_linear


def numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1


class RandomTensors:
    """Random tensors by (shape, kind) from benchlib's builders, on the CPU; block tensors are cached,
    since 40 blocks share 5 shapes. kind: "fp8" (a LightX2V weight's codes), "scale" (its bf16 row
    scales, for the fp8 weight of `shape`), a ggml type, or a torch dtype."""

    def __init__(self, seed: int = 0) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.cache: dict[tuple, object] = {}

    def get(self, key: str, shape: tuple[int, ...], kind):
        ck = (shape, kind)
        if block_index(key) is not None and ck in self.cache:
            return self.cache[ck]
        t = self._make(shape, kind)
        if block_index(key) is not None:
            self.cache[ck] = t
        return t

    def fp8(self, shape) -> object:
        if (shape, "fp8 weight") not in self.cache:  # weight and scale are drawn together, cached until cleared
            self.cache[(shape, "fp8 weight")] = bl.random_weight("fp8", shape, device="cpu", generator=self.g)
        return self.cache[(shape, "fp8 weight")]

    def _make(self, shape, kind) -> torch.Tensor:
        if kind == "fp8":
            return self.fp8(shape).data
        if kind == "scale":  # LightX2V's per-row scales, in the source dtype (bf16)
            return self.fp8(shape).scale.to(torch.bfloat16)
        if isinstance(kind, int) and kind not in (Q.F32, Q.F16):  # a quantized ggml type
            return bl.random_weight("gguf", shape, device="cpu", generator=self.g, qtype=kind).data
        dtype = {int(Q.F32): torch.float32, int(Q.F16): torch.float16}.get(kind, kind)
        return bl.random_tensor(shape, device="cpu", generator=self.g, dtype=dtype)


# -- writers (streaming: one tensor in memory at a time) -----------------------------

_ST_DTYPE = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16", torch.float8_e4m3fn: "F8_E4M3"}
_ITEMSIZE = {torch.bfloat16: 2, torch.float32: 4, torch.float16: 2, torch.float8_e4m3fn: 1}


def write_safetensors_streaming(path: Path, plan: list[tuple[str, tuple[int, ...], torch.dtype]], make) -> int:
    """A safetensors file from (name, shape, dtype) entries; `make(name, shape, dtype)` gives each tensor when written."""
    header, off = {}, 0
    for name, shape, dtype in plan:
        n = numel(shape) * _ITEMSIZE[dtype]
        header[name] = {"dtype": _ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in plan:
            t = make(name, shape, dtype)
            assert t.dtype == dtype and tuple(t.shape) == tuple(shape), name
            f.write(memoryview(t.contiguous().view(torch.uint8).reshape(-1).numpy()))
    return path.stat().st_size


def bf16_plan(shapes) -> list:
    return [(k, s, torch.bfloat16) for k, s in sorted(shapes.items())]


def fp8_plans(shapes) -> dict[str, list]:
    """{file name: plan} of a LightX2V distill_fp8/ folder."""
    files: dict[str, list] = {}
    for k, s in sorted(shapes.items()):
        i = block_index(k)
        plan = files.setdefault(NON_BLOCK if i is None else block_file_name(i), [])
        if is_block_linear(k):
            plan += [(k, s, torch.float8_e4m3fn), (k + "_scale", (s[0], 1), torch.bfloat16)]
        else:
            plan.append((k, s, torch.float32))
    return files


def ggml_nbytes(shape, qtype: int) -> int:
    block, size = GGML_QUANT_SIZES[Q(qtype)]
    return numel(shape) // block * size


def predicted_bytes(fmt: str, shapes) -> int:
    if fmt == "bf16":
        return sum(numel(s) * 2 for s in shapes.values())
    if fmt == "fp8":
        return sum(numel(s) * _ITEMSIZE[d] for plan in fp8_plans(shapes).values() for _, s, d in plan)
    types = tier_types(shapes, GGUF_TIER)
    return sum(ggml_nbytes(s, types[k]) + 32 for k, s in shapes.items())


def write_bf16(path: Path, shapes, rnd: RandomTensors) -> Path:
    write_safetensors_streaming(path, bf16_plan(shapes), lambda k, s, d: rnd.get(k, s, d))
    return path


def write_fp8_dir(root: Path, shapes, rnd: RandomTensors) -> Path:
    root.mkdir(parents=True, exist_ok=True)

    def make(k, s, d):
        if k.endswith("_scale"):  # the scales of the fp8 weight just written
            return rnd.get(k, shapes[k[: -len("_scale")]], "scale")
        return rnd.get(k, s, "fp8" if d == torch.float8_e4m3fn else d)

    weight_map, total = {}, 0
    for name, plan in fp8_plans(shapes).items():
        total += write_safetensors_streaming(root / name, plan, make)
        weight_map.update(dict.fromkeys((k for k, _, _ in plan), name))
    (root / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return root


def write_gguf_q4km(path: Path, shapes, rnd: RandomTensors) -> Path:
    """Like `gguf_file.write_gguf` (same arch, kv fields, tier rule, name order), but streaming random blocks."""
    types = tier_types(shapes, GGUF_TIER)
    writer = GGUFWriter(path, arch=ARCH)
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_file_type(int(TIERS[GGUF_TIER][1]))
    keys = sorted(shapes)
    for k in keys:
        s, qt = shapes[k], types[k]
        if qt in (Q.F32, Q.F16):
            dt = np.float32 if qt == Q.F32 else np.float16
            writer.add_tensor_info(k, s, np.dtype(dt), numel(s) * np.dtype(dt).itemsize)
        else:
            block, size = GGML_QUANT_SIZES[Q(qt)]
            byte_shape = (*s[:-1], s[-1] // block * size)
            writer.add_tensor_info(k, byte_shape, np.dtype(np.uint8), ggml_nbytes(s, qt), raw_dtype=Q(qt))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for k in keys:
        writer.write_tensor_data(rnd.get(k, shapes[k], types[k]).numpy())
    writer.close()
    return path


def file_name(fmt: str, tag: str) -> str:
    return {"bf16": f"wan2.1_t2v_{tag}_bf16.safetensors", "fp8": f"{tag}_distill_fp8/",
            "gguf": f"wan2.1-t2v-{tag}-{GGUF_TIER}.gguf"}[fmt]


def disk_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.iterdir()) if p.is_dir() else p.stat().st_size


# -- the child: one loader, one file ---------------------------------------------------

def _status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def _say(kind: str, **kw) -> None:
    print(MARK + json.dumps({"kind": kind, **kw}), flush=True)


def child(spec: dict) -> None:
    res = load_once(spec)
    _say("result", **res)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of a 14B model


def load_once(spec: dict) -> dict:
    """One loader on one file in this process: times, /proc status before and after (see `child`)."""
    comfy_path = bl.import_comfy(tuple(spec["comfy_args"]))
    import comfy.model_management as mm
    import folder_paths

    folder_paths.add_model_folder_path("diffusion_models", spec["dir"], is_default=True)
    loader, name = spec["loader"], spec["name"]
    if loader == "wan4step":
        node = bl.import_pack().nodes.model_loader.Wan4StepModelLoader

        def load():
            return node.execute(name, "bf16", "auto", True).result[0]
    elif loader == "comfyui":
        import nodes as comfy_nodes

        def load():
            return comfy_nodes.UNETLoader().load_unet(name, "default")[0]
    elif loader == "comfyui-gguf":
        pkg = bl.import_comfyui_gguf(comfy_path)
        if pkg is None:
            raise SystemExit(f"ComfyUI-GGUF not found under {comfy_path}/custom_nodes")

        def load():
            return pkg.nodes.UnetLoaderGGUF().load_unet(name)[0]
    else:
        raise SystemExit(f"unknown loader {loader}")

    base = _status()
    _say("phase", phase="load", status=base)
    time.sleep(0.2)  # let the parent take its baseline samples
    t0 = time.perf_counter()
    model = load()
    t_load = time.perf_counter() - t0
    after = _status()
    res = {"load_s": t_load, "base": base, "after_load": after, "cuda_s": None,
           "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "model": type(model).__name__, "device": str(mm.get_torch_device()),
           "dtype": str(model.model.get_dtype()).replace("torch.", ""), "model_bytes": model.model_size()}
    if spec["cuda"] and torch.cuda.is_available():
        _say("phase", phase="cuda", status=after)
        time.sleep(0.2)
        t0 = time.perf_counter()
        try:
            mm.load_models_gpu([model])
            torch.cuda.synchronize()
            res["cuda_s"] = time.perf_counter() - t0
            res["after_cuda"] = _status()
            res["gpu_gib"] = torch.cuda.memory_allocated() / GIB
        except Exception as e:  # keep the CPU numbers of this loader
            res["cuda_error"] = f"{type(e).__name__}: {e}"[:300]
    res["end"] = _status()
    return res


# -- the parent: run one child, sampling its /proc status ------------------------------

def _proc_status(pid: int) -> dict[str, int] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out


def run_child(spec: dict, period: float = 0.05) -> dict:
    """Run one load in a fresh interpreter; returns its result with the sampled peaks per phase."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=str(REPO))
    state: dict = {"phase": "import", "result": None, "tail": []}
    peaks: dict[str, dict[str, int]] = {}

    def reader():
        for line in proc.stdout:
            if line.startswith(MARK):
                msg = json.loads(line[len(MARK):])
                if msg["kind"] == "phase":
                    state["phase"] = msg["phase"]
                    peaks.setdefault(msg["phase"], {}).update(
                        {k: msg["status"][k] for k in ("RssAnon", "RssFile", "VmRSS")})
                else:
                    state["result"] = msg
            else:
                state["tail"] = (state["tail"] + [line.rstrip()])[-20:]

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    while proc.poll() is None:
        s = _proc_status(proc.pid)
        if s:
            p = peaks.setdefault(state["phase"], {})
            for k, v in s.items():
                p[k] = max(p.get(k, 0), v)
        time.sleep(period)
    th.join(timeout=5)
    if proc.returncode != 0 or state["result"] is None:
        err.seek(0)
        tail = "\n".join(state["tail"] + err.read().splitlines()[-30:])
        return {"error": f"child exited {proc.returncode}", "tail": tail}
    res = state["result"]
    load_peak = peaks.get("load", {})
    res["peak_anon_load"] = max(load_peak.get("RssAnon", 0), res["after_load"]["RssAnon"]) - res["base"]["RssAnon"]
    if res.get("cuda_s") is not None:
        cp = peaks.get("cuda", {})
        res["peak_anon_cuda"] = max(cp.get("RssAnon", 0), res["after_cuda"]["RssAnon"]) - res["base"]["RssAnon"]
    return res


def run_inprocess(spec: dict) -> dict:
    """--smoke: `load_once` in this process; the anon peak is the end-of-load value (no sampling)."""
    res = json.loads(json.dumps(load_once(spec)))
    res["peak_anon_load"] = res["after_load"]["RssAnon"] - res["base"]["RssAnon"]
    if res.get("cuda_s") is not None:
        res["peak_anon_cuda"] = res["after_cuda"]["RssAnon"] - res["base"]["RssAnon"]
    return res


def gib(n: int) -> str:
    return f"{n / GIB:.2f}" if abs(n) >= GIB else f"{n / GIB:.3f}"


def verdict(anon: int, size: int) -> str:
    if size < 256 * 2**20:
        return "n/a (file < 256 MiB)"
    r = anon / size
    if r < 0.2:
        return "no copy (mmap)"
    if r < 1.2:
        return "one copy, no 2nd"
    return f"2ND COPY ({r:.2f}x)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dir", default="/tmp/wan4step_load", help="where the files are written (default %(default)s)")
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma list of gguf,fp8,bf16, in this order")
    ap.add_argument("--loaders", default="wan4step,comfyui,comfyui-gguf", help="which loaders to run where they apply")
    ap.add_argument("--layers", type=int, default=None, help="number of 14B-shape blocks (default 40)")
    ap.add_argument("--tiny", action="store_true", help="the tiny config (dim 256, 2 blocks): a CPU smoke test")
    ap.add_argument("--keep", action="store_true", help="keep the written files (default: delete each after measuring)")
    ap.add_argument("--no-cuda", action="store_true", help="do not time the move to the GPU")
    ap.add_argument("--comfy-args", default="--disable-dynamic-vram",
                    help="ComfyUI command-line flags for the children (default %(default)s, as the other benches; "
                         "--cpu is added without CUDA)")
    bl.add_smoke(ap)
    args = bl.smoke_or(ap.parse_args(argv), tiny=True, no_cuda=True, keep=False)
    if args.child:
        child(json.loads(args.child))
        return
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="wan4step_load_smoke_") as tmp:
            args.dir = tmp
            measure_all(args, run_inprocess, ["--disable-dynamic-vram", "--cpu"])
        return
    measure_all(args, run_child)


def measure_all(args, load, forced_comfy_args=None) -> None:
    """Write each format's file, load it with each loader (`load(spec)`), print the table."""
    cfg = bl.config(args.tiny)
    if args.layers:
        cfg = WanConfig(dim=cfg.dim, ffn_dim=cfg.ffn_dim, num_layers=args.layers)
    tag = "tiny" if args.tiny else "14B" if cfg == T2V_14B else f"14B-{cfg.num_layers}blk"
    shapes = model_shapes(cfg)
    cuda = torch.cuda.is_available() and not args.no_cuda
    comfy_args = forced_comfy_args or args.comfy_args.split()
    if not torch.cuda.is_available() and "--cpu" not in comfy_args:
        comfy_args.append("--cpu")
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    loaders = set(args.loaders.split(","))
    print(f"# {cfg.name}: {sum(numel(s) for s in shapes.values()) / 1e9:.2f} B params, {len(shapes)} tensors; "
          f"files in {root}; ComfyUI args {' '.join(comfy_args)}; cuda timing {'on' if cuda else 'off'}", flush=True)

    rows, notes = [], []
    rnd = RandomTensors()
    for fmt in args.formats.split(","):
        if fmt not in FORMATS:
            raise SystemExit(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        path = root / file_name(fmt, tag).rstrip("/")
        need = predicted_bytes(fmt, shapes)
        if not path.exists():
            free = shutil.disk_usage(root).free
            if free < need + GIB:
                print(f"SKIP {fmt}: needs {need / GIB:.1f} GiB + 1 GiB margin, {free / GIB:.1f} GiB free in {root}",
                      flush=True)
                continue
            t0 = time.perf_counter()
            {"bf16": write_bf16, "fp8": write_fp8_dir, "gguf": write_gguf_q4km}[fmt](path, shapes, rnd)
            print(f"wrote {path} ({disk_bytes(path) / GIB:.2f} GiB) in {time.perf_counter() - t0:.1f} s", flush=True)
        else:
            print(f"reusing {path}", flush=True)
        rnd.cache.clear()
        size = disk_bytes(path)
        try:
            for loader in LOADERS[fmt]:
                if loader not in loaders:
                    continue
                spec = {"loader": loader, "name": file_name(fmt, tag), "dir": str(root), "cuda": cuda,
                        "comfy_args": comfy_args}
                res = load(spec)
                if "error" in res:
                    print(f"FAILED {fmt} / {loader}: {res['error']}\n{res['tail']}", flush=True)
                    rows.append([fmt, gib(size), loader, "FAILED", "-", "-", "-", "-", "-", "-", res["error"]])
                    continue
                anon = res["peak_anon_load"]
                cuda_anon = res.get("peak_anon_cuda")
                rows.append([
                    fmt, gib(size), loader, f"{res['load_s']:.2f}",
                    "-" if res["cuda_s"] is None else f"{res['cuda_s']:.2f}",
                    gib(res["after_load"]["VmHWM"]), gib(res["after_load"]["VmRSS"]),
                    gib(anon), f"{anon / size:.2f}",
                    "-" if cuda_anon is None else gib(cuda_anon), verdict(anon, size),
                ])
                notes.append(f"{fmt}/{loader}: baseline after imports RSS {res['base']['VmRSS'] / GIB:.2f} GiB "
                             f"(anon {res['base']['RssAnon'] / GIB:.2f}); after load RssFile "
                             f"{res['after_load']['RssFile'] / GIB:.2f} GiB; VmHWM at end "
                             f"{res['end']['VmHWM'] / GIB:.2f} GiB (ru_maxrss {res['ru_maxrss'] / GIB:.2f}); "
                             f"MODEL {res['model']}, {res['dtype']}, model_size {res['model_bytes'] / GIB:.2f} GiB, "
                             f"on {res['device']}"
                             + (f"; GPU allocated {res['gpu_gib']:.2f} GiB" if res.get("gpu_gib") is not None else "")
                             + (f"; GPU move FAILED: {res['cuda_error']}" if res.get("cuda_error") else ""))
                print(f"done {fmt} / {loader}: load {res['load_s']:.2f} s, peak anon {anon / GIB:.2f} GiB", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    head = ["format", "file GiB", "loader", "load s", "to cuda s", "peak RSS GiB", "RSS load GiB",
            "peak anon GiB", "anon/file", "+cuda anon GiB", "verdict"]
    print()
    print(f"{cfg.name}, WARM page cache (files just written); peak anon = sampled RssAnon peak above the "
          "post-import baseline; peak RSS includes touched mmapped file pages (see the docstring)")
    print()
    print(bl.md_table(head, rows))
    print()
    for n in notes:
        print("- " + n)


if __name__ == "__main__":
    main()
