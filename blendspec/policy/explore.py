"""Exploration logs and on-policy truth from the simulator, through the spec's real blending graph.

A policy can only be learned from logs whose actions were drawn by a *known* behaviour policy, and
the outcomes must come from the slate that those weights really produce — diversity, spacing and
caps included — or the learned weights would optimise a different system than the one served.
So each simulated request here is: state → behaviour policy draws an action (uniform, or ε-greedy
around the spec's fallback weights or a given policy) → the action's weights go into the compiled
graph → the graph blends the request → :meth:`World.respond` shows the slate to the user.

The compiled graph takes per-request weights through :class:`WeightsLowering`, a
:class:`~blendspec.compiler.lower.TorchLowering` that reads a ``[B, n_weights]`` tensor under the reserved
input key :data:`WEIGHTS_KEY` (``"@weights"``; ``@`` cannot start a declared input name, so it
cannot collide). The same mechanism evaluates any policy or fixed weights on-policy
(:func:`evaluate_on_policy`), using the simulator's exact expected outcomes, which is the ground
truth that off-policy estimates are checked against.

:func:`grid_values` serves held-out requests under *every* action of the grid (the exhaustive
search for the best fixed weights, and the per-segment and per-request oracles) without paying
for it a thousand times over: the similarity feature map is built once per request and reused
across actions, many (request, action) rows are blended per graph call, and the expected outcomes
are computed vectorised (:func:`expected_outcomes`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from blendspec.compiler.compile import compile_graph
from blendspec.compiler.graph import Node
from blendspec.compiler.lower import BlendModule, PolicyDecision, PolicyRuntime, TorchLowering
from blendspec.policy.grid import ActionGrid, state_inputs
from blendspec.policy.rewards import (
    ACTION_COLUMN,
    PROPENSITY_COLUMN,
    REQUEST_ID_COLUMN,
    reward_values,
)
from blendspec.policy.runtime import LearnedPolicy
from blendspec.sim.candidates import Request
from blendspec.sim.chain import OUTCOMES
from blendspec.sim.core import World
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import Spec

__all__ = [
    "FEATURES_KEY",
    "WEIGHTS_KEY",
    "Blender",
    "GridValues",
    "OnPolicyResult",
    "WeightsLowering",
    "evaluate_on_policy",
    "expected_outcomes",
    "exploration_logs",
    "grid_values",
    "simulated_states",
    "write_logs",
]

WEIGHTS_KEY = "@weights"
"""Reserved input key: per-request weights ``[B, len(spec.weights)]`` in declaration order."""

Behaviour = Literal["uniform", "epsilon"]
Chooser = Callable[[np.ndarray], np.ndarray]


class WeightsLowering(TorchLowering):
    """Every weight read from the batch's ``@weights`` tensor when present, else as compiled."""

    def __init__(
        self, slate_length: int, weight_names: Sequence[str], policy: PolicyRuntime | None = None
    ) -> None:
        super().__init__(slate_length, policy)
        self.column = {name: i for i, name in enumerate(weight_names)}

    def _given(self, node: Node, batch: dict[str, Tensor]) -> Tensor | None:
        weights = batch.get(WEIGHTS_KEY)
        if weights is None:
            return None
        return weights[:, self.column[node.attrs["name"]]].to(torch.float32)

    def visit_weight(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        given = self._given(node, batch)
        return given if given is not None else super().visit_weight(node, args, batch, mask)

    def visit_policy(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> PolicyDecision:
        weights = batch.get(WEIGHTS_KEY)
        if weights is None:
            return super().visit_policy(node, args, batch, mask)
        # The caller chose the weights; the node only carries the grid, so no action is known.
        b = mask.shape[0]
        columns = [self.column[name] for name in node.attrs["weights"]]
        return PolicyDecision(
            action=torch.full((b,), -1, dtype=torch.int64),
            propensity=torch.ones(b, dtype=torch.float32),
            fallback=torch.zeros(b, dtype=torch.bool),
            weights=weights[:, columns].to(torch.float32),
        )

    def visit_policy_weight(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        given = self._given(node, batch)
        return given if given is not None else super().visit_policy_weight(node, args, batch, mask)


class Blender:
    """The spec's compiled graph applied to simulator requests with per-request weights."""

    def __init__(self, loaded: LoadedSpec, world: World) -> None:
        self.loaded = loaded
        self.spec: Spec = loaded.spec
        self.world = world
        self.weight_names = tuple(self.spec.weights)
        graph = compile_graph(loaded)
        self.module = BlendModule(
            graph, WeightsLowering(int(graph.output.type.dims[1]), self.weight_names)
        )
        known = set(world.columns([]))
        missing = [n for n in self.spec.inputs if n not in known]
        if missing:
            raise ValueError(
                f"spec `{self.spec.name}` reads inputs {missing} that the simulator does not "
                f"produce; it produces {sorted(known - {'request_id', 'candidate_id'})}"
            )

    def default_weights(self) -> np.ndarray:
        return np.array([self.spec.weights[n].default for n in self.weight_names])

    def full_weights(self, policy_values: np.ndarray) -> np.ndarray:
        """``[B, W_policy]`` grid values → ``[B, W_all]`` with the fixed weights at default."""
        out = np.tile(self.default_weights(), (policy_values.shape[0], 1))
        for j, name in enumerate(self.spec.policy_weights):
            out[:, self.weight_names.index(name)] = policy_values[:, j]
        return out

    def inputs(self, requests: Sequence[Request]) -> tuple[Tensor, dict[str, Tensor]]:
        """Padded ``mask, inputs`` for the declared inputs, as the dump reader would build them."""
        cols = self.world.columns(requests)
        sizes = np.array([r.n for r in requests], dtype=np.int64)
        b, width = len(requests), int(sizes.max()) if len(requests) else 0
        offsets = np.r_[0, np.cumsum(sizes)]
        mask = torch.zeros((b, width), dtype=torch.bool)
        slot = np.concatenate([np.arange(s) for s in sizes]) if b else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(b), sizes)
        mask[owner, slot] = True
        inputs: dict[str, Tensor] = {}
        for name, declared in self.spec.inputs.items():
            values = cols[name]
            if declared.kind == "features":
                inputs[name] = torch.from_numpy(
                    np.ascontiguousarray(values[offsets[:-1]], dtype=np.float32)
                )
                continue
            if declared.kind == "category":
                _, values = np.unique(values.astype(str), return_inverse=True)
                dtype: Any = np.int64
            elif declared.kind == "flag":
                dtype = np.bool_
            elif declared.kind == "semantic_id":
                dtype = np.int64
            else:
                dtype = np.float32
            out = np.zeros((b, width, *values.shape[1:]), dtype=dtype)
            out[owner, slot] = values
            inputs[name] = torch.from_numpy(out)
        return mask, inputs

    def slates(self, requests: Sequence[Request], weights: np.ndarray) -> list[np.ndarray]:
        """Candidate ids in display order per request, blended with ``weights`` ``[B, W_all]``."""
        if not requests:
            return []
        mask, inputs = self.inputs(requests)
        inputs[WEIGHTS_KEY] = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        with torch.inference_mode():
            out = self.module(mask, inputs)
        indices = out["indices"].numpy()
        return [r.candidate_ids[row[row >= 0]] for r, row in zip(requests, indices, strict=True)]


def _states(spec: Spec, requests: Sequence[Request]) -> np.ndarray:
    parts = []
    for name, size in state_inputs(spec):
        if name != "user_state":
            raise ValueError(f"the simulator provides the state `user_state`, not `{name}`")
        parts.append(np.stack([r.user_state for r in requests]).reshape(-1, size))
    return np.concatenate(parts, axis=1).astype(np.float32)


def _batches(
    world: World, n: int, *, seed: int, start: int, candidates: Any, batch_size: int
) -> Iterator[list[Request]]:
    batch: list[Request] = []
    for r in world.requests(n, candidates=candidates, seed=seed, start=start):
        batch.append(r)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def exploration_logs(
    loaded: LoadedSpec,
    world: World,
    requests: int,
    *,
    behaviour: Behaviour = "uniform",
    epsilon: float = 0.1,
    policy: LearnedPolicy | None = None,
    seed: int = 0,
    start: int = 0,
    candidates: int | tuple[int, int] = 200,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """Request-level exploration logs (DESIGN §4) for ``requests`` simulator requests.

    ``behaviour="uniform"`` draws every grid action with probability 1/K (what PRL-PUTS logged);
    ``"epsilon"`` takes the greedy action — ``policy``'s argmax, or without one the grid action
    nearest the spec's fixed defaults — with probability 1−ε and a uniform action otherwise, so
    ordinary traffic stays close to production while every action keeps a positive propensity.

    Columns: ``request_id``, ``segment`` (simulator truth, for reports only — never a policy
    input), the state inputs (fixed-size lists), ``action``, one ``weight_<name>`` column per
    policy weight, ``propensity``, the sampled outcome counts (``click``, ``long_click``, ``save``,
    ``hide``, ``conversion``, ``revenue``) and their exact expectations ``expected_<outcome>``.
    Seeded: the same arguments give the same table. ``progress(n)`` is called as each batch's
    ``n`` requests are blended and answered.
    """
    spec = loaded.spec
    if behaviour not in ("uniform", "epsilon"):
        raise ValueError("behaviour must be 'uniform' or 'epsilon'")
    if not 0.0 < epsilon <= 1.0 and behaviour == "epsilon":
        raise ValueError("epsilon must be in (0, 1] so that every action can be logged")
    grid = ActionGrid.from_spec(spec)
    blender = Blender(loaded, world)
    k = grid.size
    fallback = grid.default_action(spec)
    rng = np.random.default_rng([seed, start, 0xE1])
    cols: dict[str, list[Any]] = {
        c: [] for c in (REQUEST_ID_COLUMN, "segment", ACTION_COLUMN, PROPENSITY_COLUMN, "_state")
    }
    outcome_rows: dict[str, list[float]] = {
        f"{p}{o}": [] for o in OUTCOMES for p in ("", "expected_")
    }
    for batch in _batches(
        world, requests, seed=seed, start=start, candidates=candidates, batch_size=batch_size
    ):
        states = _states(spec, batch)
        if behaviour == "uniform":
            actions = rng.integers(0, k, len(batch))
            props = np.full(len(batch), 1.0 / k)
        else:
            greedy = (
                policy.probs(states).argmax(axis=1)
                if policy is not None
                else np.full(len(batch), fallback)
            )
            explore = rng.random(len(batch)) < epsilon
            actions = np.where(explore, rng.integers(0, k, len(batch)), greedy)
            props = np.where(actions == greedy, 1.0 - epsilon + epsilon / k, epsilon / k)
        weights = blender.full_weights(grid.decode(actions))
        for request, slate in zip(batch, blender.slates(batch, weights), strict=True):
            response = world.respond(request, slate, rng)
            for o in OUTCOMES:
                outcome_rows[o].append(float(response.sampled[o].sum()))
                outcome_rows[f"expected_{o}"].append(float(response.expected[o].sum()))
        cols[REQUEST_ID_COLUMN] += [r.request_id for r in batch]
        cols["segment"] += [r.segment for r in batch]
        cols[ACTION_COLUMN] += actions.tolist()
        cols[PROPENSITY_COLUMN] += props.tolist()
        cols["_state"].append(states)
        if progress is not None:
            progress(len(batch))
    n = len(cols[REQUEST_ID_COLUMN])
    state_all = (
        np.concatenate(cols["_state"])
        if cols["_state"]
        else np.zeros((0, sum(s for _, s in state_inputs(spec))), np.float32)
    )
    actions_all = np.asarray(cols[ACTION_COLUMN], dtype=np.int64)
    values = grid.decode(actions_all) if n else np.zeros((0, len(grid.names)))
    table: dict[str, pa.Array] = {
        REQUEST_ID_COLUMN: pa.array(cols[REQUEST_ID_COLUMN], pa.string()),
        "segment": pa.array(cols["segment"], pa.int32()),
    }
    offset = 0
    for name, size in state_inputs(spec):
        flat = np.ascontiguousarray(state_all[:, offset : offset + size]).reshape(-1)
        table[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), size)
        offset += size
    table[ACTION_COLUMN] = pa.array(actions_all, pa.int64())
    for j, name in enumerate(grid.names):
        table[f"weight_{name}"] = pa.array(values[:, j], pa.float32())
    table[PROPENSITY_COLUMN] = pa.array(cols[PROPENSITY_COLUMN], pa.float64())
    for name, v in outcome_rows.items():
        table[name] = pa.array(v, pa.float64())
    return pa.table(table)


def write_logs(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write logs as Parquet atomically: readers never see a half-written file."""
    from blendspec.io.outputs import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


@dataclass(frozen=True)
class OnPolicyResult:
    """Mean expected reward per request (exact expectations, no sampling noise) and by segment."""

    value: float
    std_error: float
    requests: int
    by_segment: dict[str, float]
    outcomes: dict[str, float]
    actions: np.ndarray


def evaluate_on_policy(
    loaded: LoadedSpec,
    world: World,
    chooser: LearnedPolicy | Chooser | int | np.ndarray,
    requests: int,
    *,
    reward: str | None = None,
    seed: int = 1,
    start: int = 0,
    candidates: int | tuple[int, int] = 200,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> OnPolicyResult:
    """Ground truth: serve ``requests`` held-out simulator requests and average the reward.

    ``chooser`` is a trained policy (its greedy action), a function from states ``[B, S]`` to
    action ids, a single action id (fixed weights; use it for the grid search of the best fixed
    weights), or an array of action ids, one per request. Uses a different request stream
    (``seed``) than the logs by default, so the result is a held-out figure. ``progress(n)`` is
    called as each batch's ``n`` requests are served.
    """
    spec = loaded.spec
    grid = ActionGrid.from_spec(spec)
    blender = Blender(loaded, world)
    per_request: list[float] = []
    segments: list[int] = []
    totals: dict[str, list[float]] = {o: [] for o in OUTCOMES}
    chosen: list[np.ndarray] = []
    done = 0
    for batch in _batches(
        world, requests, seed=seed, start=start, candidates=candidates, batch_size=batch_size
    ):
        states = _states(spec, batch)
        if isinstance(chooser, LearnedPolicy):
            actions = chooser.probs(states).argmax(axis=1)
        elif callable(chooser):
            actions = np.asarray(chooser(states), dtype=np.int64)
        elif np.ndim(chooser) == 0:
            actions = np.full(len(batch), int(chooser))
        else:
            actions = np.asarray(chooser, dtype=np.int64)[done : done + len(batch)]
        done += len(batch)
        chosen.append(actions)
        weights = blender.full_weights(grid.decode(actions))
        expected: dict[str, list[float]] = {o: [] for o in OUTCOMES}
        for request, slate in zip(batch, blender.slates(batch, weights), strict=True):
            e = world.expected(request, slate)
            for o in OUTCOMES:
                expected[o].append(float(e[o].sum()))
        r = reward_values(spec, reward, {o: np.asarray(v) for o, v in expected.items()})
        per_request += r.tolist()
        segments += [q.segment for q in batch]
        for o in OUTCOMES:
            totals[o] += expected[o]
        if progress is not None:
            progress(len(batch))
    values = np.asarray(per_request)
    seg = np.asarray(segments)
    names = world.segment_names
    return OnPolicyResult(
        value=float(values.mean()) if values.size else float("nan"),
        std_error=float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0,
        requests=int(values.size),
        by_segment={
            names[s]: float(values[seg == s].mean()) for s in np.unique(seg) if (seg == s).any()
        },
        outcomes={o: float(np.mean(v)) if v else float("nan") for o, v in totals.items()},
        actions=np.concatenate(chosen) if chosen else np.zeros(0, np.int64),
    )


# --------------------------------------------------------------------------------------------
# Exhaustive on-policy evaluation over the action grid
# --------------------------------------------------------------------------------------------

FEATURES_KEY = "@feature_map"
"""Reserved input key: a precomputed similarity feature map ``[B, N, D]`` (see _CachedLowering)."""


class _CachedLowering(WeightsLowering):
    """:class:`WeightsLowering` that takes the similarity feature map from the batch when given.

    The feature map depends on the request only, never on the weights, so when one request is
    blended under many actions it is computed once and repeated rather than re-normalising the
    embeddings for every action (that normalisation is over half the cost of an MMR blend).
    """

    def visit_feature_map(self, node: Node, args: Sequence[Any], *rest: Any) -> Tensor:
        batch = rest[0] if rest else {}
        given = batch.get(FEATURES_KEY) if isinstance(batch, dict) else None
        return given if given is not None else super().visit_feature_map(node, args, *rest)


def expected_outcomes(
    world: World, requests: Sequence[Request], positions: np.ndarray
) -> dict[str, np.ndarray]:
    """Expected outcome totals per slate, for many slates at once: ``{outcome: [B]}``.

    ``positions`` ``[B, T]`` are candidate *positions* within each request (what the blending
    graph returns as ``indices``), ``-1`` padding at the end of a short slate; ``requests[b]`` is
    the request of row ``b`` (a request may repeat, one row per action). The totals of
    :meth:`World.chain_batch`, the simulator's one response model (the same one
    :meth:`World.expected` evaluates slate by slate), whose padded slots are zero.
    """
    chain = world.chain_batch(requests, positions)
    return {o: chain[o].sum(axis=1) for o in OUTCOMES}


@dataclass(frozen=True)
class GridValues:
    """Exact expected outcome totals of every (held-out request, action) pair.

    ``outcomes[name]`` is ``[R, A]`` (request ``r`` served with action ``actions[a]``). Any
    policy — fixed weights, a per-segment oracle, a learned network — is evaluated on these
    requests by looking up its action per request, so every comparison is paired: the same
    requests, the same candidate sets, the same exact expectations.
    """

    actions: np.ndarray
    outcomes: dict[str, np.ndarray]
    segments: np.ndarray
    states: np.ndarray
    segment_names: tuple[str, ...]
    seconds: float

    @property
    def requests(self) -> int:
        return int(self.segments.shape[0])

    def rewards(self, spec: Spec, reward: str | None = None) -> np.ndarray:
        """The declared reward per (request, action), ``[R, A]``."""
        shape = next(iter(self.outcomes.values())).shape
        flat = {k: v.reshape(-1) for k, v in self.outcomes.items()}
        return reward_values(spec, reward, flat).reshape(shape)

    def column(self, action_ids: np.ndarray) -> np.ndarray:
        """Column index of each action id (ids must be among ``actions``)."""
        lookup = np.full(int(self.actions.max()) + 1, -1, dtype=np.int64)
        lookup[self.actions] = np.arange(self.actions.size)
        cols = lookup[np.asarray(action_ids, dtype=np.int64)]
        if (cols < 0).any():
            raise ValueError("an action was not evaluated in this grid")
        return cols

    def serve(self, action_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Per-request outcome totals when request ``r`` gets ``action_ids[r]``."""
        rows = np.arange(self.requests)
        cols = self.column(np.broadcast_to(action_ids, (self.requests,)))
        return {k: v[rows, cols] for k, v in self.outcomes.items()}


def grid_values(
    loaded: LoadedSpec,
    world: World,
    requests: int,
    *,
    actions: np.ndarray | None = None,
    seed: int = 1,
    start: int = 0,
    candidates: int | tuple[int, int] = 200,
    request_chunk: int = 32,
    batch_rows: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> GridValues:
    """Serve each of ``requests`` held-out requests with every action (default: the whole grid).

    Efficient by construction: requests are generated once, their padded inputs and similarity
    feature map are built once per chunk of ``request_chunk`` requests and repeated across
    actions, ``batch_rows`` (request, action) rows are blended per graph call, and the expected
    outcomes of all those slates are computed vectorised (:func:`expected_outcomes`).
    """
    spec = loaded.spec
    grid = ActionGrid.from_spec(spec)
    action_ids = np.arange(grid.size) if actions is None else np.asarray(actions, np.int64)
    blender = Blender(loaded, world)
    module = BlendModule(
        blender.module.graph,
        _CachedLowering(blender.module.lowering.slate_length, blender.weight_names),
    )
    fmap_node = next((n for n in module.graph.nodes if n.op == "feature_map"), None)
    full = blender.full_weights(grid.decode(action_ids)).astype(np.float32)
    n_act = action_ids.size
    outcomes = {o: np.zeros((requests, n_act)) for o in OUTCOMES}
    segments = np.zeros(requests, dtype=np.int64)
    states: list[np.ndarray] = []
    began = time.perf_counter()
    done = 0
    for chunk in _batches(
        world, requests, seed=seed, start=start, candidates=candidates, batch_size=request_chunk
    ):
        states.append(_states(spec, chunk))
        segments[done : done + len(chunk)] = [r.segment for r in chunk]
        mask, inputs = blender.inputs(chunk)
        if fmap_node is not None:
            inputs[FEATURES_KEY] = _feature_map(module, fmap_node, mask, inputs)
        c = len(chunk)
        per_call = max(1, batch_rows // c)  # actions per graph call
        for a0 in range(0, n_act, per_call):
            a1 = min(n_act, a0 + per_call)
            reps = a1 - a0
            # Rows are action-major: row = (a - a0) * c + request.
            batch = {k: v.repeat(reps, *([1] * (v.ndim - 1))) for k, v in inputs.items()}
            batch[WEIGHTS_KEY] = torch.from_numpy(np.repeat(full[a0:a1], c, axis=0))
            with torch.inference_mode():
                out = module(mask.repeat(reps, 1), batch)
            totals = expected_outcomes(world, chunk * reps, out["indices"].numpy())
            for o, v in totals.items():
                outcomes[o][done : done + c, a0:a1] = v.reshape(reps, c).T
        done += c
        if progress is not None:
            progress(done, requests)
    state = (
        np.concatenate(states)
        if states
        else np.zeros((0, sum(s for _, s in state_inputs(spec))), np.float32)
    )
    return GridValues(
        actions=action_ids,
        outcomes=outcomes,
        segments=segments,
        states=state,
        segment_names=world.segment_names,
        seconds=time.perf_counter() - began,
    )


def _feature_map(
    module: BlendModule, node: Node, mask: Tensor, inputs: dict[str, Tensor]
) -> Tensor:
    """Run the graph up to the feature-map node (its inputs only) and return its value."""
    graph = module.graph
    needed: set[int] = set()
    stack = [node.id]
    while stack:
        i = stack.pop()
        if i not in needed:
            needed.add(i)
            stack.extend(graph.nodes[i].inputs)
    values: dict[int, Any] = {}
    with torch.inference_mode():
        for n, visitor in zip(graph.nodes, module._visitors, strict=True):
            if n.id in needed:
                values[n.id] = visitor(n, [values[i] for i in n.inputs], inputs, mask)
    return values[node.id]


def simulated_states(
    loaded: LoadedSpec,
    world: World,
    requests: int,
    *,
    seed: int = 1,
    start: int = 0,
    candidates: int | tuple[int, int] = 200,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Policy states, true segments and segment names of held-out simulator requests."""
    states, segments = [], []
    for batch in _batches(
        world, requests, seed=seed, start=start, candidates=candidates, batch_size=256
    ):
        states.append(_states(loaded.spec, batch))
        segments += [r.segment for r in batch]
    width = sum(s for _, s in state_inputs(loaded.spec))
    return (
        np.concatenate(states) if states else np.zeros((0, width), np.float32),
        np.asarray(segments, dtype=np.int64),
        world.segment_names,
    )
