"""DRL-PUT: per-request utility weights learned from logs (DESIGN §5).

Serving a policy needs the first five modules; training adds the last three:

* ``files`` — where a spec's policy file is and whether it opens (torch-free: the spec checks use it);
* ``grid`` — the action grid, the policy's state inputs and the spec hash (numpy only);
* ``rewards`` — reward formulas and request-level logs read against a spec (numpy only);
* ``network`` — the policy network and the reward model that folds into it;
* ``store`` — the policy file format: writing, and reading without trusting the file;
* ``runtime`` — a loaded policy: action distribution, exploration, sampled actions (what
  ``compiler/lower.py`` imports);
* ``fit`` — the optimisation loops and the early stopping they share;
* ``ddp`` — the gradient learner in several processes (DistributedDataParallel, torchrun);
* ``train`` — ``TrainConfig`` and ``train_policy``: data preparation and the choice of learner;

and beside them ``ope`` (off-policy estimates, numpy only), ``explore`` (exploration logs and
on-policy evaluation in the simulator) and ``report`` (`blend policy report`).

``from blendspec.policy import train_policy`` (the path before the package existed) keeps working:
each name below is looked up in its module on first use, so importing ``blendspec.policy.files``
or ``blendspec.policy.ope`` — or ``from blendspec.policy import spec_hash`` — does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES: dict[str, str] = {
    "ACTION_COLUMN": "rewards",
    "PROPENSITY_COLUMN": "rewards",
    "REQUEST_ID_COLUMN": "rewards",
    "ActionGrid": "grid",
    "LearnedPolicy": "runtime",
    "LogData": "rewards",
    "PolicyFileError": "store",
    "PolicyNet": "network",
    "TrainConfig": "train",
    "TrainResult": "train",
    "apply_exploration": "runtime",
    "load_policy": "runtime",
    "log_data": "rewards",
    "policy_path_problem": "files",
    "reward_values": "rewards",
    "spec_hash": "grid",
    "state_inputs": "grid",
    "train_policy": "train",
}
"""The names ``blendspec.policy`` hands out, and the module (in this package) that defines each."""

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'blendspec.policy' has no attribute {name!r}")
    # import_module, not `from blendspec.policy import grid`: that form asks this very
    # __getattr__ for the submodule first when it is not imported yet, and would recurse.
    return getattr(importlib.import_module(f"blendspec.policy.{home}"), name)
