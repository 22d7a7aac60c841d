"""The one expression core: the transform table, the walk, the fold, renaming, constants, the
linear form and the evaluator.

Formulas (objectives, rewards, similarity) are small trees of `Const`, `Ref`, `Neg`, `BinOp` and
`Call`. Checking, compiling, diffing and scoring logs all read these trees; they used to each carry
their own recursion and their own idea of which functions exist. Here is the single place that
knows both, so a new transform is one `TRANSFORMS` row and every reader picks it up. Torch-free:
the evaluator imports its array namespace (numpy, torch) by name only when it is called.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from blendspec.spec.model import BinOp, Call, Const, Expr, Neg, Ref

PathKey = tuple[str | int, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class Transform:
    """One monotone transform: its constant parameters and how each layer computes it.

    `params` name the constants after the transformed argument (they become graph attributes of
    the same names); `per_request` transforms read the request's candidate mask, so they need a
    whole request (the graph passes the mask; a per-row reward cannot use them). `numpy` and
    `torch` name the implementation: a function of that module for elementwise transforms,
    a function of `blendspec.compiler.lower` for per-request ones (`numpy` is None: no
    per-row meaning).
    """

    name: str
    doc: str
    params: tuple[str, ...]
    numpy: str | None
    torch: str
    per_request: bool = False

    @property
    def usage(self) -> str:
        return f"{self.name}({', '.join(('x', *self.params))})"


TRANSFORM_TABLE: tuple[Transform, ...] = (
    Transform("log1p", "log(1 + x), for non-negative predictions.", (), "log1p", "log1p"),
    Transform("clip", "x clipped to [lo, hi].", ("lo", "hi"), "clip", "clamp"),
    Transform("pow", "x to the power k > 0 (monotone for x ≥ 0).", ("k",), "power", "pow"),
    Transform(
        "zscore",
        "Per-request standardisation over real candidates (0 when constant).",
        (),
        None,
        "masked_zscore",
        per_request=True,
    ),
    Transform(
        "rank",
        "Per-request rank in [0, 1]: the share of real candidates strictly below.",
        (),
        None,
        "masked_rank",
        per_request=True,
    ),
)
TRANSFORMS: dict[str, Transform] = {t.name: t for t in TRANSFORM_TABLE}
"""Transforms by name, in the order they are listed to users."""

SIGNALS: dict[str, str] = {"cosine": "embedding", "category": "category", "prefix": "semantic_id"}
"""Similarity signals and the input kind each one reads."""

# ---------------------------------------------------------------- walking


def walk(expr: Expr, path: PathKey = ()) -> Iterator[tuple[Expr, PathKey]]:
    """Every node of an expression, pre-order, with the path the front ends recorded its span
    under (so a problem found at a node can point at its text)."""
    yield expr, path
    if isinstance(expr, Neg):
        yield from walk(expr.operand, path + ("operand",))
    elif isinstance(expr, BinOp):
        yield from walk(expr.left, path + ("left",))
        yield from walk(expr.right, path + ("right",))
    elif isinstance(expr, Call):
        for i, arg in enumerate(expr.args):
            yield from walk(arg, path + ("args", i))


def refs(expr: Expr, path: PathKey = ()) -> Iterator[tuple[str, PathKey]]:
    """The names an expression reads, each with its path."""
    for node, node_path in walk(expr, path):
        if isinstance(node, Ref):
            yield node.name, node_path


class Fold(Generic[T]):
    """A bottom-up fold over a formula, one method per node kind.

    With `fold`, a transform folds its first argument only and its constant parameters are handed
    over as expressions (`transform`), so each reader decides how strictly to read them and no
    parameter turns into a value of its own (the compiler must not add graph nodes for them): for
    checked formulas. With `fold_calls`, every argument of every call is folded (`call`): for any
    tree, signals and unknown functions included (printing). Children are folded left to right
    before their parent, which fixes the order of side effects (graph node ids).
    """

    def const(self, node: Const, path: PathKey) -> T:
        raise NotImplementedError

    def ref(self, node: Ref, path: PathKey) -> T:
        raise NotImplementedError

    def neg(self, node: Neg, path: PathKey, operand: T) -> T:
        raise NotImplementedError

    def binop(self, node: BinOp, path: PathKey, left: T, right: T) -> T:
        raise NotImplementedError

    def transform(self, node: Call, path: PathKey, argument: T, params: tuple[Expr, ...]) -> T:
        raise NotImplementedError

    def call(self, node: Call, path: PathKey, args: list[T]) -> T:
        raise NotImplementedError


def fold(expr: Expr, visitor: Fold[T], path: PathKey = ()) -> T:
    """Fold a checked formula with `visitor`, transforms through `Fold.transform`."""
    return _fold(expr, visitor, path, False)


def fold_calls(expr: Expr, visitor: Fold[T], path: PathKey = ()) -> T:
    """Fold any expression with `visitor`, calls through `Fold.call` with all arguments folded."""
    return _fold(expr, visitor, path, True)


def _fold(expr: Expr, visitor: Fold[T], path: PathKey, calls: bool) -> T:
    if isinstance(expr, Const):
        return visitor.const(expr, path)
    if isinstance(expr, Ref):
        return visitor.ref(expr, path)
    if isinstance(expr, Neg):
        return visitor.neg(expr, path, _fold(expr.operand, visitor, path + ("operand",), calls))
    if isinstance(expr, BinOp):
        left = _fold(expr.left, visitor, path + ("left",), calls)
        right = _fold(expr.right, visitor, path + ("right",), calls)
        return visitor.binop(expr, path, left, right)
    if isinstance(expr, Call):
        if calls:
            args = [_fold(a, visitor, path + ("args", i), calls) for i, a in enumerate(expr.args)]
            return visitor.call(expr, path, args)
        argument = _fold(expr.args[0], visitor, path + ("args", 0), calls)
        return visitor.transform(expr, path, argument, tuple(expr.args[1:]))
    raise TypeError(f"not an expression: {expr!r}")


def rename(expr: Expr, names: Mapping[str, str]) -> Expr:
    """The expression with references renamed (old name → new name); all else kept as is."""
    return fold_calls(expr, _Rename(names))


class _Rename(Fold[Expr]):
    """Rebuilds the tree with renamed references; leaves (and unrenamed references) are reused."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = names

    def const(self, node: Const, path: PathKey) -> Expr:
        return node

    def ref(self, node: Ref, path: PathKey) -> Expr:
        return Ref(name=self.names[node.name]) if node.name in self.names else node

    def neg(self, node: Neg, path: PathKey, operand: Expr) -> Expr:
        return Neg(operand=operand)

    def binop(self, node: BinOp, path: PathKey, left: Expr, right: Expr) -> Expr:
        return BinOp(op=node.op, left=left, right=right)

    def call(self, node: Call, path: PathKey, args: list[Expr]) -> Expr:
        return Call(fn=node.fn, args=tuple(args))


