"""Wan4Step Tiny Models: the tiny demo set, written into ComfyUI's own model folders.

After a Manager install there is no shell and no dev tooling, so the tiny workflow gets its
models from this node: `wan4step.tiny.install` writes them (atomically, never over a file it
did not write) into ComfyUI's models/diffusion_models, models/text_encoders and models/vae (or the
first folder ComfyUI lists for each when those are not among them), under `wan4step_tiny/`, and the
node hands their names to the loaders.
"""

from __future__ import annotations

import os

from comfy_api.latest import io

from ..wan4step.errors import MissingFileError
from ..wan4step.tiny import install


def _roots() -> dict[str, str]:
    """The folder of each key that carries its own name (models/diffusion_models, not the legacy models/unet
    ComfyUI lists first), else the first one ComfyUI lists."""
    import folder_paths

    roots = {}
    for key in install.FOLDERS:
        paths = folder_paths.get_folder_paths(key)
        if not paths:
            raise MissingFileError(f"ComfyUI has no '{key}' model folder", expected="models/" + key,
                                   fix="check extra_model_paths.yaml.")
        roots[key] = next((p for p in paths if os.path.basename(os.path.normpath(p)) == key), paths[0])
    return roots


class Wan4StepTinyModels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepTinyModels",
            display_name="Wan4Step Tiny Models",
            category="Wan4Step",
            description="Writes the pack's tiny models (the real Wan2.1 architecture at toy size, random weights, "
            "no download) into ComfyUI's model folders under wan4step_tiny/ and outputs their names for the loaders. "
            "For checking that everything runs in seconds, even on a CPU: the video is noise.",
            inputs=[
                io.Combo.Input("dit_format", options=list(install.DIT_FORMATS), default=install.DEFAULT_DIT_FORMAT,
                               tooltip="Which of the loader's formats the tiny DiT is written in: GGUF Q4_K_M / Q8_0, "
                               "a LightX2V FP8 / INT8 block folder, or a BF16 safetensors file."),
            ],
            outputs=[
                io.Combo.Output("model_name", tooltip="The tiny DiT, for Wan4Step Model Loader."),
                io.Combo.Output("text_encoder_name", tooltip="The tiny UMT5, for Wan4Step UMT5 Loader."),
                io.Combo.Output("vae_name", tooltip="The tiny Wan2.1 VAE, for Wan4Step VAE Loader."),
                io.String.Output("report", tooltip="What was written and what was already in place."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, dit_format):
        """Run again when a tiny file disappears or changes, not on every queue."""
        roots = _roots()
        marks = []
        for key, (name, _) in install.targets(dit_format).items():
            p = os.path.join(roots[key], name.rstrip("/"))
            try:
                marks.append((p, os.stat(p).st_mtime_ns))
            except OSError:
                return float("nan")  # missing: never equal to the first run's fingerprint (missing then too)
        return tuple(marks)

    @classmethod
    def execute(cls, dit_format) -> io.NodeOutput:
        done = install.install_tiny_models(_roots(), dit_format)
        n = done.names
        return io.NodeOutput(n["diffusion_models"], n["text_encoders"], n["vae"], done.summary())


NODES = [Wan4StepTinyModels]
