"""Moved to :mod:`blendspec.compiler.compile`; this path re-exports it, because README shows
``from blendspec.compile import compile_graph`` as public API (docs/architecture.md)."""

from blendspec.compiler.compile import *  # noqa: F403
from blendspec.compiler.compile import compile_graph

__all__ = ["compile_graph"]
