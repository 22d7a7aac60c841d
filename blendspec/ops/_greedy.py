"""Lock-step greedy selection shared by greedy_relevance, SSD, DPP and MMR.

Each algorithm supplies a per-step score ``[b, Np]``; this module turns it into a pick under the
eligibility mask and the category caps, records it, and assembles the ``Selection``. It avoids
boolean tensors and ``torch.where`` in the per-step path: on this CPU build they cost 4-6x a float
add for the same size, and the loop runs T times per chunk. Masks are additive float biases
instead (0 = allowed, -1e38 = cap-violating, -inf = taken/padding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

_CAP_BIAS = -1e38
"""Added (times the number of violated caps) to a violating candidate's score: far below any real
score yet finite in float32, so "all candidates violate" is still detectable."""
_NEG_INF = float("-inf")
_HAS_OK = _CAP_BIAS / 10


@dataclass(frozen=True)
class Selection:
    """Result of one greedy selector over a batch.

    indices: ``[B, T]`` int64 candidate index per slate position, -1 past the end of a request's
        slate (fewer valid candidates than T, or none).
    scores: ``[B, T]`` float32 the score the greedy step maximised (0 where indices is -1).
    cap_violations: ``[B]`` int64 steps that had to take a cap-violating candidate.
    early_stops: ``[B]`` bool, DPP only: the step where max d_i^2 fell below epsilon was reached
        and the rest of the slate was filled by relevance.
    trace: with ``trace=True``, per-step components of the picked candidate's score, each
        ``[B, T]`` float32 (``relevance``, ``diversity``, one entry per penalty); ``score =
        relevance + diversity - sum(penalties)``. ``None`` otherwise.
    steps: with ``trace=True``, every candidate's terms at every step (what ``blend explain``
        needs for runners-up and "why not this one"), each ``[B, T, Np]`` in the operator's
        dtype, where ``Np >= N`` is the operator's padded candidate width (columns past N are
        padding): the components named as in ``trace``, plus ``score`` (what the step maximised
        before the caps; -inf for a taken, filtered or padding candidate) and ``cap_excluded``
        (1.0 where a cap removed the candidate from that step's argmax). ``None`` otherwise.
    """

    indices: Tensor
    scores: Tensor
    cap_violations: Tensor
    early_stops: Tensor
    trace: dict[str, Tensor] | None = None
    steps: dict[str, Tensor] | None = None


STEP_EXTRAS = ("score", "cap_excluded")
"""Keys of ``Selection.steps`` besides the score components."""


def empty_selection(
    batch: int, slate_length: int, device: torch.device, trace_names: list[str] | None = None
) -> Selection:
    """All slates empty (-1): no request has a candidate."""
    scores = torch.zeros((batch, slate_length), dtype=torch.float32, device=device)
    return Selection(
        indices=torch.full((batch, slate_length), -1, dtype=torch.int64, device=device),
        scores=scores,
        cap_violations=torch.zeros((batch,), dtype=torch.int64, device=device),
        early_stops=torch.zeros((batch,), dtype=torch.bool, device=device),
        trace=None if trace_names is None else {k: scores.clone() for k in trace_names},
        steps=None
        if trace_names is None
        else {
            k: torch.zeros((batch, slate_length, 0), device=device)
            for k in (*trace_names, *STEP_EXTRAS)
        },
    )


def concat_selections(parts: list[Selection]) -> Selection:
    trace = steps = None
    if parts and parts[0].trace is not None:
        trace = {k: torch.cat([p.trace[k] for p in parts]) for k in parts[0].trace}  # type: ignore[index]
    if parts and parts[0].steps is not None:
        steps = {k: torch.cat([p.steps[k] for p in parts]) for k in parts[0].steps}  # type: ignore[index]
    return Selection(
        indices=torch.cat([p.indices for p in parts]),
        scores=torch.cat([p.scores for p in parts]),
        cap_violations=torch.cat([p.cap_violations for p in parts]),
        early_stops=torch.cat([p.early_stops for p in parts]),
        trace=trace,
        steps=steps,
    )


def run_chunks(chunks: list[slice], run: Callable[[slice], Selection]) -> Selection:
    """Run ``run`` on each cache-sized chunk of the batch (see ``batch_chunks``), concatenate.

    Chunks run one after the other; inside a chunk the one large product per step uses the
    intra-op threads. (Running chunks concurrently in worker threads with single-threaded ops was
    measured slower on 2 cores: the GIL serialises the many small ops.)
    """
    return concat_selections([run(sl) for sl in chunks])


def cap_terms(bias: Tensor, cap_violations: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The caps' additive mask for one step and whether the caps could be met (``[b, 1]``).

    Violating candidates get -1e38 per violated cap, unless every eligible candidate violates
    (``bias`` is -inf where taken or padding), in which case the caps are ignored for this step
    (and the pick is counted).
    """
    with_caps = torch.add(bias, cap_violations, alpha=_CAP_BIAS)
    has_ok = (with_caps.amax(1, keepdim=True) > _HAS_OK).to(dtype)
    return cap_violations * (has_ok * _CAP_BIAS), has_ok


def argmax_pick(score: Tensor, extra: Tensor | None) -> tuple[Tensor, Tensor]:
    """The best allowed candidate ``j`` ``[b, 1]`` (lowest index on ties) and its masked score."""
    masked = score if extra is None else score + extra
    j = masked.argmax(1, keepdim=True)  # first maximal index: ties go to the lower index
    return j, masked.gather(1, j)


class Selector:
    """Argmax bookkeeping for one chunk: eligibility, caps, and the per-step records.

    Scores handed to ``step`` are *pre-biased*: the algorithm builds them from tensors it
    registered with ``track`` (typically its relevance term plus ``bias``), into which every pick
    writes -inf. That saves a full pass per step over adding an eligibility mask.
    """

    def __init__(
        self,
        valid: Tensor,
        dtype: torch.dtype,
        trace_names: list[str] | None,
        caps: bool = True,
    ) -> None:
        self.dtype = dtype
        self.bias = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
        self.bias.masked_fill_(~valid, _NEG_INF)
        # The bias itself is only read again by cap_bias; without caps, skip its scatter.
        self.tracked: list[Tensor] = [self.bias] if caps else []
        self.picks: list[Tensor] = []
        self.values: list[Tensor] = []
        self.forced: list[Tensor] = []
        self.trace = trace_names is not None
        self.components: dict[str, list[Tensor]] = {k: [] for k in trace_names or ()}
        self.steps: dict[str, list[Tensor]] = {
            k: [] for k in (*(trace_names or ()), *STEP_EXTRAS) if self.trace
        }

    def track(self, x: Tensor, biased: bool = False) -> Tensor:
        """Return ``x + bias`` (or ``x`` itself if already -inf where taken/padding) and keep it
        at -inf for every candidate taken from now on."""
        out = x if biased else x + self.bias
        self.tracked.append(out)
        return out

    def cap_bias(self, cap_violations: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """Extra additive mask for the caps, and whether the caps could be met this step.

        Violating candidates get -1e38 per violated cap, unless every eligible candidate
        violates, in which case the caps are ignored for this step (and the pick is counted).
        """
        if cap_violations is None:
            return None, None
        return cap_terms(self.bias, cap_violations, self.dtype)

    def step(
        self,
        score: Tensor,
        caps: tuple[Tensor | None, Tensor | None] = (None, None),
        components: Callable[[], dict[str, Tensor]] | None = None,
    ) -> Tensor:
        """Pick the best allowed candidate (lowest index on ties); returns ``j`` ``[b, 1]``.

        ``score`` must be -inf for taken and padding candidates (built from tracked tensors). A
        request with no candidate left gets j = 0 and a -inf value (``last_active`` is 0).
        """
        extra, has_ok = caps
        j, value = argmax_pick(score, extra)
        if self.trace and components is not None:  # before the scatter below: score may be tracked
            self.steps["score"].append(score.detach().clone())
        for x in self.tracked:
            x.scatter_(1, j, _NEG_INF)
        self.picks.append(j)
        self.values.append(value)
        if has_ok is not None:
            self.forced.append((1.0 - has_ok) * self.last_active())
        if self.trace and components is not None:
            for name, comp in components().items():
                self.components[name].append(comp.gather(1, j).to(torch.float32))
                # Copies: the algorithms update some of these tensors in place at later steps.
                self.steps[name].append(comp.detach().clone())
            excluded = torch.zeros_like(score) if extra is None else (extra != 0).to(score.dtype)
            self.steps["cap_excluded"].append(excluded)
        return j

    def last_active(self) -> Tensor:
        """``[b, 1]`` 1.0 where the last step took a candidate, 0.0 where none was left."""
        return (self.values[-1] > _NEG_INF).to(self.dtype)

    def finish(self, early_stops: Tensor | None = None) -> Selection:
        b = self.bias.shape[0]
        dev = self.bias.device
        if not self.picks:
            sel = empty_selection(b, 0, dev)
            trace = {k: sel.scores for k in self.components} if self.trace else None
            width = self.bias.shape[1]
            steps = (
                {k: self.bias.new_zeros((b, 0, width)) for k in self.steps} if self.trace else None
            )
            return Selection(
                sel.indices, sel.scores, sel.cap_violations, sel.early_stops, trace, steps
            )
        idx = torch.cat(self.picks, 1)
        val = torch.cat(self.values, 1)
        active = val > _NEG_INF
        indices = torch.where(active, idx, -1)
        scores = torch.where(active, val, 0.0).to(torch.float32)
        if self.forced:
            forced = torch.cat(self.forced, 1).sum(1).round().to(torch.int64)
        else:
            forced = torch.zeros((b,), dtype=torch.int64, device=dev)
        stops = (
            early_stops.reshape(b).to(torch.bool)
            if early_stops is not None
            else torch.zeros((b,), dtype=torch.bool, device=dev)
        )
        trace = steps = None
        if self.trace:
            trace = {
                k: torch.where(active, torch.cat(v, 1), 0.0) for k, v in self.components.items()
            }
            steps = {k: torch.stack(v, 1) for k, v in self.steps.items()}
        return Selection(indices, scores, forced, stops, trace, steps)
