"""Where `blend` writes: the output-path guard and the one atomic writer (DESIGN §4, §8).

Why one module: every command that writes must (1) refuse an output path that is one of its
inputs or another of its outputs — a slates file written over the dump it reads destroys the
dump; (2) report the environment's refusals (a directory where a file goes, a read-only folder,
a full disk) as the user's error, one line with the path and the OS reason, not as a bug; and
(3) never leave a half-written file. Doing that in each command separately is how the holes
appeared, so each command names its inputs and outputs once and calls :func:`guard_paths`, and
every file is written through :func:`atomic_path`.

Temporary files are named ``.<target>.bs<pid>@<host>.<random>.tmp`` so that a later write to
the same target recognises the leftovers of a killed run (same host, process gone) and removes
them — and only them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "OutputError",
    "as_output_error",
    "atomic_path",
    "check_writable",
    "default_rejects_path",
    "display_path",
    "environment_message",
    "guard_paths",
    "remove_stale_temporaries",
    "temporary_name",
]


class OutputError(Exception):
    """An output cannot be written where it was asked to go (a usage error: exit 2).

    The message is one line naming the path(s) and the reason."""


# Errors that only a write raises (a full disk, a quota, a file size limit), caught from inside a
# write where the error carries no file name (pyarrow's OSError(28, 'Error writing bytes ...')).
# Permission errors are not among them: the temporary exists and is ours by then, and pyarrow's
# permission error on *reading* an input carries no file name either.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NAME_LIMIT = 100  # characters of the target's name kept in a temporary's name (NAME_MAX is 255)


def display_path(path: str | os.PathLike[str], limit: int = 160) -> str:
    """A path for a one-line message: an absurdly long one is shortened, and says how long."""
    text = os.fspath(path)
    text = text.replace("\0", "\\0")
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}…{text[-30:]} ({len(text):,} characters)"


def _reason(error: OSError) -> str:
    if error.errno is not None:
        return os.strerror(error.errno)
    return str(error.strerror or error)


def default_rejects_path(out: Path) -> Path:
    """Where `blend run` writes rejects when --rejects is not given: beside the slates."""
    return out.with_name(out.stem + ".rejects.parquet")


# What only the machine's state causes — full disk, quota, read-only or forbidden folder, device
# error, too many open files, names too long or looping. Raised anywhere (a write, or reading an
# input), they are the user's to fix, not a bug in blendspec.
_ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)


def environment_message(error: BaseException) -> str | None:
    """The one-line message for an error the environment caused (an :class:`OutputError`, or an
    OSError of the kinds above: path and OS reason), or None when it may be a bug."""
    if isinstance(error, OutputError):
        return str(error)
    if isinstance(error, OSError) and error.errno in _ENVIRONMENT_ERRNOS:
        reason = os.strerror(error.errno)
        if error.filename is not None:
            return f"{display_path(error.filename)}: {reason}"
        return reason
    return None


# --------------------------------------------------------------------------------------------
# The guard: no output onto an input or onto another output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Resolved:
    label: str
    given: Path
    real: Path
    inode: tuple[int, int] | None
    is_dir: bool


def _resolve(label: str, path: Path) -> _Resolved:
    """Symlinks and `..` resolved (what the file system will open), plus the inode when the
    path exists, so that a hard link to an input is recognised too."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        real = Path(os.path.abspath(path))
    try:
        st = os.stat(path)
        inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
        is_dir = os.path.isdir(path)
    except (OSError, ValueError):
        inode, is_dir = None, False
    return _Resolved(label, Path(path), real, inode, is_dir)


def _inside(inner: Path, outer: Path) -> bool:
    return inner != outer and inner.is_relative_to(outer)


def _ancestors_inodes(path: Path) -> set[tuple[int, int]]:
    """The inodes of every existing folder above `path` (a folder reached by another name)."""
    found: set[tuple[int, int]] = set()
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except (OSError, ValueError):
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def _clash(a: _Resolved, b: _Resolved) -> str | None:
    """How output `a` would destroy `b` (an input, or an earlier output), or None."""
    if a.real == b.real or (a.inode is not None and a.inode == b.inode):
        return "the same file as" if not b.is_dir else "the same folder as"
    # Lexically under a path that is a file is no clash (the write fails: not a directory).
    if (_inside(a.real, b.real) and (b.is_dir or b.inode is None)) or (
        b.is_dir and b.inode in _ancestors_inodes(a.real)
    ):
        return "inside"
    if (_inside(b.real, a.real) and (a.is_dir or a.inode is None)) or (
        a.is_dir and a.inode in _ancestors_inodes(b.real)
    ):
        return "a folder holding"
    return None


