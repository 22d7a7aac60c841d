"""A seeded recommender world: the ground truth behind the demo, the tests and policy learning.

Real logs cannot tell us what *would* have happened under another slate, so blendspec ships a
small, explicit world whose truth is known. It has three parts:

* **Items** in a two-level topic taxonomy, with visual, text and graph embeddings that share the
  topic structure (cluster centre plus per-modality noise, and a per-item latent shared across
  modalities), a share of visual near-duplicates ("reposts"), 4-level semantic IDs from
  hierarchical k-means on the embeddings, sensitive flags that concentrate in a few topics, a rare
  ``blocked`` flag and an ads ``bid``. Hidden per-item traits (quality, click-bait, depth,
  saveability, hide-ability) drive the true response; the embeddings only partly reveal them.
* **Users** in segments with latent topic interests, a latent taste vector and a response style;
  each request carries a 32-dim ``user_state`` — a *noisy* view of segment, interests and session
  context, so a policy has to infer the segment rather than read it off.
* **The response model** (:meth:`World.respond`): position bias; topic fatigue within a short
  window (same topic, and near-duplicate visuals) plus satiation over the whole slate, which
  lower clicks and, more, long clicks; and a cost for sensitive items shown close to each other,
  which raises hides and lowers engagement.
* **Predictions** ``p_click, p_save, p_longclick, p_hide`` are noisy versions of the *isolated*
  per-candidate probabilities (shown alone, first slot): they know nothing about the slate, so
  diversity and spacing have something to win. And, like production models shared by all
  users, they are calibrated on the population and capture only part of each segment's own
  style (``WorldConfig.prediction_personalisation``), so per-request weights have something to
  win too: with perfectly personalised predictions the reward's own weights would be optimal
  for everyone.

Segments (:data:`DEFAULT_SEGMENTS`) and what each wants from the blending layer; this is the
structure a per-request weight policy (DRL-PUT, issue 5) can exploit and fixed weights cannot.
Measured on the default world with the reward ``click + 2 long_click - 5 hide``: with top-50 by
``p_click + w_l p_longclick + w_h p_hide`` (tests/test_simulate.py) the per-segment best weights
beat the best common ones by about 18%; through specs/ads.blend (MMR, a topic cap; its
10 x 10 grid over w_ctr and w_long_ctr at w_value 0, fixed w_hide -2) by about 16%
(benchmarks/bench_policy.py prints the figure on the full 1,000-action grid).

0. ``clicker`` (35%) — click-happy and drawn by click-bait, rarely long-clicks (and not more
   on deep items), saves or hides, hardly fatigues, scrolls far. Wants the *click weight* and
   nothing else: a long-click or hide weight buys deep, less click-baity items and costs it
   clicks (best on the test grid: w_l 0, w_h 0; on ads.blend: w_ctr 3, w_long_ctr 0).
1. ``saver`` (20%) — saves often and item-dependently (saveability is topic-driven): wants a
   *higher save weight* when the reward counts saves; moderate fatigue. Close to the common
   best otherwise.
2. ``long_reader`` (25%) — long clicks frequent and driven by item depth, which is
   anti-correlated with click-bait; click-bait puts it off. The population's click model,
   dominated by clickers, chases exactly the items it avoids, so it wants the click weight
   *low* against the long-click and hide weights (test grid: w_l 8, w_h -40; ads.blend:
   w_ctr 0).
3. ``fatigued`` (20%) — easily fatigued and hide-prone, scrolls least: repetition and clustered
   sensitive content hurt it most, and its hides depend strongly on the item. Wants *more
   diversity and spacing* (gains most from MMR) and a *large negative hide weight* (w_h -40).

Everything is deterministic given the seeds: request ``i`` of ``requests(seed=s)`` draws from its
own generator seeded by ``(s, i)``, so it does not depend on how many requests are generated, on
chunking, or on the order of generation.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:  # pyarrow is only needed to write dumps; the world itself is pure numpy.
    import pyarrow as pa

__all__ = [
    "DEFAULT_SEGMENTS",
    "DUMP_COLUMNS",
    "OUTCOMES",
    "SHARD_MANIFEST",
    "DumpInfo",
    "Request",
    "ResponseConfig",
    "Scores",
    "SegmentStyle",
    "SlateOutcomes",
    "World",
    "WorldConfig",
    "dump_schema",
    "write_dump",
]

DUMP_COLUMNS: tuple[str, ...] = (
    "request_id",
    "candidate_id",
    "p_click",
    "p_save",
    "p_longclick",
    "p_hide",
    "bid",
    "visual",
    "text",
    "graph",
    "sid",
    "topic",
    "quality_risk",
    "beauty_filter",
    "blocked",
    "user_state",
)
"""Columns of a candidate dump, in order (DESIGN §4 long format; names match specs/homefeed)."""

OUTCOMES: tuple[str, ...] = ("click", "long_click", "save", "hide", "conversion", "revenue")
"""Outcome names of :class:`SlateOutcomes`; ``revenue`` is the sum of ``bid`` over clicks."""

_CHAIN_LINKS: tuple[str, ...] = (
    "_exam",
    "_hide_if_seen",
    "_click_if_kept",
    "_long_if_click",
    "_save_if_click",
    "_conv_if_click",
)
"""Conditional probabilities of each link of the response chain (:meth:`World.chain_batch`),
which :meth:`World.respond` samples link by link."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentStyle:
    """How one user segment responds; coefficients are on the logit scale.

    ``*_bias`` set the base rate, the item coefficients set how much the item's hidden traits
    matter (a coefficient near 0 makes that outcome flat across items, so weighting its
    prediction only adds noise), and the ``fatigue_*`` / ``sensitive_*`` coefficients set how much
    the slate's composition matters to this segment.
    """

    name: str
    share: float
    click_bias: float
    affinity: float  # topic interest -> click
    clickbait: float  # item click-bait -> click
    long_bias: float  # long click given click
    depth: float  # item depth -> long click given click
    save_bias: float  # save given click
    saveability: float  # item saveability -> save given click
    hide_bias: float
    hideability: float  # item hide-ability (risk, filters, bait) -> hide
    fatigue_click: float
    fatigue_long: float
    fatigue_hide: float
    sensitive_hide: float  # clustered sensitive items -> hide
    sensitive_engagement: float  # clustered sensitive items -> lower click and long click
    satiation: float  # repeats of a topic anywhere earlier in the slate -> lower click
    patience: float  # position-bias scale: larger scrolls further


