"""Policy files: the format, writing one, and reading one back without trusting it.

A spec names its policy file, and ``blend run`` loads it, so a policy file is *data* that must
never execute code or exhaust the machine (DESIGN §2). A file is ``torch.save``'s archive of
tensors (``param.<name>``, the network's state) and one JSON string (``metadata``: the format
and version, the learner's kind, the network's shape, the grid and state it was trained for, the
spec hash, the reward and training notes). Reading one:

* accepts only the archive ``torch.save`` writes, with *stored* (never compressed) records, so a
  file's tensors are never larger than the file, and loads it with ``weights_only=True``, so a
  pickle of objects fails before anything of it runs;
* checks the metadata against a schema (keys, types, ranges) and every tensor's name and shape
  against the network the metadata declares *before* that network is built: a 1 KB file that
  declares ``hidden: [200000, 200000]`` must not make the loader allocate 160 GB;
* checks the grid and state against the spec, because a policy silently applied to a different
  grid would pick wrong weights without any error.

Every problem is a one-line :class:`PolicyFileError` naming the file. Building the network from
what was read is :func:`blendspec.policy.runtime.load_policy`'s job.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from blendspec.policy.grid import ActionGrid, spec_hash, state_inputs
from blendspec.policy.network import Heads, Kind
from blendspec.spec.model import Spec

__all__ = ["FILE_FORMAT", "FILE_VERSION", "PolicyFileError", "StoredPolicy"]

FILE_FORMAT = "blendspec.policy"
FILE_VERSION = 1


class PolicyFileError(ValueError):
    """A policy file that cannot be used with this spec (or is not a policy file at all)."""


@dataclass(frozen=True)
class StoredPolicy:
    """What a policy file holds: the network's tensors and the metadata that rebuilds it."""

    kind: Kind
    heads: Heads
    hidden: tuple[int, ...]
    grid: ActionGrid
    state: tuple[tuple[str, int], ...]
    spec_hash: str
    reward: str | None
    info: dict[str, Any]
    params: Mapping[str, Tensor] = field(repr=False)

    def metadata(self) -> dict[str, Any]:
        """The file's JSON metadata."""
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "kind": self.kind,
            "heads": self.heads,
            "hidden": list(self.hidden),
            **self.grid.to_json(),
            "state": [{"name": n, "size": s} for n, s in self.state],
            "spec_hash": self.spec_hash,
            "reward": self.reward,
            "info": self.info,
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write tensors plus a JSON metadata string, atomically (temp file + rename)."""
        path = Path(path)
        payload: dict[str, Any] = {f"param.{k}": v.detach().clone() for k, v in self.params.items()}
        payload["metadata"] = json.dumps(self.metadata(), sort_keys=True)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        from blendspec.io.outputs import atomic_path

        with atomic_path(path, mode=0o644) as temporary:
            temporary.write_bytes(buffer.getvalue())
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str], spec: Spec | None = None) -> StoredPolicy:
        """Read and check a policy file (see the module's docstring), against ``spec`` when
        given. A different spec hash alone is not an error (a spec may change its diversity and
        keep its policy): ``info["spec_hash_matches"]`` records it."""
        path = Path(path)
        shown = _shown(path)
        payload = _read_payload(path, shown)
        if not isinstance(payload, dict) or not isinstance(payload.get("metadata"), str):
            raise PolicyFileError(f"{shown}: not a blendspec policy file (no metadata)")
        try:
            meta = json.loads(payload["metadata"])
        except (json.JSONDecodeError, RecursionError) as error:
            reason = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
            raise PolicyFileError(f"{shown}: unreadable metadata ({reason})") from None
        if not isinstance(meta, dict):
            raise PolicyFileError(
                f"{shown}: not a blendspec policy file (metadata is not an object)"
            )
        if meta.get("format") != FILE_FORMAT or meta.get("version") != FILE_VERSION:
            raise PolicyFileError(
                f"{shown}: not a blendspec policy file of version {FILE_VERSION} "
                f"(format {_short(meta.get('format'))}, version {_short(meta.get('version'))})"
            )
        problem = _metadata_problem(meta)
        if problem is not None:
            raise PolicyFileError(f"{shown}: invalid policy metadata: {problem}")
        grid = ActionGrid(
            tuple(meta["weights"]), tuple(tuple(float(x) for x in v) for v in meta["grid"])
        )
        state = tuple((str(s["name"]), int(s["size"])) for s in meta["state"])
        info = dict(meta.get("info") or {})
        if spec is not None:
            _check_against(path, grid, state, spec)
            current = spec_hash(spec)
            info["spec_hash_matches"] = current == meta.get("spec_hash")
        state_size = sum(s for _, s in state)
        hidden = tuple(int(h) for h in meta["hidden"])
        params = {k[len("param.") :]: v for k, v in payload.items() if k.startswith("param.")}
        problem = _tensors_problem(params, state_size, grid.shape, hidden, meta["heads"])
        if problem is not None:
            raise PolicyFileError(f"{shown}: tensors do not match the metadata ({problem})")
        return cls(
            meta["kind"],
            meta["heads"],
            hidden,
            grid,
            state,
            meta.get("spec_hash", ""),
            meta.get("reward"),
            info,
            params,
        )


# Bounds of the metadata schema: far above any policy a spec's grid and state can need, far below
# what would exhaust memory. Tensors are checked against the declared shapes anyway.
_MAX_LAYERS = 16
_MAX_WIDTH = 1 << 16
_MAX_WEIGHTS = 64
_MAX_LEVELS = 10_000
_MAX_ACTIONS = 10_000_000
_MAX_STATE = 256
_MAX_STATE_SIZE = 1 << 20


def _shown(path: Path) -> str:
    """The file's name for a one-line message (a 5000-character name is shortened)."""
    from blendspec.io.outputs import display_path

    return display_path(path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_payload(path: Path, shown: str) -> Any:
    """``torch.load(weights_only=True)``, with every way it can fail as a PolicyFileError. torch's
    advice to retry with ``weights_only=False`` is not passed on: that would run the file's code."""
    import pickle
    import warnings

    try:
        _check_archive(path, shown)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4 ..."
            return torch.load(path, map_location="cpu", weights_only=True)
    except PolicyFileError:
        raise
    except FileNotFoundError:
        raise PolicyFileError(f"{shown}: no such policy file") from None
    except OSError as error:  # a symlink loop, a folder, a name too long, no permission
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise PolicyFileError(f"{shown}: cannot read the policy file ({reason})") from None
    except ValueError as error:  # an embedded NUL byte
        if "null" in str(error):
            raise PolicyFileError(f"{shown}: invalid file name (it holds a NUL byte)") from None
        raise PolicyFileError(f"{shown}: not a blendspec policy file ({_first(error)})") from None
    except pickle.UnpicklingError as error:
        raise PolicyFileError(
            f"{shown}: not a blendspec policy file: it holds Python objects, and a policy file "
            f"holds only tensors and strings ({_unpickler_detail(error)}); it was not loaded"
        ) from None
    except Exception as error:  # truncated file, not a torch file
        raise PolicyFileError(f"{shown}: not a blendspec policy file ({_first(error)})") from None


def _check_archive(path: Path, shown: str) -> None:
    """Only the archive ``torch.save`` writes: a zip of *stored* records (aligned for mmap, never
    compressed). torch's loader inflates a deflated record, so a 1 MB file of compressed zeros
    would become a 1 GB tensor; with stored records a file's tensors are never larger than the
    file. (The pre-zip legacy format, which blendspec never wrote, is refused too.)"""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                if record.compress_type != zipfile.ZIP_STORED:
                    raise PolicyFileError(
                        f"{shown}: not a blendspec policy file (record "
                        f"`{_short(record.filename)[1:-1]}` is compressed; torch.save writes "
                        "none)"
                    )
    except zipfile.BadZipFile:
        raise PolicyFileError(
            f"{shown}: not a blendspec policy file (not a torch.save archive)"
        ) from None


def _first(error: BaseException) -> str:
    """The first sentence of an error's message, without torch's advice to unsafe-load."""
    text = " ".join(str(error).split())
    text = text.split(". ")[0].rstrip(".")
    if "weights_only" in text:
        return "refused by the safe loader"
    if len(text) > 200:
        text = text[:197] + "..."
    return text or type(error).__name__


def _unpickler_detail(error: BaseException) -> str:
    """What torch's safe unpickler refused (e.g. ``Unsupported global: GLOBAL os.system``), with
    the surrounding advice (retry with ``weights_only=False``, file an issue) left out."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1]
        for line in rest.splitlines():
            line = line.strip()
            if line and "weights_only" not in line:
                return line if len(line) <= 120 else line[:117] + "..."
    return "refused by the safe loader"


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _metadata_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a policy file's metadata, or None: required keys, types and ranges."""
    required = ("kind", "heads", "hidden", "weights", "grid", "state")
    missing = [k for k in required if k not in meta]
    if missing:
        return f"missing key{'s' * (len(missing) > 1)} {', '.join(f'`{k}`' for k in missing)}"
    if meta["kind"] not in ("policy_gradient", "value"):
        return f"`kind` must be 'policy_gradient' or 'value', not {_short(meta['kind'])}"
    if meta["heads"] not in ("joint", "factorised"):
        return f"`heads` must be 'joint' or 'factorised', not {_short(meta['heads'])}"
    hidden = meta["hidden"]
    if (
        not isinstance(hidden, list)
        or len(hidden) > _MAX_LAYERS
        or not all(_is_int(h, 1, _MAX_WIDTH) for h in hidden)
    ):
        return (
            f"`hidden` must be a list of at most {_MAX_LAYERS} layer widths in 1..{_MAX_WIDTH}, "
            f"not {_short(hidden)}"
        )
    weights, grid = meta["weights"], meta["grid"]
    if (
        not isinstance(weights, list)
        or not 1 <= len(weights) <= _MAX_WEIGHTS
        or not all(isinstance(w, str) and w for w in weights)
        or len(set(weights)) != len(weights)
    ):
        return f"`weights` must be a list of 1 to {_MAX_WEIGHTS} distinct names"
    if not isinstance(grid, list) or len(grid) != len(weights):
        return "`grid` must hold one list of levels per weight"
    actions = 1
    for name, levels in zip(weights, grid, strict=True):
        if (
            not isinstance(levels, list)
            or not 1 <= len(levels) <= _MAX_LEVELS
            or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in levels
            )
        ):
            return f"`grid` of `{_short(name)[1:-1]}` must be 1 to {_MAX_LEVELS} finite numbers"
        actions *= len(levels)
    if actions > _MAX_ACTIONS:
        return f"the grid has {actions:,} actions (at most {_MAX_ACTIONS:,})"
    state = meta["state"]
    if (
        not isinstance(state, list)
        or not 1 <= len(state) <= _MAX_STATE
        or not all(
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and _is_int(s.get("size"), 1, _MAX_STATE_SIZE)
            for s in state
        )
    ):
        return (
            f"`state` must be a list of 1 to {_MAX_STATE} {{name, size}} entries with sizes in "
            f"1..{_MAX_STATE_SIZE}"
        )
    if sum(s["size"] for s in state) > _MAX_STATE_SIZE:
        return f"the state has more than {_MAX_STATE_SIZE:,} features"
    if not isinstance(meta.get("spec_hash", ""), str):
        return "`spec_hash` must be a string"
    if not isinstance(meta.get("reward"), str | None):
        return "`reward` must be a string or null"
    if not isinstance(meta.get("info") or {}, dict):
        return "`info` must be an object"
    return None


def _tensors_problem(
    params: Mapping[str, Any],
    state_size: int,
    grid_shape: Sequence[int],
    hidden: Sequence[int],
    heads: str,
) -> str | None:
    """Whether the file's tensors are exactly the network the metadata declares (names, shapes,
    floating dtype), checked before the network is built."""
    expected: dict[str, tuple[int, ...]] = {}
    width = state_size
    for i, h in enumerate(hidden):
        expected[f"body.{2 * i}.weight"] = (h, width)
        expected[f"body.{2 * i}.bias"] = (h,)
        width = h
    outputs = sum(grid_shape) if heads == "factorised" else math.prod(grid_shape)
    expected["out.weight"] = (outputs, width)
    expected["out.bias"] = (outputs,)
    expected["mean"] = (state_size,)
    expected["std"] = (state_size,)
    missing = sorted(set(expected) - set(params))
    if missing:
        return f"missing tensor `{_short(missing[0])[1:-1]}`"
    extra = sorted(set(params) - set(expected))
    if extra:
        return f"unexpected tensor `{_short(extra[0])[1:-1]}`"
    for name, shape in expected.items():
        tensor = params[name]
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            return f"`{name}` is not a floating-point tensor"
        if tuple(tensor.shape) != shape:
            return f"`{name}` has shape {list(tensor.shape)}, the metadata declares {list(shape)}"
    return None


def _check_against(
    path: Path, grid: ActionGrid, state: tuple[tuple[str, int], ...], spec: Spec
) -> None:
    want = ActionGrid.from_spec(spec)
    if grid != want:
        raise PolicyFileError(
            f"{path}: the policy was trained for the grid {grid.to_json()} but spec "
            f"`{spec.name}` declares {want.to_json()}; retrain it for this spec"
        )
    declared = state_inputs(spec)
    if state != declared:
        raise PolicyFileError(
            f"{path}: the policy reads state {[f'{n}[{s}]' for n, s in state]} but spec "
            f"`{spec.name}` declares {[f'{n}[{s}]' for n, s in declared]}"
        )
