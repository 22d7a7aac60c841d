"""Benchmark: the blending operators (compiled loops and torch path) vs per-request numpy.

Run from the repository root::

    python -m benchmarks.bench_operators            # full grid, N in {100, 500, 2000} x B in {1, 8, 64}
    python -m benchmarks.bench_operators --quick    # N=500, B in {8, 64}, one repetition
    python -m benchmarks.bench_operators --threads 1  # both sides pinned to one thread
    python -m benchmarks.bench_operators --quick --ops ssd   # one operator
    python -m benchmarks.bench_operators --trace-only --repeat 5   # only the trace comparison

After the grid, a second table times each operator with its per-step trace off and on (N=500),
with the same inputs, and checks that the selections are identical either way.

``--pyversity`` adds the comparison with the peer library users would otherwise pick, pyversity 0.2
(``pip install -e '.[bench]'``): same raw inputs (non-negative embeddings, where its cosine clipping
is a no-op; DPP with no early stop triggered), N=500, d=256, T=50, 64 requests, in process. The
blendspec side is timed from raw embeddings and utilities, so it counts the feature map and the
relevance normalisation; pyversity is called once per request as its API asks. The selections of
both are compared request by request. Besides SSD, DPP and MMR it times MSD and COVER (pyversity's
``msd`` and ``cover``), which have no row in the grid: without ``--ops`` the comparison covers all
five.

    python -m benchmarks.bench_operators --pyversity-only --repeat 3

For each operator it prints requests/s of the operator as `blend run` calls it (the compiled
per-request loop, ops/_native.py), of its torch path (what `blend export` traces, also used
without a C compiler) and of a per-request numpy baseline on the same float32 inputs, the two
ratios, whether all three select identically (requests with the same slate / all requests), and
the compiled loop's core time per request (it runs one request per thread) next to the
operator's floor: T products of an N x d float32 matrix with a vector, the one O(N d) read per
step that no implementation of these greedy algorithms can avoid (measured here, on one core).

The baselines are the efficient forms a careful numpy engineer would write, not the test
references: SSD with incremental residual updates (preallocated buffers, in-place rank-1 updates
of the N x d residuals), DPP by Chen et al.'s incremental Cholesky with kernel rows computed on
demand, MMR with a running max. Timings are the best of ``--repeat`` runs (the machine is shared;
best-of is the least noisy estimate of what the code costs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


def _early_threads() -> None:
    """Honour --threads before numpy/torch start their thread pools (they read it once).

    On a shared machine also consider ``OMP_WAIT_POLICY=PASSIVE`` in the environment: with the
    default (active) policy MKL's idle OpenMP worker keeps spinning after every parallel product,
    and when another process holds the second core the spinner shares the main thread's core -
    measured 30x slower. On an idle machine the active policy is ~15% faster.
    """
    if "--threads" in sys.argv:
        n = sys.argv[sys.argv.index("--threads") + 1]
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = n


_early_threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from blendspec.ops import (  # noqa: E402
    SimilaritySignals,
    dpp,
    feature_map,
    kernels,
    mmr,
    normalize_relevance,
    ssd,
)
from blendspec.ops.cover import cover  # noqa: E402
from blendspec.ops.msd import msd  # noqa: E402

T = 50
SSD_PARAMS = {"window": 10, "theta": 0.7, "gamma": 1.0, "epsilon": 1e-6}
DPP_PARAMS = {"alpha": 1.0, "epsilon": 1e-6}
MMR_PARAMS = {"lam": 0.7}
DIMS = {"ssd": 256, "dpp": 128, "mmr": 256}
GRID_OPS = ("ssd", "dpp", "mmr")
PEER_OPS = (*GRID_OPS, "msd", "cover")


# ----------------------------------------------------------------------------------------------
# efficient per-request numpy baselines


def ssd_numpy(r: np.ndarray, phi: np.ndarray, t_len: int, window: int, theta: float,
              gamma: float, epsilon: float) -> np.ndarray:  # fmt: skip
    """SSD with explicit residuals updated in place (the public implementations' form)."""
    n, _ = phi.shape
    v = phi.copy()
    tmp = np.empty_like(v)
    nv2 = np.einsum("ij,ij->i", v, v)
    score = np.empty(n, np.float32)
    taken = np.zeros(n, bool)
    rel = (theta * r).astype(np.float32)
    div_coef = np.float32((1.0 - theta) * gamma)
    bases: list[tuple[np.ndarray, np.ndarray]] = []
    out = np.full(t_len, -1, np.int64)
    for t in range(min(t_len, n)):
        if t == 0:
            np.copyto(score, rel)
        else:
            np.maximum(nv2, 0, out=score)
            np.sqrt(score, out=score)
            score *= div_coef
            score += rel
        score[taken] = -np.inf
        j = int(np.argmax(score))
        out[t] = j
        taken[j] = True
        if t == t_len - 1:
            break
        b = v[j].copy()
        if len(bases) == window:
            b_old, c_old = bases.pop(0)
            np.multiply(c_old[:, None], b_old[None, :], out=tmp)
            v += tmp
        c = v @ b
        c /= b @ b + np.float32(epsilon)
        c[taken] = 0
        np.multiply(c[:, None], b[None, :], out=tmp)
        v -= tmp
        np.einsum("ij,ij->i", v, v, out=nv2)
        bases.append((b, c))
    return out


def dpp_numpy(r: np.ndarray, phi: np.ndarray, t_len: int, alpha: float,
              epsilon: float) -> np.ndarray:  # fmt: skip
    """Chen et al.'s fast greedy MAP with kernel rows L_j = q_j q (phi phi_j) on demand."""
    n, _ = phi.shape
    x = phi.astype(np.float64)
    q = np.exp(alpha * r.astype(np.float64))
    cis = np.zeros((t_len, n))
    d2 = q * q * np.einsum("ij,ij->i", x, x)
    taken = np.zeros(n, bool)
    out = np.full(t_len, -1, np.int64)
    for t in range(min(t_len, n)):
        score = np.where(taken, -np.inf, d2)
        j = int(np.argmax(score))
        if score[j] < epsilon:  # rank exhausted: fill by relevance
            rest = [k for k in np.argsort(-r, kind="stable") if not taken[k]]
            out[t : t + len(rest[: t_len - t])] = rest[: t_len - t]
            break
        out[t] = j
        taken[j] = True
        if t == t_len - 1:
            break
        row = (q[j] * q) * (x @ x[j])
        e = (row - cis[:t, j] @ cis[:t]) / np.sqrt(d2[j])
        cis[t] = e
        d2 -= e * e
    return out


def mmr_numpy(r: np.ndarray, phi: np.ndarray, t_len: int, lam: float) -> np.ndarray:
    """MMR with a running max of the similarity to the selected set."""
    n, _ = phi.shape
    rel = (lam * r).astype(np.float32)
    sim_coef = np.float32(1.0 - lam)
    max_sim = np.zeros(n, np.float32)
    score = np.empty(n, np.float32)
    taken = np.zeros(n, bool)
    out = np.full(t_len, -1, np.int64)
    for t in range(min(t_len, n)):
        np.multiply(max_sim, -sim_coef, out=score)
        score += rel
        score[taken] = -np.inf
        j = int(np.argmax(score))
        out[t] = j
        taken[j] = True
        if t == t_len - 1:
            break
        sim = phi @ phi[j]
        if t == 0:
            max_sim[:] = sim
        else:
            np.maximum(max_sim, sim, out=max_sim)
    return out


# ----------------------------------------------------------------------------------------------
# harness


@dataclass
class Inputs:
    relevance: torch.Tensor  # [B, N]
    mask: torch.Tensor
    phi: torch.Tensor  # [B, N, D]


def make_inputs(op: str, n: int, batch: int, seed: int) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    d = DIMS[op]
    utility = torch.randn((batch, n), generator=g)
    mask = torch.ones((batch, n), dtype=torch.bool)
    emb = torch.randn((batch, n, d), generator=g)
    phi = feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=op == "ssd")
    return Inputs(normalize_relevance(utility, mask, "zscore"), mask, phi)


