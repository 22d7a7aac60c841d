"""DRL-PUT figures on the simulator's default world (issue 5, DESIGN §7), in one run.

    python benchmarks/bench_policy.py            # 200k logged requests, 500 held-out requests
    python benchmarks/bench_policy.py --quick    # 20k logged, 120 held-out: a smoke run (~10 min)
    python benchmarks/bench_policy.py --cache .bench-cache   # reuse logs and grid values

Steps, all on specs/ads.blend (a 10 x 10 x 10 grid over w_ctr, w_long_ctr, w_value):

1. uniform exploration logs of ``--logs`` requests (stream seed 0);
2. the exhaustive grid: every held-out request (stream seed 1) served with each of the 1,000
   actions, exact expected outcomes (``blendspec.policy.explore.grid_values``) — this gives the best
   fixed weights, the spec's defaults, the per-segment and per-request oracles, and the
   on-policy value of any policy on those very requests, all paired;
3. for each declared reward, a policy of the first ``--method`` (default: the reward-model
   learner) trained on the logs, and the other methods (default: the policy gradient) for the
   spec's own reward, all evaluated on-policy on the held-out requests;
4. SNIPS and DR estimates of the learned policy's value from held-out uniform logs (stream
   seed 2), next to its on-policy value on the requests of those logs.

Prints each figure with the target it is checked against. Absolute times drift on the shared
2-core machines; the timings printed are for this run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "specs" / "ads.blend"
CANDIDATES = 200
LOG_CHUNK = 10_000


def _key(*parts: object) -> str:
    """Cache key of a logs chunk or grid: its own parameters and the default world's config (a
    change to the simulator's segments must not reuse values computed in the old world)."""
    from blendspec.sim.segments import WorldConfig

    keyed = [repr(WorldConfig()), *(str(p) for p in parts)]
    return hashlib.sha256(json.dumps(keyed).encode()).hexdigest()[:12]


def logs(cache: Path | None, n: int, seed: int, say) -> pa.Table:  # type: ignore[no-untyped-def]
    """Uniform exploration logs, in chunks of 10k requests (each chunk cached when asked)."""
    from blendspec.policy.explore import exploration_logs
    from blendspec.sim.core import World
    from blendspec.spec.loader import load_spec

    loaded, world = load_spec(SPEC), World.default()
    parts = []
    for start in range(0, n, LOG_CHUNK):
        size = min(LOG_CHUNK, n - start)
        path = (
            cache / f"logs-{_key(SPEC.read_text(), seed, start, size, CANDIDATES)}.parquet"
            if cache
            else None
        )
        if path is not None and path.exists():
            parts.append(pq.read_table(path))
            continue
        began = time.perf_counter()
        table = exploration_logs(
            loaded, world, size, seed=seed, start=start, candidates=CANDIDATES, batch_size=256
        )
        say(f"  logged requests {start:,}-{start + size:,} in {time.perf_counter() - began:.0f} s")
        if path is not None:
            tmp = path.with_suffix(".tmp")
            pq.write_table(table, tmp)
            tmp.rename(path)  # a half-written chunk is never mistaken for a cached one
        parts.append(table)
    return pa.concat_tables(parts)


def grid(cache: Path | None, n: int, say):  # type: ignore[no-untyped-def]
    """Every held-out request under every action (cached when asked)."""
    from blendspec.policy.explore import GridValues, grid_values
    from blendspec.sim.core import World
    from blendspec.spec.loader import load_spec

    loaded, world = load_spec(SPEC), World.default()
    path = cache / f"grid-{_key(SPEC.read_text(), n, CANDIDATES)}.npz" if cache else None
    if path is not None and path.exists():
        data = np.load(path)
        return GridValues(
            actions=data["actions"],
            outcomes={k[2:]: data[k] for k in data.files if k.startswith("o_")},
            segments=data["segments"],
            states=data["states"],
            segment_names=world.segment_names,
            seconds=float(data["seconds"]),
        )
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 60 or done == total:
            last[0] = time.perf_counter()
            say(f"  grid: {done}/{total} held-out requests x 1,000 actions")

    gv = grid_values(loaded, world, n, seed=1, candidates=CANDIDATES, progress=progress)
    if path is not None:
        np.savez(
            path,
            actions=gv.actions,
            segments=gv.segments,
            states=gv.states,
            seconds=gv.seconds,
            **{f"o_{k}": v for k, v in gv.outcomes.items()},
        )
    return gv


