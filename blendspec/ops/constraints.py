"""Penalties and caps applied inside every greedy loop (DESIGN §3.5, §3.6, §3.8).

Each kind of constraint is one class, a ``Constraint``, that carries everything the loops need
from it: its validation against the batch, its window clamped to the slate, its padded tensors and
its per-chunk running state (``RunningConstraint``). The loops, ``prepare_constraints`` and
``ConstraintState`` only iterate over records, so a new kind is one new class passed in
``GreedyConstraints.extra``: nothing central switches on the kinds. The one place that must know
them is the compiled loop (``csrc/greedy.c``), whose C struct has fields for the three built-in
kinds only; ``Constraint.native`` says whether greedy.c knows a kind, and ``_native.usable``
sends any call carrying a kind it does not know down the torch path. The exported form of the
torch path (one ``torch.while_loop``, ``ops/loop.py``) asks each kind for its running state as
carried tensors (``Constraint.start_carried``, a ``CarriedConstraint``); a kind without that form
runs everywhere but cannot be exported (``NoLoopForm``, naming it).

The running states keep O(N) or O(N*w) state per request so that each step costs a few vectorised
ops, independent of the step index, with no Python work per request. Arithmetic is organised so
that two candidates with identical inputs always get bitwise identical penalties (ties must go to
the lower index), and so that nothing depends on the batch.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Self

import torch
from torch import Tensor

from blendspec.ops._common import dense_ranks, pad_candidates, prefix_ranks, sanitize

if TYPE_CHECKING:
    from blendspec.ops._greedy import Selector


class RunningConstraint:
    """The per-chunk state of one constraint in a lock-step greedy loop.

    A loop asks every record's state, at every step t, for ``penalty(t)`` (the term subtracted
    from each candidate's score) and ``violations()`` (whether taking a candidate now would break
    a rule), picks, then reports the pick with ``update``. The defaults are those of a constraint
    that does neither, so a kind overrides only what it does.
    """

    def penalty(self, t: int) -> Tensor | None:
        """The penalty ``[b, Np]`` at step t in the loop's dtype (subtracted from the score),
        None for a kind that does not penalise (``Constraint.penalizes`` is False)."""
        return None

    def violations(self) -> Tensor | None:
        """``[b, Np]`` 1.0 where taking the candidate now breaks the rule, else 0.0; None for a
        kind that never excludes (``Constraint.excludes`` is False)."""
        return None

    def update(self, t: int, j: Tensor, selector: Selector) -> None:
        """Record the pick ``j`` ``[b, 1]`` of step t (``selector.last_active()`` says whether a
        request still had a candidate to take)."""


class NoLoopForm(TypeError):
    """A constraint kind has no tensor-state form (``Constraint.start_carried``), so a greedy
    loop that carries it cannot be written as a ``torch.while_loop``: it cannot be exported."""


class CarriedConstraint:
    """The tensor-state form of a ``RunningConstraint``: what a greedy loop written as one
    ``torch.while_loop`` (``blendspec/ops/loop.py``, the form ``torch.export`` traces) asks.

    Its running state is a tuple of tensors, the *carry*, that the loop threads through its
    steps: ``init_carry`` gives the state before step 0, ``update`` returns the state after a
    pick. Everything fixed for the loop (prepared tensors, weight tables, parameters) stays in
    attributes. The step ``t`` is a 0-d int64 tensor, never a Python int. Rules of
    ``torch.while_loop``: never write into the carry in place, and keep every carried tensor's
    shape and dtype from step to step. The arithmetic must be the eager state's, operation for
    operation (the exported program gives ``blend run --kernels torch``'s bits): where the eager
    state would slice by t, both forms compute over the full window with zeros. The defaults are
    those of a constraint that neither penalises nor excludes.
    """

    def init_carry(self) -> tuple[Tensor, ...]:
        return ()

    def penalty(self, t: Tensor, carry: tuple[Tensor, ...]) -> Tensor | None:
        """The penalty ``[b, Np]`` at step t (``RunningConstraint.penalty``)."""
        return None

    def violations(self, carry: tuple[Tensor, ...]) -> Tensor | None:
        """``[b, Np]`` 1.0 where taking the candidate now breaks the rule
        (``RunningConstraint.violations``)."""
        return None

    def update(
        self, t: Tensor, j: Tensor, active: Tensor, carry: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        """The carry after the pick ``j`` ``[b, 1]`` of step t; ``active`` ``[b, 1]`` (the loop's
        dtype) is 1.0 where a request still had a candidate to take, else 0.0."""
        return carry


class Constraint(abc.ABC):
    """One kind of in-loop constraint: a frozen dataclass of its inputs and parameters.

    Its tensors are batch-major (``[B, N, ...]``, as the operators receive them). A kind
    implements ``prepare`` and ``start`` and, where it applies, ``validate`` and ``clamp``; its
    class attributes tell the loops what it does:

    * ``penalizes``: ``penalty(t)`` returns a term (one trace component, named by its label);
    * ``excludes``: ``violations()`` returns what a cap-like rule removes from a step's argmax
      (when every candidate violates, the best one is taken and the step counted, DESIGN §3.8);
    * ``native``: greedy.c's loops know this very class. Not inherited (see
      ``__init_subclass__``): a subclass that changed the arithmetic would otherwise be run by C
      code that still does the parent's.
    * ``name``: the stem of its label in ``GreedyConstraints.extra`` (``f"{name}[k]"``), which is
      also its trace name and the field named by its error messages.

    A kind that can be exported also implements ``start_carried``, the tensor-state form of its
    running state (``CarriedConstraint``). Like ``native``, that form is not inherited by a
    subclass that redefines ``start`` (its eager arithmetic) without redefining it too.
    """

    name: ClassVar[str]
    native: ClassVar[bool] = False
    penalizes: ClassVar[bool] = False
    excludes: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "native" not in cls.__dict__:
            cls.native = False
        if "start" in cls.__dict__ and "start_carried" not in cls.__dict__:
            cls.start_carried = Constraint.start_carried  # type: ignore[method-assign]
        if not getattr(cls, "name", ""):
            cls.name = cls.__name__

    def validate(self, shape: tuple[int, int], label: str) -> None:  # noqa: B027
        """Raise ValueError, naming ``label`` and the field, on inputs that do not fit a batch of
        ``shape`` (B, N) or parameters out of range. Runs before anything is computed."""

    def clamp(self, slate_length: int) -> Self:
        """This record with its window clamped to the slate (``clamp_window``); itself if it
        has no window or already fits. Clamping bounds every buffer by min(w, T) for windows
        as long as a spec allows, and makes a window of w >= T the same input as T, bits
        included."""
        return self

    @abc.abstractmethod
    def prepare(self, mask: Tensor, width: int) -> dict[str, Tensor]:
        """Its tensors with padding sanitised and the candidate axis padded to ``width``
        (``padded``), each batch-major so that a chunk of requests is a slice of each. Runs once
        per call: per-request work that the steps would repeat (dense ranks) belongs here."""

    @abc.abstractmethod
    def start(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> RunningConstraint:
        """The running state for one chunk (``tensors`` is ``prepare``'s output for its
        requests) of a loop of ``slate_length`` steps whose scores are ``dtype``."""

    def start_carried(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> CarriedConstraint:
        """``start``'s state in tensor-state form, for the loop that ``torch.export`` traces
        (``CarriedConstraint``). A kind without it cannot be exported (``NoLoopForm``)."""
        raise NoLoopForm(f"constraint kind {type(self).__name__} has no loop form")

    @classmethod
    def has_loop_form(cls) -> bool:
        return cls.start_carried is not Constraint.start_carried


def clamp_window(window: int, slate_length: int) -> int:
    """min(window, T), with T at least 1 (0 stays 0).

    A window of w >= T acts exactly as one of T: sums over the min(w, t) previous positions,
    t < T, and a count over the trailing window never loses a position within T steps either
    way."""
    return min(window, max(slate_length, 1))


def padded(x: Tensor, mask: Tensor, width: int, fill: float | bool | int = 0) -> Tensor:
    """``x`` ``[B, N, ...]`` with its padding rows set to ``fill`` (padding may hold NaN or
    garbage) and its candidate axis padded to ``width`` with ``fill``."""
    return pad_candidates(sanitize(x, mask, fill), width, fill)


def _int_at_least(value: object, least: int) -> bool:
    return isinstance(value, int) and value >= least


@dataclass(frozen=True)
class SoftSpacing(Constraint):
    """Soft spacing for one sensitive set R (§3.5).

    At position t a candidate in R pays ``coefficient * sum_{d=1..window} (1/d) [s_{t-d} in R]``.
    ``flags`` is ``[B, N]`` bool (True = in R).
    """

    flags: Tensor
    window: int
    coefficient: float

    name: ClassVar[str] = "spacing"
    native: ClassVar[bool] = True
    penalizes: ClassVar[bool] = True

    def validate(self, shape: tuple[int, int], label: str) -> None:
        if tuple(self.flags.shape) != shape:
            raise ValueError(f"{label}.flags must be {shape}, got {tuple(self.flags.shape)}")
        if not _int_at_least(self.window, 0):
            raise ValueError(f"{label}.window must be an int >= 0, got {self.window!r}")

    def clamp(self, slate_length: int) -> Self:
        window = clamp_window(self.window, slate_length)
        return self if window == self.window else replace(self, window=window)

    def prepare(self, mask: Tensor, width: int) -> dict[str, Tensor]:
        flags = sanitize(self.flags.bool(), mask, False).to(torch.float32)
        return {"flags": pad_candidates(flags, width)}  # [B, Np] float32 0/1

    def start(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> RunningConstraint:
        return _SpacingState(self, tensors["flags"], slate_length, dtype)

    def start_carried(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> CarriedConstraint:
        return _CarriedSpacing(self, tensors["flags"], dtype)


@dataclass(frozen=True)
class SemanticIdPenalty(Constraint):
    """Semantic-ID prefix-overlap penalty (§3.6).

    ``pen_i(t) = coefficient * sum_{d=1..window} (1/d) [lcp(i, s_{t-d}) >= min_prefix] lcp / L``
    with ``codes`` ``[B, N, L]`` int64, coarse to fine.
    """

    codes: Tensor
    window: int
    min_prefix: int
    coefficient: float

    name: ClassVar[str] = "semantic_id"
    native: ClassVar[bool] = True
    penalizes: ClassVar[bool] = True

    def validate(self, shape: tuple[int, int], label: str) -> None:
        if self.codes.dim() != 3 or tuple(self.codes.shape[:2]) != shape:
            raise ValueError(f"{label}.codes must be [B, N, L], got {tuple(self.codes.shape)}")
        if not _int_at_least(self.window, 0):
            raise ValueError(f"{label}.window must be an int >= 0, got {self.window!r}")
        if not _int_at_least(self.min_prefix, 0):
            raise ValueError(f"{label}.min_prefix must be an int >= 0, got {self.min_prefix!r}")

    def clamp(self, slate_length: int) -> Self:
        window = clamp_window(self.window, slate_length)
        return self if window == self.window else replace(self, window=window)

    def prepare(self, mask: Tensor, width: int) -> dict[str, Tensor]:
        # Dense prefix ranks, once: per-step equality tests become comparisons of small floats.
        codes = sanitize(self.codes.long(), mask)
        ranks = prefix_ranks(codes, mask).to(torch.float32)  # ranks < N < 2**24: exact
        prefix = pad_candidates(ranks.transpose(1, 2), width, -1.0).transpose(1, 2)
        return {"prefix": prefix.contiguous()}  # [B, L, Np] float32

    def start(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> RunningConstraint:
        return _SemanticIdState(self, tensors["prefix"], slate_length, dtype)

    def start_carried(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> CarriedConstraint:
        return _CarriedSemanticId(self, tensors["prefix"], slate_length, dtype)


@dataclass(frozen=True)
class CategoryCap(Constraint):
    """At most ``max_count`` of one category in any ``window`` consecutive slate positions (§3.8).

    A violating candidate is excluded from a step's argmax unless every remaining candidate
    violates, in which case the best violating one is taken and the step is counted.
    """

    categories: Tensor
    max_count: int
    window: int

    name: ClassVar[str] = "caps"
    native: ClassVar[bool] = True
    excludes: ClassVar[bool] = True

    def validate(self, shape: tuple[int, int], label: str) -> None:
        if tuple(self.categories.shape) != shape:
            raise ValueError(
                f"{label}.categories must be {shape}, got {tuple(self.categories.shape)}"
            )
        if not _int_at_least(self.window, 1):
            raise ValueError(f"{label}.window must be an int >= 1, got {self.window!r}")
        if not _int_at_least(self.max_count, 0):
            raise ValueError(f"{label}.max_count must be an int >= 0, got {self.max_count!r}")

    def clamp(self, slate_length: int) -> Self:
        window = clamp_window(self.window, slate_length)
        return self if window == self.window else replace(self, window=window)

    def prepare(self, mask: Tensor, width: int) -> dict[str, Tensor]:
        # Dense in-request ranks, once: the counts are then a gather and a scatter per step.
        ranks, _ = dense_ranks(sanitize(self.categories.long(), mask), mask)
        return {"ranks": pad_candidates(ranks, width)}  # [B, Np] int64

    def start(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> RunningConstraint:
        return _CapState(self, tensors["ranks"], slate_length, dtype)

    def start_carried(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> CarriedConstraint:
        return _CarriedCap(self, tensors["ranks"], slate_length, dtype)


_BUILT_IN = (SoftSpacing, SemanticIdPenalty, CategoryCap)
"""The kinds with a field of their own in ``GreedyConstraints``."""


def _expect(record: object, kind: type, label: str) -> None:
    if not isinstance(record, kind):
        raise TypeError(f"{label} must be a {kind.__name__}, got {type(record).__name__}")


@dataclass(frozen=True)
class GreedyConstraints:
    """Everything that acts inside the greedy loop besides the algorithm's own score.

    The three built-in kinds have named fields (what the compiler lowers a spec into, and what
    explain and the tests read); any other kind goes in ``extra``, so that a new kind needs no
    new field here. ``items`` is the one order every loop follows: its penalties are subtracted
    in that order and traced under those labels (explain's golden files depend on both).
    """

    spacing: tuple[SoftSpacing, ...] = ()
    semantic_id: SemanticIdPenalty | None = None
    caps: tuple[CategoryCap, ...] = ()
    extra: tuple[Constraint, ...] = ()

    def __post_init__(self) -> None:
        # A built-in kind anywhere but in its field would change the penalty order and the
        # labels, and the C loop (which lays the built-in kinds out by field) would reorder it.
        for k, s in enumerate(self.spacing):
            _expect(s, SoftSpacing, f"spacing[{k}]")
        if self.semantic_id is not None:
            _expect(self.semantic_id, SemanticIdPenalty, "semantic_id")
        for k, cap in enumerate(self.caps):
            _expect(cap, CategoryCap, f"caps[{k}]")
        for k, record in enumerate(self.extra):
            _expect(record, Constraint, f"extra[{k}]")
            if isinstance(record, _BUILT_IN):
                raise TypeError(
                    f"extra[{k}] is a {type(record).__name__}: it goes in its own field"
                )
        labels = [label for label, _ in self.items]
        for label in labels:
            if labels.count(label) > 1:  # a kind named like a field: two "spacing[0]" terms
                raise ValueError(f"two constraints are labelled {label!r}; rename one kind")

    @classmethod
    def of(cls, records: Sequence[Constraint]) -> GreedyConstraints:
        """The records sorted into the fields by kind (order kept within a kind), any other kind
        into ``extra``: what a caller that gathers records of every kind wants."""
        sid = [r for r in records if isinstance(r, SemanticIdPenalty)]
        if len(sid) > 1:
            raise ValueError(f"at most one SemanticIdPenalty, got {len(sid)}")
        return cls(
            spacing=tuple(r for r in records if isinstance(r, SoftSpacing)),
            semantic_id=sid[0] if sid else None,
            caps=tuple(r for r in records if isinstance(r, CategoryCap)),
            extra=tuple(r for r in records if not isinstance(r, _BUILT_IN)),
        )

    @property
    def items(self) -> tuple[tuple[str, Constraint], ...]:
        """``(label, record)`` in loop order: ``spacing[k]``, ``semantic_id``, ``caps[k]``, then
        the extras as ``f"{name}[k]"`` (k counting that name's extras). A label names the record
        in error messages and, for a penalty, its trace component."""
        out: list[tuple[str, Constraint]] = [
            (f"spacing[{k}]", s) for k, s in enumerate(self.spacing)
        ]
        if self.semantic_id is not None:
            out.append(("semantic_id", self.semantic_id))
        out += [(f"caps[{k}]", cap) for k, cap in enumerate(self.caps)]
        seen: dict[str, int] = {}
        for record in self.extra:
            k = seen.get(record.name, 0)
            seen[record.name] = k + 1
            out.append((f"{record.name}[{k}]", record))
        return tuple(out)


NO_CONSTRAINTS = GreedyConstraints()

_SID_TABLE_MAX = 1 << 20
"""Up to this many T·W entries (8 MiB) the semantic-ID weight rows are built once; beyond, per step."""


def _harmonic_unit(window: int, levels: int) -> tuple[float, float]:
    """Integer unit for the 1/d weights: (lcm(1..w), 1/lcm) when sums stay exact in float64.

    With weights lcm/d, sum_d (1/d) x_d = (sum_d (lcm/d) x_d) / lcm, and the numerator is an
    exact integer as long as it stays below 2**53; beyond that (windows of ~40+) fall back to
    plain 1/d weights.

    The lcm and the harmonic sum only grow with d, so the loop stops as soon as the bound passes
    2**52: lcm(1..w) itself has ~0.43 w digits, overflows a float from w ≈ 709 and would take
    seconds (w = 10**5) or all memory (w = 10**9) to compute.
    """
    scale = max(levels, 1)
    unit = 1
    harmonic = 0.0
    for d in range(1, window + 1):
        unit = math.lcm(unit, d)
        harmonic += 1.0 / d
        if unit * scale * harmonic >= 2.0**52:
            return 1.0, 1.0
    return float(unit), 1.0 / unit


@dataclass(frozen=True)
class PreparedConstraint:
    """One record ready for the loops: validated, window clamped (``record`` is the clamped
    one), its tensors padded to the aligned candidate width."""

    record: Constraint
    label: str
    tensors: dict[str, Tensor]

    def slice(self, sl: slice) -> PreparedConstraint:
        return PreparedConstraint(
            self.record, self.label, {k: v[sl] for k, v in self.tensors.items()}
        )

    def start(self, slate_length: int, dtype: torch.dtype) -> RunningConstraint:
        return self.record.start(self.tensors, slate_length, dtype)

    def start_carried(self, slate_length: int, dtype: torch.dtype) -> CarriedConstraint:
        return self.record.start_carried(self.tensors, slate_length, dtype)


@dataclass(frozen=True)
class PreparedConstraints:
    """Every record of a call prepared, in ``GreedyConstraints.items`` order; a chunk of the
    batch is a slice of each."""

    records: tuple[PreparedConstraint, ...] = ()

    def slice(self, sl: slice) -> PreparedConstraints:
        return PreparedConstraints(tuple(r.slice(sl) for r in self.records))

    @property
    def names(self) -> list[str]:
        """Trace names of the penalty terms, in the order ``ConstraintState.penalties`` returns
        them."""
        return [r.label for r in self.records if r.record.penalizes]

    @property
    def has_caps(self) -> bool:
        return any(r.record.excludes for r in self.records)

    @property
    def non_native(self) -> tuple[str, ...]:
        """Names of the kinds greedy.c's loops do not know (each once, in order): a call that
        carries any must run on the torch path."""
        kinds = (type(r.record).__name__ for r in self.records if not r.record.native)
        return tuple(dict.fromkeys(kinds))

    def check_loop_form(self) -> None:
        """Raise ``NoLoopForm`` naming every record whose kind has no tensor-state form (a loop
        that carries it cannot be a ``torch.while_loop``, so it cannot be exported)."""
        missing = [
            f"{r.label} ({type(r.record).__name__})"
            for r in self.records
            if not r.record.has_loop_form()
        ]
        if missing:
            raise NoLoopForm(
                f"constraint {', '.join(missing)} has no loop form: an exported greedy loop "
                "needs every in-loop constraint as carried tensors (Constraint.start_carried, "
                "a CarriedConstraint); this kind runs in `blend run` but cannot be exported"
            )


def prepare_constraints(
    c: GreedyConstraints | None, mask: Tensor, width: int, slate_length: int
) -> PreparedConstraints:
    """Validate every record (all of them before any work), then clamp its window to the slate
    and pad its tensors to ``width``: every window prepared is at most T."""
    items = (c or NO_CONSTRAINTS).items
    shape = (mask.shape[0], mask.shape[1])
    for label, record in items:
        record.validate(shape, label)
    prepared = []
    for label, record in items:
        clamped = record.clamp(slate_length)
        prepared.append(PreparedConstraint(clamped, label, clamped.prepare(mask, width)))
    return PreparedConstraints(tuple(prepared))


class ConstraintState:
    """Per-chunk running state of every constraint of a lock-step greedy loop: the records'
    own states, asked in ``GreedyConstraints.items`` order."""

    def __init__(self, prep: PreparedConstraints, slate_length: int, dtype: torch.dtype) -> None:
        self.names = prep.names
        self.states = [r.start(slate_length, dtype) for r in prep.records]
        pairs = list(zip(prep.records, self.states, strict=True))
        self.penalizing = [(r.label, s) for r, s in pairs if r.record.penalizes]
        self.excluding = [s for r, s in pairs if r.record.excludes]

    def penalties(self, t: int) -> list[Tensor]:
        """Penalty terms at step t, in ``names`` order, each ``[b, Np]`` (subtracted from score)."""
        out: list[Tensor] = []
        for label, state in self.penalizing:
            term = state.penalty(t)
            if term is None:
                raise TypeError(f"{label} penalizes but returned no penalty at step {t}")
            out.append(term)
        return out

    def cap_violations(self) -> Tensor | None:
        """Number of rules each candidate would break if taken now, as a float ``[b, Np]``."""
        total: Tensor | None = None
        for state in self.excluding:
            v = state.violations()
            if v is not None:
                total = v if total is None else total + v
        return total

    def update(self, t: int, j: Tensor, selector: Selector) -> None:
        """Record the pick ``j`` [b, 1] of step t (the selector knows whether it was real)."""
        for state in self.states:
            state.update(t, j, selector)


class _SpacingState(RunningConstraint):
    """Soft spacing: the picked items' flags; the per-request penalty scale is a short dot.

    Weights are the integers lcm(1..w)/d, so the sums are exact integers and a penalty is one
    scaling of an exact value: mathematically equal penalties are bitwise equal, and the tie rule
    (lower index) holds for them too. The dot always runs over the W = min(window, T) weights,
    with zeros for the positions before the slate's start (``hist`` starts with W zeros): the
    loop form (``_CarriedSpacing``) sums the same W terms in the same order, so the two agree
    bit for bit even where the weights are not exact (windows of ~37 and more).
    """

    def __init__(
        self, s: SoftSpacing, flags: Tensor, slate_length: int, dtype: torch.dtype
    ) -> None:
        b = flags.shape[0]
        dev = flags.device
        self.dtype = dtype
        self.window = s.window  # as prepared: at most T
        self.flags = flags.to(dtype)
        # The flags of the picks, after W zeros: step t reads positions t .. t+W-1 (the picks
        # of steps t-W .. t-1, zero before the slate's start).
        t_len = max(slate_length, 1)
        self.hist = torch.zeros((b, s.window + t_len), dtype=torch.float64, device=dev)
        self.weights, self.scale = _spacing_weights(s, dev)

    def penalty(self, t: int) -> Tensor:
        if self.window == 0:
            return torch.zeros_like(self.flags)
        hist = self.hist[:, t : t + self.window]
        return _spacing_penalty(self.flags, hist, self.weights, self.scale)

    def update(self, t: int, j: Tensor, selector: Selector) -> None:
        at = t + self.window
        self.hist[:, at : at + 1] = self.flags.gather(1, j).to(torch.float64)


def _spacing_weights(s: SoftSpacing, device: torch.device) -> tuple[Tensor, float]:
    """[unit/W, …, unit/1] (oldest first) with W = min(window, T), and the scale that turns the
    integer sums into the penalty."""
    unit, scale = _harmonic_unit(s.window, 1)
    w = [unit / d for d in range(s.window, 0, -1)]
    return torch.tensor(w, dtype=torch.float64, device=device), s.coefficient * scale


def _spacing_penalty(flags: Tensor, recent: Tensor, weights: Tensor, scale: float) -> Tensor:
    """The penalty from the flags of the last W picks ``recent`` ``[b, W]``, oldest first."""
    total = (recent * weights).sum(1, keepdim=True) * scale
    return flags * total.to(flags.dtype)


class _CarriedSpacing(CarriedConstraint):
    """``_SpacingState`` as carried tensors: the flags of the last W picks, oldest first."""

    def __init__(self, s: SoftSpacing, flags: Tensor, dtype: torch.dtype) -> None:
        self.flags = flags.to(dtype)
        self.window = s.window  # as prepared: at most T
        self.weights, self.scale = _spacing_weights(s, flags.device)

    def init_carry(self) -> tuple[Tensor, ...]:
        if self.window == 0:
            return ()
        b = self.flags.shape[0]
        return (torch.zeros((b, self.window), dtype=torch.float64, device=self.flags.device),)

    def penalty(self, t: Tensor, carry: tuple[Tensor, ...]) -> Tensor:
        if self.window == 0:
            return torch.zeros_like(self.flags)
        return _spacing_penalty(self.flags, carry[0], self.weights, self.scale)

    def update(
        self, t: Tensor, j: Tensor, active: Tensor, carry: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        if self.window == 0:
            return ()
        picked = self.flags.gather(1, j).to(torch.float64)
        return (torch.cat([carry[0][:, 1:], picked], 1),)


class _SemanticIdState(RunningConstraint):
    """Semantic IDs: a ring of the last picks' ``[lcp >= l*] * lcp`` (small integers), combined
    with the same integer weights as spacing in float64, then scaled once.

    The ring holds W = min(window, T) picks: older ones are never read within T steps, and for
    t < T, t % W is the slot t % window would give. Weight rows are built by index arithmetic
    (row t puts unit/d at slot (t - d) % W for d = 1..min(W, t)): a full table for small T·W, one
    row per step beyond that, so memory stays O(T + W).
    """

    def __init__(
        self, p: SemanticIdPenalty, prefix: Tensor, slate_length: int, dtype: torch.dtype
    ) -> None:
        self.prefix = prefix  # [b, L, Np]
        self.dtype = dtype
        self.min_prefix = p.min_prefix
        self.reach = p.window  # as prepared: at most T
        if self.reach == 0:
            return
        b, levels, width = prefix.shape
        dev = prefix.device
        t_len = max(slate_length, 1)
        unit, scale = _harmonic_unit(p.window, levels)
        self.scale = p.coefficient * scale / levels
        self.ring = torch.zeros((b, self.reach, width), dtype=torch.float64, device=dev)
        self.unit = torch.tensor(
            [unit / d for d in range(1, self.reach + 1)], dtype=torch.float64, device=dev
        )
        self.steps = torch.arange(t_len, device=dev)
        small = t_len * self.reach <= _SID_TABLE_MAX
        self.weights = self._rows(self.steps) if small else None

    def _rows(self, steps: Tensor) -> Tensor:
        """Weight rows ``[len(steps), 1, W]`` of the ring for the given steps."""
        reach = self.reach
        slots = torch.arange(reach, device=steps.device)
        d = torch.remainder(steps[:, None] - slots[None, :], reach)
        d = torch.where(d == 0, torch.full_like(d, reach), d)  # distance 1..W back
        rows = self.unit[d - 1]
        rows = torch.where(d <= steps[:, None], rows, torch.zeros_like(rows))
        return rows.unsqueeze(1)

    def penalty(self, t: int) -> Tensor:
        if self.reach == 0 or t == 0:
            return torch.zeros_like(self.prefix[:, 0], dtype=self.dtype)
        # Beyond the table: one row for this step, from a device slice (no host-to-device copy).
        row = self.weights[t] if self.weights is not None else self._rows(self.steps[t : t + 1])[0]
        return self._penalty(row, self.ring)

    def _penalty(self, row: Tensor, ring: Tensor) -> Tensor:
        """The penalty from the weight row ``[1, W]`` of the step and the ring."""
        w = row.expand(ring.shape[0], 1, -1)
        num = torch.bmm(w, ring).squeeze(1)
        return (num * self.scale).to(self.dtype)

    def _terms(self, j: Tensor) -> Tensor:
        """``[lcp >= l*] * lcp`` of every candidate with the pick ``j``, ``[b, Np]`` float64."""
        prefix = self.prefix  # [b, L, Np]
        levels = prefix.shape[1]
        picked = prefix.gather(2, j.unsqueeze(1).expand(-1, levels, 1))  # [b, L, 1]
        # Prefix ranks are nested: equal at level l implies equal at every coarser level, so
        # lcp is the number of equal levels. All values are small integers: exact arithmetic.
        eq = 1.0 - (prefix - picked).abs_().clamp_(max=1.0)
        lcp = eq.sum(1)
        keep = (lcp - (self.min_prefix - 1)).clamp_(0, 1)
        return (lcp * keep).to(torch.float64)

    def update(self, t: int, j: Tensor, selector: Selector) -> None:
        if self.reach == 0:
            return
        self.ring[:, t % self.reach] = self._terms(j)


class _CarriedSemanticId(CarriedConstraint):
    """``_SemanticIdState`` as carried tensors: the ring, written at slot t % W by a copy (the
    weight tables and the arithmetic are the eager state's own)."""

    def __init__(
        self, p: SemanticIdPenalty, prefix: Tensor, slate_length: int, dtype: torch.dtype
    ) -> None:
        # The eager state builds the tables; its own ring is never read (and, unused, is not
        # part of an exported program).
        self.eager = _SemanticIdState(p, prefix, slate_length, dtype)

    def init_carry(self) -> tuple[Tensor, ...]:
        if self.eager.reach == 0:
            return ()
        return (torch.zeros_like(self.eager.ring),)

    def penalty(self, t: Tensor, carry: tuple[Tensor, ...]) -> Tensor:
        eager = self.eager
        if eager.reach == 0:
            return torch.zeros_like(eager.prefix[:, 0], dtype=eager.dtype)
        at = t.reshape(1)
        if eager.weights is not None:
            row = torch.index_select(eager.weights, 0, at).squeeze(0)
        else:
            row = eager._rows(at)[0]
        # Step 0 is zero as such in the eager state (its row and ring are zeros anyway).
        return torch.where(t > 0, eager._penalty(row, carry[0]), 0.0)

    def update(
        self, t: Tensor, j: Tensor, active: Tensor, carry: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        if self.eager.reach == 0:
            return ()
        slot = torch.remainder(t, self.eager.reach).reshape(1)
        return (carry[0].index_copy(1, slot, self.eager._terms(j).unsqueeze(1)),)


class _CapState(RunningConstraint):
    """A cap: counts per (request, category rank) over the trailing window."""

    def __init__(
        self, cap: CategoryCap, ranks: Tensor, slate_length: int, dtype: torch.dtype
    ) -> None:
        b, width = ranks.shape
        dev = ranks.device
        t_len = max(slate_length, 1)
        self.ranks = ranks
        self.max_count = cap.max_count
        self.window = cap.window
        self.counts = torch.zeros((b, width), dtype=dtype, device=dev)
        self.hist = torch.zeros((b, t_len), dtype=torch.int64, device=dev)
        self.inc = torch.zeros((b, t_len), dtype=dtype, device=dev)

    def violations(self) -> Tensor:
        return _cap_violations(self.counts, self.ranks, self.max_count)

    def update(self, t: int, j: Tensor, selector: Selector) -> None:
        active = selector.last_active()
        rj = self.ranks.gather(1, j)
        self.hist[:, t : t + 1] = rj
        self.inc[:, t : t + 1] = active
        self.counts.scatter_add_(1, rj, active)
        leaving = t - self.window + 1  # position that leaves the window before step t+1
        if leaving >= 0:
            old = self.hist[:, leaving : leaving + 1]
            self.counts.scatter_add_(1, old, -self.inc[:, leaving : leaving + 1])


def _cap_violations(counts: Tensor, ranks: Tensor, max_count: int) -> Tensor:
    n_same = counts.gather(1, ranks)
    return (n_same - (max_count - 1)).clamp_(0, 1)


class _CarriedCap(CarriedConstraint):
    """``_CapState`` as carried tensors: the counts and the picks' category ranks and
    activity by position. The position leaving the window is read at max(leaving, 0) and its
    count removed only where leaving >= 0 (adding an exact zero otherwise)."""

    def __init__(
        self, cap: CategoryCap, ranks: Tensor, slate_length: int, dtype: torch.dtype
    ) -> None:
        self.ranks = ranks
        self.max_count = cap.max_count
        self.window = cap.window
        self.t_len = max(slate_length, 1)
        self.dtype = dtype

    def init_carry(self) -> tuple[Tensor, ...]:
        b, width = self.ranks.shape
        dev = self.ranks.device
        return (
            torch.zeros((b, width), dtype=self.dtype, device=dev),
            torch.zeros((b, self.t_len), dtype=torch.int64, device=dev),
            torch.zeros((b, self.t_len), dtype=self.dtype, device=dev),
        )

    def violations(self, carry: tuple[Tensor, ...]) -> Tensor:
        return _cap_violations(carry[0], self.ranks, self.max_count)

    def update(
        self, t: Tensor, j: Tensor, active: Tensor, carry: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        counts, hist, inc = carry
        b = j.shape[0]
        at = t.reshape(1, 1).expand(b, 1)
        rj = self.ranks.gather(1, j)
        hist = hist.scatter(1, at, rj)
        inc = inc.scatter(1, at, active)
        counts = counts.scatter_add(1, rj, active)
        leaving = t - self.window + 1  # position that leaves the window before step t+1
        index = leaving.clamp(min=0).reshape(1, 1).expand(b, 1)
        old = hist.gather(1, index)
        gone = torch.where(leaving >= 0, inc.gather(1, index), 0.0)
        counts = counts.scatter_add(1, old, -gone)
        return counts, hist, inc
