"""Soft spacing of a sensitive set (DESIGN §3.5) as an in-loop constraint plugin."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from blendspec.constraints.base import Attrs, Cause, Declared, InLoopConstraint
from blendspec.spec.base import Coefficient, Window

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops.constraints import Constraint


class Spacing(InLoopConstraint):
    """Soft spacing of one sensitive set (a flag input), DESIGN §3.5."""

    op: ClassVar[str] = "soft_spacing"
    summary: ClassVar[str] = "Soft spacing of one sensitive set (DESIGN §3.5)."
    input_kind: ClassVar[str] = "flag"
    port: ClassVar[str] = "Flag"
    described_as: ClassVar[str] = "soft spacing"

    window: Window
    coefficient: Coefficient

    @classmethod
    def declared(cls, spec: Any) -> Iterator[Declared]:
        for name, block in spec.spacing.items():
            path = ("spacing", name)
            yield Declared(block, path, name, path, input_is_key=True)

    def node_attrs(self, declared: Declared) -> dict[str, Any]:
        return {"set": declared.input, "window": self.window, "coefficient": self.coefficient}

    def windows(self) -> Iterator[tuple[str, int]]:
        yield "window", self.window

    @classmethod
    def lower(cls, attrs: Attrs, value: Tensor) -> Constraint:
        from blendspec.ops import SoftSpacing

        return SoftSpacing(value, attrs["window"], attrs["coefficient"])

    @classmethod
    def penalty_label(cls, attrs: Attrs) -> str | None:
        return f"spacing {attrs['set']}"

    @classmethod
    def explain_data(cls, record: Constraint, n: int) -> Any:
        return record.flags[0, :n].detach().double().numpy() > 0, record.window, record.coefficient

    @classmethod
    def causes(cls, data: Any, picks: Sequence[int], t: int, i: int) -> list[Cause]:
        """Each flagged item in the last `window` positions, weighted 1/d at distance d."""
        flags, window, coefficient = data
        if not flags[i]:
            return []
        found = []
        for d in range(1, min(window, t) + 1):
            j = picks[t - d]
            if j >= 0 and flags[j]:
                found.append(Cause(t - d, j, coefficient / d))
        return found
