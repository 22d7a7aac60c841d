"""The in-loop constraints, one plugin class per kind, registered once: here.

The checks (input references, windows, unused inputs), the compiler, the graph's operator
registry, the lowering and `blend explain` iterate over `PLUGINS`; see
`blendspec.constraints.base` for the contract and docs/architecture.md for adding a kind.
"""

from __future__ import annotations

from blendspec.constraints.base import Cause, Declared, InLoopConstraint, Problem
from blendspec.constraints.caps import Cap
from blendspec.constraints.semantic_id import SemanticIdPenalty
from blendspec.constraints.spacing import Spacing

PLUGINS: tuple[type[InLoopConstraint], ...] = (Spacing, SemanticIdPenalty, Cap)
"""Every kind, in the order the loops apply them (penalties are subtracted in this order)."""

BY_OP: dict[str, type[InLoopConstraint]] = {p.op: p for p in PLUGINS}
"""Kinds by the graph operator they compile to."""

__all__ = [
    "BY_OP",
    "PLUGINS",
    "Cap",
    "Cause",
    "Declared",
    "InLoopConstraint",
    "Problem",
    "SemanticIdPenalty",
    "Spacing",
]
