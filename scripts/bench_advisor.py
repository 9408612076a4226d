"""Check the VRAM advisor on a real GPU: predicted vs measured peak, and no OOM, per budget.

For each budget (8/12/16/24/32 GiB by default) and size, a fresh child process first
allocates a ballast of (total - budget) bytes, so every memory query sees the smaller
card; then it asks the advisor for a plan, builds random weights of the real 14B shapes
in the recommended format (each weight is allocated once where the plan puts it, GPU or CPU,
and filled a few rows at a time on the GPU, so the build holds the resident bytes plus a few
MiB), streams them with the pack's block streamer and runs the pack's fused forward. A child
that fails (OOM or anything else) is a row of the table. One table comes out:

    python scripts/bench_advisor.py                          # 480p, all budgets (~3-5 min on an H100)
    python scripts/bench_advisor.py --budgets 8,24 --sizes 480p,small --priority fit
    python scripts/bench_advisor.py --plan-only              # the advisor's plans, no GPU needed
    python scripts/bench_advisor.py --sizes small,720p --timeout 420   # the other sizes
    python scripts/bench_advisor.py --tiny --sizes small,720p   # CPU smoke test of the build/stream/forward code

Columns: predicted = the advisor's sampling-phase peak; predicted* = the same memory model fed
the built model's actual block/non-block bytes (isolates the activation model from file-size
estimates); measured = CUDA context + library handles + peak reserved by torch (ballast
excluded). err% is measured vs predicted*. The H100 numbers calibrate data/memory_model.json.

`run_forward` is the one function that touches the pack's model/streamer APIs; adapt it if
they change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _comfy_import import REPO  # noqa: E402  (puts the repo on sys.path)

assert REPO
GiB = 1024**3
SIZES = {"480p": (832, 480, 81), "small": (512, 288, 33), "720p": (1280, 720, 81)}
# Random GGUF bytes per tier: the tier's main block type (K_M/K_S files mix types; the real
# byte count is taken from the built model for predicted*).
GGUF_BLOCK_TYPE = {"Q2_K": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K", "Q4_0": "Q4_0",
                   "Q4_1": "Q4_1", "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_0": "Q5_0", "Q5_1": "Q5_1",
                   "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K", "Q8_0": "Q8_0"}
TINY_TOKENS = 8192  # --tiny: frames are cut so the video has at most this many tokens (the grid stays)
CFG_14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, text_dim=4096, freq_dim=256, in_dim=16, out_dim=16)


# ---------------------------------------------------------------------------------------
# the part that touches the pack's model / streamer APIs
# ---------------------------------------------------------------------------------------
CHUNK_ELEMS = 1 << 19  # weights are generated this many elements at a time (2 MiB of fp32)


def random_weight(kind: str, qtype: int | None, out_f: int, in_f: int, dst, device, g):
    """A random [out_f, in_f] weight in its stored encoding, allocated once on `dst`.

    The values are made on `device` (its generator `g`) a few rows at a time and copied
    into the final tensor, so besides the weight's own bytes the build needs only a few
    MiB of temporaries: under a ballast-emulated budget nothing but the plan's resident
    bytes may be held, and fp32 temporaries of a whole 5120x13824 weight (270 MiB) plus
    the quantizer's intermediates do not fit next to them. The statistics are those of
    one whole-weight build: N(0, 1/in_f) rows, row-wise FP8/INT8 quantized like LightX2V's
    converter (fp32 scales, as the pack's loaders store them), GGUF random blocks.
    """
    import torch

    from wan4step.quant.gguf_dequant import row_bytes
    from wan4step.quant.gguf_encode import random_raw
    from wan4step.quant.scaled import quantize_rowwise
    from wan4step.quant.weights import GGUF, QuantWeight

    step = max(1, CHUNK_ELEMS // in_f)
    chunks = [(r, min(out_f, r + step)) for r in range(0, out_f, step)]
    if kind == GGUF:
        data = torch.empty(out_f, row_bytes(qtype, (out_f, in_f)), dtype=torch.uint8, device=dst)
        for r0, r1 in chunks:
            data[r0:r1].copy_(random_raw(qtype, (r1 - r0, in_f), device=device, generator=g))
        return QuantWeight(GGUF, data, (out_f, in_f), qtype=int(qtype))
    if kind in ("fp8", "int8"):
        data = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn if kind == "fp8" else torch.int8, device=dst)
        scale = torch.empty(out_f, 1, dtype=torch.float32, device=dst)
        for r0, r1 in chunks:
            q, s = quantize_rowwise(torch.randn(r1 - r0, in_f, device=device, generator=g) / in_f**0.5, kind)
            data[r0:r1].copy_(q)
            scale[r0:r1].copy_(s)
        return QuantWeight(kind, data, (out_f, in_f), scale)
    data = torch.empty(out_f, in_f, dtype=torch.bfloat16, device=dst)
    for r0, r1 in chunks:
        data[r0:r1].copy_(torch.randn(r1 - r0, in_f, device=device, generator=g) / in_f**0.5)
    return data


def build_model(pack, kind: str, tier: str | None, streamed: set[int], device, cfg: dict):
    """ComfyUI's WanModel with the pack's ops; blocks in `streamed` end up on the CPU, the rest on `device`.

    Every weight is allocated once, where it ends up, and filled in chunks (`random_weight`).
    """
    import gguf
    import torch
    from comfy.ldm.wan.model import WanModel

    from wan4step.quant.linear import QuantLinear

    ops = pack.nodes.comfy_compat.model.make_ops({})
    with torch.device("cpu"):
        model = WanModel(model_type="t2v", device="cpu", dtype=torch.bfloat16, operations=ops, **cfg).eval()
    g = torch.Generator(device=device).manual_seed(0)
    qtype = int(gguf.GGMLQuantizationType[GGUF_BLOCK_TYPE[tier]]) if kind == "gguf" else None

    def home(name: str):
        if name.startswith("blocks."):
            return "cpu" if int(name.split(".")[1]) in streamed else device
        return device

    done: set[int] = set()
    for name, m in model.named_modules():
        if not isinstance(m, QuantLinear):
            continue
        out_f, in_f = m.out_features, m.in_features
        dst = home(name)
        bias = (torch.randn(out_f, device=device, generator=g) * 0.02).to(torch.bfloat16).to(dst)
        wkind = kind if name.startswith("blocks.") else "bf16"  # embeddings and head stay bf16, as in the files
        m.assign_weight(random_weight(wkind, qtype, out_f, in_f, dst, device, g), bias)
        done.update(id(p) for p in m.parameters(recurse=False))
    for name, p in model.named_parameters():  # norms, modulation, patch embedding: small
        if id(p) in done:
            continue
        data = torch.empty(p.shape, dtype=p.dtype, device=device)
        if name.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight")):
            data.fill_(1.0)
        else:
            data.normal_(0, 0.02, generator=g)
        p.data = data.to(home(name))
    for name, b in model.named_buffers():
        if b.device.type == "cpu" and home(name) != "cpu":
            b.data = b.data.to(device)
    return model


def module_bytes(m) -> int:
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


def run_forward(pack, kind: str, tier: str | None, k: int, prefetch: int, disk: bool, size, device, iters: int,
                attention: str, cfg: dict = CFG_14B) -> dict:
    """Build, stream k blocks, run `iters` timed forwards after one warm-up. Returns sizes, time and stats."""
    import torch

    from wan4step.offload.plan import spread
    from wan4step.offload.wan import plan_swap

    n = cfg["num_layers"]
    streamed = set(spread(k, n))
    model = build_model(pack, kind, tier, streamed, device, cfg)
    block = max(module_bytes(b) for b in model.blocks)
    non_block = sum(module_bytes(c) for name, c in model.named_children() if name != "blocks")
    plan = plan_swap(model, k, device, prefetch=prefetch, pin=device.type == "cuda", disk=disk) if k else None
    if plan is not None:
        for name, wrapped in plan.patches.items():
            model.blocks[int(name.split(".")[1])] = wrapped
        plan.streamer.ensure_device()
    fast = pack.nodes.comfy_compat.fast_forward.FastBlocks(model, attention, device)
    patches = {"dit": {("double_block", i): fast.make(i) for i in range(n)}}
    w, h, f = size
    x = torch.randn(1, 16, (f - 1) // 4 + 1, h // 8, w // 8, device=device, dtype=torch.bfloat16)
    t = torch.tensor([937.5], device=device)
    ctx = (torch.randn(1, 512, 4096, device=device) * 0.1).to(torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # drop the build's cached temporaries before measuring
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        for i in range(iters + 1):
            t0 = time.perf_counter()
            y = model(x, t, ctx, transformer_options={"patches_replace": patches})
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        finite = bool(torch.isfinite(y).all())
    del y
    stats = plan.streamer.stats.as_dict() if plan is not None else {}
    return {"block_bytes": block, "non_block_bytes": non_block, "s_per_forward": min(times) if times else None,
            "finite": finite, "stream": stats}


# ---------------------------------------------------------------------------------------
# one budget, in its own process
# ---------------------------------------------------------------------------------------
def child(args) -> dict:
    import torch

    from wan4step import advisor, catalog, hardware
    from wan4step.memory_model import MemoryModel, video_tokens

    w, h, f = SIZES[args.size]
    out = {"budget": args.budget, "size": args.size}
    if args.tiny:  # a 2-block, dim-256 model at the size's latent grid, fewer frames: CPU only
        device = torch.device("cpu")
        from _comfy_import import import_comfy, import_pack

        import_comfy(("--cpu",))
        pack = import_pack()
        cfg = dict(CFG_14B, dim=256, ffn_dim=512, num_heads=2, num_layers=2)
        lat = min((f - 1) // 4 + 1, max(1, TINY_TOKENS // ((h // 16) * (w // 16))))
        res = run_forward(pack, args.kind, args.tier, 1, 1, False, (w, h, 4 * (lat - 1) + 1), device, 1, "sdpa", cfg)
        return dict(out, tiny=True, kind=args.kind, frames=4 * (lat - 1) + 1, **res)

    device = torch.device("cuda")
    torch.cuda.init()
    free0, total = torch.cuda.mem_get_info()
    ballast_bytes = total - int(args.budget * GiB)
    ballast = torch.empty(ballast_bytes, dtype=torch.uint8, device=device)  # first allocation: the smaller card
    model = MemoryModel.load()
    info = hardware.detect(None)
    machine = advisor.with_overrides(advisor.machine_from_info(info, gpu_index=device.index or 0),
                                     vram_gb=args.budget, free_vram_gb=args.budget)
    rec = advisor.recommend(machine, advisor.Request(w, h, f, args.priority, args.attention, args.prefetch))
    out.update(fits=rec.fits, weights=rec.weights_key, k=rec.blocks_to_swap, placement=rec.placement,
               te=rec.text_encoder_device, predicted=rec.phase_peaks["sampling"], usable=rec.usable_vram_bytes,
               predicted_step=rec.step_time_s)
    if not rec.fits:
        return out
    from _comfy_import import import_comfy, import_pack

    import_comfy(())
    pack = import_pack()
    choice = catalog.WEIGHTS[rec.weights_key]
    te_bytes = 0
    if rec.text_encoder_device == "gpu":  # the plan keeps the text encoder resident: hold its bytes
        te_bytes = catalog.TEXT_ENCODERS_TABLE[rec.text_encoder_key].size_bytes + model.data["text_encoder"]["activation_bytes"]
    te_hold = torch.empty(te_bytes, dtype=torch.uint8, device=device)
    try:
        res = run_forward(pack, rec.kind, rec.tier, rec.blocks_to_swap, rec.prefetch, rec.placement == "disk",
                          (w, h, f), device, args.iters, rec.attention)
        torch.cuda.synchronize()
        free1, _ = torch.cuda.mem_get_info()
        nontorch = (total - free1) - torch.cuda.memory_reserved()  # CUDA context + cuBLAS/cuDNN handles
        measured = nontorch + torch.cuda.max_memory_reserved() - ballast_bytes
        # the same memory model fed the built model's real sizes
        n = model.num_blocks
        actual = dataclasses.replace(choice, size_bytes=res["non_block_bytes"] + n * res["block_bytes"])
        fmt = dict(model.data["formats"][rec.kind], block_bytes=res["block_bytes"], non_block_bytes=res["non_block_bytes"])
        patched = MemoryModel(dict(model.data, formats=dict(model.data["formats"], **{rec.kind: fmt})))
        pred_actual = patched.sampling_vram(actual, video_tokens(w, h, f), rec.blocks_to_swap, rec.prefetch,
                                            rec.attention, te_bytes).total
        out.update(oom=False, measured=measured, predicted_actual=pred_actual, context=nontorch,
                   max_allocated=torch.cuda.max_memory_allocated() - ballast_bytes, **res)
    except Exception as exc:  # noqa: BLE001  (one row per failure; the plan above stays in it)
        msg = (str(exc).strip().splitlines() or [""])[0]
        oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in msg.lower()
        out.update(oom=oom, error=f"{type(exc).__name__}: {msg}"[:400])
    del ballast, te_hold
    return out


def plans_only(args) -> None:
    from wan4step import advisor
    from wan4step.memory_model import GiB as G

    blank = advisor.Machine(None, 0, 0, None, 0, 0)
    print("| budget | size | weights | k | TE | predicted GiB | usable GiB | est s/step |\n|---|---|---|---|---|---|---|---|")
    for b in args.budgets.split(","):
        m = advisor.with_overrides(blank, gpu="H100 SXM", vram_gb=float(b), free_vram_gb=float(b), ram_gb=128)
        for s in args.sizes.split(","):
            r = advisor.recommend(m, advisor.Request(*SIZES[s], args.priority, args.attention, args.prefetch))
            est = f"{r.step_time_s:.2f}" if r.step_time_s else "-"
            print(f"| {b} | {s} | {r.weights_key if r.fits else 'does not fit'} | {r.blocks_to_swap} | "
                  f"{r.text_encoder_device} | {r.phase_peaks['sampling'] / G:.2f} | {r.usable_vram_bytes / G:.2f} | {est} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="8,12,16,24,32")
    ap.add_argument("--sizes", default="480p")
    ap.add_argument("--priority", default="speed")
    ap.add_argument("--attention", default="auto")
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=240, help="seconds per budget")
    ap.add_argument("--plan-only", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--kind", default="fp8", help="--tiny only: fp8 | int8 | bf16 | gguf")
    ap.add_argument("--tier", default="Q4_K_M", help="--tiny only, with --kind gguf")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--size", default="480p", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plan_only:
        return plans_only(args)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    if args.tiny:
        bad = 0
        for s in args.sizes.split(","):
            cmd = [sys.executable, __file__, "--child", "--tiny", "--size", s, "--kind", args.kind, "--tier", args.tier]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            ok = bool(line) and json.loads(line[-1][7:]).get("finite", False)
            bad += not ok
            print(line[-1] if line else f"size {s}: no result\n" + r.stdout[-2000:] + r.stderr[-4000:], flush=True)
        sys.exit(1 if bad else 0)
    rows = []
    for s in args.sizes.split(","):
        for b in args.budgets.split(","):
            cmd = [sys.executable, __file__, "--child", "--budget", b, "--size", s, "--priority", args.priority,
                   "--attention", args.attention, "--prefetch", str(args.prefetch), "--iters", str(args.iters)]
            t0 = time.time()
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=dict(os.environ))
                line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
                res = json.loads(line[-1][7:]) if line else {"budget": b, "size": s, "error": (r.stderr or r.stdout)[-600:]}
            except subprocess.TimeoutExpired:
                res = {"budget": b, "size": s, "error": f"timed out after {args.timeout} s"}
            res["wall_s"] = time.time() - t0
            rows.append(res)
            print(json.dumps(res), flush=True)
    print("\n| budget GiB | size | weights | k | predicted GiB | predicted* GiB | measured GiB | err % | OOM | s/forward "
          "| est s/step |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r and "measured" not in r:
            err = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
            pred = f"{r['predicted'] / GiB:.2f}" if r.get("predicted") else ""
            print(f"| {r['budget']} | {r['size']} | {r.get('weights', '')} | {r.get('k', '')} | {pred} | | | "
                  f"| {'YES' if r.get('oom') else 'no'} | error: {err} | |")
            continue
        if not r.get("fits", True):
            print(f"| {r['budget']} | {r['size']} | advisor: does not fit | | {r['predicted'] / GiB:.2f} | | | | | | |")
            continue
        meas = r.get("measured")
        err = f"{100 * (meas - r['predicted_actual']) / r['predicted_actual']:+.1f}" if meas else "-"
        meas_s = f"{meas / GiB:.2f}" if meas else "-"
        pa = f"{r['predicted_actual'] / GiB:.2f}" if r.get("predicted_actual") else "-"
        sec = f"{r['s_per_forward']:.2f}" if r.get("s_per_forward") else "-"
        if r.get("finite") is False:
            sec += " (non-finite output)"
        est = f"{r['predicted_step']:.2f}" if r.get("predicted_step") else "-"
        print(f"| {r['budget']} | {r['size']} | {r['weights']} | {r['k']} | {r['predicted'] / GiB:.2f} | {pa} | {meas_s} "
              f"| {err} | {'YES' if r.get('oom') else 'no'} | {sec} | {est} |")
    try:
        import torch

        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    main()
