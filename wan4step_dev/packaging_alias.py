"""Load this repository as a ComfyUI custom-node package without a second copy of the engine.

Tests and benchmarks import the engine as top-level `wan4step`, and the node
package as ComfyUI would (`<pack>.nodes`, which imports `<pack>.wan4step`).
Two copies of the engine would mean two `QuantWeight`/`QuantLinear` classes and
failing isinstance checks; this aliases `<pack>.wan4step.*` to `wan4step.*`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class _EngineAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.prefix or fullname.startswith(self.prefix + "."):
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return importlib.import_module("wan4step" + spec.name[len(self.prefix) :])

    def exec_module(self, module) -> None:
        pass


def load_pack(name: str) -> types.ModuleType:
    """Import the repository as the custom-node package `name` (once)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    sys.meta_path.insert(0, _EngineAlias(f"{name}.wan4step"))
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
