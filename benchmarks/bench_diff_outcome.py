"""`blend diff --logs` checked against the simulator's truth (issue 17), in one run.

    python benchmarks/bench_diff_outcome.py            # 20 pairs, 20k uniform logs, 2k truth
    python benchmarks/bench_diff_outcome.py --quick    # 3k logs, 300 truth requests

Steps, on a 5 x 5 action grid over w_ctr and w_long_ctr of an ads-like spec (MMR, a topic cap):

1. uniform exploration logs of ``--logs`` requests (stream seed 0) and, for the "retrained
   policy" pairs, two policies trained on other logs (stream seed 7): v1 (the policy gradient,
   3 epochs) and v2 (the reward-model learner);
2. the truth: ``--truth`` held-out requests (stream seed 1) served with every action of the
   grid, exact expected outcomes (``grid_values``, what ``blend policy report --simulate``
   judges with); a spec's true value is the mean over those requests of
   ``Σ_a π(a|x) V(x, a)``, with ``π`` the distribution ``blend run`` draws its weights from;
3. for each of 20 pairs of specs — weight default changes of several sizes and signs,
   exploration changes, retrained policies, and fixed-weight specs without a policy — the
   estimate ``blend diff --logs`` prints (``compute_outcome``: SNIPS and DR, paired bootstrap),
   and whether its 95% interval of NEW − OLD covers the true difference and, when it excludes
   0, has the true sign;
4. one pair that must be refused: a diversity change (MMR λ 0.8 → 0.5).

The true difference is itself a mean over ``--truth`` requests; its standard error is printed
beside it so that a miss can be told from noise in the truth.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPEC = """spec bench

slate 20

input p_click: score
input p_longclick: score
input p_hide: score
input bid: score
input visual: embedding[256]
input topic: category
{state_input}
objective ctr = p_click
objective long_ctr = p_longclick
objective value = log1p(bid)
objective hide = p_hide

weight w_ctr = {ctr} in [0, 4] {{{ctr_source}}}
weight w_long_ctr = {long} in [0, 4] {{{long_source}}}
weight w_value = 0.5 in [0, 2]
weight w_hide = -2 in [-10, 0] {{sign = negative}}

utility = w_ctr * ctr + w_long_ctr * long_ctr + w_value * value + w_hide * hide

diversity mmr {{
  similarity = 0.7 * cosine(visual) + 0.3 * category(topic)
  lambda = {lam}
  relevance = zscore
}}

cap topic {{max = 2, window = 5}}

