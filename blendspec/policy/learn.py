"""DRL-PUT policies: a network from request state to one action of the spec's weight grid.

What lives here and why:

* :class:`ActionGrid` — action id ↔ weight values. Ids are row-major over ``spec.policy_weights``
  in declaration order (the last declared weight varies fastest), so an id in a log means the
  same weights to every tool that reads the same spec.
* :class:`PolicyNet` — an MLP over the (standardised) state features with either one softmax over
  all K = Π|grid| actions (``heads="joint"``) or one softmax per weight whose log-probabilities
  add up (``heads="factorised"``): far fewer outputs to learn from sparse logs, at the price of
  assuming the weights' effects on the reward do not interact.
* :class:`LearnedPolicy` — a trained network plus what it was trained against (grid, state
  inputs, spec hash); ``kind="policy_gradient"`` outputs action probabilities, ``kind="value"``
  outputs per-action reward predictions and acts by argmax.
* Safe files: :meth:`LearnedPolicy.save` writes tensors and a JSON string only, and
  :func:`load_policy` reads them with ``torch.load(weights_only=True)`` — a policy file named by a
  spec is data and can never execute code (DESIGN §2). Loading checks the grid and state sizes
  against the spec, because a policy silently applied to a different grid would pick wrong
  weights without any error.
* :func:`train_policy` — the importance-weighted policy gradient with a baseline and clipped
  weights (no critic, as the paper argues for sparse, high-variance rewards), seeded, with a
  validation split and early stopping on SNIPS; ``method="value"`` trains the comparison learner.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from blendspec.policy.files import policy_path_problem
from blendspec.spec.model import (
    BinOp,
    Call,
    Const,
    EpsilonExploration,
    Neg,
    Ref,
    SoftmaxExploration,
    Spec,
    UniformExploration,
)

__all__ = [
    "ACTION_COLUMN",
    "PROPENSITY_COLUMN",
    "REQUEST_ID_COLUMN",
    "ActionGrid",
    "LearnedPolicy",
    "LogData",
    "PolicyFileError",
    "PolicyNet",
    "TrainResult",
    "apply_exploration",
    "load_policy",
    "log_data",
    "policy_path_problem",
    "reward_values",
    "spec_hash",
    "state_inputs",
    "train_policy",
]

REQUEST_ID_COLUMN = "request_id"
ACTION_COLUMN = "action"
PROPENSITY_COLUMN = "propensity"
FILE_FORMAT = "blendspec.policy"
FILE_VERSION = 1

Heads = Literal["joint", "factorised"]
Kind = Literal["policy_gradient", "value"]


class PolicyFileError(ValueError):
    """A policy file that cannot be used with this spec (or is not a policy file at all)."""


# --------------------------------------------------------------------------------------------
# Grid, state, spec identity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionGrid:
    """The action set: the cartesian product of the policy weights' grids, row-major."""

    names: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]

    @classmethod
    def from_spec(cls, spec: Spec) -> ActionGrid:
        names = spec.policy_weights
        if not names:
            raise ValueError(f"spec `{spec.name}` has no weight with `source = policy`")
        return cls(names, tuple(tuple(spec.weights[n].grid or ()) for n in names))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def levels(self, actions: np.ndarray) -> np.ndarray:
        """Grid level per weight, ``[n, W]`` int64."""
        actions = np.asarray(actions, dtype=np.int64)
        if actions.size and (actions.min() < 0 or actions.max() >= self.size):
            raise ValueError(f"action ids must be in [0, {self.size})")
        return np.stack(np.unravel_index(actions, self.shape), axis=-1).astype(np.int64)

    def decode(self, actions: np.ndarray) -> np.ndarray:
        """Weight values per action, ``[n, W]`` float64 (columns in ``names`` order)."""
        lv = self.levels(actions)
        out = np.empty(lv.shape, dtype=np.float64)
        for j, vals in enumerate(self.values):
            out[..., j] = np.asarray(vals, dtype=np.float64)[lv[..., j]]
        return out

    def encode(self, values: np.ndarray) -> np.ndarray:
        """The action whose weights are nearest (per weight) to ``values`` ``[n, W]``."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        levels = [
            np.abs(values[:, j, None] - np.asarray(v)[None, :]).argmin(axis=1)
            for j, v in enumerate(self.values)
        ]
        return np.ravel_multi_index(tuple(levels), self.shape).astype(np.int64)

    def default_action(self, spec: Spec) -> int:
        """The grid action nearest to the spec's fixed defaults (the fallback weights)."""
        return int(self.encode(np.array([[spec.weights[n].default for n in self.names]]))[0])

    def to_json(self) -> dict[str, Any]:
        return {"weights": list(self.names), "grid": [list(v) for v in self.values]}


def state_inputs(spec: Spec) -> tuple[tuple[str, int], ...]:
    """The policy's state inputs and their sizes, in the order the network concatenates them."""
    if spec.policy is None:
        raise ValueError(f"spec `{spec.name}` declares no `policy`")
    out = []
    for name in spec.policy.state:
        declared = spec.inputs.get(name)
        if declared is None:
            raise ValueError(f"policy state `{name}` is not a declared input")
        out.append((name, int(declared.size or 1) if declared.kind == "features" else 1))
    return tuple(out)


def spec_hash(spec: Spec) -> str:
    """A stable hash of the spec's meaning (not its formatting), recorded in policy files."""
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Rewards and logs
# --------------------------------------------------------------------------------------------


def _const(expr: Any) -> float:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Neg):
        return -_const(expr.operand)
    raise ValueError("transform parameters in a reward must be numbers")


