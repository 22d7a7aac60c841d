"""``torch.export.load`` without the work its deserializer repeats for every node.

Loading an exported blend is dominated by two costs that torch 2.13's deserializer pays again
for every tensor of every node, although the answers never change within one load: it
re-parses each symbolic size (``32*s79``) with ``sympy.sympify``, and it re-derives the type
hints of its schema dataclasses (``typing.get_type_hints``) for each of the ~45,000 records of
the homefeed program. Both are pure for a given input, so ``load_program`` memoises them for the
duration of one load (the parse per deserializer, so a symbol's side effects on its shape
environment still happen once, on first sight, exactly as without the cache). Measured on the
homefeed program at T=50 (857 nodes): 3-4x less load time (``benchmarks/bench_export.py``).

The caches hook into private names of ``torch._export.serde.serialize``; on a torch where they
are missing (another release), ``load_program`` is plain ``torch.export.load``. It is tested
against that plain load (the same graph, the same outputs).
"""

from __future__ import annotations

import threading
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

_LOCK = threading.Lock()


def load_program(path: Path | str, extra_files: dict[str, Any] | None = None) -> Any:
    """``torch.export.load(path, extra_files=...)``, memoising the deserializer's repeated
    work (module docstring)."""
    with _LOCK, _memoised_deserializer():
        return torch.export.load(str(path), extra_files=extra_files)


@contextmanager
def _memoised_deserializer() -> Iterator[None]:
    try:
        from torch._export.serde import serialize
    except ImportError:  # pragma: no cover - another torch
        yield
        return
    deserializer = getattr(serialize, "GraphModuleDeserializer", None)
    parse = getattr(deserializer, "_parse_sym_expr", None)
    if parse is None or getattr(serialize, "typing", None) is not typing:
        yield  # pragma: no cover - another torch: load as it is
        return

    def cached_parse(self: Any, expr_str: str, hint: Any = None) -> Any:
        cache = self.__dict__.setdefault("_blendspec_parsed", {})
        key = (expr_str, hint)
        if key not in cache:
            cache[key] = parse(self, expr_str, hint)
        return cache[key]

    deserializer._parse_sym_expr = cached_parse  # type: ignore[union-attr]
    serialize.typing = _typing_with_cached_hints()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        deserializer._parse_sym_expr = parse  # type: ignore[union-attr]
        serialize.typing = typing  # type: ignore[attr-defined]


def _typing_with_cached_hints() -> types.ModuleType:
    """A stand-in for the ``typing`` module as the deserializer's module sees it: the same
    names, with ``get_type_hints`` memoised per (class, global namespace)."""
    hints: dict[tuple[Any, int], Any] = {}
    stand_in = types.ModuleType("typing")
    stand_in.__dict__.update(typing.__dict__)

    def get_type_hints(obj: Any, globalns: Any = None, localns: Any = None, **kw: Any) -> Any:
        if localns is not None or kw:
            return typing.get_type_hints(obj, globalns, localns, **kw)
        key = (obj, id(globalns))
        if key not in hints:
            hints[key] = typing.get_type_hints(obj, globalns)
        return hints[key]

    stand_in.get_type_hints = get_type_hints  # type: ignore[attr-defined]
    return stand_in