DEFAULT_SEGMENTS: tuple[SegmentStyle, ...] = (
    SegmentStyle(
        name="clicker",
        share=0.35,
        click_bias=-4.0,
        affinity=0.45,
        clickbait=1.6,
        long_bias=-4.0,
        depth=0.0,
        save_bias=-4.0,
        saveability=0.2,
        hide_bias=-6.0,
        hideability=0.6,
        fatigue_click=0.2,
        fatigue_long=0.4,
        fatigue_hide=0.05,
        sensitive_hide=0.4,
        sensitive_engagement=0.1,
        satiation=0.1,
        patience=12.0,
    ),
    SegmentStyle(
        name="saver",
        share=0.2,
        click_bias=-4.3,
        affinity=0.5,
        clickbait=0.3,
        long_bias=-1.6,
        depth=0.5,
        save_bias=-1.3,
        saveability=1.4,
        hide_bias=-4.6,
        hideability=0.6,
        fatigue_click=0.6,
        fatigue_long=1.0,
        fatigue_hide=0.2,
        sensitive_hide=0.8,
        sensitive_engagement=0.3,
        satiation=0.25,
        patience=8.0,
    ),
    SegmentStyle(
        name="long_reader",
        share=0.25,
        click_bias=-4.4,
        affinity=0.55,
        clickbait=-0.8,
        long_bias=0.5,
        depth=2.5,
        save_bias=-2.8,
        saveability=0.3,
        hide_bias=-4.6,
        hideability=0.6,
        fatigue_click=0.6,
        fatigue_long=1.4,
        fatigue_hide=0.2,
        sensitive_hide=0.8,
        sensitive_engagement=0.3,
        satiation=0.3,
        patience=6.0,
    ),
    SegmentStyle(
        name="fatigued",
        share=0.2,
        click_bias=-4.0,
        affinity=0.5,
        clickbait=0.3,
        long_bias=-1.4,
        depth=0.6,
        save_bias=-2.8,
        saveability=0.3,
        hide_bias=-3.6,
        hideability=1.8,
        fatigue_click=1.2,
        fatigue_long=1.8,
        fatigue_hide=0.7,
        sensitive_hide=2.0,
        sensitive_engagement=0.8,
        satiation=0.5,
        patience=5.0,
    ),
)


