"""`blend explain`: why each item of one request's slate landed where it did.

A ranking engineer looking at a surprising slate needs the arithmetic, not a guess: for every
position, the pick's score split into the relevance term (and the utility's weight × objective
parts behind it), the diversity term (with the placed item it resembled most), each penalty (with
the earlier positions that caused it), the candidates a cap excluded, and the runner-up with the
same split and the margin. `--why` turns it around for one candidate: where utility alone would
have put it, and at each step before it was placed what beat it, by how much and on which term.

Everything comes from the operators' own per-step trace (``Selection.steps``), so the parts add up
to the score the operator maximised, and the slate is ``blend run``'s (operators are batch
invariant: one request alone gets the slate it gets inside any batch). Only the "why" details
that the hot loop does not keep (which placed item was most similar, which earlier positions made
a penalty, which cap a candidate would break) are recomputed here, for one request, from the same
inputs. Tracing is switched on only in this module's lowering: ``blend run`` never pays for it.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import Tensor

from blendspec import ops
from blendspec.compiler.graph import Graph, Node
from blendspec.compiler.lower import BlendModule, TorchLowering
from blendspec.constraints import BY_OP as CONSTRAINT_BY_OP
from blendspec.constraints import InLoopConstraint
from blendspec.diversity import BY_OP, DIVERSIFIERS
from blendspec.io.dump import REQUEST_ID, DumpReader, RequestBatch
from blendspec.ops._common import release_workspace
from blendspec.spec.diagnostics import did_you_mean
from blendspec.spec.loader import LoadedSpec


class ExplainError(Exception):
    """The request or candidate to explain cannot be found or blended (a user error: exit 1)."""

    def __init__(self, message: str, help: str | None = None) -> None:
        super().__init__(message)
        self.help = help


# ---------------------------------------------------------------------------------------------
# the traced run


class TracingLowering:
    """Wraps the lowering ``blend run`` uses, switched to tracing: every node's value is kept, and
    the selection operator records its per-step score parts. Everything else is delegated
    unchanged, so whatever the run's lowering does (fixed weights, a policy runtime) is what gets
    explained."""

    def __init__(self, base: TorchLowering) -> None:
        self.base = base
        base.trace = True
        self.slate_length = base.slate_length
        self.values: dict[int, Any] = {}

    @property
    def selection(self) -> ops.Selection | None:
        return self.base.selection

    @property
    def policy(self) -> Any:
        """The base's policy runtime (``BlendModule`` may attach one): one runtime, not two."""
        return self.base.policy

    @policy.setter
    def policy(self, value: Any) -> None:
        self.base.policy = value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.base, name)
        if not name.startswith("visit_"):
            return attr

        def visit(node: Node, args: Sequence[Any], *rest: Any) -> Any:
            out = attr(node, args, *rest)
            self.values[node.id] = out
            return out

        return visit


def read_request(path: Path, loaded: LoadedSpec, request_id: str) -> RequestBatch:
    """One request of a dump as a batch of one; a missing or bad request is an ExplainError.

    The request's first run of rows is found by reading the dump up to it. Its rows may come
    back after another request, anywhere later in the dump, and explaining the first run alone
    would explain a slate that ``blend run`` never writes (it rejects such a request whole). So
    the `request_id` column is scanned to the end (:meth:`DumpReader.scattered_runs`, which
    reads nothing else of a Parquet dump); a scattered request is a bad request whose reason
    names all of its runs of rows, as in ``blend run``'s rejects.
    """
    reader = DumpReader(path, loaded.spec)
    seen: list[str] = []
    for table, first_row in reader.requests():
        rid = str(pc.cast(table.column(REQUEST_ID).slice(0, 1), pa.string())[0].as_py())
        if rid != request_id:
            seen.append(rid)
            continue
        runs = reader.scattered_runs().get(request_id)
        if runs is not None:
            # A reader told of the scattered runs reports them with the first run's problems.
            reader = DumpReader(
                path, loaded.spec, chunk_rows=reader.chunk_rows, scattered={request_id: runs}
            )
        batch = reader.batch_of([(table, first_row)])  # the reader's own checks and padding
        if batch.rejected:
            raise ExplainError(f"bad {batch.rejected[0]}")
        return batch
    hint = did_you_mean(request_id, seen)
    if hint is None and seen:
        hint = f"it has {len(seen)} requests, e.g. `{seen[0]}`"
    raise ExplainError(f"request `{request_id}` is not in {path}", hint)


