"""How the semantic diff words values: numbers and lists the way a spec writes them, relative
changes as `(+40%)`, weights, grids, exploration and truncation in one phrase, and the JSON form
of a spec value.

The section differ writes every description through these, so a value reads the same in every
change (and in every golden); they are kept apart from the differ because they are pure text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blendspec.spec.emit import format_number
from blendspec.spec.model import Weight


def relative(old: Any, new: Any) -> float | None:
    """(new - old) / |old| for two numbers, None when undefined (old is 0, or not numbers)."""
    numbers = (int, float)
    if isinstance(old, bool) or isinstance(new, bool):
        return None
    if isinstance(old, numbers) and isinstance(new, numbers) and old != 0:
        return (new - old) / abs(old)
    return None


def fmt_value(value: Any) -> str:
    """A spec value the way the spec writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {fmt_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def fmt_relative(rel: float | None) -> str:
    """`(+40%)`; a tenfold or larger growth reads better as a factor: `(×100)`."""
    if rel is None:
        return ""
    if rel >= 9:
        return f" (×{1 + rel:.3g})"
    return f" ({rel * 100:+.3g}%)"


def grid_text(grid: Sequence[float] | None) -> str:
    """A policy grid, long ones elided: `[0, 0.5, …, 4] (9 values)`."""
    if not grid:
        return "none"
    values = [format_number(v) for v in grid]
    if len(values) > 6:
        values = [*values[:2], "…", values[-1]]
    return f"[{', '.join(values)}] ({len(grid)} values)"


def setting_text(key: str, value: Any) -> str:
    """A diversity parameter's value; an unset window is the whole slate."""
    return "whole slate" if value is None and key == "window" else fmt_value(value)


def param_text(algorithm: str, params: Mapping[str, Any]) -> str:
    """`ssd {window 5, gamma 0.3}`: an algorithm with its parameters."""
    if not params:
        return algorithm
    inner = ", ".join(f"{k} {setting_text(k, v)}" for k, v in params.items())
    return f"{algorithm} {{{inner}}}"


def exploration_text(exploration: Mapping[str, Any]) -> str:
    """`epsilon 0.05`, `softmax temperature 2`, `uniform`."""
    kind = str(exploration["kind"])
    params = [
        fmt_value(v) if k == kind else f"{k} {fmt_value(v)}"
        for k, v in exploration.items()
        if k != "kind"
    ]
    return " ".join([kind, *params])


def truncation_text(keep: int | None) -> str:
    """`top 50 by utility`, or `none`."""
    return "none" if keep is None else f"top {keep} by utility"


def weight_text(weight: Weight) -> str:
    """`1 in [0, 5]`, with its sign and policy grid when they are not the defaults."""
    lo, hi = weight.bounds
    text = f"{format_number(weight.default)} in [{format_number(lo)}, {format_number(hi)}]"
    if weight.sign != "positive":
        text += f", sign {weight.sign}"
    if weight.source == "policy":
        text += f", policy grid {grid_text(weight.grid)}"
    return text


def weight_json(weight: Weight) -> dict[str, Any]:
    """A weight's settings that differ from the defaults, as JSON."""
    return json_value(weight.model_dump(mode="json", exclude_defaults=True))


def json_value(value: Any) -> Any:
    """A JSON value: tuples as lists, recursively."""
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value
