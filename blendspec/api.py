"""The in-memory Python API: blend candidates a notebook or a pipeline already holds, and
diversify one request held in numpy arrays — through the code `blend run` runs.

`blend` hands the candidates to the dump reader of `blend run` (as an
:class:`~blendspec.io.dump.ArrowDump`) and the batches to the same runner and request loop, so
the slates are the ones `blend run` would write for the same rows, checked the same way: a bad
request is a `BadRequestError` naming the request, its row and column, a dump that cannot be
read a `DumpError`, a spec with a mistake a `SpecError` with its diagnostics. No dataframe library is
imported here: anything that speaks the Arrow C stream interface (pandas, polars, DuckDB,
pyarrow itself) hands its columns over through it.

`diversify` is one call for one request, in the spirit of pyversity's: numpy embeddings and
scores in, the picked indices and their scores out. It validates the parameters with the spec's
own `diversity` block (so the ranges and defaults are the language's) and then runs what the
compiled graph runs for that block: the relevance normalisation, the cosine feature map and the
diversifier's operator, on its compiled loop or its torch path.

Torch and the engine are imported inside the functions, so `import blendspec` stays light.
"""

from __future__ import annotations

import numbers
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from blendspec.engine.blend import RunSummary
    from blendspec.io.dump import ArrowDump
    from blendspec.spec.loader import LoadedSpec
    from blendspec.spec.syntax import Syntax

__all__ = ["ALGORITHMS", "BlendResult", "Diversified", "blend", "diversify", "resolve_spec"]

BadRequestPolicy = Literal["error", "skip"]
Kernels = Literal["native", "torch"]

ALGORITHMS: tuple[str, ...] = ("ssd", "dpp", "mmr", "msd", "cover", "none")
"""What `diversify` runs: every diversifier of the spec language (`diversity NAME {…}`)."""


# ---------------------------------------------------------------------------------------- specs


def resolve_spec(
    spec: str | os.PathLike[str] | LoadedSpec, *, syntax: Syntax | None = None
) -> LoadedSpec:
    """A spec from a path, from its text or as already loaded.

    A `str` is a path when it is one line naming a `.blend`, `.yaml` or `.yml` file (or an
    existing file); anything else is the spec's text, DSL or YAML as its first statement shows
    (``syntax`` says it outright). A spec with an error raises `SpecError`, whose message is
    what `blend validate` prints.
    """
    from blendspec.spec.loader import LoadedSpec, load_spec, load_text

    if isinstance(spec, LoadedSpec):
        return spec
    if isinstance(spec, os.PathLike):
        return load_spec(Path(spec))
    if not isinstance(spec, str):
        raise TypeError(
            "spec must be a path, the text of a spec or a loaded spec (blendspec.load_spec), "
            f"not {type(spec).__name__}"
        )
    if syntax is None and _names_a_file(spec):
        return load_spec(spec)
    if syntax is not None and syntax not in ("dsl", "yaml"):
        raise ValueError(f"syntax must be 'dsl' or 'yaml', not {syntax!r}")
    return load_text(spec, syntax or syntax_of_text(spec))


def _names_a_file(text: str) -> bool:
    from blendspec.spec.syntax import syntax_of

    if not text.strip() or "\n" in text.strip():
        return False
    path = Path(text.strip())
    try:
        return syntax_of(path) is not None or path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


_YAML_KEY = re.compile(r"""^\s*(["']?)[A-Za-z_][\w.-]*\1\s*:(\s|$)""")


def syntax_of_text(text: str) -> Syntax:
    """DSL or YAML, from the first line that is not blank or a comment: a YAML spec opens with
    a key and its colon (`name: feed`), a document marker or a flow mapping; a DSL spec with a
    statement keyword (`spec feed`, `slate 50`, `input p: score`)."""
    for line in text.lstrip("\ufeff").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith(("---", "%YAML", "{")) or _YAML_KEY.match(line):
            return "yaml"
        return "dsl"
    return "dsl"


# ---------------------------------------------------------------------------------- candidates


