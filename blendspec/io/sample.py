"""The bundled sample dump: made deterministically by the simulator on first use and cached, so that
`blend run specs/homefeed.blend` shows a new user real output with no other input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from blendspec.io.cache import cache_dir
from blendspec.io.dump import DumpError
from blendspec.spec.model import Spec

SAMPLE_REQUESTS = 48
SAMPLE_CANDIDATES = (100, 300)
SAMPLE_SEED = 0
SAMPLE_VERSION = 2


def sample_path() -> Path:
    return (
        cache_dir() / f"sample-v{SAMPLE_VERSION}-{SAMPLE_REQUESTS}x{SAMPLE_CANDIDATES[1]}.parquet"
    )


def sample_dump(spec: Spec, progress: Callable[[str], None] | None = None) -> Path:
    """The sample's path, made on first use; it must provide every input the spec declares."""
    from blendspec.sim.columns import dump_schema
    from blendspec.sim.core import World
    from blendspec.sim.dumps import write_dump

    schema = dump_schema()
    missing = [name for name in spec.inputs if name not in schema.names]
    if missing:
        raise DumpError(
            "the bundled sample has no column "
            + ", ".join(f"`{m}`" for m in missing)
            + f" (it provides {', '.join(schema.names[2:])}); pass --candidates"
        )
    path = sample_path()
    if not path.exists():
        if progress is not None:
            progress(f"making the bundled sample dump (once) in {path.parent} …")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dump(
            World.default(seed=SAMPLE_SEED),
            path,
            requests=SAMPLE_REQUESTS,
            candidates=SAMPLE_CANDIDATES,
            seed=SAMPLE_SEED,
        )
    return path
