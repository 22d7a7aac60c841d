"""Category caps (DESIGN §3.8) as an in-loop constraint plugin."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field

from blendspec.constraints.base import Attrs, Declared, InLoopConstraint
from blendspec.spec.base import MAX_CAP, Window, _not_bool

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops.constraints import Constraint


class Cap(InLoopConstraint):
    """At most `max` items of one category in any `window` consecutive slots, DESIGN §3.8."""

    op: ClassVar[str] = "cap"
    summary: ClassVar[str] = "At most k of one category in any window of w slots (DESIGN §3.8)."
    input_kind: ClassVar[str] = "category"
    port: ClassVar[str] = "Category"
    described_as: ClassVar[str] = "a cap"
    reach: ClassVar[int] = 0

    max: Annotated[int, Field(ge=1, le=MAX_CAP), BeforeValidator(_not_bool)]
    window: Window

    @classmethod
    def declared(cls, spec: Any) -> Iterator[Declared]:
        for name, block in spec.rules.caps.items():
            path = ("rules", "caps", name)
            yield Declared(block, path, name, path, input_is_key=True)

    def node_attrs(self, declared: Declared) -> dict[str, Any]:
        return {"input": declared.input, "max": self.max, "window": self.window}

    def windows(self) -> Iterator[tuple[str, int]]:
        yield "window", self.window

    @classmethod
    def lower(cls, attrs: Attrs, value: Tensor) -> Constraint:
        from blendspec.ops import CategoryCap

        return CategoryCap(value, attrs["max"], attrs["window"])

    @classmethod
    def explain_data(cls, record: Constraint, n: int) -> Any:
        return record.categories[0, :n].numpy(), record.max_count, record.window

    @classmethod
    def broken(cls, attrs: Attrs, data: Any, picks: Sequence[int], t: int, i: int) -> str | None:
        """Recounted from the picks: the same category's items in the window ending at t."""
        categories, max_count, window = data
        recent = [q for q in range(max(0, t - window + 1), t) if picks[q] >= 0]
        same = [q for q in recent if categories[picks[q]] == categories[i]]
        if len(same) + 1 <= max_count:
            return None
        where = ", ".join(f"#{q}" for q in same)
        return f"{attrs['input']} ≤ {max_count} in {window} ({len(same)} at {where})"
