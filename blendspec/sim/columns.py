"""The columns of a candidate dump: their names, Arrow schema, and a world's values for them.

Why its own module: the dump format (DESIGN §4) is a contract with readers (``io/dump.py``,
specs/homefeed's inputs) and is shared by both file formats of :mod:`blendspec.sim.dumps`;
keeping it apart from the writers lets the format be read without the write machinery.
:class:`DumpColumns` is a mixin of :class:`~blendspec.sim.core.World`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from blendspec.sim.candidates import Request
from blendspec.sim.segments import WorldConfig

if TYPE_CHECKING:  # pyarrow is only needed to write dumps; the world itself is pure numpy.
    import pyarrow as pa

__all__ = ["DUMP_COLUMNS", "DumpColumns", "dump_schema"]

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


class DumpColumns:
    """A world's dump rows, as numpy columns or an Arrow batch (a mixin of ``World``)."""

    config: WorldConfig

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
