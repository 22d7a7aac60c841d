"""The in-memory Python API: `blendspec.blend` gives `blend run`'s slates for candidates held by
pyarrow, pandas or polars, with `blend run`'s checks; `blendspec.diversify` runs one request
through the engine's operators; `import blendspec` exports the documented names lazily; and the
code of docs/notebook.md runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import blendspec
from blendspec import ops
from blendspec.api import ALGORITHMS, BlendResult, Diversified, syntax_of_text
from blendspec.cli import app
from blendspec.engine.blend import BadRequestError
from blendspec.io.dump import DumpError
from blendspec.spec.diagnostics import SpecError
from blendspec.spec.loader import load_spec
from tests.conftest import EXAMPLE_SPECS, REPO, SPECS
from tests.ops import reference as ref
from tests.ops.helpers import assert_follows, kernel_of
from tests.test_run import KINDS, SPEC, _break, make_rows, to_table

cli = CliRunner()


def blend_run(spec: Path | str, dump: Path, out: Path, *extra: str) -> pa.Table:
    """The slates `blend run` writes (the command line, as a user runs it)."""
    result = cli.invoke(app, ["run", str(spec), "--candidates", str(dump), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return pq.read_table(out)


@pytest.fixture(scope="module")
def sample() -> Path:
    """The bundled sample (`blend run SPEC` without --candidates), from the cache folder as for a
    user: made once per machine (in CI by its first `blend run`)."""
    from blendspec.io.sample import sample_dump

    return sample_dump(load_spec(SPECS / "homefeed.blend").spec)


@pytest.fixture(scope="module")
def dump(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten requests of the sample (every example spec's inputs), cut to 17 to 98 candidates, so
    that some are shorter than a slate."""
    table = pq.read_table(sample)
    ids = table.column("request_id").to_numpy(zero_copy_only=False)
    keep = np.zeros(len(ids), dtype=bool)
    for number, request in enumerate(dict.fromkeys(ids)):
        if number == 10:
            break
        rows = np.flatnonzero(ids == request)
        keep[rows[: 17 + 9 * number]] = True
    path = tmp_path_factory.mktemp("dump") / "dump.parquet"
    pq.write_table(table.filter(pa.array(keep)), path)
    return path


# ------------------------------------------------------------------------------ blend


def _as(kind: str, table: pa.Table) -> object:
    if kind == "table":
        return table
    if kind == "reader":
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=97))
    if kind == "batch":
        return table.combine_chunks().to_batches()[0]
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        return pl.from_arrow(table)
    raise AssertionError(kind)


KINDS_IN = ["table", "reader", "batch", "pandas", "polars"]


