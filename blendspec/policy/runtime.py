"""What serving a learned policy needs: load a policy file and compute actions from states.

:class:`LearnedPolicy` is a network with the grid and state it was trained for
(``kind="policy_gradient"`` outputs action probabilities, ``kind="value"`` per-action reward
predictions and acts by argmax); it gives the action distribution, samples actions with the
spec's exploration and their propensities (what the next round of off-policy learning needs),
and saves itself. :func:`load_policy` reads a file through :mod:`blendspec.policy.store`'s
checks and builds the network. The compiled module's ``policy`` node
(:class:`blendspec.compiler.lower.PolicyRuntime`) serves the same distribution in torch ops; it
loads its network here, and never imports the training code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from blendspec.policy.grid import ActionGrid
from blendspec.policy.network import Kind, PolicyNet
from blendspec.policy.store import PolicyFileError, StoredPolicy
from blendspec.spec.model import EpsilonExploration, SoftmaxExploration, Spec, UniformExploration

__all__ = ["LearnedPolicy", "apply_exploration", "load_policy"]


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

    def stored(self) -> StoredPolicy:
        """What :meth:`save` writes: the network's tensors and the metadata that rebuilds it."""
        return StoredPolicy(
            self.kind,
            self.net.heads,
            self.hidden,
            self.grid,
            self.state,
            self.spec_hash,
            self.reward,
            self.info,
            self.net.state_dict(),
        )

    def metadata(self) -> dict[str, Any]:
        """The JSON metadata a saved file holds."""
        return self.stored().metadata()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the policy file, atomically (temp file + rename)."""
        return self.stored().write(path)


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

    :meth:`StoredPolicy.read <blendspec.policy.store.StoredPolicy.read>` checks the file (only
    tensors and strings, metadata schema, tensor shapes, grid and state against the spec) before
    the network is built here. Every problem is a one-line :class:`PolicyFileError` naming the
    file. A different spec hash alone is not an error, it is recorded in ``info``.
    """
    stored = StoredPolicy.read(path, spec)
    state_size = sum(s for _, s in stored.state)
    net = PolicyNet(state_size, stored.grid.shape, stored.hidden, stored.heads)
    try:
        net.load_state_dict(stored.params)
    except RuntimeError as error:
        from blendspec.io.outputs import display_path

        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PolicyFileError(
            f"{display_path(Path(path))}: tensors do not match the metadata ({first})"
        ) from None
    net.eval()
    return LearnedPolicy(
        net,
        stored.grid,
        stored.state,
        stored.kind,
        stored.hidden,
        stored.spec_hash,
        stored.reward,
        stored.info,
    )