def candidates_source(candidates: Any) -> Path | ArrowDump:
    """What the dump reader reads for `candidates`: a dump's path as is, Arrow data in memory
    as an `ArrowDump` named after its type (the messages' "file")."""
    import pyarrow as pa

    from blendspec.io.dump import ArrowDump, DumpError

    if isinstance(candidates, ArrowDump):
        return candidates
    if isinstance(candidates, str | os.PathLike):
        return Path(candidates)
    name = f"candidates ({_type_name(candidates)})"
    try:
        return _arrow_dump(candidates, name)
    except (pa.ArrowException, ValueError) as error:
        # A column the producer cannot express in Arrow (pandas: an object column of mixed
        # types); pyarrow's message names the column.
        raise DumpError(f"{name}: cannot be read as Arrow data ({error})") from None


def _arrow_dump(candidates: Any, name: str) -> ArrowDump:
    import pyarrow as pa

    from blendspec.io.dump import ArrowDump

    if isinstance(candidates, pa.Table):
        return ArrowDump(candidates, name)
    if isinstance(candidates, pa.RecordBatch):
        return ArrowDump(pa.Table.from_batches([candidates]), name)
    if isinstance(candidates, pa.RecordBatchReader):
        return ArrowDump(candidates, name)
    if hasattr(type(candidates), "__arrow_c_stream__"):
        from_stream = getattr(pa.RecordBatchReader, "from_stream", None)
        if from_stream is None:  # pragma: no cover - pyarrow < 15
            return ArrowDump(pa.table(_pandas_or_fail(candidates)), name)
        return ArrowDump(from_stream(candidates), name)
    if hasattr(type(candidates), "__arrow_c_array__"):
        return ArrowDump(pa.Table.from_batches([pa.record_batch(candidates)]), name)
    if isinstance(candidates, Mapping):
        return ArrowDump(pa.table(dict(candidates)), name)
    return ArrowDump(pa.Table.from_pandas(_pandas_or_fail(candidates)), name)


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"


def _pandas_or_fail(candidates: Any) -> Any:
    if type(candidates).__module__.split(".")[0] == "pandas":
        return candidates
    lazy = " (a lazy frame: collect it first)" if hasattr(candidates, "collect") else ""
    raise TypeError(
        "candidates must be a dump's path, a pyarrow Table, RecordBatch or RecordBatchReader, "
        "a pandas or polars DataFrame, a mapping of columns, or any object with "
        f"`__arrow_c_stream__`; got {_type_name(candidates)}{lazy}"
    )


# -------------------------------------------------------------------------------------- blend


@dataclass(frozen=True)
class BlendResult:
    """Everything a `blend run` produces, in memory: the slates, the rejects (with
    ``on_bad_request="skip"``; the columns of `blend run`'s rejects file) and the summary that
    `--metrics` writes (counts, slate metrics, the policy's fallbacks)."""

    slates: pa.Table
    rejects: pa.Table
    summary: RunSummary


@overload
def blend(
    spec: str | os.PathLike[str] | LoadedSpec,
    candidates: Any,
    *,
    batch_size: int = ...,
    limit: int | None = ...,
    on_bad_request: BadRequestPolicy = ...,
    kernels: Kernels = ...,
    syntax: Syntax | None = ...,
    progress: Callable[[int], None] | None = ...,
    full_output: Literal[False] = ...,
) -> pa.Table: ...


@overload
def blend(
    spec: str | os.PathLike[str] | LoadedSpec,
    candidates: Any,
    *,
    batch_size: int = ...,
    limit: int | None = ...,
    on_bad_request: BadRequestPolicy = ...,
    kernels: Kernels = ...,
    syntax: Syntax | None = ...,
    progress: Callable[[int], None] | None = ...,
    full_output: Literal[True],
) -> BlendResult: ...