outcome click, long_click, hide, conversion
reward clicks = click
reward engaged = click + 2 * long_click - 5 * hide
{policy}"""

GRID = "[0, 0.5, 1, 2, 4]"


@dataclass(frozen=True)
class Side:
    """One spec of a pair: its weight defaults and how it sets the policy weights."""

    ctr: float = 1.0
    long: float = 1.0
    exploration: str | None = "{kind = none}"  # None: no policy at all, both weights fixed
    file: str | None = None  # "v1" or "v2"
    lam: float = 0.8

    def text(self) -> str:
        if self.exploration is None:
            return SPEC.format(
                state_input="", ctr=self.ctr, long=self.long, ctr_source="sign = positive",
                long_source="sign = positive", lam=self.lam, policy="",
            )  # fmt: skip
        lines = ["policy {", "  state = [user_state]"]
        if self.file is not None:
            lines.append(f'  file = "{self.file}.pt"')
        lines += [f"  exploration = {self.exploration}", "  reward = engaged", "}", ""]
        source = f"source = policy, grid = {GRID}"
        return SPEC.format(
            state_input="input user_state: features[32]\n", ctr=self.ctr, long=self.long,
            ctr_source=source, long_source=source, lam=self.lam, policy="\n".join(lines),
        )  # fmt: skip


def eps(epsilon: float) -> str:
    return f"{{kind = epsilon, epsilon = {epsilon}}}"


PAIRS: tuple[tuple[str, Side, Side], ...] = (
    ("w_ctr 1 → 2", Side(), Side(ctr=2)),
    ("w_ctr 1 → 0.5", Side(), Side(ctr=0.5)),
    ("w_ctr 1 → 4", Side(), Side(ctr=4)),
    ("w_ctr 1 → 0", Side(), Side(ctr=0)),
    ("w_long_ctr 1 → 2", Side(), Side(long=2)),
    ("w_long_ctr 1 → 0.5", Side(), Side(long=0.5)),
    ("w_long_ctr 1 → 4", Side(), Side(long=4)),
    ("both 2 → 1", Side(ctr=2, long=2), Side()),
    ("w_ctr 0.5 → 1 at w_long_ctr 2", Side(ctr=0.5, long=2), Side(ctr=1, long=2)),
    ("exploration none → ε 0.1", Side(), Side(exploration=eps(0.1))),
    ("exploration ε 0.1 → 0.5", Side(exploration=eps(0.1)), Side(exploration=eps(0.5))),
    ("exploration ε 0.2 → uniform", Side(exploration=eps(0.2)),
     Side(exploration="{kind = uniform}")),
    ("exploration none → ε 0.3 at (4, 0)", Side(ctr=4, long=0),
     Side(ctr=4, long=0, exploration=eps(0.3))),
    ("policy v1 → v2 (retrained)", Side(file="v1"), Side(file="v2")),
    ("defaults → policy v2", Side(), Side(file="v2")),
    ("policy v2: exploration none → ε 0.1", Side(file="v2"),
     Side(file="v2", exploration=eps(0.1))),
    ("ε 0.1: policy v1 → v2", Side(file="v1", exploration=eps(0.1)),
     Side(file="v2", exploration=eps(0.1))),
    ("policy v1: greedy → softmax", Side(file="v1"),
     Side(file="v1", exploration="{kind = softmax, temperature = 1}")),
    ("fixed (1, 1) → (2, 0.5), no policy", Side(exploration=None),
     Side(ctr=2, long=0.5, exploration=None)),
    ("fixed (1, 1) → (0, 2), no policy", Side(exploration=None),
     Side(ctr=0, long=2, exploration=None)),
)  # fmt: skip
"""The 20 pairs (label, old, new) the check runs."""

REFUSED = ("diversity: MMR λ 0.8 → 0.5", Side(), Side(lam=0.5))


@dataclass(frozen=True)
class PairResult:
    label: str
    truth_old: float
    truth_new: float
    truth_difference: float
    truth_se: float  # standard error of the true difference (a mean over the truth requests)
    estimates: dict[str, tuple[float, float, float]]  # estimator → (difference, low, high)
    effective: tuple[float, float]
    not_estimable: str | None

    def covered(self, estimator: str) -> bool:
        _, low, high = self.estimates[estimator]
        return low <= self.truth_difference <= high

    def sign_ok(self, estimator: str) -> bool:
        """When the interval excludes 0, it lies on the side of the true difference."""
        _, low, high = self.estimates[estimator]
        if low > 0:
            return self.truth_difference > 0
        if high < 0:
            return self.truth_difference < 0
        return True


@dataclass(frozen=True)
class CheckResult:
    pairs: list[PairResult]
    refused: PairResult
    logs: int
    truth: int
    seconds: dict[str, float]

    def coverage(self, estimator: str) -> int:
        return sum(p.covered(estimator) for p in self.pairs if p.not_estimable is None)

    def sign_errors(self, estimator: str) -> int:
        return sum(not p.sign_ok(estimator) for p in self.pairs if p.not_estimable is None)


def _served(loaded, grid, states: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The distribution ``blend run`` draws the weights from, per request ``[R, K]``: the
    spec's policy runtime, or the grid action of fixed weights."""
    import torch

    from blendspec.compiler.lower import PolicyRuntime

    spec = loaded.spec
    runtime = PolicyRuntime.from_spec(spec, loaded.base_dir)
    out = np.zeros((states.shape[0], grid.size))
    if runtime is not None and runtime.acts:
        with torch.inference_mode():
            return runtime.distribution(torch.from_numpy(states)).numpy().astype(np.float64)
    if runtime is not None:
        values = runtime.fallback_weights.numpy().astype(np.float64)[None, :]
    else:
        values = np.array([[spec.weights[n].default for n in grid.names]])
    out[:, int(grid.encode(values)[0])] = 1.0
    return out


