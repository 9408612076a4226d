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

NONE = "none"
_DELIVERED: dict[tuple, list[str]] = {}  # (node id, widget values) -> the files its last run delivered


def _folder(key: str) -> str:
    import folder_paths

    paths = folder_paths.get_folder_paths(key)
    if not paths:
        from ..wan4step.errors import DownloadError

        raise DownloadError(f"ComfyUI has no '{key}' model folder", fix="check extra_model_paths.yaml.")
    return paths[0]


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
            "text_encoders and vae; resumes interrupted downloads, verifies sha256, skips files already present.",
            inputs=[
                io.Combo.Input("weights", options=[NONE, *catalog.WEIGHTS], default="lightx2v_fp8",
                               tooltip="DiT weights: LightX2V FP8/INT8 block folders, BF16, or one GGUF tier. "
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
            files = [f"{_folder(spec.folder)}/{spec.dest}"
                     for spec in catalog.files_for(weights_key=w, text_encoder_key=t, vae_key=v)]
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
        import comfy.utils

        w, t, v = _keys(weights, text_encoder, vae, plan)
        bar = comfy.utils.ProgressBar(1000)

        def progress(done: int, total: int, what: str) -> None:
            mm.throw_exception_if_processing_interrupted()  # cancel: the .part file stays for resuming
            bar.update_absolute(int(1000 * done / total) if total else 0, 1000)

        report = hub.download(catalog.files_for(weights_key=w, text_encoder_key=t, vae_key=v), _folder,
                              progress=progress)
        text = report.summary()
        _DELIVERED[(getattr(getattr(cls, "hidden", None), "unique_id", None), weights, text_encoder, vae)] = [
            str(r.local) for r in report.results]
        names = (catalog.weights(w).model_name if w else "", catalog.text_encoder(t).name if t else "",
                 catalog.vae(v).name if v else "")
        return io.NodeOutput(*names, text, ui={"text": [text]})


NODES = [Wan4StepDownload]
