"""The response chain: what a user does with a slate, sampled or in expectation.

Why its own module: this is the one implementation of the response model — position bias,
topic fatigue and satiation, sensitive clustering — shared by :meth:`World.respond` (one sampled
slate), :meth:`World.expected` (on-policy evaluation) and :meth:`World.chain_batch`, which the
exhaustive search over a policy's action grid calls on millions of slates at once
(``policy/explore.py``). Fatigue and clustering depend only on what was *shown* above a slot, so
the expectations are exact. :class:`ResponseChain` is a mixin of
:class:`~blendspec.sim.core.World`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from blendspec.sim.candidates import Request, _sigmoid
from blendspec.sim.segments import WorldConfig

__all__ = ["OUTCOMES", "ResponseChain", "SlateOutcomes"]

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


class ResponseChain:
    """A world's response to slates (a mixin of ``World``)."""

    config: WorldConfig

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
