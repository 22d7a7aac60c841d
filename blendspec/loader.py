"""Moved to :mod:`blendspec.spec.loader`; this path re-exports it, because README shows
``from blendspec.loader import load_spec`` as public API (docs/architecture.md)."""

from blendspec.spec.loader import *  # noqa: F403
from blendspec.spec.loader import LoadedSpec, load_source, load_spec, load_text

__all__ = ["LoadedSpec", "load_source", "load_spec", "load_text"]