@dataclass(frozen=True)
class TracedConstraint:
    """One in-loop constraint of a traced request: its kind (plugin), the label the loops traced
    its penalty under, its node's attributes and what its explain hooks read."""

    kind: type[InLoopConstraint]
    label: str
    attrs: dict[str, Any]
    data: Any


@dataclass(frozen=True)
class Traced:
    """One request, blended with tracing on: the per-step trace and every input it read, as
    numpy arrays trimmed to the request's N candidates."""

    request_id: str
    spec: str
    algorithm: str
    params: dict[str, Any]
    candidate_ids: list[str]
    picks: list[int]  # per position, the candidate index (-1 past the slate's end)
    slate_scores: list[float]
    utility: np.ndarray  # [N]
    terms: list[tuple[str, float, str, str, np.ndarray]]  # weight, value, source, objective, f
    constant: float
    relevance: np.ndarray  # [N], the normalised utility the operator read
    steps: dict[str, np.ndarray]  # name -> [T, N]
    phi: np.ndarray | None  # [N, D] feature map
    constraints: list[TracedConstraint]  # in the loops' order
    eligible: np.ndarray  # [N] bool, after filters and truncation
    filtered_by: list[str | None]  # per candidate, the first filter set that dropped it
    truncated: np.ndarray  # [N] bool
    weights: list[tuple[str, float, str]]  # name, applied value, fixed | policy
    action: int | None
    propensity: float | None
    early_stop: bool

    @property
    def n(self) -> int:
        return len(self.candidate_ids)


def trace_request(loaded: LoadedSpec, candidates: Path, request_id: str) -> Traced:
    """Blend one request of the dump with the spec, tracing the selection operator."""
    from blendspec.engine.blend import Runner

    runner = Runner(loaded)
    batch = read_request(candidates, loaded, request_id)
    graph = runner.graph
    base = getattr(runner.module, "lowering", None)
    if not isinstance(base, TorchLowering):
        base = TorchLowering(int(graph.output.type.dims[1]))
    tracing = TracingLowering(base)
    # The run's own path (its input preparation, e.g. the policy's per-request seeds), with the
    # traced module in place of the plain one.
    runner.module = BlendModule(graph, lowering=tracing)  # type: ignore[arg-type]
    try:
        out = runner.blend(batch)
    finally:
        # Explaining is a one-off: don't keep the operators' cached work buffers (several MiB,
        # made under inference mode) alive in this thread for callers that will not reuse them.
        release_workspace()
    return _collect(loaded, graph, batch, tracing, out)


def _node(graph: Graph, op: str) -> Node | None:
    return next((n for n in graph.nodes if n.op == op), None)


def _np(x: Tensor, n: int) -> np.ndarray:
    return x[0, :n].detach().double().numpy() if x.dim() >= 2 else x.detach().double().numpy()


