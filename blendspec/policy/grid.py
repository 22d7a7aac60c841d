"""What a policy acts on: the action grid, the state it reads, and the spec it was made for.

These three are the contract between a spec, its logs and a policy file: an action id in a log,
a state column and a spec hash mean the same thing to every tool that reads the same spec. They
live apart from the networks so that reading logs, estimating off-policy values and serving can
share them without importing torch (numpy only).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from blendspec.spec.model import Spec

__all__ = ["ActionGrid", "spec_hash", "state_inputs"]


@dataclass(frozen=True)
class ActionGrid:
    """The action set: the cartesian product of the policy weights' grids. Ids are row-major
    over ``spec.policy_weights`` in declaration order (the last declared weight varies fastest)."""

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