@pytest.mark.parametrize("spec", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_blend_gives_blend_runs_slates_for_every_kind_of_input(
    spec: Path, dump: Path, tmp_path: Path
) -> None:
    expected = blend_run(spec, dump, tmp_path / "slates.parquet")
    table = pq.read_table(dump)
    # Every kind for each DSL spec; its YAML twin (the same spec) from a Table.
    for kind in KINDS_IN if spec.suffix == ".blend" else ["table"]:
        slates = blendspec.blend(spec, _as(kind, table))
        assert slates.schema == expected.schema, kind
        assert slates.equals(expected), f"{kind}: the slates differ from `blend run`'s"
    assert blendspec.blend(str(spec), dump).equals(expected), "a dump's path"


def test_blend_on_the_bundled_sample(sample: Path, tmp_path: Path) -> None:
    """The README's first command, `blend run specs/homefeed.blend`, and the same in Python."""
    out = tmp_path / "slates.parquet"
    result = cli.invoke(app, ["run", str(SPECS / "homefeed.blend"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    loaded = blendspec.load_spec(SPECS / "homefeed.blend")
    assert blendspec.blend(loaded, pl.read_parquet(sample)).equals(pq.read_table(out))


def test_every_form_of_spec_gives_the_same_slates(dump: Path) -> None:
    path = SPECS / "discovery.blend"
    table = pq.read_table(dump)
    expected = blendspec.blend(path, table)
    for spec in (
        str(path),
        load_spec(path),
        path.read_text(),  # DSL text
        (SPECS / "discovery.yaml").read_text(),  # the same spec in YAML
        (SPECS / "discovery.yaml").read_text().replace("\n", "\n", 1),
    ):
        assert blendspec.blend(spec, table).equals(expected)
    # One-line DSL text (statements need no newlines) is text, not a path.
    one_line = " ".join(line.split("#")[0] for line in path.read_text().splitlines())
    assert blendspec.blend(one_line, table).equals(expected)


@pytest.mark.parametrize("spec", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_the_syntax_of_spec_text_is_told_apart(spec: Path) -> None:
    assert syntax_of_text(spec.read_text()) == ("yaml" if spec.suffix == ".yaml" else "dsl")


def test_syntax_detection_edge_cases() -> None:
    assert syntax_of_text("# a comment\n\nname: x\n") == "yaml"
    assert syntax_of_text("---\nname: x\n") == "yaml"
    assert syntax_of_text('"name": x\n') == "yaml"
    assert syntax_of_text("{name: x, slate: {length: 3}}") == "yaml"
    assert syntax_of_text("\ufeffspec x\n") == "dsl"
    assert syntax_of_text("input p: score\nspec x\n") == "dsl"
    assert syntax_of_text("slate 5") == "dsl"


def test_spec_errors_are_spec_errors(dump: Path) -> None:
    table = pq.read_table(dump)
    with pytest.raises(SpecError) as caught:
        blendspec.blend(SPEC.replace("p_click\nobjective hide", "p_clik\nobjective hide"), table)
    assert "E200" in str(caught.value) and "p_clik" in str(caught.value)
    with pytest.raises(SpecError, match="cannot read the spec"):
        blendspec.blend("no/such/spec.blend", table)
    with pytest.raises(TypeError, match="spec must be a path"):
        blendspec.blend(42, table)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="syntax must be"):
        blendspec.blend(SPEC, table, syntax="toml")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_request_is_the_same_error_as_blend_runs(tmp_path: Path, kind: str) -> None:
    rows = make_rows()
    request, column = _break(rows, kind)
    table = pa.Table.from_pylist(rows)  # `visual` as lists: one may have the wrong size
    pq.write_table(table, tmp_path / "dump.parquet")
    spec = tmp_path / "small.blend"
    spec.write_text(SPEC)
    result = cli.invoke(
        app, ["run", str(spec), "--candidates", str(tmp_path / "dump.parquet"), "-o",
              str(tmp_path / "out.parquet"), "--batch-size", "4"],
    )  # fmt: skip
    assert result.exit_code == 1
    for kind_in in ("table", "pandas", "polars"):
        with pytest.raises(BadRequestError) as caught:
            blendspec.blend(spec, _as(kind_in, table), batch_size=4)
        problem = caught.value.problem
        assert (problem.request_id, problem.column) == (request, column), kind_in
        assert rows[problem.row]["request_id"] == request
        assert f"request `{request}`" in str(caught.value)
        assert f"column `{column}`" in str(caught.value)
        if kind_in == "pandas" and kind == "nan":
            # pandas marks a missing value with NaN and hands it to Arrow as missing.
            assert str(caught.value).endswith("missing value")
            continue
        flat = " ".join(result.output.split())
        assert " ".join(str(caught.value).split()) in flat, (kind_in, result.output)


@pytest.mark.parametrize("kind", KINDS)
def test_skipping_gives_blend_runs_slates_and_rejects(tmp_path: Path, kind: str) -> None:
    rows = make_rows()
    _break(rows, kind)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "dump.parquet")
    spec = tmp_path / "small.blend"
    spec.write_text(SPEC)
    out = tmp_path / "out.parquet"
    expected = blend_run(
        spec, tmp_path / "dump.parquet", out, "--on-bad-request", "skip", "--batch-size", "4"
    )
    rejects = pq.read_table(tmp_path / "out.rejects.parquet")
    # A stream is read twice when a request's rows are scattered: it is read into memory first.
    for kind_in in ("table", "reader", "pandas"):
        result = blendspec.blend(
            spec, _as(kind_in, table), on_bad_request="skip", batch_size=4, full_output=True
        )
        assert isinstance(result, BlendResult)
        assert result.slates.equals(expected), kind_in
        if kind_in == "pandas" and kind == "nan":  # NaN is pandas' missing value
            rejects = rejects.set_column(3, "reason", pa.array(["missing value"]))
        assert result.rejects.equals(rejects), kind_in
        summary = result.summary
        assert summary.requests_rejected == 1
        assert summary.requests_in == summary.requests_blended + summary.requests_rejected
    with pytest.warns(UserWarning, match="1 request skipped.*full_output=True"):
        slates = blendspec.blend(spec, table, on_bad_request="skip", batch_size=4)
    assert slates.equals(expected)


def test_dump_errors_name_the_candidates_and_the_column() -> None:
    table = to_table(make_rows())
    frame = table.to_pandas()
    with pytest.raises(DumpError) as caught:
        blendspec.blend(SPEC, frame.rename(columns={"p_click": "p_clck"}))
    message = str(caught.value)
    assert message.startswith("candidates (pandas.DataFrame): missing column `p_click`")
    assert "did you mean `p_clck`" in message
    with pytest.raises(DumpError, match=r"candidates \(polars.DataFrame\): column `p_click`: "):
        blendspec.blend(SPEC, pl.from_arrow(table).with_columns(pl.col("p_click").cast(pl.Utf8)))
    doubled = pa.Table.from_arrays([*table.columns, table.column("p_hide")], [*table.column_names, "p_hide"])  # fmt: skip
    with pytest.raises(DumpError, match="column `p_hide` appears 2 times"):
        blendspec.blend(SPEC, doubled)
    with pytest.raises(DumpError, match=r"candidates \(pyarrow.Table\), row 3: no `request_id`"):
        ids = table.column("request_id").to_pylist()
        ids[3] = None
        blendspec.blend(SPEC, table.set_column(0, "request_id", pa.array(ids)))


def test_dataframe_dtypes_blend_alike(dump: Path) -> None:
    """What a DataFrame library may hand over for the same values: categoricals (dictionaries of
    `string_view` from polars), fixed-size arrays, ids as text, pandas' Arrow-backed dtypes."""
    table = pq.read_table(dump)
    spec = SPECS / "homefeed.blend"
    expected = blendspec.blend(spec, table)
    frame = pl.from_arrow(table).with_columns(
        pl.col("topic").cast(pl.Categorical),
        pl.col("request_id").cast(pl.Categorical),
        pl.col("visual").cast(pl.Array(pl.Float32, 256)),
        pl.col("candidate_id").cast(pl.Utf8),
    )
    assert blendspec.blend(spec, frame).equals(expected)
    categories = table.to_pandas().astype({"topic": "category", "request_id": "category"})
    assert blendspec.blend(spec, categories).equals(expected)
    assert blendspec.blend(spec, table.to_pandas(types_mapper=pd.ArrowDtype)).equals(expected)


def test_a_stream_is_read_once(dump: Path) -> None:
    table = pq.read_table(dump)
    reader = _as("reader", table)
    first = blendspec.blend(SPECS / "homefeed.blend", reader)
    assert first.num_rows > 0
    with pytest.raises(DumpError, match="can be read only once"):
        blendspec.blend(SPECS / "homefeed.blend", reader)


def test_other_arrow_producers_and_mappings() -> None:
    rows = make_rows()
    table = to_table(rows)
    expected = blendspec.blend(SPEC, table)

    class Producer:
        """A library blendspec does not know, exporting through the Arrow C stream interface."""

        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            return table.__arrow_c_stream__(requested_schema)

    assert blendspec.blend(SPEC, Producer()).equals(expected)
    assert blendspec.blend(SPEC, {name: table.column(name) for name in table.column_names}).equals(
        expected
    )
    with pytest.raises(TypeError, match="candidates must be a dump's path"):
        blendspec.blend(SPEC, [1, 2, 3])
    with pytest.raises(TypeError, match=r"got polars.LazyFrame \(a lazy frame: collect it first"):
        blendspec.blend(SPEC, pl.from_arrow(table).lazy())
    mixed = table.to_pandas().astype({"topic": object})
    mixed.loc[2, "topic"] = 5
    with pytest.raises(
        DumpError,
        match=r"^candidates \(pandas.DataFrame\): cannot be read as Arrow data .*column topic",
    ):
        blendspec.blend(SPEC, mixed)
    with pytest.raises(DumpError, match=r"^candidates \(builtins.dict\): .*expected length"):
        blendspec.blend(SPEC, {"request_id": ["r", "r"], "candidate_id": ["a"]})


def test_options_are_checked_and_passed_on(dump: Path) -> None:
    table = pq.read_table(dump)
    spec = SPECS / "homefeed.blend"
    limited = blendspec.blend(spec, table, limit=3, batch_size=2)
    assert (
        limited.column("request_id").unique().to_pylist()
        == (table.column("request_id").unique().to_pylist()[:3])
    )
    seen: list[int] = []
    result = blendspec.blend(spec, table, progress=seen.append, full_output=True, kernels="torch")
    assert sum(seen) == result.summary.requests_in == 10
    assert result.rejects.num_rows == 0 and result.summary.metrics
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        blendspec.blend(spec, table, batch_size=0)
    with pytest.raises(TypeError, match="limit must be an integer"):
        blendspec.blend(spec, table, limit=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_bad_request must be"):
        blendspec.blend(spec, table, on_bad_request="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernels must be one of"):
        blendspec.blend(spec, table, kernels="cuda")  # type: ignore[arg-type]
    empty = blendspec.blend(spec, table.slice(0, 0))
    assert empty.num_rows == 0 and empty.schema == limited.schema


# -------------------------------------------------------------------------- diversify


def _request(n: int = 40, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal(n).astype(np.float32)


PARAMS: dict[str, dict[str, object]] = {
    "ssd": {"theta": 0.6, "window": 4, "gamma": 1.5},
    "dpp": {"alpha": 0.8, "window": 5},
    "mmr": {"lambda": 0.6},
    "msd": {"theta": 0.4},
    "cover": {"theta": 0.5, "gamma": 0.7},
    "none": {},
}


def _block_text(algorithm: str, params: dict[str, object]) -> str:
    if algorithm == "none":
        return "diversity none"
    lines = "\n".join(f"  {k} = {v}" for k, v in params.items())
    return f"diversity {algorithm} {{\n  similarity = cosine(emb)\n{lines}\n}}"


def _one_request(emb: np.ndarray, scores: np.ndarray) -> pa.Table:
    n, d = emb.shape
    return pa.table(
        {
            "request_id": ["r"] * n,
            "candidate_id": [f"c{i}" for i in range(n)],
            "s": pa.array(scores, pa.float32()),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), d),
        }
    )


@pytest.mark.parametrize("kernels", ["native", "torch"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_diversify_picks_the_engines_slate(algorithm: str, kernels: str) -> None:
    """The same request blended by a spec whose diversity block has the same parameters: the
    same candidates in the same order, with the same scores, bit for bit."""
    emb, scores = _request()
    params = PARAMS[algorithm]
    k = 12
    spec = (
        f"spec one\nslate {k}\ninput s: score\ninput emb: embedding[{emb.shape[1]}]\n"
        "objective o = s\nweight w = 1 in [0, 2]\nutility = w * o\n"
        f"{_block_text(algorithm, params)}\n"
    )
    slates = blendspec.blend(spec, _one_request(emb, scores), kernels=kernels)  # type: ignore[arg-type]
    call = {("lambda_" if key == "lambda" else key): v for key, v in params.items()}
    result = blendspec.diversify(emb, scores, k, algorithm, kernels=kernels, **call)  # type: ignore[arg-type]
    assert [f"c{i}" for i in result.indices] == slates.column("candidate_id").to_pylist()
    assert np.array_equal(result.scores, slates.column("score").to_numpy())
    assert result.indices.dtype == np.int64 and result.scores.dtype == np.float32
    assert result.algorithm == algorithm
    for key, value in params.items():
        assert result.params[key] == value


def _operator(algorithm: str) -> object:
    from blendspec.ops.cover import cover
    from blendspec.ops.msd import msd

    return {"ssd": ops.ssd, "dpp": ops.dpp, "mmr": ops.mmr, "msd": msd, "cover": cover}[algorithm]


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a != "none"])
def test_diversify_is_the_operator_and_follows_the_float64_reference(algorithm: str) -> None:
    emb, scores = _request(n=30, d=5, seed=7)
    params = dict(PARAMS[algorithm])
    result = blendspec.diversify(emb, scores, 10, algorithm, **params)
    # The operator called directly on the feature map and the z-scored relevance.
    mask = torch.ones((1, 30), dtype=torch.bool)
    signals = ops.SimilaritySignals(embeddings=((torch.from_numpy(emb)[None], 1.0),))
    phi = ops.feature_map(signals, mask, bias=algorithm == "ssd")
    relevance = ops.normalize_relevance(torch.from_numpy(scores)[None], mask, "zscore")
    direct = dict(params)
    if algorithm == "mmr":
        direct = {"lam": direct.pop("lambda")}
    selection = _operator(algorithm)(relevance, phi, mask, None, slate_length=10, **direct)  # type: ignore[operator]
    assert result.indices.tolist() == selection.indices[0].tolist()
    assert np.array_equal(result.scores, selection.scores[0].numpy())
    # And step by step against the float64 reference of DESIGN §3, from the raw inputs.
    valid = np.ones(30, dtype=bool)
    r = ref.normalize_relevance(scores, valid, "zscore")
    s = kernel_of(phi[0], valid)
    reference = {
        "ssd": lambda f: ref.ssd(r, phi[0].double().numpy(), valid, ref.RefConstraints(), 10,
                                 window=4, theta=0.6, gamma=1.5, follow=f),
        "dpp": lambda f: ref.dpp(r, s, valid, ref.RefConstraints(), 10, alpha=0.8, window=5,
                                 follow=f),
        "mmr": lambda f: ref.mmr(r, s, valid, ref.RefConstraints(), 10, lam=0.6, follow=f),
        "msd": lambda f: ref.msd(r, s, valid, ref.RefConstraints(), 10, theta=0.4, follow=f),
        "cover": lambda f: ref.cover(r, s, valid, ref.RefConstraints(), 10, theta=0.5,
                                     gamma=0.7, follow=f),
    }[algorithm]  # fmt: skip
    as_selection = SimpleNamespace(
        indices=torch.from_numpy(result.indices)[None],
        scores=torch.from_numpy(result.scores)[None],
        cap_violations=torch.zeros(1, dtype=torch.int64),
    )
    assert_follows(as_selection, 0, reference, 10)  # type: ignore[arg-type]


def test_diversify_result_and_edge_cases() -> None:
    emb, scores = _request(n=8)
    result = blendspec.diversify(emb, scores, 20, "mmr")
    indices, picked = result
    assert sorted(indices.tolist()) == list(range(8)), "k past N: every candidate, once"
    assert picked is result.selection_scores is result.scores
    assert result.params == {"lambda": 0.5, "relevance": "zscore"}
    empty = blendspec.diversify(emb, scores, 0)
    assert empty.indices.shape == (0,) and empty.scores.shape == (0,)
    nothing = blendspec.diversify(np.zeros((0, 4)), np.zeros(0), 5, "dpp")
    assert len(nothing.indices) == 0
    # Read-only arrays (pandas and Arrow hand those out) are taken without a warning.
    frozen = emb.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert blendspec.diversify(frozen, scores, 3).indices.tolist() == (
            blendspec.diversify(emb, scores, 3).indices.tolist()
        )
    # float64, lists and torch tensors are read as float32, as `blend run` reads a dump.
    as64 = blendspec.diversify(emb.astype(np.float64), scores.tolist(), 5, "ssd")
    as_tensor = blendspec.diversify(torch.from_numpy(emb), torch.from_numpy(scores), 5, "ssd")
    assert as64.indices.tolist() == as_tensor.indices.tolist()
    # pyversity's strategy enum and its `diversity` trade-off.
    strategy = SimpleNamespace(value="MMR")
    by_diversity = blendspec.diversify(emb, scores, 5, strategy, diversity=0.3)  # type: ignore[arg-type]
    assert (
        by_diversity.indices.tolist()
        == blendspec.diversify(emb, scores, 5, "mmr", **{"lambda": 0.7}).indices.tolist()
    )
    assert blendspec.diversify(emb, scores, 5, "ssd", diversity=0.25).params["theta"] == 0.75
    assert blendspec.diversify(emb, scores, 5, "mmr", lam=0.2).params["lambda"] == 0.2
    # relevance "raw" and "minmax" reach the operator.
    raw = blendspec.diversify(emb, scores * 100, 5, "mmr", relevance="raw")
    assert raw.indices[0] == int(np.argmax(scores))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (dict(algorithm="ssdd"), ValueError, "unknown algorithm `ssdd`.*did you mean `ssd`"),
        (dict(algorithm=3), TypeError, "algorithm must be a string"),
        (dict(thetta=0.5), ValueError, r"no parameter `thetta` \(did you mean `theta`\?\); its parameters: theta, gamma, window, variant, relevance, epsilon"),
        (dict(algorithm="none", theta=0.5), ValueError, "has no parameter `theta`; it takes no parameters"),
        (dict(theta=1.5), ValueError, r"`theta` = 1.5: input should be less than or equal to 1"),
        (dict(window=0), ValueError, r"`window` = 0: input should be greater than or equal to 1"),
        (dict(window="x"), ValueError, r"`window` = 'x'"),
        (dict(gamma=True), ValueError, r"`gamma` = True: expected a number"),
        (dict(variant="fast"), ValueError, r"`variant` = 'fast': input should be 'stabilized' or 'volume'"),
        (dict(relevance="log"), ValueError, r"`relevance` = 'log'"),
        (dict(epsilon=float("nan")), ValueError, r"`epsilon` = nan"),
        (dict(algorithm="dpp", diversity=0.5), ValueError, "no one meaning for `dpp`.*alpha, window, relevance, epsilon"),
        (dict(diversity=1.2), ValueError, r"`diversity` = 1.2: must lie in \[0, 1\]"),
        (dict(diversity=0.2, theta=0.3), ValueError, "`theta` is given twice"),
        (dict(similarity="cosine(x)"), ValueError, "the similarity is the cosine of `embeddings`"),
        (dict(kernels="gpu"), ValueError, "kernels must be one of"),
        (dict(k=-1), ValueError, "k must be >= 0"),
        (dict(k=2.0), TypeError, "k must be an integer"),
        (dict(scores=np.zeros((40, 1))), ValueError, r"scores must be one-dimensional \[N\]"),
        (dict(embeddings=np.zeros(40)), ValueError, r"embeddings must be two-dimensional \[N, d\]"),
        (dict(embeddings=np.zeros((39, 6))), ValueError, "embeddings has 39 rows but scores has 40"),
        (dict(embeddings=np.zeros((40, 0))), ValueError, "embeddings has 0 columns"),
        (dict(scores=np.where(np.arange(40) == 7, np.nan, 0.0)), ValueError, r"scores\[7\] is nan"),
        (dict(scores=np.where(np.arange(40) == 2, 1e39, 0.0)), ValueError, r"scores\[2\] is inf"),
        (dict(embeddings=np.where(np.arange(40)[:, None] == 5, np.inf, np.ones((40, 6)))), ValueError, r"embeddings\[5\] holds NaN or Inf"),
        (dict(embeddings=np.full((40, 6), "a")), TypeError, "embeddings must hold real numbers"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)  # fmt: skip
def test_diversify_errors_name_the_parameter_or_element(
    call: dict[str, object], error: type[Exception], message: str
) -> None:
    emb, scores = _request()
    args = {"embeddings": emb, "scores": scores, "k": 5, **call}
    with pytest.raises(error, match=message):
        blendspec.diversify(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- the package


_PROBE = """
import json, sys
import blendspec
before = sorted(m for m in ("torch", "pyarrow", "numpy", "blendspec.ops", "blendspec.api") if m in sys.modules)
from blendspec import load_spec, compile_graph, SpecError
loaded = load_spec(sys.argv[1])
compile_graph(loaded)
after = sorted(m for m in ("torch", "pyarrow", "blendspec.ops") if m in sys.modules)
print(json.dumps({"before": before, "after": after, "all": blendspec.__all__}))
"""


def test_import_blendspec_is_light_and_exports_the_documented_names() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(SPECS / "homefeed.blend")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["before"] == [], "import blendspec loads nothing heavy"
    assert found["after"] == [], "loading and compiling a spec stays torch-free"
    documented = {"load_spec", "compile_graph", "BlendModule", "module_for", "blend", "diversify"}
    assert documented <= set(found["all"])
    for name in blendspec.__all__:
        assert getattr(blendspec, name) is not None
    assert blendspec.load_spec is load_spec
    assert blendspec.blend.__module__ == "blendspec.api"
    assert isinstance(blendspec.diversify(*_request(), 3), Diversified)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = blendspec.nope  # type: ignore[attr-defined]
    namespace: dict[str, object] = {}
    exec("from blendspec import *", namespace)
    assert {"blend", "diversify", "load_spec"} <= set(namespace)


# ---------------------------------------------------------------------- docs/notebook.md


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def test_the_notebook_walkthrough_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every Python block of docs/notebook.md, in order, in one namespace, from the checkout's
    root (the doc's paths are relative to it). The bundled sample comes from the cache folder,
    as for a user (CI makes it with its first `blend run`)."""
    blocks = python_blocks(REPO / "docs" / "notebook.md")
    assert len(blocks) >= 10
    monkeypatch.chdir(REPO)
    namespace: dict[str, object] = {"__name__": "notebook"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for number, block in enumerate(blocks, start=1):
            try:
                exec(compile(block, f"docs/notebook.md block {number}", "exec"), namespace)
            except Exception as error:  # pragma: no cover - the failure message
                pytest.fail(f"docs/notebook.md block {number} failed: {error!r}\n{block}")
    # A warning in the walk-through (a skipped request, say) is a mistake in it.
    assert not [w for w in caught if issubclass(w.category, UserWarning)], caught
    shown = capsys.readouterr().out
    assert "missing column `p_click`" in shown and "request `" in shown
    assert not list(REPO.glob("*.parquet")), "the walk-through writes nothing into the checkout"


def test_frames_keep_their_input_untouched() -> None:
    """Blending reads the frame; it neither reorders nor converts the caller's data."""
    frame = to_table(make_rows()).to_pandas()
    copy = frame.copy(deep=True)
    blendspec.blend(SPEC, frame)
    pd.testing.assert_frame_equal(frame, copy)
