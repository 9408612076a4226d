"""Wan4Step Download: fetch exactly the files a plan needs into ComfyUI's model folders.

The work is `wan4step.hub.download` (resume, verify, skip when present, clear errors);
this node maps catalog choices to ComfyUI folders, drives the progress bar and lets
ComfyUI's cancel button stop a download (it resumes on the next run).
"""

from __future__ import annotations

import os

from comfy_api.latest import io

from ..wan4step import catalog, hub
from .advisor import PLAN
from .comfy_compat.progress import NodeProgress

NONE = "none"
_DELIVERED: dict[tuple, list[str]] = {}  # (node id, widget values) -> the files its last run delivered


# ComfyUI 0.33's folder_paths registers ["models/unet", "models/diffusion_models"] under the one key
# "diffusion_models" ("unet" is its legacy alias), so paths[0] is models/unet. Its loaders
# (UNETLoader, ComfyUI-GGUF's UnetLoaderGGUF, this pack's) list both; downloads go to
# models/diffusion_models, the folder ComfyUI's templates (properties.models "directory") and the
# frontend's missing-model download use. A user's own default path (extra_model_paths.yaml
# `is_default`) comes first and wins; only the legacy `unet` folder is skipped.
LEGACY_FOLDER_NAMES = {"unet", "clip"}


def _paths(key: str) -> list[str]:
    import folder_paths

    paths = folder_paths.get_folder_paths(key)
    if not paths:
        from ..wan4step.errors import DownloadError

        raise DownloadError(f"ComfyUI has no '{key}' model folder", fix="check extra_model_paths.yaml.")
    return paths


def _folder(key: str) -> str:
    """Where new files of ComfyUI folder `key` are written (see LEGACY_FOLDER_NAMES)."""
    paths = _paths(key)
    return next((p for p in paths if os.path.basename(os.path.normpath(p)) not in LEGACY_FOLDER_NAMES), paths[0])


def _folder_for(specs) -> dict[str, str]:
    """Per folder key, the path that already holds one of the files (a download made when files went to
    models/unet is not fetched again), else `_folder(key)`."""
    roots: dict[str, str] = {}
    for spec in specs:
        if spec.folder in roots:
            continue
        for p in _paths(spec.folder):
            if os.path.exists(os.path.join(p, spec.dest)):
                roots[spec.folder] = p
                break
    return roots


def _keys(weights: str, text_encoder: str, vae: str, plan: dict | None) -> tuple[str | None, str | None, str | None]:
    if plan:
        return plan.get("weights"), plan.get("text_encoder"), plan.get("vae")
    return (None if weights == NONE else weights, None if text_encoder == NONE else text_encoder,
            None if vae == NONE else vae)


class Wan4StepDownload(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepDownload",
            display_name="Wan4Step Download",
            category="Wan4Step",
            description="Downloads exactly the files a choice needs from Hugging Face into diffusion_models, "
            "text_encoders, vae (and loras for base model + distill LoRA choices); resumes interrupted downloads, "
            "verifies sha256, skips files already present.",
            inputs=[
                io.Combo.Input("weights", options=[NONE, *catalog.WEIGHTS], default="lightx2v_fp8",
                               tooltip="DiT weights: LightX2V FP8/INT8 block folders or single files, BF16, a distilled "
                               "GGUF tier (gguf_*), or a base model + the LightX2V distill LoRA (lora_*). "
                               "Ignored when a plan is connected."),
                io.Combo.Input("text_encoder", options=[NONE, *catalog.TEXT_ENCODERS_TABLE], default="umt5_fp8",
                               tooltip="UMT5-XXL text encoder file. Ignored when a plan is connected."),
                io.Combo.Input("vae", options=[NONE, *catalog.VAES], default=catalog.DEFAULT_VAE,
                               tooltip="Wan2.1 VAE file. Ignored when a plan is connected."),
                PLAN.Input("plan", optional=True, tooltip="From Wan4Step VRAM Advisor: download its choice."),
            ],
            outputs=[
                io.Combo.Output("model_name", tooltip="The downloaded weights, for Wan4Step Model Loader."),
                io.Combo.Output("text_encoder_name", tooltip="The downloaded text encoder, for Wan4Step UMT5 Loader."),
                io.Combo.Output("vae_name", tooltip="The downloaded VAE, for Wan4Step VAE Loader."),
                io.String.Output("report", tooltip="What was downloaded, found present or verified."),
                io.Combo.Output("lora_name", tooltip="For a base model + distill LoRA choice: the LoRA, for the Model "
                                                     "Loader's lora_name (merged at load); 'none' otherwise."),
            ],
            is_output_node=True,
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, weights, text_encoder, vae, plan=None):
        """Re-run when a target file appears, changes or goes missing, not on every queue.

        The files checked are the ones this node delivered last time for these widget values
        (a linked plan is not visible here: ComfyUI passes linked inputs as None), else the
        widget choice's. A missing file gives NaN, which never equals a cached fingerprint:
        ComfyUI must not hand back the cached "downloaded" report for a file that is gone."""
        w, t, v = _keys(weights, text_encoder, vae, plan)
        key = (getattr(getattr(cls, "hidden", None), "unique_id", None), weights, text_encoder, vae)
        files = _DELIVERED.get(key)
        if files is None:
            specs = catalog.files_for(weights_key=w, text_encoder_key=t, vae_key=v)
            roots = _folder_for(specs)
            files = [f"{roots.get(spec.folder) or _folder(spec.folder)}/{spec.dest}" for spec in specs]
        marks = []
        for p in files:
            try:
                st = os.stat(p)
            except OSError:
                return float("nan")
            marks.append((p, st.st_mtime_ns, st.st_size))
        return tuple(marks)

    @classmethod
    def execute(cls, weights, text_encoder, vae, plan=None) -> io.NodeOutput:
        import comfy.model_management as mm

        w, t, v = _keys(weights, text_encoder, vae, plan)
        bar = NodeProgress(1000, messages=200)  # per mille of the bytes; a checksum pass holds its place

        def progress(done: int, total: int, what: str) -> None:
            mm.throw_exception_if_processing_interrupted()  # cancel: the .part file stays for resuming
            if total > 1:
                bar.set(1000 * done / total)

        specs = catalog.files_for(weights_key=w, text_encoder_key=t, vae_key=v)
        roots = _folder_for(specs)
        report = hub.download(specs, lambda key: roots.get(key) or _folder(key), progress=progress)
        bar.set(1000)
        text = report.summary()
        _DELIVERED[(getattr(getattr(cls, "hidden", None), "unique_id", None), weights, text_encoder, vae)] = [
            str(r.local) for r in report.results]
        names = (catalog.weights(w).model_name if w else "", catalog.text_encoder(t).name if t else "",
                 catalog.vae(v).name if v else "")
        lora = (catalog.weights(w).lora_name if w else None) or NONE
        return io.NodeOutput(*names, text, lora, ui={"text": [text]})


NODES = [Wan4StepDownload]