def run_torch(op: str, x: Inputs, trace: bool = False, path: str = "native") -> torch.Tensor:
    """The operator as `blend run` calls it: ``path`` "native" is the compiled loop (the
    default), "torch" the torch path that `blend export` traces."""
    with kernels(path):  # type: ignore[arg-type]
        return _operator(op, x, trace)


def _operator(op: str, x: Inputs, trace: bool) -> torch.Tensor:
    if op == "ssd":
        sel = ssd(x.relevance, x.phi, x.mask, None, slate_length=T, trace=trace, **SSD_PARAMS)
    elif op == "dpp":
        sel = dpp(x.relevance, x.phi, x.mask, None, slate_length=T, trace=trace, **DPP_PARAMS)
    else:
        sel = mmr(x.relevance, x.phi, x.mask, None, slate_length=T, trace=trace, **MMR_PARAMS)
    return sel.indices


def run_numpy(op: str, r: np.ndarray, phi: np.ndarray) -> np.ndarray:
    if op == "ssd":
        return np.stack([ssd_numpy(r[i], phi[i], T, **SSD_PARAMS) for i in range(len(r))])
    if op == "dpp":
        return np.stack([dpp_numpy(r[i], phi[i], T, **DPP_PARAMS) for i in range(len(r))])
    return np.stack([mmr_numpy(r[i], phi[i], T, **MMR_PARAMS) for i in range(len(r))])


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def wait_idle(max_wait: float = 120.0, threshold: float = 0.1) -> bool:
    """Wait until other processes use < ``threshold`` of the machine's CPU (over 0.5 s).

    The machines this runs on are shared; a timing taken while another job holds a core says
    more about that job than about the code. Returns False if the machine never went idle.
    """
    if not os.path.exists("/proc/stat"):
        return True
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = _cpu_jiffies()
        own0 = sum(os.times()[:2])
        time.sleep(0.5)
        busy1, total1 = _cpu_jiffies()
        own1 = sum(os.times()[:2])
        tick = os.sysconf("SC_CLK_TCK")
        others = (busy1 - busy0) - (own1 - own0) * tick
        if others <= threshold * max(1, total1 - total0):
            return True
        if time.monotonic() > deadline:
            return False


