"""The typed execution graph (in the manner of torch.fx): one `Node` type, an operator registry with
typed ports, a `lint()`, and text/dot/json dumps that show each node's type and source position.

Shapes are symbolic over the batch `B` and the padded candidate count `N`; the slate length `T`, the
windows and the embedding sizes are compile-time integers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from blendspec.constraints import PLUGINS as CONSTRAINTS
from blendspec.diversity import PLUGINS
from blendspec.spec.diagnostics import Span
from blendspec.spec.expr import TRANSFORM_TABLE

Dim = str | int


@dataclass(frozen=True)
class Type:
    """What flows along an edge: a kind, its dims and its dtype."""

    kind: str
    dims: tuple[Dim, ...] = ()
    dtype: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}[{','.join(str(d) for d in self.dims)}]" if self.dims else self.kind


def score() -> Type:
    return Type("Score", ("B", "N"), "float32")


def mask() -> Type:
    return Type("Mask", ("B", "N"), "bool")


SCALAR = Type("Scalar", (), "float32")
CONSTRAINT = Type("Constraint")


class GraphError(Exception):
    """An operator was given inputs of the wrong type, or the graph is malformed."""


@dataclass(frozen=True)
class OpDef:
    """An operator: a one-line doc, its input ports (kinds; a trailing `*` port is variadic) and its
    result type as a function of the input types and attributes."""

    name: str
    doc: str
    ports: tuple[str, ...]
    result: Callable[[Sequence[Type], dict[str, Any]], Type]

    def check(self, types: Sequence[Type]) -> str | None:
        """Why `types` do not fit the ports, or None."""
        ports = list(self.ports)
        variadic = ports[-1].endswith("*") if ports else False
        fixed = ports[:-1] if variadic else ports
        if len(types) < len(fixed) or (not variadic and len(types) != len(fixed)):
            return f"`{self.name}` takes {len(fixed)}{'+' if variadic else ''} inputs, got {len(types)}"
        for i, given in enumerate(types):
            allowed = fixed[i] if i < len(fixed) else ports[-1].rstrip("*")
            if given.kind not in allowed.split("|"):
                return f"input {i} of `{self.name}` must be {allowed}, got {given}"
        return None


REGISTRY: dict[str, OpDef] = {}


def register(
    name: str,
    doc: str,
    ports: tuple[str, ...],
    result: Callable[[Sequence[Type], dict[str, Any]], Type],
) -> None:
    if name in REGISTRY:
        raise ValueError(f"operator {name} registered twice")
    REGISTRY[name] = OpDef(name, doc, ports, result)


def _same(types: Sequence[Type], attrs: dict[str, Any]) -> Type:
    return types[0]


def _broadcast(types: Sequence[Type], attrs: dict[str, Any]) -> Type:
    return score() if any(t.kind == "Score" for t in types) else SCALAR


def _input_type(types: Sequence[Type], attrs: dict[str, Any]) -> Type:
    kind, size = attrs["kind"], attrs.get("size")
    return {
        "score": score(),
        "embedding": Type("Embedding", ("B", "N", size), "float32"),
        "semantic_id": Type("Codes", ("B", "N", size), "int64"),
        "category": Type("Category", ("B", "N"), "int64"),
        "flag": Type("Flag", ("B", "N"), "bool"),
        "features": Type("Features", ("B", size), "float32"),
    }[kind]


def _selection(types: Sequence[Type], attrs: dict[str, Any]) -> Type:
    return Type("Selection", ("B", attrs["length"]))


def _feature_width(types: Sequence[Type], attrs: dict[str, Any]) -> Type:
    return Type("FeatureMap", ("B", "N", "F"), "float32")


def _slate(types: Sequence[Type], attrs: dict[str, Any]) -> Type:
    return Type("Slate", ("B", types[0].dims[1]))


# The registry. Each operator's torch meaning lives in blendspec.compiler.lower (`visit_<name>`).
register(
    "candidates",
    "The request's candidate mask: True for a real candidate, False for padding.",
    (),
    lambda t, a: mask(),
)
register("input", "A declared input column of the candidate dump.", (), _input_type)
register("const", "A numeric constant.", (), lambda t, a: SCALAR)
register("add", "Elementwise sum.", ("Score|Scalar", "Score|Scalar"), _broadcast)
register("sub", "Elementwise difference.", ("Score|Scalar", "Score|Scalar"), _broadcast)
register(
    "mul",
    "Elementwise product (one side is a constant).",
    ("Score|Scalar", "Score|Scalar"),
    _broadcast,
)
register("div", "Elementwise quotient by a constant.", ("Score|Scalar", "Scalar"), _broadcast)
register("neg", "Negation.", ("Score|Scalar",), _same)
# The transforms come from the one table of them (spec/expr.py); per-request ones read the mask.
for _transform in TRANSFORM_TABLE:
    register(
        _transform.name,
        _transform.doc,
        ("Score", "Mask") if _transform.per_request else ("Score",),
        _same,
    )
register(
    "weight",
    "A fixed utility weight: its default, for every request.",
    (),
    lambda t, a: Type("Weight", ("B",), "float32"),
)
register(
    "policy",
    "DRL-PUT: one action of the weight grid per request, from the state features.",
    ("Features*",),
    lambda t, a: Type("Action", ("B",), "int64"),
)
register(
    "policy_weight",
    "The value that a request's action gives one policy weight.",
    ("Action",),
    lambda t, a: Type("Weight", ("B",), "float32"),
)
register("utility", "u = Σ w_k · f_k + c, per candidate.", ("Weight|Score*",), lambda t, a: score())
register(
    "filter",
    "Drop candidates that belong to any of the given sets.",
    ("Mask", "Flag*"),
    lambda t, a: mask(),
)
register(
    "truncate",
    "Keep the top-M candidates by utility (ties to the lower index).",
    ("Score", "Mask"),
    lambda t, a: mask(),
)
register(
    "normalize",
    "The diversifier's relevance: utility after zscore, minmax or raw.",
    ("Score", "Mask"),
    _same,
)
register(
    "feature_map",
    "φ with ⟨φ_i, φ_j⟩ = Σ β_s · sim_s(i, j) (DESIGN §3.2).",
    ("Mask", "Embedding|Category|Codes*"),
    _feature_width,
)
# The in-loop constraints' operators come from their plugins (blendspec.constraints), and so do
# the diversifiers' (and `greedy`, blendspec.diversity).
for _kind in CONSTRAINTS:
    register(_kind.op, _kind.summary, (_kind.port,), lambda t, a: CONSTRAINT)
for _plugin in PLUGINS:
    register(
        _plugin.op,
        _plugin.summary,
        ("Score", "FeatureMap", "Mask", "Constraint*")
        if _plugin.uses_features
        else ("Score", "Mask", "Constraint*"),
        _selection,
    )
register(
    "slate",
    "The output: slate indices and scores, utilities and the weights applied.",
    ("Selection", "Score", "Weight*"),
    _slate,
)


@dataclass
class Node:
    """One operation: `%id = op(inputs, attrs) : type  # source position`."""

    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: dict[str, Any]
    type: Type
    span: Span | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    source_name: str
    spec_name: str
    nodes: list[Node] = field(default_factory=list)

    def add(
        self, op: str, inputs: Sequence[Node] = (), span: Span | None = None, **attrs: Any
    ) -> Node:
        opdef = REGISTRY.get(op)
        if opdef is None:
            raise GraphError(f"unknown operator `{op}`")
        types = [n.type for n in inputs]
        problem = opdef.check(types)
        if problem:
            raise GraphError(problem)
        node = Node(
            len(self.nodes),
            op,
            tuple(n.id for n in inputs),
            attrs,
            opdef.result(types, attrs),
            span,
        )
        self.nodes.append(node)
        return node

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def lint(self) -> list[str]:
        """Problems with the graph's structure; empty for a well-formed graph."""
        problems: list[str] = []
        for position, node in enumerate(self.nodes):
            where = f"%{node.id}"
            if node.id != position:
                problems.append(f"{where}: id does not match its position {position}")
            opdef = REGISTRY.get(node.op)
            if opdef is None:
                problems.append(f"{where}: unknown operator `{node.op}`")
                continue
            if any(i >= node.id for i in node.inputs):
                problems.append(f"{where}: uses a value defined later (not topologically ordered)")
                continue
            types = [self.nodes[i].type for i in node.inputs]
            problem = opdef.check(types)
            if problem:
                problems.append(f"{where}: {problem}")
            elif opdef.result(types, node.attrs) != node.type:
                problems.append(f"{where}: recorded type {node.type} differs from the inferred one")
        outputs = [n for n in self.nodes if n.op == "slate"]
        if len(outputs) != 1 or (outputs and outputs[0] is not self.nodes[-1]):
            problems.append("the graph must end in exactly one `slate` node")
        used = {i for node in self.nodes for i in node.inputs}
        for node in self.nodes[:-1]:
            if node.id not in used and node.op not in ("input", "candidates"):
                problems.append(f"%{node.id}: `{node.op}` is computed but never used")
        return problems

    # ------------------------------------------------------------ dumps

    def _where(self, node: Node) -> str:
        return (
            f"{self.source_name}:{node.span.line}:{node.span.column}"
            if node.span
            else self.source_name
        )

    def to_text(self) -> str:
        lines = [f"graph {self.spec_name}  # {self.source_name}"]
        for node in self.nodes:
            args = [f"%{i}" for i in node.inputs] + [
                f"{k}={_attr(v)}" for k, v in node.attrs.items() if v is not None
            ]
            lines.append(
                f"  %{node.id} = {node.op}({', '.join(args)}) : {node.type}  # {self._where(node)}"
            )
        lines.append(f"  return %{self.output.id}")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        lines = [
            f"digraph {json.dumps(self.spec_name)} {{",
            "  rankdir=TB;",
            "  node [shape=box, fontname=monospace];",
        ]
        for node in self.nodes:
            attrs = ", ".join(f"{k}={_attr(v)}" for k, v in node.attrs.items() if v is not None)
            label = f"%{node.id} = {node.op}({attrs})\\n{node.type}\\n{self._where(node)}"
            lines.append(f"  n{node.id} [label={json.dumps(label).replace(chr(92) * 2, chr(92))}];")
            lines += [f"  n{i} -> n{node.id};" for i in node.inputs]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "spec": self.spec_name,
            "source": self.source_name,
            "nodes": [
                {
                    "id": node.id,
                    "op": node.op,
                    "inputs": list(node.inputs),
                    "attrs": {k: _json_attr(v) for k, v in node.attrs.items()},
                    "type": str(node.type),
                    "span": None
                    if node.span is None
                    else {
                        "line": node.span.line,
                        "column": node.span.column,
                        "end_line": node.span.end_line,
                        "end_column": node.span.end_column,
                    },
                }
                for node in self.nodes
            ],
            "output": self.output.id,
        }


def _attr(value: Any) -> str:
    if isinstance(value, float):
        from blendspec.spec.emit import format_number

        return format_number(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_attr(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return repr(value)


def _json_attr(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_attr(v) for v in value]
    return value
