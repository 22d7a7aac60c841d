"""The estimated effect of a spec change on the outcome (`blend diff --logs`): both specs' values
of the reward they declare, and the paired difference NEW − OLD with a 95% interval, estimated
off-policy from request-level logs of the same blending graph under weights drawn with known
propensities (the logs `blend simulate --exploration` writes, or `blend run` slates of a spec
with a policy joined with their outcomes).

Each side's target is the distribution over the logged action grid that `blend run` would draw
from for each logged request: the spec's own policy runtime
(:class:`blendspec.compiler.lower.PolicyRuntime`: network, exploration and fallback) evaluated on
the logged state, or, for a spec whose weights are all fixed, the grid action of those weights.
Nothing here re-implements how a spec acts. The estimators are SNIPS and doubly robust (with the
reward model ``blend policy train --method model`` learns, cross-fitted on two folds); both sides
are evaluated on the same bootstrap resamples of the requests (:func:`evaluate_pair`).

When the logs cannot answer — the change touches something the logged actions do not vary, the
grids differ from the logged one, a needed column is missing, or too few requests carry an
estimate — the result is an :class:`~blendspec.review.changes.Outcome` with the reason, never a
number. Logs that cannot be read at all raise :class:`LogsError` (the command exits 2).

Needs numpy and pyarrow; torch only when a side has a policy network or DR is asked for.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blendspec.policy.grid import ActionGrid
from blendspec.review.changes import Change, Outcome, OutcomeEstimate, Severity
from blendspec.spec.expr import refs
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import Spec

if TYPE_CHECKING:
    import pyarrow as pa

    from blendspec.policy.train import TrainConfig

__all__ = [
    "ESTIMATOR_NAMES",
    "LogsError",
    "OutcomeUsageError",
    "RequestLogs",
    "compute_outcome",
    "read_logs",
]

ESTIMATOR_NAMES: dict[str, str] = {"snips": "SNIPS", "dr": "DR", "ips": "IPS"}
"""The estimators `--estimators` accepts, and how they are printed."""

FOLDS = 2
_MEAN_WEIGHT = (0.5, 2.0)  # the importance weights' mean outside this: the logs miss the target
_CHUNK = 4096  # logged requests per target evaluation (memory: chunk × actions floats)
_WEIGHT_PREFIX = "weight_"

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: the stage's description, steps done so far, its total."""


class LogsError(Exception):
    """The logs cannot be read: a missing or malformed file or column (exit 2)."""


class OutcomeUsageError(Exception):
    """The options ask for something the specs do not declare (exit 2)."""


class _Refusal(Exception):
    """The logs cannot answer for this pair; the message is the one-line reason."""


# ---------------------------------------------------------------- reading the logs


@dataclass
class RequestLogs:
    """Request-level logs read once and shared by every pair of a `--git` diff."""

    path: Path
    table: pa.Table
    actions: np.ndarray  # int64 [n]; -1 where the request fell back (no grid action drawn)
    propensities: np.ndarray  # float64 [n]
    request_ids: np.ndarray
    _columns: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def names(self) -> list[str]:
        return list(self.table.column_names)

    def where(self, row: int) -> str:
        return f"row {row} (request `{self.request_ids[row]}`)"

    def numbers(self, name: str) -> np.ndarray:
        """A numeric column as float64, every value finite, or a `LogsError` naming the row."""
        if name in self._columns:
            return self._columns[name]
        import pyarrow as pa

        column = self.table.column(name).combine_chunks()
        kind = column.type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            raise LogsError(f"{self.path}: column `{name}` holds {kind}, not numbers")
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise LogsError(f"{self.path}: column `{name}` is empty at {self.where(row)}")
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise LogsError(
                f"{self.path}: column `{name}` is {values[row]} at {self.where(row)}: "
                "an outcome must be a finite number"
            )
        self._columns[name] = values
        return values

    def features(self, name: str, size: int) -> np.ndarray:
        """A state column as float32 ``[n, size]`` (non-finite values kept: the policy falls
        back on them, as `blend run` does). Raises `_Refusal` on a size mismatch."""
        import pyarrow as pa

        column = self.table.column(name).combine_chunks()
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise LogsError(f"{self.path}: column `{name}` is empty at {self.where(row)}")
        if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
            lengths = (
                np.full(len(column), column.type.list_size)
                if pa.types.is_fixed_size_list(column.type)
                else column.value_lengths().to_numpy(zero_copy_only=False)
            )
            if len(column) and (lengths != size).any():
                row = int(np.flatnonzero(lengths != size)[0])
                raise _Refusal(
                    f"the logs' column `{name}` has {int(lengths[row])} values at "
                    f"{self.where(row)}, the policy state `{name}` needs {size}"
                )
            flat = column.flatten()
            if not pa.types.is_floating(flat.type) and not pa.types.is_integer(flat.type):
                raise LogsError(f"{self.path}: column `{name}` holds {column.type}, not numbers")
            values = flat.to_numpy(zero_copy_only=False).astype(np.float32)
            return values.reshape(len(column), size)
        if size != 1:
            raise _Refusal(
                f"the logs' column `{name}` holds one number per request, the policy state "
                f"`{name}` needs {size}"
            )
        return self.numbers(name).astype(np.float32).reshape(-1, 1)