IDLE = {"wait": False, "busy_cells": 0}


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up (and the result we compare)
    best = float("inf")
    for _ in range(repeat):
        if IDLE["wait"] and not wait_idle():
            IDLE["busy_cells"] += 1
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def matvec_floor(n: int, d: int) -> float:
    """Seconds for one [n, d] x [d] float32 product on one core (numpy, best of many)."""
    a = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    x = a[0].copy()
    reps = max(20, int(2e7 / (n * d)))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            a @ x
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def trace_table(ops: list[str], n: int, batches: list[int], repeat: int) -> None:
    """Trace off vs on (``trace=True`` keeps every candidate's score terms at every step, for
    ``blend explain``), for the compiled loops as `blend run` calls them. With the trace off the
    loop writes no planes, so the off column is the operator's cost as in the grid above; the
    ratio is what a traced request pays; the selections must be identical. Off and on are timed
    interleaved, best of ``repeat`` each, so that drift on a shared machine hits both."""
    header = (
        f"{'op':<4} {'N':>5} {'B':>3} {'trace off ms/req':>17} {'trace on ms/req':>16} "
        f"{'on/off':>7} {'same':>7}"
    )
    print()
    print(f"trace: off vs on (best of {repeat}, interleaved)")
    print(header)
    print("-" * len(header))
    for op in ops:
        for batch in batches:
            x = make_inputs(op, n, batch, seed=n * 1000 + batch)
            off_idx = run_torch(op, x)  # warm-up
            on_idx = run_torch(op, x, trace=True)
            best = {False: float("inf"), True: float("inf")}
            for _ in range(repeat):
                for trace in (False, True):
                    if IDLE["wait"] and not wait_idle():
                        IDLE["busy_cells"] += 1
                    start = time.perf_counter()
                    run_torch(op, x, trace=trace)
                    best[trace] = min(best[trace], time.perf_counter() - start)
            same = int((off_idx == on_idx).all(1).sum())
            print(
                f"{op:<4} {n:>5} {batch:>3} {best[False] / batch * 1e3:>17.3f} "
                f"{best[True] / batch * 1e3:>16.3f} {best[True] / best[False]:>6.2f}x "
                f"{same:>3}/{batch:<3}",
                flush=True,
            )


# ----------------------------------------------------------------------------------------------
# against pyversity 0.2

PEER_N, PEER_D, PEER_B = 500, 256, 64


@dataclass
class RawInputs:
    """What a user holds before blending: raw embeddings and utilities, one request per row."""

    embeddings: torch.Tensor  # [B, N, D], non-negative
    utility: torch.Tensor  # [B, N]
    mask: torch.Tensor