def _eval(expr: Any, columns: Mapping[str, np.ndarray]) -> np.ndarray | float:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Ref):
        if expr.name not in columns:
            raise KeyError(f"the logs have no outcome column `{expr.name}`")
        return np.asarray(columns[expr.name], dtype=np.float64)
    if isinstance(expr, Neg):
        return -_eval(expr.operand, columns)
    if isinstance(expr, BinOp):
        left, right = _eval(expr.left, columns), _eval(expr.right, columns)
        if expr.op == "+":
            return left + right
        if expr.op == "-":
            return left - right
        if expr.op == "*":
            return left * right
        return left / right
    if isinstance(expr, Call):
        x = _eval(expr.args[0], columns)
        if expr.fn == "log1p":
            return np.log1p(x)
        if expr.fn == "clip":
            return np.clip(x, _const(expr.args[1]), _const(expr.args[2]))
        if expr.fn == "pow":
            return np.power(x, _const(expr.args[1]))
        raise ValueError(f"`{expr.fn}` is not supported in a reward (it needs a whole request)")
    raise TypeError(f"not a reward expression: {expr!r}")


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


# --------------------------------------------------------------------------------------------
# The network and the policy
# --------------------------------------------------------------------------------------------


def state_body(state_size: int, hidden: Sequence[int]) -> tuple[nn.Sequential, int]:
    """The hidden ReLU layers over the standardised state, and their output width: shared by the
    policy network and the reward model, which must have the same body to fold into it."""
    layers: list[nn.Module] = []
    width = state_size
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers), width


class PolicyNet(nn.Module):
    """MLP over standardised state → ``[B, K]`` scores (log-probabilities, or rewards for
    ``kind="value"``). Factorised heads score each weight separately and add."""

    def __init__(
        self,
        state_size: int,
        grid_shape: Sequence[int],
        hidden: Sequence[int] = (64,),
        heads: Heads = "joint",
    ) -> None:
        super().__init__()
        if heads not in ("joint", "factorised"):
            raise ValueError("heads must be 'joint' or 'factorised'")
        self.grid_shape = tuple(int(s) for s in grid_shape)
        self.heads = heads
        self.body, width = state_body(state_size, hidden)
        outputs = sum(self.grid_shape) if heads == "factorised" else int(np.prod(self.grid_shape))
        self.out = nn.Linear(width, outputs)
        self.register_buffer("mean", torch.zeros(state_size))
        self.register_buffer("std", torch.ones(state_size))

    def forward(self, state: Tensor, *, log_softmax: bool = True) -> Tensor:
        z = self.out(self.body((state - self.mean) / self.std))
        if self.heads == "joint":
            return torch.log_softmax(z, dim=-1) if log_softmax else z
        # Sum of per-weight scores, broadcast to the full grid in row-major order.
        total = torch.zeros((state.shape[0],) + (1,) * len(self.grid_shape), dtype=z.dtype)
        start = 0
        for axis, size in enumerate(self.grid_shape):
            part = z[:, start : start + size]
            if log_softmax:
                part = torch.log_softmax(part, dim=-1)
            shape = [state.shape[0]] + [1] * len(self.grid_shape)
            shape[axis + 1] = size
            total = total + part.reshape(shape)
            start += size
        return total.reshape(state.shape[0], -1)


