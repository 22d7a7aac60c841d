"""Lowering of the typed graph to a torch `nn.Module` that blends a padded batch of requests.

Each operator's meaning is one `visit_<op>` method (the ibis habit): an operator without one is a
`MissingLowering` error naming the operator and where the spec asked for it, raised when the module
is built, never an AttributeError halfway through a batch. Errors while running say which node was
executing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from blendspec import ops
from blendspec.graph import Graph, Node


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

    def __init__(self, slate_length: int) -> None:
        self.slate_length = slate_length

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

    def visit_log1p(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return torch.log1p(args[0])

    def visit_clip(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return torch.clamp(args[0], node.attrs["lo"], node.attrs["hi"])

    def visit_pow(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return torch.pow(args[0], node.attrs["k"])

    def visit_zscore(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return masked_zscore(args[0], args[1])

    def visit_rank(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        return masked_rank(args[0], args[1])

    # weights and utility --------------------------------------------------

    def visit_weight(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        return torch.full((mask.shape[0],), node.attrs["value"], dtype=torch.float32)

    def visit_policy(
        self, node: Node, args: Sequence[Any], batch: dict[str, Tensor], mask: Tensor
    ) -> Tensor:
        if node.attrs["file"] is None and node.attrs["exploration"] == "none":
            # No trained network and no exploration: every request takes the fallback weights.
            return torch.full((mask.shape[0],), -1, dtype=torch.int64)
        raise MissingLowering(
            "the policy network and exploration need the DRL-PUT runtime, which this version lacks"
        )

    def visit_policy_weight(self, node: Node, args: Sequence[Any], *_: Any) -> Tensor:
        action = args[0]
        if bool((action >= 0).any()):
            raise MissingLowering("decoding grid actions needs the DRL-PUT runtime")
        return torch.full(action.shape, node.attrs["default"], dtype=torch.float32)

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
        order = stable_order(utility, keep)
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

    # penalties and caps: records the greedy loops consume ---------------------

    def visit_soft_spacing(self, node: Node, args: Sequence[Any], *_: Any) -> ops.SoftSpacing:
        return ops.SoftSpacing(args[0], node.attrs["window"], node.attrs["coefficient"])

    def visit_semantic_id_penalty(
        self, node: Node, args: Sequence[Any], *_: Any
    ) -> ops.SemanticIdPenalty:
        a = node.attrs
        return ops.SemanticIdPenalty(args[0], a["window"], a["min_prefix"], a["coefficient"])

    def visit_cap(self, node: Node, args: Sequence[Any], *_: Any) -> ops.CategoryCap:
        return ops.CategoryCap(args[0], node.attrs["max"], node.attrs["window"])

    # selection ----------------------------------------------------------------

    def visit_greedy(self, node: Node, args: Sequence[Any], *_: Any) -> dict[str, Tensor]:
        relevance, keep, *constraints = args
        if not constraints:
            return top_by_relevance(relevance, keep, node.attrs["length"])
        selection = ops.greedy_relevance(
            relevance, keep, _constraints(constraints), slate_length=node.attrs["length"]
        )
        return _selection(selection)

    def visit_ssd(self, node: Node, args: Sequence[Any], *_: Any) -> dict[str, Tensor]:
        relevance, features, keep, *constraints = args
        a = node.attrs
        selection = ops.ssd(
            relevance, features, keep, _constraints(constraints),
            slate_length=a["length"], window=a["window"], theta=a["theta"], gamma=a["gamma"],
            variant=a["variant"], epsilon=a["epsilon"],
        )  # fmt: skip
        return _selection(selection)

    def visit_dpp(self, node: Node, args: Sequence[Any], *_: Any) -> dict[str, Tensor]:
        relevance, features, keep, *constraints = args
        a = node.attrs
        selection = ops.dpp(
            relevance, features, keep, _constraints(constraints),
            slate_length=a["length"], alpha=a["alpha"], window=a["window"], epsilon=a["epsilon"],
        )  # fmt: skip
        return _selection(selection)

    def visit_mmr(self, node: Node, args: Sequence[Any], *_: Any) -> dict[str, Tensor]:
        relevance, features, keep, *constraints = args
        selection = ops.mmr(
            relevance, features, keep, _constraints(constraints),
            slate_length=node.attrs["length"], lam=node.attrs["lam"],
        )  # fmt: skip
        return _selection(selection)

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
    penalties = [r for r in records if isinstance(r, ops.SemanticIdPenalty)]
    return ops.GreedyConstraints(
        spacing=tuple(r for r in records if isinstance(r, ops.SoftSpacing)),
        semantic_id=penalties[0] if penalties else None,
        caps=tuple(r for r in records if isinstance(r, ops.CategoryCap)),
    )


def _selection(selection: ops.Selection) -> dict[str, Tensor]:
    return {
        "indices": selection.indices,
        "scores": selection.scores,
        "cap_violations": selection.cap_violations,
        "early_stops": selection.early_stops,
    }


def masked_zscore(values: Tensor, mask: Tensor) -> Tensor:
    """Population z-score over the real candidates; a constant request maps to 0."""
    weights = mask.to(values.dtype)
    count = weights.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (values * weights).sum(dim=1, keepdim=True) / count
    centered = (values - mean) * weights
    std = torch.sqrt((centered * centered).sum(dim=1, keepdim=True) / count)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    return torch.where(std > 0, centered / safe, torch.zeros_like(values))


def masked_rank(values: Tensor, mask: Tensor) -> Tensor:
    """Share of the request's real candidates strictly below each value, in [0, 1]; ties share a rank."""
    padded = torch.where(mask, values, torch.full_like(values, float("inf")))
    ordered, _ = torch.sort(padded, dim=1)
    below = torch.searchsorted(ordered, padded.contiguous(), right=False).to(values.dtype)
    count = mask.sum(dim=1, keepdim=True).to(values.dtype)
    ranks = below / (count - 1).clamp(min=1)
    return torch.where(mask, ranks, torch.zeros_like(values))


