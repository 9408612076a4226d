"""Development tooling of ComfyUI-Wan4Step: never imported by the pack, never shipped.

Tests, benchmarks, the demo and the workflow builder import it with the repository on
`sys.path`; ComfyUI loading the pack never does (tests/integration/test_dev_modules.py
checks `sys.modules` after a real load), and the Registry zip leaves it out (`.comfyignore`,
tests/integration/test_registry_pack.py).

- `comfy_server`: find a ComfyUI checkout and run it headless with this pack installed;
- `packaging_alias`: import the repository as a custom-node package sharing one engine copy;
- `workflow_cli`: regenerate / check `workflows/api/` from `workflows/` (`python -m wan4step_dev.workflow_cli`);
- `fixtures`: files laid out as publishers write them (tiny model set, DiT layouts, LoRAs).
"""
