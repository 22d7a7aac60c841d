"""Moved to :mod:`blendspec.compiler.lower`; this path re-exports it, because README shows
``from blendspec.lower import BlendModule`` and ``blendspec.lower.module_for`` /
``request_seeds`` as public API (docs/architecture.md)."""

from blendspec.compiler.lower import *  # noqa: F403
from blendspec.compiler.lower import (
    REQUEST_SEED_KEY,
    BlendModule,
    MissingLowering,
    module_for,
    request_seeds,
)

__all__ = ["REQUEST_SEED_KEY", "BlendModule", "MissingLowering", "module_for", "request_seeds"]
