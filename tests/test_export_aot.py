"""`blend export --aot`: the AOTInductor package, its contract, the host checks, and parity.

Parity: on every example spec (slate cut to 5 to keep the runs short; the greedy loop is one
`torch.while_loop`, so the compile does not grow with T) the package picks exactly the exported
program's slates, which are
`blend run --kernels torch`'s bit for bit (tests/test_export.py); scores agree within float32
rounding (AOTInductor fuses some sums in another order: measured 1 ulp). A package whose loop
dropped its writes (the AOTInductor `while_loop` defect: initial zeros returned) fails here.

Each package compiles once per session (tens of seconds each). The tiny spec, the `ads` spec and
the flag checks always run; `homefeed` and `discovery` carry the `aot_heavy` marker (they still
run by default: `-m "not aot_heavy"` leaves them out for a quick local run). Without a working
C++ compiler (AOTInductor needs one at export time, never at serving time) the compiling tests
skip with that reason.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.engine.run import run
from blendspec.serve.export import (
    ALIGN,
    AOTI_FORMAT,
    METADATA_FILE,
    X86_64_V3,
    X86_ISA_FLAGS,
    ExportError,
    IncompatibleHost,
    check_host,
    cpu_features,
    example_inputs,
    export_spec,
    input_contracts,
    load_artifact,
    read_metadata,
)
from blendspec.spec.loader import load_spec

from .conftest import SPECS
from .test_export import DRIVER, SERVE, TINY, _expected, _requests_jsonl, _serve_module, _short


def _compiler() -> str | None:
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        return get_cpp_compiler()
    except InvalidCxxCompiler:
        return None


NO_COMPILER = _compiler() is None
needs_compiler = pytest.mark.skipif(
    NO_COMPILER,
    reason="AOTInductor compiles C++ at export time and no working C++ compiler (g++ or $CXX) "
    "was found",
)
HOST_FLAGS = cpu_features()
HAS_AVX2 = platform.machine().lower() in ("x86_64", "amd64") and (
    "avx2" in HOST_FLAGS if HOST_FLAGS is not None else torch.cpu._is_avx2_supported()
)
SLATE = 5
SCORE_TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}
"""Scores may differ by float32 rounding (measured: at most 2 ulp, 2.4e-7 on scores near 2)."""

heavy = pytest.mark.aot_heavy


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, ["export", *args])


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("aot-tiny") / "tiny.blend"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="session")
def tiny_native(tiny_spec: Path) -> tuple[Path, str]:
    """(package, CLI output) of `blend export tiny.blend --aot` (the default ISA, native)."""
    if NO_COMPILER:
        pytest.skip("no C++ compiler")
    package = tiny_spec.parent / "tiny-native.pt2"
    result = _cli(str(tiny_spec), "-o", str(package), "--aot")
    assert result.exit_code == 0, result.output
    return package, result.output


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("ads"),  # policy draw, caps, MMR: always
        pytest.param("homefeed", marks=heavy),  # SSD, spacing, semantic IDs, three embeddings
        pytest.param("discovery", marks=heavy),  # DPP with its early stop
    ],
)
def spec_packages(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Path, Path]:
    """(name, spec, exported artifact, AOT package) of an example spec with slate 5."""
    if NO_COMPILER:
        pytest.skip("no C++ compiler")
    name = request.param
    tmp = tmp_path_factory.mktemp(f"aot-{name}")
    spec = _short(SPECS / f"{name}.blend", SLATE, tmp)
    loaded = load_spec(spec)
    export_spec(loaded, tmp / "exported.pt2")
    export_spec(loaded, tmp / "aot.pt2", aot=True)
    return name, spec, tmp / "exported.pt2", tmp / "aot.pt2"


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in float32 steps between two float32 tensors (0: bitwise equal)."""
    if a.numel() == 0:
        return 0

    def ordered(t: torch.Tensor) -> torch.Tensor:
        bits = t.contiguous().view(torch.int32).to(torch.int64)
        return torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return int((ordered(a) - ordered(b)).abs().max())


# --- parity -------------------------------------------------------------------------------------


