"""The semantic-ID prefix-overlap penalty (DESIGN §3.6) as an in-loop constraint plugin."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field

from blendspec.constraints.base import Attrs, Cause, Declared, InLoopConstraint, Problem
from blendspec.spec.base import MAX_INPUT_SIZE, Coefficient, Name, Window, _not_bool

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops.constraints import Constraint


class SemanticIdPenalty(InLoopConstraint):
    """Penalty on semantic-ID prefix overlap with recent slate items, DESIGN §3.6."""

    op: ClassVar[str] = "semantic_id_penalty"
    summary: ClassVar[str] = "Semantic-ID prefix-overlap penalty (DESIGN §3.6)."
    input_kind: ClassVar[str] = "semantic_id"
    port: ClassVar[str] = "Codes"
    described_as: ClassVar[str] = "the semantic-ID penalty"

    input: Name
    window: Window
    min_prefix: Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE), BeforeValidator(_not_bool)] = 1
    coefficient: Coefficient

    @classmethod
    def declared(cls, spec: Any) -> Iterator[Declared]:
        block = spec.semantic_id_penalty
        if block is not None:
            path = ("semantic_id_penalty",)
            yield Declared(block, path, block.input, (*path, "input"), input_is_key=False)

    def node_attrs(self, declared: Declared) -> dict[str, Any]:
        return {
            "window": self.window,
            "min_prefix": self.min_prefix,
            "coefficient": self.coefficient,
        }

    def windows(self) -> Iterator[tuple[str, int]]:
        yield "window", self.window

    def problems(self, declared: Declared, declared_input: Any) -> Iterator[Problem]:
        if (
            declared_input is not None
            and declared_input.kind == "semantic_id"
            and self.min_prefix > (declared_input.size or 0)
        ):
            yield Problem(
                (*declared.path, "min_prefix"),
                "E306",
                f"`min_prefix` is {self.min_prefix}, but `{self.input}` has only "
                f"{declared_input.size} levels",
            )

    @classmethod
    def lower(cls, attrs: Attrs, value: Tensor) -> Constraint:
        from blendspec.ops import SemanticIdPenalty as Record

        return Record(value, attrs["window"], attrs["min_prefix"], attrs["coefficient"])

    @classmethod
    def penalty_label(cls, attrs: Attrs) -> str | None:
        return "semantic-id"

    @classmethod
    def explain_data(cls, record: Constraint, n: int) -> Any:
        codes = record.codes[0, :n].numpy()
        return codes, record.window, record.min_prefix, record.coefficient

    @classmethod
    def causes(cls, data: Any, picks: Sequence[int], t: int, i: int) -> list[Cause]:
        """Each item in the last `window` positions sharing a prefix of at least `min_prefix`
        levels, weighted lcp / (d · L) at distance d."""
        codes, window, min_prefix, coefficient = data
        levels = codes.shape[1]
        found = []
        for d in range(1, min(window, t) + 1):
            j = picks[t - d]
            if j < 0:
                continue
            lcp = _lcp(codes[i], codes[j])
            if lcp >= min_prefix and lcp > 0:
                found.append(Cause(t - d, j, coefficient * lcp / (d * levels)))
        return found


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=True):
        if x != y:
            break
        n += 1
    return n
