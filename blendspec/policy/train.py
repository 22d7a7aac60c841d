"""Training a policy from logs: the settings (:class:`TrainConfig`), the data preparation and
the choice of learner (:func:`train_policy`), and what comes back (:class:`TrainResult`).

The learners themselves are the loops of :mod:`blendspec.policy.fit`; several processes are
:mod:`blendspec.policy.ddp`'s business; this module ties them together. Serving imports none of
the three: ``compiler/lower.py`` needs :mod:`blendspec.policy.runtime` and what it stands on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from blendspec.policy.ddp import run_spawned, run_under_torchrun, torchrun_rank
from blendspec.policy.fit import (
    FitSettings,
    Fitted,
    Method,
    TrainingRows,
    fit_gradient,
    fit_reward_model,
    validation_score,
)
from blendspec.policy.grid import ActionGrid, spec_hash, state_inputs
from blendspec.policy.network import Heads, Kind, PolicyNet
from blendspec.policy.ope import evaluate
from blendspec.policy.rewards import LogData, log_data
from blendspec.policy.runtime import LearnedPolicy
from blendspec.spec.model import Spec

__all__ = [
    "TrainConfig",
    "TrainResult",
    "cross_fitted_reward_model",
    "state_baseline",
    "train_policy",
]


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train_policy` trains: the learner, the network and the optimiser.

    * ``method`` — ``"pg"``: minimise ``−mean(min(π/μ, weight_clip) · (r − b(x)) / σ ·
      log π(a|x))`` with the importance weight held constant (the off-policy REINFORCE
      estimator of the paper's family); a small ``entropy`` bonus keeps the softmax from
      collapsing on early noise. ``"value"``: regress each logged reward on the logged action's
      output (one output per action), acting by argmax — the comparison learner. ``"model"``: a
      low-rank reward model over state × action *levels*
      (:class:`~blendspec.policy.network.RewardModel`, which shares what it learns about one
      weight level across all actions that use it), early stopped on validation squared error,
      then folded exactly into the usual one-output-per-action value network; ``best_epoch``
      and ``validation_snips`` then refer to the reward model. It decays the rate on a cosine
      schedule over ``epochs``, trains in one process and needs ``heads="joint"``.
    * ``heads``, ``hidden`` — the network (:class:`~blendspec.policy.network.PolicyNet`).
    * ``baseline`` (``pg``) — ``"state"``: a ridge regression of the reward on the state
      (:func:`state_baseline`); ``"mean"``: the mean training reward. Either cuts the variance
      that a reward with a large mean would add; ``weight_clip`` bounds what one lucky request
      can do.
    * ``batch_size``, ``lr``, ``patience`` — ``None`` takes the method's default
      (:attr:`METHOD_DEFAULTS`): 256, 3e-3 and 5 for ``pg``/``value``, 1024, 1e-3 and 10 for
      ``model`` (a regression on noisy rewards: larger batches, a smaller rate, more patience).
    * ``validation`` — the share of requests held out; every epoch is scored on them and
      training stops after ``patience`` epochs without improvement, keeping the best epoch.
    * ``seed`` — the same logs, config and seed give the same policy.
    * ``nproc`` — ``> 1`` trains with DistributedDataParallel in that many local processes
      (:mod:`blendspec.policy.ddp`).

    Invalid combinations are refused when the config is made, before any log is read.
    """

    method: Method = "pg"
    heads: Heads = "joint"
    hidden: tuple[int, ...] = (64,)
    epochs: int = 40
    batch_size: int | None = None
    lr: float | None = None
    weight_clip: float = 20.0
    entropy: float = 0.01
    weight_decay: float = 1e-4
    validation: float = 0.2
    patience: int | None = None
    baseline: Literal["mean", "state"] = "state"
    seed: int = 0
    nproc: int = 1

    METHOD_DEFAULTS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "pg": {"batch_size": 256, "lr": 3e-3, "patience": 5},
        "value": {"batch_size": 256, "lr": 3e-3, "patience": 5},
        "model": {"batch_size": 1024, "lr": 1e-3, "patience": 10},
    }
    """``batch_size``, ``lr`` and ``patience`` of each method, where the config leaves them
    ``None``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.method not in ("pg", "value", "model"):
            raise ValueError("method must be 'pg', 'value' or 'model'")
        if self.method == "model" and self.nproc > 1:
            raise ValueError("method 'model' trains in one process; use nproc=1 without torchrun")
        if self.method == "model" and self.heads != "joint":
            raise ValueError("method 'model' folds into a joint network; use heads='joint'")
        if self.baseline not in ("mean", "state"):
            raise ValueError("baseline must be 'mean' or 'state'")
        if self.nproc < 1:
            raise ValueError("nproc must be >= 1")

    def fit_settings(self) -> FitSettings:
        """The loop's settings, with the method's defaults filled in."""
        defaults = self.METHOD_DEFAULTS[self.method]
        return FitSettings(
            self.method,
            self.epochs,
            defaults["batch_size"] if self.batch_size is None else self.batch_size,
            defaults["lr"] if self.lr is None else self.lr,
            self.weight_clip,
            self.entropy,
            self.weight_decay,
            defaults["patience"] if self.patience is None else self.patience,
            self.seed,
        )


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


def train_policy(
    spec: Spec,
    logs: Any,
    reward_name: str | None = None,
    *,
    config: TrainConfig | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a policy for ``spec`` from request-level logs (see :func:`~blendspec.policy.rewards.log_data`).

    ``config`` says how (:class:`TrainConfig`); its fields may also be given as keywords, alone
    (``train_policy(spec, logs, method="model", epochs=20)``) or as changes to ``config``.

    Every epoch the validation split's SNIPS estimate of the current policy is computed; the
    best epoch's weights are kept, and training stops after ``patience`` epochs without
    improvement. Seeded: the same inputs give the same policy.

    ``nproc > 1`` trains with PyTorch DistributedDataParallel in that many local processes (gloo
    backend on CPU, loopback rendezvous): each process computes the gradient of its share of
    every minibatch and DDP averages them, so the result matches single-process training up to
    floating-point summation order (tests/test_policy_ddp.py checks parameters agree to 1e-3).
    Launched by ``torchrun`` (:func:`~blendspec.policy.ddp.torchrun_rank`), every process of the
    job calls this with ``nproc=1`` and they train together the same way; each returns the same
    policy.

    ``progress`` is handed each epoch's record (``epoch``, ``loss`` and the score early stopping
    watches) as the epoch ends; at most ``config.epochs`` of them (fewer when training stops
    early). Training in several processes reports nothing: the epochs run in the workers.
    """
    if config is None:
        config = TrainConfig(**settings)
    elif settings:
        config = replace(config, **settings)
    launched = torchrun_rank()
    if launched is not None and config.nproc > 1:
        raise ValueError(
            f"launched by torchrun (WORLD_SIZE={launched[1]}), which starts the processes: "
            "leave nproc at 1"
        )
    if launched is not None and config.method == "model":
        raise ValueError("method 'model' trains in one process; use nproc=1 without torchrun")
    data = logs if isinstance(logs, LogData) else log_data(spec, logs, reward_name)
    return _train(
        ActionGrid.from_spec(spec),
        state_inputs(spec),
        data,
        config,
        spec_hash(spec),
        reward_name or (spec.policy.reward if spec.policy else None),
        launched,
        progress,
    )


