"""The shapes that formulas must take, read off expression trees.

The utility must be Σ weight × objective + constant and the similarity Σ β × signal(input): this
module reads those structures off an expression, reporting each deviation as a `Problem` at the
path of the offending node. The checks turn problems into diagnostics; the compiler reads the
structures of a spec that already passed the checks. The walk, constants and the transform table
live in `spec/expr.py` (re-exported here, where callers have always found them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from blendspec.spec.expr import (
    SIGNALS,
    TRANSFORMS,
    PathKey,
    constant_value,
    is_constant,
    refs,
    walk,
)
from blendspec.spec.model import BinOp, Call, Const, Expr, Ref

__all__ = [
    "SIGNALS",
    "TRANSFORMS",
    "PathKey",
    "Problem",
    "SignalTerm",
    "UtilityTerm",
    "constant_value",
    "is_constant",
    "linear_problems",
    "refs",
    "split_similarity",
    "split_utility",
    "walk",
]


@dataclass(frozen=True)
class Problem:
    path: PathKey
    code: str
    message: str
    help: str | None = None


@dataclass(frozen=True)
class UtilityTerm:
    weight: str
    objective: str
    path: PathKey


@dataclass(frozen=True)
class SignalTerm:
    signal: str
    input: str
    beta: float
    path: PathKey


def _sum_terms(
    expr: Expr, path: PathKey, sign: float = 1.0
) -> Iterator[tuple[float, Expr, PathKey]]:
    """Flatten a chain of + and - into signed terms."""
    if isinstance(expr, BinOp) and expr.op in "+-":
        yield from _sum_terms(expr.left, path + ("left",), sign)
        yield from _sum_terms(expr.right, path + ("right",), sign if expr.op == "+" else -sign)
    else:
        yield sign, expr, path


def split_utility(
    expr: Expr, path: PathKey, weights: set[str], objectives: set[str]
) -> tuple[list[UtilityTerm], float, list[Problem]]:
    """Read Σ w × f + c. `objectives` holds every name a weight may multiply (objectives, scores)."""
    terms: list[UtilityTerm] = []
    constant = 0.0
    problems: list[Problem] = []
    for sign, term, term_path in _sum_terms(expr, path):
        if isinstance(term, Const):
            constant += sign * term.value
            continue
        pair = _weight_times_objective(term, weights, objectives)
        if pair is None:
            problems.append(
                Problem(
                    term_path,
                    "E202",
                    "each utility term must be a weight times an objective, as in `w_click * click`",
                    _utility_help(term, weights, objectives),
                )
            )
            continue
        if sign < 0:
            problems.append(
                Problem(
                    term_path,
                    "E202",
                    f"the term `{pair[0]} * {pair[1]}` is subtracted",
                    "add it and give the weight negative bounds (`sign = negative`) instead",
                )
            )
            continue
        terms.append(UtilityTerm(pair[0], pair[1], term_path))
    return terms, constant, problems


def _weight_times_objective(
    term: Expr, weights: set[str], objectives: set[str]
) -> tuple[str, str] | None:
    if not (isinstance(term, BinOp) and term.op == "*"):
        return None
    left, right = term.left, term.right
    if not (isinstance(left, Ref) and isinstance(right, Ref)):
        return None
    if left.name in weights and right.name not in weights:
        return left.name, right.name
    if right.name in weights and left.name not in weights:
        return right.name, left.name
    return None


def _utility_help(term: Expr, weights: set[str], objectives: set[str]) -> str | None:
    if isinstance(term, Ref) and term.name in weights:
        return f"the weight `{term.name}` multiplies nothing; write `{term.name} * <objective>`"
    if isinstance(term, Ref) and term.name in objectives:
        return f"give `{term.name}` a weight, as in `w_{term.name} * {term.name}`"
    return "declare the formula as an objective and weight it here"


def split_similarity(expr: Expr, path: PathKey) -> tuple[list[SignalTerm], list[Problem]]:
    """Read Σ β × signal(input) with constant β ≥ 0 (a PSD kernel needs non-negative weights)."""
    terms: list[SignalTerm] = []
    problems: list[Problem] = []
    for sign, term, term_path in _sum_terms(expr, path):
        beta, call, call_path = 1.0, term, term_path
        if isinstance(term, BinOp) and term.op == "*":
            if isinstance(term.left, Const) and isinstance(term.right, Call):
                beta, call, call_path = term.left.value, term.right, term_path + ("right",)
            elif isinstance(term.right, Const) and isinstance(term.left, Call):
                beta, call, call_path = term.right.value, term.left, term_path + ("left",)
        beta *= sign
        if not isinstance(call, Call) or call.fn not in SIGNALS:
            problems.append(
                Problem(
                    term_path,
                    "E202",
                    "each similarity term must be a constant times a signal, as in `0.5 * cosine(visual)`",
                    "signals: " + ", ".join(f"{fn}({kind} input)" for fn, kind in SIGNALS.items()),
                )
            )
            continue
        if len(call.args) != 1 or not isinstance(call.args[0], Ref):
            problems.append(Problem(call_path, "E203", f"`{call.fn}` takes exactly one input name"))
            continue
        if beta < 0:
            problems.append(
                Problem(
                    term_path,
                    "E100",
                    f"the weight of `{call.fn}({call.args[0].name})` is negative",
                    "similarity weights must be ≥ 0 so the kernel stays positive semi-definite",
                )
            )
            continue
        terms.append(SignalTerm(call.fn, call.args[0].name, beta, call_path + ("args", 0)))
    return terms, problems


def linear_problems(expr: Expr, path: PathKey) -> Iterator[Problem]:
    """A formula must be a weighted sum of (transformed) signals: no products of two signals."""
    for node, node_path in walk(expr, path):
        if (
            isinstance(node, BinOp)
            and node.op == "*"
            and not (is_constant(node.left) or is_constant(node.right))
        ):
            yield Problem(
                node_path,
                "E202",
                "multiplying two signals is not a weighted sum",
                "one side of `*` must be a constant",
            )
        if isinstance(node, BinOp) and node.op == "/":
            if not is_constant(node.right):
                yield Problem(node_path, "E202", "only division by a constant is allowed")
            elif constant_value(node.right) == 0:
                yield Problem(node_path + ("right",), "E100", "division by zero")
        if isinstance(node, Call):
            yield from _call_problems(node, node_path)


def _call_problems(node: Call, path: PathKey) -> Iterator[Problem]:
    from blendspec.spec.diagnostics import did_you_mean

    if node.fn in SIGNALS:
        yield Problem(
            path + ("fn",),
            "E203",
            f"`{node.fn}` is a similarity signal; it belongs in `diversity.similarity`",
        )
        return
    if node.fn not in TRANSFORMS:
        yield Problem(
            path + ("fn",),
            "E203",
            f"unknown transform `{node.fn}`",
            did_you_mean(node.fn, TRANSFORMS) or "transforms: " + ", ".join(TRANSFORMS),
        )
        return
    transform = TRANSFORMS[node.fn]
    params = len(transform.params)
    if len(node.args) != params + 1:
        yield Problem(
            path,
            "E203",
            f"`{node.fn}` takes {params + 1} argument{'s' if params else ''}, got {len(node.args)}",
            f"write `{transform.usage}`",
        )
        return
    for i, arg in enumerate(node.args[1:], start=1):
        if not is_constant(arg):
            yield Problem(
                path + ("args", i), "E203", f"parameter {i} of `{node.fn}` must be a number"
            )
            return
    values = [constant_value(arg) for arg in node.args[1:]]
    if node.fn == "clip" and values[0] >= values[1]:
        yield Problem(path, "E203", f"`clip` needs lo < hi, got {values[0]:g} and {values[1]:g}")
    if node.fn == "pow" and values[0] <= 0:
        yield Problem(path + ("args", 1), "E203", "`pow` needs an exponent > 0 to stay monotone")
