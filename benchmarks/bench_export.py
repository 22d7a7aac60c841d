"""Every way to serve a spec, side by side in one run (issue 15, DESIGN §7 size).

    python benchmarks/bench_export.py                 # 200 requests, homefeed, N=500, T=50
    python benchmarks/bench_export.py --quick         # 40 requests, fewer batch repetitions
    python benchmarks/bench_export.py --no-aot        # skip the AOTInductor compile (minutes)
    python benchmarks/bench_export.py --cpp           # add the C++ server (needs c++)

The rows: `blend run`'s compiled loops and the torch path (the in-process `BlendModule`), the
exported program (`blend export`, run by `.module()`), the AOTInductor package (`blend export
--aot`, run by torch's `AOTIModelPackageLoader` from Python) and, with `--cpp`, the C++ server of
examples/serve_cpp (its own timings, on the same requests, read from its `--bench` line).

Requests come from the simulator at N=500 candidates, read by `blend run`'s own reader, padded to
a multiple of 32 for the artifacts as a server sends them. Single-request latency: each request
is blended alone by every in-process server in turn, so that all see the same machine; p50 and
p99 over the requests. Batch throughput: a batch of 64 requests, best of the repetitions. Every
timed call is checked: the exported program must give the torch path's outputs bit for bit, the
package and the compiled loops the same picks (their scores within float32 rounding); a figure
is printed only for a server that passed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "specs" / "homefeed.blend"
sys.path.insert(0, str(REPO))

from benchmarks.bench_operators import IDLE, wait_idle  # noqa: E402

Outputs = dict[str, torch.Tensor]


def padded(mask: torch.Tensor, tensors: list[torch.Tensor], multiple: int) -> list[torch.Tensor]:
    """The program's positional inputs: the candidate axis padded to a multiple of 32."""
    n = mask.shape[1]
    width = max(multiple, -(-n // multiple) * multiple)
    out = []
    for t in [mask, *tensors]:
        if t.dim() >= 2 and t.shape[1] == n and width > n:
            pad = torch.zeros((t.shape[0], width - n, *t.shape[2:]), dtype=t.dtype)
            t = torch.cat([t, pad], 1)
        out.append(t.contiguous())
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timed(fn: Callable[[], Outputs]) -> tuple[float, Outputs]:
    if IDLE["wait"] and not wait_idle(max_wait=30.0):
        IDLE["busy_cells"] += 1
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


@dataclass
class Server:
    """One way to serve the spec: how it blends a batch, and what it cost to get there."""

    name: str
    blend: Callable[[Any], Outputs]
    exact: bool  # the torch path's bits (else: the same picks, scores within rounding)
    build_s: float | None = None
    load_s: float | None = None
    size_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    single_ms: list[float] = field(default_factory=list)
    best_batch_s: float = float("inf")
    failed: str | None = None


def differs(got: Outputs, want: Outputs, exact: bool) -> str | None:
    """Why ``got`` is not the reference's slate (None when it is)."""
    if not torch.equal(got["indices"], want["indices"]):
        return "differs on picks"
    for key in ("scores", "utility"):
        if exact and not torch.equal(got[key], want[key]):
            return f"differs on `{key}` bits"
        if not torch.allclose(got[key], want[key], rtol=1e-5, atol=1e-5):
            return f"differs on `{key}` beyond float32 rounding"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 requests, 3 batch repetitions")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=None, help="batch repetitions (best of)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--no-aot", action="store_true", help="leave out the AOT package")
    parser.add_argument("--isa", default="native", help="the package's --isa (native, avx2)")
    parser.add_argument(
        "--cpp", action="store_true", help="add the C++ server (built here with the docs' command)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the dump and artifacts here and reuse them on the next run (build time then "
        "reads 'reused')",
    )
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
    from blendspec.ops import kernels
    from blendspec.serve.export import export_spec, load_artifact
    from blendspec.sim.core import World
    from blendspec.sim.dumps import write_dump
    from blendspec.spec.loader import load_spec

    importlib.import_module("torch._export.serde.serialize")  # its import is not load time
    loaded = load_spec(args.spec)
    runner = Runner(loaded)
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="bench-export-"))
    tmp.mkdir(parents=True, exist_ok=True)
    total = max(requests, args.batch)
    dump = tmp / f"dump-{total}x{args.candidates}.parquet"
    if not dump.exists():
        write_dump(World.default(seed=0), dump, requests=total, candidates=args.candidates, seed=1)
    singles = list(DumpReader(dump, loaded.spec).batches(1, limit=requests))
    batch = next(DumpReader(dump, loaded.spec).batches(args.batch))

    def torch_path(b: Any) -> Outputs:
        with kernels("torch"):
            return runner.blend(b)

    servers = [
        Server("`blend run` compiled loops (in-process)", runner.blend, exact=False),
        Server("in-process BlendModule, torch path", torch_path, exact=True),
    ]

    export_s, size = build(lambda path: export_spec(loaded, path), tmp / "spec.pt2")
    started = time.perf_counter()
    program, meta = load_artifact(tmp / "spec.pt2")
    load_s = time.perf_counter() - started
    nodes = sum(len(m.graph.nodes) for _, m in program.named_modules() if hasattr(m, "graph"))
    names = [i["name"] for i in meta["inputs"][1:]]

    def artifact_inputs(b: Any) -> list[torch.Tensor]:
        extra = {REQUEST_SEED_KEY: request_seeds(b.request_ids)}
        tensors = [b.inputs[n] if n in b.inputs else extra[n] for n in names]
        return padded(b.mask, tensors, meta["candidate_multiple"])

    def run_artifact(call: Callable[..., tuple[torch.Tensor, ...]]) -> Callable[[Any], Outputs]:
        def blend(b: Any) -> Outputs:
            with torch.inference_mode():
                out = dict(zip(meta["outputs"], call(*artifact_inputs(b)), strict=True))
            n = b.mask.shape[1]  # back to the request's own width, as the reference has it
            return {k: v[:, :n] if k == "candidate_utility" else v for k, v in out.items()}

        return blend

    servers.append(
        Server(
            "exported program (torch.export.load, .module())",
            run_artifact(program),
            exact=True,
            build_s=export_s,
            load_s=load_s,
            size_bytes=size,
            notes=[f"{nodes} graph nodes (top graph and loop bodies)"] + reused(export_s),
        )
    )
    if not args.no_aot:
        compile_s, package_size = build(
            lambda path: export_spec(loaded, path, aot=True, isa=args.isa),
            tmp / f"spec-aot-{args.isa}.pt2",
        )
        started = time.perf_counter()
        aot, _ = load_artifact(tmp / f"spec-aot-{args.isa}.pt2")
        servers.append(
            Server(
                f"AOTInductor package, isa {args.isa} (AOTIModelPackageLoader from Python)",
                run_artifact(aot),
                exact=False,
                build_s=compile_s,
                load_s=time.perf_counter() - started,
                size_bytes=package_size,
                notes=reused(compile_s),
            )
        )

    for server in servers:  # warm-up
        server.blend(singles[0])
    for single in singles:
        want: Outputs | None = None
        for server in servers:
            if server.failed:
                continue
            seconds, got = timed(lambda s=server, b=single: s.blend(b))
            want = want if want is not None else torch_path(single)
            server.failed = differs(got, want, server.exact)
            server.single_ms.append(seconds * 1e3)
    reference = torch_path(batch)
    for _ in range(repeat):
        for server in servers:
            if server.failed:
                continue
            seconds, got = timed(lambda s=server: s.blend(batch))
            server.failed = differs(got, reference, server.exact)
            server.best_batch_s = min(server.best_batch_s, seconds)

    cpp = cpp_figures(args, tmp, dump, requests) if args.cpp else None

    width = artifact_inputs(batch)[0].shape[1]
    print(
        f"{loaded.spec.name}: N={args.candidates} (artifacts: padded to {width}), "
        f"T={loaded.spec.slate.length}, {args.threads} threads; {len(singles)} single requests, "
        f"a batch of {batch.size}, best of {repeat}"
    )
    print(
        "| server | build s | load s | size MB | p50 ms (B=1) | p99 ms | req/s (B=64) | x loops |"
    )
    print("|---|---|---|---|---|---|---|---|")
    loops_rate = batch.size / servers[0].best_batch_s
    for server in servers:
        if server.failed:
            print(f"| {server.name} | {server.failed}: no figures |||||||")
            continue
        rate = batch.size / server.best_batch_s
        print(
            f"| {server.name} | {_fmt(server.build_s)} | {_fmt(server.load_s, 2)} | "
            f"{_fmt(server.size_bytes and server.size_bytes / 1e6, 2)} | "
            f"{statistics.median(server.single_ms):.2f} | "
            f"{percentile(server.single_ms, 0.99):.2f} | {rate:.0f} | "
            f"{rate / loops_rate:.2f} |"
        )
    if cpp is not None:
        rate = cpp["batch_requests_per_s"]
        print(
            f"| C++ server (examples/serve_cpp), package call | — | — | — | "
            f"{cpp['b1_p50_ms']:.2f} | {cpp['b1_p99_ms']:.2f} | {rate:.0f} | "
            f"{rate / loops_rate:.2f} |"
        )
        print(
            f"C++ server end to end (JSON in, answer out): p50 {cpp['b1_end_to_end_p50_ms']:.1f} "
            f"ms, B=64 {cpp['batch_end_to_end_requests_per_s']:.1f} requests/s"
        )
    for server in servers:
        for note in server.notes:
            print(f"{server.name}: {note}")
    if args.wait_idle and IDLE["busy_cells"]:
        print(f"warning: {IDLE['busy_cells']} timed calls ran on a busy machine")


