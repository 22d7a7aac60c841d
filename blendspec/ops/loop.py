"""The greedy loops as one ``torch.while_loop``: the form ``torch.export`` traces (issue 15).

The eager torch path runs a selector's T steps as a Python loop, so tracing it unrolls them: the
exported graph grows with T (~8,200 nodes for the homefeed spec at T=50). Under
``torch.compiler.is_compiling()`` every selector instead hands its step to ``greedy_loop``, which
writes it as a ``torch.while_loop``: one node whose body graph holds one step, whatever T is.

What the loop carries (tensors of fixed shape and dtype, never written in place): the step ``t``
(a 0-d int64 tensor), the picks and their values by position, the forced-step count, the
eligibility bias (with caps), the algorithm's *tracked* tensors (pre-biased scores into which
every pick writes -inf, ``Selector.track``), each constraint's carry
(``constraints.CarriedConstraint``) and the algorithm's own state. Fixed tensors (features,
prepared constraint tensors, weight tables) are read from the step's closure: torch.export lifts
them into inputs of the body graph.

Every operation is the eager path's (``Selector``'s arithmetic is shared through
``_greedy.cap_terms``/``_greedy.argmax_pick``), so the exported program gives the eager path's
slates and scores bit for bit. Where the eager path sliced by the step (a window's first
positions, the rows filled so far), both forms now compute over the full, zero-filled extent.

The loop runs the first T - 1 steps, each a pick then the updates; the last pick follows it
outside (its updates would be dead work), so a slate of one step has no loop at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import torch
import torch.utils._pytree as pytree
from torch import Tensor

from blendspec.ops._greedy import Selection, argmax_pick, cap_terms, empty_selection
from blendspec.ops.constraints import CarriedConstraint, PreparedConstraints

State = tuple[Tensor, ...]
ScoreFn = Callable[[Tensor, State, State, list[Tensor], Tensor | None], tuple[Tensor, State]]
"""``(t, tracked, state, penalties, cap_extra) -> (score, state)``: the step's pre-biased score
before the penalties (``greedy_loop`` subtracts them) and the algorithm's state after what it
records before the pick (DPP's stop flag). ``cap_extra`` is the caps' additive mask (None
without caps)."""
UpdateFn = Callable[[Tensor, Tensor, State, State], State]
"""``(t, j, tracked, state) -> state`` after the pick ``j`` ``[b, 1]`` of step t (every step but
the last)."""

_FORCED: ContextVar[bool] = ContextVar("blendspec_loop_form", default=False)


@contextmanager
def loop_form() -> Iterator[None]:
    """Run the operators' loop form in eager mode too (a plain Python loop over the same body):
    what the tests compare with the eager path without paying for an export."""
    token = _FORCED.set(True)
    try:
        yield
    finally:
        _FORCED.reset(token)


def wanted(trace: bool) -> bool:
    """Whether a selector should run as ``greedy_loop``: under torch.export/compile (or
    ``loop_form``). Tracing is eager-only (``blend explain``), never exported."""
    if not (torch.compiler.is_compiling() or _FORCED.get()):
        return False
    if trace:
        raise ValueError("trace=True is eager-only: an exported or compiled loop cannot trace")
    return True


def initial_bias(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """``Selector.bias`` before the first pick: 0 for a candidate, -inf for padding (what an
    algorithm adds to build its tracked tensors)."""
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(
        ~valid, float("-inf")
    )


class _Carry(NamedTuple):
    """Everything a step reads and writes (a pytree of tensors: ``torch.while_loop`` flattens
    it, and hands the body the same structure)."""

    t: Tensor  # 0-d int64
    picks: Tensor  # [b, T] int64
    values: Tensor  # [b, T] the picked score (-inf where nothing was left)
    caps: tuple[Tensor, ...]  # with caps: (forced steps [b, 1], eligibility bias [b, Np])
    tracked: tuple[Tensor, ...]
    constraints: tuple[tuple[Tensor, ...], ...]
    state: tuple[Tensor, ...]


def greedy_loop(
    valid: Tensor,
    dtype: torch.dtype,
    slate_length: int,
    constraints: PreparedConstraints,
    tracked: Sequence[Tensor],
    state: State,
    score: ScoreFn,
    update: UpdateFn | None,
) -> tuple[Selection, State]:
    """Run ``slate_length`` lock-step greedy steps as one ``torch.while_loop``.

    ``tracked`` are the algorithm's pre-biased tensors (``x + bias``, -inf where taken or
    padding): every pick writes -inf into each. At step t the loop asks the constraints for
    their penalties and cap violations, then ``score`` for the step's score (built from
    ``tracked``); it subtracts the penalties in order, picks as ``Selector.step`` does, records
    the pick, updates the constraints, then calls ``update`` (not after the last pick). Returns
    the ``Selection`` (``early_stops`` all False) and the algorithm's final state. Raises
    ``NoLoopForm`` if a constraint's kind has no tensor-state form.
    """
    constraints.check_loop_form()
    b = valid.shape[0]
    dev = valid.device
    if slate_length == 0:
        return empty_selection(b, 0, dev), tuple(state)
    records = constraints.records
    carried: list[CarriedConstraint] = [r.start_carried(slate_length, dtype) for r in records]
    penalizing = [k for k, r in enumerate(records) if r.record.penalizes]
    excluding = [k for k, r in enumerate(records) if r.record.excludes]
    neg_inf = float("-inf")

    def pick(c: _Carry) -> tuple[_Carry, Tensor, Tensor]:
        """One step's pick: the carry after it, the pick ``j`` and whether it was real."""
        pens: list[Tensor] = []
        for k in penalizing:
            term = carried[k].penalty(c.t, c.constraints[k])
            if term is None:
                raise TypeError(f"{records[k].label} penalizes but returned no penalty")
            pens.append(term)
        violations: Tensor | None = None
        for k in excluding:
            v = carried[k].violations(c.constraints[k])
            if v is not None:
                violations = v if violations is None else violations + v
        extra = has_ok = None
        if violations is not None:
            extra, has_ok = cap_terms(c.caps[1], violations, dtype)
        s, state = score(c.t, c.tracked, c.state, pens, extra)
        for pen in pens:
            s = s - pen
        j, value = argmax_pick(s, extra)
        at = c.t.reshape(1, 1).expand(b, 1)
        active = (value > neg_inf).to(dtype)
        caps: tuple[Tensor, ...] = ()
        if c.caps:
            forced, bias = c.caps
            if has_ok is not None:
                forced = forced + (1.0 - has_ok) * active
            caps = (forced, bias.scatter(1, j, neg_inf))
        after = _Carry(
            c.t,
            c.picks.scatter(1, at, j),
            c.values.scatter(1, at, value),
            caps,
            tuple(x.scatter(1, j, neg_inf) for x in c.tracked),
            c.constraints,
            state,
        )
        return after, j, active

    def body(*flat: object) -> tuple[object, ...]:
        c, j, active = pick(_Carry(*flat))  # type: ignore[arg-type]
        cons = tuple(x.update(c.t, j, active, c.constraints[k]) for k, x in enumerate(carried))
        state = c.state if update is None else update(c.t, j, c.tracked, c.state)
        out = c._replace(t=c.t + 1, constraints=cons, state=state)
        # An output may not be one of the inputs (torch.while_loop): copy what a step left as is.
        seen = {id(x) for x in pytree.tree_leaves(flat)}
        return tuple(pytree.tree_map(lambda x: x.clone() if id(x) in seen else x, out))

    def cond(*flat: object) -> Tensor:
        return flat[0] < slate_length - 1  # type: ignore[operator]

    caps0: tuple[Tensor, ...] = ()
    if excluding:
        caps0 = (torch.zeros((b, 1), dtype=dtype, device=dev), initial_bias(valid, dtype))
    carry = _Carry(
        torch.zeros((), dtype=torch.int64, device=dev),
        torch.zeros((b, slate_length), dtype=torch.int64, device=dev),
        torch.zeros((b, slate_length), dtype=dtype, device=dev),
        caps0,
        tuple(tracked),
        tuple(x.init_carry() for x in carried),
        tuple(state),
    )
    if slate_length > 1:
        carry = _Carry(*while_loop(cond, body, tuple(carry)))
    last, _, _ = pick(carry)  # the last pick, outside the loop
    active = last.values > neg_inf
    indices = torch.where(active, last.picks, -1)
    scores = torch.where(active, last.values, 0.0).to(torch.float32)
    if last.caps:
        violations = last.caps[0].reshape(b).round().to(torch.int64)
    else:
        violations = torch.zeros((b,), dtype=torch.int64, device=dev)
    stops = torch.zeros((b,), dtype=torch.bool, device=dev)
    return Selection(indices, scores, violations, stops), last.state


def while_loop(
    cond: Callable[..., Tensor], body: Callable[..., tuple[object, ...]], carry: tuple[object, ...]
) -> tuple[object, ...]:
    """``torch.while_loop`` under torch.export/compile; in eager mode (``loop_form``) a plain
    Python loop over the same body (``torch.while_loop`` would compile it)."""
    if torch.compiler.is_compiling():
        return tuple(torch.while_loop(cond, body, carry))
    while bool(cond(*carry)):  # loop_form() in eager mode: the same body, step by step
        carry = body(*carry)
    return carry
