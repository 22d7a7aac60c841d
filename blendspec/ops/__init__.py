"""The blending operators (DESIGN §3), batched over padded requests: torch, with compiled
per-request loops for the greedy selectors where a C compiler is available (``_native``)."""

from blendspec.ops._greedy import Selection
from blendspec.ops._native import KERNELS, Kernels, kernels
from blendspec.ops.constraints import (
    CategoryCap,
    GreedyConstraints,
    NoLoopForm,
    SemanticIdPenalty,
    SoftSpacing,
)
from blendspec.ops.metrics import slate_metrics
from blendspec.ops.relevance import normalize_relevance
from blendspec.ops.select import dpp, greedy_relevance, mmr, ssd
from blendspec.ops.similarity import SimilaritySignals, feature_map
from blendspec.ops.topk import stable_order, top_by_relevance

__all__ = [
    "KERNELS",
    "CategoryCap",
    "GreedyConstraints",
    "Kernels",
    "NoLoopForm",
    "Selection",
    "SemanticIdPenalty",
    "SimilaritySignals",
    "SoftSpacing",
    "dpp",
    "feature_map",
    "greedy_relevance",
    "kernels",
    "mmr",
    "normalize_relevance",
    "slate_metrics",
    "ssd",
    "stable_order",
    "top_by_relevance",
]
