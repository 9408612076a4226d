"""The demo: boot a real ComfyUI with this pack, queue the bundled text-to-video workflow, save the mp4.

Runs on the embedded tiny model (every format written on the fly, no download)
unless real Wan2.1 T2V-14B weights are found in the ComfyUI models folder and a
CUDA GPU is present; then it runs them at 480x832x81. Run through
`bash scripts/demo.sh`, which sets everything up first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))

from wan4step import catalog  # noqa: E402
from wan4step.comfy_client import ComfyAPIError, output_files  # noqa: E402
from wan4step_dev.comfy_server import HOW_TO_GET_COMFYUI, ComfyServer, find_comfyui, prepare_base_dir  # noqa: E402

WORKFLOW = REPO / "workflows" / "api" / "wan4step_t2v_tiny_demo.json"


def find_real_weights(models: Path) -> dict | None:
    """The first complete real set (DiT tier + UMT5 + VAE) present in a ComfyUI models folder."""
    te = next((c.name for c in catalog.TEXT_ENCODERS_TABLE.values() if (models / "text_encoders" / c.name).exists()), None)
    vae = next((c.name for c in catalog.VAES.values() if (models / "vae" / c.name).exists()), None)
    for choice in catalog.WEIGHTS.values():
        if te and vae and (models / "diffusion_models" / choice.model_name.rstrip("/")).exists():
            return {"model": choice.model_name, "text_encoder": te, "vae": vae, "label": choice.label}
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red fox running through fresh snow at sunrise, cinematic, 4k")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--format", default="gguf", choices=["gguf", "fp8", "int8", "bf16"],
                    help="which tiny DiT format to run (tiny model only)")
    ap.add_argument("--out", default=str(REPO / "out"), help="where the mp4 is written")
    ap.add_argument("--tiny", action="store_true", help="use the tiny model even if real weights are present")
    args = ap.parse_args()

    comfyui = find_comfyui()
    if comfyui is None:
        print(HOW_TO_GET_COMFYUI)
        return 2
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    real = None if args.tiny or not cuda else find_real_weights(comfyui / "models")

    base = prepare_base_dir(Path(args.out) / "demo_comfyui")
    wf = json.loads(WORKFLOW.read_text())
    if real:
        print(f"real weights found: {real['label']} ({real['model']})")
        (base / "extra_models.yaml").write_text(
            f"comfyui:\n  base_path: {comfyui}\n  diffusion_models: models/diffusion_models\n"
            "  text_encoders: models/text_encoders\n  vae: models/vae\n")
        extra = ["--extra-model-paths-config", str(base / "extra_models.yaml")]
        wf["1"]["inputs"]["model_name"] = real["model"]
        wf["2"]["inputs"].update(text_encoder_name=real["text_encoder"], device="gpu_then_free")
        wf["6"]["inputs"]["vae_name"] = real["vae"]
        wf["4"]["inputs"].update(width=832, height=480, length=81)
    else:
        extra = []  # the workflow's Wan4Step Tiny Models node writes them into the base dir's models/
        tiny = next(k for k, n in wf.items() if n["class_type"] == "Wan4StepTinyModels")
        wf[tiny]["inputs"]["dit_format"] = {"gguf": "gguf_Q4_K_M", "fp8": "lightx2v_fp8", "int8": "lightx2v_int8",
                                            "bf16": "bf16"}[args.format]
        print(f"no real Wan2.1 T2V-14B weights{' or no CUDA GPU' if not cuda else ''}: running the embedded tiny "
              f"model ({args.format}); its video is structured noise, the pipeline is the real one")
    wf["3"]["inputs"]["text"] = args.prompt
    wf["5"]["inputs"]["seed"] = args.seed

    server = ComfyServer(comfyui, base, extra_args=extra, cpu=not cuda)
    t0 = time.monotonic()
    client = server.start()
    print(f"ComfyUI {comfyui} is up at {server.url} ({time.monotonic() - t0:.1f} s)")
    try:
        t1 = time.monotonic()
        hist = client.run(wf, timeout=3600)
        mp4 = next(f for f in output_files(hist) if f["filename"].endswith(".mp4"))
        data = client.view(mp4["filename"], mp4["subfolder"], mp4["type"])
    except (ComfyAPIError, TimeoutError, StopIteration) as exc:
        print(f"demo failed: {exc}\n--- ComfyUI log ---\n{server.log_tail()}")
        return 1
    finally:
        server.stop()
    out = Path(args.out) / f"wan4step_demo_seed{args.seed}.mp4"
    out.write_bytes(data)
    print(f"queued, sampled and decoded in {time.monotonic() - t1:.1f} s")
    print(f"video written: {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
