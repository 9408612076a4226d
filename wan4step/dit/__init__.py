"""The pack's own forward for a Wan DiT block, run on ComfyUI's module tree and weights."""
