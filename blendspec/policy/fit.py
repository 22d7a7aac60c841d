"""The optimisation loops: one epoch of each learner, and the early stopping they share.

Two learners train a policy network: the gradient learner (:func:`fit_gradient`: the
importance-weighted policy gradient, or the per-action value regression), which DDP runs in
several processes, and the reward-model learner (:func:`fit_reward_model`), which fits a
:class:`~blendspec.policy.network.RewardModel` and folds it into a value network. They differ in
what one epoch does and what score they watch, and share everything else through
:func:`early_stopping`: run epochs, keep the best-scoring epoch's weights, stop after
``patience`` epochs without improvement. :mod:`blendspec.policy.train` prepares the data and
picks the learner; :mod:`blendspec.policy.ddp` runs :func:`fit_gradient` in a process group.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from blendspec.policy.network import PolicyNet, RewardModel
from blendspec.policy.ope import evaluate
from blendspec.policy.rewards import LogData
from blendspec.policy.runtime import LearnedPolicy

__all__ = [
    "FitSettings",
    "Fitted",
    "Method",
    "TrainingRows",
    "early_stopping",
    "fit_gradient",
    "fit_reward_model",
    "minibatches",
    "snips",
    "validation_score",
]

Method = Literal["pg", "value", "model"]
"""The learners: policy gradient, per-action value regression, reward model."""


@dataclass(frozen=True)
class FitSettings:
    """Hyper-parameters of the optimisation loop, resolved (no per-method defaults left to
    choose), shared by every process of a DDP run."""

    method: Method
    epochs: int
    batch_size: int
    lr: float
    weight_clip: float
    entropy: float
    weight_decay: float
    patience: int
    seed: int


@dataclass(frozen=True)
class TrainingRows:
    """Training rows as plain arrays (what a worker process receives)."""

    states: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray
    advantages: np.ndarray


@dataclass(frozen=True)
class Fitted:
    """How a loop went: one record per epoch run, the best epoch, its score and its weights."""

    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    state: dict[str, Tensor]


def early_stopping(
    module: nn.Module,
    epochs: int,
    patience: int,
    run_epoch: Callable[[int], tuple[float, float]],
    score_name: str,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Fitted:
    """Run ``run_epoch(epoch) -> (training loss, score)`` for up to ``epochs`` epochs, keeping a
    copy of ``module``'s weights after the best-scoring epoch (higher is better; epoch 0 always
    counts), and stop once ``patience`` epochs in a row have not improved on it. The history
    records ``{"epoch", "loss", score_name}`` per epoch run; ``on_epoch`` is handed each record
    as it is made (a command's progress bar)."""
    best_score, best_epoch, stale = -math.inf, 0, 0
    best_state = copy.deepcopy(module.state_dict())
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        loss, score = run_epoch(epoch)
        history.append({"epoch": epoch, "loss": loss, score_name: score})
        if on_epoch is not None:
            on_epoch(history[-1])
        if score > best_score or epoch == 0:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
            continue
        stale += 1
        if stale >= patience:
            break
    return Fitted(history, best_epoch, best_score, best_state)


def minibatches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    """One epoch's minibatches: row indices of a fresh seeded permutation of ``n`` rows, cut into
    ``batch_size`` pieces (the last may be short)."""
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def snips(policy: LearnedPolicy, data: LogData) -> float:
    """The SNIPS estimate of the policy's softmax on ``data`` (nan for no rows)."""
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


def validation_score(policy: LearnedPolicy, val: LogData) -> float | None:
    """SNIPS of the current softmax policy on the validation split (None: no split, and
    early stopping then watches the training loss instead)."""
    return snips(policy, val) if len(val) else None


def fit_gradient(
    net: nn.Module,
    module: PolicyNet,
    train: TrainingRows,
    score: Callable[[PolicyNet], float | None],
    fit: FitSettings,
    rank: int = 0,
    world_size: int = 1,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Fitted:
    """The gradient learner's loop; ``net`` is ``module`` itself or its DistributedDataParallel
    wrap.

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

    def run_epoch(epoch: int) -> tuple[float, float]:
        net.train()
        total = 0.0
        for batch in minibatches(n, fit.batch_size, gen):
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
        return total / n, -total / n if value is None else value

    return early_stopping(module, fit.epochs, fit.patience, run_epoch, "val_snips", on_epoch)


def fit_reward_model(
    policy: LearnedPolicy,
    train: TrainingRows,
    val: LogData,
    fit: FitSettings,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Fitted:
    """``method="model"``: fit a :class:`RewardModel` by least squares with a cosine
    learning-rate schedule (the reward is noisy enough that a constant rate keeps the argmax
    wandering from epoch to epoch), keep the epoch with the lowest validation squared error, and
    fold it into the policy's network (kind ``value``), so that the saved file, the loader and
    the run-time lowering stay exactly as for the other learners. The result's ``state`` is the
    folded network's."""
    net = policy.net
    gen = torch.Generator().manual_seed(fit.seed)
    mean, std = net.mean.clone(), net.std.clone()
    z = (torch.as_tensor(train.states) - mean) / std
    zv = (torch.as_tensor(val.states) - mean) / std
    actions = torch.as_tensor(train.actions)
    rewards = torch.as_tensor(train.rewards, dtype=torch.float32)
    va = torch.as_tensor(val.actions)
    vr = torch.as_tensor(val.rewards, dtype=torch.float32)
    model = RewardModel(z.shape[1], policy.grid.shape, policy.hidden)
    with torch.no_grad():
        model.state_out.bias[-1] = float(rewards.mean())
    optimiser = torch.optim.Adam(model.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, fit.epochs))
    n = len(train.actions)

    def run_epoch(epoch: int) -> tuple[float, float]:
        model.train()
        total = 0.0
        for idx in minibatches(n, fit.batch_size, gen):
            loss = ((model(z[idx], actions[idx]) - rewards[idx]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        schedule.step()
        model.eval()
        with torch.no_grad():
            score = -float(((model(zv, va) - vr) ** 2).mean()) if len(va) else -total / n
        return total / n, score

    fitted = early_stopping(model, fit.epochs, fit.patience, run_epoch, "val_neg_mse", on_epoch)
    model.load_state_dict(fitted.state)
    model.eval()
    model.fold_into(net)
    net.eval()
    return replace(fitted, state=copy.deepcopy(net.state_dict()))