def stable_order(values: Tensor, mask: Tensor) -> Tensor:
    """Candidate indices by value descending, ties to the lower index, padding last."""
    key = torch.where(mask, values, torch.full_like(values, float("-inf")))
    return torch.sort(key, dim=1, descending=True, stable=True).indices


def top_by_relevance(relevance: Tensor, mask: Tensor, length: int) -> dict[str, Tensor]:
    order = stable_order(relevance, mask)
    take = min(length, relevance.shape[1])
    indices = order[:, :take]
    valid = torch.gather(mask, 1, indices)
    scores = torch.gather(relevance, 1, indices)
    indices = torch.where(valid, indices, torch.full_like(indices, -1))
    scores = torch.where(valid, scores, torch.zeros_like(scores))
    if take < length:
        pad = (relevance.shape[0], length - take)
        indices = torch.cat([indices, torch.full(pad, -1, dtype=indices.dtype)], dim=1)
        scores = torch.cat([scores, torch.zeros(pad, dtype=scores.dtype)], dim=1)
    return {"indices": indices, "scores": scores}


class BlendModule(nn.Module):
    """A compiled spec: `forward(mask, inputs)` → slate indices, scores, utilities, applied weights.

    `mask` is [B, N] bool (True for a real candidate); `inputs` maps each declared input name to its
    padded tensor ([B, N], [B, N, D] or, for request features, [B, D]).
    """

    def __init__(self, graph: Graph, lowering: TorchLowering | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.lowering = lowering or TorchLowering(_slate_length(graph))
        self._visitors = []
        for node in graph.nodes:
            visitor = getattr(self.lowering, f"visit_{node.op}", None)
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
        return values[-1]


def _slate_length(graph: Graph) -> int:
    return int(graph.output.type.dims[1])
