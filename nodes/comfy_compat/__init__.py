"""The adapter layer: every piece of knowledge of ComfyUI's internals lives here.

The engine (`wan4step/`) never imports ComfyUI and never names its private attributes; it takes
small interfaces (a Linear's `weight_transforms`, a streamer's `dtype_of` and `pinner`, a block
forward's `fuse_norm3`, the fallback registry's propagating exceptions). The node modules in
`nodes/` declare schemas and call into this package; only these modules read or write ComfyUI
attribute names (`weight_function`, `*_lowvram_function`, `<param>_comfy_model_dtype`,
ComfyUI-GGUF's `tensor_type`/`patches`, `comfy.sd.VAE`'s fields, pinned-memory globals, ...).

- `ops.py`: the quantized Linear on `comfy.ops` (the way core's controlnet ops and ComfyUI-GGUF's
  ops subclass core's), and why not core's quantized-tensor layouts.
- `model.py`: the ModelPatcher (LoRA at use time), `build_model`; `saving.py`: what ModelSave /
  CheckpointSave write for each encoding.
- `fast_forward.py`: installs the fused block through `patches_replace["dit"]`; `dit_hooks.py`:
  other packs' attention overrides and the running model, per forward.
- `block_swap.py`: Block Swap's holder in `transformer_options` and its sampling wrapper.
- `patches.py`: what ComfyUI (and ComfyUI-GGUF) attach to modules: use-time patches, cast dtypes.
- `memory.py`: ComfyUI's pinned-memory switch and budget, free memory, interrupts.
- `vae.py`, `clip.py`: the pack's VAE and UMT5 engines as ComfyUI's own VAE and CLIP objects.
- `routes.py`: HTTP routes, registered from `ComfyExtension.on_load`.
- `progress.py`: the node bar and the queue panel through ComfyUI's progress hook, unthrottled per
  tick; per-block sampling progress through `patches["double_block"]` in the guider's own options.
"""

from . import memory  # noqa: F401,E402 - registers ComfyUI's interrupt with the engine's fallback policy