def read_logs(path: Path) -> RequestLogs:
    """Read request-level logs (a Parquet file or folder) and check the columns every estimate
    needs: `action` (integer grid id, -1 for a fallback) and `propensity` (in (0, 1])."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from blendspec.policy.rewards import ACTION_COLUMN, PROPENSITY_COLUMN, REQUEST_ID_COLUMN

    if not path.exists():
        raise LogsError(f"no logs at {path}")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LogsError(f"{path}: not readable as Parquet logs ({first})") from None
    n = table.num_rows
    ids = (
        table.column(REQUEST_ID_COLUMN).to_numpy(zero_copy_only=False).astype(str)
        if REQUEST_ID_COLUMN in table.column_names
        else np.arange(n).astype(str)
    )
    logs = RequestLogs(path, table, np.zeros(0, np.int64), np.zeros(0), ids)
    for name in (ACTION_COLUMN, PROPENSITY_COLUMN):
        if name not in table.column_names:
            raise LogsError(
                f"{path}: no column `{name}`: logs need `{ACTION_COLUMN}` (the logged action's "
                f"id) and `{PROPENSITY_COLUMN}` (the probability it was drawn with)"
            )
    action = table.column(ACTION_COLUMN).combine_chunks()
    if not pa.types.is_integer(action.type):
        raise LogsError(f"{path}: column `{ACTION_COLUMN}` holds {action.type}, not action ids")
    if action.null_count:
        row = int(np.flatnonzero(action.is_null().to_numpy(zero_copy_only=False))[0])
        raise LogsError(f"{path}: column `{ACTION_COLUMN}` is empty at {logs.where(row)}")
    logs.actions = action.to_numpy(zero_copy_only=False).astype(np.int64)
    if (logs.actions < -1).any():
        row = int(np.flatnonzero(logs.actions < -1)[0])
        raise LogsError(
            f"{path}: column `{ACTION_COLUMN}` is {logs.actions[row]} at {logs.where(row)}: "
            "an action id is ≥ 0 (-1 for a request that fell back)"
        )
    try:
        propensities = logs.numbers(PROPENSITY_COLUMN)
    except LogsError as error:
        raise LogsError(str(error).replace("an outcome", "a propensity")) from None
    bad = (propensities <= 0) | (propensities > 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LogsError(
            f"{path}: column `{PROPENSITY_COLUMN}` is {propensities[row]:g} at "
            f"{logs.where(row)}: a logged action's propensity lies in (0, 1]"
        )
    logs.propensities = propensities
    return logs


# ---------------------------------------------------------------- what the logs can answer

_MEASUREMENT_KINDS = ("reward.", "outcome.", "policy.", "spec.renamed")
"""Changes that move neither the blending graph nor the weights outside the policy's axes."""


def _state_only(name: str, specs: Sequence[Spec]) -> bool:
    """Whether no spec reads input `name` anywhere but in its policy state: such an input
    changes what a policy sees, never how a slate is blended."""
    from blendspec.review.renames import _input_uses

    return all(
        all(use.startswith("state:") for use in _input_uses(spec).get(name, ())) for spec in specs
    )


