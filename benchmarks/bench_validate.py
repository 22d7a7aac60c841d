"""`blend validate` of one spec, wall time, next to the floor it cannot beat (issue 16, DESIGN §7).

    python benchmarks/bench_validate.py                   # homefeed.blend, best of 10
    python benchmarks/bench_validate.py --repeat 20 --spec specs/ads.yaml
    python benchmarks/bench_validate.py --spec specs/*            # several specs, one process
    python benchmarks/bench_validate.py --pythonpath /tmp/old-checkout   # time another blendspec

Each figure is the wall time of a fresh process, as an editor or a pre-commit hook pays it:
`python -m blendspec validate SPEC`, and `python -c "import lark, yaml, pydantic"` — the libraries
the spec layer needs, which no change to blendspec can make faster. The two are run alternately,
so both see the same machine, after one warm-up each (which also fills the parser cache and
writes the bytecode, as any installed package has it); best and median of N. The processes run
in an empty folder, so the blendspec measured is the installed one (or --pythonpath's), never the
current directory's. Targets: ≤ 0.5 s on an idle machine, and ≤ 2× the import floor.

PYTHONDONTWRITEBYTECODE is dropped from the processes' environment unless --no-bytecode is given:
with it, and no bytecode written before, every blendspec module is compiled from source on every
run (+~0.1 s), which says more about that setting than about blendspec.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def wall(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from start to exit of one process; it must succeed."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, nargs="+", default=[REPO / "specs" / "homefeed.blend"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument(
        "--pythonpath", type=Path, help="Put this checkout first on PYTHONPATH (before/after)."
    )
    parser.add_argument(
        "--no-bytecode", action="store_true", help="Keep PYTHONDONTWRITEBYTECODE if it is set."
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if not args.no_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(args.pythonpath), *filter(None, [env.get("PYTHONPATH")])]
        )
    validate = [
        sys.executable,
        "-m",
        "blendspec",
        "validate",
        *(str(p.resolve()) for p in args.spec),
    ]
    floor = [sys.executable, "-c", "import lark, yaml, pydantic"]
    times: dict[str, list[float]] = {"validate": [], "floor": []}
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        wall(validate, env, cwd)  # warm-up: the parser cache, bytecode, the OS's file cache
        wall(floor, env, cwd)
        for _ in range(args.repeat):
            times["validate"].append(wall(validate, env, cwd))
            times["floor"].append(wall(floor, env, cwd))
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    names = " ".join(p.name for p in args.spec)
    print(f"blend validate {names}  (best of {args.repeat}, wall, fresh process)")
    print(
        f"  blend validate                      best {best['validate']:.3f} s   median {median['validate']:.3f} s"
    )
    print(
        f"  python -c 'import lark, yaml, pydantic'  best {best['floor']:.3f} s   median {median['floor']:.3f} s"
    )
    ratio = best["validate"] / best["floor"]
    print(
        f"  ratio (best/best)                   {ratio:.2f}×   target ≤ 2×; validate target ≤ 0.5 s"
    )
    if args.pythonpath is not None:
        print(f"  blendspec from {args.pythonpath}")
    if "PYTHONDONTWRITEBYTECODE" in env:
        print("  PYTHONDONTWRITEBYTECODE set: bytecode is not written (only read if already there)")
    print(f"  load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
