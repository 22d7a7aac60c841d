"""End-to-end `blend run` throughput and memory (issue 4, DESIGN §7), measured side by side.

    python benchmarks/bench_run.py            # 512 requests x 500 candidates, homefeed spec
    python benchmarks/bench_run.py --quick    # a smaller dump
    python benchmarks/bench_run.py --requests 1000 --scale 10 --memory-only   # 1k vs 10k requests
    python benchmarks/bench_run.py --requests 10000 --scale 10 --candidates 100 --memory-only
                                        # 10k vs 100k requests of 100 candidates (~3 + 31 GB)

Prints requests/s of (1) Parquet decoding alone — the floor any Parquet reader pays, (2) reading
into padded tensors with every dump check, (3) the compiled graph on batches already read, (4) the
whole `blend run` (Parquet in, slates out), each with its ratio to (1) and its core time per
request; then the peak memory of `blend run` on a dump and on one `--scale` times
larger (streaming means the two peaks should match). A dump of 1,000 requests is ~1.6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq
import torch

# As the `blend` command line does (blendspec/cli.py): large tensors on transparent huge pages.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "specs" / "homefeed.blend"


def make_dump(path: Path, requests: int, candidates: int) -> None:
    from blendspec.sim.core import World
    from blendspec.sim.dumps import write_dump

    write_dump(World.default(seed=0), path, requests=requests, candidates=candidates, seed=1)


class Timing(NamedTuple):
    wall: float  # seconds
    cpu: float  # seconds of core time, every thread of the process


def timed(fn: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def decode_only(path: Path) -> Timing:
    def decode() -> None:
        for _ in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=16_384):
            pass

    return timed(decode)


def read_only(path: Path) -> Timing:
    from blendspec.io.dump import DumpReader
    from blendspec.spec.loader import load_spec

    spec = load_spec(SPEC).spec

    def read() -> None:
        for _ in DumpReader(path, spec).batches(64):
            pass

    return timed(read)


def blend_only(path: Path) -> Timing:
    """The compiled graph on batches already read (what `blend run` adds to reading)."""
    from blendspec.engine.blend import Runner
    from blendspec.io.dump import DumpReader
    from blendspec.spec.loader import load_spec

    loaded = load_spec(SPEC)
    batches = list(DumpReader(path, loaded.spec).batches(64))
    runner = Runner(loaded)

    def blend() -> None:
        for batch in batches:
            runner.blend(batch)

    return timed(blend)


def full_run(path: Path, out: Path) -> Timing:
    from blendspec.engine.run import run
    from blendspec.spec.loader import load_spec

    loaded = load_spec(SPEC)
    return timed(lambda: run(loaded, path, out, batch_size=64))


def peak_memory(path: Path, out: Path) -> float:
    """Peak RSS (MiB) of a fresh `blend run` process."""
    probe = (
        "import resource, sys; from pathlib import Path; "
        "from blendspec.spec.loader import load_spec; from blendspec.engine.run import run; "
        f"run(load_spec({str(SPEC)!r}), Path({str(path)!r}), Path({str(out)!r})); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, help="requests in the first dump (default 512)")
    parser.add_argument(
        "--scale", type=int, default=4, help="the second dump is this many times larger"
    )
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput stages")
    parser.add_argument(
        "--candidates", type=int, default=500, help="candidates per request (default 500)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    requests = args.requests or (64 if args.quick else 512)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        dump, big = root / "dump.parquet", root / "big.parquet"
        make_dump(dump, requests, args.candidates)
        if not args.memory_only:
            throughput(dump, root, requests, args.candidates, args.threads)
        make_dump(big, requests * args.scale, args.candidates)
        small_peak = peak_memory(dump, root / "a.parquet")
        big_peak = peak_memory(big, root / "b.parquet")
        print(
            f"peak memory: {small_peak:.0f} MiB for {requests} requests, {big_peak:.0f} MiB for "
            f"{requests * args.scale} requests (ratio {big_peak / small_peak:.2f})"
        )
        print(json.dumps({"memory_ratio": big_peak / small_peak}))


def throughput(dump: Path, root: Path, requests: int, candidates: int, threads: int) -> None:
    """Requests/s of decoding, reading with checks, blending read batches and the whole run, on
    the same dump, with each stage's core time per request (every thread, from process_time):
    on a machine with C cores no overlap of stages can beat C / (sum of their core times)."""
    # Best of two, so the first pass pays for the page cache and the imports.
    decode = min((decode_only(dump) for _ in range(2)), key=lambda t: t.wall)
    read = min((read_only(dump) for _ in range(2)), key=lambda t: t.wall)
    compute = min((blend_only(dump) for _ in range(2)), key=lambda t: t.wall)
    blend = min((full_run(dump, root / "slates.parquet") for _ in range(2)), key=lambda t: t.wall)
    rows = [
        ("parquet decode only (floor)", decode),
        ("read + checks + padded tensors", read),
        ("blend only (batches in memory)", compute),
        ("blend run end to end", blend),
    ]
    print(f"homefeed spec, {requests} requests x {candidates} candidates, T=50, threads={threads}")
    print(f"{'stage':34s} {'requests/s':>11s} {'x floor time':>13s} {'core-ms/request':>16s}")
    for name, t in rows:
        print(
            f"{name:34s} {requests / t.wall:11.1f} {t.wall / decode.wall:13.2f} "
            f"{t.cpu / requests * 1e3:16.2f}"
        )
    print(json.dumps({"requests_per_second": requests / blend.wall}))


if __name__ == "__main__":
    main()