@needs_compiler
def test_package_picks_the_exported_programs_slates(
    spec_packages: tuple[str, Path, Path, Path],
) -> None:
    """Random requests at several widths and batch sizes: the same picks, weights, actions and
    per-request outputs bit for bit; scores and utilities within float32 rounding."""
    name, spec, exported, package = spec_packages
    program, meta = load_artifact(exported)
    aot, aot_meta = load_artifact(package)
    assert aot_meta["kind"] == "aoti" and meta["kind"] == "exported"
    seeded = meta["inputs"][-1]["name"] == "@request_seed"
    contracts = input_contracts(load_spec(spec).spec, seeded=seeded)
    worst = {"scores": 0, "utility": 0, "candidate_utility": 0}
    filled = 0
    for batch, width, seed in [(1, ALIGN, 0), (4, 2 * ALIGN, 1), (3, 3 * ALIGN, 2), (5, ALIGN, 3)]:
        inputs = example_inputs(contracts, batch, width, seed=seed)
        want = dict(zip(meta["outputs"], program(*inputs), strict=True))
        got = dict(zip(aot_meta["outputs"], aot(*inputs), strict=True))
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, (name, key)
            if key in worst:
                worst[key] = max(worst[key], _ulps(got[key], value))
                torch.testing.assert_close(got[key], value, **SCORE_TOLERANCE)
            else:
                assert torch.equal(got[key], value), (name, key, batch, width)
        filled += int((got["indices"] >= 0).sum())
    assert filled > 0, name  # a package whose loop wrote nothing returns no picks
    print(f"{name}: largest difference in float32 steps {worst}")


@needs_compiler
def test_served_package_gives_blend_run_slates(
    spec_packages: tuple[str, Path, Path, Path], tmp_path: Path
) -> None:
    """examples/serve.py, where `import blendspec` fails, serves the package over HTTP: the slates
    of `blend run --kernels torch` on a simulated dump (same candidates in the same order; the
    same weights and policy actions; scores within float32 rounding)."""
    from blendspec.policy.grid import spec_hash
    from blendspec.sim.world import World, write_dump

    name, spec_path, _, package = spec_packages
    dump = tmp_path / "dump.parquet"
    write_dump(World.default(seed=1), dump, requests=10, candidates=(10, 100), seed=5)
    loaded = load_spec(spec_path)
    slates = tmp_path / "slates.parquet"
    run(loaded, dump, slates, limit=10, kernels="torch")
    want = _expected(slates, list(loaded.spec.weights))
    requests = tmp_path / "requests.jsonl"
    _requests_jsonl(dump, spec_path, requests, 10)
    jobs = [{"name": name, "artifact": str(package), "requests": str(requests)}]
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
    result = json.loads((tmp_path / "results.json").read_text())[name]
    assert result["spec_hash"] == spec_hash(loaded.spec)
    answers = {a["request_id"]: a for a in result["answers"]}
    assert set(answers) == set(want)
    filled = 0
    for request_id, expect in want.items():
        answer = answers[request_id]
        ids = [str(s["candidate_id"]) for s in answer["slate"]]
        assert ids == [c for c, _, _ in expect["slate"]], (name, request_id)
        for slot, (_, utility, score) in zip(answer["slate"], expect["slate"], strict=True):
            assert slot["utility"] == pytest.approx(utility, rel=1e-6, abs=1e-6)
            assert slot["score"] == pytest.approx(score, rel=1e-6, abs=1e-6)
        assert answer["weights"] == expect["weights"], (name, request_id)
        if "action" in expect:
            assert answer["action"] == expect["action"], (name, request_id)
            assert answer["propensity"] == expect["propensity"], (name, request_id)
        filled += len(ids)
    assert filled > 0, name


# --- the CLI and the contract -------------------------------------------------------------------


@needs_compiler
def test_cli_aot_records_kind_platform_torch_and_isa(tiny_native: tuple[Path, str]) -> None:
    package, output = tiny_native
    assert "AOTInductor package" in output and "compiling with AOTInductor" in output
    assert "p_click" in output and "indices" in output
    meta = read_metadata(package)
    assert meta["format"] == AOTI_FORMAT and meta["kind"] == "aoti"
    assert meta["torch_version"] == torch.__version__
    target = meta["target"]
    assert (target["system"], target["machine"]) == (platform.system(), platform.machine())
    assert target["isa"] == "native" and target["march"] == "native"
    assert target["vec_isa"] and target["compiler"] and target["threads"] == "dynamic"
    assert target["cpu_features"], "a native build names the features it may use"
    if HOST_FLAGS is not None:
        assert set(target["cpu_features"]) <= HOST_FLAGS
    # The same contract in the package's own metadata, for a C++ loader (read without loading).
    loader = torch._C._aoti.AOTIModelPackageLoader  # type: ignore[attr-defined]
    native = loader.load_metadata_from_package(str(package), "model")
    assert json.loads(native[METADATA_FILE]) == meta
    assert native["blendspec.cpu_features"].split() == target["cpu_features"]
    assert native["blendspec.isa"] == "native" and native["blendspec.kind"] == "aoti"
    # It is a package, not a program: no exported graph, no example inputs inside.
    names = zipfile.ZipFile(package).namelist()
    assert any(n.endswith(".so") for n in names)
    assert not any("/models/" in n or "sample_inputs" in n for n in names)


