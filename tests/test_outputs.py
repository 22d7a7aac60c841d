"""The one atomic writer (`io/outputs.atomic_path`): what reaches the disk, and in which order.

A rename that reaches the disk before the data it names leaves an empty or torn file under the
target's name after a crash, so the writer must fsync the temporary (every file of a temporary
folder, and the folder) before the rename, and the target's folder after it. os.fsync is
recorded here rather than a crash simulated: the order of the calls is the guarantee.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from blendspec.io import outputs
from blendspec.io.outputs import OutputError, atomic_path

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="names synced descriptors through /proc"
)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """("fsync", path) and ("replace", target) in the order the writer made them."""
    seen: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def record_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        replace(src, dst)
        seen.append(("replace", os.path.realpath(dst)))

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    return seen


def test_a_file_is_synced_before_the_rename_and_its_folder_after(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    target = tmp_path / "out.txt"
    with atomic_path(target) as temporary:
        temporary.write_text("slates\n")
        name = os.path.realpath(temporary)
    assert target.read_text() == "slates\n"
    assert events == [
        ("fsync", name),
        ("replace", os.path.realpath(target)),
        ("fsync", os.path.realpath(tmp_path)),
    ]


def test_nothing_is_synced_or_renamed_when_the_block_fails(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert events == []
    assert list(tmp_path.iterdir()) == []


def test_a_shard_set_syncs_every_shard_its_manifest_and_the_folder_first(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    from blendspec.sim.core import World
    from blendspec.sim.dumps import write_dump
    from blendspec.sim.segments import WorldConfig

    world = World(WorldConfig(n_items=200, n_users=50, sid_branching=(2, 2)))
    folder = tmp_path / "shards"
    info = write_dump(world, folder, requests=4, candidates=5, shard_rows=10)
    published = os.path.realpath(folder)
    renamed = events.index(("replace", published))
    synced = [path for kind, path in events[:renamed] if kind == "fsync"]
    # The temporary folder's files (named under the temporary), then the temporary folder.
    names = sorted(Path(p).name for p in synced[:-1])
    assert names == sorted([*(f.name for f in info.files), "_blendspec_shards.json"])
    assert Path(synced[-1]).parent == Path(published).parent
    assert all(Path(p).parent == Path(synced[-1]) for p in synced[:-1])
    assert events[renamed + 1 :] == [("fsync", os.path.realpath(tmp_path))]


def test_a_merged_shard_set_syncs_the_folder_it_merged_into(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    from blendspec.sim.core import World
    from blendspec.sim.dumps import write_dump
    from blendspec.sim.segments import WorldConfig

    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    world = World(WorldConfig(n_items=200, n_users=50, sid_branching=(2, 2)))
    write_dump(world, folder, requests=2, candidates=5, shard_rows=10, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert events[-2:] == [
        ("fsync", os.path.realpath(folder)),
        ("fsync", os.path.realpath(tmp_path)),
    ]


def test_a_failed_sync_is_the_writes_error_and_leaves_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OutputError, match="Input/output error"), atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_a_folder_that_cannot_be_synced_costs_only_that_guarantee(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = os.fsync

    def no_folders(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folders)
    with atomic_path(tmp_path / "out.txt") as temporary:
        temporary.write_text("ok")
    assert (tmp_path / "out.txt").read_text() == "ok"


def test_modes_the_existing_targets_or_the_umasks(tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    kept.chmod(0o640)
    with atomic_path(kept) as temporary:
        temporary.write_text("new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640

    umask = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "new.txt") as temporary:
            temporary.write_text("new")
        with atomic_path(tmp_path / "folder", folder=True) as temporary:
            (temporary / "a").write_text("a")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o750
    assert outputs.remove_stale_temporaries(tmp_path / "folder") == []
