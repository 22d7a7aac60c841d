"""Canonical text of a spec in either syntax: what `blend fmt` writes and `--to` converts to.

Both emitters print the same canonical data (`canonical_data`), so DSL → spec → YAML → spec → DSL is
the identity on the canonical form. Fields equal to their default are left out, except the
diversifier's parameters, which are always spelled out because a reviewer should see every knob that
shapes the slate.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from blendspec.spec.comments import CommentBook
from blendspec.spec.expr import Fold, fold_calls
from blendspec.spec.model import NAME_PATTERN, BinOp, Call, Const, Expr, Neg, Ref, Spec
from blendspec.spec.syntax import BIDI_CONTROLS, Document, PathKey

# ---------------------------------------------------------------- expressions

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_UNARY = 3
_ATOM = 4


def format_number(value: float | int) -> str:
    """Whole numbers as written; other floats by repr, the shortest text that reads back exact."""
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers in a spec")
    if isinstance(value, int):
        return str(value)  # an int is never routed through a float: no digit is ever lost
    if value == 0 and math.copysign(1.0, value) < 0:
        return "-0.0"  # `0` would read back as +0.0: keep the sign, as repr does
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _precedence(expr: Expr) -> int:
    if isinstance(expr, BinOp):
        return _PRECEDENCE[expr.op]
    if isinstance(expr, Neg) or (isinstance(expr, Const) and expr.value < 0):
        return _UNARY
    return _ATOM


def format_expr(expr: Expr) -> str:
    """Minimal parentheses that still parse back to the very same tree."""
    return fold_calls(expr, _Format())


class _Format(Fold[str]):
    """The text of each node from its children's texts (the shared fold of spec/expr.py); a
    child is parenthesised when its precedence is lower than its place needs."""

    def const(self, node: Const, path: PathKey) -> str:
        return format_number(node.value)

    def ref(self, node: Ref, path: PathKey) -> str:
        return node.name

    def call(self, node: Call, path: PathKey, args: list[str]) -> str:
        return f"{node.fn}({', '.join(args)})"

    def neg(self, node: Neg, path: PathKey, operand: str) -> str:
        return f"-({operand})" if _precedence(node.operand) < _UNARY else f"-{operand}"

    def binop(self, node: BinOp, path: PathKey, left: str, right: str) -> str:
        precedence = _PRECEDENCE[node.op]
        if _precedence(node.left) < precedence:
            left = f"({left})"
        if _precedence(node.right) <= precedence:
            right = f"({right})"
        return f"{left} {node.op} {right}"


# ---------------------------------------------------------------- canonical data


def canonical_data(spec: Spec) -> dict[str, Any]:
    """The YAML form of a spec, formulas as text, in the canonical key order."""
    data = spec.model_dump(mode="python", by_alias=True, exclude_defaults=True)
    data["slate"] = {"length": spec.slate.length}
    data["inputs"] = {name: str(declared) for name, declared in spec.inputs.items()}
    if spec.objectives:
        data["objectives"] = {n: format_expr(e) for n, e in spec.objectives.items()}
    if spec.rewards:
        data["rewards"] = {n: format_expr(e) for n, e in spec.rewards.items()}
    data["utility"] = format_expr(spec.utility)
    diversity = spec.diversity.model_dump(mode="python", by_alias=True)
    if "similarity" in diversity:
        diversity["similarity"] = format_expr(spec.diversity.similarity)  # type: ignore[union-attr]
    if diversity.get("window", 0) is None:
        del diversity["window"]
    data["diversity"] = diversity
    if spec.policy is not None:
        policy = spec.policy.model_dump(mode="python", exclude_defaults=True)
        policy["state"] = list(spec.policy.state)
        if spec.policy.exploration.kind != "none":
            policy["exploration"] = spec.policy.exploration.model_dump(mode="python")
        data["policy"] = policy
    order = list(Spec.model_fields)
    return {key: _lists(data[key]) for key in order if key in data}


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


# ---------------------------------------------------------------- DSL


Line = tuple[str, PathKey, bool] | None
"""One emitted line: its text, the spec path it shows, and whether it also shows that path's
descendants (a one-line block). None is a blank line between sections."""


def _render(lines: list[Line], document: Document | None) -> str:
    book = CommentBook.of(document)
    out: list[str] = []
    for line in lines:
        if line is None:
            if out and out[-1] != "":
                out.append("")
            continue
        text, path, collapsed = line
        indent = text[: len(text) - len(text.lstrip())]
        out += book.line(text, path, indent=indent, collapsed=collapsed)
    rest = book.finish()
    if rest:
        out += ["", *rest]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def to_dsl(spec: Spec, document: Document | None = None) -> str:
    """Canonical DSL text; the document's comments, if given, are carried over."""
    data = canonical_data(spec)
    out: list[Line] = [(f"spec {spec.name}", ("name",), True), None]
    out += [(f"slate {spec.slate.length}", ("slate",), True), None]
    out += [(f"input {n}: {kind}", ("inputs", n), True) for n, kind in data["inputs"].items()]
    if "objectives" in data:
        out.append(None)
        out += [
            (f"objective {n} = {e}", ("objectives", n), True) for n, e in data["objectives"].items()
        ]
    if "weights" in data:
        out.append(None)
        for name, weight in data["weights"].items():
            extra = {k: v for k, v in weight.items() if k not in ("default", "bounds")}
            lo, hi = weight["bounds"]
            text = (
                f"weight {name} = {format_number(weight['default'])} "
                f"in [{format_number(lo)}, {format_number(hi)}]"
            )
            out.append(
                (text + (f" {_inline_block(extra)}" if extra else ""), ("weights", name), True)
            )
    out += [None, (f"utility = {data['utility']}", ("utility",), True), None]
    diversity = dict(data["diversity"])
    algorithm = diversity.pop("algorithm")
    if diversity:
        out.append((f"diversity {algorithm} {{", ("diversity",), False))
        out += [
            (
                f"  {key} = {value if key == 'similarity' else _dsl_value(value)}",
                ("diversity", key),
                True,
            )
            for key, value in diversity.items()
        ]
        out.append(("}", ("diversity", "}"), False))
    else:
        out.append((f"diversity {algorithm}", ("diversity",), True))
    out.append(None)
    out += [
        (f"spacing {n} {_inline_block(v)}", ("spacing", n), True)
        for n, v in data.get("spacing", {}).items()
    ]
    if "semantic_id_penalty" in data:
        block = _inline_block(data["semantic_id_penalty"])
        out.append((f"semantic_id_penalty {block}", ("semantic_id_penalty",), True))
    out.append(None)
    rules = data.get("rules", {})
    out += [
        (f"filter {n}", ("rules", "filters", i), True)
        for i, n in enumerate(rules.get("filters", []))
    ]
    out += [
        (f"cap {n} {_inline_block(c)}", ("rules", "caps", n), True)
        for n, c in rules.get("caps", {}).items()
    ]
    if "truncate" in rules:
        out.append((f"truncate {rules['truncate']}", ("rules", "truncate"), True))
    out.append(None)
    if data.get("outcomes"):
        out.append(("outcome " + ", ".join(data["outcomes"]), ("outcomes",), True))
    out += [(f"reward {n} = {e}", ("rewards", n), True) for n, e in data.get("rewards", {}).items()]
    if "policy" in data:
        out += [None, ("policy {", ("policy",), False)]
        out += [
            (f"  {k} = {_dsl_value(v)}", ("policy", k), True) for k, v in data["policy"].items()
        ]
        out.append(("}", ("policy", "}"), False))
    return _render(out, document)


