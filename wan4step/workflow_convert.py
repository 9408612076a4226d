"""UI-format workflows (what the ComfyUI frontend saves) -> API-format prompts (what /prompt takes).

The UI format stores widget values by position (`widgets_values`) and connections as a
link table; the API format is `{node id: {class_type, inputs: {name: value | [src id, slot]}}}`.
The mapping from positions to names is not in the file: it comes from each node's
definition in ComfyUI's `/object_info`, walked the way the frontend (1.49) builds widgets:

- inputs in `input_order` (required, then optional); a socket type (MODEL, LATENT, ...)
  or `forceInput` is not a widget;
- an INT/FLOAT/COMBO with `control_after_generate` is followed by one extra stored value
  (the "fixed/increment/randomize" choice), which the API does not take;
- a V3 DynamicCombo (`COMFY_DYNAMICCOMBO_V3`) is followed by the widgets of the option it
  is set to, named `parent.child` and walked depth-first (SaveVideo: `format`,
  `format.codec`, `format.codec.encoding`, then its own hidden `codec`);
- a widget whose input slot has a link sends the link, not the stored value
  (a widget converted to an input);
- frontend-only nodes are dropped (Note, MarkdownNote), Reroutes are followed, a legacy
  PrimitiveNode's value is written into the widget it feeds; muted nodes (mode 2) are
  dropped and bypassed nodes (mode 4) pass their matching-type input through.

The frontend's own `app.graphToPrompt()` is the oracle: tests/integration/test_browser.py
compares this converter's output with it for every workflow in `workflows/`.

The API queue (`wan4step.api_queue`) converts a UI workflow it is given with a server's
/object_info. Regenerating the repository's `workflows/api/` is dev tooling:
`python -m wan4step_dev.workflow_cli [--check]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import FormatError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
NOTE_NODES = {"Note", "MarkdownNote"}
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
FRONTEND_ONLY = NOTE_NODES | {REROUTE, PRIMITIVE}
MODE_MUTED, MODE_BYPASS = 2, 4


class WorkflowError(FormatError):
    """A UI workflow that cannot be converted: unknown node types, values that do not match the schema."""


# --------------------------------------------------------------------------------------
# widget layout
# --------------------------------------------------------------------------------------
def _spec(entry: Any) -> tuple[Any, dict]:
    typ = entry[0]
    opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    return typ, opts


def is_widget(entry: Any) -> bool:
    """Does the frontend draw this input as a widget (its value is stored in widgets_values)?"""
    typ, opts = _spec(entry)
    if opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES or typ == DYNAMIC_COMBO


def _ordered(section: Mapping, order: Mapping | None) -> Iterator[tuple[str, Any]]:
    for kind in ("required", "optional"):
        names = (order or {}).get(kind) or list((section.get(kind) or {}).keys())
        for name in names:
            entry = (section.get(kind) or {}).get(name)
            if entry is not None:
                yield name, entry


def _option_inputs(entry: Any, value: Any) -> dict | None:
    _, opts = _spec(entry)
    for option in opts.get("options", []):
        if option.get("key") == value:
            return option.get("inputs") or {}
    return None


def widget_default(entry: Any) -> Any:
    """The value the frontend gives a widget that has no stored value."""
    typ, opts = _spec(entry)
    if "default" in opts:
        return opts["default"]
    if isinstance(typ, list):
        return typ[0] if typ else ""
    if typ == "COMBO" or typ == DYNAMIC_COMBO:
        options = opts.get("options") or []
        first = options[0] if options else ""
        return first.get("key") if isinstance(first, dict) else first
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(typ)


def read_widget_values(node_def: Mapping, values: list | dict, where: str = "", strict: bool = True) -> dict[str, Any]:
    """Positional `widgets_values` -> {widget name: value} for one node definition.

    Raises WorkflowError when the stored values do not fit the schema. strict=True (the files
    shipped in workflows/) refuses any difference: the node changed since the file was written.
    strict=False does what the frontend does when it opens an older file: widgets without a
    stored value take their default, extra trailing values (a frontend extension's display
    widget) are ignored.
    """
    if isinstance(values, dict):  # some frontends/extensions save them by name
        return {k: v for k, v in values.items()}
    out: dict[str, Any] = {}
    pos = 0

    def take(name: str, entry: Any = None) -> Any:
        nonlocal pos
        if pos >= len(values):
            if not strict:
                return widget_default(entry) if entry is not None else None
            raise WorkflowError(
                f"{where}: widgets_values has {len(values)} values, the node's schema needs more",
                expected=f"a value for widget '{name}'",
                found=repr(values),
                fix="open the workflow in ComfyUI, check the node and save it again (or re-run scripts/build_workflows.py).",
            )
        pos += 1
        return values[pos - 1]

    def walk(section: Mapping, order: Mapping | None, prefix: str) -> None:
        for name, entry in _ordered(section, order):
            if not is_widget(entry):
                continue
            full = prefix + name
            value = take(full, entry)
            out[full] = value
            typ, opts = _spec(entry)
            if opts.get("control_after_generate"):
                take(full + " control_after_generate")
            if typ == DYNAMIC_COMBO:
                sub = _option_inputs(entry, value)
                if sub is None:
                    keys = [o.get("key") for o in opts.get("options", [])]
                    raise WorkflowError(f"{where}: widget '{full}' is {value!r}", expected=f"one of {keys}",
                                        fix="pick one of the listed values in the UI and save again.")
                walk(sub, None, full + ".")

    walk(node_def.get("input") or {}, node_def.get("input_order"), "")
    if strict and pos != len(values):
        raise WorkflowError(
            f"{where}: widgets_values has {len(values) - pos} value(s) more than the node's widgets",
            expected=f"{pos} values for {list(out)}",
            found=repr(values),
            fix="the node's schema changed since the workflow was saved: open it in ComfyUI and save it again "
            "(or re-run scripts/build_workflows.py).",
        )
    return out


def widget_values_for(node_def: Mapping, named: Mapping[str, Any], control: str = "randomize") -> list:
    """The inverse of read_widget_values: {name: value} (missing names take the schema default) -> the
    positional list the frontend saves. Used to author workflows by name (scripts/build_workflows.py)."""
    out: list = []

    def walk(section: Mapping, order: Mapping | None, prefix: str) -> None:
        for name, entry in _ordered(section, order):
            if not is_widget(entry):
                continue
            full = prefix + name
            value = named[full] if full in named else widget_default(entry)
            out.append(value)
            typ, opts = _spec(entry)
            if opts.get("control_after_generate"):
                out.append(named.get(full + ".control_after_generate", control))
            if typ == DYNAMIC_COMBO:
                walk(_option_inputs(entry, value) or {}, None, full + ".")

    walk(node_def.get("input") or {}, node_def.get("input_order"), "")
    unknown = set(named) - set(read_widget_values(node_def, out)) - {k for k in named if k.endswith(".control_after_generate")}
    if unknown:
        raise WorkflowError(f"no widget(s) named {sorted(unknown)}", expected=f"widgets of {node_def.get('name')}")
    return out


# --------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------
def _links(workflow: Mapping) -> dict[int, tuple[int, int, int, int, str]]:
    """link id -> (src node, src slot, dst node, dst slot, type); both the list and the object form."""
    out = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            out[int(link["id"])] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                                    link.get("type"))
        else:
            lid, src, sslot, dst, dslot, typ = link[:6]
            out[int(lid)] = (src, sslot, dst, dslot, typ)
    return out


def to_api(workflow: Mapping, object_info: Mapping[str, Mapping], strict: bool = True) -> dict[str, dict]:
    """Convert one UI workflow; node ids are kept (as strings), so API ids match the UI's.

    strict=False converts like the frontend opens an older or foreign file (see read_widget_values);
    the files shipped in workflows/ are converted strictly."""
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported by this converter",
                            fix="unpack the subgraph in ComfyUI (right click > Unpack Subgraph) and save again.")
    nodes = {int(n["id"]): n for n in workflow.get("nodes", [])}
    links = _links(workflow)
    unknown = sorted({n["type"] for n in nodes.values() if n["type"] not in object_info and n["type"] not in FRONTEND_ONLY})
    if unknown:
        raise WorkflowError(f"node types not installed in this ComfyUI: {', '.join(unknown)}",
                            fix="install the custom nodes that provide them (ComfyUI Manager > Install Missing Nodes).")

    def source(link_id: int | None, seen: frozenset = frozenset()) -> tuple[int, int] | None | str:
        """Where a link really comes from: (node, slot), None (nothing), or 'primitive'."""
        if link_id is None or int(link_id) not in links or link_id in seen:
            return None
        src, slot, _, _, typ = links[int(link_id)]
        node = nodes.get(int(src))
        if node is None:
            return None
        seen = seen | {link_id}
        if node["type"] == REROUTE:
            ins = node.get("inputs") or []
            return source(ins[0].get("link") if ins else None, seen)
        if node["type"] == PRIMITIVE:
            return "primitive"
        mode = node.get("mode", 0)
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            ins = node.get("inputs") or []
            out_type = (node.get("outputs") or [{}])[slot].get("type", typ) if slot < len(node.get("outputs") or []) else typ
            order = ([ins[slot]] if slot < len(ins) else []) + ins
            for inp in order:
                if inp.get("link") is not None and inp.get("type") == out_type:
                    return source(inp["link"], seen)
            return None
        return int(src), int(slot)

    api: dict[str, dict] = {}
    for nid in sorted(nodes):
        node = nodes[nid]
        typ = node["type"]
        if typ in FRONTEND_ONLY or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        node_def = object_info[typ]
        where = f"node {nid} ({typ})"
        inputs: dict[str, Any] = dict(read_widget_values(node_def, node.get("widgets_values") or [], where, strict))
        for inp in node.get("inputs") or []:
            src = source(inp.get("link"))
            name = inp["name"]
            if src == "primitive":
                prim = nodes[int(links[int(inp["link"])][0])]
                inputs[name] = (prim.get("widgets_values") or [inputs.get(name)])[0]
            elif src is not None:
                inputs[name] = [str(src[0]), src[1]]
        api[str(nid)] = {
            "inputs": inputs,
            "class_type": typ,
            "_meta": {"title": node.get("title") or node_def.get("display_name") or typ},
        }
    return api


def dumps_api(api: Mapping[str, Any]) -> str:
    """One node per line: small diffs when a workflow changes."""
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in api.items())
    return "{\n" + body + "\n}\n"


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data
