"""Formulas compared as weighted sums: `{term: coefficient}` forms, renaming references, and
what changed between two forms term by term.

Objectives, rewards and the inputs' places in them are matched by meaning, not by text: `a + 2 *
b` and `b * 2 + a` are the same formula, and a changed coefficient can be named. Rename detection
and the section differ both need this, so it sits below both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from blendspec.spec.emit import format_expr, format_number
from blendspec.spec.forms import constant_value, is_constant
from blendspec.spec.model import BinOp, Call, Const, Expr, Neg, Ref


def rename_expr(expr: Expr, names: Mapping[str, str]) -> Expr:
    """The expression with references renamed (old name → new name)."""
    if isinstance(expr, Ref):
        return Ref(name=names[expr.name]) if expr.name in names else expr
    if isinstance(expr, Neg):
        return Neg(operand=rename_expr(expr.operand, names))
    if isinstance(expr, BinOp):
        return BinOp(
            op=expr.op, left=rename_expr(expr.left, names), right=rename_expr(expr.right, names)
        )
    if isinstance(expr, Call):
        return Call(fn=expr.fn, args=tuple(rename_expr(a, names) for a in expr.args))
    return expr


def linear_form(expr: Expr) -> dict[str, float]:
    """A formula as {term text: coefficient} ('' for the constant).

    Formulas are weighted sums, so two formulas mean the same when these agree: `a + 2 * b` and
    `b * 2 + a` are no change, and a changed coefficient can be shown as old → new.
    """
    acc: dict[str, float] = defaultdict(float)

    def visit(node: Expr, scale: float) -> None:
        if isinstance(node, Const):
            acc[""] += scale * node.value
        elif isinstance(node, Neg):
            visit(node.operand, -scale)
        elif isinstance(node, BinOp) and node.op in "+-":
            visit(node.left, scale)
            visit(node.right, scale if node.op == "+" else -scale)
        elif isinstance(node, BinOp) and node.op == "*" and is_constant(node.left):
            visit(node.right, scale * constant_value(node.left))
        elif isinstance(node, BinOp) and node.op == "*" and is_constant(node.right):
            visit(node.left, scale * constant_value(node.right))
        elif (
            isinstance(node, BinOp)
            and node.op == "/"
            and is_constant(node.right)
            and constant_value(node.right) != 0
        ):
            visit(node.left, scale / constant_value(node.right))
        else:
            acc[format_expr(node)] += scale

    visit(expr, 1.0)
    return {k: v for k, v in acc.items() if v != 0}


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