def _collect(
    loaded: LoadedSpec,
    graph: Graph,
    batch: RequestBatch,
    tracing: TracingLowering,
    out: dict[str, Tensor],
) -> Traced:
    values = tracing.values
    n = int(batch.mask.shape[1])
    ids = [str(x) for x in batch.candidate_ids.cast(pa.string()).to_pylist()]
    selection = tracing.selection
    select_node = next(node for node in graph.nodes if node.op in BY_OP)
    assert selection is not None and selection.steps is not None
    nodes = {node.id: node for node in graph.nodes}

    # Weights: fixed ones are constants; policy ones come from the action the policy took.
    weights: list[tuple[str, float, str]] = []
    weight_of: dict[int, tuple[str, float, str]] = {}
    action: int | None = None
    for node in graph.nodes:
        if node.op in ("weight", "policy_weight"):
            value = float(torch.as_tensor(values[node.id]).reshape(-1)[0])
            source = "fixed" if node.op == "weight" else "policy"
            entry = (node.attrs["name"], value, source)
            weights.append(entry)
            weight_of[node.id] = entry
        if node.op == "policy":
            action = _action_of(out.get("action", values[node.id]))
    if action is not None and action < 0:
        # No network chose: the policy's weights fell back to their fixed defaults.
        weights = [(w, v, "fallback" if s == "policy" else s) for w, v, s in weights]
        weight_of = {
            k: (w, v, "fallback" if s == "policy" else s) for k, (w, v, s) in weight_of.items()
        }

    utility_node = _node(graph, "utility")
    assert utility_node is not None
    terms = []
    for k, text in enumerate(utility_node.attrs["terms"]):
        w_node, f_node = utility_node.inputs[2 * k], utility_node.inputs[2 * k + 1]
        name, value, source = weight_of[w_node]
        objective = text.split("*", 1)[1]
        terms.append((name, value, source, objective, _np(values[f_node], n)))

    plugin = BY_OP[select_node.op]
    algorithm = plugin.name()
    params = {k: v for k, v in select_node.attrs.items() if k != "length"}
    if not plugin.uses_features:
        relevance = _np(values[select_node.inputs[0]], n)
        keep_id, constraint_ids = select_node.inputs[1], select_node.inputs[2:]
        phi = None
    else:
        rel_node = nodes[select_node.inputs[0]]
        relevance = _np(values[rel_node.id], n)
        params["relevance"] = rel_node.attrs.get("method")
        phi = values[select_node.inputs[1]][0, :n].detach().double().numpy()
        keep_id, constraint_ids = select_node.inputs[2], select_node.inputs[3:]
    eligible = values[keep_id][0, :n].numpy().astype(bool)

    # Each constraint under the label the loops traced its penalty with (their order is the
    # order of GreedyConstraints.items, whatever the order of the node's inputs).
    node_of = {id(values[cid]): nodes[cid] for cid in constraint_ids}
    records = ops.GreedyConstraints.of([values[cid] for cid in constraint_ids])
    constraints = []
    for label, record in records.items:
        node = node_of[id(record)]
        kind = CONSTRAINT_BY_OP[node.op]
        data = kind.explain_data(record, n)
        constraints.append(TracedConstraint(kind, label, dict(node.attrs), data))

    filtered_by: list[str | None] = [None] * n
    truncated = np.zeros(n, dtype=bool)
    mask = batch.mask[0, :n].numpy()
    for node in graph.nodes:
        if node.op == "filter":
            for name, flags in zip(node.attrs["sets"], node.inputs[1:], strict=True):
                hit = values[flags][0, :n].numpy().astype(bool)
                for i in np.flatnonzero(hit & mask):
                    filtered_by[i] = filtered_by[i] or name
        if node.op == "truncate":
            kept = values[node.id][0, :n].numpy().astype(bool)
            upstream = values[node.inputs[1]][0, :n].numpy().astype(bool)
            truncated = upstream & ~kept

    t_len = selection.indices.shape[1]
    steps = {
        k: v[0, :, :n].detach().double().numpy().reshape(t_len, n)
        for k, v in selection.steps.items()
    }
    indices = out["indices"][0].tolist()
    return Traced(
        request_id=batch.request_ids[0],
        spec=loaded.spec.name,
        algorithm=algorithm,
        params=params,
        candidate_ids=ids,
        picks=[int(i) for i in indices],
        slate_scores=[float(s) for s in out["scores"][0].tolist()],
        utility=_np(values[utility_node.id], n),
        terms=terms,
        constant=float(utility_node.attrs["constant"]),
        relevance=relevance,
        steps=steps,
        phi=phi,
        constraints=constraints,
        eligible=eligible,
        filtered_by=filtered_by,
        truncated=truncated,
        weights=weights,
        action=action,
        propensity=float(out["propensity"][0]) if "propensity" in out else None,
        early_stop=bool(selection.early_stops[0]),
    )


