"""The engine's settings: every environment switch, read once, in one documented place.

`SETTINGS` is read from the process environment when this module is first imported. Modules copy
the value they need into a module constant at their own import, so no forward pass ever looks a
setting up (the kernels' hot paths test a module-level bool).

| variable              | default | effect                                                                 |
|-----------------------|---------|------------------------------------------------------------------------|
| `WAN4STEP_GGUF_TRITON`| `1`     | `0`: GGUF weights decode with the torch decoders (bit-identical, slower). For A/B checks and bug reports. |
| `WAN4STEP_FUSED`      | `1`     | `0`: the block's LayerNorm/RMSNorm/RoPE/GELU/residual passes run as plain torch ops instead of the Triton kernels (`dit/fused.py`). |
| `WAN4STEP_TUNING`     | empty   | launch overrides of the fused kernels for benchmarks, e.g. `ln=8,gelu_quant=32` (`dit/fused.py: TUNING`). |
| `WAN4STEP_MAX_TOKENS` | empty   | shared servers: the most DiT tokens one Wan4Step Sampler job may have (latent frames x h/16 x w/16 x batch; 75600 = 720x1280x81); bigger jobs are refused (`limits.py`). |
| `TRITON_INTERPRET`    | `0`     | Triton's own switch: `1` runs the Triton kernels on the CPU (the tests). Triton reads it itself; the engine only needs to know it to route CPU tensors to those kernels. |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    gguf_triton: bool = True
    fused: bool = True
    tuning: str = ""
    max_tokens: str = ""  # parsed by limits.py, so a typo refuses jobs with a message instead of breaking the import
    triton_interpret: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            gguf_triton=env.get("WAN4STEP_GGUF_TRITON", "1") != "0",
            fused=env.get("WAN4STEP_FUSED", "1") != "0",
            tuning=env.get("WAN4STEP_TUNING", ""),
            max_tokens=env.get("WAN4STEP_MAX_TOKENS", "").strip(),
            triton_interpret=env.get("TRITON_INTERPRET", "0") == "1",
        )


SETTINGS = Settings.from_env()
