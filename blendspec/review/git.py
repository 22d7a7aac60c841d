"""`blend diff --git REV`: which spec files differ between a revision and the working tree, and
the whole-file changes for a spec added or deleted since.

Kept apart because it is the only part of `review/` that runs a subprocess; the command pairs
what this finds with loaded specs and hands them to `review/report.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blendspec.review.changes import Change, Location, Severity, SpecDiff
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.syntax import syntax_of


class GitError(Exception):
    """A git command failed (not a repository, unknown revision, …)."""


def _git(args: Sequence[str], cwd: Path) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as error:
        raise GitError(f"cannot run git: {error}") from None
    if done.returncode != 0:
        raise GitError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout


_YAML_SPEC = re.compile(r"^(inputs|utility)\s*:", re.MULTILINE)


def looks_like_spec(path: str, text: str) -> bool:
    """Any DSL file is a spec; a YAML file is one when it has top-level `inputs` or `utility`
    (so workflow files and .pre-commit-hooks.yaml in the same tree are left alone)."""
    if syntax_of(Path(path)) == "dsl":
        return True
    return bool(_YAML_SPEC.search(text))


@dataclass(frozen=True)
class GitPair:
    """A spec file that differs between a revision and the working tree."""

    status: str  # modified | added | deleted
    path: str  # relative to the repository's top level
    old_text: str | None
    new_path: Path | None  # the working-tree file
    location: Path  # where the file is, or was, in the working tree


def git_pairs(rev: str, paths: Sequence[Path], cwd: Path | None = None) -> list[GitPair]:
    """Spec files (*.blend, *.yaml, *.yml) that differ between `rev` and the working tree,
    including untracked ones, restricted to `paths` (files or folders; default: everything)."""
    cwd = Path(cwd or Path.cwd())
    top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
    _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd)
    specs = [str(p) for p in paths]
    listed = _git(["diff", "--name-status", "--no-renames", rev, "--", *specs], cwd)
    entries: dict[str, str] = {}
    for line in listed.splitlines():
        if not line.strip():
            continue
        code, _, name = line.partition("\t")
        entries[name] = {"A": "added", "D": "deleted"}.get(code[:1], "modified")
    untracked = _git(
        ["ls-files", "--others", "--exclude-standard", "--full-name", "--", *specs], cwd
    )
    for name in untracked.splitlines():
        if name.strip():
            entries.setdefault(name, "added")
    pairs: list[GitPair] = []
    for name in sorted(entries):
        if syntax_of(Path(name)) is None:
            continue
        status = entries[name]
        old_text = None if status == "added" else _git(["show", f"{rev}:{name}"], top)
        new_path = None if status == "deleted" else top / name
        text = new_path.read_text(encoding="utf-8") if new_path is not None else old_text or ""
        if not looks_like_spec(name, text):
            continue
        pairs.append(GitPair(status, name, old_text, new_path, top / name))
    return pairs


def unchanged_specs(rev: str, paths: Sequence[Path], cwd: Path | None = None) -> list[GitPair]:
    """Tracked spec files under `paths` (default: everywhere) that are the same at `rev` and in
    the working tree: `--logs` looks among them for a spec whose policy file alone changed."""
    cwd = Path(cwd or Path.cwd())
    top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
    changed = changed_paths(rev, cwd)
    tracked = _git(["ls-files", "--full-name", "--", *[str(p) for p in paths]], cwd)
    pairs = []
    for name in sorted(set(tracked.splitlines())):
        if not name.strip() or name in changed or syntax_of(Path(name)) is None:
            continue
        path = top / name
        text = path.read_text(encoding="utf-8")
        if looks_like_spec(name, text):
            pairs.append(GitPair("modified", name, text, path, path))
    return pairs


def changed_paths(rev: str, cwd: Path | None = None) -> set[str]:
    """Every path (from the repository's top) that differs between `rev` and the working tree,
    untracked files included."""
    top = Path(_git(["rev-parse", "--show-toplevel"], Path(cwd or Path.cwd())).strip())
    listed = _git(["diff", "--name-only", "--no-renames", rev], top)
    untracked = _git(["ls-files", "--others", "--exclude-standard", "--full-name"], top)
    return {n for n in (listed + "\n" + untracked).splitlines() if n.strip()}


def revision_bytes(rev: str, path: str, cwd: Path | None = None) -> bytes | None:
    """A file's bytes at a revision (`git show REV:path`, path from the repository's top), or
    None when git does not have it there."""
    cwd = Path(cwd or Path.cwd())
    top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
    try:
        done = subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=top, capture_output=True, check=False
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def display_path(path: Path) -> str:
    """A path relative to the current directory when it is below it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def file_event(pair: GitPair, rev: str, loaded: LoadedSpec | None) -> SpecDiff:
    """A spec added or deleted since the revision: one change for the whole file."""
    shown = display_path(pair.new_path) if pair.new_path else f"{rev}:{pair.path}"
    name = loaded.spec.name if loaded else Path(pair.path).stem
    if pair.status == "added":
        change = Change(
            "spec.added",
            "(spec)",
            Severity.behavioural,
            f"spec `{name}` added",
            new=name,
            new_at=Location(1, 1),
            anchor=Location(1, 1),
        )
        return SpecDiff(None, shown, None, name, [change], status="added")
    change = Change(
        "spec.deleted",
        "(spec)",
        Severity.breaking,
        f"spec `{name}` deleted: whatever serves or replays it loses its spec",
        old=name,
        old_at=Location(1, 1),
    )
    return SpecDiff(
        f"{rev}:{pair.path}",
        None,
        name,
        None,
        [change],
        status="deleted",
        deleted_path=display_path(pair.location),
    )