def _action_of(value: Any) -> int | None:
    """The action id from whatever the policy node returns (a tensor of ids, or a record)."""
    if isinstance(value, dict):
        value = value.get("action")
    value = getattr(value, "action", value)  # a policy decision record
    if isinstance(value, Tensor) and value.numel() and not value.is_floating_point():
        return int(value.reshape(-1)[0])
    return None


# ---------------------------------------------------------------------------------------------
# the explanation


@dataclass(frozen=True)
class UtilityPart:
    weight: str
    weight_value: float
    source: str
    objective: str
    objective_value: float
    product: float


@dataclass(frozen=True)
class Cause:
    """An earlier position that contributes ``amount`` to a penalty."""

    position: int
    candidate_id: str
    amount: float


@dataclass(frozen=True)
class PenaltyPart:
    name: str
    value: float
    causes: tuple[Cause, ...]


@dataclass(frozen=True)
class Similar:
    """The placed item the candidate resembles most: the spec's similarity ⟨φ_i, φ_j⟩ (without
    SSD's constant bias coordinate) over the items the diversity term conditions on: SSD's and
    windowed DPP's window, or every placed item for MMR and DPP."""

    position: int
    candidate_id: str
    similarity: float


@dataclass(frozen=True)
class Breakdown:
    """A candidate's score at one step: ``relevance + diversity − Σ penalties``."""

    candidate_id: str
    index: int
    score: float
    utility: float
    utility_parts: tuple[UtilityPart, ...]
    utility_constant: float
    relevance: float  # the normalised utility the operator read
    relevance_coefficient: float
    relevance_term: float
    diversity_term: float
    diversity_kind: str | None
    diversity_value: float | None
    most_similar: Similar | None
    penalties: tuple[PenaltyPart, ...]
    caps_broken: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    position: int
    picked: Breakdown
    runner_up: Breakdown | None
    margin: float | None
    cap_excluded: tuple[str, ...]
    best_capped: Breakdown | None  # the best cap-excluded candidate, when it outscored the pick
    cap_forced: bool  # every candidate broke a cap: the caps were ignored at this step
    relevance_fill: bool  # DPP stopped diversifying: filled by relevance


@dataclass(frozen=True)
class WeightApplied:
    name: str
    value: float
    source: str


@dataclass(frozen=True)
class Explanation:
    request_id: str
    spec: str
    algorithm: str
    params: dict[str, Any]
    candidates: int
    eligible: int
    filtered: int
    truncated: int
    slate: int
    weights: tuple[WeightApplied, ...]
    action: int | None  # the policy's grid action (-1: the fixed fallback weights)
    propensity: float | None
    steps: tuple[Step, ...]


