"""Formulas compared as weighted sums: `{term: coefficient}` forms, renaming references, and
what changed between two forms term by term.

Objectives, rewards and the inputs' places in them are matched by meaning, not by text: `a + 2 *
b` and `b * 2 + a` are the same formula, and a changed coefficient can be named. Rename detection
and the section differ both need this, so it sits below both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from blendspec.spec.emit import format_expr, format_number
from blendspec.spec.expr import linear_form as expr_linear_form
from blendspec.spec.expr import rename
from blendspec.spec.model import Expr


def rename_expr(expr: Expr, names: Mapping[str, str]) -> Expr:
    """The expression with references renamed (old name → new name)."""
    return rename(expr, names)


def linear_form(expr: Expr) -> dict[str, float]:
    """A formula as {term text: coefficient} ('' for the constant).

    Formulas are weighted sums, so two formulas mean the same when these agree: `a + 2 * b` and
    `b * 2 + a` are no change, and a changed coefficient can be shown as old → new. The form is
    the shared one (`spec/expr.py`), keyed by each term's canonical text.
    """
    return expr_linear_form(expr, format_expr)


def same_form(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """The same terms with the same coefficients (up to rounding)."""
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-12) for k in a)


def form_changes(old: Mapping[str, float], new: Mapping[str, float]) -> list[str]:
    """What changed between two linear forms, term by term, for a one-line description."""
    parts: list[str] = []
    for key in [*old, *(k for k in new if k not in old)]:
        label = "constant" if key == "" else f"`{key}`"
        if key not in new:
            parts.append(f"{label} removed")
        elif key not in old:
            parts.append(f"{label} added")
        elif not math.isclose(old[key], new[key], rel_tol=1e-12):
            if key == "":
                parts.append(f"constant {format_number(old[key])} → {format_number(new[key])}")
            else:
                parts.append(
                    f"coefficient of {label} {format_number(old[key])} → {format_number(new[key])}"
                )
    return parts
