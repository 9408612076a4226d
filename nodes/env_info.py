"""Wan4Step Environment Info: what the pack sees on this machine."""

from __future__ import annotations

from comfy_api.latest import io

from ..wan4step import __version__, hardware


class Wan4StepEnvInfo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Wan4StepEnvInfo",
            display_name="Wan4Step Environment Info",
            category="Wan4Step",
            description="Reports GPU, VRAM, compute capability, RAM and disk as the pack sees them.",
            inputs=[],
            outputs=[io.String.Output("info", tooltip="A human-readable summary; wire it into a text display node.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        import folder_paths

        info = hardware.detect(folder_paths.models_dir)
        text = f"ComfyUI-Wan4Step {__version__}\n{info.summary()}"
        return io.NodeOutput(text, ui={"text": [text]})


NODES = [Wan4StepEnvInfo]