def _outside_change(
    changes: Sequence[Change], axes: Sequence[str], specs: Sequence[Spec] = ()
) -> Change | None:
    """The first change the logs cannot speak to: anything but the weights of the logged grid,
    the policy (network, exploration, fallback, state and the inputs only the state reads),
    rewards, outcomes and names."""
    for change in changes:
        if change.severity is Severity.cosmetic or change.kind.startswith(_MEASUREMENT_KINDS):
            continue
        if change.kind.startswith("input.") and specs:
            name = change.path.split(".")[1] if "." in change.path else ""
            if name and _state_only(name, specs):
                continue
        if change.kind.startswith("weight."):
            if change.kind in ("weight.bound", "weight.sign", "weight.renamed"):
                continue  # bounds and signs are checks; a rename renames a column
            name = change.path.split(".")[1] if "." in change.path else ""
            if name in axes:
                continue
        return change
    return None


def _weight_columns(logs: RequestLogs) -> dict[str, np.ndarray]:
    """The logged weight values by weight name (`weight_<name>` columns)."""
    return {
        name[len(_WEIGHT_PREFIX) :]: logs.numbers(name)
        for name in logs.names
        if name.startswith(_WEIGHT_PREFIX)
    }


def _same(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Equal as the float32 values slates and logs store."""
    return np.asarray(a, dtype=np.float32) == np.asarray(b, dtype=np.float32)


def _grid_text(grid: ActionGrid) -> str:
    return f"{' × '.join(grid.names)}, {grid.size:,} actions"


def _grid_problem(grid: ActionGrid, logs: RequestLogs, drawn: np.ndarray, who: str) -> str | None:
    """Why `grid` is not the grid the logged actions were drawn on, or None."""
    actions = logs.actions[drawn]
    if actions.size and actions.max() >= grid.size:
        row = int(np.flatnonzero(drawn)[int(actions.argmax())])
        return (
            f"{who} action grid ({_grid_text(grid)}) is not the one the logs were drawn on: "
            f"the logs hold action {int(actions.max())} at {logs.where(row)}"
        )
    columns = _weight_columns(logs)
    varying = [n for n, v in columns.items() if v[drawn].size and np.ptp(v[drawn]) > 0]
    extra = [n for n in varying if n not in grid.names]
    if extra:
        return (
            f"{who} action grid ({_grid_text(grid)}) is not the one the logs were drawn on: "
            f"the logged actions also vary `{extra[0]}`"
        )
    decoded = grid.decode(actions) if actions.size else np.zeros((0, len(grid.names)))
    for j, name in enumerate(grid.names):
        if name not in columns:
            continue
        wrong = ~_same(decoded[:, j], columns[name][drawn])
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            row = int(np.flatnonzero(drawn)[i])
            return (
                f"{who} action grid ({_grid_text(grid)}) is not the one the logs were drawn on: "
                f"logged action {int(actions[i])} served `{name}` = "
                f"{columns[name][row]:g}, the spec's grid numbers it `{name}` = "
                f"{decoded[i, j]:g} (a changed grid or reordered policy weights renumber the "
                "actions)"
            )
    return None


def _inferred_grid(logs: RequestLogs, drawn: np.ndarray) -> ActionGrid:
    """The grid of the logged weight columns, for specs that declare none: the distinct values
    of each varying column, in the one order of the columns that numbers the logged actions."""
    columns = _weight_columns(logs)
    varying = {n: v[drawn] for n, v in columns.items() if v[drawn].size and np.ptp(v[drawn]) > 0}
    if not varying:
        raise _Refusal(
            "neither spec declares a policy action grid, and the logs carry no varying "
            "`weight_<name>` column to say which weights each logged action served"
        )
    if len(varying) > 6:
        raise _Refusal(f"the logs vary {len(varying)} weights; give a spec with the policy grid")
    values = {n: np.unique(v.astype(np.float32)).astype(np.float64) for n, v in varying.items()}
    actions = logs.actions[drawn]
    for order in itertools.permutations(varying):
        grid = ActionGrid(tuple(order), tuple(tuple(float(x) for x in values[n]) for n in order))
        if actions.max() >= grid.size:
            continue
        levels = [np.searchsorted(values[n], varying[n].astype(np.float32)) for n in order]
        if np.array_equal(np.ravel_multi_index(tuple(levels), grid.shape), actions):
            return grid
    raise _Refusal(
        "neither spec declares a policy action grid, and the logged action ids do not number "
        f"the grid of the logged weights ({', '.join(varying)}) in any order"
    )


def _grid_action(grid: ActionGrid, values: Mapping[str, float]) -> int | None:
    """The grid action serving exactly these weight values (as float32), or None."""
    levels = []
    for name, options in zip(grid.names, grid.values, strict=True):
        hit = np.flatnonzero(_same(np.asarray(options), values[name]))
        if not hit.size:
            return None
        levels.append(int(hit[0]))
    return int(np.ravel_multi_index(tuple(levels), grid.shape))


# ---------------------------------------------------------------- each side's target


class _Target:
    """How one spec acts on the logged requests: `probs(rows)` gives ``[m, K]`` float64, the
    distribution `blend run` draws the weights from for those requests."""

    def __init__(self, loaded: LoadedSpec, side: str, grid: ActionGrid, logs: RequestLogs):
        self.side, self.grid, self.logs = side, grid, logs
        spec = loaded.spec
        self.runtime: Any = None
        self.states: np.ndarray | None = None
        self.fixed_action: int | None = None
        if spec.policy is not None and spec.policy_weights:
            from blendspec.compiler.lower import PolicyRuntime
            from blendspec.policy.store import PolicyFileError

            try:
                self.runtime = PolicyRuntime.from_spec(spec, loaded.base_dir)
            except PolicyFileError as error:
                raise _Refusal(f"the {side} spec's policy file cannot be used: {error}") from None
            fallback = {
                n: float(v)
                for n, v in zip(grid.names, self.runtime.fallback_weights.tolist(), strict=True)
            }
            self.fallback_action = _grid_action(grid, fallback)
            if self.runtime.net is not None:
                self.states = _states(spec, logs, side)
            if not self.runtime.acts and self.fallback_action is None:
                raise _Refusal(_off_grid(side, fallback, grid, "its weights"))
        else:
            missing = [n for n in grid.names if n not in spec.weights]
            if missing:
                raise _Refusal(
                    f"the {side} spec has no weight `{missing[0]}`, which the logged actions set"
                )
            fixed = {n: spec.weights[n].default for n in grid.names}
            self.fixed_action = _grid_action(grid, fixed)
            if self.fixed_action is None:
                raise _Refusal(_off_grid(side, fixed, grid, "its fixed weights"))

    def probs(self, rows: np.ndarray) -> np.ndarray:
        k = self.grid.size
        if self.runtime is None or not self.runtime.acts:
            action = self.fixed_action if self.runtime is None else self.fallback_action
            out = np.zeros((rows.size, k))
            out[:, action] = 1.0
            return out
        import torch

        state = (
            torch.from_numpy(self.states[rows])
            if self.states is not None
            else torch.zeros((rows.size, 0))
        )
        with torch.inference_mode():
            probs = self.runtime.distribution(state).numpy().astype(np.float64)
            if self.runtime.net is not None:
                _, _, ok = self.runtime.scores(state)
                failed = ~ok.numpy()
                if failed.any():
                    # `blend run` serves these requests the fallback weights.
                    if self.fallback_action is None:
                        raise _Refusal(
                            f"{int(failed.sum()):,} logged requests make the {self.side} "
                            "spec's policy fall back to weights that are not on the logged grid"
                        )
                    probs[failed] = 0.0
                    probs[failed, self.fallback_action] = 1.0
        return probs


def _off_grid(side: str, values: Mapping[str, float], grid: ActionGrid, what: str) -> str:
    shown = ", ".join(f"{n} = {v:g}" for n, v in values.items())
    return (
        f"the {side} spec serves {what} ({shown}), which are not an action of the logged grid "
        f"({_grid_text(grid)}): the logs never served them"
    )


def _states(spec: Spec, logs: RequestLogs, side: str) -> np.ndarray:
    from blendspec.policy.grid import state_inputs

    parts = []
    for name, size in state_inputs(spec):
        if name not in logs.names:
            raise _Refusal(
                f"the logs have no column `{name}`, which the {side} spec's policy reads as its "
                "state"
            )
        parts.append(logs.features(name, size))
    return np.concatenate(parts, axis=1)


def _fixed_weights_problem(spec: Spec, side: str, axes: Sequence[str], logs: RequestLogs,
                           drawn: np.ndarray) -> str | None:  # fmt: skip
    """A weight outside the logged grid that the logs record at another value than the spec."""
    columns = _weight_columns(logs)
    for name, weight in spec.weights.items():
        if name in axes or name not in columns or not drawn.any():
            continue
        wrong = ~_same(columns[name][drawn], weight.default)
        if wrong.any():
            row = int(np.flatnonzero(drawn)[int(np.flatnonzero(wrong)[0])])
            return (
                f"the logs hold weight `{name}` at {columns[name][row]:g} in {logs.where(row)}, "
                f"the {side} spec fixes it at {weight.default:g}: the logs were drawn under "
                "other weights"
            )
    return None


# ---------------------------------------------------------------- the reward


def _reward(
    old: Spec, new: Spec, name: str | None, notes: list[str]
) -> tuple[str, Spec, list[str]]:
    """The reward's name, the spec whose formula measures both sides, and the columns it reads."""
    declared = {**old.rewards, **new.rewards}
    if name is not None:
        if name not in declared:
            raise OutcomeUsageError(
                f"--reward `{name}`: neither spec declares it; declared: "
                + (", ".join(f"`{r}`" for r in sorted(declared)) or "none")
            )
    else:
        for spec in (new, old):
            if spec.policy is not None and spec.policy.reward in declared:
                name = spec.policy.reward
                break
        else:
            if len(declared) == 1:
                name = next(iter(declared))
            elif not declared:
                raise _Refusal("neither spec declares a reward (`reward NAME = …`) to estimate")
            else:
                raise _Refusal(
                    "no policy names its reward and the specs declare several ("
                    + ", ".join(f"`{r}`" for r in sorted(declared))
                    + "): choose one with --reward"
                )
    assert name is not None
    measure = new if name in new.rewards else old
    if name in new.rewards and name in old.rewards and new.rewards[name] != old.rewards[name]:
        notes.append(f"reward `{name}` differs between the specs; both sides use the new formula")
    columns = sorted({ref for ref, _ in refs(measure.rewards[name])})
    return name, measure, columns


# ---------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class _Setup:
    grid: ActionGrid
    targets: tuple[_Target, _Target]
    rewards: np.ndarray
    drawn: np.ndarray
    state_spec: Spec | None


def compute_outcome(
    old: LoadedSpec,
    new: LoadedSpec,
    changes: Sequence[Change],
    logs: RequestLogs,
    *,
    reward: str | None = None,
    estimators: Sequence[str] = ("snips", "dr"),
    min_effective: float = 30,
    resamples: int = 1000,
    seed: int = 0,
    model_config: TrainConfig | None = None,
    progress: Progress | None = None,
    cache: dict[Any, Any] | None = None,
) -> Outcome:
    """Estimate both specs' mean reward per logged request and the difference NEW − OLD, or say
    why the logs cannot (see the module docstring). `changes` are the semantic diff's changes
    for this pair: a change outside what the logged actions vary makes the pair not estimable.
    `model_config` overrides the DR reward model's training settings (method stays `model`).

    `cache` (a dict the caller keeps) holds the DR models fitted on these logs: they depend on
    the grid, the state, the reward and the seed, not on the pair, so the pairs of one `--git`
    diff (or a benchmark's many pairs) fit them once."""
    started = time.perf_counter()
    estimators = tuple(dict.fromkeys(estimators))
    unknown = [e for e in estimators if e not in ESTIMATOR_NAMES]
    if unknown or not estimators:
        raise OutcomeUsageError(
            f"--estimators: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
            f"known: {', '.join(ESTIMATOR_NAMES)}"
        )
    notes: list[str] = []
    outcome = Outcome(
        logs=str(logs.path),
        reward=reward,
        requests=len(logs),
        estimators=list(estimators),
        min_effective=min_effective,
        resamples=resamples,
        seed=seed,
        notes=notes,
    )
    try:
        name, measure, columns = _reward(old.spec, new.spec, reward, notes)
        outcome.reward = name
        setup = _setup(old, new, changes, logs, measure, name, columns, notes)
        outcome.requests = int(setup.drawn.sum())
        _estimate(outcome, setup, logs, estimators, model_config, progress, cache)
    except _Refusal as refusal:
        outcome.not_estimable = str(refusal)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _setup(
    old: LoadedSpec,
    new: LoadedSpec,
    changes: Sequence[Change],
    logs: RequestLogs,
    measure: Spec,
    reward: str,
    columns: Sequence[str],
    notes: list[str],
) -> _Setup:
    from blendspec.policy.rewards import reward_values

    if len(logs) == 0:
        raise _Refusal("the logs hold no requests")
    drawn = logs.actions >= 0
    fell_back = int((~drawn).sum())
    if fell_back:
        notes.append(
            f"{fell_back:,} logged requests fell back (action -1, no grid action drawn) and are "
            "left out"
        )
    if not drawn.any():
        raise _Refusal("every logged request fell back (action -1): no action was drawn")
    # The grid the logs were drawn on: the specs' (checked against the logged weights), or the
    # logged weights' own when neither spec has a policy.
    grids = {
        side: ActionGrid.from_spec(loaded.spec)
        for side, loaded in (("old", old), ("new", new))
        if loaded.spec.policy is not None and loaded.spec.policy_weights
    }
    has_columns = any(n.startswith(_WEIGHT_PREFIX) for n in logs.names)
    if grids:
        for side, grid in grids.items():
            problem = _grid_problem(grid, logs, drawn, f"the {side} spec's")
            if problem:
                raise _Refusal(problem)
        if len(grids) == 2 and grids["old"] != grids["new"]:
            raise _Refusal(
                f"the old spec's action grid ({_grid_text(grids['old'])}) differs from the new "
                f"one's ({_grid_text(grids['new'])}); at most one of them is the grid the logs "
                "were drawn on"
            )
        grid = grids.get("new") or grids["old"]
        if not has_columns:
            notes.append(
                "the logs carry no `weight_<name>` columns: they are taken to be drawn on the "
                "specs' action grid"
            )
    else:
        grid = _inferred_grid(logs, drawn)
        notes.append(f"action grid read from the logged weights ({_grid_text(grid)})")
    outside = _outside_change(changes, grid.names, (old.spec, new.spec))
    if outside is not None:
        raise _Refusal(
            f"`{outside.path}` changed ({outside.description}): the logs hold one blending graph "
            "under different weights of the policy grid only, so they cannot say what this "
            "change does"
        )
    for side, loaded in (("old", old), ("new", new)):
        problem = _fixed_weights_problem(loaded.spec, side, grid.names, logs, drawn)
        if problem:
            raise _Refusal(problem)
    missing = [c for c in columns if c not in logs.names]
    if missing:
        raise _Refusal(
            f"the logs have no column `{missing[0]}`, which reward `{reward}` reads"
            + (f" (nor {', '.join(f'`{c}`' for c in missing[1:])})" if missing[1:] else "")
        )
    values = reward_values(measure, reward, {c: logs.numbers(c) for c in columns})
    targets = (_Target(old, "old", grid, logs), _Target(new, "new", grid, logs))
    # The DR model reads the new spec's policy state (else the old one's, else none).
    state_spec = next(
        (loaded.spec for loaded, t in ((new, targets[1]), (old, targets[0]))
         if t.states is not None),
        None,
    )  # fmt: skip
    return _Setup(grid, targets, values, drawn, state_spec)


def _estimate(
    outcome: Outcome,
    setup: _Setup,
    logs: RequestLogs,
    estimators: Sequence[str],
    model_config: TrainConfig | None,
    progress: Progress | None,
    cache: dict[Any, Any] | None,
) -> None:
    from blendspec.policy.ope import evaluate_pair, kish

    rows_all = np.flatnonzero(setup.drawn)
    n = rows_all.size
    actions = logs.actions[rows_all]
    logged = {"old": np.empty(n), "new": np.empty(n)}
    done = 0
    for start in range(0, n, _CHUNK):
        part = np.arange(start, min(n, start + _CHUNK))
        for target in setup.targets:
            probs = target.probs(rows_all[part])
            logged[target.side][part] = probs[np.arange(part.size), actions[part]]
        done += part.size
        if progress is not None:
            progress("targets (old, new)", done, n)
    propensities = logs.propensities[rows_all]
    outcome.effective_old = kish(logged["old"] / propensities)
    outcome.effective_new = kish(logged["new"] / propensities)
    low = min(outcome.effective_old, outcome.effective_new)
    if low < outcome.min_effective:
        side = "old" if outcome.effective_old <= outcome.effective_new else "new"
        raise _Refusal(
            f"the {side} spec's effective n is {_count(low)} of {n:,} logged requests, below "
            f"the floor of {_count(outcome.min_effective)} (--min-effective-n): the logs rarely "
            "took the actions it takes"
        )
    for side in ("old", "new"):
        # With correct propensities the importance weights average 1 (E_μ[π/μ] = Σ_a π = 1).
        # Far from it, the logs missed most of what the spec does: equal weights on the few
        # exploration actions can still give a large effective n, and SNIPS would normalise the
        # gap away. Within the effective-n floor, chance alone stays well inside [0.5, 2].
        mean = float((logged[side] / propensities).mean())
        if not _MEAN_WEIGHT[0] <= mean <= _MEAN_WEIGHT[1]:
            raise _Refusal(
                f"the {side} spec's importance weights average {mean:.3g} where logs that cover "
                "it average 1: the logs (almost) never took the actions it takes most"
            )
    rewards = setup.rewards[rows_all]
    direct: dict[str, np.ndarray] = {}
    logged_q: np.ndarray | None = None
    if "dr" in estimators:
        direct, logged_q = _reward_model(
            setup, logs, rows_all, model_config, progress, outcome.seed, cache
        )
        outcome.notes.append(
            f"DR: the reward model `blend policy train --method model` learns, cross-fitted on "
            f"{FOLDS} folds (each request's prediction comes from the model fitted on the other "
            "half of the logs)"
        )
    if progress is not None:
        progress("paired bootstrap", 0, 1)
    pairs = evaluate_pair(
        rewards,
        propensities,
        logged["old"],
        logged["new"],
        estimators,
        old_direct=direct.get("old"),
        new_direct=direct.get("new"),
        logged_q=logged_q,
        bootstrap=outcome.resamples,
        seed=outcome.seed,
    )
    if progress is not None:
        progress("paired bootstrap", 1, 1)
    same = np.array_equal(logged["old"], logged["new"])
    if same and (not direct or np.array_equal(direct["old"], direct["new"])):
        outcome.notes.append("both specs give every logged request the same action distribution")
    outcome.estimates = [
        OutcomeEstimate(
            ESTIMATOR_NAMES[e.name],
            e.old,
            e.old_low,
            e.old_high,
            e.new,
            e.new_low,
            e.new_high,
            e.difference,
            e.low,
            e.high,
        )
        for e in pairs.values()
    ]


def _reward_model(
    setup: _Setup,
    logs: RequestLogs,
    rows_all: np.ndarray,
    config: TrainConfig | None,
    progress: Progress | None,
    seed: int,
    cache: dict[Any, Any] | None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Cross-fitted predictions: each target's direct term ``Σ_a π(a|x) q(x, a)`` and the
    logged action's ``q(x, a_i)``, every row predicted by the model fitted without it."""
    from blendspec.policy.grid import state_inputs
    from blendspec.policy.rewards import LogData
    from blendspec.policy.train import cross_fitted_reward_model

    n = rows_all.size
    if n < 4 * FOLDS:
        raise _Refusal(f"DR needs at least {4 * FOLDS} logged requests to cross-fit its model")
    state: tuple[tuple[str, int], ...] = ()
    states = np.zeros((n, 0), dtype=np.float32)
    if setup.state_spec is not None:
        state = state_inputs(setup.state_spec)
        states = _states(setup.state_spec, logs, "new")[rows_all]
        states = np.where(np.isfinite(states), states, 0.0).astype(np.float32)
    data = LogData(
        logs.request_ids[rows_all],
        states,
        logs.actions[rows_all],
        logs.propensities[rows_all],
        setup.rewards[rows_all],
    )
    fitted = 0

    def step(count: int) -> None:
        nonlocal fitted
        fitted += count
        if progress is not None:
            progress("DR reward model", fitted, FOLDS)

    key = (id(logs), setup.grid, state, setup.rewards.tobytes(), seed, repr(config))
    models = cache.get(key) if cache is not None else None
    if models is None:
        if progress is not None:
            progress("DR reward model", 0, FOLDS)
        models = cross_fitted_reward_model(
            setup.grid, state, data, folds=FOLDS, seed=seed, config=config, progress=step,
        )  # fmt: skip
        if cache is not None:
            cache[key] = models
    direct = {"old": np.empty(n), "new": np.empty(n)}
    logged_q = np.empty(n)
    model_states = data.states if state else np.zeros((n, 1), dtype=np.float32)
    for fold_rows, model in models:
        for start in range(0, fold_rows.size, _CHUNK):
            part = fold_rows[start : start + _CHUNK]
            q = model.scores(model_states[part]).astype(np.float64)
            logged_q[part] = q[np.arange(part.size), data.actions[part]]
            for target in setup.targets:
                direct[target.side][part] = (target.probs(rows_all[part]) * q).sum(axis=1)
    return direct, logged_q


def _count(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "n/a"
