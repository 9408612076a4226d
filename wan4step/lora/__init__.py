"""Distill LoRAs for Wan2.1 T2V-14B: read any published key convention, merge once at load.

`keys.read_lora(path, cfg) -> LoraFile`, `merge.merge_lora(state, lora, strength) -> MergeReport`
(in the state's own encoding: float, FP8/INT8 rows, GGUF re-encoded on the GPU by `gguf_torch`).
Test and benchmark LoRA files: `wan4step_dev.fixtures.lora.make_lora(cfg, convention)` (dev tooling).
"""

from .keys import LoraFile, LoraTarget, parse_lora, read_lora
from .merge import MergeReport, merge_into, merge_lora

__all__ = ["LoraFile", "LoraTarget", "MergeReport", "merge_into", "merge_lora", "parse_lora", "read_lora"]
