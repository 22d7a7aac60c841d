"""`blend export`: a compiled spec as one `torch.export` artifact that a model server loads with
torch alone (DESIGN §8).

The artifact is a `.pt2` file written by `torch.export.save`. Its program takes
`(mask, *inputs)` — the mask first, then the spec's inputs in declaration order (then
`@request_seed` when the policy draws its action) — and returns a flat tuple of tensors. Everything
a server needs to build those tensors and read the tuple is recorded beside the program in the
`blendspec.json` extra file: each input's kind, dtype, shape and encoding, the output names, the
slate length, the spec's hash and the blendspec version.

Shapes: the slate length and every window are constants baked into the program; the batch `B` is
dynamic; the candidate axis `N` is dynamic but must be a multiple of 32 (`N = 32 * k`). The
operators pad the candidate axis to a multiple of 32 anyway (aligned rows make the matrix-vector
products bitwise independent of the batch, see `blendspec/ops/_common.py`), so a server that pads
with `mask = False` computes exactly what `blend run` computes, and no shape guard specialises the
program on N.

With ``aot=True`` (``blend export --aot``) the same exported program is compiled by AOTInductor
into a `.pt2` package: a shared library and its kernels that torch's own libraries load and run
(`torch._C._aoti.AOTIModelPackageLoader`, in Python or C++), with no Python blendspec and no C++
compiler on the serving host. The package is tied to the platform, the torch version and the
instruction set it was compiled for; the contract records them (`kind`, `target`), and
`load_artifact` and `examples/serve.py` refuse a package the host cannot run, with the reason.
"""

from __future__ import annotations

import io
import json
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from blendspec import __version__
from blendspec.compiler.lower import BlendModule
from blendspec.ops import kernels
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import Input, Spec

METADATA_FILE = "blendspec.json"
"""Name of the extra file inside the artifact that holds the input/output contract."""

FORMAT = "blendspec-export/1"
ALIGN = 32
"""The candidate axis of every input must be a multiple of this (see the module docstring)."""

MAX_CANDIDATES = 32 * 1024
MAX_BATCH = 4096
SEED_INPUT = "@request_seed"

AOTI_FORMAT = "blendspec-aoti/1"
"""The contract's `format` for an AOTInductor package: a reader that only knows `FORMAT` must not
take one for a torch.export program."""

KIND_EXPORTED = "exported"
KIND_AOTI = "aoti"
AOTI_MODEL = "model"
"""The model name inside an AOTInductor package (what `AOTIModelPackageLoader` is given)."""

ISAS = ("native", "avx2")
"""`--isa` targets: `native` compiles for the exporting CPU (-march=native, its widest vectors);
`avx2` for any x86-64 with AVX2 and FMA (-march=x86-64-v3, 256-bit vectors)."""

X86_64_V3 = (
    "sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm",
    "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe", "xsave",
)  # fmt: skip
"""The CPU features `-march=x86-64-v3` lets the compiler use, as /proc/cpuinfo names them
(`pni` is SSE3, `abm` is LZCNT)."""