def blend(
    spec: str | os.PathLike[str] | LoadedSpec,
    candidates: Any,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    on_bad_request: BadRequestPolicy = "error",
    kernels: Kernels = "native",
    syntax: Syntax | None = None,
    progress: Callable[[int], None] | None = None,
    full_output: bool = False,
) -> pa.Table | BlendResult:
    """Blend candidates into slates: the table `blend run SPEC --candidates … -o slates.parquet`
    writes, one row per slot (DESIGN §4), for the same rows.

    ``spec``: a path, the spec's text (DSL or YAML; ``syntax`` forces one) or a loaded spec.
    ``candidates``: one row per candidate with ``request_id``, ``candidate_id`` and a column per
    declared input — a pyarrow Table, RecordBatch or RecordBatchReader (read as a stream), a
    pandas or polars DataFrame or anything with ``__arrow_c_stream__``, a mapping of columns, or
    a dump's path. A stream is read batch by batch, except with ``on_bad_request="skip"``: a
    request whose rows are scattered makes that mode read the candidates twice, so a stream is
    read into a Table first. ``batch_size``, ``limit``, ``on_bad_request`` and ``kernels`` are `blend
    run`'s options; ``progress(n)`` is called as each batch's ``n`` requests are done.

    A bad request raises `BadRequestError` (request, row, column, reason); with
    ``on_bad_request="skip"`` it is left out of the slates instead, and ``full_output=True``
    returns a `BlendResult` with the rejects and the summary (without it, skipped requests are
    reported by a warning).
    """
    from blendspec import ops
    from blendspec.engine.blend import Runner, blend_to_table, rejects_table
    from blendspec.io.dump import ArrowDump, DumpReader

    if on_bad_request not in ("error", "skip"):
        raise ValueError(f"on_bad_request must be 'error' or 'skip', not {on_bad_request!r}")
    if kernels not in ops.KERNELS:
        raise ValueError(
            f"kernels must be one of {', '.join(map(repr, ops.KERNELS))}, not {kernels!r}"
        )
    _check_count("batch_size", batch_size, minimum=1)
    if limit is not None:
        _check_count("limit", limit, minimum=0)
    loaded = resolve_spec(spec, syntax=syntax)
    source = candidates_source(candidates)
    if on_bad_request == "skip" and isinstance(source, ArrowDump):
        # A request whose rows are scattered makes a skipping run read the dump twice.
        source = source.materialized()
    started = time.perf_counter()
    with ops.kernels(kernels):
        runner = Runner(loaded)
        slates, tally = blend_to_table(
            runner, DumpReader(source, loaded.spec), batch_size=int(batch_size),
            limit=None if limit is None else int(limit), on_bad_request=on_bad_request,
            progress=progress,
        )  # fmt: skip
    if full_output:
        summary = tally.summary(time.perf_counter() - started)
        return BlendResult(slates, rejects_table(tally.rejects), summary)
    if tally.rejects:
        first = tally.rejects[0]
        warnings.warn(
            f"{len(tally.rejects)} request{'s' * (len(tally.rejects) > 1)} skipped, the first "
            f"{first}; blend(..., full_output=True) returns them as a table",
            stacklevel=2,
        )
    return slates