def _train(
    grid: ActionGrid,
    state: tuple[tuple[str, int], ...],
    data: LogData,
    config: TrainConfig,
    hash_: str,
    reward: str | None,
    launched: tuple[int, int] | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """:func:`train_policy` once the grid, the state and the rows are known (no spec needed:
    :func:`cross_fitted_reward_model` trains on a grid the logs define)."""
    if len(data) < 2:
        raise ValueError("training needs at least 2 logged requests")
    seed = config.seed
    torch.manual_seed(seed)
    train_rows, val_rows = _split(len(data), config.validation, seed)
    train, val = data.subset(train_rows), data.subset(val_rows)
    kind: Kind = "policy_gradient" if config.method == "pg" else "value"
    net = PolicyNet(train.states.shape[1], grid.shape, config.hidden, config.heads)
    with torch.no_grad():
        x = torch.as_tensor(train.states)
        net.mean.copy_(x.mean(dim=0))
        net.std.copy_(x.std(dim=0).clamp(min=1e-6) if len(train) > 1 else torch.ones(x.shape[1]))
    policy = LearnedPolicy(
        net,
        grid,
        state,
        kind,
        config.hidden,
        hash_,
        reward,
    )
    rewards = train.rewards.astype(np.float64)
    mean_reward = float(rewards.mean())
    b = (
        state_baseline(train.states, rewards)
        if config.baseline == "state"
        else np.full(len(train), mean_reward)
    )
    residual = rewards - b
    scale = float(residual.std()) if len(train) > 1 and float(residual.std()) > 0 else 1.0
    rows = TrainingRows(
        train.states.astype(np.float32),
        train.actions.astype(np.int64),
        train.propensities.astype(np.float64),
        rewards.astype(np.float32),
        (residual / scale).astype(np.float32),
    )
    if kind == "value":
        with torch.no_grad():
            net.out.bias.fill_(
                mean_reward if config.heads == "joint" else mean_reward / len(grid.shape)
            )
    fit = config.fit_settings()
    fitted: Fitted
    if config.method == "model":
        fitted = fit_reward_model(policy, rows, val, fit, on_epoch=progress)
    elif launched is not None:
        fitted = run_under_torchrun(policy, rows, val, fit, *launched)
    elif config.nproc > 1:
        fitted = run_spawned(policy, rows, val, fit, config.nproc)
    else:
        fitted = fit_gradient(
            net, net, rows, lambda _: validation_score(policy, val), fit, on_epoch=progress
        )
    net.load_state_dict(fitted.state)
    net.eval()
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
        "method": config.method,
        "seed": seed,
        "epochs_run": len(fitted.history),
        "best_epoch": fitted.best_epoch,
        "train_rows": len(train),
        "validation_rows": len(val),
        "validation_snips": fitted.best_score,
        "baseline": config.baseline,
        "nproc": launched[1] if launched is not None else config.nproc,
        "launcher": "torchrun" if launched is not None else ("spawn" if config.nproc > 1 else None),
    }
    return TrainResult(
        policy, fitted.history, fitted.best_epoch, report, len(train), len(val), greedy_report
    )


