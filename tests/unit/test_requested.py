"""wan4step.requested and the schedule's input checks: what the user typed is what gets reported."""

from __future__ import annotations

import pytest
import torch

from wan4step import requested, schedule
from wan4step.errors import SettingsError


def _prompt(width=60, height=48, length=10, via_primitive=False):
    p = {"4": {"class_type": "EmptyHunyuanLatentVideo",
               "inputs": {"width": width, "height": height, "length": length, "batch_size": 1}},
         "5": {"class_type": "Wan4StepSampler", "inputs": {"latent": ["4", 0], "seed": 1}}}
    if via_primitive:
        p["9"] = {"class_type": "PrimitiveInt", "inputs": {"value": width}}
        p["4"]["inputs"]["width"] = ["9", 0]
    return p


def test_latent_size_reads_literals_and_primitives():
    assert requested.latent_size(_prompt(), "5") == {"width": 60, "height": 48, "frames": 10}
    assert requested.latent_size(_prompt(via_primitive=True), "5")["width"] == 60


@pytest.mark.parametrize("prompt, node", [(None, "5"), ({}, "5"), (_prompt(), None), (_prompt(), "4"),
                                          ({"5": {"inputs": {"latent": ["77", 0]}}}, "5")])
def test_latent_size_without_a_readable_source_is_empty(prompt, node):
    assert requested.latent_size(prompt, node) == {}


@pytest.mark.parametrize("text, shown", [("abc", "'abc'"), ("1000, seven", "'seven'"), ("nan", "'nan'"),
                                         ("inf", "'inf'"), ("1000, 750.5", "'750.5'"), ("1e400", "'1e400'")])
def test_step_list_that_is_not_whole_numbers_names_the_field(text, shown):
    with pytest.raises(SettingsError, match=f"step_list: {shown} is not a whole number"):
        schedule.parse_step_list(text)


def test_step_list_out_of_range_names_the_field():
    with pytest.raises(SettingsError, match="step_list: timestep 2000 is outside"):
        schedule.sigmas(step_list=schedule.parse_step_list("2000, 500"))
    assert schedule.parse_step_list("1000, 750.0; 500") == [1000, 750, 500]


def test_every_seed_up_to_2_64_minus_1_gives_the_same_generator_as_torch():
    for seed in (0, 7, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1):
        s = schedule.torch_seed(seed)
        a = torch.randn(4, generator=torch.Generator().manual_seed(seed))
        b = torch.randn(4, generator=torch.Generator().manual_seed(s))
        assert torch.equal(a, b), seed
        # ComfyUI's CPU noise sampler seeds seed + 1: the raw seed overflows at 2^64-1, ours does not
        torch.Generator().manual_seed(s + 1)
    with pytest.raises(ValueError, match="Overflow"):
        torch.Generator().manual_seed(2**64 - 1 + 1)
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(SettingsError, match="seed"):
            schedule.torch_seed(bad)


def test_size_checks_name_nearest_valid_values():
    assert "width 60 is not divisible by 16 (nearest valid: 48 or 64)" in schedule.check_video_size(60, 48, 9)
    assert "frames 10 is not 4n+1 (nearest valid: 9 or 13)" in schedule.check_video_size(64, 48, 10)
    assert "width 8 is below 16 (nearest valid: 16)" in schedule.check_video_size(8, 48, 9)
