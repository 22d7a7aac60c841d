"""MSD (max sum of distances) as a diversifier plugin: spec block, graph node, lowering and
explain hooks. Its operator is `blendspec.ops.msd.msd` (torch) and `blend_msd` in greedy.c."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from blendspec.diversity.base import FeatureDiversifier, Params
from blendspec.spec.base import Formula, Probability, Relevance

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops import GreedyConstraints, Selection


class Msd(FeatureDiversifier):
    """Max sum of distances: relevance plus the summed distance 1 − ⟨φ_i, φ_s⟩ to the slate."""

    op: ClassVar[str] = "msd"
    summary: ClassVar[str] = "Max sum of distances to the slate so far (DESIGN §3.7b)."

    algorithm: Literal["msd"]
    similarity: Formula
    theta: Probability = 0.5
    relevance: Relevance = "zscore"

    def node_attrs(self) -> dict[str, Any]:
        return {"theta": self.theta}

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
        from blendspec.ops.msd import msd

        assert features is not None
        return msd(
            relevance, features, mask, constraints, slate_length=attrs["length"],
            theta=attrs["theta"], trace=trace,
        )  # fmt: skip

    @classmethod
    def describe(cls, params: Params) -> str:
        return f"θ={params['theta']:g}"

    @classmethod
    def relevance_coefficient(cls, params: Params, stopped: bool) -> float:
        return float(params["theta"])

    @classmethod
    def diversity_detail(
        cls, params: Params, t: int, term: float, stopped: bool
    ) -> tuple[str | None, float | None]:
        """The summed distance to the placed items: the term is (1−θ) times it."""
        coef = 1.0 - float(params["theta"])
        return "distance sum", (term / coef if coef and t else None)