def guard_paths(
    inputs: Iterable[tuple[str, Path | None]], outputs: Iterable[tuple[str, Path | None]]
) -> None:
    """Refuse (:class:`OutputError`) an output that resolves to an input or to another output,
    or lies inside an input folder (or holds an input): writing it would destroy that input, or
    one output would silently replace another.

    ``inputs`` and ``outputs`` are ``(label, path)`` pairs; the label is how the user named the
    path (``--candidates``, ``spec``, ``--out``); ``None`` paths are skipped. Call it before any
    work, so that nothing is read or computed for a run that cannot be written.
    """
    ins = [_resolve(label, Path(p)) for label, p in inputs if p is not None]
    outs = [_resolve(label, Path(p)) for label, p in outputs if p is not None]
    for i, out in enumerate(outs):
        for other in ins:
            how = _clash(out, other)
            if how is not None:
                raise OutputError(
                    f"{out.label} {display_path(out.given)} is {how} {other.label} "
                    f"{display_path(other.given)}: refusing to overwrite an input"
                )
        for other in outs[:i]:
            how = _clash(out, other)
            if how is not None:
                raise OutputError(
                    f"{out.label} {display_path(out.given)} is {how} {other.label} "
                    f"{display_path(other.given)}: one output would replace the other"
                )


def check_writable(label: str, path: Path, *, folder: bool = False) -> None:
    """Fail now, before any work, if `path` cannot be written: a folder where a file goes, a
    read-only or forbidden folder, a file or a symlink loop where a folder goes. Probes the
    nearest existing folder above `path` (the write creates the rest there) with a temporary
    file of the recognisable name, removed at once; creates nothing else, so a command that
    then fails on its spec leaves no folder behind. (A file where a shard folder goes is
    the shard writer's to judge: see `blend simulate --overwrite`.)"""
    path = Path(path)
    shown = f"{label} {display_path(path)}"
    try:
        if not folder and path.is_dir():
            raise OutputError(f"cannot write {shown}: {os.strerror(errno.EISDIR)}")
        parent = next((p for p in path.parents if os.path.lexists(p)), Path("."))
        if not stat.S_ISDIR(os.stat(parent).st_mode):
            raise OutputError(f"cannot write {shown}: {os.strerror(errno.ENOTDIR)}")
        probe = parent / temporary_name(path, ".probe")
        descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"cannot write {shown}: {_reason(error)}") from None
    except ValueError:  # an embedded NUL byte
        raise OutputError(f"cannot write {shown}: invalid path (it holds a NUL byte)") from None


# --------------------------------------------------------------------------------------------
# Temporary names and stale leftovers
# --------------------------------------------------------------------------------------------


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def temporary_name(target: Path, suffix: str = ".tmp") -> str:
    """``.<name>.bs<pid>@<host>.<random><suffix>``: recognisable as ours, with the owner's pid."""
    token = secrets.token_hex(4)
    return f".{Path(target).name[:_NAME_LIMIT]}.bs{os.getpid()}@{_host_tag()}.{token}{suffix}"


