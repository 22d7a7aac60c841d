"""Checked spec → typed execution graph. Every node carries the span of the spec text it came from."""

from __future__ import annotations

from blendspec.compiler.graph import Graph, Node
from blendspec.constraints import PLUGINS as CONSTRAINTS
from blendspec.spec.diagnostics import Span
from blendspec.spec.expr import TRANSFORMS, Fold, constant_value, fold
from blendspec.spec.forms import split_similarity, split_utility
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import BinOp, Call, Const, Expr, Neg, Ref, Spec
from blendspec.spec.syntax import Document, PathKey

_BINOPS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


class _ExprNodes(Fold[Node]):
    """A formula as graph nodes, through the shared fold: each node gets the span of its text;
    a transform's constant parameters become attributes named as in the transform table, and a
    per-request transform also reads the candidate mask."""

    def __init__(self, compiler: _Compiler) -> None:
        self.compiler = compiler
        self.graph = compiler.graph

    def const(self, node: Const, path: PathKey) -> Node:
        return self.graph.add("const", (), self.compiler.span(path), value=node.value)

    def ref(self, node: Ref, path: PathKey) -> Node:
        return self.compiler.values[node.name]

    def neg(self, node: Neg, path: PathKey, operand: Node) -> Node:
        return self.graph.add("neg", (operand,), self.compiler.span(path))

    def binop(self, node: BinOp, path: PathKey, left: Node, right: Node) -> Node:
        return self.graph.add(_BINOPS[node.op], (left, right), self.compiler.span(path))

    def transform(
        self, node: Call, path: PathKey, argument: Node, params: tuple[Expr, ...]
    ) -> Node:
        transform = TRANSFORMS[node.fn]
        attrs = dict(zip(transform.params, map(constant_value, params), strict=True))
        inputs = (argument, self.compiler.values["@mask"]) if transform.per_request else (argument,)
        return self.graph.add(node.fn, inputs, self.compiler.span(path), **attrs)


class _Compiler:
    def __init__(self, spec: Spec, document: Document) -> None:
        self.spec = spec
        self.document = document
        self.graph = Graph(document.source.name, spec.name)
        self.values: dict[str, Node] = {}

    def span(self, path: PathKey, *, key: bool = False) -> Span | None:
        return self.document.key_span(path) if key else self.document.span_of(path)

    def expr(self, expr: Expr, path: PathKey) -> Node:
        return fold(expr, _ExprNodes(self), path)

    def build(self) -> Graph:
        spec, g = self.spec, self.graph
        self.values["@mask"] = g.add("candidates")
        for name, declared in spec.inputs.items():
            self.values[name] = g.add(
                "input",
                (),
                self.span(("inputs", name), key=True),
                name=name,
                kind=declared.kind,
                size=declared.size,
            )
        weights = self.weights()
        terms, constant, _ = split_utility(
            spec.utility, ("utility",), set(spec.weights), set(spec.objectives) | set(spec.inputs)
        )
        used_objectives = {t.objective for t in terms}
        for name, expr in spec.objectives.items():
            if name in used_objectives:
                self.values[name] = self.expr(expr, ("objectives", name))
        utility_inputs: list[Node] = []
        for term in terms:
            utility_inputs += [weights[term.weight], self.values[term.objective]]
        utility = g.add(
            "utility",
            utility_inputs,
            self.span(("utility",)),
            terms=tuple(f"{t.weight}*{t.objective}" for t in terms),
            constant=constant,
        )
        eligible = self.values["@mask"]
        if spec.rules.filters:
            flags = [self.values[name] for name in spec.rules.filters]
            eligible = g.add(
                "filter",
                (eligible, *flags),
                self.span(("rules", "filters"), key=True),
                sets=tuple(spec.rules.filters),
            )
        if spec.rules.truncate is not None:
            eligible = g.add(
                "truncate",
                (utility, eligible),
                self.span(("rules", "truncate")),
                keep=spec.rules.truncate,
            )
        constraints = self.constraints()
        selection = self.selection(utility, eligible, constraints)
        applied = [weights[name] for name in spec.weights if name in weights]
        g.add(
            "slate",
            (selection, utility, *applied),
            self.span(("slate",)),
            weights=tuple(name for name in spec.weights if name in weights),
        )
        return g

    def weights(self) -> dict[str, Node]:
        spec, g = self.spec, self.graph
        nodes: dict[str, Node] = {}
        action: Node | None = None
        if spec.policy is not None and spec.policy_weights:
            policy = spec.policy
            action = g.add(
                "policy",
                [self.values[name] for name in policy.state],
                self.span(("policy",), key=True),
                weights=spec.policy_weights,
                grid=tuple(tuple(spec.weights[n].grid or ()) for n in spec.policy_weights),
                defaults=tuple(spec.weights[n].default for n in spec.policy_weights),
                file=policy.file,
                exploration=policy.exploration.kind,
                fallback=policy.fallback,
            )
        for axis, name in enumerate(spec.policy_weights if action is not None else ()):
            weight = spec.weights[name]
            nodes[name] = g.add(
                "policy_weight",
                (action,),
                self.span(("weights", name), key=True),
                name=name,
                axis=axis,
                default=weight.default,
            )
        for name, weight in spec.weights.items():
            if name not in nodes:
                nodes[name] = g.add(
                    "weight",
                    (),
                    self.span(("weights", name), key=True),
                    name=name,
                    value=weight.default,
                )
        return nodes

    def constraints(self) -> list[Node]:
        """One node per in-loop constraint the spec declares, kind by kind (their plugins' order,
        the order the loops apply them in)."""
        return [
            self.graph.add(
                kind.op,
                (self.values[d.input],),
                self.span(d.path, key=True),
                **d.block.node_attrs(d),
            )
            for kind in CONSTRAINTS
            for d in kind.declared(self.spec)
        ]

    def selection(self, utility: Node, eligible: Node, constraints: list[Node]) -> Node:
        """The diversifier's node: its plugin names the operator and its attributes."""
        spec, g = self.spec, self.graph
        diversity = spec.diversity
        plugin = type(diversity)
        attrs = {"length": spec.slate.length, **diversity.node_attrs()}
        span = self.span(("diversity",), key=True)
        similarity = diversity.similarity_formula()
        if similarity is None:
            return g.add(plugin.op, (utility, eligible, *constraints), span, **attrs)
        relevance = g.add(
            "normalize",
            (utility, eligible),
            self.span(("diversity", "relevance")),
            method=diversity.relevance_method(),
        )
        signals, _ = split_similarity(similarity, ("diversity", "similarity"))
        features = g.add(
            "feature_map",
            (eligible, *(self.values[s.input] for s in signals)),
            self.span(("diversity", "similarity")),
            signals=tuple(s.signal for s in signals),
            betas=tuple(s.beta for s in signals),
            bias=plugin.feature_bias,
        )
        return g.add(plugin.op, (relevance, features, eligible, *constraints), span, **attrs)


def compile_graph(loaded: LoadedSpec) -> Graph:
    graph = _Compiler(loaded.spec, loaded.document).build()
    problems = graph.lint()
    if problems:  # pragma: no cover - a compiler bug, not a user error
        raise AssertionError("compiled graph fails lint:\n" + "\n".join(problems))
    return graph
