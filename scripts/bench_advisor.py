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
    python scripts/bench_advisor.py --tiny --sizes small,720p   # CPU, tiny model, one child per size
    python scripts/bench_advisor.py --smoke                  # CPU: one plan table + one tiny child in-process

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
import benchlib as bl  # noqa: E402

GiB = bl.GiB
TINY_TOKENS = 8192  # --tiny: frames are cut so the video has at most this many tokens (the grid stays)


# ---------------------------------------------------------------------------------------
# the part that touches the pack's model / streamer APIs
# ---------------------------------------------------------------------------------------
def weights_format(kind: str, tier: str | None) -> bl.Format:
    """The advisor's (kind, GGUF tier) as a bench weight format (a tier builds its real per-tensor type mix)."""
    return bl.Format("gguf", tier) if kind == "gguf" else bl.Format(kind)


def run_forward(pack, fmt: bl.Format, k: int, prefetch: int, disk: bool, size, device, iters: int,
                attention: str, cfg=bl.T2V_14B) -> dict:
    """Build, stream k blocks, run `iters` timed forwards after one warm-up. Returns sizes, time and stats.

    `size` is (width, height, frames). Weights: `bl.build_wan` (each allocated once where the plan
    puts it, filled a few rows at a time, so the build fits the budget too)."""
    import torch

    from wan4step.offload.plan import spread
    from wan4step.offload.wan import plan_swap

    n = cfg.num_layers
    streamed = set(spread(k, n))
    model = bl.build_wan(cfg, fmt, device, pack.nodes.comfy_compat.model.make_ops({}), streamed=streamed)
    block = max(bl.module_bytes(b) for b in model.blocks)
    non_block = sum(bl.module_bytes(c) for name, c in model.named_children() if name != "blocks")
    plan = plan_swap(model, k, device, prefetch=prefetch, pin=device.type == "cuda", disk=disk) if k else None
    if plan is not None:
        for name, wrapped in plan.patches.items():
            model.blocks[int(name.split(".")[1])] = wrapped
        plan.streamer.ensure_device()
    _, opts = bl.fast_options(pack, model, attention, device)
    w, h, f = size
    x = torch.randn(bl.Size("run", h, w, f).latent_shape(cfg.in_dim), device=device, dtype=torch.bfloat16)
    t = torch.tensor([937.5], device=device)
    ctx = (torch.randn(1, bl.TEXT_TOKENS, cfg.text_dim, device=device) * 0.1).to(torch.bfloat16)
    bl.free_cuda_cache()  # drop the build's cached temporaries before measuring
    bl.reset_peak(device)
    last: dict = {}

    def forward():
        last["y"] = model(x, t, ctx, transformer_options=dict(opts))

    with torch.inference_mode():
        timing = bl.measure(forward, device, iters=iters, warmup=1)
        finite = bool(torch.isfinite(last.pop("y")).all())
    stats = plan.streamer.stats.as_dict() if plan is not None else {}
    return {"block_bytes": block, "non_block_bytes": non_block, "s_per_forward": timing.min_s,
            "finite": finite, "stream": stats}


