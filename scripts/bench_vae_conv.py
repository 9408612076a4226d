"""The VAE decoder's convolutions: cuDNN's conv3d vs the implicit-GEMM Triton kernel (conv_gemm.py), per shape.

    python scripts/bench_vae_conv.py [--sizes 480 720] [--sweep]
    python scripts/bench_vae_conv.py --smoke     # CPU, tiny VAE: cuDNN rows only (the GEMM needs sm90)

One decode per size records every distinct conv call (input shape, weight shape, calls); each is
then timed on random input of that shape with the layer's own weights: cuDNN (benchmark mode, as
the decode runs it) and the GEMM with pick_tile's tile (--sweep: candidates() too, for the
--sweep-top shapes), each
checked against cuDNN (max difference over the output's max). The totals weigh each shape by its
calls. Last, whole decodes side by side, alternating: cuDNN with torch's bias adds, cuDNN with the
fused bias pass (conv_bias.py), conv_backend "auto" (the default) and "gemm".
Engine only (no ComfyUI), random weights at the real shapes (dim 96).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

from wan4step.tiny.vae import tiny_vae_state_dict  # noqa: E402
from wan4step.vae import conv_bias, conv_gemm  # noqa: E402
from wan4step.vae import model as vae_model  # noqa: E402
from wan4step.vae.model import VAEConfig, WanVAE  # noqa: E402

SIZES = {"480": (480, 832), "720": (720, 1280)}
def candidates(ci: int, co: int) -> list[conv_gemm.Tile]:
    """The tiles --sweep tries for Ci -> Co (each compiles for sm90 with ptxas 12.8, no spills)."""
    splits = [(64, 32)] if co == 96 else [(128, 64), (64, 0)] if co == 192 else [(128, 0), (64, 0)]
    bk = 64 if ci % 64 == 0 else 32
    return [conv_gemm.Tile(bw, bn, bk, bn2=bn2, stages=st, warps=wp)
            for bw in (64, 128, 256) for bn, bn2 in splits for st in (3, 4) for wp in (4, 8)
            if not (bw == 256 and wp == 4)]


def record_convs(vae: WanVAE, z: torch.Tensor) -> tuple[Counter, dict]:
    """(input shape, weight shape, with residual) -> calls in one decode (from CausalConv3d.run),
    and -> a layer with those weights."""
    seen: Counter = Counter()
    layers: dict = {}
    real = vae_model.CausalConv3d.run

    def spy(self, buf, residual=None):
        kt = 1 if self.history and buf.shape[2] == 1 else self.kernel_size[0]
        key = (tuple(buf.shape), (self.out_channels, self.in_channels, kt, *self.kernel_size[1:]), residual is not None)
        seen[key] += 1
        layers.setdefault(key, self)
        return real(self, buf, residual)

    vae_model.CausalConv3d.run = spy
    try:
        with torch.inference_mode():
            vae.decode(z)
    finally:
        vae_model.CausalConv3d.run = real
    return seen, layers


def conv_flops(x_shape, w_shape) -> float:
    _, _, t, h, w = x_shape
    co, ci, kt, kh, kw = w_shape
    return 2.0 * co * ci * kt * kh * kw * (t - kt + 1) * h * w


def cudnn_conv(x, w, bias, residual):
    """The decode's cuDNN path: F.conv3d, then the residual added in place."""
    y = F.conv3d(x, w, bias, padding=(0, w.shape[3] // 2, w.shape[4] // 2))
    return y if residual is None else y.add_(residual)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["480", "720"])
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--sweep", action="store_true", help="time candidates()' tiles too, not just pick_tile's")
    ap.add_argument("--sweep-top", type=int, default=6, help="--sweep only the N shapes with the most FLOPs per decode")
    ap.add_argument("--all-tiles", action="store_true", help="--sweep: print every tile's time, fastest first")
    ap.add_argument("--decodes", type=int, default=2, help="whole decodes per backend (alternating)")
    bl.add_smoke(ap)
    a = bl.smoke_or(ap.parse_args(), sizes=["32x48"], frames=5, dim=16, iters=1, decodes=1)
    dev = torch.device("cpu" if a.smoke else "cuda")
    if not a.smoke:
        bl.require_cuda("bench_vae_conv.py")
    dtype = torch.float32 if a.smoke else torch.bfloat16
    cfg = VAEConfig(dim=a.dim)
    vae = WanVAE(cfg)
    vae.load_state_dict(tiny_vae_state_dict(cfg, seed=0))
    vae = vae.to(device=dev, dtype=dtype).eval()
    vae.tiling = "off"
    print(bl.device_line(dev), flush=True)
    gen = torch.Generator(dev).manual_seed(0)
    for s in a.sizes:
        with torch.inference_mode():  # the layers' weights are parameters: no autograd graph here
            one_size(a, vae, cfg, s, dev, dtype, gen)


def one_size(a, vae: WanVAE, cfg: VAEConfig, s: str, dev, dtype, gen) -> None:
    cl = torch.channels_last_3d
    h, w = SIZES.get(s) or tuple(int(v) for v in s.lower().split("x"))
    z = torch.randn(1, cfg.z_dim, cfg.frames_in(a.frames), h // 8, w // 8, device=dev, dtype=dtype, generator=gen)
    shapes, layers = record_convs(vae, z)
    print(f"\n{h}x{w}x{a.frames}: {len(shapes)} conv shapes, {sum(shapes.values())} calls")
    print(f"  {'input':>26s} {'weight (+res)':>26s} {'calls':>5s} {'cuDNN ms':>9s} {'TF/s':>5s} "
          f"{'GEMM ms':>8s} {'TF/s':>5s} {'x cuDNN':>7s}  tile / note")
    tot_c = tot_g = tot_best = 0.0
    torch.backends.cudnn.benchmark = True
    ranked = sorted(shapes.items(), key=lambda kv: -conv_flops(*kv[0][:2]) * kv[1])
    for rank, ((xs, ws, res), calls) in enumerate(ranked):
        layer = layers[(xs, ws, res)]
        x = torch.randn(xs, device=dev, dtype=dtype, generator=gen).contiguous(memory_format=cl)
        wt = (layer.weight[:, :, -ws[2]:] if ws[2] != layer.kernel_size[0] else layer.weight).to(dtype)
        out_shape = (1, ws[0], xs[2] - ws[2] + 1, *xs[3:])
        r = torch.randn(out_shape, device=dev, dtype=dtype, generator=gen).contiguous(memory_format=cl) if res else None
        run_c = partial(cudnn_conv, x, wt, layer.bias, r)
        ref = run_c()
        ms_c = bl.median_ms(run_c, dev, a.iters, 1)
        fl = conv_flops(xs, ws)
        tot_c += calls * ms_c
        head = f"  {str(xs):>26s} {str(ws) + (' +res' if res else ''):>26s} {calls:5d} {ms_c:9.3f} {fl / ms_c / 1e9:5.0f}"
        why = conv_gemm.supported(x, wt)
        if why is not None:
            tot_g += calls * ms_c
            tot_best += calls * ms_c
            print(f"{head} {'-':>8s} {'-':>5s} {'-':>7s}  cuDNN ({why})")
            continue
        w2 = conv_gemm.gemm_weight(wt)
        default = conv_gemm.pick_tile(xs[-1], ws[1], ws[0])
        sweep = a.sweep and rank < a.sweep_top
        results = []
        for tile in [default] + ([t for t in candidates(ws[1], ws[0]) if t != default] if sweep else []):
            try:
                run = partial(conv_gemm.conv3d, x, wt, layer.bias, w2=w2, tile=tile, residual=r)
                err = ((run().float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                results.append((bl.median_ms(run, dev, a.iters, 1), tile, err))
            except Exception as exc:  # noqa: BLE001 - a tile that does not compile (shared memory) is a row
                print(f"      tile {tile}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
        if not results:
            continue
        ms_d, _, err_d = results[0]
        best = min(results, key=lambda t: t[0] if t[2] < 2**-7 else float("inf"))
        tot_g += calls * ms_d
        tot_best += calls * min(best[0], ms_c)
        print(f"{head} {ms_d:8.3f} {fl / ms_d / 1e9:5.0f} {ms_d / ms_c:7.2f}  {default} (err {err_d:.1e})"
              + (f"; best of {len(results)}: {best[1]} {best[0]:.3f} ms (err {best[2]:.1e})" if sweep else ""))
        if sweep and a.all_tiles:
            print("      " + ", ".join(f"{t} {ms:.3f}" for ms, t, _ in sorted(results, key=lambda r: r[0])))
        del x, r, ref
    print(f"  convs per decode: cuDNN {tot_c / 1e3:.3f} s, GEMM (pick_tile) {tot_g / 1e3:.3f} s "
          f"({tot_g / tot_c:.2f}x)" + (f", best of both per shape {tot_best / 1e3:.3f} s" if a.sweep else ""))
    # whole decodes: the session-9 path (cuDNN with torch's bias and shortcut adds), cuDNN with the
    # fused bias pass (conv_bias.py), "auto" (the default) and the GEMM wherever it applies
    rows = {"cudnn+torch adds": ("cudnn", False), "cudnn": ("cudnn", True), "auto": ("auto", True),
            "gemm": ("gemm", True)}
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(a.decodes):
        for name, (backend, fused_bias) in rows.items():
            vae.conv_backend, conv_bias.USE_TRITON = backend, fused_bias
            vae.decode(z)  # warm (cuDNN autotune, Triton compile, self-checks)
            bl.sync(dev)
            t0 = time.perf_counter()
            vae.decode(z)
            bl.sync(dev)
            times[name].append(time.perf_counter() - t0)
    base = min(times["cudnn+torch adds"])
    print("  whole decode (untiled, output on the device): " + ", ".join(
        f"{name} {min(t):.3f} s ({min(t) / base:.2f}x)" for name, t in times.items()))
    vae.conv_backend, conv_bias.USE_TRITON = "auto", True


if __name__ == "__main__":
    main()
