"""The in-loop constraint registry: every kind is wired into every stage through it, once."""

from __future__ import annotations

import torch

from blendspec import ops
from blendspec.compiler.compile import compile_graph
from blendspec.compiler.graph import REGISTRY
from blendspec.constraints import BY_OP, PLUGINS
from blendspec.spec.loader import load_spec
from tests.conftest import SPECS


def test_operators_are_unique_and_registered_with_their_input_port() -> None:
    assert len(BY_OP) == len(PLUGINS)
    for kind in PLUGINS:
        assert BY_OP[kind.op] is kind
        assert REGISTRY[kind.op].doc == kind.summary
        assert REGISTRY[kind.op].ports == (kind.port,)


def test_every_declared_block_compiles_to_its_node_in_order() -> None:
    """The homefeed spec declares every kind: the graph holds one node per declared block,
    kinds in the registry's order (the order the loops apply them), each reading its input."""
    loaded = load_spec(SPECS / "homefeed.blend")
    declared = [(kind, d) for kind in PLUGINS for d in kind.declared(loaded.spec)]
    assert {kind for kind, _ in declared} == set(PLUGINS)
    graph = compile_graph(loaded)
    nodes = [n for n in graph.nodes if n.op in BY_OP]
    assert [n.op for n in nodes] == [kind.op for kind, _ in declared]
    for node, (_, d) in zip(nodes, declared, strict=True):
        assert node.attrs == d.block.node_attrs(d)
        (source,) = node.inputs
        assert graph.nodes[source].attrs["name"] == d.input


def test_lowering_gives_the_ops_record_the_compiled_loops_know() -> None:
    loaded = load_spec(SPECS / "homefeed.blend")
    graph = compile_graph(loaded)
    values = {
        "Flag": torch.zeros((2, 5), dtype=torch.bool),
        "Codes": torch.zeros((2, 5, 3), dtype=torch.int64),
        "Category": torch.zeros((2, 5), dtype=torch.int64),
    }
    records = []
    for node in graph.nodes:
        if node.op in BY_OP:
            kind = BY_OP[node.op]
            record = kind.lower(node.attrs, values[kind.port])
            assert isinstance(record, ops.constraints.Constraint)
            assert type(record).native  # greedy.c knows every built-in kind
            records.append(record)
    together = ops.GreedyConstraints.of(records)
    assert len(together.items) == len(records)
