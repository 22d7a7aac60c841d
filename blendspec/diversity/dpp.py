"""DPP as a diversifier plugin: spec block, graph node, lowering and explain hooks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from blendspec.diversity.base import FeatureDiversifier, Params
from blendspec.spec.base import Formula, Positive, Relevance, Tolerance, Window

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops import GreedyConstraints, Selection


class Dpp(FeatureDiversifier):
    """Greedy MAP of a DPP by incremental Cholesky (Chen et al. 2018), optionally windowed."""

    op: ClassVar[str] = "dpp"
    summary: ClassVar[str] = "DPP greedy MAP by incremental Cholesky (DESIGN §3.4)."

    algorithm: Literal["dpp"]
    similarity: Formula
    alpha: Positive = 1.0
    window: Window | None = None
    relevance: Relevance = "zscore"
    epsilon: Tolerance = 1e-6

    def windows(self) -> Iterator[tuple[str, int]]:
        if self.window is not None:
            yield "window", self.window

    def node_attrs(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "window": self.window, "epsilon": self.epsilon}

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
        return ops.dpp(
            relevance, features, mask, constraints, slate_length=attrs["length"],
            alpha=attrs["alpha"], window=attrs["window"], epsilon=attrs["epsilon"], trace=trace,
        )  # fmt: skip

    @classmethod
    def describe(cls, params: Params) -> str:
        window = f", window={params['window']}" if params.get("window") else ""
        return f"α={params['alpha']:g}{window}, ε={params['epsilon']:g}"

    @classmethod
    def relevance_coefficient(cls, params: Params, stopped: bool) -> float:
        return 1.0 if stopped else 2.0 * float(params["alpha"])

    @classmethod
    def diversity_detail(
        cls, params: Params, t: int, term: float, stopped: bool
    ) -> tuple[str | None, float | None]:
        """The log-gain log d_i² (none once the request stopped diversifying)."""
        return ("log-gain", None) if stopped else ("log-gain", term)

    @classmethod
    def context_window(cls, params: Params) -> int | None:
        return params.get("window")

    @classmethod
    def stopped_from(
        cls,
        params: Params,
        steps: Mapping[str, Any],
        relevance: Any,
        picks: Sequence[int],
        early_stop: bool,
    ) -> int | None:
        """First step from which DPP filled by relevance (it stops for good, so a suffix).

        The trace then holds ``r`` instead of ``2α·r`` as the relevance term (an exact float64
        product, so the comparison is exact) and 0 as the diversity term; with 2α = 1 or an
        all-zero relevance only the latter tells the two apart.
        """
        if not early_stop:
            return None
        import numpy as np

        two_alpha = 2.0 * float(params["alpha"])
        score, rel, div = steps["score"], steps["relevance"], steps["diversity"]

        def looks_stopped(t: int) -> bool:
            open_ = np.isfinite(score[t])
            r = relevance[open_]
            if two_alpha != 1.0 and np.any(r != 0):
                return bool(np.array_equal(rel[t][open_], r))
            return not div[t][open_].any()

        start = None
        for t in reversed(range(score.shape[0])):
            if picks[t] < 0:
                continue
            if not looks_stopped(t):
                break
            start = t
        return start
