"""Training the gradient learner in several processes with DistributedDataParallel.

Two ways in: :func:`run_spawned` starts ``nproc`` local processes itself (torch.multiprocessing,
gloo on CPU, a loopback rendezvous) and collects rank 0's result; :func:`run_under_torchrun`
joins a job that ``torchrun`` started (:func:`torchrun_rank` reads it from the environment). In
both, every process runs :func:`blendspec.policy.fit.fit_gradient` on its share of each
minibatch and DDP averages the gradients, so the result matches single-process training up to
floating-point summation order. Kept apart from the loop so that the loop reads as one process's
work, and from :mod:`blendspec.policy.train` so that process plumbing stays out of the learner.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from typing import Any

import torch

from blendspec.policy.fit import FitSettings, Fitted, TrainingRows, fit_gradient, validation_score
from blendspec.policy.rewards import LogData
from blendspec.policy.runtime import LearnedPolicy

__all__ = ["run_spawned", "run_under_torchrun", "torchrun_rank"]


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
    policy: LearnedPolicy,
    train: TrainingRows,
    val: LogData,
    fit: FitSettings,
    rank: int,
    world_size: int,
) -> Fitted:
    """Train in an initialised process group; every rank returns the same (synchronised) result."""
    from torch.nn.parallel import DistributedDataParallel

    net = DistributedDataParallel(policy.net)  # broadcasts rank 0's parameters
    return fit_gradient(
        net, policy.net, train, lambda _: validation_score(policy, val), fit, rank, world_size
    )


def _ddp_worker(
    rank: int,
    world_size: int,
    port: int,
    policy: LearnedPolicy,
    train: TrainingRows,
    val: LogData,
    fit: FitSettings,
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
        fitted = _ddp_fit(policy, train, val, fit, rank, world_size)
        if rank == 0:
            payload: dict[str, Any] = {f"param.{k}": v for k, v in fitted.state.items()}
            payload["meta"] = json.dumps(
                {
                    "history": fitted.history,
                    "best_epoch": fitted.best_epoch,
                    "best_score": fitted.best_score,
                }
            )
            torch.save(payload, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_under_torchrun(
    policy: LearnedPolicy,
    train: TrainingRows,
    val: LogData,
    fit: FitSettings,
    rank: int,
    world_size: int,
) -> Fitted:
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


def run_spawned(
    policy: LearnedPolicy, train: TrainingRows, val: LogData, fit: FitSettings, nproc: int
) -> Fitted:
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
    return Fitted(meta["history"], int(meta["best_epoch"]), float(meta["best_score"]), state)
