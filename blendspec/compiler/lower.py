"""Lowering of the typed graph to a torch `nn.Module` that blends a padded batch of requests.

Each operator's meaning is one `visit_<op>` method (the ibis habit; the transforms share one,
`visit_transform`, read off the transform table in spec/expr.py, and the diversifiers share
`visit_selection`, which hands the node to its plugin in blendspec.diversity): an operator without one is a
`MissingLowering` error naming the operator and where the spec asked for it, raised when the module
is built, never an AttributeError halfway through a batch. Errors while running say which node was
executing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from blendspec import ops
from blendspec.compiler.graph import Graph, Node
from blendspec.constraints import BY_OP as CONSTRAINT_BY_OP
from blendspec.diversity import BY_OP
from blendspec.ops.constraints import Constraint
from blendspec.ops.relevance import masked_rank, masked_zscore
from blendspec.policy.files import resolve_policy_file
from blendspec.spec.expr import TRANSFORMS

if TYPE_CHECKING:
    from blendspec.policy.network import PolicyNet
    from blendspec.spec.loader import LoadedSpec
    from blendspec.spec.model import Spec

REQUEST_SEED_KEY = "@request_seed"
"""Reserved input key: one int64 per request ``[B]`` from which the policy draws its action.

A stable hash of the request id (:func:`request_seeds`), so that a request gets the same action
alone or in any batch, in any run, on any engine; ``@`` cannot start a declared input name."""


class MissingLowering(Exception):
    """The graph uses an operator that has no torch lowering in this version."""


class NodeExecutionError(RuntimeError):
    """A node failed while running; the message names the node and its source position."""


def _where(graph: Graph, node: Node) -> str:
    position = (
        f"{graph.source_name}:{node.span.line}:{node.span.column}"
        if node.span
        else graph.source_name
    )
    return f"%{node.id} = {node.op}(…)  # {position}"


class TorchLowering:
    """The torch meaning of each operator. Values are tensors, or constraint records for penalties."""

    def __init__(
        self, slate_length: int, policy: PolicyRuntime | None = None, *, trace: bool = False
    ) -> None:
        self.slate_length = slate_length
        self.policy = policy
        # With `trace`, the selection operators record their per-step score parts and the last
        # `ops.Selection` is kept in `selection` (for `blend explain`; `blend run` never traces).
        self.trace = trace
        self.selection: ops.Selection | None = None

    # inputs ---------------------------------------------------------------

    def visit_candidates(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        return mask

    def visit_input(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        name = node.attrs["name"]
        if name not in batch:
            raise KeyError(f"the batch has no input `{name}`")
        return batch[name]

    def visit_const(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        return torch.tensor(node.attrs["value"], dtype=torch.float32)

    # arithmetic and transforms --------------------------------------------

    def visit_add(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return args[0] + args[1]

    def visit_sub(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return args[0] - args[1]

    def visit_mul(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return args[0] * args[1]

    def visit_div(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return args[0] / args[1]

    def visit_neg(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return -args[0]

    def visit_transform(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        """Every transform of the table (spec/expr.py): its torch function, with the node's
        inputs (the argument, and the mask for a per-request one) and then its parameters."""
        transform = TRANSFORMS[node.op]
        if transform.per_request:
            function = _REQUEST_TRANSFORMS[transform.torch]
        else:
            function = getattr(torch, transform.torch)
        return function(*args, *(node.attrs[p] for p in transform.params))

    # weights and utility --------------------------------------------------

    def visit_weight(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        return torch.full((mask.shape[0],), node.attrs["value"], dtype=torch.float32)

    def visit_policy(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> PolicyDecision:
        if self.policy is None:
            raise MissingLowering(
                "the policy's network and exploration are not part of the graph: build the "
                "module with `blendspec.lower.module_for(loaded)`, which loads the spec's policy "
                "file and exploration settings"
            )
        state = torch.cat([a.to(torch.float32).reshape(a.shape[0], -1) for a in args], dim=1)
        return self.policy(state, batch.get(REQUEST_SEED_KEY))

    def visit_policy_weight(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        decision: PolicyDecision = args[0]
        return decision.weights[:, node.attrs["axis"]]

    def visit_utility(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        utility = torch.full(mask.shape, node.attrs["constant"], dtype=torch.float32)
        for weight, objective in zip(args[0::2], args[1::2], strict=True):
            utility = utility + weight[:, None] * objective
        return utility

    # rules ------------------------------------------------------------------

    def visit_filter(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        keep = args[0]
        for flags in args[1:]:
            keep = keep & ~flags
        return keep

    def visit_truncate(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        utility, keep = args
        order = ops.stable_order(utility, keep)
        if torch.compiler.is_compiling():
            # torch.export: N is symbolic, so slice nothing by min(keep, N); rank instead.
            ranks = torch.arange(order.shape[1], device=order.device).expand_as(order)
            position = torch.empty_like(order).scatter_(1, order, ranks)
            return (position < node.attrs["keep"]) & keep
        count = min(node.attrs["keep"], utility.shape[1])
        top = torch.zeros_like(keep)
        top.scatter_(1, order[:, :count], True)
        return top & keep

    # selection ----------------------------------------------------------------

    def visit_normalize(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return ops.normalize_relevance(args[0], args[1], node.attrs["method"])

    def visit_feature_map(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        mask, *inputs = args
        groups: dict[str, list[tuple[Tensor, float]]] = {"cosine": [], "category": [], "prefix": []}
        for signal, beta, value in zip(
            node.attrs["signals"], node.attrs["betas"], inputs, strict=True
        ):
            groups[signal].append((value, beta))
        signals = ops.SimilaritySignals(
            embeddings=tuple(groups["cosine"]),
            categories=tuple(groups["category"]),
            semantic_ids=tuple(groups["prefix"]),
        )
        return ops.feature_map(signals, mask, bias=node.attrs["bias"])

    # in-loop constraints: records the greedy loops consume ----------------------

    def visit_constraint(self, node: Node, args: Sequence[Any], *_: Any) -> Constraint:
        """Every in-loop constraint's operator: its plugin builds the ops record."""
        return CONSTRAINT_BY_OP[node.op].lower(node.attrs, args[0])

    # selection ----------------------------------------------------------------

    def visit_selection(self, node: Node, args: Sequence[Any], *_: Any) -> dict[str, Tensor]:
        """Every diversifier's operator (and `greedy`): its plugin runs it."""
        plugin = BY_OP[node.op]
        if plugin.uses_features:
            relevance, features, keep, *constraints = args
        else:
            (relevance, keep, *constraints), features = args, None
        selection = plugin.select(
            node.attrs, relevance, features, keep,
            _constraints(constraints) if constraints else None, trace=self.trace,
        )  # fmt: skip
        return self._selection(selection)

    def _selection(self, selection: ops.Selection) -> dict[str, Tensor]:
        if self.trace:
            self.selection = selection
        return _selection_outputs(selection)

    def visit_slate(self, node: Node, args: Sequence[Any], *_: Any) -> dict[str, Tensor]:
        selection, utility, *weights = args
        indices = selection["indices"]
        picked = torch.gather(utility, 1, indices.clamp(min=0))
        picked = torch.where(indices >= 0, picked, torch.zeros_like(picked))
        applied = torch.stack(weights, dim=1) if weights else torch.zeros((utility.shape[0], 0))
        batch = indices.shape[0]
        return {
            "indices": indices,
            "scores": selection["scores"],
            "utility": picked,
            "candidate_utility": utility,
            "weights": applied,
            "cap_violations": selection.get(
                "cap_violations", torch.zeros(batch, dtype=torch.int64)
            ),
            "early_stops": selection.get("early_stops", torch.zeros(batch, dtype=torch.bool)),
        }


