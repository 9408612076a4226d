"""The request bodies of the pack's HTTP routes (`/wan4step/advisor`, `/wan4step/estimate`), checked.

A route body is untrusted JSON: it may be a list, carry strings where numbers belong, or
numbers Python's JSON reader turns into NaN / inf (`NaN`, `Infinity`, `1e309`). Each
field is declared once here with its type and range, and a bad one is refused with a
`BadRequest` naming the field (the route answers 400 with that text); nothing is clamped
or silently replaced. Unknown fields are ignored (the web extension sends every widget of
a node) and `null` means "not given".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from . import cards
from .advisor import ATTENTION_CHOICES, PRIORITIES
from .attention import BACKENDS
from .catalog import MODES, WEIGHTS
from .errors import SettingsError

MAX_TEXT = 512  # longest string any field accepts (file names are far shorter)


class BadRequest(SettingsError):
    """A route body that cannot be used; `field` names the offending key ("body" for the whole)."""

    def __init__(self, field: str, problem: str, *, expected: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}", expected=expected)


@dataclass(frozen=True)
class Field:
    name: str
    kind: type  # int, float or str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, value):
        if self.kind in (int, float):
            return self._number(value)
        if not isinstance(value, str):
            raise BadRequest(self.name, f"expected text, got {_kind(value)}")
        if len(value) > MAX_TEXT:
            raise BadRequest(self.name, f"text longer than {MAX_TEXT} characters")
        if self.choices is not None and value not in self.choices:
            raise BadRequest(self.name, f"{value!r} is not one of the choices", expected=" / ".join(self.choices))
        return value

    def _number(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(self.name, f"expected a number, got {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(self.name, f"{value} is not a finite number")
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise BadRequest(self.name, f"{value} is not a whole number")
            value = int(value)
        else:
            value = float(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise BadRequest(self.name, f"{value} is out of range", expected=f"{_num(self.lo)} to {_num(self.hi)}")
        return value


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__)


def _num(v: float | None) -> str:
    return "any" if v is None else (str(int(v)) if float(v).is_integer() else str(v))


# --------------------------------------------------------------------------------------
# the fields both routes share (ranges = the VRAM Advisor node's widget bounds)
# --------------------------------------------------------------------------------------
AUTO_GPU_NAMES = ("", "auto", "auto (detected)")
CPU_GPU_NAMES = ("none", "cpu", "cpu only", "none (cpu only)")

LOADER_ATTENTION = tuple(dict.fromkeys(ATTENTION_CHOICES + BACKENDS))
WEIGHTS_FORMATS = ("any", *sorted({w.kind for w in WEIGHTS.values()}))  # the advisor's weights_format choices

SIZE = (Field("width", int, 16, 4096), Field("height", int, 16, 4096), Field("frames", int, 1, 1001))
MACHINE = (
    Field("gpu", str),
    Field("vram_gb", float, 0, 1024), Field("free_vram_gb", float, 0, 1024),
    Field("compute_capability", str),
    Field("ram_gb", float, 0, 4096), Field("disk_gb", float, 0, 100_000),
)
ADVISOR = SIZE + MACHINE + (
    Field("priority", str, choices=PRIORITIES), Field("attention", str, choices=ATTENTION_CHOICES),
    Field("weights_format", str, choices=WEIGHTS_FORMATS), Field("mode", str, choices=MODES))
ESTIMATE = SIZE + MACHINE + (  # attention: the loader's widget value (the backends it offers)
    Field("priority", str, choices=PRIORITIES), Field("attention", str, choices=LOADER_ATTENTION),
    Field("weights_format", str, choices=WEIGHTS_FORMATS),
    Field("blocks_to_swap", int, -1, 40), Field("prefetch", int, 1, 8),
    Field("model_name", str), Field("weights_key", str), Field("te_name", str),
    Field("te_device", str, choices=("gpu", "gpu_then_free", "cpu")),
    Field("vae_tiling", str, choices=("auto", "on", "off")),
    Field("mode", str, choices=MODES), Field("advisor_mode", str, choices=MODES),
)


def _gpu(value: str) -> str:
    """A card from the table (by its name or the name torch reports), auto, or CPU only."""
    g = value.strip()
    if g.lower() in AUTO_GPU_NAMES or g.lower() in CPU_GPU_NAMES:
        return g
    card = cards.by_name(g) or cards.find_card(g)
    if card is None:
        raise BadRequest("gpu", f"unknown GPU {g[:80]!r}: it is not in the card table",
                         expected="a card from the VRAM Advisor's gpu list, 'auto (detected)' or 'none (CPU only)'; "
                                  "for another card pick 'auto (detected)' and type vram_gb and compute_capability")
    return card.name


def _capability(value: str) -> str:
    try:
        cap = cards.parse_capability(value)
    except ValueError:
        cap = (-1, 0)
    if cap is not None and not ((5, 0) <= cap <= (15, 9)):
        raise BadRequest("compute_capability", f"{value[:20]!r} is not a compute capability",
                         expected="auto or a value like 8.6, 8.9, 9.0, 12.0")
    return value


def parse(body, fields: tuple[Field, ...]) -> dict:
    """The known fields of a JSON body, type- and range-checked; raises BadRequest."""
    if not isinstance(body, Mapping):
        raise BadRequest("body", f"expected a JSON object, got {_kind(body)}")
    out = {}
    for f in fields:
        value = body.get(f.name)
        if value is None:
            continue
        out[f.name] = f.check(value)
    if "gpu" in out:
        out["gpu"] = _gpu(out["gpu"])
    if "compute_capability" in out:
        out["compute_capability"] = _capability(out["compute_capability"])
    return out


def decode_json(text: str | bytes):
    """JSON text -> value; BadRequest("body") when it is not JSON."""
    import json

    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("body", f"not valid JSON ({type(exc).__name__})") from None
