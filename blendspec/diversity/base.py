"""What a diversifier is: one class per algorithm that carries its behaviour at every stage.

A diversifier is the spec's `diversity` block (a frozen pydantic model whose `algorithm` tag picks
the class) *and* everything the rest of blendspec needs to know about that algorithm: the graph
operator it compiles to and the node's attributes, how that node lowers to an operator of
`blendspec.ops`, how `blend explain` reads its trace, what `blend diff` compares. The stages ask
the class (through the registry in `blendspec.diversity`) instead of switching on the algorithm,
so adding one is a new module plus its operator (docs/architecture.md walks through it).

The spec layer imports these classes (they are the model's `diversity` union), so a module here
must not import torch, numpy or the operators at import time: `select` imports `blendspec.ops`
when a graph is lowered, the explain hooks work on the arrays they are handed.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from blendspec.spec.base import Expr, Model

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops import GreedyConstraints, Selection

Params = Mapping[str, Any]
"""A selection node's attributes without `length`, plus `relevance` (the normalisation) for a
diversifier that reads features: what `blend explain` records as the algorithm's parameters."""


class Diversifier(Model):
    """A `diversity` block. Subclasses declare `algorithm: Literal["<name>"]` and their
    parameters as pydantic fields (their ranges are the spec's checks), then fill in the hooks."""

    op: ClassVar[str]
    """The graph operator the block compiles to (lowered by `select`)."""
    summary: ClassVar[str]
    """One line for the operator registry and `blend graph`: what the operator computes."""
    uses_features: ClassVar[bool] = True
    """Whether the operator reads a similarity feature map (the `similarity` formula): its node
    then takes (relevance, features, mask, constraints…), else (relevance, mask, constraints…)."""
    feature_bias: ClassVar[bool] = False
    """Whether the feature map carries the constant coordinate 1 (SSD: ⟨φ_i, φ_j⟩ = 1 + sim)."""
    compiled_loop: ClassVar[bool] = True
    """Whether `ops/csrc/greedy.c` has a loop for it (the operator then takes it on CPU, and the
    tests check that it does)."""

    @classmethod
    def name(cls) -> str:
        """The `algorithm` tag, read off the field's `Literal` (declared once, there)."""
        (tag,) = typing.get_args(cls.model_fields["algorithm"].annotation)
        return str(tag)

    # ---------------------------------------------------------------- spec

    def similarity_formula(self) -> Expr | None:
        """The similarity formula the operator's feature map is built from (None without one)."""
        return None

    def relevance_method(self) -> str | None:
        """How utility is normalised into the operator's relevance (None: utility as is)."""
        return None

    def windows(self) -> Iterator[tuple[str, int]]:
        """(field, window) of each look-back window, for the check that a window can bind."""
        return iter(())

    # ---------------------------------------------------------------- compile

    def node_attrs(self) -> dict[str, Any]:
        """The operator node's attributes besides `length` (golden graph dumps show them in this
        order)."""
        return {}

    # ---------------------------------------------------------------- lower

    @classmethod
    def select(
        cls,
        attrs: Params,
        relevance: Tensor,
        features: Tensor | None,
        mask: Tensor,
        constraints: GreedyConstraints | None,
        *,
        trace: bool,
    ) -> Selection:
        """Run the operator on a padded batch (node attributes `attrs`, `length` included);
        `constraints` is None when the spec has no in-loop constraint."""
        raise NotImplementedError(f"diversifier `{cls.name()}` has no lowering")

    # ---------------------------------------------------------------- explain

    @classmethod
    def describe(cls, params: Params) -> str:
        """The parameters as `blend explain`'s header shows them."""
        return ""

    @classmethod
    def relevance_coefficient(cls, params: Params, stopped: bool) -> float:
        """The factor between relevance and the score's relevance term."""
        return 1.0

    @classmethod
    def diversity_detail(
        cls, params: Params, t: int, term: float, stopped: bool
    ) -> tuple[str | None, float | None]:
        """The diversity term in the algorithm's own quantity: (what it is, its value)."""
        return None, None

    @classmethod
    def context_window(cls, params: Params) -> int | None:
        """How many earlier positions the diversity term conditions on (None: all of them)."""
        return None

    @classmethod
    def stopped_from(
        cls,
        params: Params,
        steps: Mapping[str, Any],
        relevance: Any,
        picks: Sequence[int],
        early_stop: bool,
    ) -> int | None:
        """The first step from which the operator stopped diversifying (None: it never did)."""
        return None


class FeatureDiversifier(Diversifier):
    """A diversifier over a similarity feature map: its subclasses declare `similarity:
    Formula` and `relevance: Relevance` fields (each where it wants them in its field order)."""

    if TYPE_CHECKING:
        similarity: Expr
        relevance: str

    def similarity_formula(self) -> Expr | None:
        return self.similarity

    def relevance_method(self) -> str | None:
        return self.relevance

    @classmethod
    def diversity_detail(
        cls, params: Params, t: int, term: float, stopped: bool
    ) -> tuple[str | None, float | None]:
        return None, None
