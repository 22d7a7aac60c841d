"""The impact of a spec change on real slates (`blend diff --candidates`): both specs blend the
same requests of a dump, and the slates and their metrics are compared.

This is the only part of `review/` that runs the blend, so it is the only one that needs torch and
the operators; it imports them inside its functions, and nothing on the plain diff path imports
this module. The per-request arithmetic is in `review/slates.py`; the records it fills are in
`review/changes.py`.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from blendspec.review.changes import Impact, MetricComparison, RequestChange
from blendspec.review.slates import bootstrap_interval, compare_slates, overlap_ks
from blendspec.spec.forms import split_similarity
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import Spec

if TYPE_CHECKING:
    import torch

    from blendspec.io.dump import DumpReader, RequestBatch


@dataclass(frozen=True)
class _Yardstick:
    """Which inputs and settings measure *both* slates, so that old and new metrics compare.

    They are what `blend run` uses for the old spec (its first cosine embedding, category,
    semantic ID and penalty min_prefix), completed from the new spec, plus the spacing sets of
    both specs, and the widest of both specs' windows. Each entry is (side, input name).
    """

    embedding: tuple[str, str] | None
    category: tuple[str, str] | None
    semantic_id: tuple[str, str] | None
    flags: dict[str, tuple[str, str]]  # metric name → (side, input)
    window: int
    min_prefix: int


def _runner_inputs(spec: Spec) -> dict[str, str | None]:
    embedding = None
    similarity = spec.diversity.similarity_formula()
    if similarity is not None:
        signals, _ = split_similarity(similarity, ())
        embedding = next((s.input for s in signals if s.signal == "cosine"), None)
    if embedding is None:
        embedding = next((n for n, i in spec.inputs.items() if i.kind == "embedding"), None)
    penalty = spec.semantic_id_penalty
    return {
        "embedding": embedding,
        "category": next((n for n, i in spec.inputs.items() if i.kind == "category"), None),
        "semantic_id": penalty.input
        if penalty
        else next((n for n, i in spec.inputs.items() if i.kind == "semantic_id"), None),
    }


def _yardstick(old: Spec, new: Spec, renames: Mapping[str, str]) -> _Yardstick:
    chosen_old, chosen_new = _runner_inputs(old), _runner_inputs(new)

    def pick(role: str) -> tuple[str, str] | None:
        if chosen_old[role] is not None:
            return ("old", chosen_old[role])  # type: ignore[return-value]
        if chosen_new[role] is not None:
            return ("new", chosen_new[role])  # type: ignore[return-value]
        return None

    flags = {renames.get(name, name): ("old", name) for name in old.spacing}
    for name in new.spacing:
        flags.setdefault(name, ("new", name))
    windows = [s.window for s in old.spacing.values()] + [s.window for s in new.spacing.values()]
    penalty = old.semantic_id_penalty or new.semantic_id_penalty
    return _Yardstick(
        pick("embedding"),
        pick("category"),
        pick("semantic_id"),
        flags,
        max([*windows, 5]),
        penalty.min_prefix if penalty else 1,
    )


def _dump_columns(path: Path) -> set[str] | None:
    """Column names of a dump's first file, to read a renamed input under either name."""
    from blendspec.io.dump import JSONL_SUFFIXES, dump_files

    try:
        files = dump_files(path)
        if not files:
            return None
        first = files[0]
        if first.suffix.lower() in JSONL_SUFFIXES:
            with first.open("rb") as handle:
                line = handle.readline()
            return set(json.loads(line)) if line.strip() else None
        import pyarrow.parquet as pq

        return set(pq.read_schema(first).names)
    except Exception:  # the reader reports unreadable dumps properly
        return None


def _reading_spec(spec: Spec, aliases: Mapping[str, str]) -> Spec:
    """The spec with some inputs read from other columns (a renamed input's other name)."""
    if not aliases:
        return spec
    inputs = {aliases.get(n, n): i for n, i in spec.inputs.items()}
    return spec.model_copy(update={"inputs": inputs})


