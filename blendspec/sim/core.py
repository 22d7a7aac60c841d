"""The :class:`World`: items, users, requests and responses, composed from their modules.

Why it is small: each part lives where it can be read alone — the configuration and segments
(:mod:`blendspec.sim.segments`), the tables (:mod:`blendspec.sim.items`), candidate generation
(:mod:`blendspec.sim.candidates`), the response chain (:mod:`blendspec.sim.chain`) and the dump
columns (:mod:`blendspec.sim.columns`) — as mixins that share one object's tables, so a world
stays one picklable object with the public arrays tests and analyses read (``world.visual``,
``world.item_topic``, …). The construction order, and so every draw, is fixed here.
"""

from __future__ import annotations

import numpy as np

from blendspec.sim.candidates import CandidateGenerator
from blendspec.sim.chain import ResponseChain
from blendspec.sim.columns import DumpColumns
from blendspec.sim.items import ItemTables
from blendspec.sim.segments import WorldConfig

__all__ = ["World"]


class World(ItemTables, CandidateGenerator, ResponseChain, DumpColumns):
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

    # -- inspection --------------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self.config.n_items

    @property
    def segment_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.config.segments)
