"""Old flat module paths, kept importable after the modules moved into their stage's package.

Scripts written against the flat layout (`from blendspec.run import run`, `blendspec.dump`,
`blendspec.compile`, …) keep working: importing an old path gives the module at its new home
(the same module object, not a copy), so there is one definition of everything and no shim file
per module. In-repo code imports the new homes; tests/test_layers.py checks every alias.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

MOVED: dict[str, str] = {
    "blendspec.checks": "blendspec.spec.checks",
    "blendspec.comments": "blendspec.spec.comments",
    "blendspec.compile": "blendspec.compiler.compile",
    "blendspec.console": "blendspec.io.console",
    "blendspec.diagnostics": "blendspec.spec.diagnostics",
    "blendspec.diff": "blendspec.review.diff",
    "blendspec.diff_render": "blendspec.review.render",
    "blendspec.dump": "blendspec.io.dump",
    "blendspec.emit": "blendspec.spec.emit",
    "blendspec.explore": "blendspec.policy.explore",
    "blendspec.export": "blendspec.serve.export",
    "blendspec.forms": "blendspec.spec.forms",
    "blendspec.graph": "blendspec.compiler.graph",
    "blendspec.loader": "blendspec.spec.loader",
    "blendspec.lower": "blendspec.compiler.lower",
    "blendspec.model": "blendspec.spec.model",
    "blendspec.ope": "blendspec.policy.ope",
    "blendspec.outputs": "blendspec.io.outputs",
    "blendspec.policy_report": "blendspec.policy.report",
    "blendspec.ray_engine": "blendspec.engine.ray_engine",
    "blendspec.report": "blendspec.engine.report",
    "blendspec.run": "blendspec.engine.run",
    "blendspec.sample": "blendspec.io.sample",
    "blendspec.schema": "blendspec.spec.schema",
    "blendspec.simulate": "blendspec.sim.world",
    "blendspec.syntax": "blendspec.spec.syntax",
}
"""Old path → new home. `blendspec.policy` and `blendspec.explain` are packages at their old
paths and hand out their former names themselves."""


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new home."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        # The import system keeps the returned module's own __name__ and __spec__ (it only
        # fills in attributes that are missing), so the alias is the new module itself.
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when its new home was imported."""


def install() -> None:
    """Append the alias finder once (after the path finder: a real module always wins)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
