"""Where a spec's policy file is, and whether it can be opened — path logic only.

It lives apart from the policy file's format (``store.py``), the networks and training so that
the spec checks (`blend validate`) can test the path without importing torch.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def resolve_policy_file(file: str, base_dir: Path | None) -> Path:
    """A spec's policy file, relative to the spec's own folder (DESIGN §2), else to the cwd."""
    path = Path(file).expanduser()
    if path.is_absolute():
        return path
    return (base_dir if base_dir is not None else Path.cwd()) / path


def policy_path_problem(file: str, base_dir: Path) -> tuple[str, str] | None:
    """Why the policy file a spec names (relative to the spec's folder) cannot be opened, as a
    diagnostic's message and help, or None. A symlink loop, a NUL byte or a name longer than the
    file system allows is the spec's problem, said in one line — never an internal error."""
    from blendspec.io.outputs import display_path

    shown = display_path(file, 100)
    if "\0" in file:
        return (
            f"policy file name `{shown}` holds a NUL byte",
            "a file name cannot hold one; name the policy file `blend policy train` wrote",
        )
    candidate = base_dir / Path(file)
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop (Python 3.11)
        resolved = Path(os.path.abspath(candidate))
    try:
        st = os.stat(resolved)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return (
                f"policy file `{shown}` does not exist",
                f"looked for {display_path(resolved)}; train one with `blend policy train`, or "
                "remove `file` to serve the fallback weights",
            )
        reason = os.strerror(error.errno) if error.errno else str(error)
        return (
            f"policy file `{shown}` cannot be read: {reason}",
            f"looked for {display_path(resolved)}",
        )
    if not stat.S_ISREG(st.st_mode):
        return (
            f"policy file `{shown}` is not a file",
            f"{display_path(resolved)} is a folder or a device; name the file itself",
        )
    return None