@needs_compiler
def test_package_blends_and_checks_its_inputs(tiny_native: tuple[Path, str]) -> None:
    package, _ = tiny_native
    program, meta = load_artifact(package)
    mask = torch.tensor([[True] * 4 + [False] * 28])
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.7] + [0.0] * 28])
    topic = torch.tensor([[0, 1, 1, 2] + [0] * 28])
    risky = torch.tensor([[False, True, True, False] + [False] * 28])
    out = dict(zip(meta["outputs"], program(mask, scores, topic, risky), strict=True))
    assert out["indices"].tolist() == [[1, 3, 2, 0, -1]]  # as tests/test_export.py's golden
    # Non-contiguous inputs are made contiguous (the kernels assume the traced strides).
    wide = [torch.cat([t, t], 0)[::2] for t in (mask, scores, topic, risky)]
    assert program(*wide)[0].tolist() == [[1, 3, 2, 0, -1]]
    bad = {
        "N must be a multiple of": (mask[:, :31], scores[:, :31], topic[:, :31], risky[:, :31]),
        "must be float32": (mask, scores.double(), topic, risky),
        "category codes": (mask, scores, topic + 40, risky),
        "takes 4 inputs": (mask, scores, topic),
        "earlier input": (mask, scores, topic[:, :16].repeat(1, 2).repeat(2, 1), risky),
    }
    for message, inputs in bad.items():
        with pytest.raises(ValueError, match=message):
            program(*inputs)


@needs_compiler
def test_example_server_serves_the_package(tiny_native: tuple[Path, str]) -> None:
    package, _ = tiny_native
    serve = _serve_module()
    artifact = serve.Artifact(package)
    assert artifact.kind == "aoti"
    candidates = [
        {"candidate_id": c, "p_click": p, "topic": t, "risky": r}
        for c, p, t, r in [("a", 0.1, "x", False), ("b", 0.9, "y", True),
                           ("c", 0.8, "y", True), ("d", 0.7, "z", False)]
    ]  # fmt: skip
    [answer] = artifact.blend([{"request_id": "r", "candidates": candidates}])
    assert [s["candidate_id"] for s in answer["slate"]] == ["b", "d", "c", "a"]


