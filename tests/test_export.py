"""`blend export`: the artifact, its contract, and parity with `blend run` from torch alone.

The parity tests blend the same requests twice: with `blend run --kernels torch` (in process)
and with the exported program loaded by `examples/serve.py` in a subprocess where `import
blendspec` fails, fed the requests as JSON through the HTTP server. Slates, utilities, scores,
weights and the policy's action and propensity must be equal bit for bit. (`blend run`'s default
compiled loops pick the same slates, with scores equal to float32 rounding: tests/test_run.py.)

Exports are the slow part (tracing a T-step greedy loop, and loading it back), so each spec is
exported once per session, with a slate just past its longest window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.engine.run import run
from blendspec.serve.export import ALIGN, METADATA_FILE, export_spec, load_artifact, read_metadata
from blendspec.spec.loader import load_spec, load_text

from .conftest import GOLDEN, REPO, SPECS, assert_golden

SERVE = REPO / "examples" / "serve.py"

# The driver runs in `python -I` (no cwd, no user site) from a folder outside the repo, with a
# meta-path finder that refuses blendspec: the artifact must stand on torch alone.
DRIVER = textwrap.dedent(
    """
    import importlib.util, json, sys, threading, urllib.request

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name == "blendspec" or name.startswith("blendspec."):
                raise ImportError("blendspec must not be imported by a server")
            return None

    sys.meta_path.insert(0, Refuse())
    try:
        import blendspec  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("blendspec was importable")

    serve_path, jobs_path, out_path = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("serve", serve_path)
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)

    def post(url, payload):
        request = urllib.request.Request(
            url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    results = {}
    loaded = {}
    for job in json.load(open(jobs_path)):
        if job["artifact"] not in loaded:
            loaded[job["artifact"]] = serve.Artifact(job["artifact"])
        artifact = loaded[job["artifact"]]
        server = serve.make_server(artifact, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = "http://127.0.0.1:%d" % server.server_address[1]
        requests = [json.loads(line) for line in open(job["requests"])]
        half = len(requests) // 2
        # Half in batches of 4, half one request per call: both must give blend run's slates.
        answers = []
        for start in range(0, half, 4):
            batch = requests[start : min(half, start + 4)]
            answers += post(url + "/blend", {"requests": batch})["answers"]
        answers += [post(url + "/blend", r) for r in requests[half:]]
        with urllib.request.urlopen(url + "/contract") as response:
            contract = json.loads(response.read())
        server.shutdown()
        results[job["name"]] = {"answers": answers, "spec_hash": contract["spec_hash"]}
    json.dump(results, open(out_path, "w"))
    """
)


def _short(spec: Path, slate: int, tmp: Path) -> Path:
    """The spec with a shorter slate (shorter runs; the traced graph is the same size whatever
    T is); same operators otherwise."""
    loaded = load_spec(spec)
    text = spec.read_text().replace(f"slate {loaded.spec.slate.length}", f"slate {slate}", 1)
    out = tmp / f"{loaded.spec.name}-{slate}.blend"
    out.write_text(text)
    assert load_spec(out).spec.slate.length == slate
    return out


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (spec, artifact) for every example spec, with a slate shortened to just past its
    longest window: the same code paths (window eviction included) in shorter runs. The
    full-size homefeed artifact is checked by benchmarks/bench_export.py."""
    tmp = tmp_path_factory.mktemp("export")
    specs = {
        "homefeed": _short(SPECS / "homefeed.blend", 12, tmp),  # past every window (10, 8, 5)
        "discovery": _short(SPECS / "discovery.blend", 14, tmp),  # past the DPP window (12)
        "ads": _short(SPECS / "ads.blend", 8, tmp),  # past the cap window (5)
    }
    out = {}
    for name, spec in specs.items():
        artifact = tmp / f"{name}.pt2"
        export_spec(load_spec(spec), artifact)
        out[name] = (spec, artifact)
    return out


@pytest.fixture(scope="session")
def simulated_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Requests of 10..100 candidates: fewer than the slate, and widths across several 32s."""
    from blendspec.sim.world import World, write_dump

    path = tmp_path_factory.mktemp("dump") / "dump.parquet"
    write_dump(World.default(seed=1), path, requests=14, candidates=(10, 100), seed=5)
    return path


def _requests_jsonl(dump: Path, spec_path: Path, out: Path, limit: int) -> None:
    """The dump's first `limit` requests as the server's JSON requests (one per line)."""
    spec = load_spec(spec_path).spec
    requests: dict[str, dict] = {}
    for row in pq.read_table(dump).to_pylist():
        request = requests.setdefault(
            row["request_id"], {"request_id": row["request_id"], "candidates": []}
        )
        candidate = {"candidate_id": row["candidate_id"]}
        for name, declared in spec.inputs.items():
            if declared.kind == "features":
                request[name] = row[name]
            else:
                candidate[name] = row[name]
        request["candidates"].append(candidate)
    chosen = list(requests.values())[:limit]
    out.write_text("".join(json.dumps(r) + "\n" for r in chosen))


def _expected(slates: Path, weights: list[str]) -> dict[str, dict]:
    expected: dict[str, dict] = {}
    for row in pq.read_table(slates).to_pylist():
        entry = expected.setdefault(
            row["request_id"],
            {"slate": [], "weights": {w: row[f"weight_{w}"] for w in weights}},
        )
        if "action" in row:
            entry["action"] = row["action"]
            entry["propensity"] = row["propensity"]
        if row["position"] >= 0:
            entry["slate"].append((str(row["candidate_id"]), row["utility"], row["score"]))
    return expected


def test_served_artifacts_give_blend_run_slates(
    exported: dict[str, tuple[Path, Path]], simulated_dump: Path, tmp_path: Path
) -> None:
    from blendspec.io.sample import sample_dump

    homefeed = load_spec(SPECS / "homefeed.blend")
    # Half the bundled sample (JSON of three embeddings per candidate is the slow part).
    cases = [("homefeed-sample", "homefeed", sample_dump(homefeed.spec), 24)]
    cases += [(f"{name}-simulated", name, simulated_dump, 14) for name in exported]
    jobs, expected, hashes = [], {}, {}
    for case, name, dump, limit in cases:
        spec_path, artifact = exported[name]
        loaded = load_spec(spec_path)
        slates = tmp_path / f"{case}.parquet"
        run(loaded, dump, slates, limit=limit, kernels="torch")
        expected[case] = _expected(slates, list(loaded.spec.weights))
        requests = tmp_path / f"{case}.jsonl"
        _requests_jsonl(dump, spec_path, requests, limit)
        jobs.append({"name": case, "artifact": str(artifact), "requests": str(requests)})
        from blendspec.policy.grid import spec_hash

        hashes[case] = spec_hash(loaded.spec)
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "driver.py").write_text(DRIVER)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "driver.py"), str(SERVE),
         str(tmp_path / "jobs.json"), str(tmp_path / "results.json")],
        cwd=outside, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for case, want in expected.items():
        assert results[case]["spec_hash"] == hashes[case]
        answers = {a["request_id"]: a for a in results[case]["answers"]}
        assert set(answers) == set(want), case
        filled = 0
        for request_id, expect in want.items():
            answer = answers[request_id]
            got = [(str(s["candidate_id"]), s["utility"], s["score"]) for s in answer["slate"]]
            assert got == expect["slate"], (case, request_id)
            assert answer["weights"] == expect["weights"], (case, request_id)
            if "action" in expect:
                assert answer["action"] == expect["action"], (case, request_id)
                assert answer["propensity"] == expect["propensity"], (case, request_id)
            filled += len(got)
        assert filled > 0, case


def test_contract_records_inputs_outputs_and_hash(
    exported: dict[str, tuple[Path, Path]],
) -> None:
    from blendspec.policy.grid import spec_hash

    for name, (spec_path, artifact) in exported.items():
        spec = load_spec(spec_path).spec
        meta = read_metadata(artifact)
        assert meta["spec_hash"] == spec_hash(spec)
        assert meta["slate_length"] == spec.slate.length
        assert [i["name"] for i in meta["inputs"]][1 : 1 + len(spec.inputs)] == list(spec.inputs)
        assert meta["inputs"][0]["name"] == "mask"
        assert meta["outputs"][:2] == ["indices", "scores"]
        seeded = spec.policy is not None and spec.policy.exploration.kind != "none"
        assert (meta["inputs"][-1]["name"] == "@request_seed") == seeded, name


def test_batch_and_candidates_are_dynamic(exported: dict[str, tuple[Path, Path]]) -> None:
    """One artifact serves any batch size and any N that is a multiple of 32, and a request's
    slate does not depend on the batch it is in or on extra padding."""
    from blendspec.serve.export import example_inputs, input_contracts

    spec_path, artifact = exported["ads"]  # the policy's draw too: seeds are per request
    program, meta = load_artifact(artifact)
    spec = load_spec(spec_path).spec
    contracts = input_contracts(spec, seeded=True)
    outputs = meta["outputs"]
    big = example_inputs(contracts, 5, 3 * ALIGN, seed=4)
    alone = dict(zip(outputs, program(*[t[:1] for t in big]), strict=True))
    wide = [
        torch.cat([t, torch.zeros((5, ALIGN, *t.shape[2:]), dtype=t.dtype)], 1)
        if t.dim() > 1 and t.shape[1] == 3 * ALIGN  # candidate inputs, not the state vector
        else t
        for t in big
    ]
    for inputs in (big, wide):
        together = dict(zip(outputs, program(*inputs), strict=True))
        for name in ("indices", "scores", "weights", "action", "propensity"):
            assert torch.equal(together[name][:1], alone[name]), name
    with pytest.raises(Exception):  # noqa: B017 (torch's guard error type is internal)
        program(*example_inputs(contracts, 1, ALIGN + 3))


def test_load_program_is_torch_export_load(exported: dict[str, tuple[Path, Path]]) -> None:
    """The memoised load (blendspec/serve/loading.py) gives the plain load's program: the same
    graphs, the same symbolic shapes, the same outputs; torch's module is left as it was."""
    import typing

    from torch._export.serde import serialize

    from blendspec.serve.export import example_inputs, input_contracts
    from blendspec.serve.loading import load_program

    spec_path, artifact = exported["homefeed"]
    fast, plain = load_program(artifact), torch.export.load(str(artifact))
    assert serialize.typing is typing
    assert serialize.GraphModuleDeserializer._parse_sym_expr.__name__ == "_parse_sym_expr"

    def graphs(program: torch.export.ExportedProgram) -> list[str]:
        return [
            f"{name}: {m.graph}"
            for name, m in program.graph_module.named_modules()
            if hasattr(m, "graph")
        ]

    assert graphs(fast) == graphs(plain)
    assert str(fast.range_constraints) == str(plain.range_constraints)
    contracts = input_contracts(load_spec(spec_path).spec, seeded=False)
    inputs = example_inputs(contracts, 3, 2 * ALIGN, seed=7)
    for a, b in zip(fast.module()(*inputs), plain.module()(*inputs), strict=True):
        assert torch.equal(a, b)


TINY = """\
spec tiny
slate 5
input p_click: score
input topic: category
input risky: flag
objective click = p_click
weight w_click = 1 in [0, 5]
utility = w_click * click
spacing risky {window = 2, coefficient = 1}
cap topic {max = 1, window = 2}
"""


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(export result, artifact) of a small spec with a penalty and a cap: quick to trace."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt2"
    return export_spec(load_text(TINY, "dsl"), path), path


def test_contract_golden(tiny) -> None:  # type: ignore[no-untyped-def]
    """The recorded contract of a small spec, byte for byte (versions masked)."""
    result, artifact = tiny
    meta = json.loads(result.metadata.to_json())
    meta["blendspec_version"] = meta["torch_version"] = "<version>"
    assert_golden(GOLDEN / "export" / "tiny_contract.json", json.dumps(meta, indent=2) + "\n")
    program, recorded = load_artifact(artifact)
    assert recorded["spec_hash"] == meta["spec_hash"]
    assert recorded["kind"] == "exported" and recorded["target"] is None
    # The example inputs torch.export keeps are left out of the file (an empty entry remains).
    import zipfile

    infos = zipfile.ZipFile(artifact).infolist()
    assert all(i.file_size == 0 for i in infos if "sample_inputs" in i.filename)
    mask = torch.tensor([[True] * 4 + [False] * 28])
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.7] + [0.0] * 28])
    topic = torch.tensor([[0, 1, 1, 2] + [0] * 28])
    risky = torch.tensor([[False, True, True, False] + [False] * 28])
    out = dict(zip(recorded["outputs"], program(mask, scores, topic, risky), strict=True))
    # 1 first; 2 shares 1's topic (cap 1 in 2) so 3; then 2 (1 left the window); then 0.
    assert out["indices"].tolist() == [[1, 3, 2, 0, -1]]


