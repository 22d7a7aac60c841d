"""The networks: the policy network every policy file holds, and the reward model that folds into it.

:class:`PolicyNet` is an MLP over the (standardised) state features with either one softmax over
all K = Π|grid| actions (``heads="joint"``) or one softmax per weight whose log-probabilities add
up (``heads="factorised"``): far fewer outputs to learn from sparse logs, at the price of assuming
the weights' effects on the reward do not interact. A ``kind="policy_gradient"`` policy reads its
outputs as log-probabilities, a ``kind="value"`` one as per-action reward predictions.

:class:`RewardModel` is what ``method="model"`` trains; it shares :func:`state_body` with the
policy network so that it can be written into one exactly (:meth:`RewardModel.fold_into`), and
the saved file, the loader and serving never need to know which learner made a policy. Both live
here, apart from training, because serving builds a :class:`PolicyNet` from a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Heads", "Kind", "PolicyNet", "RewardModel", "state_body"]

Heads = Literal["joint", "factorised"]
Kind = Literal["policy_gradient", "value"]


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


class RewardModel(nn.Module):
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