def _constraints(records: Sequence[Any]) -> ops.GreedyConstraints:
    return ops.GreedyConstraints.of(records)


def _selection_outputs(selection: ops.Selection) -> dict[str, Tensor]:
    return {
        "indices": selection.indices,
        "scores": selection.scores,
        "cap_violations": selection.cap_violations,
        "early_stops": selection.early_stops,
    }


_REQUEST_TRANSFORMS = {"masked_zscore": masked_zscore, "masked_rank": masked_rank}
"""The per-request transforms' torch implementations, by the names the transform table gives."""


# ------------------------------------------------------------------------------------------------
# The DRL-PUT policy at run time
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyDecision:
    """What the policy node decided for each request of a batch.

    ``action`` ``[B]`` int64 is the grid action id, or -1 where the fixed fallback weights were
    applied (no policy to act, or the policy failed); ``propensity`` ``[B]`` float32 is the
    probability the serving policy gave that action (1 for a deterministic choice and for the
    fallback), so slates can feed the next round of off-policy learning; ``fallback`` ``[B]`` bool
    marks a policy *failure* (non-finite state or network output), which the run counts;
    ``weights`` ``[B, W]`` float32 are the policy weights applied, in grid axis order.
    """

    action: Tensor
    propensity: Tensor
    fallback: Tensor
    weights: Tensor


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 it is bit-for-bit (torch has no uint64 arithmetic)."""
    return value - (1 << 64) if value >= 1 << 63 else value


_SPLITMIX_GAMMA = _signed(0x9E3779B97F4A7C15)
_SPLITMIX_M1 = _signed(0xBF58476D1CE4E5B9)
_SPLITMIX_M2 = _signed(0x94D049BB133111EB)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniform_from_seeds(seeds: Tensor) -> Tensor:
    """One uniform number in [0, 1) per int64 seed: the splitmix64 finaliser, then 53 bits.

    Pure int64 torch arithmetic (multiplication and addition wrap modulo 2^64, as splitmix64
    wants), so it runs inside an exported program and gives the same number for a seed whatever
    batch the seed is in — no generator state is shared between requests.
    """
    z = seeds.to(torch.int64) + _SPLITMIX_GAMMA
    z = (z ^ _shift_right(z, 30)) * _SPLITMIX_M1
    z = (z ^ _shift_right(z, 27)) * _SPLITMIX_M2
    z = z ^ _shift_right(z, 31)
    return _shift_right(z, 11).to(torch.float64) * (1.0 / (1 << 53))


def request_seed(request_id: str) -> int:
    """A stable non-negative int63 for a request id (BLAKE2b), the same on every machine and run
    (Python's ``hash`` is salted per process, so it cannot be used)."""
    digest = hashlib.blake2b(str(request_id).encode(), digest_size=8, person=b"blendspec.seed")
    return int.from_bytes(digest.digest(), "little") >> 1


def request_seeds(request_ids: Iterable[str]) -> Tensor:
    """The ``@request_seed`` batch entry ``[B]`` int64 for these request ids."""
    return torch.tensor([request_seed(r) for r in request_ids], dtype=torch.int64)


class PolicyRuntime(nn.Module):
    """The policy node's run time: state → action distribution → per-request sampled action.

    It holds the network (a registered submodule, so it travels with the module into a saved or
    exported program), the grid as lookup tables and the exploration as constants. The whole path
    is torch ops without data-dependent Python branches, Python RNG or loops over the batch.

    The distribution follows :meth:`blendspec.policy.runtime.LearnedPolicy.act` exactly: the base is the
    network's softmax (``kind="value"``: the one-hot argmax); ``epsilon`` mixes it with uniform,
    ``uniform`` is 1/K, ``softmax`` is the softmax of the log-probabilities over the temperature
    (a value policy stays one-hot); without exploration the served policy is the argmax, so its
    propensity is 1. Without a policy file the greedy action is the grid action nearest the
    spec's defaults, and exploration perturbs around it (the ε-around-fixed logging policy);
    without a file *and* without exploration every request takes the fallback weights.

    A request whose state or network output is not finite gets the fallback weights (the
    defaults, or with ``fallback = nearest`` the grid action nearest them), action -1, and is
    flagged as a policy failure.
    """

    def __init__(
        self,
        names: Sequence[str],
        grid: Sequence[Sequence[float]],
        defaults: Sequence[float],
        *,
        exploration: str = "none",
        epsilon: float = 0.0,
        temperature: float = 1.0,
        fallback: str = "defaults",
        net: PolicyNet | None = None,
        kind: str = "policy_gradient",
        source: str | None = None,
    ) -> None:
        super().__init__()
        from blendspec.policy.grid import ActionGrid

        if exploration not in ("none", "epsilon", "uniform", "softmax"):
            raise ValueError(f"unknown exploration `{exploration}`")
        if fallback not in ("defaults", "nearest"):
            raise ValueError(f"unknown fallback `{fallback}`")
        self.grid = ActionGrid(tuple(names), tuple(tuple(float(x) for x in v) for v in grid))
        shape = self.grid.shape
        self.size = self.grid.size
        self.exploration = exploration
        self.epsilon = float(epsilon)
        self.temperature = float(temperature)
        self.fallback_kind = fallback
        self.kind = kind
        self.source = source
        self.default_action = int(self.grid.encode([list(defaults)])[0])
        width = max(shape)
        table = torch.zeros((len(shape), width), dtype=torch.float32)
        for axis, values in enumerate(self.grid.values):
            table[axis, : len(values)] = torch.tensor(values, dtype=torch.float32)
        strides = [1] * len(shape)
        for axis in range(len(shape) - 2, -1, -1):
            strides[axis] = strides[axis + 1] * shape[axis + 1]
        fixed = (
            torch.tensor(list(defaults), dtype=torch.float32)
            if fallback == "defaults"
            else torch.tensor(self.grid.decode([self.default_action])[0], dtype=torch.float32)
        )
        self.register_buffer("grid_table", table.reshape(-1), persistent=False)
        self.register_buffer(
            "grid_offsets", torch.arange(len(shape), dtype=torch.int64) * width, persistent=False
        )
        self.register_buffer(
            "grid_strides", torch.tensor(strides, dtype=torch.int64), persistent=False
        )
        self.register_buffer("grid_sizes", torch.tensor(shape, dtype=torch.int64), persistent=False)
        self.register_buffer("fallback_weights", fixed, persistent=False)
        self.net = net
        if net is not None:
            # Served, never trained here: no autograd graph, and outputs that convert to numpy.
            net.eval().requires_grad_(False)

    @classmethod
    def from_spec(cls, spec: Spec, base_dir: Path | None = None) -> PolicyRuntime | None:
        """The spec's policy with its file loaded safely (``weights_only``) and checked against
        the spec's grid and state; None when no weight takes its value from a policy.

        Raises :class:`blendspec.policy.store.PolicyFileError` naming the file when it is missing,
        not a policy file, or made for another grid or state."""
        from blendspec.policy.grid import ActionGrid
        from blendspec.policy.runtime import load_policy

        policy = spec.policy
        if policy is None or not spec.policy_weights:
            return None
        grid = ActionGrid.from_spec(spec)
        net, kind, source = None, "policy_gradient", None
        if policy.file is not None:
            path = resolve_policy_file(policy.file, base_dir)
            learned = load_policy(path, spec)
            net, kind, source = learned.net, learned.kind, str(path)
        exploration = policy.exploration
        return cls(
            grid.names,
            grid.values,
            [spec.weights[n].default for n in grid.names],
            exploration=exploration.kind,
            epsilon=float(getattr(exploration, "epsilon", 0.0)),
            temperature=float(getattr(exploration, "temperature", 1.0)),
            fallback=policy.fallback,
            net=net,
            kind=kind,
            source=source,
        )

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> PolicyRuntime:
        """From the graph node alone: enough when there is no file and exploration needs no
        parameter (none, uniform)."""
        if attrs["file"] is not None or attrs["exploration"] not in ("none", "uniform"):
            raise MissingLowering(
                "the policy's file and exploration settings are not in the graph: build the "
                "module with `blendspec.lower.module_for(loaded)`"
            )
        return cls(
            attrs["weights"],
            attrs["grid"],
            attrs["defaults"],
            exploration=attrs["exploration"],
            fallback=attrs["fallback"],
        )

    @property
    def acts(self) -> bool:
        """Whether anything chooses actions (a network, or exploration around the defaults)."""
        return self.net is not None or self.exploration != "none"

    @property
    def stochastic(self) -> bool:
        """Whether the action is drawn (and so needs ``@request_seed``)."""
        return self.exploration != "none"

    def decode(self, action: Tensor) -> Tensor:
        """Action ids ``[B]`` → grid weight values ``[B, W]`` (row-major, last axis fastest)."""
        levels = (action.clamp(min=0)[:, None] // self.grid_strides) % self.grid_sizes
        return self.grid_table[self.grid_offsets + levels]

    def scores(self, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(scores ``[B, K]`` float64, greedy action ``[B]``, ok ``[B]``): the network's output
        (log-probabilities, or predicted rewards for a value policy) with failed rows zeroed."""
        batch = state.shape[0]
        finite = torch.isfinite(state).all(dim=1)
        if self.net is None:
            scores = torch.zeros((batch, self.size), dtype=torch.float64)
            greedy = torch.full((batch,), self.default_action, dtype=torch.int64)
            return scores, greedy, finite
        safe = torch.where(finite[:, None], state, torch.zeros_like(state))
        scores = self.net(safe, log_softmax=self.kind != "value").to(torch.float64)
        ok = finite & torch.isfinite(scores).all(dim=1)
        scores = torch.where(ok[:, None], scores, torch.zeros_like(scores))
        return scores, scores.argmax(dim=1), ok

    def distribution(self, state: Tensor) -> Tensor:
        """The serving distribution over the K actions ``[B, K]`` float64, exploration included."""
        scores, greedy, _ = self.scores(state)
        return self._distribution(scores, greedy)

    def _distribution(self, scores: Tensor, greedy: Tensor) -> Tensor:
        batch, k = scores.shape[0], self.size
        onehot = torch.zeros((batch, k), dtype=torch.float64).scatter(
            1, greedy[:, None], torch.ones((batch, 1), dtype=torch.float64)
        )
        learned = self.net is not None and self.kind != "value"
        if self.exploration == "uniform":
            return torch.full((batch, k), 1.0 / k, dtype=torch.float64)
        if self.exploration == "epsilon":
            base = torch.softmax(scores, dim=1) if learned else onehot
            return (1.0 - self.epsilon) * base + self.epsilon / k
        if self.exploration == "softmax" and learned:
            return torch.softmax(scores / self.temperature, dim=1)
        return onehot

    def forward(self, state: Tensor, seeds: Tensor | None = None) -> PolicyDecision:
        batch = state.shape[0]
        if not self.acts:
            return PolicyDecision(
                action=torch.full((batch,), -1, dtype=torch.int64),
                propensity=torch.ones(batch, dtype=torch.float32),
                fallback=torch.zeros(batch, dtype=torch.bool),
                weights=self.fallback_weights.expand(batch, -1),
            )
        scores, greedy, ok = self.scores(state)
        probs = self._distribution(scores, greedy)
        if self.stochastic:
            if seeds is None:
                raise ValueError(
                    f"the policy draws its action (exploration `{self.exploration}`), so the "
                    f"batch needs `{REQUEST_SEED_KEY}`: one int64 per request, see "
                    "blendspec.lower.request_seeds"
                )
            u = uniform_from_seeds(seeds)
            cdf = torch.cumsum(probs, dim=1)
            # Inverse CDF: the first action whose cumulative probability exceeds u (an action of
            # probability 0 is never drawn, whatever u).
            action = (cdf <= u[:, None] * cdf[:, -1:]).sum(dim=1).clamp(max=self.size - 1)
        else:
            action = greedy
        propensity = torch.gather(probs, 1, action[:, None]).squeeze(1)
        return PolicyDecision(
            action=torch.where(ok, action, torch.full_like(action, -1)),
            propensity=torch.where(ok, propensity, torch.ones_like(propensity)).to(torch.float32),
            fallback=~ok,
            weights=torch.where(ok[:, None], self.decode(action), self.fallback_weights),
        )


def module_for(loaded: LoadedSpec) -> BlendModule:
    """The compiled module of a loaded spec, with its policy (file and exploration) attached.

    Raises :class:`blendspec.policy.store.PolicyFileError` when the spec's policy file cannot be used.
    """
    from blendspec.compiler.compile import compile_graph

    graph = compile_graph(loaded)
    policy = PolicyRuntime.from_spec(loaded.spec, loaded.base_dir)
    return BlendModule(graph, TorchLowering(_slate_length(graph), policy))


class BlendModule(nn.Module):
    """A compiled spec: `forward(mask, inputs)` → slate indices, scores, utilities, applied weights.

    `mask` is [B, N] bool (True for a real candidate); `inputs` maps each declared input name to its
    padded tensor ([B, N], [B, N, D] or, for request features, [B, D]). With a policy weight
    source the outputs also hold `action` [B] int64, `propensity` [B] float32 and
    `policy_fallback` [B] bool; a policy that draws its action reads `@request_seed` [B] int64
    (:func:`request_seeds`). Build such a module with :func:`module_for`, which attaches the
    spec's policy file and exploration; the runtime is a registered submodule (`policy_runtime`).
    """

    def __init__(self, graph: Graph, lowering: TorchLowering | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.lowering = lowering or TorchLowering(_slate_length(graph))
        policies = [i for i, node in enumerate(graph.nodes) if node.op == "policy"]
        self._policy_index = policies[0] if policies else None
        runtime = getattr(self.lowering, "policy", None)
        if self._policy_index is not None and runtime is None:
            # Without a file and with parameter-free exploration the graph node says it all.
            attrs = graph.nodes[self._policy_index].attrs
            if attrs["file"] is None and attrs["exploration"] in ("none", "uniform"):
                runtime = self.lowering.policy = PolicyRuntime.from_attrs(attrs)
        # Registered here so that the network's parameters travel with the module.
        self.policy_runtime = runtime
        self._visitors = []
        for node in graph.nodes:
            visitor = getattr(self.lowering, f"visit_{node.op}", None)
            if visitor is None and node.op in TRANSFORMS:  # one method for the whole table
                visitor = self.lowering.visit_transform
            if visitor is None and node.op in BY_OP:  # one method for every diversifier
                visitor = self.lowering.visit_selection
            if visitor is None and node.op in CONSTRAINT_BY_OP:  # and one for every constraint
                visitor = self.lowering.visit_constraint
            if visitor is None:
                raise MissingLowering(
                    f"operator `{node.op}` has no torch lowering in this version "
                    f"(needed by {_where(graph, node)})"
                )
            self._visitors.append(visitor)

    def forward(self, mask: Tensor, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        values: list[Any] = []
        for node, visitor in zip(self.graph.nodes, self._visitors, strict=True):
            args = [values[i] for i in node.inputs]
            try:
                values.append(visitor(node, args, inputs, mask))
            except MissingLowering as error:
                raise MissingLowering(
                    f"{error} (while executing {_where(self.graph, node)})"
                ) from None
            except Exception as error:
                raise NodeExecutionError(
                    f"while executing {_where(self.graph, node)}: {error}"
                ) from error
        out = values[-1]
        if self._policy_index is not None:
            decision = values[self._policy_index]
            if isinstance(decision, PolicyDecision):
                out = {
                    **out,
                    "action": decision.action,
                    "propensity": decision.propensity,
                    "policy_fallback": decision.fallback,
                }
        return out


def _slate_length(graph: Graph) -> int:
    return int(graph.output.type.dims[1])
