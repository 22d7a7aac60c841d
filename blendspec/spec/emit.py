"""Canonical text of a spec in either syntax: what `blend fmt` writes and `--to` converts to.

Both emitters print the same canonical data (`canonical_data`), so DSL → spec → YAML → spec → DSL is
the identity on the canonical form. Fields equal to their default are left out, except the
diversifier's parameters, which are always spelled out because a reviewer should see every knob that
shapes the slate.

`blend fmt` formats any spec that parses (:func:`format_document`), valid or not, as ruff and black
format code with errors in it: validity is `blend validate`'s business. A spec whose model does not
validate keeps its broken parts as written, in the same layout.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Annotated, Any, get_args

import pydantic
import yaml
from pydantic import TypeAdapter

from blendspec.spec.comments import CommentBook
from blendspec.spec.diagnostics import SpecError
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


class FormulaText(str):
    """A formula, printed as text: bare in the DSL, a string in YAML. Marked so that the DSL
    emitter tells it from a string value (which it quotes unless it is a bare name)."""

    __slots__ = ()


_OMIT: Any = object()
"""A section left out of the canonical form (empty, or at its default)."""

_FORMULA_SECTIONS = ("objectives", "rewards")
_ITEM_SECTIONS = ("inputs", "objectives", "weights", "spacing", "rewards")
"""Sections that map names to items: when one item is broken, the others are still canonical."""


def canonical_data(spec: Spec) -> dict[str, Any]:
    """The YAML form of a spec, formulas as text, in the canonical key order."""
    data: dict[str, Any] = {}
    for key in Spec.model_fields:
        section = _canonical_section(key, getattr(spec, key))
        if section is not _OMIT:
            data[key] = section
    return data


def _canonical_section(key: str, value: Any) -> Any:
    """One section of a valid spec (or a section valid on its own) in canonical form."""
    if key == "name":
        return value
    if key == "slate":
        return {"length": value.length}
    if key == "inputs":
        return {name: str(declared) for name, declared in value.items()}
    if key in _FORMULA_SECTIONS:
        return {name: FormulaText(format_expr(e)) for name, e in value.items()} or _OMIT
    if key == "utility":
        return FormulaText(format_expr(value))
    if key == "diversity":
        diversity = value.model_dump(mode="python", by_alias=True)
        if "similarity" in diversity:
            diversity["similarity"] = FormulaText(format_expr(value.similarity))
        if diversity.get("window", 0) is None:
            del diversity["window"]
        return _lists(diversity)
    if key == "policy":
        if value is None:
            return _OMIT
        policy = value.model_dump(mode="python", exclude_defaults=True)
        policy["state"] = list(value.state)
        if value.exploration.kind != "none":
            policy["exploration"] = value.exploration.model_dump(mode="python")
        return _lists(policy)
    if value == Spec.model_fields[key].get_default(call_default_factory=True):
        return _OMIT
    dumped = _adapter(key).dump_python(value, mode="python", by_alias=True, exclude_defaults=True)
    return _lists(dumped)


def _canonical_item(key: str, value: Any) -> Any:
    """One item of a name → item section, valid on its own, in canonical form."""
    if key == "inputs":
        return str(value)
    if key in _FORMULA_SECTIONS:
        return FormulaText(format_expr(value))
    return _lists(value.model_dump(mode="python", by_alias=True, exclude_defaults=True))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


@functools.cache
def _adapter(key: str) -> TypeAdapter[Any]:
    """Validates one section of the spec on its own, as the model validates it in place."""
    field = Spec.model_fields[key]
    return TypeAdapter(Annotated[field.annotation, field])


@functools.cache
def _item_adapter(key: str) -> TypeAdapter[Any]:
    """Validates one item of a name → item section."""
    return TypeAdapter(get_args(Spec.model_fields[key].annotation)[1])


# ---------------------------------------------------------------- whatever parses


def format_document(document: Document) -> str:
    """What `blend fmt` writes: the canonical text of a parsed spec in its own syntax, whether or
    not the spec is valid. Semantic errors (unknown names, wrong kinds) are `blend validate`'s
    business, not the formatter's: a spec that validates is printed from its model; one that does
    not has every section (or item) that validates on its own printed in canonical form and the
    rest as written, so that formatting never changes what a spec says, valid or not."""
    data = document_data(document)
    return _dsl_text(data, document) if document.syntax == "dsl" else _yaml_text(data, document)


def document_data(document: Document) -> dict[str, Any]:
    """The canonical data of a parsed spec, valid or not (see :func:`format_document`)."""
    try:
        spec = Spec.model_validate(document.data)
    except (pydantic.ValidationError, SpecError):
        return _partly_canonical(document.data)
    return canonical_data(spec)


def _partly_canonical(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in Spec.model_fields:
        if key not in data:
            if key == "diversity":  # as a valid spec prints its default
                out[key] = {"algorithm": "none"}
            continue
        value = data[key]
        try:
            validated = _adapter(key).validate_python(value)
        except (pydantic.ValidationError, SpecError):
            out[key] = _broken_section(key, value)
            continue
        section = _canonical_section(key, validated)
        if section is not _OMIT:
            out[key] = section
    for key, value in data.items():
        if key not in Spec.model_fields:  # an unknown section (E102), as written
            out[_written_key(key)] = _as_written(value, (key,))
    return out


def _broken_section(key: str, value: Any) -> Any:
    if key not in _ITEM_SECTIONS or not isinstance(value, dict):
        return _as_written(value, (key,))
    items: dict[Any, Any] = {}
    for name, item in value.items():
        try:
            validated = _item_adapter(key).validate_python(item)
        except (pydantic.ValidationError, SpecError):
            items[_written_key(name)] = _as_written(item, (key, name))
        else:
            items[_written_key(name)] = _canonical_item(key, validated)
    return items


def _is_formula_path(path: PathKey) -> bool:
    return path in (("utility",), ("diversity", "similarity")) or (
        len(path) == 2 and path[0] in _FORMULA_SECTIONS
    )


def _as_written(value: Any, path: PathKey) -> Any:
    """A value that does not validate: its data as parsed, formulas printed as text."""
    if _is_formula_path(path):
        node = _expr_node(value)
        if node is not None:
            if isinstance(node, Const) and math.isnan(node.value):
                return node.value  # YAML `.nan`: the one constant no formula text can say
            return FormulaText(fold_calls(node, _LooseFormat()))
    if isinstance(value, dict):
        return {_written_key(k): _as_written(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_written(v, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, float) and math.isfinite(value):
        return WrittenFloat(value)
    return value


def _written_key(key: Any) -> Any:
    return WrittenFloat(key) if isinstance(key, float) and math.isfinite(key) else key


class WrittenFloat(float):
    """A float of a value that did not validate, printed so that it reads back as a float
    (`1.0`, not `1`): a validation message may name its type."""

    __slots__ = ()


def _expr_node(value: Any) -> Expr | None:
    """An expression tree from its data, without the model's range checks (a constant may be
    out of range or infinite); None unless `value` has an expression's shape throughout."""
    if not isinstance(value, dict):
        return None
    kind = value.get("kind")
    keys = set(value)
    if kind == "const" and keys == {"kind", "value"}:
        number = value["value"]
        if isinstance(number, int | float) and not isinstance(number, bool):
            return Const.model_construct(value=float(number))
    elif kind == "ref" and keys == {"kind", "name"}:
        name = value["name"]
        if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
            return Ref.model_construct(name=name)
    elif kind == "neg" and keys == {"kind", "operand"}:
        operand = _expr_node(value["operand"])
        if operand is not None:
            return Neg.model_construct(operand=operand)
    elif kind == "binop" and keys == {"kind", "op", "left", "right"} and value["op"] in _PRECEDENCE:
        left, right = _expr_node(value["left"]), _expr_node(value["right"])
        if left is not None and right is not None:
            return BinOp.model_construct(op=value["op"], left=left, right=right)
    elif kind == "call" and keys == {"kind", "fn", "args"}:
        fn, args = value["fn"], value["args"]
        if isinstance(fn, str) and NAME_PATTERN.fullmatch(fn) and isinstance(args, list | tuple):
            nodes = [_expr_node(a) for a in args]
            if all(n is not None for n in nodes):
                return Call.model_construct(fn=fn, args=tuple(nodes))
    return None