def make_raw_inputs(seed: int) -> RawInputs:
    g = torch.Generator().manual_seed(seed)
    emb = torch.rand((PEER_B, PEER_N, PEER_D), generator=g)
    utility = torch.randn((PEER_B, PEER_N), generator=g)
    return RawInputs(emb, utility, torch.ones((PEER_B, PEER_N), dtype=torch.bool))


def blend_raw(op: str, x: RawInputs) -> torch.Tensor:
    """blendspec from raw inputs: feature map, per-request z-score, then the compiled loop.

    The parameters are pyversity's with diversity 0.3 (SSD's, MSD's and COVER's theta and MMR's
    lambda are 0.7); DPP's alpha is 1 (pyversity's diversity 0.5 at scale 2); SSD's epsilon is
    pyversity's float32 machine epsilon; COVER's gamma is pyversity's default, 0.5.
    """
    phi = feature_map(
        SimilaritySignals(embeddings=((x.embeddings, 1.0),)), x.mask, bias=op == "ssd"
    )
    r = normalize_relevance(x.utility, x.mask, "zscore")
    with kernels("native"):
        if op == "ssd":
            eps = float(np.finfo(np.float32).eps)
            return ssd(r, phi, x.mask, None, slate_length=T, window=10, theta=0.7, gamma=1.0,
                       epsilon=eps).indices  # fmt: skip
        if op == "dpp":
            return dpp(r, phi, x.mask, None, slate_length=T, alpha=1.0).indices
        if op == "msd":
            return msd(r, phi, x.mask, None, slate_length=T, theta=0.7).indices
        if op == "cover":
            return cover(r, phi, x.mask, None, slate_length=T, theta=0.7, gamma=0.5).indices
        return mmr(r, phi, x.mask, None, slate_length=T, lam=0.7).indices


def pyversity_raw(op: str, x: RawInputs, zscored: np.ndarray) -> np.ndarray:
    """pyversity on the same requests, one call each. Its MMR, MSD and COVER take scores as
    given (no normalisation of their own), so they receive the z-scored utilities blendspec
    uses."""
    import pyversity

    emb = x.embeddings.numpy()
    utility = x.utility.numpy()
    rows = []
    for i in range(len(emb)):
        if op == "ssd":
            out = pyversity.ssd(emb[i], utility[i], T, diversity=0.3, window=10, gamma=1.0)
        elif op == "dpp":
            out = pyversity.dpp(emb[i], utility[i], T, diversity=0.5, scale=2.0)
        elif op == "msd":
            out = pyversity.msd(emb[i], zscored[i], T, diversity=0.3)
        elif op == "cover":
            out = pyversity.cover(emb[i], zscored[i], T, diversity=0.3, gamma=0.5)
        else:
            out = pyversity.mmr(emb[i], zscored[i], T, diversity=0.3)
        rows.append(out.indices)
    return np.stack(rows)