def _subset(
    batch: RequestBatch,
    spec: Spec,
    out: dict[str, torch.Tensor],
    rows: torch.Tensor,
    width: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """The compared requests' rows of a batch and of its blend, cut to `width` candidates (both
    sides then have the same shapes even when one side's batch also held a request it rejected)."""
    inputs = {}
    for name, tensor in batch.inputs.items():
        picked = tensor.index_select(0, rows)
        per_request = name in spec.inputs and spec.inputs[name].per_request
        inputs[name] = picked if per_request else picked[:, :width]
    selected = {k: v.index_select(0, rows) for k, v in out.items() if k != "weights"}
    selected["candidate_utility"] = selected["candidate_utility"][:, :width]
    return inputs, selected, batch.mask.index_select(0, rows)[:, :width]


class _Accumulator:
    """Per-request values of every batch, joined at the end."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.values: dict[str, list[np.ndarray]] = defaultdict(list)
        self.metrics_old: dict[str, list[np.ndarray]] = defaultdict(list)
        self.metrics_new: dict[str, list[np.ndarray]] = defaultdict(list)
        self.most: list[tuple[tuple[float, ...], RequestChange]] = []

    def add(self, ids: Sequence[str], comparison: dict[str, torch.Tensor], t: int) -> None:
        arrays = {k: v.numpy() for k, v in comparison.items()}
        for key, value in arrays.items():
            self.values[key].append(value)
        if self.top <= 0:
            return
        for i in np.flatnonzero(arrays["changed"]):
            kendall = float(arrays["kendall"][i])
            change = RequestChange(
                request_id=str(ids[i]),
                old_length=int(arrays["old_length"][i]),
                new_length=int(arrays["new_length"][i]),
                overlap=float(arrays[f"overlap@{t}"][i]),
                kendall=kendall,
                spearman=float(arrays["spearman"][i]),
                position_shift=float(arrays["shift"][i]),
                first_difference=int(arrays["first_difference"][i]),
            )
            key = (
                _nan_last(change.overlap),
                _nan_last(kendall),
                -_nan_first(change.position_shift),
                float(change.first_difference),
            )
            self.most.append((key, change))
        if len(self.most) > 4 * self.top:
            self.most.sort(key=lambda item: (item[0], item[1].request_id))
            del self.most[self.top :]

    def column(self, key: str) -> np.ndarray:
        parts = self.values.get(key)
        return np.concatenate(parts) if parts else np.zeros(0)


def _nan_last(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _nan_first(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


_SKIPPED_METRICS = ("empty",)  # the same for both by construction: it describes the request


def _measure(
    selected: dict[str, torch.Tensor],
    mask: torch.Tensor,
    inputs: Mapping[str, Mapping[str, torch.Tensor]],
    yardstick: _Yardstick,
) -> dict[str, torch.Tensor]:
    """Metrics of one side's slates, measured with the shared yardstick."""
    from blendspec import ops

    def tensor(entry: tuple[str, str] | None) -> torch.Tensor | None:
        return None if entry is None else inputs[entry[0]][entry[1]]

    selection = ops.Selection(
        indices=selected["indices"],
        scores=selected["scores"],
        cap_violations=selected["cap_violations"],
        early_stops=selected["early_stops"],
    )
    return ops.slate_metrics(
        selection,
        selected["candidate_utility"],
        mask,
        embeddings=tensor(yardstick.embedding),
        categories=tensor(yardstick.category),
        semantic_ids=tensor(yardstick.semantic_id),
        flags={name: inputs[side][column] for name, (side, column) in yardstick.flags.items()},
        window=yardstick.window,
        min_prefix=yardstick.min_prefix,
    )


class _Scattered(Exception):
    """A request came back after another one: the comparison starts over (see
    `compute_impact`)."""

    def __init__(self, progressed: int) -> None:
        self.progressed = progressed


class _Comparison:
    """One pass of `compute_impact` over both readers' batches: blends both sides, compares
    the requests both blended, counts the ones either rejected."""

    def __init__(
        self,
        old: LoadedSpec,
        new: LoadedSpec,
        *,
        back_old: Mapping[str, str],
        back_new: Mapping[str, str],
        yardstick: _Yardstick,
        ks: Sequence[int],
        t: int,
        top: int,
    ) -> None:
        from blendspec.engine.blend import Runner

        self.old, self.new = old, new
        self.runner_old, self.runner_new = Runner(old), Runner(new)
        self.back_old, self.back_new = back_old, back_new
        self.yardstick, self.ks, self.t, self.top = yardstick, ks, t, top
        self.acc = _Accumulator(top)

    def reset(self) -> None:
        """Forget what a pass accumulated (it compared part of a scattered request)."""
        self.acc = _Accumulator(self.top)

    def run(
        self,
        reader_old: DumpReader,
        reader_new: DumpReader,
        batch_size: int,
        limit: int | None,
        progress: Callable[[int], None] | None,
        *,
        restartable: bool,
    ) -> tuple[int, int, int]:
        """(rejected by the new spec only, by the old only, by both); raises `_Scattered`
        when `restartable` and a request's rows turn out not to be contiguous."""
        import torch

        from blendspec.io.dump import CHECK_CONTIGUOUS

        acc, ks, t = self.acc, self.ks, self.t
        only_old = only_new = rejected_both = progressed = 0
        batches_old = reader_old.batches(batch_size, limit)
        batches_new = reader_new.batches(batch_size, limit)
        for batch_old, batch_new in zip(batches_old, batches_new, strict=True):
            if restartable and any(
                CHECK_CONTIGUOUS in problem.checks
                for problem in (*batch_old.rejected, *batch_new.rejected)
            ):
                raise _Scattered(progressed)
            batch_old.inputs = {self.back_old.get(k, k): v for k, v in batch_old.inputs.items()}
            batch_new.inputs = {self.back_new.get(k, k): v for k, v in batch_new.inputs.items()}
            rejected_old = {r.request_id for r in batch_old.rejected}
            rejected_new = {r.request_id for r in batch_new.rejected}
            rejected_both += len(rejected_old & rejected_new)
            position_new = {r: i for i, r in enumerate(batch_new.request_ids)}
            ids = [r for r in batch_old.request_ids if r in position_new]
            only_old += batch_old.size - len(ids)
            only_new += batch_new.size - len(ids)
            if ids:
                out_old = self.runner_old.blend(batch_old)
                out_new = self.runner_new.blend(batch_new)
                position_old = {r: i for i, r in enumerate(batch_old.request_ids)}
                rows_old = torch.tensor([position_old[r] for r in ids], dtype=torch.int64)
                rows_new = torch.tensor([position_new[r] for r in ids], dtype=torch.int64)
                width = int(batch_old.mask.index_select(0, rows_old).sum(1).max())
                inputs_old, sel_old, mask = _subset(
                    batch_old, self.old.spec, out_old, rows_old, width
                )
                inputs_new, sel_new, _ = _subset(batch_new, self.new.spec, out_new, rows_new, width)
                comparison = compare_slates(sel_old["indices"], sel_new["indices"], ks)
                acc.add(ids, comparison, t)
                sides = {"old": inputs_old, "new": inputs_new}
                with torch.inference_mode():
                    for side_metrics, selected in (
                        (acc.metrics_old, sel_old),
                        (acc.metrics_new, sel_new),
                    ):
                        for name, values in _measure(selected, mask, sides, self.yardstick).items():
                            if name not in _SKIPPED_METRICS:
                                side_metrics[name].append(values.to(torch.float64).numpy())
            if progress is not None:
                progress(batch_old.size + len(batch_old.rejected))
                progressed += batch_old.size + len(batch_old.rejected)
        return only_old, only_new, rejected_both


def compute_impact(
    old: LoadedSpec,
    new: LoadedSpec,
    candidates: Path,
    *,
    renames: Mapping[str, str] | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    top: int = 5,
    resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Impact:
    """Blend the same requests with both specs and compare the slates and their metrics.

    The dump is read by one reader per spec (each spec reads its own inputs); both readers see
    the same raw requests per batch, so the k-th batches are joined on request id. A request
    that one spec rejects is counted, not compared. `renames` (old input → new input) lets a
    renamed input be read from whichever of its two names the dump has.

    A request whose rows are not contiguous is found where it comes back, after its first run
    may have been compared. As in ``blend run`` (`blendspec.engine.blend.blend_source`), the comparison
    then starts over: the ids are scanned for every such request, and a second pass has both
    readers reject each of them whole, once ("rejected by both"), so no slate is compared from
    part of a request's rows. A dump without such a request is read once.
    """
    from blendspec.io.dump import DumpReader

    started = time.perf_counter()
    renames = dict(renames or {})
    columns = _dump_columns(candidates) or set()
    old_alias = {o: n for o, n in renames.items() if o not in columns and n in columns}
    new_alias = {n: o for o, n in renames.items() if n not in columns and o in columns}
    spec_old = _reading_spec(old.spec, old_alias)
    spec_new = _reading_spec(new.spec, new_alias)
    t = max(old.spec.slate.length, new.spec.slate.length)
    ks = overlap_ks(t)
    compare = _Comparison(
        old, new, back_old={v: k for k, v in old_alias.items()},
        back_new={v: k for k, v in new_alias.items()},
        yardstick=_yardstick(old.spec, new.spec, renames), ks=ks, t=t, top=top,
    )  # fmt: skip
    readers = (DumpReader(candidates, spec_old), DumpReader(candidates, spec_new))
    try:
        counts = compare.run(*readers, batch_size, limit, progress, restartable=True)
    except _Scattered as stopped:
        scattered = readers[0].scattered_runs(limit)
        if progress is not None:
            progress(-stopped.progressed)
        compare.reset()
        counts = compare.run(
            DumpReader(candidates, spec_old, scattered=scattered),
            DumpReader(candidates, spec_new, scattered=scattered),
            batch_size, limit, progress, restartable=False,
        )  # fmt: skip
    only_old, only_new, rejected_both = counts
    acc = compare.acc

    metrics: list[MetricComparison] = []
    for name, parts in acc.metrics_old.items():
        before = np.concatenate(parts)
        after = np.concatenate(acc.metrics_new[name])
        both = np.isfinite(before) & np.isfinite(after)
        d = after[both] - before[both]
        low, high = bootstrap_interval(d, resamples=resamples, seed=seed)
        metrics.append(
            MetricComparison(
                name=name,
                old=float(before[both].mean()) if both.any() else float("nan"),
                new=float(after[both].mean()) if both.any() else float("nan"),
                difference=float(d.mean()) if len(d) else float("nan"),
                low=low,
                high=high,
                requests=int(both.sum()),
            )
        )
    changed = acc.column("changed").astype(bool)
    acc.most.sort(key=lambda item: (item[0], item[1].request_id))
    return Impact(
        candidates=str(candidates),
        requests=len(changed),
        only_old=only_old,
        only_new=only_new,
        rejected=rejected_both,
        changed=int(changed.sum()),
        length_changed=int((acc.column("old_length") != acc.column("new_length")).sum()),
        position_shift=_nanmean(acc.column("shift")),
        overlap={k: _nanmean(acc.column(f"overlap@{k}")) for k in ks},
        kendall=_nanmean(acc.column("kendall")),
        spearman=_nanmean(acc.column("spearman")),
        metrics=metrics,
        most_changed=[change for _, change in acc.most[:top]],
        slate_length=t,
        resamples=resamples,
        seed=seed,
        seconds=time.perf_counter() - started,
    )


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")
