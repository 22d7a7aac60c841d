"""examples/serve_cpp: the C++ server of an AOTInductor package, against `blend run`.

The server is built once per source version with the plain `c++` command line its README
documents (cached under the temp dir, keyed by the sources' hash, the torch version and the
compiler), and fed JSON-lines requests made from a simulated candidate dump. Its slates must be
`blend run --kernels torch`'s: the same candidates in the same order, the same weights, policy
actions and propensities; utilities and scores within float32 rounding (AOTInductor may fuse the
greedy step's sums in another order than the torch path: measured 0 here, 1 ulp on the example
specs in tests/test_export_aot.py). Its answers are examples/serve.py's, value for value.

One package is compiled per session, of `MINI` below rather than an example spec: a slate-5
spec that uses every input kind of the contract (score, embedding, semantic ID, category, flag,
request features) and a policy that draws its action from `@request_seed`, with MMR, spacing,
the semantic-ID penalty and a cap in the loop. It compiles in about 45 s of CPU here; the
smallest example spec with a policy (`ads` at slate 5, about 32 s) has no semantic ID and no
flag, and adding a second package would double the file's time. The example specs' packages are
checked against `blend run` by tests/test_export_aot.py (and this server against homefeed at
N=500 by hand: docs/serving.md). The whole file takes about 80 s of CPU (the build, when not
cached, about 10 s).

Skipped, with the reason, without a C++ compiler (the server and AOTInductor both need one) or
without torch's C++ headers in the installed wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from blendspec.engine.run import run
from blendspec.serve.export import X86_ISA_FLAGS, cpu_features, export_spec, read_metadata
from blendspec.spec.loader import load_spec

from .conftest import REPO
from .test_export import _expected, _requests_jsonl, _serve_module
from .test_export_aot import _edit_contract

SERVE_CPP = REPO / "examples" / "serve_cpp"
SOURCES = ("blend_serve.cpp", "json.hpp", "blake2b.hpp")
TORCH_DIR = Path(torch.__file__).resolve().parent
BUILD_FLAGS = (
    "-std=c++20 -O2 examples/serve_cpp/blend_serve.cpp -o blend_serve "
    '-isystem "$TORCH/include" -L"$TORCH/lib" -Wl,-rpath,"$TORCH/lib" -ltorch -ltorch_cpu -lc10'
)
"""The README's build command after `c++ ` (the test builds with exactly these flags)."""


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and (found := shutil.which(name)):
            return found
    return None


CXX = _compiler()
HEADER = TORCH_DIR / "include" / "torch" / "csrc" / "inductor" / "aoti_package"
pytestmark = [
    pytest.mark.skipif(
        CXX is None,
        reason="no C++ compiler (c++, g++, clang++ or $CXX): the C++ server and AOTInductor "
        "both compile C++",
    ),
    pytest.mark.skipif(
        not (HEADER / "model_package_loader.h").exists(),
        reason=f"the installed torch has no C++ headers ({HEADER} is missing)",
    ),
]

MINI = """\
# Every input kind of the contract, a policy draw and the in-loop constraints, at slate 5.
spec mini
slate 5
input p_click: score
input p_hide: score
input visual: embedding[256]
input sid: semantic_id[4]
input topic: category
input quality_risk: flag
input user_state: features[32]
objective click = p_click
objective hide = p_hide
weight w_click = 1 in [0, 2] {source = policy, grid = [0.5, 1, 2]}
weight w_hide = -2 in [-10, 0] {sign = negative}
utility = w_click * click + w_hide * hide
diversity mmr {
  similarity = 0.7 * cosine(visual) + 0.3 * category(topic)
  lambda = 0.8
  relevance = zscore
}
spacing quality_risk {window = 3, coefficient = 1}
semantic_id_penalty {input = sid, window = 3, min_prefix = 2, coefficient = 0.3}
cap topic {max = 1, window = 3}
outcome click, hide
reward engaged = click - 5 * hide
policy {
  state = [user_state]
  exploration = {kind = epsilon, epsilon = 0.5}
  reward = engaged
}
"""
REQUESTS = 12


