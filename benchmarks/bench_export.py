"""The exported artifact next to the in-process BlendModule (issue 7, DESIGN §7), side by side.

    python benchmarks/bench_export.py                 # 200 requests, homefeed spec, N=500, T=50
    python benchmarks/bench_export.py --quick         # 40 requests, fewer batch repetitions
    python benchmarks/bench_export.py --artifact homefeed.pt2   # reuse an export (else made here)

Requests come from the simulator at N=500 candidates (DESIGN §7 size), read by `blend run`'s own
reader. Single-request latency: each request is blended alone by both, alternating, so that both
see the same machine; p50 and p99 over the requests. Batch throughput: a batch of 64 requests,
best of the repetitions. The in-process module gets the batch exactly as `blend run` does (N
unpadded); the exported program gets it padded to a multiple of 32, as a server sends it. Every
timed call's slates are compared: the figures are only printed if they are equal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "specs" / "homefeed.blend"
sys.path.insert(0, str(REPO))

from benchmarks.bench_operators import IDLE, wait_idle  # noqa: E402


def padded(mask: torch.Tensor, tensors: list[torch.Tensor], multiple: int) -> list[torch.Tensor]:
    """The program's positional inputs: the candidate axis padded to a multiple of 32."""
    n = mask.shape[1]
    width = max(multiple, -(-n // multiple) * multiple)
    out = []
    for t in [mask, *tensors]:
        if t.dim() >= 2 and t.shape[1] == n and width > n:
            pad = torch.zeros((t.shape[0], width - n, *t.shape[2:]), dtype=t.dtype)
            t = torch.cat([t, pad], 1)
        out.append(t)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    if IDLE["wait"] and not wait_idle(max_wait=30.0):
        IDLE["busy_cells"] += 1
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 requests, 3 batch repetitions")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=None, help="batch repetitions (best of)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--artifact", type=Path, default=None, help="reuse this export")
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument(
        "--wait-idle", action="store_true", help="before each timed call, wait for an idle machine"
    )
    args = parser.parse_args()
    IDLE["wait"] = args.wait_idle
    requests = args.requests or (40 if args.quick else 200)
    repeat = args.repeat or (3 if args.quick else 5)
    torch.set_num_threads(args.threads)

    from blendspec.compiler.lower import REQUEST_SEED_KEY, request_seeds
    from blendspec.engine.blend import Runner
    from blendspec.io.dump import DumpReader
    from blendspec.serve.export import export_spec, load_artifact
    from blendspec.sim.core import World
    from blendspec.sim.dumps import write_dump
    from blendspec.spec.loader import load_spec

    loaded = load_spec(args.spec)
    runner = Runner(loaded)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact
        if artifact is None:
            artifact = Path(tmp) / "spec.pt2"
            started = time.perf_counter()
            result = export_spec(loaded, artifact)
            print(
                f"export: {time.perf_counter() - started:.1f} s, {result.bytes / 1e6:.1f} MB "
                f"({len(result.metadata.inputs)} inputs)"
            )
        program, meta = load_artifact(artifact)
        names = [i["name"] for i in meta["inputs"][1:]]
        dump = Path(tmp) / "dump.parquet"
        total = max(requests, args.batch)
        write_dump(World.default(seed=0), dump, requests=total, candidates=args.candidates, seed=1)
        reader = DumpReader(dump, loaded.spec)
        singles = list(reader.batches(1, limit=requests))
        batch = next(DumpReader(dump, loaded.spec).batches(args.batch))

    def exported_inputs(b) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
        extra = {REQUEST_SEED_KEY: request_seeds(b.request_ids)}
        tensors = [b.inputs[n] if n in b.inputs else extra[n] for n in names]
        return padded(b.mask, tensors, meta["candidate_multiple"])

    def check(b, eager: dict, exported: tuple) -> None:  # type: ignore[no-untyped-def,type-arg]
        got = dict(zip(meta["outputs"], exported, strict=True))
        for key in ("indices", "scores", "utility"):
            if not torch.equal(eager[key], got[key]):
                raise SystemExit(f"exported program differs from BlendModule on `{key}`")

    program(*exported_inputs(singles[0]))  # warm-up both
    runner.blend(singles[0])
    eager_ms, export_ms = [], []
    for single in singles:
        inputs = exported_inputs(single)
        t_eager, out_eager = timed(lambda s=single: runner.blend(s))
        with torch.inference_mode():
            t_export, out_export = timed(lambda i=inputs: program(*i))
        check(single, out_eager, out_export)
        eager_ms.append(t_eager * 1e3)
        export_ms.append(t_export * 1e3)

    batch_inputs = exported_inputs(batch)
    best_eager = best_export = float("inf")
    for _ in range(repeat):
        t_eager, out_eager = timed(lambda: runner.blend(batch))
        with torch.inference_mode():
            t_export, out_export = timed(lambda: program(*batch_inputs))
        check(batch, out_eager, out_export)
        best_eager, best_export = min(best_eager, t_eager), min(best_export, t_export)

    print(
        f"{loaded.spec.name}: N={args.candidates} (exported: padded to "
        f"{batch_inputs[0].shape[1]}), T={loaded.spec.slate.length}, {args.threads} threads; "
        f"{len(singles)} single requests, batch of {batch.size} best of {repeat}; same slates"
    )
    print("| | p50 ms | p99 ms | batch requests/s |")
    print("|---|---|---|---|")
    for name, ms, best in (
        ("in-process BlendModule", eager_ms, best_eager),
        ("exported program (torch.export.load)", export_ms, best_export),
    ):
        print(
            f"| {name} | {statistics.median(ms):.1f} | {percentile(ms, 0.99):.1f} | "
            f"{batch.size / best:.0f} |"
        )
    if args.wait_idle and IDLE["busy_cells"]:
        print(f"warning: {IDLE['busy_cells']} timed calls ran on a busy machine")


if __name__ == "__main__":
    main()
