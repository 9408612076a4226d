"""What the user typed, read back from the prompt, so checks report it instead of a rounded value.

ComfyUI's latent nodes round silently: EmptyHunyuanLatentVideo makes a 7-column latent for
width 60 (56 pixels) and 3 latent frames for length 10 (9 frames), and its widget steps are not
enforced for API prompts or linked values. By the time the sampler sees the latent, 60 and 10
are gone. The prompt (ComfyUI's hidden PROMPT input) still has them: the node feeding the
sampler's latent input, and its literal or primitive-fed `width` / `height` / `length` values.
"""

from __future__ import annotations

from collections.abc import Mapping

SIZE_INPUTS = {"width": "width", "height": "height", "length": "frames", "frames": "frames"}


def _literal(prompt: Mapping, value, hops: int = 3):
    """An int input's value: a literal, or the `value` of the primitive node it is linked to."""
    for _ in range(hops):
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, list) and len(value) == 2:
            node = prompt.get(str(value[0]))
            if not isinstance(node, Mapping):
                return None
            value = (node.get("inputs") or {}).get("value")
            continue
        return None
    return None


def latent_size(prompt: Mapping | None, node_id, input_name: str = "latent") -> dict[str, int]:
    """{'width', 'height', 'frames'} as typed into the node that makes `node_id`'s latent (the
    keys that could be read); {} when the prompt or the link is not there."""
    if not isinstance(prompt, Mapping) or node_id is None:
        return {}
    node = prompt.get(str(node_id))
    link = (node.get("inputs") or {}).get(input_name) if isinstance(node, Mapping) else None
    if not (isinstance(link, list) and len(link) == 2):
        return {}
    src = prompt.get(str(link[0]))
    if not isinstance(src, Mapping):
        return {}
    inputs = src.get("inputs") or {}
    out = {}
    for key, name in SIZE_INPUTS.items():
        if key in inputs:
            v = _literal(prompt, inputs[key])
            if v is not None:
                out[name] = v
    return out
