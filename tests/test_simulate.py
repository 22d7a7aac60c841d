"""The simulator: deterministic worlds and dumps, the dump format, and a response model in which
diversity, spacing and personalised weights measurably matter (what blending and DRL-PUT need)."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blendspec.sim.world import (
    DUMP_COLUMNS,
    OUTCOMES,
    SHARD_MANIFEST,
    Request,
    World,
    WorldConfig,
    dump_schema,
    write_dump,
)

T = 50
ENGAGED = {"click": 1.0, "long_click": 2.0, "hide": -5.0}  # specs/ads.blend's reward `engaged`


@pytest.fixture(scope="module")
def small() -> World:
    """A small world for format tests: same code paths, a fraction of the build time."""
    return World(WorldConfig(seed=3, n_items=3000, n_users=400))


@pytest.fixture(scope="module")
def world() -> World:
    """The default (benchmark) world: the behavioural claims are about this one."""
    return World.default(0)


# -- helpers ----------------------------------------------------------------------------------


def top_t(scores: np.ndarray, t: int = T) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:t]


def mmr(relevance: np.ndarray, emb: np.ndarray, t: int = T, lam: float = 0.3) -> np.ndarray:
    """Plain greedy MMR on cosine similarity with z-scored relevance (the test's diversifier)."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    r = (relevance - relevance.mean()) / (relevance.std() + 1e-12)
    chosen: list[int] = []
    max_sim = np.zeros(r.size)
    free = np.ones(r.size, dtype=bool)
    for step in range(min(t, r.size)):
        score = lam * r - (1.0 - lam) * (max_sim if step else 0.0)
        j = int(np.argmax(np.where(free, score, -np.inf)))
        chosen.append(j)
        free[j] = False
        sim = e @ e[j]
        max_sim = sim if step == 0 else np.maximum(max_sim, sim)
    return np.array(chosen)


def totals(world: World, request: Request, picks: np.ndarray) -> dict[str, float]:
    e = world.expected(request, request.candidate_ids[picks])
    return {k: float(v.sum()) for k, v in e.items()}


def reward(t: dict[str, float], weights: dict[str, float] = ENGAGED) -> float:
    return sum(w * t[k] for k, w in weights.items())


def ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(x.size)
    r[np.argsort(x, kind="stable")] = np.arange(x.size)
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# -- determinism --------------------------------------------------------------------------------


def test_world_is_deterministic_and_seeded() -> None:
    cfg = WorldConfig(seed=5, n_items=1500, n_users=200)
    a, b = World(cfg), World(cfg)
    for name in ("visual", "text", "graph", "sid", "item_topic", "bid", "quality_risk", "blocked"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = World(WorldConfig(seed=6, n_items=1500, n_users=200))
    assert not np.array_equal(a.visual, c.visual)


def test_request_depends_only_on_seed_and_index(small: World) -> None:
    stream = list(small.requests(5, seed=9, candidates=(20, 80)))
    later = list(small.requests(2, seed=9, candidates=(20, 80), start=3))
    for r, s in zip(stream[3:], later, strict=True):
        assert r.request_id == s.request_id
        assert np.array_equal(r.candidate_ids, s.candidate_ids)
        assert np.array_equal(r.predicted.click, s.predicted.click)
        assert np.array_equal(r.user_state, s.user_state)
    other = small.request(3, seed=10, candidates=(20, 80))
    assert not np.array_equal(other.candidate_ids[:10], stream[3].candidate_ids[:10])
    assert len({r.request_id for r in stream}) == 5


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_dump_bytes_are_deterministic(small: World, tmp_path: Path, fmt: str) -> None:
    kw = {"requests": 4, "candidates": (10, 30), "format": fmt}
    write_dump(small, tmp_path / "a", seed=1, **kw)
    write_dump(small, tmp_path / "b", seed=1, **kw, chunk_rows=7)  # chunking must not matter…
    write_dump(small, tmp_path / "c", seed=2, **kw)
    a, b, c = ((tmp_path / n).read_bytes() for n in "abc")
    if fmt == "jsonl":
        assert a == b
    else:  # …to the rows (Parquet row groups follow the chunks)
        assert pq.read_table(tmp_path / "a").equals(pq.read_table(tmp_path / "b"))
        write_dump(small, tmp_path / "a2", seed=1, **kw)
        assert (tmp_path / "a2").read_bytes() == a
    assert a != c


# -- dump format --------------------------------------------------------------------------------


def check_rows(table: pa.Table, world: World) -> None:
    """Invariants every dump must satisfy, whatever its format (DESIGN §4)."""
    assert table.column_names == list(DUMP_COLUMNS)
    rid = table.column("request_id").to_pylist()
    cid = table.column("candidate_id").to_numpy()
    state = np.asarray(table.column("user_state").to_pylist(), dtype=np.float32)
    # Contiguous requests: each id forms exactly one run.
    runs = [k for k, _ in itertools.groupby(rid)]
    assert len(runs) == len(set(runs))
    start = 0
    for _, group in itertools.groupby(rid):
        n = len(list(group))
        block = slice(start, start + n)
        assert np.unique(cid[block]).size == n  # unique candidate ids within a request
        assert (state[block] == state[start]).all()  # request features constant
        start += n
    for name in ("p_click", "p_save", "p_longclick", "p_hide"):
        p = table.column(name).to_numpy()
        assert ((p >= 0) & (p <= 1)).all(), name
    assert (table.column("bid").to_numpy() > 0).all()
    sid = np.asarray(table.column("sid").to_pylist())
    assert sid.shape[1] == 4 and sid.min() >= 0
    assert (sid < np.array(world.config.sid_branching)).all()
    assert set(table.column("topic").to_pylist()) <= set(world.topic_names)


def test_parquet_schema_is_exact(small: World, tmp_path: Path) -> None:
    info = write_dump(small, tmp_path / "d.parquet", requests=6, candidates=(5, 60), seed=4)
    table = pq.read_table(tmp_path / "d.parquet")
    f32 = pa.float32()
    expected = {
        "request_id": pa.string(),
        "candidate_id": pa.int64(),
        "p_click": f32,
        "p_save": f32,
        "p_longclick": f32,
        "p_hide": f32,
        "bid": f32,
        "visual": pa.list_(f32, 256),
        "text": pa.list_(f32, 384),
        "graph": pa.list_(f32, 128),
        "sid": pa.list_(pa.int64(), 4),
        "topic": pa.string(),
        "quality_risk": pa.bool_(),
        "beauty_filter": pa.bool_(),
        "blocked": pa.bool_(),
        "user_state": pa.list_(f32, 32),
    }
    assert table.column_names == list(expected)
    for name, typ in expected.items():
        assert table.schema.field(name).type == typ, name
    assert table.schema.equals(dump_schema(small.config))
    assert info.rows == table.num_rows and info.requests == 6
    assert table.column("request_id").unique().to_pylist() == [f"r4-{i:08d}" for i in range(6)]
    check_rows(table, small)
    # The dump is the request's content, row for row.
    r = small.request(2, seed=4, candidates=(5, 60))
    rows = table.filter(pa.compute.equal(table.column("request_id"), r.request_id))
    assert np.array_equal(rows.column("candidate_id").to_numpy(), r.candidate_ids)
    assert np.array_equal(rows.column("p_hide").to_numpy(), r.predicted.hide)
    vis = np.asarray(rows.column("visual").to_pylist(), dtype=np.float32)
    assert np.allclose(
        vis / np.linalg.norm(vis, axis=1, keepdims=True), small.visual[r.candidate_ids], atol=1e-6
    )


def test_jsonl_matches_parquet(small: World, tmp_path: Path) -> None:
    kw = {"requests": 3, "candidates": (5, 25), "seed": 8}
    write_dump(small, tmp_path / "d.parquet", **kw)
    write_dump(small, tmp_path / "d.jsonl", format="jsonl", **kw)
    rows = read_jsonl(tmp_path / "d.jsonl")
    table = pq.read_table(tmp_path / "d.parquet")
    assert len(rows) == table.num_rows
    assert all(list(row) == list(DUMP_COLUMNS) for row in rows)
    for name in DUMP_COLUMNS:
        values = [row[name] for row in rows]
        # float32 values written as shortest-repr doubles read back exactly.
        assert values == table.column(name).to_pylist(), name
    first = rows[0]
    assert isinstance(first["request_id"], str) and isinstance(first["candidate_id"], int)
    assert isinstance(first["topic"], str) and isinstance(first["blocked"], bool)
    assert [len(first[k]) for k in ("visual", "text", "graph", "sid", "user_state")] == [
        256,
        384,
        128,
        4,
        32,
    ]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_shards_hold_whole_requests(small: World, tmp_path: Path, fmt: str) -> None:
    kw = {"requests": 9, "candidates": (10, 70), "seed": 3, "format": fmt}
    whole = write_dump(small, tmp_path / ("one." + fmt), **kw)
    info = write_dump(small, tmp_path / "shards", shard_rows=100, **kw)
    # The shards, and the manifest that marks the folder as a blendspec shard set (issue 18).
    files = sorted(p for p in (tmp_path / "shards").iterdir() if p.name != SHARD_MANIFEST)
    assert (tmp_path / "shards" / SHARD_MANIFEST).is_file()
    assert files == list(info.files) and len(files) > 2
    assert all(f.name.startswith("part-") and f.suffix == "." + fmt for f in files)
    seen: list[str] = []
    for f in files:
        t = pq.read_table(f) if fmt == "parquet" else pa.Table.from_pylist(read_jsonl(f))
        ids = t.column("request_id").unique().to_pylist()
        assert t.num_rows <= 100 or len(ids) == 1  # a request is never split
        seen += ids
    assert len(seen) == len(set(seen)) == 9
    if fmt == "parquet":
        merged = pq.read_table(tmp_path / "shards")
        assert merged.equals(pq.read_table(tmp_path / "one.parquet"))
    assert info.rows == whole.rows
    # blend run's reader reads the folder as the one file (the manifest is not a dump file).
    from blendspec.io.dump import dump_files

    assert dump_files(tmp_path / "shards") == files


def test_empty_dump_is_valid(small: World, tmp_path: Path) -> None:
    info = write_dump(small, tmp_path / "e.parquet", requests=0)
    t = pq.read_table(tmp_path / "e.parquet")
    assert t.num_rows == 0 and t.schema.equals(dump_schema(small.config))
    assert info.requests == 0


def test_failed_write_leaves_nothing_and_keeps_old_dump(
    small: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "d.parquet"
    write_dump(small, target, requests=2, candidates=10, seed=1)
    before = target.read_bytes()
    calls = {"n": 0}
    real: Callable = World.record_batch

    def flaky(self: World, requests: list[Request]) -> pa.RecordBatch:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(self, requests)

    monkeypatch.setattr(World, "record_batch", flaky)
    for name, shards in (("d.parquet", None), ("new_dir", 20)):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="disk on fire"):
            write_dump(
                small,
                tmp_path / name,
                requests=6,
                candidates=10,
                seed=2,
                chunk_rows=10,
                shard_rows=shards,
            )
    assert target.read_bytes() == before  # the old dump is untouched
    assert sorted(os.listdir(tmp_path)) == ["d.parquet"]  # no partial output, no temp files
    monkeypatch.undo()
    write_dump(small, target, requests=3, candidates=10, seed=2)  # replacing works
    assert pq.read_table(target).num_rows == 30


def test_candidate_counts(small: World) -> None:
    sizes = [r.n for r in small.requests(20, candidates=(3, 9), seed=0)]
    assert min(sizes) >= 3 and max(sizes) <= 9 and len(set(sizes)) > 1
    assert small.request(0, candidates=0).n == 0
    with pytest.raises(ValueError):
        small.request(0, candidates=small.n_items + 1)


# -- items, predictions, state ---------------------------------------------------------------


def test_semantic_id_prefixes_follow_embedding_closeness(world: World) -> None:
    rng = np.random.default_rng(0)
    emb = np.concatenate([world.visual, world.text, world.graph], axis=1) / math.sqrt(3)
    i, j = rng.integers(0, world.n_items, (2, 20000))
    cos = np.einsum("nd,nd->n", emb[i], emb[j])
    lcp = (np.cumprod(world.sid[i] == world.sid[j], axis=1)).sum(axis=1)
    # Pairs are rare at deep prefixes, so add pairs drawn within 2-prefix groups.
    key = world.sid[:, 0] * 64 + world.sid[:, 1]
    order = np.argsort(key, kind="stable")
    a, b = order[:-1], order[1:]
    same = key[a] == key[b]
    cos_same = np.einsum("nd,nd->n", emb[a[same]], emb[b[same]])
    assert cos_same.mean() > cos[lcp < 2].mean() + 0.2
    assert cos[lcp >= 1].mean() > cos[lcp == 0].mean() + 0.1
    # Codes are small ints and every level is used.
    assert [np.unique(world.sid[:, level]).size for level in range(4)] == [8] * 4
    assert np.unique(world.sid[:, :2], axis=0).shape[0] > 40


def test_predictions_are_noisy_truth(world: World) -> None:
    reqs = list(world.requests(20, seed=3))
    for k in ("click", "save", "longclick", "hide"):
        p = np.concatenate([getattr(r.predicted, k) for r in reqs])
        q = np.concatenate([getattr(r.truth, k) for r in reqs])
        assert p.dtype == np.float32 and ((p > 0) & (p < 1)).all() and ((q > 0) & (q < 1)).all()
        # Within a request predictions rank candidates well, but are not the truth.
        within = np.mean([spearman(getattr(r.predicted, k), getattr(r.truth, k)) for r in reqs])
        assert 0.7 < within < 0.99, (k, within)
        # Across requests less so: the models are calibrated on the population, not the segment
        # (hide rates differ most between segments, so p_hide suffers most).
        assert spearman(p, q) > 0.4, k
        assert 0.5 < p.mean() / q.mean() < 2.0, k  # calibrated-ish on the population


def test_items_and_flags(world: World) -> None:
    assert world.visual.shape == (20000, 256) and world.text.shape[1] == 384
    assert world.graph.shape[1] == 128 and world.visual.dtype == np.float32
    assert len(world.topic_names) == 40 and np.unique(world.topic_parent).size == 8
    rates = np.bincount(world.item_topic, weights=world.quality_risk, minlength=40)
    rates /= np.bincount(world.item_topic, minlength=40)
    assert rates.max() > 5 * np.median(rates)  # sensitive content concentrates in topics
    assert 0 < world.blocked.mean() < 0.02 and (world.bid > 0).all()
    dup = np.flatnonzero(world.duplicate_of >= 0)
    cos = np.einsum("nd,nd->n", world.visual[dup], world.visual[world.duplicate_of[dup]])
    assert dup.size > 1000 and np.median(cos) > 0.95


def test_user_state_reveals_segment_noisily(world: World) -> None:
    reqs = list(world.requests(800, seed=21, candidates=1))
    x = np.stack([r.user_state for r in reqs]).astype(np.float64)
    y = np.array([r.segment for r in reqs])
    assert x.shape[1] == 32 and reqs[0].user_state.dtype == np.float32
    assert np.bincount(y, minlength=4).min() > 100  # every segment is common
    train, test = slice(0, 500), slice(500, None)
    centres = np.stack([x[train][y[train] == s].mean(axis=0) for s in range(4)])
    guess = np.argmin(((x[test][:, None, :] - centres) ** 2).sum(axis=2), axis=1)
    accuracy = (guess == y[test]).mean()
    assert 0.6 < accuracy < 1.0  # a policy can infer the segment, but not for free


# -- response model -----------------------------------------------------------------------------


def reference_expected(world: World, r: Request, slate: np.ndarray) -> dict[str, np.ndarray]:
    """The response model written slot by slot, as its docstrings describe it."""
    rc = world.config.response
    st = world.config.segments[r.segment]
    index = {int(c): i for i, c in enumerate(r.candidate_ids)}
    topic, parent = world.item_topic, world.topic_parent[world.item_topic]
    vis = world.visual.astype(np.float64)
    flags = (world.quality_risk, world.beauty_filter)
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    out: dict[str, list[float]] = {k: [] for k in OUTCOMES}
    for k, c in enumerate(slate):
        click, long_, save, hide, conv = r.logits[:, index[int(c)]]
        fatigue = cluster = 0.0
        for d in range(1, k + 1):
            p = slate[k - d]
            if d <= rc.fatigue_window:
                same = topic[c] == topic[p]
                sibling = parent[c] == parent[p] and not same
                dup = min(
                    max((vis[c] @ vis[p] - rc.duplicate_cosine) / (1 - rc.duplicate_cosine), 0), 1
                )
                fatigue += (
                    same + rc.super_topic_fatigue * sibling + rc.duplicate_fatigue * dup
                ) / d
            if d <= rc.sensitive_window:
                cluster += sum(bool(f[c] and f[p]) for f in flags) / d
        fatigue *= 0.5 + rc.session_fatigue * r.session_depth
        satiation = math.log1p(sum(topic[p] == topic[c] for p in slate[:k]))
        click -= st.fatigue_click * fatigue + st.satiation * satiation
        click -= st.sensitive_engagement * cluster
        long_ -= st.fatigue_long * fatigue + st.satiation * satiation
        long_ -= st.sensitive_engagement * cluster
        save -= 0.5 * st.fatigue_click * fatigue
        hide += st.fatigue_hide * fatigue + st.sensitive_hide * cluster
        hide += rc.blocked_hide * world.blocked[c]
        exam = (1 + k / st.patience) ** -rc.position_power
        p_click = exam * (1 - sig(hide)) * sig(click)
        out["click"].append(p_click)
        out["long_click"].append(p_click * sig(long_))
        out["save"].append(p_click * sig(save))
        out["hide"].append(exam * sig(hide))
        out["conversion"].append(p_click * sig(conv))
        out["revenue"].append(p_click * float(world.bid[c]))
    return {k: np.array(v) for k, v in out.items()}


def test_expected_matches_slot_by_slot_reference(world: World) -> None:
    for r in world.requests(6, seed=12, candidates=(60, 300)):
        picks = top_t(r.predicted.click, 40)
        slate = r.candidate_ids[picks]
        got, want = world.expected(r, slate), reference_expected(world, r, slate)
        for k in OUTCOMES:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-9, err_msg=k)
    empty = world.expected(r, r.candidate_ids[:0])
    assert all(v.size == 0 for v in empty.values())


def test_chain_batch_rows_are_the_single_slate_chain(world: World) -> None:
    # One implementation serves both paths: a padded batch row is the single-slate chain of its
    # real slots (links included) and zero after them.
    reqs = list(world.requests(5, seed=13, candidates=(30, 120)))
    rng = np.random.default_rng(0)
    rows, width = [], 25
    for r in reqs + reqs[:2]:  # a request may repeat, one row per action
        t = int(rng.integers(0, width + 1))
        p = np.full(width, -1, dtype=np.int64)
        p[:t] = rng.permutation(r.n)[:t]
        rows.append(p)
    positions = np.stack(rows)
    batch = world.chain_batch(reqs + reqs[:2], positions)
    for i, (r, p) in enumerate(zip(reqs + reqs[:2], positions, strict=True)):
        t = int((p >= 0).sum())
        one = world._chain(r, r.candidate_ids[p[:t]])
        assert set(one) == set(batch)
        for k, v in batch.items():
            assert v.shape == positions.shape
            np.testing.assert_allclose(v[i, :t], one[k], rtol=1e-12, atol=0, err_msg=k)
            assert not v[i, t:].any(), k
        want = reference_expected(world, r, r.candidate_ids[p[:t]])
        for k in OUTCOMES:
            np.testing.assert_allclose(batch[k][i, :t], want[k], rtol=1e-5, atol=1e-9)
    empty = world.chain_batch([], np.zeros((0, width), dtype=np.int64))
    assert all(v.shape == (0, width) for v in empty.values())


def test_sampled_outcomes_average_to_expected(world: World) -> None:
    r = world.request(0, seed=30)
    slate = r.candidate_ids[top_t(r.predicted.click, 30)]
    rng = np.random.default_rng(0)
    draws = [world.respond(r, slate, rng) for _ in range(1500)]
    exp = draws[0].expected_totals
    for k in ("click", "long_click", "save", "hide"):
        x = np.array([d.totals[k] for d in draws])
        assert abs(x.mean() - exp[k]) < 4 * x.std() / math.sqrt(x.size) + 1e-9, k
    d = draws[0]
    assert set(d.sampled) == set(OUTCOMES) and d.sampled["click"].dtype == np.int8
    assert (
        (d.sampled["long_click"] <= d.sampled["click"])
        & (d.sampled["hide"] + d.sampled["click"] <= 1)
    ).all()
    assert d.reward({"click": 1}) == pytest.approx(exp["click"])
    a, b = world.respond(r, slate, 5), world.respond(r, slate, 5)
    assert all(np.array_equal(a.sampled[k], b.sampled[k]) for k in OUTCOMES)
    with pytest.raises(KeyError):
        d.reward({"clicks": 1})


def test_respond_rejects_foreign_or_repeated_ids(world: World) -> None:
    r = world.request(0, seed=31, candidates=50)
    outsider = np.setdiff1d(np.arange(world.n_items), r.candidate_ids)[0]
    with pytest.raises(ValueError, match="not candidates"):
        world.respond(r, [r.candidate_ids[0], outsider], 0)
    with pytest.raises(ValueError, match="repeats"):
        world.respond(r, [r.candidate_ids[0], r.candidate_ids[0]], 0)


def test_position_bias(world: World) -> None:
    r = world.request(1, seed=32)
    slate = r.candidate_ids[top_t(r.predicted.click, 40)]
    e = world.expected(r, slate[::-1])
    f = world.expected(r, slate)
    # The same item earns less further down (first vs last slot, both orders).
    assert f["click"][0] > e["click"][-1] and e["click"][0] > f["click"][-1]
    assert f["hide"][0] > e["hide"][-1]


def spread_topics(world: World, slate: np.ndarray) -> np.ndarray:
    """Reorder a slate round-robin over its topics: the same items, repeats far apart."""
    by_topic: dict[int, list[int]] = {}
    for c in slate:
        by_topic.setdefault(int(world.item_topic[c]), []).append(int(c))
    queues = sorted(by_topic.values(), key=len, reverse=True)
    out: list[int] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return np.array(out)


def test_spacing_matters_for_the_same_items(world: World) -> None:
    """Same set of items, two orders: clustered topics vs spread out. Only order differs."""
    gains = []
    for r in world.requests(40, seed=40):
        slate = r.candidate_ids[top_t(r.predicted.click)]
        clustered = slate[np.argsort(world.item_topic[slate], kind="stable")]
        spread = spread_topics(world, slate)
        a = {k: v.sum() for k, v in world.expected(r, clustered).items()}
        b = {k: v.sum() for k, v in world.expected(r, spread).items()}
        gains.append(
            [b["click"] / a["click"], b["long_click"] / a["long_click"], b["hide"] / a["hide"]]
        )
    click, long_click, hide = np.mean(gains, axis=0)
    assert click > 1.05 and long_click > 1.10 and hide < 0.98
    assert long_click - 1 > click - 1  # long clicks suffer more from repetition


def test_clustered_sensitive_items_raise_hides(world: World) -> None:
    ratios = []
    for r in world.requests(30, seed=41):
        ids = r.candidate_ids
        risky = ids[world.quality_risk[ids]][:6]
        safe = ids[~world.quality_risk[ids] & ~world.beauty_filter[ids]][:24]
        if risky.size < 4:
            continue
        # The same items either way: the risky ones in one block, or one in every fifth slot.
        together = np.concatenate([safe[:8], risky, safe[8:]])
        apart = np.concatenate([np.r_[safe[4 * i : 4 * i + 4], risky[i : i + 1]] for i in range(6)])
        e_t = world.expected(r, together)
        e_a = world.expected(r, apart)
        mask_t = np.isin(together, risky)
        mask_a = np.isin(apart, risky)
        ratios.append(e_t["hide"][mask_t].sum() / e_a["hide"][mask_a].sum())
    assert len(ratios) >= 10 and np.mean(ratios) > 1.2


def test_diversified_slate_beats_top_click(world: World) -> None:
    """DESIGN §5: top-T by predicted click does measurably worse on long clicks and hides than a
    reasonably diversified slate (greedy MMR on the visual embedding)."""
    diffs, base = [], []
    for r in world.requests(150, seed=11):
        ids = r.candidate_ids
        top = totals(world, r, top_t(r.predicted.click))
        div = totals(world, r, mmr(r.predicted.click.astype(np.float64), world.visual[ids]))
        diffs.append([div[k] - top[k] for k in ("click", "long_click", "hide")])
        base.append([top[k] for k in ("click", "long_click", "hide")])
    d, b = np.array(diffs), np.array(base).mean(axis=0)
    se = d.std(axis=0) / math.sqrt(len(d))
    rel = d.mean(axis=0) / b
    assert rel[1] > 0.05 and d.mean(axis=0)[1] > 4 * se[1]  # long clicks up, clearly
    assert rel[2] < -0.02 and d.mean(axis=0)[2] < -2 * se[2]  # hides down
    assert rel[0] > -0.02  # without paying in clicks


# -- personalisation (issue 5 depends on it) --------------------------------------------------

GRID = list(
    itertools.product([0.0, 0.5, 1.0, 2.0, 4.0, 8.0], [0.0, -2.0, -5.0, -10.0, -20.0, -40.0])
)


def segment_grid_rewards(world: World, segment: int, n: int) -> np.ndarray:
    """Mean expected reward of top-T by u = p_click + w_l p_longclick + w_h p_hide, per grid point."""
    out = np.zeros(len(GRID))
    for r in world.requests(n, seed=50 + segment, segments=[segment]):
        p = r.predicted
        for g, (wl, wh) in enumerate(GRID):
            u = p.click + wl * p.longclick + wh * p.hide
            out[g] += reward(totals(world, r, top_t(u)))
    return out / n


def test_personalised_weights_beat_best_fixed(world: World) -> None:
    names = world.segment_names
    assert names == ("clicker", "saver", "long_reader", "fatigued")
    table = np.stack([segment_grid_rewards(world, s, 30) for s in range(4)])
    best = [GRID[int(i)] for i in table.argmax(axis=1)]
    clicker, _, reader, fatigued = best
    assert clicker[0] < reader[0]  # long readers want more long-click weight
    assert fatigued[1] < clicker[1]  # the fatigued want a stronger hide penalty
    shares = np.array([s.share for s in world.config.segments])
    fixed = (shares @ table).max()  # best single weight vector for the population
    personalised = shares @ table.max(axis=1)
    # About +18% on this grid; DRL-PUT's >= +5% target (issue 5) needs headroom well above it.
    assert personalised > 1.10 * fixed, (personalised, fixed)


def test_fatigued_users_gain_most_from_diversity(world: World) -> None:
    gain = {}
    for s in (0, 3):
        g = []
        for r in world.requests(40, seed=60 + s, segments=[s]):
            ids = r.candidate_ids
            top = reward(totals(world, r, top_t(r.predicted.click)), {"click": 1, "long_click": 2})
            div = mmr(r.predicted.click.astype(np.float64), world.visual[ids])
            g.append(reward(totals(world, r, div), {"click": 1, "long_click": 2}) / top)
        gain[s] = float(np.mean(g))
    assert gain[3] > gain[0] + 0.03
