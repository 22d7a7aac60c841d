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

Segments (:data:`DEFAULT_SEGMENTS`: clicker, saver, long_reader, fatigued) and what each wants
from the blending layer — the structure a per-request weight policy (DRL-PUT, issue 5) can
exploit and fixed weights cannot, with the measured gains — are described in
:mod:`blendspec.sim.segments`.

Everything is deterministic given the seeds: request ``i`` of ``requests(seed=s)`` draws from its
own generator seeded by ``(s, i)``, so it does not depend on how many requests are generated, on
chunking, or on the order of generation.

Where it lives: :mod:`blendspec.sim.segments` (configuration, segments),
:mod:`blendspec.sim.items` (tables), :mod:`blendspec.sim.candidates` (requests),
:mod:`blendspec.sim.chain` (responses), :mod:`blendspec.sim.columns` (the dump format),
:mod:`blendspec.sim.core` (the :class:`World` that composes them), :mod:`blendspec.sim.dumps` and
:mod:`blendspec.sim.shards` (writing). This module hands out their names under the path scripts
and the old flat ``blendspec.simulate`` use; in-repo code imports each name from its home.
"""

from __future__ import annotations

from blendspec.sim.candidates import Request, Scores
from blendspec.sim.chain import OUTCOMES, SlateOutcomes
from blendspec.sim.columns import DUMP_COLUMNS, dump_schema
from blendspec.sim.core import World
from blendspec.sim.dumps import DumpInfo, write_dump
from blendspec.sim.dumps import _JsonlSink as _JsonlSink  # patched by tests to fail a write
from blendspec.sim.dumps import _ParquetSink as _ParquetSink
from blendspec.sim.segments import DEFAULT_SEGMENTS, ResponseConfig, SegmentStyle, WorldConfig
from blendspec.sim.shards import SHARD_MANIFEST

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