# ---------------------------------------------------------------------------------------
# one budget, in its own process
# ---------------------------------------------------------------------------------------
def child(args) -> dict:
    import torch

    from wan4step import advisor, catalog, hardware
    from wan4step.memory_model import MemoryModel, video_tokens

    w, h, f = bl.SIZES[args.size].whf
    out = {"budget": args.budget, "size": args.size}
    if args.tiny:  # a 2-block, dim-256 model at the size's latent grid, fewer frames: CPU only
        device = torch.device("cpu")
        bl.import_comfy(("--cpu",))
        pack = bl.import_pack()
        cfg = bl.tiny_config()
        lat = min((f - 1) // 4 + 1, max(1, TINY_TOKENS // ((h // 16) * (w // 16))))
        res = run_forward(pack, weights_format(args.kind, args.tier), 1, 1, False, (w, h, 4 * (lat - 1) + 1), device, 1,
                          "sdpa", cfg)
        return dict(out, tiny=True, kind=args.kind, frames=4 * (lat - 1) + 1, **res)

    device = torch.device("cuda")
    torch.cuda.init()
    ballast = bl.Ballast(args.budget, device)  # first allocation: the smaller card
    total, ballast_bytes = ballast.total, ballast.bytes
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
    bl.import_comfy(())
    pack = bl.import_pack()
    choice = catalog.WEIGHTS[rec.weights_key]
    te_bytes = 0
    if rec.text_encoder_device == "gpu":  # the plan keeps the text encoder resident: hold its bytes
        te_bytes = catalog.TEXT_ENCODERS_TABLE[rec.text_encoder_key].size_bytes + model.data["text_encoder"]["activation_bytes"]
    te_hold = torch.empty(te_bytes, dtype=torch.uint8, device=device)
    try:
        res = run_forward(pack, weights_format(rec.kind, rec.tier), rec.blocks_to_swap, rec.prefetch, rec.placement == "disk",
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
    rows = []
    for b in args.budgets.split(","):
        m = advisor.with_overrides(blank, gpu="H100 SXM", vram_gb=float(b), free_vram_gb=float(b), ram_gb=128)
        for s in args.sizes.split(","):
            r = advisor.recommend(m, advisor.Request(*bl.SIZES[s].whf, args.priority, args.attention, args.prefetch))
            rows.append((b, s, r.weights_key if r.fits else "does not fit", r.blocks_to_swap, r.text_encoder_device,
                         f"{r.phase_peaks['sampling'] / G:.2f}", f"{r.usable_vram_bytes / G:.2f}",
                         f"{r.step_time_s:.2f}" if r.step_time_s else "-"))
    print(bl.md_table(["budget", "size", "weights", "k", "TE", "predicted GiB", "usable GiB", "est s/step"], rows))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    bl.add_smoke(ap)
    args = ap.parse_args(argv)
    if args.smoke:  # the plan table, then one tiny child in this process (a real run spawns one per budget)
        args = bl.smoke_or(args, budgets="8", sizes="tiny", size="tiny", tiny=True)
        plans_only(args)
        res = child(args)
        print("RESULT " + json.dumps(res), flush=True)
        if not res.get("finite"):
            raise SystemExit("the tiny forward's output is not finite")
        return
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
    table = []
    for r in rows:
        if "error" in r and "measured" not in r:
            err = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
            pred = f"{r['predicted'] / GiB:.2f}" if r.get("predicted") else ""
            table.append((r["budget"], r["size"], r.get("weights", ""), r.get("k", ""), pred, "", "", "",
                          "YES" if r.get("oom") else "no", f"error: {err}", ""))
            continue
        if not r.get("fits", True):
            table.append((r["budget"], r["size"], "advisor: does not fit", "", f"{r['predicted'] / GiB:.2f}",
                          "", "", "", "", "", ""))
            continue
        meas = r.get("measured")
        err = f"{100 * (meas - r['predicted_actual']) / r['predicted_actual']:+.1f}" if meas else "-"
        sec = f"{r['s_per_forward']:.2f}" if r.get("s_per_forward") else "-"
        if r.get("finite") is False:
            sec += " (non-finite output)"
        table.append((r["budget"], r["size"], r["weights"], r["k"], f"{r['predicted'] / GiB:.2f}",
                      f"{r['predicted_actual'] / GiB:.2f}" if r.get("predicted_actual") else "-",
                      f"{meas / GiB:.2f}" if meas else "-", err, "YES" if r.get("oom") else "no", sec,
                      f"{r['predicted_step']:.2f}" if r.get("predicted_step") else "-"))
    print()
    print(bl.md_table(["budget GiB", "size", "weights", "k", "predicted GiB", "predicted* GiB", "measured GiB", "err %",
                       "OOM", "s/forward", "est s/step"], table))
    try:
        print(bl.device_line("cuda"))
    except Exception:  # noqa: BLE001 - the table is what matters
        pass


if __name__ == "__main__":
    main()