class _Explainer:
    """Builds breakdowns for one traced request (the post hoc details live here)."""

    def __init__(self, tr: Traced) -> None:
        self.tr = tr
        # The constraints with a penalty term, in the trace's order, under its labels.
        self.penalties = [c for c in tr.constraints if c.kind.penalty_label(c.attrs) is not None]
        self.penalty_keys = [c.label for c in self.penalties]
        self.plugin = DIVERSIFIERS[tr.algorithm]
        self.stopped_from = self.plugin.stopped_from(
            tr.params, tr.steps, tr.relevance, tr.picks, tr.early_stop
        )

    def relevance_coefficient(self, t: int) -> float:
        return self.plugin.relevance_coefficient(self.tr.params, self.stopped(t))

    def stopped(self, t: int) -> bool:
        return self.stopped_from is not None and t >= self.stopped_from

    def breakdown(self, t: int, i: int) -> Breakdown:
        tr = self.tr
        steps = tr.steps
        parts = tuple(
            UtilityPart(w, v, src, obj, float(f[i]), float(v * f[i]))
            for w, v, src, obj, f in tr.terms
        )
        diversity = float(steps["diversity"][t, i]) if "diversity" in steps else 0.0
        kind, value = self.diversity_detail(t, diversity)
        penalties = tuple(
            PenaltyPart(self.penalty_name(k), float(steps[key][t, i]), self.causes(k, t, i))
            for k, key in enumerate(self.penalty_keys)
        )
        return Breakdown(
            candidate_id=tr.candidate_ids[i],
            index=i,
            score=float(steps["score"][t, i]),
            utility=float(tr.utility[i]),
            utility_parts=parts,
            utility_constant=tr.constant,
            relevance=float(tr.relevance[i]),
            relevance_coefficient=self.relevance_coefficient(t),
            relevance_term=float(steps["relevance"][t, i]),
            diversity_term=diversity,
            diversity_kind=kind,
            diversity_value=value,
            most_similar=self.most_similar(t, i),
            penalties=penalties,
            caps_broken=self.caps_broken(t, i),
        )

    def diversity_detail(self, t: int, term: float) -> tuple[str | None, float | None]:
        """The diversity term in the algorithm's own quantity (its plugin says which)."""
        return self.plugin.diversity_detail(self.tr.params, t, term, self.stopped(t))

    def context(self, t: int) -> list[int]:
        """Positions the diversity term conditions on at step t."""
        tr = self.tr
        window = self.plugin.context_window(tr.params)
        start = max(0, t - window) if window else 0
        return [q for q in range(start, t) if tr.picks[q] >= 0]

    def most_similar(self, t: int, i: int) -> Similar | None:
        tr = self.tr
        if tr.phi is None or t == 0 or self.stopped(t):
            return None
        positions = self.context(t)
        if not positions:
            return None
        placed = [tr.picks[q] for q in positions]
        sims = tr.phi[placed] @ tr.phi[i]
        if self.plugin.feature_bias:
            sims = sims - 1.0  # the feature map carries a constant 1: report the spec's own
        best = int(np.argmax(sims))  # the earliest position on ties
        return Similar(positions[best], tr.candidate_ids[placed[best]], float(sims[best]))

    def penalty_name(self, k: int) -> str:
        c = self.penalties[k]
        return str(c.kind.penalty_label(c.attrs))

    def causes(self, k: int, t: int, i: int) -> tuple[Cause, ...]:
        """The earlier positions behind penalty k of candidate i at step t (DESIGN §3.5, §3.6)."""
        tr, c = self.tr, self.penalties[k]
        return tuple(
            Cause(found.position, tr.candidate_ids[found.candidate], found.amount)
            for found in c.kind.causes(c.data, tr.picks, t, i)
        )

    def caps_broken(self, t: int, i: int) -> tuple[str, ...]:
        """The rules candidate i would break if taken at step t (recounted from the picks)."""
        tr = self.tr
        broken = (c.kind.broken(c.attrs, c.data, tr.picks, t, i) for c in tr.constraints)
        return tuple(why for why in broken if why is not None)

    def allowed(self, t: int) -> np.ndarray:
        steps = self.tr.steps
        return np.isfinite(steps["score"][t]) & (steps["cap_excluded"][t] == 0)

    def step(self, t: int) -> Step:
        tr = self.tr
        j = tr.picks[t]
        score = tr.steps["score"][t]
        open_ = np.isfinite(score)
        excluded = open_ & (tr.steps["cap_excluded"][t] > 0)
        allowed = open_ & ~excluded
        allowed[j] = False
        runner = _argmax(score, allowed)
        capped = _argmax(score, excluded)
        picked = self.breakdown(t, j)
        best_capped = (
            self.breakdown(t, capped) if capped is not None and score[capped] > score[j] else None
        )
        forced = bool(open_.any() and not excluded.any() and self.caps_broken(t, j))
        return Step(
            position=t,
            picked=picked,
            runner_up=self.breakdown(t, runner) if runner is not None else None,
            margin=float(score[j] - score[runner]) if runner is not None else None,
            cap_excluded=tuple(tr.candidate_ids[c] for c in np.flatnonzero(excluded)),
            best_capped=best_capped,
            cap_forced=forced,
            relevance_fill=self.stopped(t),
        )


def _argmax(score: np.ndarray, allowed: np.ndarray) -> int | None:
    """The best allowed candidate, the lower index on ties (the operators' rule)."""
    if not allowed.any():
        return None
    return int(np.argmax(np.where(allowed, score, -np.inf)))