X86_ISA_FLAGS = X86_64_V3 + (
    "adx", "aes", "pclmulqdq", "sha_ni", "vaes", "vpclmulqdq", "gfni", "rdrand", "rdseed",
    "clflushopt", "clwb", "avx_vnni", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
    "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg",
    "avx512_vpopcntdq", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
"""The x86 instruction-set extensions a `-march=native` build may use: a native package requires
every one of them that the exporting CPU has."""

_TORCH_CPU_PROBES = {
    "avx2": "_is_avx2_supported",
    "avx512f": "_is_avx512_supported",
    "avx512_vnni": "_is_vnni_supported",
    "amx_tile": "_is_amx_tile_supported",
}
"""Where there is no /proc/cpuinfo: the features torch's own CPU detection can answer for."""

_ENCODINGS: dict[str, str] = {
    "score": "float32 per candidate; padding slots are ignored (send 0)",
    "embedding": "float32 vector per candidate; padding rows are ignored (send zeros)",
    "semantic_id": "int64 codes per candidate, coarse to fine; padding rows are ignored",
    "category": (
        "int64 code per candidate: within one request equal labels get equal codes and "
        "different labels different codes; blend run numbers labels 0, 1, 2, ... in order of "
        "first appearance, which reproduces its slates bit for bit"
    ),
    "flag": "bool per candidate (True = member of the set); padding is ignored",
    "features": "float32 request-level state vector (the same for every candidate)",
}

_DTYPES = {
    "score": "float32",
    "embedding": "float32",
    "semantic_id": "int64",
    "category": "int64",
    "flag": "bool",
    "features": "float32",
}


class ExportError(Exception):
    """The spec cannot be exported (an operator without an export path, a policy file problem,
    no C++ compiler for ``--aot``); ``internal`` when torch.export or AOTInductor failed on a
    program that should compile (a bug: exit 2)."""

    def __init__(self, message: str, internal: bool = False) -> None:
        super().__init__(message)
        self.internal = internal


class IncompatibleHost(ExportError):
    """An AOTInductor package that this host cannot run (another platform, torch version or
    instruction set): refused before its library is loaded."""


@dataclass(frozen=True)
class InputContract:
    """One positional input of the exported program, as a server must build it."""

    name: str
    kind: str
    dtype: str
    shape: list[str | int]
    encoding: str


@dataclass(frozen=True)
class ExportMetadata:
    """The contract recorded in the artifact (`blendspec.json`); a server reads only this."""

    format: str
    spec_name: str
    spec_hash: str
    blendspec_version: str
    torch_version: str
    slate_length: int
    candidate_multiple: int
    inputs: list[InputContract]
    outputs: list[str]
    output_doc: dict[str, str]
    weights: list[str]
    kind: str = KIND_EXPORTED
    """`exported` (a torch.export program) or `aoti` (an AOTInductor package)."""
    target: dict[str, Any] | None = None
    """For `aoti`: what the package was compiled for (see `aoti_target`); null otherwise."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    metadata: ExportMetadata
    seconds: float
    bytes: int
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: `exporting`, then `compiling with AOTInductor` and `packaging`."""


_OUTPUT_DOC = {
    "indices": "[B, T] int64 candidate index per slate position, -1 past the end of the slate",
    "scores": "[B, T] float32 the score the greedy step maximised (0 where indices is -1)",
    "utility": "[B, T] float32 utility of the picked candidate (0 where indices is -1)",
    "candidate_utility": "[B, N] float32 utility of every candidate",
    "weights": "[B, W] float32 utility weights applied, in the order of `weights`",
    "cap_violations": "[B] int64 steps that had to take a cap-violating candidate",
    "early_stops": "[B] bool DPP stopped diversifying early (rest filled by utility)",
    "action": "[B] int64 the policy's grid action, -1 where the fixed weights applied",
    "propensity": "[B] float32 probability of that action under the serving policy",
}


def input_contracts(spec: Spec, seeded: bool) -> list[InputContract]:
    """The program's positional inputs in order: mask, the declared inputs, then the seed."""
    out = [
        InputContract(
            "mask", "mask", "bool", ["B", "N"],
            "True for a real candidate; N is a multiple of 32: pad each request with False",
        )
    ]  # fmt: skip
    for name, declared in spec.inputs.items():
        out.append(
            InputContract(
                name,
                declared.kind,
                _DTYPES[declared.kind],
                _shape(declared),
                _ENCODINGS[declared.kind],
            )
        )
    if seeded:
        out.append(
            InputContract(
                SEED_INPUT, "seed", "int64", ["B"],
                "the policy's per-request draw: int.from_bytes(blake2b(request_id.encode(), "
                "digest_size=8, person=b'blendspec.seed').digest(), 'little') >> 1",
            )
        )  # fmt: skip
    return out


def _shape(declared: Input) -> list[str | int]:
    if declared.kind == "features":
        return ["B", int(declared.size or 0)]
    if declared.kind in ("embedding", "semantic_id"):
        return ["B", "N", int(declared.size or 0)]
    return ["B", "N"]


def build_module(loaded: LoadedSpec) -> BlendModule:
    """The same module `blend run` uses, with the spec's policy attached when this version has a
    policy runtime."""
    from blendspec.compiler import lower

    module_for = getattr(lower, "module_for", None)
    if module_for is not None:
        return module_for(loaded)
    from blendspec.compiler.compile import compile_graph

    return BlendModule(compile_graph(loaded))


def _is_seeded(module: BlendModule) -> bool:
    policy = getattr(module.lowering, "policy", None)
    return bool(getattr(policy, "stochastic", False))


class ExportedBlend(nn.Module):
    """`BlendModule` with positional tensor inputs and a flat tuple of outputs: the shape of a
    program a server can call without knowing blendspec's dict conventions."""

    def __init__(self, module: BlendModule, input_names: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.blend = module
        policy = getattr(module.lowering, "policy", None)
        if isinstance(policy, nn.Module):
            self.policy = policy  # registered, so its network's weights are part of the program
        self.input_names = tuple(input_names)
        self.outputs = tuple(outputs)

    def forward(self, mask: Tensor, *inputs: Tensor) -> tuple[Tensor, ...]:
        out = self.blend(mask, dict(zip(self.input_names, inputs, strict=True)))
        return tuple(out[name] for name in self.outputs)


def example_inputs(contracts: Sequence[InputContract], batch: int, width: int, seed: int = 0):
    """Random tensors that follow the contract (for tracing, tests and benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    tensors: list[Tensor] = []
    for c in contracts:
        shape = [batch if s == "B" else width if s == "N" else int(s) for s in c.shape]
        if c.kind == "mask":
            t = torch.zeros(shape, dtype=torch.bool)
            for row in range(batch):
                t[row, : max(1, width - 7 * row - 3)] = True
        elif c.kind in ("score",):
            t = torch.rand(shape, generator=g)
        elif c.kind in ("embedding", "features"):
            t = torch.randn(shape, generator=g)
        elif c.kind in ("semantic_id", "category"):
            t = torch.randint(0, 6, shape, generator=g)
        elif c.kind == "flag":
            t = torch.rand(shape, generator=g) < 0.2
        else:  # the seed
            t = torch.randint(0, 2**62, shape, generator=g)
        tensors.append(t)
    return tensors


def export_spec(
    loaded: LoadedSpec,
    path: Path,
    *,
    aot: bool = False,
    isa: str = "native",
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the compiled spec to `path` (written atomically): a torch.export program, or with
    `aot` an AOTInductor package compiled for `isa` (one of `ISAS`). `progress` is told each
    stage as it starts. Raises `ExportError` (`IncompatibleHost` never: that is for loading)."""
    started = time.perf_counter()
    stages: dict[str, float] = {}
    tell = progress or (lambda stage: None)
    compiler = _check_aot_build(isa) if aot else None  # before tracing: fail fast
    tell("exporting")
    program, metadata = _export_program(loaded)
    stages["exporting"] = time.perf_counter() - started
    buffer = io.BytesIO()  # torch wants a .pt2 name or a buffer, not a temp name
    if aot:
        assert compiler is not None
        metadata = _with_target(metadata, isa, compiler)
        tell("compiling with AOTInductor")
        mark = time.perf_counter()
        files = _compile_aoti(program, isa, metadata)
        stages["compiling with AOTInductor"] = time.perf_counter() - mark
        tell("packaging")
        mark = time.perf_counter()
        from torch.export.pt2_archive._package import package_pt2

        # What torch._inductor.aoti_compile_and_package does after compiling, plus the contract
        # as an extra file (that function takes none): `package/extra/blendspec.json`, where a
        # torch.export artifact keeps it too.
        package_pt2(buffer, aoti_files=files, extra_files={METADATA_FILE: metadata.to_json()})
    else:
        mark = time.perf_counter()
        if getattr(program, "example_inputs", None) is not None:
            program.example_inputs = None  # else torch.export.save stores them in the file
        torch.export.save(program, buffer, extra_files={METADATA_FILE: metadata.to_json()})
    from blendspec.io.outputs import atomic_path

    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    if aot:
        stages["packaging"] = time.perf_counter() - mark
    return ExportResult(path, metadata, time.perf_counter() - started, path.stat().st_size, stages)


def _export_program(loaded: LoadedSpec) -> tuple[torch.export.ExportedProgram, ExportMetadata]:
    """Trace the compiled spec with torch.export (example inputs kept: AOTInductor needs them)."""
    from blendspec.compiler.lower import MissingLowering
    from blendspec.policy.grid import spec_hash
    from blendspec.policy.store import PolicyFileError

    spec = loaded.spec
    try:
        module = build_module(loaded)
    except MissingLowering as error:
        raise ExportError(f"spec `{spec.name}` cannot be exported: {error}") from None
    except PolicyFileError as error:
        raise ExportError(str(error)) from None
    module.eval()
    contracts = input_contracts(spec, _is_seeded(module))
    names = [c.name for c in contracts[1:]]
    mask, *inputs = example_inputs(contracts, batch=2, width=2 * ALIGN)
    try:
        with torch.no_grad():
            probe = module(mask, dict(zip(names, inputs, strict=True)))
    except MissingLowering as error:
        raise ExportError(f"spec `{spec.name}` cannot be exported: {error}") from None
    outputs = [k for k, v in probe.items() if isinstance(v, Tensor)]
    wrapper = ExportedBlend(module, names, outputs).eval()
    batch_dim = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    blocks = torch.export.Dim("blocks", min=1, max=MAX_CANDIDATES // ALIGN)
    candidates = ALIGN * blocks
    shapes: list[dict[int, Any]] = []
    for c in contracts:
        dims: dict[int, Any] = {0: batch_dim}
        if len(c.shape) > 1 and c.shape[1] == "N":
            dims[1] = candidates
        shapes.append(dims)
    try:
        # The artifact is the torch path: it must run on torch alone (see ops/_native.py).
        with torch.no_grad(), kernels("torch"):
            program = torch.export.export(
                wrapper,
                (mask, *inputs),
                dynamic_shapes=(shapes[0], tuple(shapes[1:])),
                strict=False,
            )
    except MissingLowering as error:
        raise ExportError(f"spec `{spec.name}` cannot be exported: {error}") from None
    except Exception as error:
        from blendspec.compiler.lower import NodeExecutionError

        if isinstance(error, NodeExecutionError) and isinstance(error.__cause__, MissingLowering):
            raise ExportError(f"spec `{spec.name}` cannot be exported: {error}") from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(
            f"torch.export could not trace spec `{spec.name}`: {type(error).__name__}: {first} "
            "(a bug in blendspec; BLENDSPEC_DEBUG=1 shows the traceback)",
            internal=True,
        ) from error
    metadata = ExportMetadata(
        format=FORMAT,
        spec_name=spec.name,
        spec_hash=spec_hash(spec),
        blendspec_version=__version__,
        torch_version=torch.__version__,
        slate_length=int(spec.slate.length),
        candidate_multiple=ALIGN,
        inputs=contracts,
        outputs=outputs,
        output_doc={k: _OUTPUT_DOC.get(k, "") for k in outputs},
        weights=list(spec.weights),
    )
    return program, metadata


# --- AOTInductor -------------------------------------------------------------------------------


def cpu_features() -> set[str] | None:
    """This CPU's instruction-set flags as /proc/cpuinfo names them (`flags` on x86, `Features`
    on Arm); None where there is no /proc/cpuinfo. Reading a file: no compiler, no probe."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def missing_cpu_features(required: Sequence[str]) -> list[str]:
    """The required features this host lacks. Without /proc/cpuinfo only the features torch's
    CPU detection answers for (AVX2, AVX-512, VNNI, AMX) can be checked; the rest are assumed."""
    flags = cpu_features()
    if flags is not None:
        return [f for f in required if f not in flags]
    missing = []
    for feature in required:
        probe = getattr(torch.cpu, _TORCH_CPU_PROBES.get(feature, ""), None)
        if probe is not None and not probe():
            missing.append(feature)
    return missing


def _is_x86(machine: str) -> bool:
    return machine.lower() in ("x86_64", "amd64")


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor()


def _check_aot_build(isa: str) -> str:
    """Refuse an `--aot` build this machine cannot make, before any tracing; the compiler's
    first `--version` line."""
    import subprocess

    if isa not in ISAS:
        raise ExportError(f"unknown --isa `{isa}`: expected one of {', '.join(ISAS)}")
    machine = platform.machine()
    if isa == "avx2" and not _is_x86(machine):
        raise ExportError(f"--isa avx2 is an x86-64 target; this machine is {machine}")
    from torch._inductor import config
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        compiler = get_cpp_compiler()  # honours $CXX, as the compile will
    except InvalidCxxCompiler:
        raise ExportError(
            "--aot compiles C++: AOTInductor found no working C++ compiler "
            f"(tried {', '.join(str(c) for c in config.cpp.cxx if c)}; set CXX to one); "
            "the serving host needs none"
        ) from None
    try:
        done = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        version = (done.stdout.strip().splitlines() or [compiler])[0]
    except (OSError, subprocess.SubprocessError):
        version = compiler
    if isa == "avx2":
        from torch._inductor import cpu_vec_isa

        with config.patch(_isa_options("avx2")):
            if str(cpu_vec_isa.pick_vec_isa()) != "avx2":
                raise ExportError(
                    "--isa avx2: inductor cannot build AVX2 code here (its AVX2 check failed: "
                    "the CPU or the compiler lacks AVX2)"
                )
    return version


def _isa_options(isa: str) -> dict[str, Any]:
    if isa == "avx2":
        # 256-bit vector kernels (inductor's VecAVX2), and -march=x86-64-v3 instead of
        # -march=native for everything else the compiler emits.
        return {"cpp.simdlen": 256, "cpp.march": "x86-64-v3"}
    return {}


def aoti_target(isa: str, compiler: str) -> dict[str, Any]:
    """What a package compiled here for `isa` needs from a host, as the contract records it."""
    from torch._inductor import config, cpu_vec_isa

    machine = platform.machine()
    with config.patch(_isa_options(isa)):
        vec_isa = str(cpu_vec_isa.pick_vec_isa())
    if isa == "avx2":
        required = list(X86_64_V3)
    else:
        host = cpu_features()
        if host is None:
            required = sorted(f for f, probe in _TORCH_CPU_PROBES.items() if _probe(probe))
        elif _is_x86(machine):
            required = [f for f in X86_ISA_FLAGS if f in host]
        else:
            required = sorted(host)
    return {
        "system": platform.system(),
        "machine": machine,
        "isa": isa,
        "march": "x86-64-v3" if isa == "avx2" else "native",
        "vec_isa": vec_isa,
        "cpu_features": required,
        "cpu_model": _cpu_model() if isa == "native" else None,
        "compiler": compiler,
        "threads": "dynamic",
    }


def _probe(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)
    return bool(probe is not None and probe())


def _with_target(metadata: ExportMetadata, isa: str, compiler: str) -> ExportMetadata:
    from dataclasses import replace

    return replace(metadata, format=AOTI_FORMAT, kind=KIND_AOTI, target=aoti_target(isa, compiler))


def _compile_aoti(
    program: torch.export.ExportedProgram, isa: str, metadata: ExportMetadata
) -> list[Any]:
    """AOTInductor's files for `program` (what `aoti_compile_and_package` compiles)."""
    from torch._inductor import aot_compile

    assert metadata.target is not None
    contract = metadata.to_json()
    options: dict[str, Any] = {
        "aot_inductor.package": True,
        # The contract again, in the package's own metadata: `get_metadata()` and the static
        # `AOTIModelPackageLoader::load_metadata_from_package` (C++ or Python) return it, so a
        # C++ server needs no zip reader; the feature list alone for the host check.
        "aot_inductor.metadata": {
            METADATA_FILE: contract,
            "blendspec.kind": KIND_AOTI,
            "blendspec.isa": isa,
            "blendspec.cpu_features": " ".join(metadata.target["cpu_features"]),
        },
        # Kernels read the thread count at run time instead of baking in this machine's.
        "cpp.dynamic_threads": True,
        # The one-hot width of a category input is data-dependent (the largest code); the range
        # assert AOTInductor emits for it names a size symbol its C++ wrapper never declares
        # (torch 2.13: "'s22' was not declared"), so those asserts are left out; the loaders
        # check the inputs against the contract instead (`check_inputs`).
        "scalar_asserts": False,
        **_isa_options(isa),
    }
    args, kwargs = program.example_inputs
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch's own deprecation notices from inside the compiler: nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            files = aot_compile(program.module(check_guards=False), args, kwargs, options=options)
    except Exception as error:
        first = _first_line(error)
        raise ExportError(
            f"AOTInductor could not compile spec `{metadata.spec_name}`: "
            f"{type(error).__name__}: {first} (BLENDSPEC_DEBUG=1 shows the traceback)",
            internal=True,
        ) from error
    assert isinstance(files, list)
    return files


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith(("Traceback", "  ")):
            return line.strip()
    return text.splitlines()[0] if text else ""


def check_host(meta: dict[str, Any], path: Path | str = "") -> None:
    """Raise `IncompatibleHost` when this host cannot run the AOTInductor package `meta`
    describes: another OS or machine, another torch release, or a CPU without a feature the
    package was compiled to use. Nothing is loaded; nothing needs a compiler."""
    if meta.get("kind", KIND_EXPORTED) != KIND_AOTI:
        return
    target = meta.get("target") or {}
    where = f"{path}: " if path else ""
    built = f"{target.get('system')}/{target.get('machine')}"
    here = f"{platform.system()}/{platform.machine()}"
    if built != here:
        raise IncompatibleHost(
            f"{where}this AOTInductor package was compiled for {built}; this host is {here} "
            "(export it again on the serving platform)"
        )
    recorded = str(meta.get("torch_version", ""))
    if recorded.split("+")[0] != torch.__version__.split("+")[0]:
        raise IncompatibleHost(
            f"{where}this AOTInductor package was compiled against torch {recorded}; this host "
            f"runs torch {torch.__version__} (export it again with the serving torch)"
        )
    missing = missing_cpu_features(list(target.get("cpu_features", [])))
    if missing:
        isa = target.get("isa", "?")
        hint = (
            "export it with `--isa avx2` for a portable x86-64 build"
            if isa != "avx2"
            else "it needs an x86-64-v3 CPU (AVX2, FMA, BMI2)"
        )
        raise IncompatibleHost(
            f"{where}this AOTInductor package was compiled for the `{isa}` instruction set "
            f"({target.get('vec_isa', '?')} vectors, -march={target.get('march', '?')}) and this "
            f"CPU lacks {', '.join(missing)}: it would crash on an illegal instruction; {hint}"
        )


def check_inputs(meta: dict[str, Any], inputs: Sequence[Tensor]) -> list[Tensor]:
    """The positional inputs checked against the contract (count, dtype, rank, the fixed sizes,
    one B and one N across inputs, N a multiple of 32 within bounds, category codes in
    [0, N)) and made contiguous. A torch.export program guards its shapes itself; an
    AOTInductor package trusts them, so its loaders call this first. Raises ValueError."""
    contracts = meta["inputs"]
    if len(inputs) != len(contracts):
        raise ValueError(f"the program takes {len(contracts)} inputs, got {len(inputs)}")
    multiple = int(meta.get("candidate_multiple", ALIGN))
    sizes: dict[str, int] = {}
    out = []
    for contract, tensor in zip(contracts, inputs, strict=True):
        name = contract["name"]
        if not isinstance(tensor, Tensor):
            raise ValueError(f"input `{name}` must be a tensor, got {type(tensor).__name__}")
        if tensor.device.type != "cpu":
            raise ValueError(f"input `{name}` must be on the CPU, got {tensor.device}")
        if str(tensor.dtype).removeprefix("torch.") != contract["dtype"]:
            raise ValueError(
                f"input `{name}` must be {contract['dtype']}, got "
                f"{str(tensor.dtype).removeprefix('torch.')}"
            )
        shape = contract["shape"]
        if tensor.dim() != len(shape):
            raise ValueError(f"input `{name}` must have shape {shape}, got {list(tensor.shape)}")
        for axis, (want, got) in enumerate(zip(shape, tensor.shape, strict=True)):
            if isinstance(want, int):
                if got != want:
                    raise ValueError(
                        f"input `{name}` must have shape {shape}, got {list(tensor.shape)} "
                        f"(axis {axis})"
                    )
            elif sizes.setdefault(want, got) != got:
                raise ValueError(
                    f"input `{name}`: {want} is {got} here but {sizes[want]} in an earlier input"
                )
        out.append(tensor.contiguous())
    batch, width = sizes.get("B", 1), sizes.get("N", multiple)
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"the batch B must be in [1, {MAX_BATCH}], got {batch}")
    if width % multiple or not multiple <= width <= MAX_CANDIDATES:
        raise ValueError(
            f"the candidate axis N must be a multiple of {multiple} in [{multiple}, "
            f"{MAX_CANDIDATES}], got {width}: pad each request with mask = False"
        )
    for contract, tensor in zip(contracts, out, strict=True):
        if contract["kind"] == "category" and tensor.numel():
            low, high = int(tensor.min()), int(tensor.max())
            if low < 0 or high >= width:
                raise ValueError(
                    f"input `{contract['name']}`: category codes must be in [0, N) = "
                    f"[0, {width}), got {low}..{high} (number labels 0, 1, 2, ... by first "
                    "appearance within the request)"
                )
    return out


class AotiProgram:
    """An AOTInductor package loaded with `torch._C._aoti.AOTIModelPackageLoader`, called like
    the exported program: positional tensors in, a tuple of tensors out."""

    def __init__(self, path: Path | str, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.loader = torch._C._aoti.AOTIModelPackageLoader(  # type: ignore[attr-defined]
            str(path), AOTI_MODEL, False, 1, -1
        )

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.loader.run(check_inputs(self.meta, inputs)))


def load_artifact(path: Path) -> tuple[Any, dict[str, Any]]:
    """(callable program, metadata dict): how a server loads either kind of artifact, here for
    tests and benchmarks. Needs torch only; `examples/serve.py` does the same. An AOTInductor
    package is checked against this host first (`check_host`) and loaded without probing for a
    compiler (`torch._inductor.aoti_load_package` would probe the CPU by compiling a test
    program)."""
    meta = read_metadata(path)
    if meta.get("kind", KIND_EXPORTED) == KIND_AOTI:
        check_host(meta, path)
        return AotiProgram(path, meta), meta
    from blendspec.serve.loading import load_program

    extra = {METADATA_FILE: ""}
    program = load_program(path, extra_files=extra)
    return program.module(), json.loads(extra[METADATA_FILE])


def read_metadata(path: Path) -> dict[str, Any]:
    """The recorded contract alone, read from the archive without deserialising the program
    (which takes seconds for a long slate) or loading a package's library."""
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ExportError(
            f"{path}: not a .pt2 archive written by `blend export` ({error})"
        ) from None
    with archive:
        for name in archive.namelist():
            if name.endswith(f"/extra/{METADATA_FILE}"):
                return json.loads(archive.read(name))
    raise ExportError(f"{path}: no {METADATA_FILE} inside; not written by `blend export`")
