"""Rewards and the logs they are computed from: request-level logs read as arrays against a spec.

A spec declares its rewards as formulas over outcome columns (``reward engaged = click + 2 *
long_click - 5 * hide``), so one log can be scored by several rewards and the learners, the
off-policy estimators and the report all compare them on the same rows. Numpy and pyarrow only:
nothing here needs torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blendspec.policy.grid import ActionGrid, state_inputs
from blendspec.spec.expr import evaluate
from blendspec.spec.model import Expr, Spec

__all__ = [
    "ACTION_COLUMN",
    "PROPENSITY_COLUMN",
    "REQUEST_ID_COLUMN",
    "LogData",
    "log_data",
    "reward_values",
]

REQUEST_ID_COLUMN = "request_id"
ACTION_COLUMN = "action"
PROPENSITY_COLUMN = "propensity"


def _eval(expr: Expr, columns: Mapping[str, np.ndarray]) -> np.ndarray | float:
    """Per-row values through the shared evaluator (`spec/expr.py`), outcome columns as float64."""

    def column(name: str) -> np.ndarray:
        if name not in columns:
            raise KeyError(f"the logs have no outcome column `{name}`")
        return np.asarray(columns[name], dtype=np.float64)

    return evaluate(expr, column, "numpy", context="in a reward")


def reward_values(spec: Spec, name: str | None, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """A declared reward evaluated per logged request (``None``: the policy's own reward)."""
    if name is None:
        name = spec.policy.reward if spec.policy is not None else None
    if name is None:
        if len(spec.rewards) != 1:
            raise ValueError("name a reward: the spec's policy declares none")
        name = next(iter(spec.rewards))
    if name not in spec.rewards:
        raise KeyError(f"unknown reward `{name}`; declared: {sorted(spec.rewards)}")
    n = len(next(iter(columns.values()))) if columns else 0
    value = _eval(spec.rewards[name], columns)
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()


@dataclass
class LogData:
    """A request-level log as arrays: state ``[n, S]``, action, propensity, reward, outcomes."""

    request_ids: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray
    outcomes: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def subset(self, rows: np.ndarray) -> LogData:
        return LogData(
            self.request_ids[rows],
            self.states[rows],
            self.actions[rows],
            self.propensities[rows],
            self.rewards[rows],
            {k: v[rows] for k, v in self.outcomes.items()},
        )


def _column(table: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    if isinstance(table, pa.Table):
        if name not in table.column_names:
            raise KeyError(f"the logs have no column `{name}`; columns: {table.column_names}")
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
            flat = col.flatten().to_numpy(zero_copy_only=False)
            return flat.reshape(len(col), -1)
        return col.to_numpy(zero_copy_only=False)
    if name not in table:
        raise KeyError(f"the logs have no column `{name}`")
    return np.asarray(table[name])


def log_data(spec: Spec, logs: Any, reward: str | None = None) -> LogData:
    """Read logs (a Parquet path, an Arrow table or a dict of arrays) against the spec.

    The state columns are the spec's policy state inputs; the reward is computed from the outcome
    columns with the spec's reward expression, so several rewards can be compared on one log.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(logs, str | os.PathLike):
        logs = pq.read_table(logs)
    states = []
    for name, size in state_inputs(spec):
        x = _column(logs, name).astype(np.float32).reshape(-1, size)
        states.append(x)
    actions = _column(logs, ACTION_COLUMN).astype(np.int64)
    propensities = _column(logs, PROPENSITY_COLUMN).astype(np.float64)
    n = actions.shape[0]
    names = logs.column_names if isinstance(logs, pa.Table) else list(logs)
    outcomes = {k: _column(logs, k).astype(np.float64) for k in spec.outcomes if k in names}
    rewards = reward_values(spec, reward, outcomes)
    rid = (
        _column(logs, REQUEST_ID_COLUMN) if REQUEST_ID_COLUMN in names else np.arange(n).astype(str)
    )
    grid = ActionGrid.from_spec(spec)
    if n and (actions.min() < 0 or actions.max() >= grid.size):
        raise ValueError(f"logged actions must be in [0, {grid.size}) for this spec's grid")
    return LogData(rid, np.concatenate(states, axis=1), actions, propensities, rewards, outcomes)