def check(
    *,
    logs: int = 20_000,
    truth: int = 2_000,
    candidates: int = 60,
    pairs: Sequence[tuple[str, Side, Side]] = PAIRS,
    policy_logs: int = 10_000,
    estimators: Sequence[str] = ("snips", "dr"),
    seed: int = 0,
    world_seed: int = 0,
    items: int | None = None,
    verbose: bool = True,
) -> CheckResult:
    """Run the check (see the module docstring) and return every pair's truth and estimate."""
    from blendspec.policy.explore import exploration_logs, grid_values
    from blendspec.policy.grid import ActionGrid
    from blendspec.policy.train import train_policy
    from blendspec.review.outcome import RequestLogs, compute_outcome, read_logs
    from blendspec.review.sections import diff_specs
    from blendspec.sim.core import World
    from blendspec.sim.segments import WorldConfig
    from blendspec.spec.loader import load_spec

    def say(message: str) -> None:
        if verbose:
            print(message, flush=True)

    seconds: dict[str, float] = {}
    began = time.perf_counter()
    world = (
        World.default(seed=world_seed)
        if items is None
        else World(WorldConfig(seed=world_seed, n_items=items))
    )
    seconds["world"] = time.perf_counter() - began
    with tempfile.TemporaryDirectory(prefix="bench-diff-outcome-") as tmp:
        folder = Path(tmp)
        logging_spec = folder / "logging.blend"
        logging_spec.write_text(Side(exploration="{kind = uniform}").text())
        logging = load_spec(logging_spec)
        grid = ActionGrid.from_spec(logging.spec)

        started = time.perf_counter()
        table = exploration_logs(logging, world, logs, seed=seed, candidates=candidates)
        import pyarrow.parquet as pq

        pq.write_table(table, folder / "logs.parquet")
        request_logs: RequestLogs = read_logs(folder / "logs.parquet")
        seconds["logs"] = time.perf_counter() - started
        say(f"logs: {logs:,} uniform requests over {grid.size} actions "
            f"({seconds['logs']:.0f} s)")  # fmt: skip

        files = {side.file for _, a, b in pairs for side in (a, b)} - {None}
        if files:
            started = time.perf_counter()
            train_logs = exploration_logs(
                logging, world, policy_logs, seed=seed + 7, candidates=candidates
            )
            if "v1" in files:
                train_policy(logging.spec, train_logs, method="pg", epochs=3, seed=seed
                             ).policy.save(folder / "v1.pt")  # fmt: skip
            if "v2" in files:
                train_policy(logging.spec, train_logs, method="model", seed=seed
                             ).policy.save(folder / "v2.pt")  # fmt: skip
            seconds["policies"] = time.perf_counter() - started
            say(f"policies v1, v2 trained on {policy_logs:,} other logged requests "
                f"({seconds['policies']:.0f} s)")  # fmt: skip

        started = time.perf_counter()
        values = grid_values(logging, world, truth, seed=seed + 1, candidates=candidates)
        v = values.rewards(logging.spec, "engaged")  # [R, K]
        seconds["truth"] = time.perf_counter() - started
        say(f"truth: {truth:,} held-out requests × {grid.size} actions, exact expectations "
            f"({seconds['truth']:.0f} s)")  # fmt: skip

        cache: dict[object, object] = {}
        results: list[PairResult] = []
        started = time.perf_counter()
        for index, (label, old_side, new_side) in enumerate([*pairs, REFUSED]):
            paths = []
            for name, side in (("old", old_side), ("new", new_side)):
                path = folder / f"pair{index}_{name}.blend"
                path.write_text(side.text())
                paths.append(path)
            old, new = load_spec(paths[0]), load_spec(paths[1])
            per_request = _served(new, grid, values.states) - _served(old, grid, values.states)
            gain = (per_request * v).sum(axis=1)
            truth_old = float((_served(old, grid, values.states) * v).sum(axis=1).mean())
            outcome = compute_outcome(
                old, new, diff_specs(old, new).changes, request_logs, reward="engaged",
                estimators=estimators, seed=seed, cache=cache,
            )  # fmt: skip
            results.append(
                PairResult(
                    label,
                    truth_old,
                    truth_old + float(gain.mean()),
                    float(gain.mean()),
                    float(gain.std(ddof=1) / np.sqrt(gain.size)),
                    {e.estimator.lower(): (e.difference, e.low, e.high) for e in outcome.estimates},
                    (outcome.effective_old or 0.0, outcome.effective_new or 0.0),
                    outcome.not_estimable,
                )
            )
        seconds["estimates"] = time.perf_counter() - started
    seconds["total"] = time.perf_counter() - began
    return CheckResult(results[:-1], results[-1], logs, truth, seconds)


def report(result: CheckResult, estimators: Sequence[str]) -> None:
    header = f"{'pair':<38} {'true Δ':>9} {'± se':>7}"
    for e in estimators:
        header += f"  {e.upper() + ' Δ [95% interval]':<34} {'cov':>3} {'sign':>4}"
    header += f"  {'eff. n old/new':>15}"
    print(header)
    for p in result.pairs:
        line = f"{p.label:<38} {p.truth_difference:>+9.4f} {p.truth_se:>7.4f}"
        if p.not_estimable is not None:
            print(f"{line}  NOT ESTIMABLE: {p.not_estimable}")
            continue
        for e in estimators:
            d, low, high = p.estimates[e]
            cell = f"{d:+.4f} [{low:+.4f}, {high:+.4f}]"
            line += f"  {cell:<34} {'yes' if p.covered(e) else 'NO':>3}"
            line += f" {'ok' if p.sign_ok(e) else 'WRONG':>4}"
        line += f"  {p.effective[0]:>7,.0f}/{p.effective[1]:<7,.0f}"
        print(line)
    estimated = [p for p in result.pairs if p.not_estimable is None]
    print()
    for e in estimators:
        print(
            f"{e.upper()}: interval covers the true difference in {result.coverage(e)}/"
            f"{len(estimated)} pairs (target ≥ 90%); sign wrong in {result.sign_errors(e)} of "
            f"the pairs whose interval excludes 0 (target 0)"
        )
    refused = result.refused
    print(
        f"refusing pair ({refused.label}): "
        + (f"refused: {refused.not_estimable}" if refused.not_estimable else "NOT REFUSED")
    )
    print(
        "time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
        + f" ({len(result.pairs) + 1} pairs)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=20_000, help="uniform logged requests")
    parser.add_argument("--truth", type=int, default=2_000, help="held-out truth requests")
    parser.add_argument("--candidates", type=int, default=60, help="candidates per request")
    parser.add_argument("--policy-logs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3k logs, 300 truth requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.logs, args.truth, args.policy_logs = 3_000, 300, 2_000
    estimators = ("snips", "dr")
    result = check(
        logs=args.logs, truth=args.truth, candidates=args.candidates,
        policy_logs=args.policy_logs, estimators=estimators, seed=args.seed,
    )  # fmt: skip
    print()
    report(result, estimators)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
