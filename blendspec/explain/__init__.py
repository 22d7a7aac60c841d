"""`blend explain`: why each item of one request's slate landed where it did.

The tracing lowering, the per-step breakdown and its renderings are in ``breakdown``.
``from blendspec.explain import explain, trace_request`` (the path before the package existed)
keeps working: those names are looked up in ``breakdown`` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    # import_module, not `from blendspec.explain import breakdown`: that form asks this very
    # __getattr__ for `breakdown` first, and would recurse.
    breakdown = importlib.import_module("blendspec.explain.breakdown")

    if not name.startswith("_") and hasattr(breakdown, name):
        return getattr(breakdown, name)
    raise AttributeError(f"module 'blendspec.explain' has no attribute {name!r}")