def explain(tr: Traced, top: int | None = None) -> Explanation:
    """The step-by-step explanation of a traced request's slate (the first ``top`` positions)."""
    ex = _Explainer(tr)
    placed = [t for t, j in enumerate(tr.picks) if j >= 0]
    shown = placed if top is None else placed[:top]
    return Explanation(
        request_id=tr.request_id,
        spec=tr.spec,
        algorithm=tr.algorithm,
        params=tr.params,
        candidates=tr.n,
        eligible=int(tr.eligible.sum()),
        filtered=sum(1 for f in tr.filtered_by if f is not None),
        truncated=int(tr.truncated.sum()),
        slate=len(placed),
        weights=tuple(WeightApplied(*w) for w in tr.weights),
        action=tr.action,
        propensity=tr.propensity,
        steps=tuple(ex.step(t) for t in shown),
    )


# ---------------------------------------------------------------------------------------------
# --why


@dataclass(frozen=True)
class WhyStep:
    """One step before the candidate was placed: the pick, and the gap term by term."""

    position: int
    picked: Breakdown
    candidate: Breakdown
    margin: float  # picked score − the candidate's score
    rank: int  # the candidate's rank among the step's allowed candidates (1 = the pick)
    cap_excluded: bool
    gaps: dict[str, float]  # how much each term favoured the pick (they add up to the margin)


@dataclass(frozen=True)
class Why:
    request_id: str
    candidate_id: str
    index: int
    eligible: bool
    reason: str | None  # why it never competed (filtered, truncated)
    utility: float
    utility_rank: int | None  # where utility alone would have put it (0-based)
    placed_at: int | None
    placed: Breakdown | None  # its breakdown at the step that placed it
    runner_up_margin: float | None  # how far ahead of the runner-up it was when placed
    steps: tuple[WhyStep, ...]


def why(tr: Traced, candidate_id: str) -> Why:
    """Why one candidate landed where it did (or nowhere)."""
    if candidate_id not in tr.candidate_ids:
        raise ExplainError(
            f"candidate `{candidate_id}` is not in request `{tr.request_id}`",
            did_you_mean(candidate_id, tr.candidate_ids),
        )
    ex = _Explainer(tr)
    c = tr.candidate_ids.index(candidate_id)
    reason = None
    if tr.filtered_by[c] is not None:
        reason = f"filtered out: it is in the set `{tr.filtered_by[c]}`"
    elif tr.truncated[c]:
        reason = f"truncated: not in the top {int(tr.eligible.sum())} by utility"
    order = _utility_order(tr)
    rank = order.index(c) if c in order else None
    placed_at = tr.picks.index(c) if c in tr.picks else None
    steps: list[WhyStep] = []
    placed = None
    runner_margin = None
    if tr.eligible[c]:
        end = placed_at if placed_at is not None else sum(1 for j in tr.picks if j >= 0)
        for t in range(end):
            steps.append(_why_step(ex, t, c))
        if placed_at is not None:
            step = ex.step(placed_at)
            placed = step.picked
            runner_margin = step.margin
    return Why(
        request_id=tr.request_id,
        candidate_id=candidate_id,
        index=c,
        eligible=bool(tr.eligible[c]),
        reason=reason,
        utility=float(tr.utility[c]),
        utility_rank=rank,
        placed_at=placed_at,
        placed=placed,
        runner_up_margin=runner_margin,
        steps=tuple(steps),
    )


def _utility_order(tr: Traced) -> list[int]:
    """Eligible candidates by utility, highest first, the lower index on ties."""
    idx = np.flatnonzero(tr.eligible)
    return [int(i) for i in sorted(idx, key=lambda i: (-tr.utility[i], i))]


