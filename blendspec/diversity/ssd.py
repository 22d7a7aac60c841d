"""SSD as a diversifier plugin: spec block, graph node, lowering and explain hooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from blendspec.diversity.base import FeatureDiversifier, Params
from blendspec.spec.base import Formula, Positive, Probability, Relevance, Tolerance, Window

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops import GreedyConstraints, Selection


class Ssd(FeatureDiversifier):
    """Sliding Spectrum Decomposition (Huang et al. 2021), stabilised variant by default."""

    op: ClassVar[str] = "ssd"
    summary: ClassVar[str] = "Sliding Spectrum Decomposition (DESIGN §3.3)."
    feature_bias: ClassVar[bool] = True

    algorithm: Literal["ssd"]
    similarity: Formula
    theta: Probability = 0.5
    gamma: Positive = 1.0
    window: Window = 10
    variant: Literal["stabilized", "volume"] = "stabilized"
    relevance: Relevance = "zscore"
    epsilon: Tolerance = 1e-6

    def windows(self) -> Iterator[tuple[str, int]]:
        yield "window", self.window

    def node_attrs(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "theta": self.theta,
            "gamma": self.gamma,
            "variant": self.variant,
            "epsilon": self.epsilon,
        }

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
        return ops.ssd(
            relevance, features, mask, constraints, slate_length=attrs["length"],
            window=attrs["window"], theta=attrs["theta"], gamma=attrs["gamma"],
            variant=attrs["variant"], epsilon=attrs["epsilon"], trace=trace,
        )  # fmt: skip

    @classmethod
    def describe(cls, params: Params) -> str:
        p = params
        return f"{p['variant']}, θ={p['theta']:g}, γ={p['gamma']:g}, window={p['window']}"

    @classmethod
    def relevance_coefficient(cls, params: Params, stopped: bool) -> float:
        return float(params["theta"])

    @classmethod
    def diversity_detail(
        cls, params: Params, t: int, term: float, stopped: bool
    ) -> tuple[str | None, float | None]:
        """The residual norm ‖v_i‖ (times the window's volume for that variant): the term is
        (1−θ)·γ times it."""
        coef = (1.0 - float(params["theta"])) * float(params["gamma"])
        kind = "residual norm × volume" if params["variant"] == "volume" else "residual norm"
        return kind, (term / coef if coef else None) if t else None

    @classmethod
    def context_window(cls, params: Params) -> int | None:
        return params.get("window")
