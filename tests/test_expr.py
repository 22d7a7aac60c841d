"""The one expression core (spec/expr.py): walk, fold, renaming, linear form, evaluator and the
transform table that the checks, the compiler, the lowering and the rewards all read."""

from __future__ import annotations

import numpy as np
import pytest

from blendspec.compiler.graph import REGISTRY
from blendspec.spec.emit import format_expr
from blendspec.spec.expr import (
    TRANSFORMS,
    Fold,
    PathKey,
    evaluate,
    fold,
    fold_calls,
    linear_form,
    literal_value,
    rename,
    walk,
)
from blendspec.spec.model import BinOp, Call, Const, Expr, Neg, Ref


def _x() -> Expr:
    # 2 * clip(a, 0, 1) - -b / 4 + log1p(c)
    return BinOp(
        op="+",
        left=BinOp(
            op="-",
            left=BinOp(
                op="*",
                left=Const(value=2.0),
                right=Call(fn="clip", args=(Ref(name="a"), Const(value=0.0), Const(value=1.0))),
            ),
            right=BinOp(op="/", left=Neg(operand=Ref(name="b")), right=Const(value=4.0)),
        ),
        right=Call(fn="log1p", args=(Ref(name="c"),)),
    )


class _Trace(Fold[str]):
    """Records the order nodes are folded in and rebuilds a bracketed text."""

    def __init__(self) -> None:
        self.order: list[PathKey] = []

    def const(self, node: Const, path: PathKey) -> str:
        self.order.append(path)
        return f"{node.value:g}"

    def ref(self, node: Ref, path: PathKey) -> str:
        self.order.append(path)
        return node.name

    def neg(self, node: Neg, path: PathKey, operand: str) -> str:
        self.order.append(path)
        return f"-{operand}"

    def binop(self, node: BinOp, path: PathKey, left: str, right: str) -> str:
        self.order.append(path)
        return f"({left} {node.op} {right})"

    def transform(self, node: Call, path: PathKey, argument: str, params: tuple[Expr, ...]) -> str:
        self.order.append(path)
        return f"{node.fn}[{argument}; {', '.join(f'{literal_value(p):g}' for p in params)}]"


def test_walk_yields_every_node_with_its_path() -> None:
    paths = [path for _, path in walk(_x(), ("objectives", "o"))]
    assert paths[0] == ("objectives", "o")
    assert ("objectives", "o", "left", "left", "right", "args", 2) in paths
    assert ("objectives", "o", "left", "right", "left", "operand") in paths
    assert len(paths) == 14


def test_fold_is_bottom_up_left_to_right_and_keeps_parameters_as_expressions() -> None:
    trace = _Trace()
    text = fold(_x(), trace)
    assert text == "(((2 * clip[a; 0, 1]) - (-b / 4)) + log1p[c; ])"
    # parameters are not folded: only the transformed argument is visited
    assert ("left", "left", "right", "args", 1) not in trace.order
    assert trace.order.index(("left", "left", "right", "args", 0)) < trace.order.index(
        ("left", "left", "right")
    )
    assert trace.order[-1] == ()


def test_rename_touches_references_only() -> None:
    renamed = rename(_x(), {"a": "z", "nope": "q"})
    names = [node.name for node, _ in walk(renamed) if isinstance(node, Ref)]
    assert names == ["z", "b", "c"]
    assert rename(Const(value=1.0), {"a": "b"}) == Const(value=1.0)


def test_linear_form_reads_weighted_sums() -> None:
    form = linear_form(_x(), lambda e: type(e).__name__ + (getattr(e, "name", "") or ""))
    assert form == {"Call": 3.0, "Refb": 0.25}
    a_plus_2b = BinOp(
        op="+", left=Ref(name="a"), right=BinOp(op="*", left=Const(value=2.0), right=Ref(name="b"))
    )
    b2_plus_a = BinOp(
        op="+", left=BinOp(op="*", left=Ref(name="b"), right=Const(value=2.0)), right=Ref(name="a")
    )
    key = lambda e: e.name  # noqa: E731
    assert linear_form(a_plus_2b, key) == linear_form(b2_plus_a, key) == {"a": 1.0, "b": 2.0}


def test_evaluator_matches_numpy_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    cols = {k: rng.random(257) * 3 for k in "abc"}
    got = evaluate(_x(), cols.__getitem__, "numpy")
    want = 2.0 * np.clip(cols["a"], 0.0, 1.0) - (-cols["b"]) / 4.0 + np.log1p(cols["c"])
    assert got.tobytes() == want.tobytes()
    pow_expr = Call(fn="pow", args=(Ref(name="a"), Neg(operand=Const(value=-0.5))))
    assert evaluate(pow_expr, cols.__getitem__).tobytes() == np.power(cols["a"], 0.5).tobytes()


def test_evaluator_with_torch_namespace() -> None:
    torch = pytest.importorskip("torch")
    cols = {k: torch.linspace(0, 3, 11, dtype=torch.float64) for k in "abc"}
    got = evaluate(_x(), cols.__getitem__, "torch")
    want = 2.0 * torch.clamp(cols["a"], 0.0, 1.0) - (-cols["b"]) / 4.0 + torch.log1p(cols["c"])
    assert torch.equal(got, want)


def test_evaluator_refuses_per_request_transforms_and_computed_parameters() -> None:
    zscore = Call(fn="zscore", args=(Ref(name="a"),))
    with pytest.raises(ValueError, match="`zscore` is not supported in a reward"):
        evaluate(zscore, lambda n: np.ones(3), context="in a reward")
    computed = Call(
        fn="pow", args=(Ref(name="a"), BinOp(op="*", left=Const(value=2.0), right=Const(value=1.0)))
    )
    with pytest.raises(ValueError, match="transform parameters in a reward must be numbers"):
        evaluate(computed, lambda n: np.ones(3), context="in a reward")


def test_the_table_drives_the_graph_registry() -> None:
    for name, transform in TRANSFORMS.items():
        op = REGISTRY[name]
        assert op.doc == transform.doc
        assert op.ports == (("Score", "Mask") if transform.per_request else ("Score",))
        assert (transform.numpy is None) == transform.per_request
    assert TRANSFORMS["clip"].usage == "clip(x, lo, hi)"


class _Count(Fold[int]):
    """Counts nodes through `fold_calls`, which folds every argument of every call."""

    def const(self, node: Const, path: PathKey) -> int:
        return 1

    def ref(self, node: Ref, path: PathKey) -> int:
        return 1

    def neg(self, node: Neg, path: PathKey, operand: int) -> int:
        return operand + 1

    def binop(self, node: BinOp, path: PathKey, left: int, right: int) -> int:
        return left + right + 1

    def call(self, node: Call, path: PathKey, args: list[int]) -> int:
        return sum(args) + 1


def test_fold_calls_visits_every_argument_and_reaches_any_call() -> None:
    assert fold_calls(_x(), _Count()) == len(list(walk(_x())))
    signal = BinOp(op="*", left=Const(value=0.5), right=Call(fn="cosine", args=(Ref(name="v"),)))
    assert fold_calls(signal, _Count()) == 4
    assert format_expr(signal) == "0.5 * cosine(v)"