@dataclass
class LearnedPolicy:
    """A trained network with the grid and state it was trained for."""

    net: PolicyNet
    grid: ActionGrid
    state: tuple[tuple[str, int], ...]
    kind: Kind = "policy_gradient"
    hidden: tuple[int, ...] = (64,)
    spec_hash: str = ""
    reward: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_actions(self) -> int:
        return self.grid.size

    def _tensor(self, states: np.ndarray | Mapping[str, np.ndarray]) -> Tensor:
        if isinstance(states, Mapping):
            parts = [
                np.asarray(states[n], dtype=np.float32).reshape(-1, size) for n, size in self.state
            ]
            states = np.concatenate(parts, axis=1)
        x = torch.as_tensor(np.asarray(states, dtype=np.float32))
        expected = sum(size for _, size in self.state)
        if x.ndim != 2 or x.shape[1] != expected:
            raise ValueError(f"state must have shape [n, {expected}], got {tuple(x.shape)}")
        return x

    def scores(self, states: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw outputs ``[n, K]``: log-probabilities, or predicted rewards for a value policy."""
        with torch.no_grad():
            return self.net(self._tensor(states), log_softmax=self.kind != "value").numpy()

    def probs(
        self, states: np.ndarray | Mapping[str, np.ndarray], *, greedy: bool = False
    ) -> np.ndarray:
        """The action distribution ``[n, K]`` before exploration: the softmax, or with ``greedy``
        (always for ``value``) the one-hot argmax that serving without exploration applies.

        Evaluate a deployed policy with ``greedy=True``: the softmax puts mass on actions the
        served argmax never takes, so its value is not the deployed policy's value.
        """
        s = self.scores(states).astype(np.float64)
        if greedy or self.kind == "value":
            return np.eye(self.n_actions)[s.argmax(axis=1)]
        p = np.exp(s - s.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def act(
        self,
        states: np.ndarray | Mapping[str, np.ndarray],
        *,
        exploration: Any = None,
        rng: np.random.Generator | int | None = None,
        sample: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Actions and their propensities under ``exploration`` (a spec exploration or None).

        Without exploration the argmax is taken unless ``sample`` is set; either way the
        propensity is the probability the serving policy gave the chosen action, so the result
        can be logged for the next round of off-policy learning.
        """
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        base = self.probs(states)
        if isinstance(exploration, SoftmaxExploration) and self.kind != "value":
            s = self.scores(states) / exploration.temperature
            base = np.exp(s - s.max(axis=1, keepdims=True))
            base /= base.sum(axis=1, keepdims=True)
            p = base
        else:
            p = apply_exploration(base, exploration)
        stochastic = sample or (exploration is not None and exploration.kind != "none")
        actions = _sample_rows(p, gen) if stochastic else p.argmax(axis=1)
        return actions, p[np.arange(len(actions)), actions]

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "kind": self.kind,
            "heads": self.net.heads,
            "hidden": list(self.hidden),
            **self.grid.to_json(),
            "state": [{"name": n, "size": s} for n, s in self.state],
            "spec_hash": self.spec_hash,
            "reward": self.reward,
            "info": self.info,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write tensors plus a JSON metadata string, atomically (temp file + rename)."""
        path = Path(path)
        payload: dict[str, Any] = {
            f"param.{k}": v.detach().clone() for k, v in self.net.state_dict().items()
        }
        payload["metadata"] = json.dumps(self.metadata(), sort_keys=True)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        from blendspec.io.outputs import atomic_path

        with atomic_path(path, mode=0o644) as temporary:
            temporary.write_bytes(buffer.getvalue())
        return path


def _sample_rows(p: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(p, axis=1)
    u = gen.random((p.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), p.shape[1] - 1).astype(np.int64)


def apply_exploration(base: np.ndarray, exploration: Any) -> np.ndarray:
    """Mix a greedy distribution ``[n, K]`` with the spec's exploration (ε-greedy or uniform).

    Softmax temperature needs the policy's scores, so :meth:`LearnedPolicy.act` handles it.
    """
    k = base.shape[1]
    if exploration is None or exploration.kind == "none":
        return base
    if isinstance(exploration, UniformExploration):
        return np.full_like(base, 1.0 / k)
    if isinstance(exploration, EpsilonExploration):
        return (1.0 - exploration.epsilon) * base + exploration.epsilon / k
    if isinstance(exploration, SoftmaxExploration):
        return base
    raise ValueError(f"unknown exploration {exploration!r}")


def load_policy(path: str | os.PathLike[str], spec: Spec | None = None) -> LearnedPolicy:
    """Load a policy file without executing code, and check it fits ``spec`` (when given).

    Only tensors and strings are accepted (``weights_only=True``); a pickle with objects fails
    here, before anything of it runs. The metadata is checked against a schema (keys, types,
    ranges) and every tensor's shape against the network the metadata declares *before* that
    network is built: a 1 KB file that declares ``hidden: [200000, 200000]`` must not make the
    loader allocate 160 GB. Every problem is a one-line :class:`PolicyFileError` naming the file.
    A grid or state-size mismatch says what the file expects and what the spec declares. A
    different spec hash alone is not an error (a spec may change its diversity and keep its
    policy), it is recorded in ``info``.
    """
    path = Path(path)
    shown = _shown(path)
    payload = _read_payload(path, shown)
    if not isinstance(payload, dict) or not isinstance(payload.get("metadata"), str):
        raise PolicyFileError(f"{shown}: not a blendspec policy file (no metadata)")
    try:
        meta = json.loads(payload["metadata"])
    except (json.JSONDecodeError, RecursionError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
        raise PolicyFileError(f"{shown}: unreadable metadata ({reason})") from None
    if not isinstance(meta, dict):
        raise PolicyFileError(f"{shown}: not a blendspec policy file (metadata is not an object)")
    if meta.get("format") != FILE_FORMAT or meta.get("version") != FILE_VERSION:
        raise PolicyFileError(
            f"{shown}: not a blendspec policy file of version {FILE_VERSION} "
            f"(format {_short(meta.get('format'))}, version {_short(meta.get('version'))})"
        )
    problem = _metadata_problem(meta)
    if problem is not None:
        raise PolicyFileError(f"{shown}: invalid policy metadata: {problem}")
    grid = ActionGrid(
        tuple(meta["weights"]), tuple(tuple(float(x) for x in v) for v in meta["grid"])
    )
    state = tuple((str(s["name"]), int(s["size"])) for s in meta["state"])
    info = dict(meta.get("info") or {})
    if spec is not None:
        _check_against(path, grid, state, spec)
        current = spec_hash(spec)
        info["spec_hash_matches"] = current == meta.get("spec_hash")
    state_size = sum(s for _, s in state)
    hidden = tuple(int(h) for h in meta["hidden"])
    params = {k[len("param.") :]: v for k, v in payload.items() if k.startswith("param.")}
    problem = _tensors_problem(params, state_size, grid.shape, hidden, meta["heads"])
    if problem is not None:
        raise PolicyFileError(f"{shown}: tensors do not match the metadata ({problem})")
    net = PolicyNet(state_size, grid.shape, hidden, meta["heads"])
    try:
        net.load_state_dict(params)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PolicyFileError(f"{shown}: tensors do not match the metadata ({first})") from None
    net.eval()
    return LearnedPolicy(
        net,
        grid,
        state,
        meta["kind"],
        hidden,
        meta.get("spec_hash", ""),
        meta.get("reward"),
        info,
    )


# Bounds of the metadata schema: far above any policy a spec's grid and state can need, far below
# what would exhaust memory. Tensors are checked against the declared shapes anyway.
_MAX_LAYERS = 16
_MAX_WIDTH = 1 << 16
_MAX_WEIGHTS = 64
_MAX_LEVELS = 10_000
_MAX_ACTIONS = 10_000_000
_MAX_STATE = 256
_MAX_STATE_SIZE = 1 << 20


def _shown(path: Path) -> str:
    """The file's name for a one-line message (a 5000-character name is shortened)."""
    from blendspec.io.outputs import display_path

    return display_path(path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_payload(path: Path, shown: str) -> Any:
    """``torch.load(weights_only=True)``, with every way it can fail as a PolicyFileError. torch's
    advice to retry with ``weights_only=False`` is not passed on: that would run the file's code."""
    import pickle
    import warnings

    try:
        _check_archive(path, shown)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4 ..."
            return torch.load(path, map_location="cpu", weights_only=True)
    except PolicyFileError:
        raise
    except FileNotFoundError:
        raise PolicyFileError(f"{shown}: no such policy file") from None
    except OSError as error:  # a symlink loop, a folder, a name too long, no permission
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise PolicyFileError(f"{shown}: cannot read the policy file ({reason})") from None
    except ValueError as error:  # an embedded NUL byte
        if "null" in str(error):
            raise PolicyFileError(f"{shown}: invalid file name (it holds a NUL byte)") from None
        raise PolicyFileError(f"{shown}: not a blendspec policy file ({_first(error)})") from None
    except pickle.UnpicklingError as error:
        raise PolicyFileError(
            f"{shown}: not a blendspec policy file: it holds Python objects, and a policy file "
            f"holds only tensors and strings ({_unpickler_detail(error)}); it was not loaded"
        ) from None
    except Exception as error:  # truncated file, not a torch file
        raise PolicyFileError(f"{shown}: not a blendspec policy file ({_first(error)})") from None


def _check_archive(path: Path, shown: str) -> None:
    """Only the archive ``torch.save`` writes: a zip of *stored* records (aligned for mmap, never
    compressed). torch's loader inflates a deflated record, so a 1 MB file of compressed zeros
    would become a 1 GB tensor; with stored records a file's tensors are never larger than the
    file. (The pre-zip legacy format, which blendspec never wrote, is refused too.)"""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                if record.compress_type != zipfile.ZIP_STORED:
                    raise PolicyFileError(
                        f"{shown}: not a blendspec policy file (record "
                        f"`{_short(record.filename)[1:-1]}` is compressed; torch.save writes "
                        "none)"
                    )
    except zipfile.BadZipFile:
        raise PolicyFileError(
            f"{shown}: not a blendspec policy file (not a torch.save archive)"
        ) from None


def _first(error: BaseException) -> str:
    """The first sentence of an error's message, without torch's advice to unsafe-load."""
    text = " ".join(str(error).split())
    text = text.split(". ")[0].rstrip(".")
    if "weights_only" in text:
        return "refused by the safe loader"
    if len(text) > 200:
        text = text[:197] + "..."
    return text or type(error).__name__


def _unpickler_detail(error: BaseException) -> str:
    """What torch's safe unpickler refused (e.g. ``Unsupported global: GLOBAL os.system``), with
    the surrounding advice (retry with ``weights_only=False``, file an issue) left out."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1]
        for line in rest.splitlines():
            line = line.strip()
            if line and "weights_only" not in line:
                return line if len(line) <= 120 else line[:117] + "..."
    return "refused by the safe loader"


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _metadata_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a policy file's metadata, or None: required keys, types and ranges."""
    required = ("kind", "heads", "hidden", "weights", "grid", "state")
    missing = [k for k in required if k not in meta]
    if missing:
        return f"missing key{'s' * (len(missing) > 1)} {', '.join(f'`{k}`' for k in missing)}"
    if meta["kind"] not in ("policy_gradient", "value"):
        return f"`kind` must be 'policy_gradient' or 'value', not {_short(meta['kind'])}"
    if meta["heads"] not in ("joint", "factorised"):
        return f"`heads` must be 'joint' or 'factorised', not {_short(meta['heads'])}"
    hidden = meta["hidden"]
    if (
        not isinstance(hidden, list)
        or len(hidden) > _MAX_LAYERS
        or not all(_is_int(h, 1, _MAX_WIDTH) for h in hidden)
    ):
        return (
            f"`hidden` must be a list of at most {_MAX_LAYERS} layer widths in 1..{_MAX_WIDTH}, "
            f"not {_short(hidden)}"
        )
    weights, grid = meta["weights"], meta["grid"]
    if (
        not isinstance(weights, list)
        or not 1 <= len(weights) <= _MAX_WEIGHTS
        or not all(isinstance(w, str) and w for w in weights)
        or len(set(weights)) != len(weights)
    ):
        return f"`weights` must be a list of 1 to {_MAX_WEIGHTS} distinct names"
    if not isinstance(grid, list) or len(grid) != len(weights):
        return "`grid` must hold one list of levels per weight"
    actions = 1
    for name, levels in zip(weights, grid, strict=True):
        if (
            not isinstance(levels, list)
            or not 1 <= len(levels) <= _MAX_LEVELS
            or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in levels
            )
        ):
            return f"`grid` of `{_short(name)[1:-1]}` must be 1 to {_MAX_LEVELS} finite numbers"
        actions *= len(levels)
    if actions > _MAX_ACTIONS:
        return f"the grid has {actions:,} actions (at most {_MAX_ACTIONS:,})"
    state = meta["state"]
    if (
        not isinstance(state, list)
        or not 1 <= len(state) <= _MAX_STATE
        or not all(
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and _is_int(s.get("size"), 1, _MAX_STATE_SIZE)
            for s in state
        )
    ):
        return (
            f"`state` must be a list of 1 to {_MAX_STATE} {{name, size}} entries with sizes in "
            f"1..{_MAX_STATE_SIZE}"
        )
    if sum(s["size"] for s in state) > _MAX_STATE_SIZE:
        return f"the state has more than {_MAX_STATE_SIZE:,} features"
    if not isinstance(meta.get("spec_hash", ""), str):
        return "`spec_hash` must be a string"
    if not isinstance(meta.get("reward"), str | None):
        return "`reward` must be a string or null"
    if not isinstance(meta.get("info") or {}, dict):
        return "`info` must be an object"
    return None


def _tensors_problem(
    params: Mapping[str, Any],
    state_size: int,
    grid_shape: Sequence[int],
    hidden: Sequence[int],
    heads: str,
) -> str | None:
    """Whether the file's tensors are exactly the network the metadata declares (names, shapes,
    floating dtype), checked before the network is built."""
    expected: dict[str, tuple[int, ...]] = {}
    width = state_size
    for i, h in enumerate(hidden):
        expected[f"body.{2 * i}.weight"] = (h, width)
        expected[f"body.{2 * i}.bias"] = (h,)
        width = h
    outputs = sum(grid_shape) if heads == "factorised" else math.prod(grid_shape)
    expected["out.weight"] = (outputs, width)
    expected["out.bias"] = (outputs,)
    expected["mean"] = (state_size,)
    expected["std"] = (state_size,)
    missing = sorted(set(expected) - set(params))
    if missing:
        return f"missing tensor `{_short(missing[0])[1:-1]}`"
    extra = sorted(set(params) - set(expected))
    if extra:
        return f"unexpected tensor `{_short(extra[0])[1:-1]}`"
    for name, shape in expected.items():
        tensor = params[name]
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            return f"`{name}` is not a floating-point tensor"
        if tuple(tensor.shape) != shape:
            return f"`{name}` has shape {list(tensor.shape)}, the metadata declares {list(shape)}"
    return None


def _check_against(
    path: Path, grid: ActionGrid, state: tuple[tuple[str, int], ...], spec: Spec
) -> None:
    want = ActionGrid.from_spec(spec)
    if grid != want:
        raise PolicyFileError(
            f"{path}: the policy was trained for the grid {grid.to_json()} but spec "
            f"`{spec.name}` declares {want.to_json()}; retrain it for this spec"
        )
    declared = state_inputs(spec)
    if state != declared:
        raise PolicyFileError(
            f"{path}: the policy reads state {[f'{n}[{s}]' for n, s in state]} but spec "
            f"`{spec.name}` declares {[f'{n}[{s}]' for n, s in declared]}"
        )


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """The best policy (by validation SNIPS), and how training went.

    ``validation`` holds every estimator's figure for the softmax policy (what early stopping
    watched; smooth, many effective samples); ``validation_greedy`` for the argmax policy that
    serving without exploration applies (the deployed value, but with K actions under uniform
    logging only about n/K requests match, so its intervals are wide). The validation split
    chose the epoch, so both are optimistic: judge a policy on fresh logs.
    """

    policy: LearnedPolicy
    history: list[dict[str, float]]
    best_epoch: int
    validation: dict[str, Any]
    train_rows: int
    validation_rows: int
    validation_greedy: dict[str, Any] = field(default_factory=dict)


def _split(n: int, validation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng([seed, 1]).permutation(n)
    n_val = round(n * validation) if validation > 0 else 0
    n_val = min(max(n_val, 1 if validation > 0 and n > 1 else 0), n - 1) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _snips(policy: LearnedPolicy, data: LogData) -> float:
    from blendspec.policy.ope import evaluate

    if len(data) == 0:
        return float("nan")
    est = evaluate(
        data.actions,
        data.rewards,
        data.propensities,
        policy.probs(data.states),
        ("snips",),
        bootstrap=0,
    )
    return est["snips"].value


def state_baseline(states: np.ndarray, rewards: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Ridge regression of the reward on the (standardised) state: a per-request baseline.

    Under uniform logging the action is independent of the state, so ``E[r | x]`` is a valid
    baseline (it does not bias the gradient) and it removes the part of the reward that
    depends on *who* the user is rather than on the weights: a heavy clicker earns more under
    every action, which with a constant baseline reads as "every action this user got was
    good" and drowns the per-action signal in the segments' different base rates.
    """
    x = np.asarray(states, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if x.shape[0] == 0:
        return np.zeros(0)
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = np.concatenate([(x - mean) / np.where(std > 0, std, 1.0), np.ones((len(x), 1))], axis=1)
    penalty = ridge * np.eye(z.shape[1])
    penalty[-1, -1] = 0.0  # no shrinkage of the intercept
    beta = np.linalg.solve(z.T @ z + penalty, z.T @ r)
    return z @ beta


@dataclass(frozen=True)
class _Fit:
    """Hyper-parameters of the optimisation loop, shared by every process of a DDP run."""

    method: Literal["pg", "value"]
    epochs: int
    batch_size: int
    lr: float
    weight_clip: float
    entropy: float
    weight_decay: float
    patience: int
    seed: int


@dataclass(frozen=True)
class _Arrays:
    """Training rows as plain arrays (what a worker process receives)."""

    states: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray
    advantages: np.ndarray


class _BestEpoch:
    """Early stopping shared by the learners: keeps the best-scoring epoch's weights and says
    when ``patience`` epochs in a row have not improved on it."""

    def __init__(self, module: nn.Module, patience: int) -> None:
        self.score, self.epoch = -math.inf, 0
        self.state = copy.deepcopy(module.state_dict())
        self.patience = patience
        self.stale = 0

    def stop_after(self, epoch: int, score: float, module: nn.Module) -> bool:
        if score > self.score or epoch == 0:
            self.score, self.epoch, self.stale = score, epoch, 0
            self.state = copy.deepcopy(module.state_dict())
            return False
        self.stale += 1
        return self.stale >= self.patience


def _fit(
    net: nn.Module,
    module: PolicyNet,
    train: _Arrays,
    score: Any,
    fit: _Fit,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[list[dict[str, float]], int, float, dict[str, Tensor]]:
    """The optimisation loop; ``net`` is ``module`` itself or its DistributedDataParallel wrap.

    Every global minibatch is drawn from one seeded permutation that all processes share; rank
    ``r`` takes its contiguous slice of it. Each process's loss is its *sum* over its rows times
    ``world_size / len(batch)``, so DDP's gradient average equals the single-process gradient of
    the whole minibatch's mean (up to floating-point summation order) even when the last batch
    does not divide evenly. ``score(module)`` is the validation figure early stopping watches
    (None: the epoch's negative training loss instead); every process computes it on identical
    parameters, so all stop at the same epoch.
    """
    gen = torch.Generator().manual_seed(fit.seed)
    states = torch.as_tensor(train.states)
    actions = torch.as_tensor(train.actions)
    mu = torch.as_tensor(train.propensities, dtype=torch.float32)
    rewards = torch.as_tensor(train.rewards, dtype=torch.float32)
    advantages = torch.as_tensor(train.advantages, dtype=torch.float32)
    n = len(train.actions)
    optimiser = torch.optim.Adam(module.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    history: list[dict[str, float]] = []
    best = _BestEpoch(module, fit.patience)
    for epoch in range(fit.epochs):
        net.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, fit.batch_size):
            batch = order[start : start + fit.batch_size]
            share = len(batch) / world_size
            idx = batch[round(rank * share) : round((rank + 1) * share)]
            scale = world_size / len(batch)
            if fit.method == "pg":
                logp = net(states[idx])
                chosen = logp.gather(1, actions[idx, None]).squeeze(1)
                w = (chosen.detach().exp() / mu[idx]).clamp(max=fit.weight_clip)
                loss = -scale * (w * advantages[idx] * chosen).sum()
                if fit.entropy:
                    loss = loss - fit.entropy * scale * -(logp.exp() * logp).sum()
            else:
                q = net(states[idx], log_softmax=False).gather(1, actions[idx, None]).squeeze(1)
                loss = scale * ((q - rewards[idx]) ** 2).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch) / world_size
        if world_size > 1:  # each process summed only its own rows
            import torch.distributed as dist

            summed = torch.tensor([total], dtype=torch.float64)
            dist.all_reduce(summed)
            total = float(summed)
        net.eval()
        value = score(module)
        if value is None:
            value = -total / n
        history.append({"epoch": epoch, "loss": total / n, "val_snips": value})
        if best.stop_after(epoch, value, module):
            break
    return history, best.epoch, best.score, best.state


class _RewardModel(nn.Module):
    """``q(x, a) = u(x) · v(a) + c(x)``: a low-rank reward model over state × action *levels*.

    ``u, c`` come from the policy network's own body (same hidden layers) and one linear layer;
    ``v`` from a small MLP over the action's levels, one one-hot block per weight, so what is
    learnt about ``w_ctr = 2`` from one action carries over to every other action with that
    level: with a 1,000-action grid each action is logged a few hundred times in 200k requests,
    but each *level* 20k times. The product lets the best levels of one weight depend on the
    others and on the state (a user segment that wants the click weight low *and* the long-click
    weight moderate), which an additive model cannot express. And because ``v`` depends on the
    action alone, ``q(x, ·)`` over the whole grid is the body followed by one linear layer with
    ``K`` outputs (:meth:`fold_into`): exactly the value network every policy file holds.
    """

    def __init__(
        self,
        state_size: int,
        grid_shape: Sequence[int],
        hidden: Sequence[int],
        rank: int = 16,
        action_hidden: int = 128,
    ) -> None:
        super().__init__()
        self.grid_shape = tuple(int(s) for s in grid_shape)
        self.body, width = state_body(state_size, hidden)
        self.state_out = nn.Linear(width, rank + 1)  # u (rank) and c (1)
        self.action_net = nn.Sequential(
            nn.Linear(sum(self.grid_shape), action_hidden),
            nn.ReLU(),
            nn.Linear(action_hidden, rank),
        )
        levels = np.stack(
            np.unravel_index(np.arange(int(np.prod(self.grid_shape))), self.grid_shape), 1
        )
        parts = [
            nn.functional.one_hot(torch.as_tensor(levels[:, j]), size).to(torch.float32)
            for j, size in enumerate(self.grid_shape)
        ]
        self.register_buffer("all_actions", torch.cat(parts, dim=1))

    def forward(self, z: Tensor, actions: Tensor) -> Tensor:
        """Predicted reward of each row's logged action, ``[B]``."""
        u = self.state_out(self.body(z))
        v = self.action_net(self.all_actions[actions])
        return (u[:, :-1] * v).sum(dim=1) + u[:, -1]

    def all(self, z: Tensor) -> Tensor:
        """Predicted reward of every action for each state, ``[B, K]``."""
        u = self.state_out(self.body(z))
        return u[:, :-1] @ self.action_net(self.all_actions).T + u[:, -1:]

    @torch.no_grad()
    def fold_into(self, net: PolicyNet) -> None:
        """Write ``q(x, ·)`` into a value network with the same body: its output layer becomes
        ``V W_u + 1 w_c`` (and the bias likewise), so ``net(x) = q(x, ·)`` up to rounding."""
        net.body.load_state_dict(self.body.state_dict())
        v = self.action_net(self.all_actions)  # [K, rank]
        weight, bias = self.state_out.weight, self.state_out.bias
        net.out.weight.copy_(v @ weight[:-1] + weight[-1])
        net.out.bias.copy_(v @ bias[:-1] + bias[-1])


def _fit_reward_model(
    policy: LearnedPolicy, train: _Arrays, val: LogData, fit: _Fit
) -> tuple[list[dict[str, float]], int, float, dict[str, Tensor]]:
    """``method="model"``: fit :class:`_RewardModel` by least squares with a cosine learning-rate
    schedule (the reward is noisy enough that a constant rate keeps the argmax wandering from
    epoch to epoch), keep the epoch with the lowest validation squared error, and fold it into
    the policy's network (kind ``value``), so that the saved file, the loader and the run-time
    lowering stay exactly as for the other learners."""
    net = policy.net
    gen = torch.Generator().manual_seed(fit.seed)
    mean, std = net.mean.clone(), net.std.clone()
    z = (torch.as_tensor(train.states) - mean) / std
    zv = (torch.as_tensor(val.states) - mean) / std
    actions = torch.as_tensor(train.actions)
    rewards = torch.as_tensor(train.rewards, dtype=torch.float32)
    va = torch.as_tensor(val.actions)
    vr = torch.as_tensor(val.rewards, dtype=torch.float32)
    model = _RewardModel(z.shape[1], policy.grid.shape, policy.hidden)
    with torch.no_grad():
        model.state_out.bias[-1] = float(rewards.mean())
    optimiser = torch.optim.Adam(model.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, fit.epochs))
    history: list[dict[str, float]] = []
    best = _BestEpoch(model, fit.patience)
    n = len(train.actions)
    for epoch in range(fit.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, fit.batch_size):
            idx = order[start : start + fit.batch_size]
            loss = ((model(z[idx], actions[idx]) - rewards[idx]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        schedule.step()
        model.eval()
        with torch.no_grad():
            score = -float(((model(zv, va) - vr) ** 2).mean()) if len(va) else -total / n
        history.append({"epoch": epoch, "loss": total / n, "val_neg_mse": score})
        if best.stop_after(epoch, score, model):
            break
    model.load_state_dict(best.state)
    model.eval()
    model.fold_into(net)
    net.eval()
    return history, best.epoch, best.score, copy.deepcopy(net.state_dict())


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_rank() -> tuple[int, int] | None:
    """``(rank, world_size)`` when this process is one of a ``torchrun`` job, else None.

    torchrun (``python -m torch.distributed.run``) starts every process itself and describes
    the job in the environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``);
    training then joins that job instead of spawning processes of its own.
    """
    env = os.environ
    if not {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} <= env.keys():
        return None
    try:
        rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
    except ValueError:
        return None
    return (rank, world_size) if world_size > 1 and 0 <= rank < world_size else None


def _ddp_fit(
    policy: LearnedPolicy, train: _Arrays, val: LogData, fit: _Fit, rank: int, world_size: int
) -> tuple[list[dict[str, float]], int, float, dict[str, Tensor]]:
    """Train in an initialised process group; every rank returns the same (synchronised) result."""
    from torch.nn.parallel import DistributedDataParallel

    net = DistributedDataParallel(policy.net)  # broadcasts rank 0's parameters
    return _fit(
        net, policy.net, train, lambda _: _validation_score(policy, val), fit, rank, world_size
    )


def _ddp_worker(
    rank: int,
    world_size: int,
    port: int,
    policy: LearnedPolicy,
    train: _Arrays,
    val: LogData,
    fit: _Fit,
    out: str,
) -> None:
    """One process of a spawned DistributedDataParallel run (gloo on CPU, over loopback)."""
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    # torch.multiprocessing hands tensors to the children through *shared* memory: without a
    # private copy every process would apply its optimiser step to the same parameters.
    policy = copy.copy(policy)
    policy.net = copy.deepcopy(policy.net)
    try:
        history, best_epoch, best_score, state = _ddp_fit(policy, train, val, fit, rank, world_size)
        if rank == 0:
            payload: dict[str, Any] = {f"param.{k}": v for k, v in state.items()}
            payload["meta"] = json.dumps(
                {"history": history, "best_epoch": best_epoch, "best_score": best_score}
            )
            torch.save(payload, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _run_under_torchrun(
    policy: LearnedPolicy, train: _Arrays, val: LogData, fit: _Fit, rank: int, world_size: int
) -> tuple[list[dict[str, float]], int, float, dict[str, Tensor]]:
    """Join the torchrun job's process group (env:// rendezvous, gloo) for this one training."""
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world_size)
    try:
        return _ddp_fit(policy, train, val, fit, rank, world_size)
    finally:
        if owned:
            dist.destroy_process_group()


def _validation_score(policy: LearnedPolicy, val: LogData) -> float | None:
    """SNIPS of the current softmax policy on the validation split (None: no split, and
    early stopping then watches the training loss instead)."""
    return _snips(policy, val) if len(val) else None


def _run_distributed(
    policy: LearnedPolicy, train: _Arrays, val: LogData, fit: _Fit, nproc: int
) -> tuple[list[dict[str, float]], int, float, dict[str, Tensor]]:
    """Train in ``nproc`` local processes (torch.multiprocessing spawn) and collect rank 0's."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="blendspec-ddp-") as tmp:
        out = os.path.join(tmp, "rank0.pt")
        mp.spawn(
            _ddp_worker,
            args=(nproc, _free_port(), policy, train, val, fit, out),
            nprocs=nproc,
            join=True,
        )
        payload = torch.load(out, map_location="cpu", weights_only=True)
    meta = json.loads(payload.pop("meta"))
    state = {k[len("param.") :]: v for k, v in payload.items()}
    return meta["history"], int(meta["best_epoch"]), float(meta["best_score"]), state


# Optimiser settings when the caller leaves them out. The reward model fits a regression on
# noisy rewards with a decaying rate: larger batches, a smaller rate and more patience.
_GRADIENT_DEFAULTS: dict[str, Any] = {"batch_size": 256, "lr": 3e-3, "patience": 5}
_MODEL_DEFAULTS: dict[str, Any] = {"batch_size": 1024, "lr": 1e-3, "patience": 10}


def train_policy(
    spec: Spec,
    logs: Any,
    reward_name: str | None = None,
    *,
    method: Literal["pg", "value", "model"] = "pg",
    heads: Heads = "joint",
    hidden: Sequence[int] = (64,),
    epochs: int = 40,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_clip: float = 20.0,
    entropy: float = 0.01,
    weight_decay: float = 1e-4,
    validation: float = 0.2,
    patience: int | None = None,
    baseline: Literal["mean", "state"] = "state",
    seed: int = 0,
    nproc: int = 1,
) -> TrainResult:
    """Train a policy for ``spec`` from request-level logs (see :func:`log_data`).

    ``method="pg"``: minimise ``−mean(min(π/μ, weight_clip) · (r − b(x)) / σ · log π(a|x))`` with
    the importance weight held constant (the off-policy REINFORCE estimator of the paper's
    family). ``b`` is the baseline: ``"state"`` (default) a ridge regression of the reward on the
    state (:func:`state_baseline`), ``"mean"`` the mean training reward; either cuts the
    variance that a reward with a large mean would add, and the clip bounds what one lucky
    request can do; a small entropy bonus keeps the softmax from collapsing on early noise.
    ``method="value"``: regress each logged reward on the logged action's output (one output per
    action), acting by argmax — the comparison learner.
    ``method="model"``: a low-rank reward model over state × action *levels*
    (:class:`_RewardModel`, which shares what it learns about one weight level across all
    actions that use it), early stopped on validation squared error, then folded exactly into
    the usual one-output-per-action value network; ``best_epoch`` and ``validation_snips`` then
    refer to the reward model. ``batch_size``, ``lr`` and ``patience`` default to 256, 3e-3 and
    5 for ``pg``/``value`` and to 1024, 1e-3 and 10 for ``model`` (which also decays the rate
    on a cosine schedule over ``epochs``).

    Every epoch the validation split's SNIPS estimate of the current policy is computed; the
    best epoch's weights are kept, and training stops after ``patience`` epochs without
    improvement. Seeded: the same inputs give the same policy.

    ``nproc > 1`` trains with PyTorch DistributedDataParallel in that many local processes (gloo
    backend on CPU, loopback rendezvous): each process computes the gradient of its share of
    every minibatch and DDP averages them, so the result matches single-process training up to
    floating-point summation order (tests/test_policy_ddp.py checks parameters agree to 1e-3).
    Launched by ``torchrun`` (:func:`torchrun_rank`), every process of the job calls this with
    ``nproc=1`` and they train together the same way; each returns the same policy.
    """
    if method not in ("pg", "value", "model"):
        raise ValueError("method must be 'pg', 'value' or 'model'")
    launched = torchrun_rank()
    if launched is not None and nproc > 1:
        raise ValueError(
            f"launched by torchrun (WORLD_SIZE={launched[1]}), which starts the processes: "
            "leave nproc at 1"
        )
    if method == "model" and (nproc > 1 or launched is not None):
        raise ValueError("method 'model' trains in one process; use nproc=1 without torchrun")
    if method == "model" and heads != "joint":
        raise ValueError("method 'model' folds into a joint network; use heads='joint'")
    if baseline not in ("mean", "state"):
        raise ValueError("baseline must be 'mean' or 'state'")
    if nproc < 1:
        raise ValueError("nproc must be >= 1")
    data = logs if isinstance(logs, LogData) else log_data(spec, logs, reward_name)
    grid = ActionGrid.from_spec(spec)
    state = state_inputs(spec)
    if len(data) < 2:
        raise ValueError("training needs at least 2 logged requests")
    torch.manual_seed(seed)
    train_rows, val_rows = _split(len(data), validation, seed)
    train, val = data.subset(train_rows), data.subset(val_rows)
    kind: Kind = "policy_gradient" if method == "pg" else "value"
    net = PolicyNet(train.states.shape[1], grid.shape, tuple(hidden), heads)
    with torch.no_grad():
        x = torch.as_tensor(train.states)
        net.mean.copy_(x.mean(dim=0))
        net.std.copy_(x.std(dim=0).clamp(min=1e-6) if len(train) > 1 else torch.ones(x.shape[1]))
    policy = LearnedPolicy(
        net,
        grid,
        state,
        kind,
        tuple(hidden),
        spec_hash(spec),
        reward_name or (spec.policy.reward if spec.policy else None),
    )
    rewards = train.rewards.astype(np.float64)
    mean_reward = float(rewards.mean())
    b = (
        state_baseline(train.states, rewards)
        if baseline == "state"
        else np.full(len(train), mean_reward)
    )
    residual = rewards - b
    scale = float(residual.std()) if len(train) > 1 and float(residual.std()) > 0 else 1.0
    arrays = _Arrays(
        train.states.astype(np.float32),
        train.actions.astype(np.int64),
        train.propensities.astype(np.float64),
        rewards.astype(np.float32),
        (residual / scale).astype(np.float32),
    )
    if kind == "value":
        with torch.no_grad():
            net.out.bias.fill_(mean_reward if heads == "joint" else mean_reward / len(grid.shape))
    defaults = _MODEL_DEFAULTS if method == "model" else _GRADIENT_DEFAULTS
    fit = _Fit(
        method,
        epochs,
        defaults["batch_size"] if batch_size is None else batch_size,
        defaults["lr"] if lr is None else lr,
        weight_clip,
        entropy,
        weight_decay,
        defaults["patience"] if patience is None else patience,
        seed,
    )
    if method == "model":
        history, best_epoch, best_score, best_state = _fit_reward_model(policy, arrays, val, fit)
    elif launched is not None:
        history, best_epoch, best_score, best_state = _run_under_torchrun(
            policy, arrays, val, fit, *launched
        )
    elif nproc > 1:
        history, best_epoch, best_score, best_state = _run_distributed(
            policy, arrays, val, fit, nproc
        )
    else:
        history, best_epoch, best_score, best_state = _fit(
            net, net, arrays, lambda _: _validation_score(policy, val), fit
        )
    net.load_state_dict(best_state)
    net.eval()
    from blendspec.policy.ope import evaluate

    report: dict[str, Any] = {}
    greedy_report: dict[str, Any] = {}
    if len(val):
        for greedy, out in ((False, report), (True, greedy_report)):
            est = evaluate(
                val.actions,
                val.rewards,
                val.propensities,
                policy.probs(val.states, greedy=greedy),
                bootstrap=200,
                seed=seed,
            )
            out.update({k: v.to_json() for k, v in est.items()})
    policy.info = {
        "method": method,
        "seed": seed,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "train_rows": len(train),
        "validation_rows": len(val),
        "validation_snips": best_score,
        "baseline": baseline,
        "nproc": launched[1] if launched is not None else nproc,
        "launcher": "torchrun" if launched is not None else ("spawn" if nproc > 1 else None),
    }
    return TrainResult(policy, history, best_epoch, report, len(train), len(val), greedy_report)