def pyversity_table(ops: list[str], repeat: int) -> None:
    """blendspec end to end (feature map + normalisation + loop) vs pyversity, best of
    ``repeat``, with the number of requests whose slates are identical."""
    try:
        import pyversity
    except ImportError:
        print("\npyversity is not installed (pip install -e '.[bench]'): comparison skipped")
        return
    header = f"{'op':<4} {'blendspec req/s':>16} {'pyversity req/s':>16} {'ratio':>7} {'same':>7}"
    print()
    print(f"vs pyversity {pyversity.__version__}: N={PEER_N} d={PEER_D} T={T} B={PEER_B}, "
          f"non-negative embeddings, best of {repeat}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for op in ops:
        x = make_raw_inputs(seed=7)
        zscored = normalize_relevance(x.utility, x.mask, "zscore").numpy()
        t_ours, ours = best_time(lambda x=x, op=op: blend_raw(op, x), repeat)
        t_peer, peer = best_time(lambda x=x, op=op, z=zscored: pyversity_raw(op, x, z), repeat)
        same = int((ours.numpy() == peer).all(1).sum())
        print(
            f"{op:<4} {PEER_B / t_ours:>16.1f} {PEER_B / t_peer:>16.1f} "
            f"{t_peer / t_ours:>6.1f}x {same:>3}/{PEER_B:<3}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=500, B in {8, 64}, 1 repetition")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and BLAS")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per cell (best of)")
    parser.add_argument(
        "--ops",
        default=None,
        help=f"default {','.join(GRID_OPS)} ({','.join(PEER_OPS)} vs pyversity)",
    )
    parser.add_argument(
        "--wait-idle",
        action="store_true",
        help="before each timed run, wait (up to 2 min) until other processes are idle",
    )
    parser.add_argument(
        "--pyversity", action="store_true", help="also compare with pyversity 0.2 (N=500, B=64)"
    )
    parser.add_argument(
        "--pyversity-only", action="store_true", help="only the comparison with pyversity"
    )
    trace = parser.add_mutually_exclusive_group()
    trace.add_argument(
        "--no-trace", action="store_true", help="skip the trace off vs on comparison (N=500)"
    )
    trace.add_argument(
        "--trace-only", action="store_true", help="only the trace off vs on comparison"
    )
    args = parser.parse_args(argv)
    IDLE["wait"] = args.wait_idle
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [500] if args.quick else [100, 500, 2000]
    batches = [8, 64] if args.quick else [1, 8, 64]
    repeat = args.repeat or (1 if args.quick else 3)
    peer_ops = args.ops.split(",") if args.ops else list(PEER_OPS)
    ops = [op for op in peer_ops if op in GRID_OPS]  # msd and cover have no numpy baseline
    print(
        f"torch {torch.__version__} threads={torch.get_num_threads()}  numpy {np.__version__}  "
        f"cores={os.cpu_count()}  OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}  "
        f"T={T}  "
        f"loadavg={os.getloadavg()[0]:.2f}"
    )
    print(f"SSD {SSD_PARAMS} d={DIMS['ssd']}+bias | DPP {DPP_PARAMS} d={DIMS['dpp']} (float64) | "
          f"MMR {MMR_PARAMS} d={DIMS['mmr']}")  # fmt: skip
    header = (
        f"{'op':<4} {'N':>5} {'B':>3} {'native req/s':>13} {'torch req/s':>12} "
        f"{'numpy req/s':>12} {'native/np':>10} {'torch/np':>9} {'same':>7} "
        f"{'core-ms/req':>12} {'floor ms':>9} {'x floor':>8}"
    )
    if args.pyversity_only:
        pyversity_table(peer_ops, repeat)
        return 0
    if not args.trace_only:
        print(header)
        print("-" * len(header))
    threads = torch.get_num_threads()
    for op in ops if not args.trace_only else []:
        for n in sizes:
            d_floor = DIMS[op] + (1 if op == "ssd" else 0)
            floor = T * matvec_floor(n, d_floor)
            for batch in batches:
                x = make_inputs(op, n, batch, seed=n * 1000 + batch)
                r_np = x.relevance.numpy()
                phi_np = x.phi.numpy()
                t_native, idx_native = best_time(lambda x=x, op=op: run_torch(op, x), repeat)
                t_torch, idx_torch = best_time(
                    lambda x=x, op=op: run_torch(op, x, path="torch"), repeat
                )
                t_np, idx_np = best_time(
                    lambda r=r_np, p=phi_np, op=op: run_numpy(op, r, p), repeat
                )
                same_native = (idx_native.numpy() == idx_np).all(1)
                same = int((same_native & (idx_torch.numpy() == idx_np).all(1)).sum())
                # The compiled loop runs one request per thread: its cost in core time.
                core_ms = t_native / batch * min(threads, batch)
                print(
                    f"{op:<4} {n:>5} {batch:>3} {batch / t_native:>13.1f} "
                    f"{batch / t_torch:>12.1f} {batch / t_np:>12.1f} "
                    f"{t_np / t_native:>9.1f}x {t_np / t_torch:>8.1f}x {same:>3}/{batch:<3} "
                    f"{core_ms * 1e3:>12.3f} {floor * 1e3:>9.3f} {core_ms / floor:>7.1f}x",
                    flush=True,
                )
    if not args.no_trace:
        trace_table(ops, 500, [1, 8] if args.quick else [1, 8, 64], max(repeat, 3))
    if args.pyversity:
        pyversity_table(peer_ops, repeat)
    if args.wait_idle:
        print(f"timed runs that could not wait for an idle machine: {IDLE['busy_cells']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
