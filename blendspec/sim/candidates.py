"""Candidate generation: a request's user, its retrieved candidates, and their predictions.

Why its own module: this is what a dump carries — the requests, their ``user_state`` and the
*isolated*, population-calibrated predictions — and it is independent of how a slate is answered
(:mod:`blendspec.sim.chain`). Request ``i`` of stream ``s`` draws from its own generator seeded
by ``(s, i)``, so it does not depend on how many requests are generated, on chunking, or on the
order of generation. :class:`CandidateGenerator` is a mixin of :class:`~blendspec.sim.core.World`
(it reads the tables :mod:`blendspec.sim.items` built).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from blendspec.sim.segments import WorldConfig

__all__ = ["CandidateGenerator", "Request", "Scores"]


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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


class CandidateGenerator:
    """Requests of a world: users, retrieval, true and predicted scores (a mixin of ``World``)."""

    config: WorldConfig

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
