"""UI -> API conversion rules on small synthetic graphs (the real-frontend oracle is tests/integration/test_browser.py)."""

from __future__ import annotations

import pytest

from wan4step.workflow_convert import WorkflowError, read_widget_values, to_api, widget_values_for

CODEC = ["COMFY_DYNAMICCOMBO_V3", {"options": [
    {"key": "auto", "inputs": {"required": {}}},
    {"key": "h264", "inputs": {"required": {}, "optional": {"encoding": ["COMFY_DYNAMICCOMBO_V3", {"options": [
        {"key": "auto", "inputs": {"required": {}}},
        {"key": "re-encode", "inputs": {"required": {"crf": ["FLOAT", {"default": 23.0}]}}}]}]}}}]}]
INFO = {
    "Loader": {"input": {"required": {"name": [["a.gguf", "b.gguf"], {}]}}, "input_order": {"required": ["name"]},
               "output": ["MODEL"], "display_name": "Loader"},
    "Patch": {"input": {"required": {"model": ["MODEL", {}], "strength": ["FLOAT", {"default": 1.0}]}},
              "input_order": {"required": ["model", "strength"]}, "output": ["MODEL"], "display_name": "Patch"},
    "Sampler": {"input": {"required": {"model": ["MODEL", {}], "seed": ["INT", {"control_after_generate": True}],
                                       "steps": ["INT", {"default": 4}], "label": ["STRING", {"forceInput": True}]},
                          "optional": {"extra": ["FLOAT", {"default": 0.5}]}},
                "input_order": {"required": ["model", "seed", "steps", "label"], "optional": ["extra"]},
                "output": ["LATENT"], "display_name": "Sampler"},
    "Save": {"input": {"required": {"x": ["LATENT", {}], "prefix": ["STRING", {"default": "v"}],
                                    "format": ["COMFY_DYNAMICCOMBO_V3", {"options": [
                                        {"key": "auto", "inputs": {"required": {"codec": CODEC}}},
                                        {"key": "mp4", "inputs": {"required": {"codec": CODEC}}}]}]},
                       "optional": {"codec": CODEC}},
             "input_order": {"required": ["x", "prefix", "format"], "optional": ["codec"]}, "output": [],
             "display_name": "Save Video"},
}


def _node(nid, typ, values=(), inputs=(), mode=0, **kw):
    return {"id": nid, "type": typ, "mode": mode, "widgets_values": list(values), "inputs": list(inputs),
            "outputs": [], **kw}


def test_dynamic_combo_children_follow_their_parent_depth_first():
    values = ["out/v", "mp4", "h264", "re-encode", 18.0, "auto"]
    got = read_widget_values(INFO["Save"], values)
    assert got == {"prefix": "out/v", "format": "mp4", "format.codec": "h264", "format.codec.encoding": "re-encode",
                   "format.codec.encoding.crf": 18.0, "codec": "auto"}
    assert widget_values_for(INFO["Save"], got) == values


def test_control_after_generate_value_is_skipped_and_force_input_is_not_a_widget():
    assert read_widget_values(INFO["Sampler"], [7, "randomize", 4, 0.25]) == {"seed": 7, "steps": 4, "extra": 0.25}
    assert widget_values_for(INFO["Sampler"], {"seed": 7, "seed.control_after_generate": "fixed"}) == [7, "fixed", 4, 0.5]


def test_value_count_mismatch_names_the_node_and_the_fix():
    with pytest.raises(WorkflowError, match=r"node 3 \(Sampler\).*needs more"):
        read_widget_values(INFO["Sampler"], [7, "fixed", 4], "node 3 (Sampler)")
    with pytest.raises(WorkflowError, match="1 value\\(s\\) more than the node's widgets.*save it again"):
        read_widget_values(INFO["Sampler"], [7, "fixed", 4, 0.5, "panel text"], "node 3 (Sampler)")
    assert read_widget_values(INFO["Sampler"], [7, "fixed", 4, 0.5, "panel text"], strict=False)["extra"] == 0.5
    # an older file, saved before the node grew its last widget: the frontend uses the default
    assert read_widget_values(INFO["Sampler"], [7, "fixed", 4], strict=False) == {"seed": 7, "steps": 4, "extra": 0.5}
    with pytest.raises(WorkflowError, match="no widget"):
        widget_values_for(INFO["Sampler"], {"sed": 1})


