"""Who the simulated users are and how each kind responds: the world's configuration.

Why its own module: the segments are the structure a per-request weight policy exploits, and
what tests, benchmarks and `blend policy` (``--segments``) name; they are data, read by item and
user construction (:mod:`blendspec.sim.items`), by request generation
(:mod:`blendspec.sim.candidates`) and by the response chain (:mod:`blendspec.sim.chain`), so
they sit below all three.

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
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_SEGMENTS", "ResponseConfig", "SegmentStyle", "WorldConfig"]


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