def _edit_contract(package: Path, out: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    """A copy of `package` whose recorded contract (the extra file and the package's metadata
    copy) went through `edit(meta)`."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(f"/extra/{METADATA_FILE}"):
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta, indent=2).encode()
            elif info.filename.endswith("_metadata.json"):
                native = json.loads(data)
                meta = json.loads(native[METADATA_FILE])
                edit(meta)
                native[METADATA_FILE] = json.dumps(meta, indent=2)
                native["blendspec.cpu_features"] = " ".join(meta["target"]["cpu_features"])
                data = json.dumps(native).encode()
            target.writestr(info, data)
    return out


def _lacking() -> str:
    """An x86 feature this host lacks (a made-up name when it has every one we know)."""
    flags = HOST_FLAGS or set()
    return next((f for f in X86_ISA_FLAGS if f not in flags), "avx10_2")


@needs_compiler
def test_package_for_an_isa_the_host_lacks_is_refused(
    tiny_native: tuple[Path, str], tmp_path: Path
) -> None:
    package, _ = tiny_native
    feature = _lacking()

    def needs_more(meta: dict) -> None:  # type: ignore[type-arg]
        meta["target"]["cpu_features"].append(feature)

    edited = _edit_contract(package, tmp_path / "edited.pt2", needs_more)
    with pytest.raises(IncompatibleHost, match=rf"lacks {feature}.*--isa avx2"):
        load_artifact(edited)
    with pytest.raises(ValueError, match=rf"lacks {feature}"):
        _serve_module().Artifact(edited)
    done = subprocess.run(
        [sys.executable, str(SERVE), str(edited), "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot load" in done.stderr and feature in done.stderr
    assert "Traceback" not in done.stderr
    # The untouched package passes the same check.
    check_host(read_metadata(package), package)


@needs_compiler
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("machine", "riscv64", f"compiled for {platform.system()}/riscv64"),
        ("system", "Plan9", f"compiled for Plan9/{platform.machine()}"),
        ("torch_version", "1.13.0", "against torch 1.13.0"),
    ],
)
def test_package_for_another_platform_or_torch_is_refused(
    tiny_native: tuple[Path, str], tmp_path: Path, field: str, value: str, message: str
) -> None:
    package, _ = tiny_native

    def move(meta: dict) -> None:  # type: ignore[type-arg]
        if field == "torch_version":
            meta[field] = value
        else:
            meta["target"][field] = value

    edited = _edit_contract(package, tmp_path / "moved.pt2", move)
    with pytest.raises(IncompatibleHost, match=message):
        load_artifact(edited)
    with pytest.raises(ValueError, match=message):
        _serve_module().Artifact(edited)


@needs_compiler
@pytest.mark.skipif(not HAS_AVX2, reason="--isa avx2 builds are tested on an x86-64 host with AVX2")
def test_isa_avx2_builds_a_portable_package(tiny_spec: Path, tiny_native: tuple[Path, str]) -> None:
    package = tiny_spec.parent / "tiny-avx2.pt2"
    result = _cli(str(tiny_spec), "-o", str(package), "--aot", "--isa", "avx2")
    assert result.exit_code == 0, result.output
    assert "--isa avx2 (avx2 vectors, -march=x86-64-v3)" in result.output
    target = read_metadata(package)["target"]
    assert (target["isa"], target["march"], target["vec_isa"]) == ("avx2", "x86-64-v3", "avx2")
    assert target["cpu_features"] == list(X86_64_V3) and target["cpu_model"] is None
    loader = torch._C._aoti.AOTIModelPackageLoader  # type: ignore[attr-defined]
    assert loader.load_metadata_from_package(str(package), "model")["AOTI_CPU_ISA"] == "AVX2"
    # The same slates as the native package.
    native, _ = load_artifact(tiny_native[0])
    portable, _ = load_artifact(package)
    contracts = input_contracts(load_spec(tiny_spec).spec, seeded=False)
    for width in (ALIGN, 3 * ALIGN):
        inputs = example_inputs(contracts, 4, width, seed=width)
        assert torch.equal(portable(*inputs)[0], native(*inputs)[0])
    # No AVX-512 instruction in its library (zmm or mask registers), where objdump can tell.
    if shutil.which("objdump"):
        with zipfile.ZipFile(package) as archive:
            [library] = [n for n in archive.namelist() if n.endswith(".so")]
            (tiny_spec.parent / "avx2.so").write_bytes(archive.read(library))
        listing = subprocess.run(
            ["objdump", "-d", str(tiny_spec.parent / "avx2.so")],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "%zmm" not in listing and "{%k" not in listing


# --- bad flags and environments: clean errors ---------------------------------------------------


def test_bad_isa_flags_are_usage_errors(tiny_spec: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "t.pt2")
    result = _cli(str(tiny_spec), "-o", out, "--aot", "--isa", "avx9000")
    assert result.exit_code == 2 and "avx9000" in result.output
    result = _cli(str(tiny_spec), "-o", out, "--isa", "avx2")
    assert result.exit_code == 2 and "--aot" in result.output
    assert "Traceback" not in result.output and not Path(out).exists()


def test_aot_without_a_compiler_is_a_clean_error(tiny_spec: Path, tmp_path: Path) -> None:
    from torch._inductor import config

    out = tmp_path / "t.pt2"
    with config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-c++"))}):
        result = _cli(str(tiny_spec), "-o", str(out), "--aot")
    assert result.exit_code == 1, result.output
    assert "no working C++ compiler" in result.output and "no-such-c++" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_avx2_on_another_architecture_is_a_clean_error(
    tiny_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    out = tmp_path / "t.pt2"
    result = _cli(str(tiny_spec), "-o", str(out), "--aot", "--isa", "avx2")
    assert result.exit_code == 1, result.output
    assert "x86-64 target" in result.output and "aarch64" in result.output
    assert "Traceback" not in result.output and not out.exists()


@needs_compiler
def test_aotinductor_failure_is_a_clean_internal_error(
    tiny_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._inductor

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("CppCompileError: C++ compile error\nCommand:\ng++ ...")

    monkeypatch.setattr(torch._inductor, "aot_compile", broken)
    monkeypatch.delenv("BLENDSPEC_DEBUG", raising=False)
    out = tmp_path / "t.pt2"
    result = _cli(str(tiny_spec), "-o", str(out), "--aot")
    assert result.exit_code == 2, result.output
    assert "AOTInductor could not compile" in result.output and "C++ compile error" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_read_metadata_of_a_non_archive_is_an_export_error(tmp_path: Path) -> None:
    (tmp_path / "junk.pt2").write_bytes(b"not an archive")
    with pytest.raises(ExportError, match=r"not a \.pt2 archive"):
        read_metadata(tmp_path / "junk.pt2")