@pytest.mark.parametrize(
    "diversity",
    [
        "diversity msd {similarity = cosine(visual) + 0.5 * category(topic), theta = 0.4}",
        "diversity cover {similarity = cosine(visual), theta = 0.3, gamma = 0.5}",
    ],
    ids=["msd", "cover"],
)
def test_msd_and_cover_export_like_the_engine(diversity: str, tmp_path: Path) -> None:
    """The diversifiers added as plugins export like the others: the program gives the torch
    path's slates and scores bit for bit, under a penalty and a cap."""
    from blendspec.compiler.lower import module_for
    from blendspec.ops import kernels
    from blendspec.serve.export import example_inputs, input_contracts

    text = TINY.replace("input risky: flag\n", "input risky: flag\ninput visual: embedding[4]\n")
    loaded = load_text(text + diversity + "\n", "dsl", "t.blend")
    export_spec(loaded, tmp_path / "t.pt2")
    program, meta = load_artifact(tmp_path / "t.pt2")
    contracts = input_contracts(loaded.spec, seeded=False)
    inputs = example_inputs(contracts, 3, 2 * ALIGN, seed=7)
    served = dict(zip(meta["outputs"], program(*inputs), strict=True))
    mask, *columns = inputs
    batch = {c.name: t for c, t in zip(contracts[1:], columns, strict=True)}
    with kernels("torch"), torch.no_grad():
        engine = module_for(loaded)(mask, batch)
    assert torch.equal(served["indices"], engine["indices"])
    assert torch.equal(served["scores"], engine["scores"])
    assert (served["indices"][:, 0] >= 0).all()


