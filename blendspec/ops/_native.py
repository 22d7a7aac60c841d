"""The compiled per-request greedy loops (``csrc/greedy.c``): built on first use, optional.

The torch operators advance a whole batch one step at a time, so at realistic sizes every step
re-reads the batch's feature matrices from memory and pays a fixed cost per tensor op. The C loop
runs each request's steps back to back with its working set in cache, requests spread over
OpenMP threads. It is compiled once per machine into the cache folder (a C compiler is the only
requirement; ``CC`` picks it) and loaded with ctypes.

The torch path stays: it is what ``torch.export`` traces (a served artifact needs torch alone),
it runs on non-CPU tensors, and it is used without a compiler, with ``BLENDSPEC_NATIVE=0`` or
inside ``kernels("torch")``, and for any call carrying a constraint kind the C loop does not know
(``usable``). Both paths follow the same formulas and pick the same slates; their
scores can differ in the last bits of float32 (sums run in a different order), so only the torch
path reproduces an exported artifact bit for bit.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, cast

import torch
from torch import Tensor

from blendspec.ops._greedy import STEP_EXTRAS, Selection
from blendspec.ops.constraints import (
    CategoryCap,
    PreparedConstraints,
    SemanticIdPenalty,
    SoftSpacing,
    _harmonic_unit,
)

SOURCE = Path(__file__).parent / "csrc" / "greedy.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
FLAG_SETS = (
    FLAGS,
    tuple(f for f in FLAGS if f != "-fopenmp"),
    tuple(f for f in FLAGS if f not in ("-fopenmp", "-march=native")),
)
"""What to try, in order: everything, then without OpenMP, then without ``-march=native``."""

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
build_error: str | None = None
"""Why the library is not available (None when it is, or before the first attempt)."""

SSD_TAU = 0.1
"""The SSD loop's float32 attempt holds while every eligible ||v_i||^2 >= SSD_TAU ||phi_i||^2
(see greedy.c); 0 runs every request in float64 from the start. Measured against float64 on
clustered 256-d embeddings: while the smallest ratio stays above 0.05 the float32 diversity
terms are within 1.5e-6 of float64 (the exactness tests allow near-ties below 1e-5); at ratios
down to 0.01 or below, 1.4e-5 to 2e-5. The DESIGN §7 inputs (random 256-d embeddings and the
bias) keep ratios above 0.44 and never fall back."""

DPP_TAU = 0.1
"""The DPP loop's float32 attempt (float32 features and kernel rows, float64 factor and d_i^2)
holds while every eligible d_i^2 >= DPP_TAU S_ii and the best d_i^2 of L stays clear of epsilon
(see greedy.c); 0 runs every request in float64 from the start. Measured against float64 on
clustered, non-negative, nearly low-rank and tightly clustered embeddings (16 to 1,024
dimensions, slates up to 600): while the smallest ratio d_i^2 / S_ii stays above 0.1, log d_i^2
(the score) is within 1.6e-6 of float64 (the exactness tests allow near-ties below 1e-5); from
0.05 to 0.1, 3.5e-6; from 0.03 to 0.05, 6.3e-6; at 1e-3 and below, 7e-3 to 0.75. The DESIGN §7
inputs (non-negative 256-d embeddings, T = 50) keep ratios of 0.14 to 0.17 and never fall
back."""

Kernels = Literal["native", "torch"]
KERNELS: tuple[Kernels, ...] = ("native", "torch")
_choice: contextvars.ContextVar[Kernels] = contextvars.ContextVar("kernels", default="native")


@contextlib.contextmanager
def kernels(choice: Kernels) -> Iterator[None]:
    """Run the operators called inside the block with the compiled loops (``"native"``, the
    default, where available) or with their torch path (``"torch"``)."""
    if choice not in KERNELS:
        raise ValueError(f"unknown kernels {choice!r}; expected one of {KERNELS}")
    token = _choice.set(choice)
    try:
        yield
    finally:
        _choice.reset(token)


class _Constraints(ctypes.Structure):
    _fields_ = [
        ("n_spacing", ctypes.c_int),
        ("spacing_flags", ctypes.c_void_p),
        ("spacing_window", ctypes.c_void_p),
        ("spacing_unit", ctypes.c_void_p),
        ("spacing_scale", ctypes.c_void_p),
        ("sid_levels", ctypes.c_int),
        ("sid_prefix", ctypes.c_void_p),
        ("sid_window", ctypes.c_int32),
        ("sid_min_prefix", ctypes.c_int32),
        ("sid_unit", ctypes.c_double),
        ("sid_scale", ctypes.c_double),
        ("n_caps", ctypes.c_int),
        ("cap_ranks", ctypes.c_void_p),
        ("cap_max", ctypes.c_void_p),
        ("cap_window", ctypes.c_void_p),
    ]


def _cache_folder() -> Path:
    from blendspec.io.cache import cache_dir

    return cache_dir() / "native"


def _host() -> str:
    """What ``-march=native`` compiled for: a cache folder shared by machines with other CPUs
    must not hand them a library with instructions they lack."""
    host = f"{platform.node()} {platform.machine()} {platform.processor()}"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return f"{host} {flags.strip()}"


def _build() -> ctypes.CDLL:
    """Compile (once per source, compiler, flags and CPU) and load the library.

    Compilers without OpenMP (Apple's clang) or without ``-march=native`` get the loops anyway:
    each failed attempt drops one of them (without OpenMP the loops run one request at a time).
    """
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise OSError("no C compiler (set CC)")
    failures: list[str] = []
    for flags in FLAG_SETS:
        try:
            target = _compile(compiler, flags)
        except OSError as error:
            failures.append(str(error))
            continue
        lib = ctypes.CDLL(str(target))
        lib.blend_normalize_rows.restype = None
        lib.blend_set_threads.restype = None
        return lib
    raise OSError(failures[0])


def _compile(compiler: str, flags: tuple[str, ...]) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, compiler.encode(), " ".join(flags).encode(), _host().encode()])
    ).hexdigest()[:16]
    folder = _cache_folder()
    target = folder / f"greedy-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".greedy-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run(
            [compiler, *flags, str(SOURCE), "-o", tmp, "-lm"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise OSError(f"{compiler} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, target)  # concurrent builders: the last rename wins, same bytes
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def library() -> ctypes.CDLL | None:
    """The loaded library, building it on the first call; None when unavailable."""
    global _library, _tried, build_error
    if os.environ.get("BLENDSPEC_NATIVE", "1") == "0":
        return None
    with _lock:
        if not _tried:
            _tried = True
            try:
                _library = _build()
            except OSError as error:
                build_error = str(error)
        return _library


def available(*tensors: Tensor) -> bool:
    """Whether compiled code may run on these tensors at all: asked for, on the CPU, built.
    A greedy loop asks ``usable``, which also checks its constraints."""
    if _choice.get() == "torch" or torch.compiler.is_compiling():
        return False
    if any(t.device.type != "cpu" for t in tensors):
        return False
    return library() is not None


def usable(*tensors: Tensor, constraints: PreparedConstraints) -> bool:
    """Whether an operator call can take the compiled loop.

    ``constraints`` (the call's prepared constraints) is required, not defaulted: greedy.c reads
    the built-in kinds from fixed struct fields and would silently drop any other, so an
    operator must not be able to ask without saying what its call carries. A call with a kind
    greedy.c does not know (``Constraint.native`` False) runs on the torch path; with
    ``BLENDSPEC_DEBUG`` set, a ``RuntimeWarning`` names the kind, since that path is slower.
    ``run_loop`` checks again and refuses such a call outright.
    """
    if not available(*tensors):
        return False
    unknown = constraints.non_native
    if unknown:
        if os.environ.get("BLENDSPEC_DEBUG"):
            warnings.warn(
                f"the compiled loop does not know the constraint kind(s) {', '.join(unknown)}: "
                "this call runs on the torch path",
                RuntimeWarning,
                stacklevel=3,
            )
        return False
    return True


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


_KINDS = (SoftSpacing, SemanticIdPenalty, CategoryCap)
"""The kinds greedy.c's ``Constraints`` struct lays out (exact classes: a subclass may compute
something else), in the order its loops subtract their penalties: spacing, then semantic ID."""


def _constraints(c: PreparedConstraints, keep: list[Tensor]) -> _Constraints:
    """The C view of the prepared constraints; ``keep`` holds the tensors it points into.

    Built from the known kinds only. Anything else here is a bug (``usable`` refuses such a
    call): the C loop would ignore it and pick other slates than the torch path, so it fails."""
    unknown = [
        f"{r.label} ({type(r.record).__name__})" for r in c.records if type(r.record) not in _KINDS
    ]
    spacing = [r for r in c.records if type(r.record) is SoftSpacing]
    sids = [r for r in c.records if type(r.record) is SemanticIdPenalty]
    caps = [r for r in c.records if type(r.record) is CategoryCap]
    penalties = [r.label for r in c.records if r.record.penalizes]
    if unknown or len(sids) > 1 or penalties != [r.label for r in spacing + sids]:
        raise AssertionError(
            f"the compiled loop cannot run constraints {[r.label for r in c.records]}"
            + (f": it does not know {', '.join(unknown)}" if unknown else "")
        )

    def hold(t: Tensor) -> ctypes.c_void_p:
        t = t.contiguous()
        keep.append(t)
        return _ptr(t)

    out = _Constraints()
    if spacing:
        sets = [cast(SoftSpacing, r.record) for r in spacing]
        units = [_harmonic_unit(s.window, 1) for s in sets]
        out.n_spacing = len(sets)
        out.spacing_flags = hold(
            torch.stack([r.tensors["flags"].to(torch.float32) for r in spacing])
        )
        out.spacing_window = hold(torch.tensor([s.window for s in sets], dtype=torch.int32))
        out.spacing_unit = hold(torch.tensor([u for u, _ in units], dtype=torch.float64))
        out.spacing_scale = hold(
            torch.tensor(
                [s.coefficient * scale for s, (_, scale) in zip(sets, units, strict=True)],
                dtype=torch.float64,
            )
        )
    if sids:
        sid = cast(SemanticIdPenalty, sids[0].record)
        prefix = sids[0].tensors["prefix"]
        levels = prefix.shape[1]
        unit, scale = _harmonic_unit(sid.window, levels)
        out.sid_levels = levels
        out.sid_prefix = hold(prefix.to(torch.float32))
        out.sid_window = sid.window
        out.sid_min_prefix = sid.min_prefix
        out.sid_unit = unit
        out.sid_scale = sid.coefficient * scale / levels
    if caps:
        rules = [cast(CategoryCap, r.record) for r in caps]
        out.n_caps = len(caps)
        out.cap_ranks = hold(torch.stack([r.tensors["ranks"].to(torch.int64) for r in caps]))
        out.cap_max = hold(torch.tensor([k.max_count for k in rules], dtype=torch.int32))
        out.cap_window = hold(torch.tensor([k.window for k in rules], dtype=torch.int32))
    return out


def run_loop(
    name: str,
    valid: Tensor,
    relevance: Tensor,
    features: Tensor,
    constraints: PreparedConstraints,
    slate_length: int,
    params: list[object],
    dtype: torch.dtype,
    names: list[str] | None,
    *,
    early_stops: bool = False,
) -> Selection:
    """Call ``blend_<name>`` on a prepared batch (``valid``/``relevance`` ``[B, Np]``, features
    ``[B, N, D]``); with ``names`` (the trace's component names) the per-step trace as well.

    Every loop of ``greedy.c`` shares this calling convention: ``(B, N, Np, D, T, *params,
    relevance, valid, features, constraints, indices, scores, forced[, stops], steps)``, the
    ``stops`` output only for a loop that can stop early (``early_stops``). A new diversifier's
    wrapper calls this; nothing here names the algorithms. Every compiled call passes here, so
    this is where a constraint kind greedy.c does not know is refused (``AssertionError``) even
    if an operator skipped ``usable``: never dropped silently."""
    lib = library()
    assert lib is not None
    b, width = valid.shape
    n, d = features.shape[1], features.shape[2]
    keep: list[Tensor] = []
    cons = _constraints(constraints, keep)
    r = relevance.to(torch.float32).contiguous()
    v = valid.to(torch.uint8).contiguous()
    phi = features.to(torch.float32).contiguous()
    indices = torch.empty((b, slate_length), dtype=torch.int64)
    scores = torch.empty((b, slate_length), dtype=torch.float32)
    forced = torch.zeros((b,), dtype=torch.int64)
    stops = torch.zeros((b,), dtype=torch.uint8)
    planes = None
    if names is not None:
        shape = (len(names) + len(STEP_EXTRAS), b, slate_length, width)
        planes = torch.empty(shape, dtype=dtype)
    outputs = [_ptr(indices), _ptr(scores), _ptr(forced)]
    if early_stops:
        outputs.append(_ptr(stops))
    lib.blend_set_threads(torch.get_num_threads())
    status = getattr(lib, f"blend_{name}")(
        b, n, width, d, slate_length, *params, _ptr(r), _ptr(v), _ptr(phi), ctypes.byref(cons),
        *outputs, None if planes is None else _ptr(planes),
    )  # fmt: skip
    if status != 0:
        raise MemoryError(f"the native {name} loop could not allocate its working memory")
    stopped = stops.to(torch.bool)
    if planes is None or names is None:
        return Selection(indices, scores, forced, stopped)
    steps = dict(zip((*names, *STEP_EXTRAS), planes.unbind(0), strict=True))
    active = indices >= 0
    at = indices.clamp(min=0).unsqueeze(2)
    trace = {
        k: torch.where(active, steps[k].gather(2, at).squeeze(2).to(torch.float32), 0.0)
        for k in names
    }
    return Selection(indices, scores, forced, stopped, trace, steps)


def mmr(
    valid: Tensor,
    relevance: Tensor,
    features: Tensor,
    constraints: PreparedConstraints,
    slate_length: int,
    lam: float,
    names: list[str] | None = None,
) -> Selection:
    """MMR (see ``ops.mmr``) by the compiled loop."""
    params = [ctypes.c_float(lam)]
    return run_loop(
        "mmr", valid, relevance, features, constraints, slate_length, params, torch.float32, names
    )


def ssd(
    valid: Tensor,
    relevance: Tensor,
    features: Tensor,
    constraints: PreparedConstraints,
    slate_length: int,
    *,
    window: int,
    theta: float,
    div_coef: float,
    epsilon: float,
    volume: bool,
    names: list[str] | None = None,
) -> Selection:
    """SSD (see ``ops.ssd``) by the compiled loop; ``div_coef`` is ``(1 - theta) gamma``.

    Each request runs in float32 until one of its residuals shrinks below ``SSD_TAU`` of its
    feature norm, then again in float64 (``greedy.c`` says why); ``SSD_TAU = 0`` skips the
    float32 attempt (the tests compare the two).
    """
    params = [
        ctypes.c_int(window),
        ctypes.c_float(theta),
        ctypes.c_float(div_coef),
        ctypes.c_float(epsilon),
        ctypes.c_int(int(volume)),
        ctypes.c_double(SSD_TAU),
    ]
    return run_loop(
        "ssd", valid, relevance, features, constraints, slate_length, params, torch.float32, names
    )


def dpp(
    valid: Tensor,
    relevance: Tensor,
    features: Tensor,
    constraints: PreparedConstraints,
    slate_length: int,
    *,
    window: int | None,
    two_alpha: float,
    log_epsilon: float,
    names: list[str] | None = None,
) -> Selection:
    """DPP (see ``ops.dpp``) by the compiled loop: float64 state like the torch path, kernel rows
    from float32 features while every d_i^2 stays above ``DPP_TAU`` of S_ii, else the request
    again with float64 kernel rows (``greedy.c`` says why); ``DPP_TAU = 0`` skips the float32
    attempt (the tests compare the two)."""
    params = [
        ctypes.c_int(window or 0),
        ctypes.c_double(two_alpha),
        ctypes.c_double(log_epsilon),
        ctypes.c_double(DPP_TAU),
    ]
    return run_loop(
        "dpp", valid, relevance, features, constraints, slate_length, params, torch.float64, names,
        early_stops=True,
    )  # fmt: skip


def normalize_rows(x: Tensor, mask: Tensor, scale: float, out: Tensor) -> bool:
    """``similarity.normalize_rows`` into ``out`` (a ``[B, N, D]`` view whose rows are
    contiguous and evenly spaced, like a column block of the feature map) by the compiled pass;
    False, having done nothing, when ``out`` is not laid out that way."""
    b, n, d = x.shape
    if tuple(mask.shape) != (b, n) or tuple(out.shape) != (b, n, d):
        return False
    if out.dtype != torch.float32 or out.stride(2) != 1 or out.stride(0) != n * out.stride(1):
        return False
    lib = library()
    assert lib is not None
    src = x.to(torch.float32).contiguous()
    keep = mask.to(torch.uint8).contiguous()
    lib.blend_set_threads(torch.get_num_threads())
    lib.blend_normalize_rows(
        ctypes.c_int64(b * n), ctypes.c_int(d), _ptr(src), _ptr(keep), ctypes.c_float(scale),
        _ptr(out), ctypes.c_int64(out.stride(1)),
    )  # fmt: skip
    return True
