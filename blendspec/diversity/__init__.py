"""The diversifiers, one plugin class each, registered once: here.

Everything that depends on the algorithm asks this registry: the spec model's `diversity` union
(`Diversity`), the checks (`similarity_formula`, `windows`), the compiler (`op`, `node_attrs`,
`feature_bias`), the graph's operator registry (`summary`), the lowering (`select`), `blend
explain` (the explain hooks) and `blend diff` (the parameters, the similarity). See
`blendspec.diversity.base` for the contract and docs/architecture.md for adding one.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from blendspec.diversity.base import Diversifier, FeatureDiversifier, Params
from blendspec.diversity.cover import Cover
from blendspec.diversity.dpp import Dpp
from blendspec.diversity.greedy import NoDiversity
from blendspec.diversity.mmr import Mmr
from blendspec.diversity.msd import Msd
from blendspec.diversity.ssd import Ssd

PLUGINS: tuple[type[Diversifier], ...] = (Ssd, Dpp, Mmr, Msd, Cover, NoDiversity)
"""Every diversifier, in the order the spec schema lists them."""

DIVERSIFIERS: dict[str, type[Diversifier]] = {p.name(): p for p in PLUGINS}
"""Diversifiers by their `algorithm` tag."""

BY_OP: dict[str, type[Diversifier]] = {p.op: p for p in PLUGINS}
"""Diversifiers by the graph operator they compile to."""

# Union over a tuple: the plugins are listed once, in PLUGINS (no `A | B` spelled out here).
Diversity = Annotated[Union[PLUGINS], Field(discriminator="algorithm")]  # noqa: UP007
"""The spec's `diversity` block: one of the plugins, picked by its `algorithm` tag."""

__all__ = [
    "BY_OP",
    "DIVERSIFIERS",
    "PLUGINS",
    "Cover",
    "Diversifier",
    "Diversity",
    "Dpp",
    "FeatureDiversifier",
    "Mmr",
    "Msd",
    "NoDiversity",
    "Params",
    "Ssd",
]
