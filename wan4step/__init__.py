"""The Wan4Step engine: plain torch/numpy/gguf/safetensors, never imports ComfyUI."""

__version__ = "0.1.0"
