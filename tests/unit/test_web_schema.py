"""wan4step.web_schema: every bad route body is refused naming the field; nothing is clamped."""

from __future__ import annotations

import pytest

from wan4step import web_schema as ws
from wan4step.web_schema import BadRequest


@pytest.mark.parametrize("text", ["{", "not json", "", "[1, 2", '{"a": }'])
def test_malformed_json_is_refused(text):
    with pytest.raises(BadRequest) as err:
        ws.decode_json(text)
    assert err.value.field == "body"


@pytest.mark.parametrize("body, kind", [([], "a list"), ("x", "text"), (3, "int"), (None, "null")])
def test_a_body_that_is_not_an_object_is_refused(body, kind):
    with pytest.raises(BadRequest, match=f"expected a JSON object, got {kind}") as err:
        ws.parse(body, ws.ADVISOR)
    assert err.value.field == "body"


@pytest.mark.parametrize("field, value, words", [
    ("width", "832", "expected a number, got text"),
    ("width", True, "expected a number, got true/false"),
    ("width", 832.5, "not a whole number"),
    ("width", 10**6, "out of range"),
    ("frames", 0, "out of range"),
    ("vram_gb", -8, "out of range"),
    ("vram_gb", float("nan"), "not a finite number"),
    ("ram_gb", float("inf"), "not a finite number"),
    ("disk_gb", [1], "expected a number, got a list"),
    ("priority", "fastest", "not one of the choices"),
    ("priority", 3, "expected text"),
    ("attention", "xformers", "not one of the choices"),
    ("weights_format", "exe", "not one of the choices"),
    ("gpu", "RTX 9999 Ti", "unknown GPU"),
    ("gpu", {"name": "x"}, "expected text, got an object"),
    ("compute_capability", "banana", "not a compute capability"),
    ("compute_capability", "99.0", "not a compute capability"),
])
def test_bad_advisor_fields_name_the_field(field, value, words):
    with pytest.raises(BadRequest, match=words) as err:
        ws.parse({field: value}, ws.ADVISOR)
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")


@pytest.mark.parametrize("field, value", [("blocks_to_swap", 999), ("blocks_to_swap", -2), ("prefetch", -5),
                                          ("prefetch", 0), ("te_device", "tpu"), ("vae_tiling", "maybe")])
def test_estimate_refuses_instead_of_clamping(field, value):
    with pytest.raises(BadRequest) as err:
        ws.parse({field: value}, ws.ESTIMATE)
    assert err.value.field == field


def test_1e309_from_json_is_refused():
    body = ws.decode_json('{"vram_gb": 1e309, "width": 832}')
    with pytest.raises(BadRequest, match="vram_gb: inf is not a finite number"):
        ws.parse(body, ws.ADVISOR)
    body = ws.decode_json('{"free_vram_gb": NaN}')
    with pytest.raises(BadRequest, match="free_vram_gb"):
        ws.parse(body, ws.ADVISOR)


def test_good_bodies_pass_unchanged_and_unknown_fields_are_ignored():
    body = {"width": 832, "height": 480.0, "frames": 81, "gpu": "RTX 4090", "vram_gb": 24, "ram_gb": None,
            "compute_capability": "8.9", "priority": "fit", "something_else": [1, 2]}
    out = ws.parse(body, ws.ADVISOR)
    assert out == {"width": 832, "height": 480, "frames": 81, "gpu": "RTX 4090", "vram_gb": 24.0,
                   "compute_capability": "8.9", "priority": "fit"}
    assert isinstance(out["height"], int) and isinstance(out["vram_gb"], float)
    est = ws.parse({"blocks_to_swap": -1, "prefetch": 8, "te_device": "cpu", "model_name": "x.gguf"}, ws.ESTIMATE)
    assert est == {"blocks_to_swap": -1, "prefetch": 8, "te_device": "cpu", "model_name": "x.gguf"}


def test_gpu_names_auto_cpu_and_torch_device_names():
    assert ws.parse({"gpu": "auto (detected)"}, ws.ADVISOR)["gpu"] == "auto (detected)"
    assert ws.parse({"gpu": "none (CPU only)"}, ws.ADVISOR)["gpu"] == "none (CPU only)"
    # the name torch reports for a card in the table is mapped onto the table's name
    assert ws.parse({"gpu": "NVIDIA GeForce RTX 4090"}, ws.ADVISOR)["gpu"] == "RTX 4090"


def test_long_text_is_refused():
    with pytest.raises(BadRequest, match="model_name: text longer than"):
        ws.parse({"model_name": "x" * 10_000}, ws.ESTIMATE)
