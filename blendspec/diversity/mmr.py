"""MMR as a diversifier plugin: spec block, graph node, lowering and explain hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from blendspec.diversity.base import FeatureDiversifier, Params
from blendspec.spec.base import Formula, Probability, Relevance

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops import GreedyConstraints, Selection


class Mmr(FeatureDiversifier):
    """Maximal Marginal Relevance (Carbonell & Goldstein 1998)."""

    op: ClassVar[str] = "mmr"
    summary: ClassVar[str] = "Maximal Marginal Relevance (DESIGN §3.7)."

    algorithm: Literal["mmr"]
    similarity: Formula
    lambda_: Probability = Field(default=0.5, alias="lambda")
    relevance: Relevance = "zscore"

    def node_attrs(self) -> dict[str, Any]:
        return {"lam": self.lambda_}

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
        from blendspec import ops

        assert features is not None
        return ops.mmr(
            relevance, features, mask, constraints, slate_length=attrs["length"],
            lam=attrs["lam"], trace=trace,
        )  # fmt: skip

    @classmethod
    def describe(cls, params: Params) -> str:
        return f"λ={params['lam']:g}"

    @classmethod
    def relevance_coefficient(cls, params: Params, stopped: bool) -> float:
        return float(params["lam"])

    @classmethod
    def diversity_detail(
        cls, params: Params, t: int, term: float, stopped: bool
    ) -> tuple[str | None, float | None]:
        """The max similarity to the placed items: the term is −(1−λ) times it."""
        coef = 1.0 - float(params["lam"])
        return "max similarity", (-term / coef if coef and t else None)
