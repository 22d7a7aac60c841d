"""COVER (facility-location coverage) as a diversifier plugin: spec block, graph node, lowering
and explain hooks. Its operator is `blendspec.ops.cover.cover` (torch) and `blend_cover` in greedy.c."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from blendspec.diversity.base import FeatureDiversifier, Params
from blendspec.spec.base import Formula, Probability, Relevance, _not_bool

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops import GreedyConstraints, Selection

Exponent = Annotated[float, Field(gt=0.0, le=1.0), BeforeValidator(_not_bool)]
"""γ of the coverage: in (0, 1], where the gain is submodular (1: plain summed similarity)."""


class Cover(FeatureDiversifier):
    """Facility-location coverage: relevance plus how much more of the request i would cover."""

    op: ClassVar[str] = "cover"
    summary: ClassVar[str] = "Facility-location coverage gain (DESIGN §3.7b)."

    algorithm: Literal["cover"]
    similarity: Formula
    theta: Probability = 0.5
    gamma: Exponent = 0.5
    relevance: Relevance = "zscore"

    def node_attrs(self) -> dict[str, Any]:
        return {"theta": self.theta, "gamma": self.gamma}

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
        from blendspec.ops.cover import cover

        assert features is not None
        return cover(
            relevance, features, mask, constraints, slate_length=attrs["length"],
            theta=attrs["theta"], gamma=attrs["gamma"], trace=trace,
        )  # fmt: skip

    @classmethod
    def describe(cls, params: Params) -> str:
        return f"θ={params['theta']:g}, γ={params['gamma']:g}"

    @classmethod
    def relevance_coefficient(cls, params: Params, stopped: bool) -> float:
        return float(params["theta"])

    @classmethod
    def diversity_detail(
        cls, params: Params, t: int, term: float, stopped: bool
    ) -> tuple[str | None, float | None]:
        """The coverage gain Σ_j (acc_j + S⁺_ij)^γ − Σ_j acc_j^γ: the term is (1−θ) times it."""
        coef = 1.0 - float(params["theta"])
        return "coverage gain", (term / coef if coef else None)