class _LooseFormat(_Format):
    """`_Format` for trees that did not validate: an infinite constant (`1e400` as written) is
    printed as a number that reads back as infinite, not as the name `inf`."""

    def const(self, node: Const, path: PathKey) -> str:
        return _number_text(node.value)


def _number_text(value: float | int) -> str:
    """A number as the DSL and formulas read it back, infinities included (`1e999`)."""
    if isinstance(value, WrittenFloat):
        return repr(float(value))
    if isinstance(value, float) and math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("NaN cannot be written as a number in the DSL")
    return format_number(value)


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
    return _dsl_text(canonical_data(spec), document)


def _dsl_text(data: dict[str, Any], document: Document | None) -> str:
    """The DSL statements of canonical data — of a valid spec, or as much of one as parsed (a
    section may be missing, a value out of range: see :func:`format_document`)."""
    out: list[Line] = []
    if "name" in data:
        out += [(f"spec {data['name']}", ("name",), True), None]
    if "slate" in data:
        out += [(f"slate {_dsl_value(data['slate']['length'])}", ("slate",), True), None]
    out += [
        (f"input {n}: {kind}", ("inputs", n), True) for n, kind in data.get("inputs", {}).items()
    ]
    if "objectives" in data:
        out.append(None)
        out += [
            (f"objective {n} = {_dsl_value(e)}", ("objectives", n), True)
            for n, e in data["objectives"].items()
        ]
    if "weights" in data:
        out.append(None)
        for name, weight in data["weights"].items():
            extra = {k: v for k, v in weight.items() if k not in ("default", "bounds")}
            lo, hi = weight["bounds"]
            text = (
                f"weight {name} = {_dsl_value(weight['default'])} "
                f"in [{_dsl_value(lo)}, {_dsl_value(hi)}]"
            )
            out.append(
                (text + (f" {_inline_block(extra)}" if extra else ""), ("weights", name), True)
            )
    out.append(None)
    if "utility" in data:
        out += [(f"utility = {_dsl_value(data['utility'])}", ("utility",), True), None]
    if "diversity" in data:
        diversity = dict(data["diversity"])
        algorithm = diversity.pop("algorithm")
        if diversity:
            out.append((f"diversity {algorithm} {{", ("diversity",), False))
            out += [
                (f"  {key} = {_dsl_value(value)}", ("diversity", key), True)
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
        out.append((f"truncate {_dsl_value(rules['truncate'])}", ("rules", "truncate"), True))
    out.append(None)
    if data.get("outcomes"):
        out.append(("outcome " + ", ".join(data["outcomes"]), ("outcomes",), True))
    out += [
        (f"reward {n} = {_dsl_value(e)}", ("rewards", n), True)
        for n, e in data.get("rewards", {}).items()
    ]
    if "policy" in data:
        out += [None, ("policy {", ("policy",), False)]
        out += [
            (f"  {k} = {_dsl_value(v)}", ("policy", k), True) for k, v in data["policy"].items()
        ]
        out.append(("}", ("policy", "}"), False))
    return _render(out, document)


def _inline_block(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {_dsl_value(v)}" for k, v in values.items()) + "}"


_EXPRESSION_VALUES = ("neg", "binop", "call")
"""Expressions that a DSL option keeps as a tree (a number or a name becomes a plain value)."""


def _dsl_value(value: Any) -> str:
    if isinstance(value, FormulaText):
        return str(value)
    if isinstance(value, dict):
        if value.get("kind") in _EXPRESSION_VALUES:
            node = _expr_node(value)  # `theta = a + 1`: an option's value the model refuses
            if node is not None:
                return fold_calls(node, _LooseFormat())
        return _inline_block(value)
    if isinstance(value, list):
        return "[" + ", ".join(_dsl_value(v) for v in value) + "]"
    if isinstance(value, str):
        # A bare name reads back as the same text; anything else needs quotes.
        return value if NAME_PATTERN.fullmatch(value) else json.dumps(value)
    return _number_text(value)


# ---------------------------------------------------------------- YAML

_FLOW_AT_TOP = ("slate", "semantic_id_penalty")


def to_yaml(spec: Spec, document: Document | None = None) -> str:
    """Canonical YAML text; the document's comments, if given, are carried over."""
    return _yaml_text(canonical_data(spec), document)


def _yaml_text(data: dict[str, Any], document: Document | None) -> str:
    lines: list[Line] = []
    for key, value in data.items():
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
    key = _yaml_scalar(path[-1], flow=True)
    if isinstance(value, dict) and value and not (flow or (len(path) > 1 and _leafy(value))):
        lines.append((f"{pad}{key}:", path, False))
        for child_key, child in value.items():
            _yaml_entry(lines, path + (child_key,), child)
    else:
        lines.append((f"{pad}{key}: {_yaml_flow(value, inner=False)}", path, True))


def _yaml_flow(value: Any, *, inner: bool = True) -> str:
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{_yaml_scalar(k, flow=True)}: {_yaml_flow(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_flow(v) for v in value) + "]"
    return _yaml_scalar(value, flow=inner)


_FLOW_INDICATORS = frozenset("[]{},")


def _yaml_scalar(value: Any, *, flow: bool = False) -> str:
    """A scalar as YAML reads it back; `flow`: inside `[...]` or `{...}`, or a mapping key,
    where the flow indicators `[]{},` end a plain scalar."""
    if isinstance(value, str):
        # Bidi controls are escaped (`\u202E`), never written raw: raw they would reorder the
        # line in an editor (W004), where the DSL had a harmless escape.
        visible = not any(char in BIDI_CONTROLS for char in value)
        try:
            plain_ok = yaml.safe_load(f"k: {value}") == {"k": value} and "," not in value
        except yaml.YAMLError:
            plain_ok = False
        if flow and not _FLOW_INDICATORS.isdisjoint(value):
            plain_ok = False
        if plain_ok and visible and value.strip() == value and value:
            return value
        quoted = yaml.safe_dump(
            str(value), default_style='"', width=float("inf"), allow_unicode=visible
        )
        return quoted.removesuffix("\n...\n").rstrip("\n")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if not isinstance(value, int | float):  # a YAML date or binary, in a spec that is invalid
        return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
    text = repr(float(value)) if isinstance(value, WrittenFloat) else format_number(value)
    if "e" in text and "." not in text:
        # YAML 1.1 (PyYAML, most editors) reads `1e-06` as text; `1.0e-06` is a float everywhere.
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text