def test_cli_export_writes_the_artifact(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.blend"
    spec.write_text(
        "spec tiny\nslate 40\ninput p_click: score\nobjective click = p_click\n"
        "weight w = 1 in [0, 2]\nutility = w * click\ntruncate 45\n"
    )
    result = CliRunner().invoke(app, ["export", str(spec), "-o", str(tmp_path / "t.pt2")])
    assert result.exit_code == 0, result.output
    assert "p_click" in result.output and "indices" in result.output
    program, meta = load_artifact(tmp_path / "t.pt2")
    assert meta["spec_name"] == "tiny"
    # Relevance only: truncation to 45 of up to 61 candidates, and fewer slots (32) than T (40).
    from blendspec.serve.export import build_module, example_inputs, input_contracts

    loaded = load_spec(spec)
    contracts = input_contracts(loaded.spec, seeded=False)
    for width in (2 * ALIGN, ALIGN):
        mask, scores = example_inputs(contracts, 3, width, seed=2)
        expected = build_module(loaded)(mask, {"p_click": scores})
        got = dict(zip(meta["outputs"], program(mask, scores), strict=True))
        for name in ("indices", "scores", "utility"):
            assert torch.equal(got[name], expected[name]), name


def test_cli_export_failure_is_a_clean_error(tmp_path: Path) -> None:
    spec = tmp_path / "ads.blend"
    text = (SPECS / "ads.blend").read_text()
    spec.write_text(text.replace("policy {", 'policy {\n  file = "nowhere.pt"', 1))
    result = CliRunner().invoke(app, ["export", str(spec), "-o", str(tmp_path / "a.pt2")])
    assert result.exit_code == 1, result.output
    assert "nowhere.pt" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "a.pt2").exists()