def cpp_figures(args: argparse.Namespace, tmp: Path, dump: Path, requests: int) -> dict[str, Any]:
    """The C++ server's own `--bench` figures (the package call on ready tensors, timed as the
    Python loaders are here) on the same requests, sent as JSON lines made from the dump."""
    from blendspec.serve.export import export_spec
    from blendspec.spec.loader import load_spec
    from tests.test_export import _requests_jsonl
    from tests.test_serve_cpp import _build_command

    binary = tmp / "blend_serve"
    if not binary.exists():
        subprocess.run(_build_command(binary), check=True)
    package = tmp / f"spec-aot-{args.isa}.pt2"
    if not package.exists():
        export_spec(load_spec(args.spec), package, aot=True, isa=args.isa)
    lines = tmp / f"requests-{requests}.jsonl"
    if not lines.exists():
        _requests_jsonl(dump, args.spec, lines, max(requests, args.batch))
    done = subprocess.run(
        [str(binary), str(package), "--bench", str(lines), "--bench-batch", str(args.batch),
         "--bench-repeat", str(args.repeat or (3 if args.quick else 5)),
         "--threads", str(args.threads)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def build(make: Callable[[Path], object], path: Path) -> tuple[float | None, int]:
    """(seconds to make the artifact, or None when a kept one is reused; its size)."""
    if path.exists():
        return None, path.stat().st_size
    started = time.perf_counter()
    make(path)
    return time.perf_counter() - started, path.stat().st_size


def reused(seconds: float | None) -> list[str]:
    return ["built by an earlier run (--workdir): no build time"] if seconds is None else []


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
