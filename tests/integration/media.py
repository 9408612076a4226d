"""Input files a person would upload for the VACE workflow: a short control clip and a reference image.

Written with PyAV / Pillow (both in ComfyUI's requirements) into a ComfyUI input folder, under the name the
shipped workflow's Load Video holds, so the workflow opens and validates as it does after an upload.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VACE_API = REPO / "workflows" / "api" / "wan4step_vace_control.json"


def shipped_control_name() -> str:
    """The file name the shipped VACE workflow's Load Video asks for."""
    api = json.loads(VACE_API.read_text())
    (name,) = [n["inputs"]["file"] for n in api.values() if n["class_type"] == "LoadVideo"]
    return name


def write_control_video(folder: Path, name: str | None = None, frames: int = 9, width: int = 64,
                        height: int = 48) -> Path:
    """An h264 mp4 of a white bar moving right on black (a control signal with motion)."""
    import av
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or shipped_control_name())
    with av.open(str(path), "w") as out:
        stream = out.add_stream("h264", rate=16)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            x = (i * 6) % width
            img[:, x:x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_reference_image(folder: Path, name: str = "wan4step_vace_reference.png", width: int = 64,
                          height: int = 48) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", (width, height), (200, 80, 20)).save(path)
    return path