def _why_step(ex: _Explainer, t: int, c: int) -> WhyStep:
    tr = ex.tr
    j = tr.picks[t]
    score = tr.steps["score"][t]
    picked, cand = ex.breakdown(t, j), ex.breakdown(t, c)
    allowed = ex.allowed(t)
    better = np.sum(allowed & (score > score[c])) + np.sum(allowed[:c] & (score[:c] == score[c]))
    rank = int(better) + 1
    gaps = {
        "relevance": picked.relevance_term - cand.relevance_term,
        "diversity": picked.diversity_term - cand.diversity_term,
    }
    for a, b in zip(picked.penalties, cand.penalties, strict=True):
        gaps[a.name] = b.value - a.value
    return WhyStep(
        position=t,
        picked=picked,
        candidate=cand,
        margin=float(score[j] - score[c]),
        rank=rank,
        cap_excluded=bool(tr.steps["cap_excluded"][t, c] > 0),
        gaps=gaps,
    )


# ---------------------------------------------------------------------------------------------
# rendering


def _round(value: Any) -> Any:
    """Floats to 6 significant digits: stable JSON across float noise, still exact enough."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v) for v in value]
    return value


def render_json(result: Explanation | Why) -> str:
    kind = "explain" if isinstance(result, Explanation) else "why"
    return json.dumps({"kind": kind, **_round(asdict(result))}, indent=2, ensure_ascii=False) + "\n"


def _num(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def _algorithm_line(e: Explanation | Traced) -> str:
    plugin = DIVERSIFIERS[e.algorithm]
    if not plugin.uses_features:
        return "no diversity (greedy by utility)"
    detail = plugin.describe(e.params)
    return f"{e.algorithm} ({detail}, relevance = {e.params.get('relevance')}(utility))"


def _margin(x: float) -> str:
    """A margin; an exact tie says how it was broken, a tiny one keeps its digits."""
    if x == 0:
        return "0 (tie: the lower index wins)"
    return f"{x:+.4f}" if abs(x) >= 5e-5 else f"{x:+.2e}"


def _utility_cell(b: Breakdown) -> Text:
    lines = [f"{b.utility:.4f}"]
    for part in b.utility_parts:
        lines.append(f" {part.objective} {part.weight_value:g}×{part.objective_value:.4f}")
    if b.utility_constant:
        lines.append(f" constant {b.utility_constant:g}")
    return Text("\n".join(lines))


def _relevance_cell(b: Breakdown) -> Text:
    return Text(f"{b.relevance_term:+.4f}\n {b.relevance_coefficient:g}×{b.relevance:.4f}")


def _diversity_cell(b: Breakdown) -> Text:
    lines = [f"{b.diversity_term:+.4f}"]
    if b.diversity_value is not None:
        lines.append(f" {b.diversity_kind} {b.diversity_value:.4f}")
    if b.most_similar is not None:
        s = b.most_similar
        lines.append(f" ≈ #{s.position} {s.candidate_id} ({s.similarity:.3f})")
    return Text("\n".join(lines))


def _penalty_cell(b: Breakdown) -> Text:
    lines = []
    for p in b.penalties:
        if p.value == 0 and not p.causes:
            continue
        causes = " ".join(f"#{c.position}" for c in p.causes)
        lines.append(f"−{p.value:.4f} {p.name}" + (f" ← {causes}" if causes else ""))
    return Text("\n".join(lines) if lines else "0")


def _make_console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, color_system=None, highlight=False, soft_wrap=False,
        emoji=False, legacy_windows=False,
    )  # fmt: skip
    return console, buffer


def _trimmed(buffer: io.StringIO) -> str:
    """The rendering without rich's padding at line ends (diff- and golden-friendly)."""
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def _header(e: Explanation) -> list[str]:
    weights = " · ".join(f"{w.name}={w.value:g} ({w.source})" for w in e.weights)
    action = ""
    if e.action is not None and e.action >= 0:
        action = f" · policy action {e.action} (propensity {e.propensity or 0:.4g})"
    dropped = []
    if e.filtered:
        dropped.append(f"{e.filtered} filtered")
    if e.truncated:
        dropped.append(f"{e.truncated} truncated")
    more = f" ({', '.join(dropped)})" if dropped else ""
    return [
        f"request {e.request_id} · spec {e.spec} · {_algorithm_line(e)}",
        f"candidates {e.candidates} · eligible {e.eligible}{more} · slate {e.slate}",
        f"weights: {weights}{action}",
        (
            "score = relevance − penalties"
            if not DIVERSIFIERS[e.algorithm].uses_features
            else "score = relevance + diversity − penalties"
        )
        + "; #k is slate position k",
    ]