# ---------------------------------------------------------------- constants


def is_constant(expr: Expr) -> bool:
    """No reference and no call anywhere below: the value is known without data."""
    return all(not isinstance(node, Ref | Call) for node, _ in walk(expr))


def constant_value(expr: Expr) -> float:
    """Evaluate a constant expression (only numbers and arithmetic; never Python code).

    Division by zero gives NaN rather than raising: the checks report it at its place.
    """
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Neg):
        return -constant_value(expr.operand)
    if isinstance(expr, BinOp):
        left, right = constant_value(expr.left), constant_value(expr.right)
        if expr.op == "/" and right == 0:
            return float("nan")
        return arithmetic(expr.op, left, right)
    raise ValueError("not a constant expression")


def arithmetic(op: str, left: Any, right: Any) -> Any:
    """One binary operator on numbers or arrays: the one meaning of `+ - * /` in formulas."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return left / right


def literal_value(expr: Expr, error: str = "not a number") -> float:
    """A number as written: a literal, possibly negated (no arithmetic); `error` otherwise."""
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Neg):
        return -literal_value(expr.operand, error)
    raise ValueError(error)


# ---------------------------------------------------------------- linear form


def linear_form(expr: Expr, term_key: Callable[[Expr], str]) -> dict[str, float]:
    """A formula as {term key: coefficient} ('' for the constant), zero coefficients dropped.

    Formulas are weighted sums, so two formulas mean the same when these agree: `a + 2 * b` and
    `b * 2 + a` give one form. `term_key` names a non-linear term (the canonical text, so the key
    is also what a reader sees).
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
            acc[term_key(node)] += scale

    visit(expr, 1.0)
    return {k: v for k, v in acc.items() if v != 0}


# ---------------------------------------------------------------- evaluation


class _Evaluate(Fold[Any]):
    """Per-row values: numbers stay Python floats, references come from `lookup`, transforms run
    the namespace's implementation named in the table."""

    def __init__(self, lookup: Callable[[str], Any], namespace: str, context: str) -> None:
        self.lookup = lookup
        self.namespace = namespace
        self.module = importlib.import_module(namespace)
        self.context = context

    def const(self, node: Const, path: PathKey) -> Any:
        return node.value

    def ref(self, node: Ref, path: PathKey) -> Any:
        return self.lookup(node.name)

    def neg(self, node: Neg, path: PathKey, operand: Any) -> Any:
        return -operand

    def binop(self, node: BinOp, path: PathKey, left: Any, right: Any) -> Any:
        return arithmetic(node.op, left, right)

    def transform(self, node: Call, path: PathKey, argument: Any, params: tuple[Expr, ...]) -> Any:
        spec = TRANSFORMS.get(node.fn)
        name = None if spec is None or spec.per_request else getattr(spec, self.namespace, None)
        if name is None:
            raise ValueError(
                f"`{node.fn}` is not supported {self.context} (it needs a whole request)"
            )
        error = f"transform parameters {self.context} must be numbers"
        values = [literal_value(p, error) for p in params]
        return getattr(self.module, name)(argument, *values)


def evaluate(
    expr: Expr,
    lookup: Callable[[str], Any],
    namespace: str = "numpy",
    *,
    context: str = "per row",
) -> Any:
    """A formula's value row by row: `lookup` gives each referenced name's array (or number).

    `namespace` is the array module ("numpy" or "torch") whose functions the transform table
    names; it is imported here, when asked for, so the spec layer stays torch-free. Transforms
    that need a whole request (zscore, rank) have no per-row value and raise ValueError; so do
    parameters that are not plain numbers. `context` says where, in those messages.
    """
    return fold(expr, _Evaluate(lookup, namespace, context))
