"""DRL-PUT: per-request utility weights learned from logs (DESIGN §5).

* ``files`` — where a spec's policy file is and whether it opens (torch-free: the spec checks use it);
* ``learn`` — the action grid, rewards, networks, save/load, training and DDP;
* ``ope`` — off-policy estimates (replay, IPS, SNIPS, DR), numpy only;
* ``explore`` — exploration logs and on-policy evaluation in the simulator;
* ``report`` — the reward ablation and personalisation report (`blend policy report`).

``from blendspec.policy import train_policy`` (the path before the package existed) keeps working:
the names of ``learn`` are looked up on first use, so importing ``blendspec.policy.files`` or
``blendspec.policy.ope`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    # import_module, not `from blendspec.policy import learn`: that form asks this very
    # __getattr__ for `learn` first, and would recurse.
    learn = importlib.import_module("blendspec.policy.learn")

    if name in learn.__all__:
        return getattr(learn, name)
    raise AttributeError(f"module 'blendspec.policy' has no attribute {name!r}")