@dataclass(frozen=True)
class ResponseConfig:
    """Slate-level effects of :meth:`World.respond` (shared by all segments, scaled per segment)."""

    fatigue_window: int = 5  # previous slots that count towards topic fatigue (weight 1/d)
    super_topic_fatigue: float = 0.3  # a sibling topic (same parent) counts this much
    duplicate_cosine: float = 0.9  # visual cosine from which two items count as near-duplicates
    duplicate_fatigue: float = 1.0  # a full near-duplicate counts this much on top of its topic
    sensitive_window: int = 6  # previous slots that count towards sensitive clustering (1/d)
    blocked_hide: float = 4.0  # logit bonus to hide for a blocked item that reached the slate
    position_power: float = 0.8  # examination = (1 + k / patience) ** -power at 0-based slot k
    session_fatigue: float = 1.0  # fatigue scales with (0.5 + session_fatigue * session depth)


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and noise levels of a :class:`World`; the defaults are the benchmark world."""

    seed: int = 0
    n_items: int = 20_000
    n_super_topics: int = 8
    topics_per_super: int = 5
    n_users: int = 10_000
    visual_dim: int = 256
    text_dim: int = 384
    graph_dim: int = 128
    latent_dim: int = 16  # per-item latent shared by the modalities, and user taste space
    state_dim: int = 32
    sid_branching: tuple[int, ...] = (8, 8, 8, 8)  # codebook size per semantic-ID level
    sid_dim: int = 32  # PCA dimension the semantic-ID clustering runs in
    duplicate_share: float = 0.15  # items that are visual near-duplicates of another
    blocked_rate: float = 0.004
    prediction_noise: float = 0.5  # std of the logit-scale noise on model predictions
    # How much of a segment's own response style the (shared) prediction models capture: 1 means
    # per-user calibrated predictions, 0 population-average ones. See World.request.
    prediction_personalisation: float = 0.1
    state_noise: float = 0.5  # std of the noise on the segment part of user_state
    exploration: float = 0.15  # share of retrieval mass spread uniformly over all items
    interest_concentration: float = 0.2  # Dirichlet alpha of user topic interests
    segments: tuple[SegmentStyle, ...] = DEFAULT_SEGMENTS
    response: ResponseConfig = field(default_factory=ResponseConfig)

    @property
    def n_topics(self) -> int:
        return self.n_super_topics * self.topics_per_super


# --------------------------------------------------------------------------------------------
# Requests and outcomes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scores:
    """Per-candidate probabilities (float32, aligned with ``Request.candidate_ids``).

    All four are *isolated* probabilities: the candidate shown alone in the first slot. ``save``
    and ``longclick`` are unconditional (they include the click).
    """

    click: np.ndarray
    save: np.ndarray
    longclick: np.ndarray
    hide: np.ndarray


@dataclass(frozen=True, slots=True)
class Request:
    """One request: a user, its state and a candidate set with predictions and hidden truth.

    ``candidate_ids`` are world item ids (unique within the request) and are what a dump writes as
    ``candidate_id`` and what :meth:`World.respond` takes back. ``truth`` is for tests and
    on-policy evaluation only; a policy may only look at ``user_state`` and ``predicted``.
    """

    request_id: str
    index: int
    seed: int
    user: int
    segment: int
    session_depth: float
    user_state: np.ndarray  # float32 [state_dim]
    candidate_ids: np.ndarray  # int64 [N]
    predicted: Scores
    truth: Scores
    # Logit-scale components the response model perturbs; float64 [5, N]:
    # click, long|click, save|click, hide, conversion|click.
    logits: np.ndarray = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.candidate_ids.shape[0])


@dataclass(frozen=True, slots=True)
class SlateOutcomes:
    """What a user did with one slate: sampled per-slot outcomes and their expectations.

    ``sampled[name]`` holds per-slot draws (int8, or float64 for ``revenue``); ``expected[name]``
    the per-slot expected values under the same model (no sampling noise), which is what
    low-variance on-policy evaluation should average.
    """

    candidate_ids: np.ndarray
    sampled: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]

    @property
    def totals(self) -> dict[str, float]:
        """Per-request sampled counts (``revenue`` is a sum of bids)."""
        return {k: float(v.sum()) for k, v in self.sampled.items()}

    @property
    def expected_totals(self) -> dict[str, float]:
        return {k: float(v.sum()) for k, v in self.expected.items()}

    def reward(self, weights: Mapping[str, float], *, expected: bool = True) -> float:
        """A linear reward over outcome totals, e.g. ``{"click": 1, "long_click": 2, "hide": -5}``."""
        totals = self.expected_totals if expected else self.totals
        unknown = set(weights) - set(totals)
        if unknown:
            raise KeyError(f"unknown outcome(s) {sorted(unknown)}; known: {list(OUTCOMES)}")
        return float(sum(w * totals[k] for k, w in weights.items()))


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _hierarchical_codes(
    x: np.ndarray, branching: Sequence[int], rng: np.random.Generator, iters: int = 12
) -> np.ndarray:
    """Semantic IDs by hierarchical k-means: level ``l`` splits every level-``l-1`` cluster.

    All clusters of a level are solved at once (centres ``[groups, k, d]``), so the cost is a few
    dense passes per level rather than one Python loop per cluster. A prefix of the code tuple
    therefore names a cluster of similar items, which is what the semantic-ID penalty relies on.
    """
    n, d = x.shape
    codes = np.zeros((n, len(branching)), dtype=np.int64)
    group = np.zeros(n, dtype=np.int64)
    n_groups = 1
    sq = np.einsum("nd,nd->n", x, x)
    for level, k in enumerate(branching):
        sizes = np.bincount(group, minlength=n_groups)
        order = np.lexsort((rng.random(n), group))
        starts = np.searchsorted(group[order], np.arange(n_groups))
        pick = starts[:, None] + (np.arange(k)[None, :] % np.maximum(sizes, 1)[:, None])
        centres = x[order[np.minimum(pick, n - 1)]]  # [G, k, d]
        assign = np.zeros(n, dtype=np.int64)
        for _ in range(iters):
            c = centres[group]  # [n, k, d]
            d2 = sq[:, None] - 2.0 * np.einsum("nd,nkd->nk", x, c) + np.einsum("nkd,nkd->nk", c, c)
            assign = np.argmin(d2, axis=1)
            flat = group * k + assign
            counts = np.bincount(flat, minlength=n_groups * k).astype(np.float64)
            sums = np.stack(
                [np.bincount(flat, weights=x[:, j], minlength=n_groups * k) for j in range(d)],
                axis=1,
            )
            filled = counts > 0
            new = centres.reshape(n_groups * k, d).copy()
            new[filled] = sums[filled] / counts[filled, None]
            centres = new.reshape(n_groups, k, d)
        codes[:, level] = assign
        group = group * k + assign
        n_groups *= k
    return codes


class World:
    """Items, users and the response model; immutable after construction.

    Build it once (1-2 s for the default 20k items, mostly the semantic-ID clustering) and share
    it: requests and responses only read its tables, and it pickles (for worker processes).
    Item tables are public (``visual``, ``sid``, ``item_topic``, flags, ``bid``, and the hidden
    traits ``quality``, ``bait``, ``depth``, ``saveability``, ``hideability``) for analysis and
    tests; a blending policy must only use what a dump carries.
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = cfg = config or WorldConfig()
        if cfg.n_topics < 2 or cfg.n_items < cfg.n_topics:
            raise ValueError("a world needs at least 2 topics and one item per topic")
        rng = np.random.default_rng([cfg.seed, 0x5EED])
        self._build_topics(rng)
        self._build_items(rng)
        self._build_users(rng)

    @classmethod
    def default(cls, seed: int = 0) -> World:
        """The benchmark world (default :class:`WorldConfig`) with the given seed."""
        return cls(WorldConfig(seed=seed))

    # -- construction ------------------------------------------------------------------------

    def _build_topics(self, rng: np.random.Generator) -> None:
        cfg = self.config
        nt = cfg.n_topics
        self.topic_names: tuple[str, ...] = tuple(f"t{t:02d}" for t in range(nt))
        self.topic_parent = np.arange(nt, dtype=np.int64) // cfg.topics_per_super
        # Zipf-like topic sizes, so some topics are big and some niche.
        popularity = 1.0 / (1.0 + rng.permutation(nt)) ** 0.7
        self.topic_popularity = popularity / popularity.sum()
        # Sensitive content concentrates: one parent topic is "beauty", a few topics are risky.
        beauty_parent = int(rng.integers(cfg.n_super_topics))
        self.beauty_rate = np.full(nt, 0.02)
        kids = np.flatnonzero(self.topic_parent == beauty_parent)
        self.beauty_rate[kids] = np.linspace(0.6, 0.2, kids.size)
        self.risk_rate = np.full(nt, 0.03)
        risky = rng.choice(nt, size=max(1, nt // 10), replace=False)
        self.risk_rate[risky] = 0.35
        # Topic-level tendencies of the hidden item traits.
        self._topic_bait = rng.normal(0.0, 0.5, nt)
        self._topic_depth = rng.normal(0.0, 0.8, nt)
        self._topic_save = rng.normal(0.0, 0.9, nt)
        self._topic_bid = rng.normal(0.0, 0.5, nt)

    def _modality(
        self,
        rng: np.random.Generator,
        dim: int,
        topic: np.ndarray,
        latent: np.ndarray,
        latent_scale: float,
        noise: float,
    ) -> np.ndarray:
        cfg = self.config
        f32 = np.float32
        parents = _unit_rows(rng.standard_normal((cfg.n_super_topics, dim), dtype=f32))
        centres = _unit_rows(
            parents[self.topic_parent]
            + f32(0.8 / dim**0.5) * rng.standard_normal((cfg.n_topics, dim), dtype=f32)
        )
        mix = rng.standard_normal((cfg.latent_dim, dim), dtype=f32)
        mix *= f32(latent_scale / (cfg.latent_dim * dim) ** 0.5)
        x = rng.standard_normal((topic.size, dim), dtype=f32)
        x *= f32(noise / dim**0.5)
        x += centres[topic]
        x += latent.astype(f32) @ mix
        return _unit_rows(x)

    def _build_items(self, rng: np.random.Generator) -> None:
        cfg = self.config
        n = cfg.n_items
        nt = cfg.n_topics
        # Every topic gets at least one item; the rest follow popularity.
        topic = np.concatenate(
            [np.arange(nt), rng.choice(nt, size=n - nt, p=self.topic_popularity)]
        )
        topic = rng.permutation(topic).astype(np.int64)
        self.item_topic = topic
        self.topic_counts = np.bincount(topic, minlength=nt)
        self._inv_topic_count = (1.0 / self.topic_counts[topic]).astype(np.float32)
        # Reposts: a share of items are near-duplicates of an original of their topic (originals
        # are never reposts themselves, so a repost stays close to its source). A repost shares
        # its source's content: visual embedding (up to jitter), latent, flags and hidden traits.
        is_dup = rng.random(n) < cfg.duplicate_share
        originals = np.flatnonzero(~is_dup)
        originals = originals[np.argsort(topic[originals], kind="stable")]
        o_start = np.searchsorted(topic[originals], np.arange(nt))
        o_count = np.bincount(topic[originals], minlength=nt)
        dup = np.flatnonzero(is_dup & (o_count[topic] > 0))
        pick = (rng.random(dup.size) * o_count[topic[dup]]).astype(np.int64)
        src = originals[o_start[topic[dup]] + pick]
        self.duplicate_of = np.full(n, -1, dtype=np.int64)
        self.duplicate_of[dup] = src

        latent = rng.standard_normal((n, cfg.latent_dim))
        latent[dup] = latent[src] + 0.3 * rng.standard_normal((dup.size, cfg.latent_dim))
        self.item_latent = latent
        self._latent32 = latent.astype(np.float32)
        self.visual = self._modality(rng, cfg.visual_dim, topic, latent, 0.6, 0.7)
        self.text = self._modality(rng, cfg.text_dim, topic, latent, 0.5, 0.6)
        self.graph = self._modality(rng, cfg.graph_dim, topic, latent, 1.0, 0.6)
        jitter = rng.standard_normal((dup.size, cfg.visual_dim), dtype=np.float32)
        jitter *= np.float32(0.15 / cfg.visual_dim**0.5)
        self.visual[dup] = _unit_rows(self.visual[src] + jitter)
        # Dumps carry un-normalised embeddings (real ones are), so consumers must normalise.
        self.norms = np.exp(rng.normal(0.0, 0.2, (3, n))).astype(np.float32)

        def inherit(x: np.ndarray, noise: float) -> np.ndarray:
            x[dup] = x[src] + (noise * rng.standard_normal(dup.size) if noise else 0)
            return x

        self.quality_risk = inherit(rng.random(n) < self.risk_rate[topic], 0.0)
        self.beauty_filter = inherit(rng.random(n) < self.beauty_rate[topic], 0.0)
        self.blocked = rng.random(n) < np.where(self.quality_risk, 8.0, 1.0) * cfg.blocked_rate
        # Hidden traits. Risky content is click-baity; deep content is not.
        self.quality = inherit(rng.normal(0.0, 0.5, n), 0.2)
        self.bait = inherit(
            self._topic_bait[topic] + rng.normal(0.0, 1.0, n) + 0.8 * self.quality_risk, 0.3
        )
        self.depth = inherit(
            self._topic_depth[topic] + rng.normal(0.0, 0.6, n) - 0.6 * self.bait, 0.3
        )
        self.saveability = inherit(self._topic_save[topic] + rng.normal(0.0, 0.7, n), 0.3)
        self.hideability = (
            rng.normal(0.0, 0.5, n)
            + 1.4 * self.quality_risk
            + 0.5 * self.beauty_filter
            + 0.3 * self.bait
        )
        self.conversion = rng.normal(-2.5, 0.7, n)
        self.bid = np.exp(self._topic_bid[topic] + rng.normal(0.0, 0.6, n)).astype(np.float32)

        # Semantic IDs: hierarchical k-means in the top principal components of the joint
        # embedding (the role an RQ-VAE's latent plays in production).
        x = np.concatenate(
            [0.4**0.5 * self.visual, 0.4**0.5 * self.text, 0.2**0.5 * self.graph], axis=1
        )
        x -= x.mean(axis=0)
        _, vecs = np.linalg.eigh((x.T @ x).astype(np.float64))
        reduced = x.astype(np.float64) @ vecs[:, ::-1][:, : cfg.sid_dim]
        self.sid = _hierarchical_codes(reduced, cfg.sid_branching, rng)

    def _build_users(self, rng: np.random.Generator) -> None:
        cfg = self.config
        nu, nt = cfg.n_users, cfg.n_topics
        shares = np.array([s.share for s in cfg.segments], dtype=np.float64)
        self.user_segment = rng.choice(len(cfg.segments), size=nu, p=shares / shares.sum())
        self.user_interest = rng.dirichlet(np.full(nt, cfg.interest_concentration), size=nu)
        self.user_taste = 0.5 * rng.standard_normal((nu, cfg.latent_dim)) / cfg.latent_dim**0.5
        self.user_activity = rng.normal(0.0, 1.0, nu)
        self._segment_users = [np.flatnonzero(self.user_segment == s) for s in range(len(shares))]
        # Noisy per-user "historical rates" a feature store would have: the segment shows through.
        styles = cfg.segments
        style = np.array([[s.click_bias, s.long_bias, s.save_bias, s.hide_bias] for s in styles])
        history = style[self.user_segment] + rng.normal(0.0, 0.6, (nu, 4))
        self._user_history = history - history.mean(axis=0)
        self._taste32 = self.user_taste.astype(np.float32)
        self._segment_code = np.eye(len(styles))
        self._state_mix = rng.standard_normal((nt, cfg.state_dim)) / nt**0.5
        head = len(styles) + cfg.n_super_topics + 2 + 4
        if cfg.state_dim < head:
            raise ValueError(f"state_dim must be at least {head} for this world")
        self._state_head = head
        # Segment-style coefficient table, one row per segment, for vectorised lookups.
        self._style = {
            name: np.array([getattr(s, name) for s in styles], dtype=np.float64)
            for name in SegmentStyle.__dataclass_fields__
            if name not in ("name", "share")
        }
        weights = shares / shares.sum()
        self._population_style = {k: float(v @ weights) for k, v in self._style.items()}

    # -- inspection --------------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self.config.n_items

    @property
    def segment_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.config.segments)

    # -- requests ----------------------------------------------------------------------------

    def request(
        self,
        index: int,
        *,
        seed: int = 0,
        candidates: int | tuple[int, int] = 500,
        segments: Sequence[int] | None = None,
    ) -> Request:
        """Request number ``index`` of the stream ``seed``; independent of every other request."""
        cfg = self.config
        if isinstance(candidates, int | np.integer):
            lo = hi = int(candidates)
        else:
            lo, hi = (int(c) for c in candidates)
        if not 0 <= lo <= hi <= cfg.n_items:
            raise ValueError(f"candidates must satisfy 0 <= min <= max <= {cfg.n_items}")
        rng = np.random.default_rng([seed, index, 0xC0FFEE])
        if segments is None:
            user = int(rng.integers(cfg.n_users))
        else:
            pool = np.concatenate([self._segment_users[s] for s in segments])
            if pool.size == 0:
                raise ValueError(f"no users in segments {list(segments)}")
            user = int(pool[rng.integers(pool.size)])
        seg = int(self.user_segment[user])
        depth = float(rng.beta(2.0, 2.0))
        n = int(rng.integers(lo, hi + 1))

        interest = self.user_interest[user]
        # float32 here: these are the only per-request passes over the whole item table.
        taste = self._latent32 @ self._taste32[user]  # [n_items]
        # Retrieval: mostly the user's topics and taste, plus uniform exploration; sampled
        # without replacement by exponential keys (weighted reservoir sampling).
        lift = np.exp(np.float32(2.0) * taste)
        lift *= np.float32((1.0 - cfg.exploration) / lift.mean())
        w = interest.astype(np.float32)[self.item_topic] * self._inv_topic_count * lift
        w += np.float32(cfg.exploration / cfg.n_items)
        keys = rng.standard_exponential(cfg.n_items, dtype=np.float32) / w
        ids = np.argpartition(keys, n - 1)[:n] if 0 < n < cfg.n_items else np.arange(cfg.n_items)
        ids = ids[np.argsort(keys[ids], kind="stable")][:n].astype(np.int64)

        topic = self.item_topic[ids]
        affinity = np.log(cfg.n_topics * interest[topic] + 0.1)
        taste_ids = taste[ids].astype(np.float64)
        logits = self._logits(self._style_of(seg), ids, affinity, taste_ids)
        logits[0] += rng.normal(0.0, 0.3, n)  # what no model of this user-item pair can know
        truth = self._scores(logits)
        # The prediction models are shared by all users: calibrated on the population, they
        # capture only part of a segment's own response style. This gap is what personalised
        # utility weights can close (with fully personalised models the reward's own weights
        # would be optimal for everyone).
        rho = cfg.prediction_personalisation
        population = self._scores(self._logits(self._population_style, ids, affinity, taste_ids))
        noise = rng.normal(0.0, cfg.prediction_noise, (4, n))
        predicted = Scores(
            *(
                _sigmoid(
                    rho * _logit(t.astype(np.float64))
                    + (1.0 - rho) * _logit(q.astype(np.float64))
                    + e
                ).astype(np.float32)
                for t, q, e in zip(
                    (truth.click, truth.save, truth.longclick, truth.hide),
                    (population.click, population.save, population.longclick, population.hide),
                    noise,
                    strict=True,
                )
            )
        )
        return Request(
            request_id=f"r{seed}-{index:08d}",
            index=index,
            seed=seed,
            user=user,
            segment=seg,
            session_depth=depth,
            user_state=self._user_state(user, seg, depth, rng),
            candidate_ids=ids,
            predicted=predicted,
            truth=truth,
            logits=logits,
        )

    def _style_of(self, seg: int) -> dict[str, float]:
        return {k: float(v[seg]) for k, v in self._style.items()}

    def _logits(
        self, st: Mapping[str, float], ids: np.ndarray, affinity: np.ndarray, taste: np.ndarray
    ) -> np.ndarray:
        """Isolated logits ``[5, N]``: click, long|click, save|click, hide, conversion|click."""
        click = (
            st["click_bias"]
            + st["affinity"] * affinity
            + st["clickbait"] * self.bait[ids]
            + self.quality[ids]
            + 2.0 * taste
        )
        long_ = st["long_bias"] + st["depth"] * self.depth[ids] + 0.2 * affinity
        save = st["save_bias"] + st["saveability"] * self.saveability[ids] + 0.2 * affinity
        hide = st["hide_bias"] + st["hideability"] * self.hideability[ids] - 0.2 * affinity
        conv = self.conversion[ids] + 0.1 * affinity
        return np.stack([click, long_, save, hide, conv])

    @staticmethod
    def _scores(logits: np.ndarray) -> Scores:
        click, long_, save, hide, _ = logits
        p_hide = _sigmoid(hide)
        p_click = _sigmoid(click) * (1.0 - p_hide)
        return Scores(
            click=p_click.astype(np.float32),
            save=(p_click * _sigmoid(save)).astype(np.float32),
            longclick=(p_click * _sigmoid(long_)).astype(np.float32),
            hide=p_hide.astype(np.float32),
        )

    def _user_state(
        self, user: int, seg: int, depth: float, rng: np.random.Generator
    ) -> np.ndarray:
        """The 32-dim state a policy sees; every part is noisy, so the segment must be inferred.

        Layout: [0, S) noisy segment one-hot; then per-parent-topic interest mass
        (n_super_topics); session depth; activity; 4 historical rates (click, long, save, hide
        logits); the rest a noisy random projection of the topic interests.
        """
        cfg = self.config
        interest = self.user_interest[user]
        parent_mass = np.bincount(self.topic_parent, weights=interest, minlength=cfg.n_super_topics)
        head = np.concatenate(
            [
                self._segment_code[seg] + rng.normal(0.0, cfg.state_noise, len(cfg.segments)),
                3.0 * parent_mass + rng.normal(0.0, 0.2, cfg.n_super_topics),
                [depth + rng.normal(0.0, 0.1), self.user_activity[user] + rng.normal(0.0, 0.3)],
                self._user_history[user] + rng.normal(0.0, 0.3, 4),
            ]
        )
        tail = 3.0 * interest @ self._state_mix[:, : cfg.state_dim - head.size]
        tail += rng.normal(0.0, 0.3, tail.size)
        return np.concatenate([head, tail]).astype(np.float32)

    def requests(
        self,
        n: int,
        *,
        candidates: int | tuple[int, int] = 500,
        seed: int = 0,
        start: int = 0,
        segments: Sequence[int] | None = None,
    ) -> Iterator[Request]:
        """Requests ``start .. start+n-1`` of stream ``seed``, lazily (one at a time)."""
        for i in range(start, start + n):
            yield self.request(i, seed=seed, candidates=candidates, segments=segments)

    # -- responses ---------------------------------------------------------------------------

    def _slate_positions(self, request: Request, slate: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(slate, dtype=np.int64).reshape(-1)
        order = np.argsort(request.candidate_ids, kind="stable")
        sorted_ids = request.candidate_ids[order]
        at = np.searchsorted(sorted_ids, ids)
        at = np.minimum(at, max(sorted_ids.size - 1, 0))
        if ids.size and (sorted_ids.size == 0 or np.any(sorted_ids[at] != ids)):
            bad = ids[sorted_ids[at] != ids] if sorted_ids.size else ids
            raise ValueError(
                f"{request.request_id}: slate ids {bad[:5].tolist()} are not candidates"
            )
        if np.unique(ids).size != ids.size:
            raise ValueError(f"{request.request_id}: slate repeats a candidate")
        return order[at]

    def expected(
        self, request: Request, slate: Sequence[int] | np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per-slot expected outcomes (float64 ``[T]`` per name of :data:`OUTCOMES`) of ``slate``.

        ``slate`` is candidate ids in display order. The user's behaviour is a chain: a slot is
        examined with its position probability; an examined item is hidden with its hide
        probability, otherwise clicked with its click probability; a click becomes a long click,
        a save and a conversion with their conditional probabilities. Fatigue and sensitive
        clustering depend only on what was *shown* above a slot (not on what the user did), so
        these expectations are exact and cheap — no Monte Carlo needed for on-policy evaluation.
        """
        chain = self._chain(request, slate)
        return {k: chain[k] for k in OUTCOMES}

    def _chain(self, request: Request, slate: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Expected outcomes plus the conditional probabilities of each link of the chain."""
        pos = self._slate_positions(request, slate)
        return {k: v[0] for k, v in self.chain_batch([request], pos[None, :]).items()}

    def chain_batch(
        self, requests: Sequence[Request], positions: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The response chain of many slates at once: float64 ``[B, T]`` per name.

        ``positions`` ``[B, T]`` are candidate *positions* within each request (what the blending
        graph returns as ``indices``), ``-1`` padding at the end of a short slate; ``requests[b]``
        is the request of row ``b`` (a request may repeat, one row per action). Returns the
        outcomes of :data:`OUTCOMES` and the links of the chain (``_exam``, ``_hide_if_seen``,
        ``_click_if_kept``, ``_long_if_click``, ``_save_if_click``, ``_conv_if_click``), all
        zero at padded slots. This is the one implementation of the response model: a single
        slate (:meth:`expected`, :meth:`respond`) is a batch of one, and an exhaustive grid
        search needs millions of slates, where a per-slate Python call would cost more than the
        blending itself. Positions are not validated here; :meth:`expected` checks candidate ids.
        """
        pos = np.asarray(positions, dtype=np.int64)
        b, t = pos.shape
        if b == 0:
            return {k: np.zeros((0, t)) for k in (*OUTCOMES, *_CHAIN_LINKS)}
        valid = pos >= 0
        # Padded slots read candidate 0; they are at the end, so nothing above a real slot
        # changes, and they are zeroed on the way out.
        safe = np.where(valid, pos, 0)
        rc = self.config.response
        seg = np.array([r.segment for r in requests], dtype=np.int64)
        st = {k: v[seg][:, None] for k, v in self._style.items()}
        depth = np.array([r.session_depth for r in requests])[:, None]
        # Gather per-slot logits and item ids request by request (ragged candidate sets).
        logits = np.empty((5, b, t))
        ids = np.empty((b, t), dtype=np.int64)
        for i, r in enumerate(requests):
            logits[:, i] = r.logits[:, safe[i]]
            ids[i] = r.candidate_ids[safe[i]]
        click, long_, save, hide, conv = logits

        # Only pairs within a window interact, so everything is O(T * window): per-lag row
        # products instead of T x T matrices (small BLAS calls are slow when threads contend).
        topic = self.item_topic[ids]
        parent = self.topic_parent[topic]
        vis = self.visual[ids]
        qr = self.quality_risk[ids].astype(np.float64)
        bf = self.beauty_filter[ids].astype(np.float64)
        fatigue = np.zeros((b, t))
        cluster = np.zeros((b, t))
        for d in range(1, min(max(rc.fatigue_window, rc.sensitive_window), t - 1) + 1):
            if d <= rc.fatigue_window:
                same = topic[:, d:] == topic[:, :-d]
                sibling = (parent[:, d:] == parent[:, :-d]) & ~same
                cos = np.einsum("btj,btj->bt", vis[:, d:], vis[:, :-d])
                dup = np.clip((cos - rc.duplicate_cosine) / (1.0 - rc.duplicate_cosine), 0.0, 1.0)
                fatigue[:, d:] += (
                    same + rc.super_topic_fatigue * sibling + rc.duplicate_fatigue * dup
                ) / d
            if d <= rc.sensitive_window:
                cluster[:, d:] += (qr[:, d:] * qr[:, :-d] + bf[:, d:] * bf[:, :-d]) / d
        fatigue *= 0.5 + rc.session_fatigue * depth
        # Earlier occurrences of the same topic anywhere above, in O(T log T) rather than a
        # T x T count: a stable sort keeps slate order within a topic, so the rank inside each
        # run of equal topics is that count.
        col = np.arange(t)
        rows = np.arange(b)[:, None]
        order = np.argsort(topic, axis=1, kind="stable")
        ranked = topic[rows, order]
        run_start = np.ones((b, t), dtype=bool)
        run_start[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
        starts = np.maximum.accumulate(np.where(run_start, col, 0), axis=1)
        earlier = np.empty((b, t))
        earlier[rows, order] = col - starts
        satiation = np.log1p(earlier)

        click = (
            click
            - st["fatigue_click"] * fatigue
            - st["satiation"] * satiation
            - st["sensitive_engagement"] * cluster
        )
        long_ = (
            long_
            - st["fatigue_long"] * fatigue
            - st["satiation"] * satiation
            - st["sensitive_engagement"] * cluster
        )
        save = save - 0.5 * st["fatigue_click"] * fatigue
        hide = (
            hide
            + st["fatigue_hide"] * fatigue
            + st["sensitive_hide"] * cluster
            + rc.blocked_hide * self.blocked[ids]
        )
        exam = (1.0 + col[None, :] / st["patience"]) ** -rc.position_power
        hide_if_seen = _sigmoid(hide)
        click_if_kept = _sigmoid(click)
        long_if_click = _sigmoid(long_)
        save_if_click = _sigmoid(save)
        conv_if_click = _sigmoid(conv)
        p_click = exam * (1.0 - hide_if_seen) * click_if_kept
        chain = {
            "click": p_click,
            "long_click": p_click * long_if_click,
            "save": p_click * save_if_click,
            "hide": exam * hide_if_seen,
            "conversion": p_click * conv_if_click,
            "revenue": p_click * self.bid[ids].astype(np.float64),
            # The links of the chain, for sampling.
            "_exam": exam,
            "_hide_if_seen": hide_if_seen,
            "_click_if_kept": click_if_kept,
            "_long_if_click": long_if_click,
            "_save_if_click": save_if_click,
            "_conv_if_click": conv_if_click,
        }
        # In place: a fresh [B, T] array per name costs a grid search a quarter of this call.
        padded = ~valid
        if padded.any():
            for v in chain.values():
                v[padded] = 0.0
        return chain

    def respond(
        self,
        request: Request,
        slate: Sequence[int] | np.ndarray,
        rng: np.random.Generator | int | None = None,
    ) -> SlateOutcomes:
        """Show ``slate`` (candidate ids in display order) to the request's user.

        Returns sampled outcomes (one draw of the user's behaviour, using ``rng``) together with
        the exact expectations. Raises ``ValueError`` for an id that is not a candidate of the
        request or a repeated id.
        """
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        e = self._chain(request, slate)
        t = e["click"].size
        u = gen.random((6, t))
        seen = u[0] < e["_exam"]
        hidden = seen & (u[1] < e["_hide_if_seen"])
        clicked = seen & ~hidden & (u[2] < e["_click_if_kept"])
        long_ = clicked & (u[3] < e["_long_if_click"])
        saved = clicked & (u[4] < e["_save_if_click"])
        conv = clicked & (u[5] < e["_conv_if_click"])
        ids = np.asarray(slate, dtype=np.int64).reshape(-1)
        sampled = {
            "click": clicked.astype(np.int8),
            "long_click": long_.astype(np.int8),
            "save": saved.astype(np.int8),
            "hide": hidden.astype(np.int8),
            "conversion": conv.astype(np.int8),
            "revenue": np.where(clicked, self.bid[ids].astype(np.float64), 0.0),
        }
        expected = {k: e[k] for k in OUTCOMES}
        return SlateOutcomes(candidate_ids=ids.copy(), sampled=sampled, expected=expected)

    # -- dump columns ------------------------------------------------------------------------

    def columns(self, requests: Sequence[Request]) -> dict[str, np.ndarray]:
        """The dump columns of ``requests`` as numpy arrays, rows of a request contiguous.

        Embeddings are 2-D ``[rows, D]`` float32 (un-normalised, as real embeddings are),
        ``sid`` is ``[rows, L]`` int64, ``topic`` an object array of strings, ``user_state``
        ``[rows, state_dim]`` float32 repeated on every row of its request.
        """
        counts = np.array([r.n for r in requests], dtype=np.int64)
        ids = (
            np.concatenate([r.candidate_ids for r in requests])
            if requests
            else np.zeros(0, np.int64)
        )

        def cat(get: Callable[[Request], np.ndarray]) -> np.ndarray:
            if not requests:
                return np.zeros(0, np.float32)
            return np.concatenate([get(r) for r in requests])

        names = np.array(self.topic_names, dtype=object)
        state = (
            np.stack([r.user_state for r in requests])
            if requests
            else np.zeros((0, self.config.state_dim), np.float32)
        )
        return {
            "request_id": np.repeat(
                np.array([r.request_id for r in requests], dtype=object), counts
            ),
            "candidate_id": ids,
            "p_click": cat(lambda r: r.predicted.click),
            "p_save": cat(lambda r: r.predicted.save),
            "p_longclick": cat(lambda r: r.predicted.longclick),
            "p_hide": cat(lambda r: r.predicted.hide),
            "bid": self.bid[ids],
            "visual": self.visual[ids] * self.norms[0, ids, None],
            "text": self.text[ids] * self.norms[1, ids, None],
            "graph": self.graph[ids] * self.norms[2, ids, None],
            "sid": self.sid[ids],
            "topic": names[self.item_topic[ids]],
            "quality_risk": self.quality_risk[ids],
            "beauty_filter": self.beauty_filter[ids],
            "blocked": self.blocked[ids],
            "user_state": np.repeat(state, counts, axis=0),
        }

    def record_batch(self, requests: Sequence[Request]) -> pa.RecordBatch:
        """The dump rows of ``requests`` as one Arrow record batch with :func:`dump_schema`."""
        import pyarrow as pa

        cols = self.columns(requests)
        schema = dump_schema(self.config)
        counts = np.array([r.n for r in requests], dtype=np.int64)
        # Strings by dictionary + take: building them from Python objects row by row is slow.
        strings = {
            "request_id": (
                pa.array([r.request_id for r in requests], type=pa.string()),
                np.repeat(np.arange(len(requests), dtype=np.int32), counts),
            ),
            "topic": (
                pa.array(list(self.topic_names), type=pa.string()),
                self.item_topic[cols["candidate_id"]].astype(np.int32),
            ),
        }
        arrays: list[pa.Array] = []
        for f in schema:
            if f.name in strings:
                dictionary, codes = strings[f.name]
                arrays.append(dictionary.take(pa.array(codes)))
                continue
            v = cols[f.name]
            if pa.types.is_fixed_size_list(f.type):
                flat = pa.array(np.ascontiguousarray(v).reshape(-1), type=f.type.value_type)
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, f.type.list_size))
            else:
                arrays.append(pa.array(v, type=f.type))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------------------------
# Dumps
# --------------------------------------------------------------------------------------------


def dump_schema(config: WorldConfig | None = None) -> pa.Schema:
    """Arrow schema of a candidate dump (DESIGN §4): the columns of :data:`DUMP_COLUMNS`."""
    import pyarrow as pa

    cfg = config or WorldConfig()
    f32 = pa.float32()
    return pa.schema(
        [
            ("request_id", pa.string()),
            ("candidate_id", pa.int64()),
            ("p_click", f32),
            ("p_save", f32),
            ("p_longclick", f32),
            ("p_hide", f32),
            ("bid", f32),
            ("visual", pa.list_(f32, cfg.visual_dim)),
            ("text", pa.list_(f32, cfg.text_dim)),
            ("graph", pa.list_(f32, cfg.graph_dim)),
            ("sid", pa.list_(pa.int64(), len(cfg.sid_branching))),
            ("topic", pa.string()),
            ("quality_risk", pa.bool_()),
            ("beauty_filter", pa.bool_()),
            ("blocked", pa.bool_()),
            ("user_state", pa.list_(f32, cfg.state_dim)),
        ]
    )


@dataclass(frozen=True)
class DumpInfo:
    """What :func:`write_dump` wrote."""

    path: Path
    files: tuple[Path, ...]
    requests: int
    rows: int


class _Sink(Protocol):
    """One output file being written (Parquet or JSON Lines)."""

    def write(self, world: World, requests: Sequence[Request]) -> None: ...

    def close(self) -> None: ...


class _ParquetSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        # Dictionary encoding only pays for the repeated strings; on embeddings it is tried and
        # abandoned for every page, which costs time for nothing.
        # Page checksums let a reader catch a damaged page instead of blending its values.
        self._writer = pq.ParquetWriter(
            str(path),
            schema,
            use_dictionary=["request_id", "topic"],
            compression="snappy",
            write_page_checksum=True,
        )

    def write(self, world: World, requests: Sequence[Request]) -> None:
        import pyarrow as pa

        batch = world.record_batch(requests)
        self._writer.write_table(pa.Table.from_batches([batch]))

    def close(self) -> None:
        self._writer.close()


class _JsonlSink:
    def __init__(self, path: Path) -> None:
        self._fh = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed in close()

    def write(self, world: World, requests: Sequence[Request]) -> None:
        cols = world.columns(requests)
        # Python floats of float32 values: repr round-trips exactly back to the float32.
        lists = {k: cols[k].tolist() for k in DUMP_COLUMNS if k not in ("request_id", "topic")}
        rid, topic = cols["request_id"], cols["topic"]
        lines = []
        for i in range(rid.size):
            row = {"request_id": rid[i]}
            for k in DUMP_COLUMNS[1:]:
                row[k] = topic[i] if k == "topic" else lists[k][i]
            lines.append(json.dumps(row, separators=(",", ":")))
        if lines:
            self._fh.write("\n".join(lines) + "\n")

    def close(self) -> None:
        self._fh.close()


SHARD_MANIFEST = "_blendspec_shards.json"
"""The file that marks a folder as a shard set blendspec wrote, listing its shards. Dump readers
skip it (not .parquet/.jsonl; pyarrow skips `_` names); a later write may replace exactly the
files it lists, and nothing else."""
_SHARD_NAME = re.compile(r"part-\d{5}\.(parquet|jsonl)")


def _atomic_target(path: Path, is_dir: bool) -> Path:
    """A fresh temp file or directory next to ``path`` (same filesystem, so rename is atomic),
    named so that the next write to ``path`` recognises and removes it if this process dies."""
    from blendspec.io.outputs import remove_stale_temporaries, temporary_name

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    umask = os.umask(0)
    os.umask(umask)
    tmp = path.parent / temporary_name(path)
    if is_dir:
        tmp.mkdir(mode=0o700)
        tmp.chmod(0o777 & ~umask)
        return tmp
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    # A private temporary; a published dump gets the usual permissions.
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _shard_set_files(folder: Path) -> set[str] | None:
    """The names a previous blendspec shard set in ``folder`` consists of (its manifest's list,
    else — for shard sets written before manifests — shard-named files), or None when the folder
    holds anything else: then it is not ours to replace."""
    names = set(os.listdir(folder))
    listed: set[str] = set()
    if SHARD_MANIFEST in names:
        try:
            manifest = json.loads((folder / SHARD_MANIFEST).read_text(encoding="utf-8"))
            listed = {str(f) for f in manifest["files"] if "/" not in str(f)} | {SHARD_MANIFEST}
        except (OSError, ValueError, KeyError, TypeError):
            return None
    ours = {
        n
        for n in names
        if (n in listed or _SHARD_NAME.fullmatch(n))
        and (folder / n).is_file()
        and not (folder / n).is_symlink()
    }
    return ours if ours == names else None


def _prepare_shard_folder(path: Path, overwrite: bool) -> Literal["swap", "merge"]:
    """How a shard set may be published at ``path`` without deleting what blendspec did not
    write: ``swap`` replaces the whole folder (it is absent, empty, or a previous shard set);
    ``merge`` (only with ``overwrite``) replaces just the shard files of a folder that holds
    other things too. Otherwise an :class:`~blendspec.io.outputs.OutputError`."""
    from blendspec.io.outputs import OutputError, display_path

    if not path.exists() and not path.is_symlink():
        return "swap"
    if not path.is_dir():
        if overwrite:
            return "swap"
        raise OutputError(
            f"{display_path(path)} is a file and --shard-rows writes a folder; refusing to "
            "replace it (pass --overwrite to replace it)"
        )
    if _shard_set_files(path) is not None:
        return "swap"
    if overwrite:
        return "merge"
    others = sorted(set(os.listdir(path)) - {SHARD_MANIFEST})
    example = next((n for n in others if not _SHARD_NAME.fullmatch(n)), others[0])
    raise OutputError(
        f"{display_path(path)} is a folder that holds files blendspec did not write (such as "
        f"`{display_path(example, 60)}`); refusing to write shards into it (pass --overwrite "
        "to replace only its shard files)"
    )


def _write_manifest(folder: Path, files: Sequence[str], requests: int, rows: int) -> None:
    manifest = {
        "format": "blendspec.shards",
        "version": 1,
        "files": list(files),
        "requests": requests,
        "rows": rows,
    }
    (folder / SHARD_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _publish(tmp: Path, path: Path, how: Literal["swap", "merge"] = "swap") -> None:
    """Move a finished temp file or directory into place; readers never see a partial dump
    (except with ``merge``, which moves shard files one by one into a folder it must keep)."""
    from blendspec.io.outputs import OutputError, display_path, temporary_name

    if tmp.is_dir() and how == "merge":
        stale = _SHARD_NAME.fullmatch
        listed: set[str] = set()
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            manifest = json.loads((path / SHARD_MANIFEST).read_text(encoding="utf-8"))
            listed = {str(f) for f in manifest["files"] if "/" not in str(f)}
        for name in os.listdir(path):
            if (name in listed or stale(name)) and (path / name).is_file():
                (path / name).unlink()
        # The manifest last: it never lists a shard that is not in place yet.
        for entry in sorted(os.listdir(tmp), key=lambda n: (n == SHARD_MANIFEST, n)):
            os.replace(tmp / entry, path / entry)
        tmp.rmdir()
    elif tmp.is_dir():
        if path.exists() or path.is_symlink():
            old = path.parent / temporary_name(path, ".old")
            old.mkdir(mode=0o700)
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    else:
        if path.is_dir():
            raise OutputError(f"cannot write {display_path(path)}: {os.strerror(errno.EISDIR)}")
        os.replace(tmp, path)


def _chunks(
    stream: Iterable[Request], chunk_rows: int, shard_rows: int | None
) -> Iterator[tuple[bool, list[Request]]]:
    """Group requests into write chunks; ``True`` marks the first chunk of a new shard.

    A request is never split: shards start at request boundaries so each shard is a valid dump
    by itself (the Ray engine reads shards independently).
    """
    chunk: list[Request] = []
    chunk_n = 0
    shard_n = 0
    new_shard = True
    for r in stream:
        if shard_rows is not None and shard_n > 0 and shard_n + r.n > shard_rows:
            if chunk:
                yield new_shard, chunk
            chunk, chunk_n, shard_n, new_shard = [], 0, 0, True
        chunk.append(r)
        chunk_n += r.n
        shard_n += r.n
        if chunk_n >= chunk_rows:
            yield new_shard, chunk
            chunk, chunk_n, new_shard = [], 0, False
    if chunk:
        yield new_shard, chunk


def write_dump(
    world: World,
    path: str | os.PathLike[str],
    *,
    requests: int,
    candidates: int | tuple[int, int] = 500,
    seed: int = 0,
    format: Literal["parquet", "jsonl"] = "parquet",
    shard_rows: int | None = None,
    chunk_rows: int = 8192,
    start: int = 0,
    segments: Sequence[int] | None = None,
    overwrite: bool = False,
) -> DumpInfo:
    """Write a candidate dump of ``requests`` requests of stream ``seed`` to ``path``.

    Streams in chunks of whole requests, about ``chunk_rows`` rows each (one Parquet row group
    each, so no row group splits a request), and memory does not grow with the dump. Without
    ``shard_rows`` ``path`` is one file; with it, ``path`` is a directory of
    ``part-NNNNN.parquet`` (or ``.jsonl``) files of at most ``shard_rows`` rows each, cut at
    request boundaries so that every shard is a valid dump by itself (a single request larger
    than that gets a shard of its own). The output appears atomically: everything is written
    under a temporary name next to ``path`` and renamed at the end; an existing dump at ``path``
    is replaced, and a failed write leaves the old one untouched.

    A shard folder gets a manifest (:data:`SHARD_MANIFEST`) listing its shards, so that nothing
    blendspec did not write is ever deleted: an existing folder is replaced only when it is
    empty or a previous shard set. A folder holding anything else (or a file where the folder
    goes) is an :class:`~blendspec.io.outputs.OutputError` unless ``overwrite``; then only its shard
    files (and those its manifest lists) are replaced, and the other files stay.

    Sizes: a row of the default world is about 3.3 KB in Parquet (embeddings are incompressible
    floats), so 1,000 requests of 500 candidates take about 1.7 GB. JSON Lines is for
    interoperability and small samples: it is ~5x larger and ~40x slower to write.
    """
    if format not in ("parquet", "jsonl"):
        raise ValueError(f"format must be 'parquet' or 'jsonl', not {format!r}")
    if requests < 0:
        raise ValueError("requests must be >= 0")
    if shard_rows is not None and shard_rows < 1:
        raise ValueError("shard_rows must be >= 1")
    path = Path(path)
    ext = ".parquet" if format == "parquet" else ".jsonl"
    sharded = shard_rows is not None
    how = _prepare_shard_folder(path, overwrite) if sharded else "swap"
    tmp = _atomic_target(path, sharded)
    files: list[Path] = []
    n_requests = n_rows = 0
    sink: _Sink | None = None

    def open_sink(target: Path) -> _Sink:
        if format == "parquet":
            return _ParquetSink(target, dump_schema(world.config))
        return _JsonlSink(target)

    try:
        stream = world.requests(
            requests, candidates=candidates, seed=seed, start=start, segments=segments
        )
        for first, chunk in _chunks(stream, chunk_rows, shard_rows):
            if sink is None or (sharded and first):
                if sink is not None:
                    sink.close()
                target = tmp / f"part-{len(files):05d}{ext}" if sharded else tmp
                files.append(target)
                sink = open_sink(target)
            sink.write(world, chunk)
            n_requests += len(chunk)
            n_rows += sum(r.n for r in chunk)
        if sink is None:  # no requests: still a valid, empty dump with the schema
            target = tmp / f"part-00000{ext}" if sharded else tmp
            files.append(target)
            sink = open_sink(target)
        sink.close()
        sink = None
        if sharded:
            _write_manifest(tmp, [f.name for f in files], n_requests, n_rows)
        _publish(tmp, path, how)
    except BaseException as error:
        if sink is not None:
            # The original error matters more than a failure to close.
            with contextlib.suppress(Exception):
                sink.close()
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            from blendspec.io.outputs import as_output_error

            converted = as_output_error(error, path, tmp)
            if converted is not None:  # a full disk or a read-only folder: the user's to fix
                raise converted from None
        raise
    final = tuple(path / f.name for f in files) if sharded else (path,)
    return DumpInfo(path=path, files=final, requests=n_requests, rows=n_rows)
