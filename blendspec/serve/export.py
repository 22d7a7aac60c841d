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
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
    """The spec cannot be exported (an operator without an export path, a policy file problem);
    ``internal`` when torch.export failed on an operator that should trace (a bug: exit 2)."""

    def __init__(self, message: str, internal: bool = False) -> None:
        super().__init__(message)
        self.internal = internal


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    metadata: ExportMetadata
    seconds: float
    bytes: int


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


def export_spec(loaded: LoadedSpec, path: Path) -> ExportResult:
    """Export the compiled spec to `path` (written atomically). Raises `ExportError`."""
    from blendspec.compiler.lower import MissingLowering
    from blendspec.policy.grid import spec_hash
    from blendspec.policy.store import PolicyFileError

    started = time.perf_counter()
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
    from blendspec.io.outputs import atomic_path

    path = Path(path)
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer, not a temp name
    torch.export.save(program, buffer, extra_files={METADATA_FILE: metadata.to_json()})
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return ExportResult(path, metadata, time.perf_counter() - started, path.stat().st_size)


def load_artifact(path: Path) -> tuple[Any, dict[str, Any]]:
    """(callable program, metadata dict): how a server loads it, here for tests and benchmarks.
    Needs torch only; the same four lines are in `examples/serve.py`."""
    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), json.loads(extra[METADATA_FILE])


def read_metadata(path: Path) -> dict[str, Any]:
    """The recorded contract alone, read from the archive without deserialising the program
    (which takes seconds for a long slate)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(f"/extra/{METADATA_FILE}"):
                return json.loads(archive.read(name))
    raise ExportError(f"{path}: no {METADATA_FILE} inside; not written by `blend export`")