def _stale_pattern(target: Path) -> re.Pattern[str]:
    name = re.escape(Path(target).name[:_NAME_LIMIT])
    return re.compile(
        rf"\.{name}\.bs(?P<pid>\d+)@(?P<host>[0-9a-f]{{8}})\.[0-9a-f]{{8}}\.(tmp|old|probe)"
    )


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or an unreadable pid): leave its files alone
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporaries a killed blendspec run left beside `target`: only names of our
    exact pattern, made on this host by a process that no longer exists. Returns them."""
    target = Path(target)
    pattern = _stale_pattern(target)
    host = _host_tag()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


# --------------------------------------------------------------------------------------------
# The atomic writer
# --------------------------------------------------------------------------------------------


def _default_mode(target: Path, *, folder: bool = False) -> int:
    """Keep an existing target's mode; a new one gets what the umask allows (mkstemp says 0600).
    A folder keeps only an existing folder's mode (a file where it goes is being replaced)."""
    if target.exists() and target.is_dir() == folder:
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def _fsync(path: Path, *, folder: bool = False) -> None:
    """Flush `path`'s data (a file) or its entries (a folder) to the disk.

    Without it a rename can reach the disk before the data it names, and a crash leaves an
    empty or torn file under the target's name. Opening read-only and syncing costs no copy.
    Some file systems refuse to sync a folder (EINVAL, or EBADF and EPERM elsewhere); that only
    loses the folder's part of the guarantee, so it is not an error. A file's sync failing is."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if folder else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(descriptor)
    except OSError as error:
        if folder and error.errno in (errno.EINVAL, errno.EBADF, errno.EPERM, errno.EACCES):
            return
        # fsync's error names no file; name it, so that it reads as this write's failure.
        raise OSError(error.errno, error.strerror, os.fspath(path)) from None
    finally:
        os.close(descriptor)


def _sync_tree(temporary: Path) -> None:
    """fsync every file written under a temporary folder, each folder in it, then the folder."""
    for root, folders, names in os.walk(temporary):
        for name in names:
            if not os.path.islink(os.path.join(root, name)):
                _fsync(Path(root, name))
        for name in folders:
            _fsync(Path(root, name), folder=True)
    _fsync(temporary, folder=True)


def _replace_folder(temporary: Path, target: Path) -> None:
    """Swap a finished temporary folder into place: an existing target (a previous folder, or a
    file) goes aside under a recognisable ``.old`` name first, since a rename cannot replace a
    non-empty folder, and is removed after; readers never see a partial folder."""
    if not (target.exists() or target.is_symlink()):
        os.replace(temporary, target)
        return
    old = target.parent / temporary_name(target, ".old")
    old.mkdir(mode=0o700)
    os.replace(target, old / "x")
    os.replace(temporary, target)
    shutil.rmtree(old, ignore_errors=True)


def _write_error(error: OSError, names: Sequence[Path]) -> bool:
    """Whether an OSError raised while writing a temporary is the write failing (full disk,
    read-only, quota) rather than, say, an input that could not be read. `names` are the
    temporary and the target; a file inside one of them (a shard of a temporary folder) counts."""
    if error.filename is not None:
        failed = os.fspath(error.filename)
        return any(
            failed == os.fspath(n) or failed.startswith(os.fspath(n) + os.sep) for n in names
        )
    return error.errno in _WRITE_ERRNOS


def as_output_error(error: OSError, target: Path, *names: Path) -> OutputError | None:
    """The :class:`OutputError` to raise for an OSError met while writing `target` (through the
    temporaries `names`), or None when the error is not the write's (re-raise it as it is)."""
    if not _write_error(error, (Path(target), *names)):
        return None
    return OutputError(f"cannot write {display_path(target)}: {_reason(error)}")


@contextmanager
def atomic_path(
    target: Path,
    *,
    mode: int | None = None,
    folder: bool = False,
    publish: Callable[[Path, Path], None] | None = None,
) -> Iterator[Path]:
    """A temporary path beside `target`, moved onto it only if the block completes.

    The temporary is in the target's folder (same file system, so the rename is atomic) and gets
    `mode`, else the target's existing mode, else the umask's. When the block completes the
    temporary is fsynced (with `folder`, a temporary folder: every file in it and the folder),
    renamed onto `target` (a folder is swapped: see :func:`_replace_folder`), and the target's
    folder is fsynced so that the rename itself survives a crash. `publish(temporary, target)`
    replaces the rename for a folder that must be merged into rather than swapped (a shard set
    written into a folder that holds other files: :func:`blendspec.sim.shards.merge_shards`).

    Stale temporaries of killed runs beside `target` are removed first. An OSError of the write
    itself (full disk, read-only folder, a folder where the file goes) becomes an
    :class:`OutputError` naming `target` and the OS reason; the temporary never survives.
    """
    target = Path(target)
    temporary: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        temporary = target.parent / temporary_name(target)
        chosen = _default_mode(target, folder=folder) if mode is None else mode
        if folder:
            temporary.mkdir(mode=0o700)
        else:
            descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(descriptor)
        os.chmod(temporary, chosen)
    except OSError as error:
        if temporary is not None:
            _remove(temporary)
        raise OutputError(f"cannot write {display_path(target)}: {_reason(error)}") from None
    _open_targets.stack.append(target)
    try:
        yield temporary
        if folder:
            _sync_tree(temporary)
        else:
            _fsync(temporary)
        if publish is not None:
            publish(temporary, target)
            if folder:
                _fsync(target, folder=True)
        elif folder:
            _replace_folder(temporary, target)
        else:
            os.replace(temporary, target)
        _fsync(target.parent, folder=True)
    except OSError as error:
        # A write error without a file name (pyarrow's) cannot say which of several nested
        # outputs failed: the outermost one (the command's main output) reports it.
        if error.filename is None and _open_targets.stack[0] is not target:
            raise
        converted = as_output_error(error, target, temporary)
        if converted is None:
            raise
        raise converted from None
    finally:
        _open_targets.stack.pop()
        _remove(temporary)


def _remove(temporary: Path) -> None:
    """Remove a temporary file or folder that was not published (nothing if it was)."""
    if temporary.is_dir() and not temporary.is_symlink():
        shutil.rmtree(temporary, ignore_errors=True)
    else:
        temporary.unlink(missing_ok=True)


class _OpenTargets(threading.local):
    """The targets of this thread's atomic writes in progress, outermost first."""

    def __init__(self) -> None:
        self.stack: list[Path] = []


_open_targets = _OpenTargets()