def test_links_reroutes_bypass_mute_primitive_and_notes():
    wf = {
        "nodes": [
            _node(1, "Loader", ["a.gguf"]),
            _node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}]),
            _node(3, "Patch", [0.7], inputs=[{"name": "model", "type": "MODEL", "link": 2}], mode=4),  # bypassed
            _node(4, "Patch", [0.9], inputs=[{"name": "model", "type": "MODEL", "link": 9}], mode=2),  # muted
            _node(5, "Sampler", [1, "fixed", 4, 0.5],
                  inputs=[{"name": "model", "type": "MODEL", "link": 3},
                          {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 4},
                          {"name": "label", "type": "STRING", "link": None}], title="My sampler"),
            _node(6, "PrimitiveNode", [8]),
            _node(7, "MarkdownNote", ["# read me"]),
            _node(8, "Save", ["v", "auto", "auto", "auto"], inputs=[{"name": "x", "type": "LATENT", "link": 5}]),
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 3, 0, 5, 0, "MODEL"],
                  [4, 6, 0, 5, 1, "INT"], [5, 5, 0, 8, 0, "LATENT"], [9, 1, 0, 4, 0, "MODEL"]],
    }
    api = to_api(wf, INFO)
    assert set(api) == {"1", "5", "8"}  # reroute, bypassed, muted, primitive and note nodes are gone
    assert api["5"] == {"inputs": {"seed": 1, "steps": 8, "extra": 0.5, "model": ["1", 0]}, "class_type": "Sampler",
                        "_meta": {"title": "My sampler"}}
    assert api["8"]["inputs"] == {"prefix": "v", "format": "auto", "format.codec": "auto", "codec": "auto", "x": ["5", 0]}
    assert api["8"]["_meta"]["title"] == "Save Video"


def test_widget_converted_to_input_sends_the_link():
    wf = {"nodes": [_node(1, "Loader", ["a.gguf"]),
                    _node(2, "Sampler", [1, "fixed", 4, 0.5], inputs=[
                        {"name": "model", "type": "MODEL", "link": 1},
                        {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 2}]),
                    _node(3, "Sampler", [5, "fixed", 4, 0.5], inputs=[{"name": "model", "type": "MODEL", "link": 3}])],
          "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 3, 0, 2, 1, "INT"], [3, 1, 0, 3, 0, "MODEL"]]}
    assert to_api(wf, INFO)["2"]["inputs"]["seed"] == ["3", 0]


def test_unknown_node_types_are_refused_with_the_fix():
    with pytest.raises(WorkflowError, match="not installed in this ComfyUI: NoSuch.*Install Missing"):
        to_api({"nodes": [_node(1, "NoSuch")], "links": []}, INFO)


def test_an_upload_buttons_stored_value_is_skipped():
    """LoadImage / LoadVideo: frontend 1.49 stores the upload button's value ("image", for both) after the file name
    (seen in the browser: `LiteGraph.createNode('LoadVideo').serialize().widgets_values` is [null, "image"]);
    the API prompt takes only the file (test_browser.py compares with app.graphToPrompt())."""
    video = {"input": {"required": {"file": ["COMBO", {"options": [], "video_upload": True}]}},
             "input_order": {"required": ["file"]}, "output": ["VIDEO"], "display_name": "Load Video"}
    image = {"input": {"required": {"image": [[], {"image_upload": True}]}}, "input_order": {"required": ["image"]},
             "output": ["IMAGE", "MASK"], "display_name": "Load Image"}
    assert widget_values_for(video, {"file": "clip.mp4"}) == ["clip.mp4", "image"]
    assert widget_values_for(image, {"image": "ref.png"}) == ["ref.png", "image"]
    assert read_widget_values(video, ["clip.mp4", "image"]) == {"file": "clip.mp4"}
    with pytest.raises(WorkflowError):
        read_widget_values(video, ["clip.mp4"])  # a file written without the button's value is refused as stale
    api = to_api({"nodes": [_node(1, "LoadVideo", ["clip.mp4", "image"])], "links": []}, {"LoadVideo": video})
    assert api == {"1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}, "_meta": {"title": "Load Video"}}}