def test_metadata_file_name_is_the_servers() -> None:
    """examples/serve.py must not import blendspec, so it repeats the extra file's name."""
    assert f'METADATA_FILE = "{METADATA_FILE}"' in SERVE.read_text()


def _serve_module():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_example", SERVE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_server_answers_and_rejects(tiny) -> None:  # type: ignore[no-untyped-def]
    import threading
    import urllib.error
    import urllib.request

    serve = _serve_module()
    server = serve.make_server(serve.Artifact(tiny[1]), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(payload: object, path: str = "/blend") -> tuple[int, dict]:  # type: ignore[type-arg]
        request = urllib.request.Request(url + path, json.dumps(payload).encode())
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        candidates = [
            {"candidate_id": c, "p_click": p, "topic": t, "risky": r}
            for c, p, t, r in [("a", 0.1, "x", False), ("b", 0.9, "y", True),
                               ("c", 0.8, "y", True), ("d", 0.7, "z", False)]
        ]  # fmt: skip
        status, answer = post({"request_id": "r", "candidates": candidates})
        assert status == 200
        assert [s["candidate_id"] for s in answer["slate"]] == ["b", "d", "c", "a"]
        assert answer["weights"] == {"w_click": 1.0} and answer["cap_violations"] == 0
        status, answer = post({"request_id": "empty", "candidates": []})
        assert status == 200 and answer["slate"] == []
        status, answer = post({"requests": [{"request_id": "r", "candidates": candidates}] * 2})
        assert status == 200 and len(answer["answers"]) == 2
        status, answer = post({"request_id": "r", "candidates": [{"candidate_id": "a"}]})
        assert status == 400 and "p_click" in answer["error"]
        bad = [{**candidates[0], "p_click": "high"}]
        status, answer = post({"request_id": "r", "candidates": bad})
        assert status == 400 and "finite number" in answer["error"]
        status, answer = post({"candidates": candidates})
        assert status == 400 and "request_id" in answer["error"]
        assert post({}, "/nowhere")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_example_server_cli_reports_a_bad_artifact(tmp_path: Path) -> None:
    (tmp_path / "junk.pt2").write_bytes(b"not an archive")
    done = subprocess.run(
        [sys.executable, str(SERVE), str(tmp_path / "junk.pt2"), "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot load" in done.stderr and "Traceback" not in done.stderr


def test_cli_export_without_a_lowering_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph operator (e.g. a policy) without a torch lowering: exit 1, no traceback; a trace
    failure inside torch.export: exit 2 (a bug), no traceback either."""
    from blendspec.compiler.lower import MissingLowering
    from blendspec.serve import export

    def missing(loaded):  # type: ignore[no-untyped-def]
        raise MissingLowering("operator `policy` has no torch lowering in this version")

    spec = str(SPECS / "ads.blend")
    with monkeypatch.context() as patch:
        patch.setattr(export, "build_module", missing)
        result = CliRunner().invoke(app, ["export", spec, "-o", str(tmp_path / "a.pt2")])
    assert result.exit_code == 1, result.output
    assert "cannot be exported" in result.output and "policy" in result.output
    assert "Traceback" not in result.output

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(torch.export, "export", broken)
    monkeypatch.delenv("BLENDSPEC_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["export", spec, "-o", str(tmp_path / "a.pt2")])
    assert result.exit_code == 2, result.output
    assert "could not trace" in result.output and "unsupported operator" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "a.pt2").exists()