def _check_count(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")


# ---------------------------------------------------------------------------------- diversify


@dataclass(frozen=True, eq=False)  # arrays have no truth value: compare the fields yourself
class Diversified:
    """One request's diversified slate: ``indices`` (int64, into the request's candidates, in
    slate order) and ``scores`` (float32, the score each greedy step maximised: relevance and
    diversity terms as the algorithm weighs them). Unpacks as ``indices, scores``.

    ``params`` holds every parameter of the algorithm, defaults included, under the spec
    language's names; ``early_stop`` says that DPP's ε stop was reached and the rest of the slate
    was filled by relevance.
    """

    indices: np.ndarray
    scores: np.ndarray
    algorithm: str
    params: dict[str, Any]
    early_stop: bool = False

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.indices
        yield self.scores

    @property
    def selection_scores(self) -> np.ndarray:
        """pyversity's name for `scores`."""
        return self.scores


_SIMILARITY = {"kind": "call", "fn": "cosine", "args": [{"kind": "ref", "name": "embeddings"}]}
"""`cosine(embeddings)`, already parsed: the formula parser costs more than a small request."""
_TRADE_OFF = {"ssd": "theta", "mmr": "lambda", "msd": "theta", "cover": "theta"}
"""The parameter pyversity's ``diversity`` is one minus of, per algorithm (relevance's share)."""
_ALIASES = {"lambda_": "lambda", "lam": "lambda"}


def diversify(
    embeddings: Any,
    scores: Any,
    k: int,
    algorithm: str = "ssd",
    *,
    kernels: Kernels = "native",
    **params: Any,
) -> Diversified:
    """Pick `k` of one request's candidates, relevant and diverse: ``embeddings`` ``[N, d]``,
    ``scores`` ``[N]`` (the utility), the algorithm of a spec's ``diversity`` block and its
    parameters under the same names and ranges (docs/language.md)::

        indices, scores = blendspec.diversify(emb, utility, 10, "dpp", alpha=0.8, window=5)

    Similarity is the cosine of the embeddings — the block's ``similarity = cosine(…)`` — and
    the arithmetic is `blend run`'s: float32 inputs, the same normalisation, feature map and
    operator (``kernels="torch"`` runs the torch path that `blend export` traces). pyversity's
    ``diversity`` is accepted for the algorithms with one trade-off in [0, 1]: ``1 - diversity``
    is SSD's, MSD's and COVER's ``theta`` and MMR's ``lambda``. An unknown parameter, a value out
    of range, arrays of the wrong shape or with NaN or Inf raise ValueError (TypeError for a
    wrong type), naming the parameter or the element.
    """
    import numpy as np
    import torch

    from blendspec import ops
    from blendspec.diversity import DIVERSIFIERS

    name = _algorithm(algorithm)
    plugin = DIVERSIFIERS[name]
    block = _block(name, params)
    if kernels not in ops.KERNELS:
        raise ValueError(
            f"kernels must be one of {', '.join(map(repr, ops.KERNELS))}, not {kernels!r}"
        )
    _check_count("k", k, minimum=0)
    emb, utility = _request_arrays(embeddings, scores)
    n = utility.shape[0]
    settings = block.model_dump(by_alias=True, exclude={"algorithm", "similarity"})
    length = min(int(k), n)
    if length == 0:
        return Diversified(
            np.zeros(0, np.int64), np.zeros(0, np.float32), name, settings, early_stop=False
        )
    mask = torch.ones((1, n), dtype=torch.bool)
    u = torch.from_numpy(utility)[None]
    with ops.kernels(kernels), torch.inference_mode():
        if plugin.uses_features:
            # compiler/compile.py's selection: normalise, feature map, the plugin's operator.
            relevance = ops.normalize_relevance(u, mask, block.relevance_method() or "raw")
            signals = ops.SimilaritySignals(embeddings=((torch.from_numpy(emb)[None], 1.0),))
            features = ops.feature_map(signals, mask, bias=plugin.feature_bias)
        else:
            relevance, features = u, None
        attrs = {"length": length, **block.node_attrs()}
        selection = plugin.select(attrs, relevance, features, mask, None, trace=False)
    picks = selection.indices[0].numpy()
    filled = int((picks >= 0).sum())  # filled slots are a prefix
    return Diversified(
        picks[:filled].astype(np.int64),
        selection.scores[0, :filled].numpy().astype(np.float32),
        name,
        settings,
        early_stop=bool(selection.early_stops[0]),
    )


def _algorithm(algorithm: Any) -> str:
    from blendspec.spec.diagnostics import did_you_mean

    name = getattr(algorithm, "value", algorithm)  # pyversity's Strategy enum
    if not isinstance(name, str):
        raise TypeError(f"algorithm must be a string, not {type(algorithm).__name__}")
    name = name.lower()
    if name not in ALGORITHMS:
        hint = did_you_mean(name, ALGORITHMS)
        raise ValueError(
            f"unknown algorithm `{name}`; expected one of {', '.join(ALGORITHMS)}"
            + (f" ({hint})" if hint else "")
        )
    return name


def _block(name: str, params: Mapping[str, Any]) -> Any:
    """The algorithm's `diversity` block from the parameters, validated as a spec's is."""
    import pydantic

    from blendspec.diversity import DIVERSIFIERS
    from blendspec.spec.diagnostics import did_you_mean

    plugin = DIVERSIFIERS[name]
    known = [
        field.alias or key
        for key, field in plugin.model_fields.items()
        if key not in ("algorithm", "similarity")
    ]
    where = f"diversify(algorithm={name!r})"
    values: dict[str, Any] = {}
    for key, value in params.items():
        key = _ALIASES.get(key, key)
        if key == "diversity" and name in _TRADE_OFF:
            value = _trade_off(where, value)
            key = _TRADE_OFF[name]
        if key in values:
            raise ValueError(f"{where}: `{key}` is given twice (as `diversity` and by name)")
        if key not in known:
            raise ValueError(_unknown(where, key, known, name, did_you_mean))
        values[key] = value
    if "similarity" in plugin.model_fields:
        values["similarity"] = _SIMILARITY
    try:
        return plugin.model_validate({"algorithm": name, **values})
    except pydantic.ValidationError as error:
        problems = []
        for problem in error.errors(include_url=False):
            field = str(problem["loc"][0]) if problem["loc"] else "?"
            message = problem["msg"]
            message = message[:1].lower() + message[1:]
            problems.append(f"`{field}` = {problem.get('input')!r}: {message}")
        raise ValueError(f"{where}: " + "; ".join(problems)) from None


def _trade_off(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: `diversity` must be a number, not {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where}: `diversity` = {value!r}: must lie in [0, 1]")
    return 1.0 - float(value)


def _unknown(where: str, key: str, known: list[str], name: str, did_you_mean: Any) -> str:
    if key == "similarity":
        return f"{where}: the similarity is the cosine of `embeddings`; it takes no `similarity`"
    if key == "diversity":
        return (
            f"{where}: `diversity` (pyversity's trade-off) has no one meaning for `{name}`; "
            f"set its own parameters: {', '.join(known) or 'it has none'}"
        )
    hint = did_you_mean(key, known)
    listed = f"its parameters: {', '.join(known)}" if known else "it takes no parameters"
    return f"{where} has no parameter `{key}`" + (f" ({hint})" if hint else "") + f"; {listed}"


def _request_arrays(embeddings: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``[N, d]`` and scores ``[N]`` as the float32 arrays `blend run` would pad."""
    import numpy as np

    emb = _float32("embeddings", embeddings)
    utility = _float32("scores", scores)
    if utility.ndim != 1:
        raise ValueError(f"scores must be one-dimensional [N], got shape {utility.shape}")
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be two-dimensional [N, d], got shape {emb.shape}")
    if emb.shape[0] != utility.shape[0]:
        raise ValueError(
            f"embeddings has {emb.shape[0]} rows but scores has {utility.shape[0]} values; "
            "one row per candidate"
        )
    if emb.shape[1] == 0 and emb.shape[0]:
        raise ValueError("embeddings has 0 columns; an embedding needs at least one")
    if not np.isfinite(utility).all():
        bad = np.flatnonzero(~np.isfinite(utility))[0]
        raise ValueError(f"scores[{bad}] is {utility[bad]} (scores must be finite)")
    if not np.isfinite(emb).all():
        row = np.flatnonzero(~np.isfinite(emb).all(axis=1))[0]
        raise ValueError(f"embeddings[{row}] holds NaN or Inf (embeddings must be finite)")
    return _writable(emb), _writable(utility)


def _writable(array: np.ndarray) -> np.ndarray:
    """Contiguous, and writable: torch warns on a read-only array (pandas and Arrow hand those
    out), though nothing writes to the request's inputs."""
    import numpy as np

    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def _float32(name: str, values: Any) -> np.ndarray:
    import numpy as np

    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise TypeError(f"{name} must hold real numbers, not {array.dtype}")
    with np.errstate(over="ignore"):  # a value past float32's range becomes inf: reported
        return array.astype(np.float32, copy=False)
