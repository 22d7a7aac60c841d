"""What an in-loop constraint is: one class per kind that carries its behaviour at every stage.

An in-loop constraint acts inside the greedy loop besides the diversifier's own score: a penalty
subtracted at each step (soft spacing, the semantic-ID penalty) or a rule that excludes
candidates (caps). Each kind is the spec block that declares it (a frozen pydantic model) and
everything else blendspec needs about it: where a spec declares it and which input it reads (the
checks), the graph operator and attributes it compiles to, the `blendspec.ops` record it lowers
to (whose class says whether the compiled loops know it), and how `blend explain` attributes its
penalty or exclusion to earlier slate positions. The stages iterate over the registry in
`blendspec.constraints` instead of naming the kinds.

Like the diversifiers, these classes belong to the spec layer: nothing here imports torch, numpy
or the operators at import time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from blendspec.spec.base import Model

if TYPE_CHECKING:
    from torch import Tensor

    from blendspec.ops.constraints import Constraint

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Declared:
    """One constraint block of a spec, where it is written and what it reads."""

    block: InLoopConstraint
    path: PathKey
    """The block's path in the spec (its key's span is where the graph node points)."""
    input: str
    """The declared input the constraint reads."""
    input_path: PathKey
    """Where that input is named (the block's key for `spacing NAME` and caps)."""
    input_is_key: bool


@dataclass(frozen=True)
class Problem:
    """A check's finding, as data: the checks pass renders it with the spec's spans."""

    path: PathKey
    code: str
    message: str


@dataclass(frozen=True)
class Cause:
    """An earlier slate position behind a penalty: its position, candidate index and share."""

    position: int
    candidate: int
    amount: float


Attrs = Mapping[str, Any]


class InLoopConstraint(Model):
    """A spec block declaring one in-loop constraint; subclasses fill in the hooks."""

    op: ClassVar[str]
    """The graph operator the block compiles to."""
    summary: ClassVar[str]
    """One line for the operator registry and `blend graph`."""
    input_kind: ClassVar[str]
    """The kind of declared input it reads (`flag`, `semantic_id`, `category`)."""
    port: ClassVar[str]
    """The graph type of that input (`Flag`, `Codes`, `Category`)."""
    described_as: ClassVar[str]
    """How the checks name it (`soft spacing`, `a cap`)."""
    reach: ClassVar[int] = 1
    """Its window reaches back T − reach positions at most (1 for a penalty over earlier picks,
    0 for a cap, whose window includes the position being filled)."""

    @classmethod
    def declared(cls, spec: Any) -> Iterator[Declared]:
        """The blocks of this kind that the spec (a `Spec`) declares, in its order. (The model
        imports these classes, so they name it only in words: a type-only import back would be
        a cycle.)"""
        raise NotImplementedError

    def node_attrs(self, declared: Declared) -> dict[str, Any]:
        """The graph node's attributes (golden graph dumps show them in this order)."""
        raise NotImplementedError

    def windows(self) -> Iterator[tuple[str, int]]:
        """(field, window) of each look-back window, for the check that a window can bind."""
        return iter(())

    def problems(self, declared: Declared, declared_input: Any) -> Iterator[Problem]:
        """What the block's own checks find, beyond its input's existence and kind
        (`declared_input` is the spec's `Input` of that name, None when there is none)."""
        return iter(())

    @classmethod
    def lower(cls, attrs: Attrs, value: Tensor) -> Constraint:
        """The `blendspec.ops` record of a node (its attributes and its input's tensor)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- explain

    @classmethod
    def penalty_label(cls, attrs: Attrs) -> str | None:
        """How `blend explain` names its penalty (None for a kind without one, such as caps)."""
        return None

    @classmethod
    def explain_data(cls, record: Constraint, n: int) -> Any:
        """What `causes` and `broken` read, from the lowered record (the request's first n
        candidates, as numpy)."""
        return None

    @classmethod
    def causes(cls, data: Any, picks: Sequence[int], t: int, i: int) -> list[Cause]:
        """The earlier positions behind candidate i's penalty at step t."""
        return []

    @classmethod
    def broken(cls, attrs: Attrs, data: Any, picks: Sequence[int], t: int, i: int) -> str | None:
        """Why taking candidate i at step t would break this rule (None when it would not)."""
        return None