def cross_fitted_reward_model(
    grid: ActionGrid,
    state: tuple[tuple[str, int], ...],
    data: LogData,
    *,
    folds: int = 2,
    seed: int = 0,
    config: TrainConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[np.ndarray, LearnedPolicy]]:
    """The reward model ``method="model"`` learns, fitted ``folds`` times, each time on the
    rows outside one fold: ``[(rows of the fold, model that never saw them), …]``.

    Doubly robust estimation subtracts the model's prediction from each logged reward; a model
    that has seen the row predicts its own noise and biases the estimate towards the model
    (cross-fitting, as in double machine learning). Each fold's model predicts its fold's rows
    through :meth:`LearnedPolicy.scores` (the value network it folds into). ``state`` may be
    empty (specs without a policy): the model then sees a constant and learns the actions'
    levels alone. ``progress(1)`` is called after each fold.
    """
    config = replace(config or TrainConfig(), method="model", heads="joint", nproc=1, seed=seed)
    n = len(data)
    if n < 2 * folds:
        raise ValueError(f"cross-fitting {folds} folds needs at least {2 * folds} requests")
    if not state:
        state = (("@constant", 1),)
        data = replace(data, states=np.zeros((n, 1), dtype=np.float32))
    fold = np.random.default_rng([seed, 0xF01D]).permutation(n) % folds
    out: list[tuple[np.ndarray, LearnedPolicy]] = []
    for f in range(folds):
        rows = np.flatnonzero(fold == f)
        train = data.subset(np.flatnonzero(fold != f))
        model = _train(grid, state, train, config, "", None).policy
        out.append((rows, model))
        if progress is not None:
            progress(1)
    return out