@dataclass(frozen=True)
class Figure:
    """One measured figure next to the target it is checked against."""

    name: str
    value: str
    target: str
    met: bool | None


def _train(spec, table, reward: str, method: str, epochs: int):  # type: ignore[no-untyped-def]
    from blendspec.policy.train import TrainConfig, train_policy

    heads = "factorised" if method == "pg" else "joint"
    config = TrainConfig(method=method, heads=heads, epochs=epochs, seed=0)
    began = time.perf_counter()
    result = train_policy(spec, table, reward, config=config)
    return result.policy, time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k logs, 120 held-out requests")
    parser.add_argument("--logs", type=int, help="logged training requests (default 200,000)")
    parser.add_argument("--held-out", type=int, help="held-out requests of the grid (500)")
    parser.add_argument("--ope-logs", type=int, help="held-out logged requests for OPE (20,000)")
    parser.add_argument(
        "--method",
        default="model,pg",
        help="learners, comma-separated; the first is the headline and runs the reward ablation",
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--cache", type=Path, help="folder to keep logs and grid values in")
    args = parser.parse_args(argv)
    n_logs = args.logs or (20_000 if args.quick else 200_000)
    n_held = args.held_out or (120 if args.quick else 500)
    n_ope = args.ope_logs or (5_000 if args.quick else 20_000)
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)

    import torch

    from blendspec.policy.explore import evaluate_on_policy
    from blendspec.policy.grid import ActionGrid
    from blendspec.policy.ope import evaluate
    from blendspec.policy.rewards import log_data
    from blendspec.sim.core import World
    from blendspec.spec.loader import load_spec

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    loaded = load_spec(SPEC)
    spec = loaded.spec
    grid_ = ActionGrid.from_spec(spec)
    world = World.default()
    own = spec.policy.reward if spec.policy else "engaged"
    slate = spec.slate.length
    say(f"torch threads {torch.get_num_threads()}; spec {SPEC.name}, {grid_.size} actions")

    began = time.perf_counter()
    train_table = logs(args.cache, n_logs, 0, say)
    t_logs = time.perf_counter() - began
    gv = grid(args.cache, n_held, say)

    rewards = gv.rewards(spec, own)  # [R, 1000]
    means = rewards.mean(axis=0)
    best_col = int(means.argmax())
    best_fixed = float(means[best_col])
    default = float(means[gv.column(np.array([grid_.default_action(spec)]))[0]])
    seg_oracle = (
        sum(
            rewards[gv.segments == s].mean(axis=0).max() * (gv.segments == s).sum()
            for s in np.unique(gv.segments)
        )
        / gv.requests
    )
    req_oracle = float(rewards.max(axis=1).mean())

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    if not methods or any(m not in ("pg", "value", "model") for m in methods):
        parser.error("--method takes pg, value and model")
    policies = {}
    timings = {}
    for reward in spec.rewards:
        policies[reward], timings[reward] = _train(
            spec, train_table, reward, methods[0], args.epochs
        )
        say(f"  trained `{reward}` ({methods[0]}) in {timings[reward]:.0f} s")
    others = {}
    for method in methods[1:]:
        others[method], seconds = _train(spec, train_table, own, method, args.epochs)
        say(f"  trained `{own}` ({method}) in {seconds:.0f} s")
    learned = policies[own]
    chosen = learned.probs(gv.states, greedy=True).argmax(axis=1)
    value = float(rewards[np.arange(gv.requests), gv.column(chosen)].mean())
    # The paired difference's standard error (same requests): is the gain more than noise?
    diff = rewards[np.arange(gv.requests), gv.column(chosen)] - rewards[:, best_col]
    diff_se = float(diff.std(ddof=1) / np.sqrt(diff.size))

    began = time.perf_counter()
    ope_table = logs(args.cache, n_ope, 2, say) if n_ope else None
    ope_rows = []
    if ope_table is not None:
        data = log_data(spec, ope_table, own)
        probs = learned.probs(data.states, greedy=True)
        est = evaluate(data.actions, data.rewards, data.propensities, probs, ("snips", "dr"))
        truth = evaluate_on_policy(
            loaded, world, learned, n_ope, seed=2, candidates=CANDIDATES, batch_size=256
        ).value
        for name, e in est.items():
            ope_rows.append(
                Figure(
                    f"{name.upper()} of the learned policy on {n_ope:,} held-out logs",
                    f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}] (n_eff {e.n_effective:.0f}); "
                    f"on-policy truth {truth:.3f}",
                    "95% interval contains the truth",
                    e.covers(truth),
                )
            )
    t_ope = time.perf_counter() - began

    long_rates = {}
    for reward, policy in policies.items():
        a = policy.probs(gv.states, greedy=True).argmax(axis=1)
        long_rates[reward] = float(gv.serve(a)["long_click"].mean() / slate)
    with_long = [r for r in spec.rewards if "long_click" in str(spec.rewards[r])]
    click_only = [r for r in spec.rewards if r not in with_long]

    def rel(x: float, base: float) -> str:
        return f"{x / base - 1:+.1%}"

    figures = [
        Figure(
            f"learned ({methods[0]}, `{own}`) vs best fixed of the exhaustive grid",
            f"{value:.4f} vs {best_fixed:.4f} ({rel(value, best_fixed)}; paired diff "
            f"{diff.mean():+.4f} ± {1.96 * diff_se:.4f})",
            ">= +5%",
            value >= 1.05 * best_fixed,
        ),
        Figure(
            "learned vs the spec's defaults",
            f"{value:.4f} vs {default:.4f} ({rel(value, default)})",
            "more than over the best fixed",
            value / default > value / best_fixed,
        ),
        Figure(
            "headroom: per-segment oracle vs best fixed (in-sample)",
            f"{seg_oracle:.4f} ({rel(seg_oracle, best_fixed)})",
            "context: a learner cannot beat it",
            None,
        ),
        Figure(
            "headroom: per-request oracle vs best fixed",
            f"{req_oracle:.4f} ({rel(req_oracle, best_fixed)})",
            "context",
            None,
        ),
        *ope_rows,
    ]
    for lr in with_long:
        for cr in click_only:
            figures.append(
                Figure(
                    f"long-click rate: reward `{lr}` vs click-only `{cr}`",
                    f"{long_rates[lr]:.4f} vs {long_rates[cr]:.4f} "
                    f"({rel(long_rates[lr], long_rates[cr])})",
                    "higher",
                    long_rates[lr] > long_rates[cr],
                )
            )
    best_weights = grid_.decode(gv.actions[best_col : best_col + 1])[0]
    print(f"DRL-PUT on the default world — {SPEC.name}, reward `{own}`, {CANDIDATES} candidates")
    print(
        f"logs {n_logs:,} (uniform, {t_logs:.0f} s), held-out {gv.requests} requests x "
        f"{gv.actions.size} actions (grid {gv.seconds:.0f} s when computed, "
        f"{gv.seconds / max(1, gv.requests * gv.actions.size) * 1e3:.2f} ms per request-action),"
        f" training {timings[own]:.0f} s, OPE stage {t_ope:.0f} s"
    )
    print(f"best fixed weights {dict(zip(grid_.names, best_weights.tolist(), strict=True))}")
    print(f"learned policy: {np.unique(chosen).size} distinct actions on the held-out requests")
    for s in np.unique(gv.segments):
        rows = gv.segments == s
        print(
            f"  {gv.segment_names[s]:<12} n={rows.sum():<4} learned "
            f"{rewards[rows, gv.column(chosen[rows])].mean():.3f}  best fixed "
            f"{rewards[rows, best_col].mean():.3f}  segment's own best "
            f"{rewards[rows].mean(axis=0).max():.3f}"
        )
    for method, policy in others.items():
        a = policy.probs(gv.states, greedy=True).argmax(axis=1)
        v = float(rewards[np.arange(gv.requests), gv.column(a)].mean())
        print(f"other learner `{method}`: {v:.4f} ({rel(v, best_fixed)} vs best fixed)")
    width = max(len(f.name) for f in figures)
    for f in figures:
        mark = "  " if f.met is None else ("ok" if f.met else "NO")
        print(f"[{mark}] {f.name:<{width}}  {f.value}   (target: {f.target})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
