"""What a DiT file would cost to load in each mode, from its headers alone (no tensor is read).

For the advisor, the memory model and the download UI: a VACE-merged file's
download size is not what mode t2v loads. GGUF tensor infos and safetensors
headers give every tensor's stored size; `.pth` files have no such index and are
not scanned (None).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..wan_config import is_vace_key
from .dit import sniff
from .safetensors_file import entry_nbytes, read_header


@dataclass(frozen=True)
class DiTScan:
    path: Path
    kind: str  # sniff(): gguf | safetensors | lightx2v | safetensors-dir
    t2v_bytes: int  # stored bytes mode "t2v" loads
    vace_bytes: int  # stored bytes of the VACE addon (0 for a plain T2V file)

    @property
    def has_vace(self) -> bool:
        return self.vace_bytes > 0

    def loaded_bytes(self, mode: str = "t2v") -> int:
        return self.t2v_bytes + (self.vace_bytes if mode == "vace" else 0)


def _sizes(path: Path, kind: str) -> dict[str, int]:
    if kind == "gguf":
        from gguf import GGUFReader

        return {t.name: int(t.n_bytes) for t in GGUFReader(path).tensors}
    files = [path] if kind == "safetensors" else sorted(path.glob("*.safetensors"))
    out: dict[str, int] = {}
    for f in files:
        out.update({k: entry_nbytes(e) for k, e in read_header(f)[0].items()})
    return out


def scan_dit(path: str | Path) -> DiTScan | None:
    """Stored bytes per part of a DiT file or folder; None for formats without a header index (.pth)."""
    path = Path(path)
    kind = sniff(path)
    if kind == "pth":
        return None
    sizes = _sizes(path, kind)
    vace = sum(n for k, n in sizes.items() if is_vace_key(k))
    return DiTScan(path, kind, sum(sizes.values()) - vace, vace)
