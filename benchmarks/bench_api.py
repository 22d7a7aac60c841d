"""The in-memory Python API against what it wraps and what users would otherwise call (issue 19).

    python benchmarks/bench_api.py                  # N=500, d=256, k=50, one thread, best of 30
    python benchmarks/bench_api.py --threads 2 --repeat 50

Two tables, each figure the best of ``--repeat`` calls (one request is a millisecond or so, so
the best is the figure a warm loop sees; the median is printed beside it):

* ``blendspec.diversify`` on one request, next to the same request run through the operators by
  hand (relevance normalisation, feature map, the plugin's operator: the floor the call's
  validation and conversions add to) and next to pyversity 0.2's one call with the same
  parameters (``pip install -e '.[bench]'``; skipped without it). Its MMR, MSD and COVER take
  scores as given, so they get blendspec's z-scored relevance, as in bench_operators.
* ``blendspec.blend`` on the bundled sample (48 requests, homefeed) from a pyarrow Table, a
  pandas and a polars DataFrame, next to ``engine.run.run`` writing the same slates to Parquet
  (what `blend run` does less the command line).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import blendspec
from blendspec import ops
from blendspec.diversity import DIVERSIFIERS

REPO = Path(__file__).resolve().parent.parent

SETTINGS: dict[str, dict[str, float]] = {
    "ssd": {"theta": 0.7, "window": 10},
    "dpp": {"alpha": 1.0},
    "mmr": {"lambda": 0.7},
    "msd": {"theta": 0.7},
    "cover": {"theta": 0.7, "gamma": 0.5},
}
"""pyversity's diversity 0.3 (DPP: its diversity 0.5 at scale 2), as in bench_operators."""


def timed(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median seconds of `repeat` calls, after one warm-up."""
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def by_hand(algorithm: str, emb: np.ndarray, u: np.ndarray, k: int) -> Callable[[], object]:
    """The request through the operators directly: what `diversify` runs, without its checks."""
    plugin = DIVERSIFIERS[algorithm]
    block = plugin.model_validate(
        {"algorithm": algorithm, "similarity": "cosine(e)", **SETTINGS[algorithm]}
    )
    attrs = {"length": k, **block.node_attrs()}
    mask = torch.ones((1, len(u)), dtype=torch.bool)
    e, r = torch.from_numpy(emb)[None], torch.from_numpy(u)[None]

    def run() -> object:
        relevance = ops.normalize_relevance(r, mask, "zscore")
        signals = ops.SimilaritySignals(embeddings=((e, 1.0),))
        phi = ops.feature_map(signals, mask, bias=plugin.feature_bias)
        return plugin.select(attrs, relevance, phi, mask, None, trace=False)

    return run


def peer(algorithm: str, emb: np.ndarray, u: np.ndarray, k: int) -> Callable[[], object] | None:
    try:
        import pyversity
    except ImportError:
        return None
    z = ((u - u.mean()) / u.std()).astype(np.float32)
    calls = {
        "ssd": lambda: pyversity.ssd(emb, u, k, diversity=0.3, window=10, gamma=1.0),
        "dpp": lambda: pyversity.dpp(emb, u, k, diversity=0.5, scale=2.0),
        "mmr": lambda: pyversity.mmr(emb, z, k, diversity=0.3),
        "msd": lambda: pyversity.msd(emb, z, k, diversity=0.3),
        "cover": lambda: pyversity.cover(emb, z, k, diversity=0.3, gamma=0.5),
    }
    return calls[algorithm]


def diversify_table(n: int, d: int, k: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    emb = rng.random((n, d), dtype=np.float32)
    u = rng.standard_normal(n).astype(np.float32)
    print(f"diversify, one request: N={n} d={d} k={k}, {torch.get_num_threads()} thread(s)")
    print(
        f"{'algorithm':<9} {'diversify ms':>13} {'by hand ms':>11} {'overhead':>9} "
        f"{'pyversity ms':>13} {'vs pyversity':>13} {'same picks':>11}"
    )
    for algorithm, params in SETTINGS.items():
        call_params = {("lambda_" if key == "lambda" else key): v for key, v in params.items()}
        api = timed(
            lambda a=algorithm, p=call_params: blendspec.diversify(emb, u, k, a, **p), repeat
        )  # type: ignore[misc]
        hand = timed(by_hand(algorithm, emb, u, k), repeat)
        other = peer(algorithm, emb, u, k)
        picks = blendspec.diversify(emb, u, k, algorithm, **call_params).indices  # type: ignore[arg-type]
        if other is None:
            theirs, same = "–", "–"
            ratio = "–"
        else:
            best, _ = timed(other, max(3, repeat // 5))
            theirs, ratio = f"{best * 1e3:.2f}", f"{best / api[0]:.1f}×"
            same = "yes" if np.array_equal(other().indices, picks) else "no"  # type: ignore[attr-defined]
        print(
            f"{algorithm:<9} {api[0] * 1e3:>8.2f} ({api[1] * 1e3:.2f}) {hand[0] * 1e3:>11.2f} "
            f"{(api[0] - hand[0]) * 1e3:>7.2f}ms {theirs:>13} {ratio:>13} {same:>11}"
        )


def blend_table(repeat: int) -> None:
    import pandas as pd  # noqa: F401 - the frame conversions below need it
    import polars as pl
    import pyarrow.parquet as pq

    from blendspec.engine.run import run
    from blendspec.io.sample import sample_dump

    spec = blendspec.load_spec(REPO / "specs" / "homefeed.blend")
    path = sample_dump(spec.spec)
    table = pq.read_table(path)
    frames = {
        "pyarrow Table": table,
        "pandas DataFrame": table.to_pandas(),
        "polars DataFrame": pl.from_arrow(table),
        "the dump's path": path,
    }
    out = Path(tempfile.mkdtemp()) / "slates.parquet"
    base, base_median = timed(lambda: run(spec, path, out), repeat)
    expected = pq.read_table(out)
    print(
        f"\nblend, the bundled sample (48 requests, homefeed), {torch.get_num_threads()} thread(s)"
    )
    print(f"{'input':<34} {'best s':>7} {'median s':>9} {'vs run()':>9} {'same slates':>12}")
    print(
        f"{'engine.run.run (Parquet to Parquet)':<34} {base:>7.3f} {base_median:>9.3f} {'1.00×':>9}"
    )
    for name, candidates in frames.items():
        best, median = timed(lambda c=candidates: blendspec.blend(spec, c), repeat)
        same = "yes" if blendspec.blend(spec, candidates).equals(expected) else "no"
        print(
            f"{'blend(' + name + ')':<34} {best:>7.3f} {median:>9.3f} {best / base:>8.2f}× {same:>12}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blend-repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diversify_table(args.n, args.d, args.k, args.repeat)
    blend_table(args.blend_repeat)


if __name__ == "__main__":
    main()
