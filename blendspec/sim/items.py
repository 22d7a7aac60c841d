"""The world's tables: topics, items (embeddings, semantic IDs, flags, hidden traits), users.

Why its own module: building the tables is most of the code and all of the construction cost
(the semantic-ID clustering), and it is read once; requests and responses only read the tables.
:class:`ItemTables` is a mixin of :class:`~blendspec.sim.core.World`: its methods fill the
world's public arrays in a fixed order of draws from one generator, so a world is the same for
the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from blendspec.sim.segments import SegmentStyle, WorldConfig

__all__ = ["ItemTables"]


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


class ItemTables:
    """Construction of a world's topic, item and user tables (a mixin of ``World``)."""

    config: WorldConfig

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
