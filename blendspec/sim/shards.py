"""Shard sets: a folder of dump shards with its manifest, and publishing one safely.

Why its own module: a shard set is the one output that is a folder, and replacing a folder must
never delete what blendspec did not write. The manifest (:data:`SHARD_MANIFEST`) says which files
are ours; :func:`prepare_shard_folder` decides before any work whether the folder may be swapped
whole or only its shard files replaced (``--overwrite``), and :func:`merge_shards` does the
latter for :func:`blendspec.io.outputs.atomic_path`, which owns the temporary folder, the fsyncs
and the swap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

__all__ = ["SHARD_MANIFEST", "merge_shards", "prepare_shard_folder", "write_manifest"]

SHARD_MANIFEST = "_blendspec_shards.json"
"""The file that marks a folder as a shard set blendspec wrote, listing its shards. Dump readers
skip it (not .parquet/.jsonl; pyarrow skips `_` names); a later write may replace exactly the
files it lists, and nothing else."""
_SHARD_NAME = re.compile(r"part-\d{5}\.(parquet|jsonl)")


def _shard_set_files(folder: Path) -> set[str] | None:
    """The names a previous blendspec shard set in ``folder`` consists of (its manifest's list,
    else — for shard sets written before manifests — shard-named files), or None when the folder
    holds anything else: then it is not ours to replace."""
    names = set(os.listdir(folder))
    listed: set[str] = set()
    if SHARD_MANIFEST in names:
        try:
            manifest = json.loads((folder / SHARD_MANIFEST).read_text(encoding="utf-8"))
            listed = {str(f) for f in manifest["files"] if "/" not in str(f)} | {SHARD_MANIFEST}
        except (OSError, ValueError, KeyError, TypeError):
            return None
    ours = {
        n
        for n in names
        if (n in listed or _SHARD_NAME.fullmatch(n))
        and (folder / n).is_file()
        and not (folder / n).is_symlink()
    }
    return ours if ours == names else None


def prepare_shard_folder(path: Path, overwrite: bool) -> Literal["swap", "merge"]:
    """How a shard set may be published at ``path`` without deleting what blendspec did not
    write: ``swap`` replaces the whole folder (it is absent, empty, or a previous shard set);
    ``merge`` (only with ``overwrite``) replaces just the shard files of a folder that holds
    other things too. Otherwise an :class:`~blendspec.io.outputs.OutputError`."""
    from blendspec.io.outputs import OutputError, display_path

    if not path.exists() and not path.is_symlink():
        return "swap"
    if not path.is_dir():
        if overwrite:
            return "swap"
        raise OutputError(
            f"{display_path(path)} is a file and --shard-rows writes a folder; refusing to "
            "replace it (pass --overwrite to replace it)"
        )
    if _shard_set_files(path) is not None:
        return "swap"
    if overwrite:
        return "merge"
    others = sorted(set(os.listdir(path)) - {SHARD_MANIFEST})
    example = next((n for n in others if not _SHARD_NAME.fullmatch(n)), others[0])
    raise OutputError(
        f"{display_path(path)} is a folder that holds files blendspec did not write (such as "
        f"`{display_path(example, 60)}`); refusing to write shards into it (pass --overwrite "
        "to replace only its shard files)"
    )


def write_manifest(folder: Path, files: Sequence[str], requests: int, rows: int) -> None:
    manifest = {
        "format": "blendspec.shards",
        "version": 1,
        "files": list(files),
        "requests": requests,
        "rows": rows,
    }
    (folder / SHARD_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def merge_shards(tmp: Path, path: Path) -> None:
    """Publish the shard set ``tmp`` into the folder ``path`` that holds other files too (the
    ``merge`` of :func:`prepare_shard_folder`): remove the previous shards (those the manifest
    lists, and shard-named files), then move the new ones in one by one, the manifest last, so it
    never lists a shard that is not in place yet. The caller, the atomic writer, has synced
    ``tmp`` and syncs ``path`` after, and removes the emptied ``tmp``."""
    stale = _SHARD_NAME.fullmatch
    listed: set[str] = set()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        manifest = json.loads((path / SHARD_MANIFEST).read_text(encoding="utf-8"))
        listed = {str(f) for f in manifest["files"] if "/" not in str(f)}
    for name in os.listdir(path):
        if (name in listed or stale(name)) and (path / name).is_file():
            (path / name).unlink()
    for entry in sorted(os.listdir(tmp), key=lambda n: (n == SHARD_MANIFEST, n)):
        os.replace(tmp / entry, path / entry)
