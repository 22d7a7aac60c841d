"""Pure torch blending operators (DESIGN §3), batched over padded requests."""

from blendspec.ops._greedy import Selection
from blendspec.ops.constraints import (
    CategoryCap,
    GreedyConstraints,
    SemanticIdPenalty,
    SoftSpacing,
)
from blendspec.ops.metrics import slate_metrics
from blendspec.ops.relevance import normalize_relevance
from blendspec.ops.select import dpp, greedy_relevance, mmr, ssd
from blendspec.ops.similarity import SimilaritySignals, feature_map

__all__ = [
    "CategoryCap",
    "GreedyConstraints",
    "Selection",
    "SemanticIdPenalty",
    "SimilaritySignals",
    "SoftSpacing",
    "dpp",
    "feature_map",
    "greedy_relevance",
    "mmr",
    "normalize_relevance",
    "slate_metrics",
    "ssd",
]
