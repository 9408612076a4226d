"""Draw web/icon.png, the pack's icon in the Comfy Registry and ComfyUI Manager (pyproject [tool.comfy] Icon).

Drawn here, not copied: four rising bars (the four sampling steps) and a play triangle on a dark
rounded square, 256x256 RGBA, anti-aliased by 4x supersampling. Deterministic: re-running writes
the same bytes.

    python scripts/make_icon.py [--out web/icon.png]
"""

from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SIZE, SS = 256, 4  # output side, supersampling factor


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)


def _rounded_square(x: np.ndarray, y: np.ndarray, side: float, radius: float) -> np.ndarray:
    cx = np.clip(x, radius, side - radius)
    cy = np.clip(y, radius, side - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def _triangle(x, y, a, b, c) -> np.ndarray:
    def side(p, q):
        return (x - q[0]) * (p[1] - q[1]) - (p[0] - q[0]) * (y - q[1])

    d1, d2, d3 = side(a, b), side(b, c), side(c, a)
    return ~(((d1 < 0) | (d2 < 0) | (d3 < 0)) & ((d1 > 0) | (d2 > 0) | (d3 > 0)))


def draw() -> np.ndarray:
    n = SIZE * SS
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / SS
    rgb = np.zeros((n, n, 3))
    t = (y / SIZE)[..., None]
    rgb[:] = (1 - t) * _rgb("#1d3b5c") + t * _rgb("#0c1826")  # background gradient
    alpha = _rounded_square(x, y, SIZE, 48).astype(np.float64)
    low, high = _rgb("#2ec4b6"), _rgb("#ffb020")
    for i, h in enumerate((40, 68, 96, 124)):  # the four steps
        x0 = 34 + i * 28
        bar = (x >= x0) & (x < x0 + 20) & (y >= 206 - h) & (y < 206)
        rgb[bar] = low + (high - low) * i / 3
    play = _triangle(x, y, (152, 86), (152, 176), (228, 131))
    rgb[play] = _rgb("#f4f7fb")
    rgba = np.concatenate([rgb, alpha[..., None] * 255], axis=-1)
    rgba = rgba.reshape(SIZE, SS, SIZE, SS, 4).mean(axis=(1, 3))  # box-filter the supersamples
    return np.clip(np.rint(rgba), 0, 255).astype(np.uint8)


def png_bytes(rgba: np.ndarray) -> bytes:
    h, w, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[r].tobytes() for r in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "web" / "icon.png"))
    args = ap.parse_args()
    data = png_bytes(draw())
    Path(args.out).write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes, {SIZE}x{SIZE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