def _build_command(out: Path) -> list[str]:
    assert CXX is not None
    source = SERVE_CPP / "blend_serve.cpp"
    inc, lib = TORCH_DIR / "include", TORCH_DIR / "lib"
    return [
        CXX, "-std=c++20", "-O2", str(source), "-o", str(out), "-isystem", str(inc),
        f"-L{lib}", f"-Wl,-rpath,{lib}", "-ltorch", "-ltorch_cpu", "-lc10",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def server() -> Path:
    """The built server, reused while its sources, torch and the compiler stay the same."""
    key = hashlib.sha256()
    for name in SOURCES:
        key.update((SERVE_CPP / name).read_bytes())
    key.update(f"{torch.__version__} {CXX} {BUILD_FLAGS}".encode())
    folder = Path(tempfile.gettempdir()) / "blendspec-serve-cpp" / key.hexdigest()[:16]
    binary = folder / "blend_serve"
    if not binary.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"blend_serve.{os.getpid()}.tmp"
        done = subprocess.run(
            _build_command(partial), capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"the C++ server does not build:\n{done.stderr[-4000:]}")
        os.replace(partial, binary)
    return binary


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(spec, AOT package) of MINI."""
    tmp = tmp_path_factory.mktemp("serve-cpp")
    spec = tmp / "mini.blend"
    spec.write_text(MINI)
    export_spec(load_spec(spec), tmp / "mini.pt2", aot=True)
    return spec, tmp / "mini.pt2"


@pytest.fixture(scope="session")
def requests(package: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """REQUESTS JSON-lines requests from a simulated dump (10..100 candidates: widths across
    several multiples of 32), and `blend run --kernels torch`'s slates for them beside."""
    from blendspec.sim.world import World, write_dump

    spec, _ = package
    tmp = tmp_path_factory.mktemp("serve-cpp-requests")
    dump = tmp / "dump.parquet"
    write_dump(World.default(seed=1), dump, requests=REQUESTS, candidates=(10, 100), seed=5)
    run(load_spec(spec), dump, tmp / "slates.parquet", limit=REQUESTS, kernels="torch")
    _requests_jsonl(dump, spec, tmp / "requests.jsonl", REQUESTS)
    return tmp / "requests.jsonl"


def _serve(server: Path, package: Path, text: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(server), str(package), *flags],
        input=text, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _lines(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


# --- parity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["1", "5"])
def test_slates_are_blend_runs(
    server: Path, package: tuple[Path, Path], requests: Path, batch: str
) -> None:
    """One request per call, and up to 5 per call (padded to the widest of them)."""
    spec, pt2 = package
    want = _expected(requests.parent / "slates.parquet", list(load_spec(spec).spec.weights))
    answers = _lines(_serve(server, pt2, requests.read_text(), "--batch", batch))
    assert [a["request_id"] for a in answers] == list(want)  # in order, one answer each
    worst, filled, actions = 0.0, 0, set()
    for answer in answers:
        expect = want[answer["request_id"]]
        ids = [str(s["candidate_id"]) for s in answer["slate"]]
        assert ids == [c for c, _, _ in expect["slate"]], answer["request_id"]
        assert [s["position"] for s in answer["slate"]] == list(range(len(ids)))
        for slot, (_, utility, score) in zip(answer["slate"], expect["slate"], strict=True):
            assert slot["utility"] == pytest.approx(utility, rel=1e-6, abs=1e-6)
            assert slot["score"] == pytest.approx(score, rel=1e-6, abs=1e-6)
            worst = max(worst, abs(slot["utility"] - utility), abs(slot["score"] - score))
        assert answer["weights"] == expect["weights"], answer["request_id"]
        assert answer["action"] == expect["action"], answer["request_id"]
        assert answer["propensity"] == expect["propensity"], answer["request_id"]
        assert isinstance(answer["cap_violations"], int)
        assert isinstance(answer["early_stops"], bool)
        filled += len(ids)
        actions.add(answer["action"])
    assert filled > 0
    assert len(actions) > 1, "the seed must matter: exploration draws different actions"
    print(f"batch {batch}: largest score/utility difference {worst}")


def test_answers_are_the_python_servers(
    server: Path, package: tuple[Path, Path], requests: Path
) -> None:
    """examples/serve.py on the same package answers the same JSON, value for value."""
    _, pt2 = package
    lines = requests.read_text().splitlines()[:6]
    artifact = _serve_module().Artifact(pt2)
    python = [artifact.blend([json.loads(line)])[0] for line in lines]
    assert _lines(_serve(server, pt2, "\n".join(lines) + "\n", "--batch", "1")) == python


# --- bad requests ---------------------------------------------------------------------------------


def test_bad_requests_get_one_error_line_each(
    server: Path, package: tuple[Path, Path], requests: Path
) -> None:
    _, pt2 = package
    good = [json.loads(line) for line in requests.read_text().splitlines()[:2]]
    base = good[0]

    def edited(request_id: str, edit) -> str:  # type: ignore[no-untyped-def]
        request = json.loads(json.dumps(base))
        request["request_id"] = request_id
        edit(request)
        return json.dumps(request)

    def candidate(field: str, value: object):  # type: ignore[no-untyped-def]
        return lambda r: r["candidates"][1].__setitem__(field, value)

    cases = {  # input line -> what the error line must say
        "{not json": ["line 1", "not valid JSON"],
        "[1, 2]": ["every request needs a `request_id`"],
        json.dumps({"request_id": [1]}): ["`request_id` must be a string or an integer"],
        json.dumps({"request_id": "no-candidates"}): ["`no-candidates`", "`candidates` list"],
        edited("missing", lambda r: r["candidates"][1].pop("p_click")): [
            "`missing`", "candidates[1] has no `p_click`"
        ],
        edited("text", candidate("p_click", "high")): ["`text`", "`p_click`", "finite number"],
        edited("nan", candidate("p_hide", float("nan"))): ["`nan`", "`p_hide`", "finite"],
        edited("short", candidate("visual", [0.5] * 3)): ["`short`", "`visual`", "256 numbers"],
        edited("sid", candidate("sid", [1, 2, 3.5, 4])): ["`sid`", "int64 integer", "3.5"],
        edited("topic", candidate("topic", 1.5)): ["`topic`", "string or an integer"],
        edited("state", lambda r: r.__setitem__("user_state", [0.0] * 31)): [
            "`state`", "`user_state`", "32 numbers"
        ],
        edited("huge", lambda r: r.__setitem__("candidates", [{}] * 32769)): [
            "`huge`", "32769 candidates"
        ],
    }  # fmt: skip
    lines = [json.dumps(good[0]), *cases, json.dumps(good[1])]
    done = _serve(server, pt2, "\n".join(lines) + "\n", "--batch", "64")
    out = _lines(done)
    assert len(out) == len(lines), done.stdout
    assert "terminate" not in done.stderr and "Error" not in done.stderr
    alone = _lines(_serve(server, pt2, lines[0] + "\n" + lines[-1] + "\n"))
    assert [out[0], out[-1]] == alone  # the good requests beside them are answered as usual
    for number, (answer, (line, needles)) in enumerate(
        zip(out[1:-1], cases.items(), strict=True), start=2
    ):
        assert set(answer) == {"request_id", "line", "error"}, answer
        assert answer["line"] == number
        for needle in needles:
            assert needle.replace("line 1", f"line {number}") in answer["error"], (line, answer)


def test_blank_lines_are_skipped_and_a_last_line_needs_no_newline(
    server: Path, package: tuple[Path, Path], requests: Path
) -> None:
    _, pt2 = package
    first, second = requests.read_text().splitlines()[:2]
    out = _lines(_serve(server, pt2, f"\n{first}\r\n  \n{second}"))
    assert [a["request_id"] for a in out] == [json.loads(first)["request_id"],
                                              json.loads(second)["request_id"]]  # fmt: skip


def test_mangled_lines_get_one_answer_each_never_a_crash(
    server: Path, package: tuple[Path, Path], requests: Path
) -> None:
    """Random byte edits of a good request (and a few hostile lines): every line gets one valid
    UTF-8 JSON line back, an answer or an error, and the server exits 0 at the end of input."""
    import random

    rng = random.Random(15)
    request = json.loads(requests.read_text().splitlines()[0])
    request["candidates"] = request["candidates"][:3]  # short, so edits hit every kind of field
    for candidate in request["candidates"]:
        candidate["visual"] = [round(x, 1) for x in candidate["visual"]]
    good = json.dumps(request).encode()
    lines = [b"[" * 100_000, b'{"request_id": "\xff"}', b'"\xed\xa0\x80"', b"\x00"]
    pieces = [b"[", b"]", b"{", b"}", b'"', b",", b":", b"-", b"1e999", b"NaN", b"\\u12", b"null"]
    for _ in range(200):
        line = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at, roll = rng.randrange(len(line)), rng.random()
            if roll < 0.4:
                line[at] = rng.randrange(256)
            elif roll < 0.7:
                del line[at : at + rng.randint(1, 10)]
            else:
                line[at:at] = rng.choice(pieces)
        lines.append(bytes(line).replace(b"\n", b" ").replace(b"\r", b" "))
    lines = [line for line in lines if line.strip(b" \t")]
    done = subprocess.run(
        [str(server), str(package[1]), "--batch", "16"],
        input=b"\n".join(lines) + b"\n", capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answers = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert [a["line"] if "error" in a else None for a in answers][:4] == [1, 2, 3, 4]
    assert len(answers) == len(lines)
    assert any("slate" in a for a in answers) and any("error" in a for a in answers)


# --- the package and the host --------------------------------------------------------------------


def _refused(server: Path, package: Path) -> str:
    done = _serve(server, package, "")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == "" and done.stderr.startswith(f"error: cannot load {package}: ")
    assert "terminate" not in done.stderr
    return done.stderr


def test_a_cpu_without_the_packages_features_is_refused(
    server: Path, package: tuple[Path, Path], tmp_path: Path
) -> None:
    flags = cpu_features() or set()
    lacking = next((f for f in X86_ISA_FLAGS if f not in flags), "avx10_2")

    def needs_more(meta: dict) -> None:  # type: ignore[type-arg]
        meta["target"]["cpu_features"].append(lacking)

    edited = _edit_contract(package[1], tmp_path / "edited.pt2", needs_more)
    message = _refused(server, edited)
    assert f"lacks {lacking}: it would crash on an illegal instruction" in message
    assert "--isa avx2" in message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("machine", "riscv64", f"compiled for {platform.system()}/riscv64; this host is"),
        ("system", "Plan9", f"compiled for Plan9/{platform.machine()}; this host is"),
        ("torch_version", "1.13.0", "compiled against torch 1.13.0; this server runs libtorch"),
    ],
)
def test_another_platform_or_torch_is_refused(
    server: Path, package: tuple[Path, Path], tmp_path: Path, field: str, value: str, message: str
) -> None:
    def move(meta: dict) -> None:  # type: ignore[type-arg]
        if field == "torch_version":
            meta[field] = value
        else:
            meta["target"][field] = value

    assert message in _refused(server, _edit_contract(package[1], tmp_path / "moved.pt2", move))


def test_not_a_package_is_refused(server: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.pt2").write_bytes(b"not an archive")
    assert "not a .pt2 archive" in _refused(server, tmp_path / "junk.pt2")
    plain = tmp_path / "plain.pt2"  # a zip with a contract but no AOTInductor model inside
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("plain/extra/blendspec.json", json.dumps({"kind": "exported"}))
    assert "not an AOTInductor package" in _refused(server, plain)
    assert "No such file" in _refused(server, tmp_path / "missing.pt2")


def test_contract_is_the_recorded_one(server: Path, package: tuple[Path, Path]) -> None:
    done = subprocess.run(
        [str(server), str(package[1]), "--contract"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == read_metadata(package[1])


# --- the command line ------------------------------------------------------------------------------


def test_request_seed_is_the_contracts_blake2b(server: Path) -> None:
    ids = ["", "r1", "r5-00000000", "é≈🙂", "x" * 127, "y" * 128, "z" * 129, "w" * 1000]
    for request_id in ids:
        digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=b"blendspec.seed")
        expected = int.from_bytes(digest.digest(), "little") >> 1
        done = subprocess.run(
            [str(server), "--request-seed", request_id], capture_output=True, text=True, check=True
        )
        assert int(done.stdout) == expected, request_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "which package?"),
        (["a.pt2", "--batch", "0"], "--batch takes an integer in [1, 4096], got `0`"),
        (["a.pt2", "--threads"], "--threads needs a value"),
        (["a.pt2", "--fast"], "unknown option --fast"),
        (["a.pt2", "b.pt2"], "one package only"),
    ],
)
def test_usage_errors(server: Path, args: list[str], message: str) -> None:
    done = subprocess.run([str(server), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and message in done.stderr and "usage:" in done.stderr


def test_bench_prints_one_json_line(
    server: Path, package: tuple[Path, Path], requests: Path, tmp_path: Path
) -> None:
    _, pt2 = package
    answers = tmp_path / "answers.jsonl"
    done = subprocess.run(
        [str(server), str(pt2), "--bench", str(requests), "--bench-batch", "8",
         "--bench-repeat", "2", "--bench-end-to-end-repeat", "1", "--bench-warmup", "1",
         "--bench-answers", str(answers), "--threads", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    figures = json.loads(line)
    assert figures["spec_name"] == "mini" and figures["threads"] == 1
    assert figures["requests"] == REQUESTS and figures["batch"] == 8
    assert figures["batch_width"] % 32 == 0
    for key in ("load_ms", "b1_p50_ms", "b1_p99_ms", "b1_end_to_end_p50_ms", "batch_best_ms",
                "batch_requests_per_s", "batch_end_to_end_requests_per_s"):  # fmt: skip
        assert figures[key] > 0, key
    assert figures["b1_p50_ms"] <= figures["b1_p99_ms"]
    # The timed single requests answer as the server does.
    served = _lines(_serve(server, pt2, requests.read_text(), "--batch", "1"))
    assert [json.loads(a) for a in answers.read_text().splitlines()] == served
    # Without the end-to-end batch (parsing a batch of large requests is the slow part).
    done = subprocess.run(
        [str(server), str(pt2), "--bench", str(requests), "--bench-requests", "2",
         "--bench-batch", "2", "--bench-repeat", "1", "--bench-end-to-end-repeat", "0"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["batch_end_to_end_requests_per_s"] is None and figures["requests"] == 2
    # A bad request file is refused before timing, naming the line.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(requests.read_text().splitlines()[0] + "\n{}\n")
    done = subprocess.run(
        [str(server), str(pt2), "--bench", str(bad)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1 and "line 2" in done.stderr and "request_id" in done.stderr


def test_docs_give_the_build_command_the_tests_use() -> None:
    readme = (SERVE_CPP / "README.md").read_text()
    serving = (REPO / "docs" / "serving.md").read_text()
    assert f"c++ {BUILD_FLAGS}" in readme
    assert f"c++ {BUILD_FLAGS}" in serving
    assert "torch.utils.cmake_prefix_path" in readme