def render_text(e: Explanation, width: int = 160) -> str:
    console, buffer = _make_console(width)
    for line in _header(e):
        console.print(line, markup=False)
    table = Table(box=box.SIMPLE_HEAD, show_lines=False, pad_edge=False)
    diverse = DIVERSIFIERS[e.algorithm].uses_features
    for name, justify in (
        ("pos", "right"), ("", "left"), ("candidate", "left"), ("score", "right"),
        ("utility (w×objective)", "left"), ("relevance", "left"),
        *([("diversity", "left")] if diverse else []), ("penalties", "left"), ("notes", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for step in e.steps:
        notes = []
        if step.margin is not None:
            notes.append(f"margin {_margin(step.margin)}")
        if step.cap_excluded:
            notes.append(f"caps excluded {len(step.cap_excluded)}")
        if step.best_capped is not None:
            b = step.best_capped
            notes.append(f"capped: {b.candidate_id} ({b.score:.4f})")
            notes += [f" {c}" for c in b.caps_broken]
        if step.cap_forced:
            notes.append("cap ignored: every candidate broke one")
        if step.relevance_fill:
            notes.append("DPP stopped: fill by relevance")
        rows = [("pick", step.picked, "\n".join(notes))]
        if step.runner_up is not None:
            rows.append(("2nd", step.runner_up, ""))
        for k, (role, b, note) in enumerate(rows):
            table.add_row(
                str(step.position) if k == 0 else "",
                role,
                b.candidate_id,
                f"{b.score:.4f}",
                _utility_cell(b),
                _relevance_cell(b),
                *([_diversity_cell(b)] if diverse else []),
                _penalty_cell(b),
                Text(note),
                end_section=k == len(rows) - 1,
            )
    console.print(table)
    return _trimmed(buffer)


def render_why_text(w: Why, width: int = 160) -> str:
    console, buffer = _make_console(width)
    say: Callable[[str], None] = lambda line: console.print(line, markup=False)  # noqa: E731
    say(f"request {w.request_id} · candidate {w.candidate_id} · utility {w.utility:.4f}")
    if not w.eligible:
        say(f"never competed: {w.reason or 'not eligible'}")
        return _trimmed(buffer)
    by_utility = f"position {w.utility_rank}" if w.utility_rank is not None else "–"
    placed = f"placed at position {w.placed_at}" if w.placed_at is not None else "never placed"
    say(f"by utility alone: {by_utility} · {placed}")
    if w.placed is not None and w.runner_up_margin is not None:
        say(
            f"when placed: score {w.placed.score:.4f}, ahead of the runner-up by {w.runner_up_margin:+.4f}"
        )
    if not w.steps:
        return _trimmed(buffer)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name, justify in (
        ("pos", "right"), ("picked", "left"), ("its score", "right"), ("this score", "right"),
        ("margin", "right"), ("rank", "right"), ("why the pick won (term by term)", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in w.steps:
        if s.cap_excluded:
            reason = "excluded by cap: " + "; ".join(s.candidate.caps_broken)
        else:
            gaps = sorted(s.gaps.items(), key=lambda kv: -abs(kv[1]))
            shown = [f"{name} {gap:+.4f}" for name, gap in gaps if abs(gap) >= 5e-5]
            reason = ", ".join(shown) or "tie"
        table.add_row(
            str(s.position), s.picked.candidate_id, f"{s.picked.score:.4f}",
            f"{s.candidate.score:.4f}", _margin(s.margin), "–" if s.cap_excluded else str(s.rank),
            reason,
        )  # fmt: skip
    console.print(table)
    return _trimmed(buffer)


TEXT_WIDTH = 160
"""Width of the text rendering when stdout is not a terminal (files, pipes, golden tests)."""