def _inline_block(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {_dsl_value(v)}" for k, v in values.items()) + "}"


def _dsl_value(value: Any) -> str:
    if isinstance(value, dict):
        return _inline_block(value)
    if isinstance(value, list):
        return "[" + ", ".join(_dsl_value(v) for v in value) + "]"
    if isinstance(value, str):
        # A bare name reads back as the same text; anything else needs quotes.
        return value if NAME_PATTERN.fullmatch(value) else json.dumps(value)
    return format_number(value)


# ---------------------------------------------------------------- YAML

_FLOW_AT_TOP = ("slate", "semantic_id_penalty")


def to_yaml(spec: Spec, document: Document | None = None) -> str:
    """Canonical YAML text; the document's comments, if given, are carried over."""
    lines: list[Line] = []
    for key, value in canonical_data(spec).items():
        _yaml_entry(lines, (key,), value, flow=key in _FLOW_AT_TOP)
    return _render(lines, document)


def _leafy(value: Any) -> bool:
    """A mapping of scalars and scalar lists, printed on one line below the top level."""
    return isinstance(value, dict) and all(
        not isinstance(v, dict | list) or _scalar_list(v) for v in value.values()
    )


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, dict | list) for v in value)


def _yaml_entry(lines: list[Line], path: PathKey, value: Any, *, flow: bool = False) -> None:
    pad = "  " * (len(path) - 1)
    key = _yaml_scalar(path[-1])
    if isinstance(value, dict) and value and not (flow or (len(path) > 1 and _leafy(value))):
        lines.append((f"{pad}{key}:", path, False))
        for child_key, child in value.items():
            _yaml_entry(lines, path + (child_key,), child)
    else:
        lines.append((f"{pad}{key}: {_yaml_flow(value)}", path, True))


def _yaml_flow(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{_yaml_scalar(k)}: {_yaml_flow(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_flow(v) for v in value) + "]"
    return _yaml_scalar(value)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str):
        # Bidi controls are escaped (`\u202E`), never written raw: raw they would reorder the
        # line in an editor (W004), where the DSL had a harmless escape.
        visible = not any(char in BIDI_CONTROLS for char in value)
        try:
            plain_ok = yaml.safe_load(f"k: {value}") == {"k": value} and "," not in value
        except yaml.YAMLError:
            plain_ok = False
        if plain_ok and visible and value.strip() == value and value:
            return value
        quoted = yaml.safe_dump(value, default_style='"', width=float("inf"), allow_unicode=visible)
        return quoted.removesuffix("\n...\n").rstrip("\n")
    if value is None:
        return "null"
    text = format_number(value)
    if "e" in text and "." not in text:
        # YAML 1.1 (PyYAML, most editors) reads `1e-06` as text; `1.0e-06` is a float everywhere.
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text
