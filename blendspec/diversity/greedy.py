"""No diversifier (`diversity none`): greedy by utility under the penalties and caps."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from blendspec.diversity.base import Diversifier, Params

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops import GreedyConstraints, Selection


class NoDiversity(Diversifier):
    """No diversifier: greedy by utility, still under the spec's penalties and caps."""

    op: ClassVar[str] = "greedy"
    summary: ClassVar[str] = (
        "Greedy by relevance under penalties and caps; plain top-T without them."
    )
    uses_features: ClassVar[bool] = False
    compiled_loop: ClassVar[bool] = False  # a sort, or a loop of a few vector ops per step

    algorithm: Literal["none"]

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

        if constraints is None and not trace:  # a sort; the greedy loop only to trace it
            return ops.top_by_relevance(relevance, mask, attrs["length"])
        return ops.greedy_relevance(
            relevance, mask, constraints, slate_length=attrs["length"], trace=trace
        )
