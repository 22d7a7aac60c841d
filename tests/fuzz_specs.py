"""Mutation fuzzing of the example specs: nothing but blendspec's own diagnostics may escape.

Oracles on every mutant that validates (issue 18, "nothing lost, nothing wrong with exit 0"):

- every number in the validated model is finite;
- conversion is exact: YAML → DSL → YAML and DSL → YAML → DSL give back the same model, and the
  converted text always loads;
- for a fraction of them, the compiled module runs on a small synthetic batch: no NaN or infinite
  score, and a full slate whenever the request has at least T candidates.

Mutations include hostile inputs: non-finite and huge numbers, YAML `true`, deep nesting, bidi
controls, Unicode digits, control characters and a byte-order mark.

CI runs a few thousand cases through tests/test_fuzz.py; for a long run:

    python -m tests.fuzz_specs --cases 200000 --seed 7
    python -m tests.fuzz_specs --cases 10000000 --seconds 600   # ten minutes, then the report
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from blendspec.compiler.compile import compile_graph
from blendspec.spec.diagnostics import SpecError
from blendspec.spec.emit import to_dsl, to_yaml
from blendspec.spec.loader import LoadedSpec, load_text
from blendspec.spec.model import Spec

SPECS = Path(__file__).resolve().parent.parent / "specs"
_TOKENS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|\S")
_INTERESTING = [b"{", b"}", b"[", b"]", b"(", b")", b"=", b",", b":", b"-", b"*", b'"', b"#",
                b"\n", b"  ", b"\t", b"&a", b"*a", b"!!", b"<<", b"\x00", b"\xff", b"1e999",
                b"nan", b"-0", b"99999999999999999999", b"policy", b"input", b"\\u"]  # fmt: skip

# Hostile values (issue 18) that replace a number token of the spec, so that they land exactly
# where a number is read: every one must be refused with a located diagnostic or be in range.
_HOSTILE_NUMBERS = [b"inf", b"-inf", b"nan", b".inf", b".nan", b"1e400", b"1e309", b'"Infinity"',
                    b"true", b"10000000000000001", b"9" * 5000, b"9" * 400, b"1000000000",
                    b"709", b"10000", b"10001", b"100000", b"0", b"1e-400", b"5e-324",
                    "5\u0660".encode(), "\u0665".encode(), "\uff15".encode(), b"0x10", b"1_000",
                    b"1e9", b"-1e9", b"1000000001", b"0.1", b"1e-07"]  # fmt: skip
_HOSTILE_TEXT = ["\u202e".encode(), "\u2066".encode(), "\u061c".encode(), "\ufeff".encode(),
                 b"\x7f", b"\x1b", "\u2028".encode(), "\x85".encode(), b"\r", b"[" * 70,
                 b"{a = " * 70, b"{a: " * 70, b"- " * 70]  # fmt: skip
_NUMBER = re.compile(rb"(?<![A-Za-z_0-9.])[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![A-Za-z_0-9])")
BOM = "\ufeff".encode()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation: a byte flip, a truncation, a token swap, a deletion, an insertion, a
    line repeat, a hostile number in place of a number, hostile text, deep nesting or a BOM."""
    choice = rng.randrange(10)
    if not data:
        return rng.choice(_INTERESTING)
    if choice >= 6:
        return _hostile(data, rng, choice)
    position = rng.randrange(len(data))
    if choice == 0:
        flipped = data[position] ^ (1 << rng.randrange(8))
        return data[:position] + bytes([flipped]) + data[position + 1 :]
    if choice == 1:
        return data[:position]
    if choice == 2:
        tokens = _TOKENS.findall(data.decode("utf-8", "replace"))
        if len(tokens) < 2:
            return data[:position]
        a, b = rng.sample(range(len(tokens)), 2)
        text = data.decode("utf-8", "replace")
        token_a, token_b = tokens[a], tokens[b]
        return (
            text.replace(token_a, "\x01", 1)
            .replace(token_b, token_a, 1)
            .replace("\x01", token_b, 1)
            .encode()
        )
    if choice == 3:
        end = min(len(data), position + rng.randrange(1, 40))
        return data[:position] + data[end:]
    if choice == 4:
        return data[:position] + rng.choice(_INTERESTING) + data[position:]
    line_start = data.rfind(b"\n", 0, position) + 1
    line_end = data.find(b"\n", position)
    line = data[line_start : line_end if line_end >= 0 else len(data)]
    return data[:line_start] + line + b"\n" + data[line_start:]


def _hostile(data: bytes, rng: random.Random, choice: int) -> bytes:
    if choice in (6, 7):
        numbers = list(_NUMBER.finditer(data))
        if numbers:
            match = rng.choice(numbers)
            return data[: match.start()] + rng.choice(_HOSTILE_NUMBERS) + data[match.end() :]
    if choice == 9 and not data.startswith(BOM):
        return BOM + data
    position = rng.randrange(len(data) + 1)
    insert = rng.choice(_HOSTILE_TEXT)
    if insert[:1] in (b"[", b"{", b"-") and rng.random() < 0.5:
        insert = insert * rng.randrange(2, 20)  # well past the nesting limit
    return data[:position] + insert + data[position:]


def non_finite_numbers(value: Any, path: str = "spec") -> list[str]:
    """Paths of every float in a model that is not finite (the oracle: none may validate)."""
    if isinstance(value, BaseModel):
        return [
            found
            for name in type(value).model_fields
            for found in non_finite_numbers(getattr(value, name), f"{path}.{name}")
        ]
    if isinstance(value, dict):
        return [f for key, item in value.items() for f in non_finite_numbers(item, f"{path}.{key}")]
    if isinstance(value, list | tuple):
        return [f for i, item in enumerate(value) for f in non_finite_numbers(item, f"{path}[{i}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    return []


def check_round_trip(loaded: LoadedSpec) -> None:
    """The other syntax and back gives the same model; both texts load (a SpecError is a bug)."""
    spec = loaded.spec
    if loaded.document.syntax == "yaml":
        there = load_text(to_dsl(spec, loaded.document), "dsl")
        back = load_text(to_yaml(there.spec, there.document), "yaml")
    else:
        there = load_text(to_yaml(spec, loaded.document), "yaml")
        back = load_text(to_dsl(there.spec, there.document), "dsl")
    exact = _exact(spec)
    assert _exact(there.spec) == exact, "conversion changed the spec"
    assert _exact(back.spec) == exact, "conversion and back changed the spec"


def _exact(value: Any) -> Any:
    """A model's data with every float as its bits (`==` takes -0.0 for 0.0), ints and floats
    told apart."""
    if isinstance(value, BaseModel):
        return _exact(value.model_dump(mode="python"))
    if isinstance(value, dict):
        return {key: _exact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_exact(item) for item in value]
    if isinstance(value, float):
        return ("float", value.hex())
    return value


MAX_RUN_SIZE = 512
"""Forward passes only for specs whose inputs and slate stay small (the oracle must be cheap)."""


def check_forward(loaded: LoadedSpec, seed: int) -> bool:
    """A small synthetic batch through the compiled module: finite scores, a full slate.
    False when the spec is too large for a cheap pass (or needs a policy file) and was skipped."""
    import torch

    from blendspec.compiler.lower import REQUEST_SEED_KEY, module_for, request_seeds

    spec: Spec = loaded.spec
    sizes = [i.size or 1 for i in spec.inputs.values()]
    if spec.slate.length > 64 or max(sizes) > MAX_RUN_SIZE:
        return False
    if spec.policy is not None and spec.policy.file is not None:
        return False  # the file is not there for a text loaded from memory
    module = module_for(loaded)
    length = spec.slate.length
    b, n = 2, length + 3
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones((b, n), dtype=torch.bool)
    mask[1, n - 1] = False  # padding in one request; it still has n - 1 ≥ T candidates
    filtered = set(spec.rules.filters)
    inputs: dict[str, torch.Tensor] = {}
    for name, declared in spec.inputs.items():
        kind, size = declared.kind, declared.size or 1
        if kind == "score":
            inputs[name] = torch.rand((b, n), generator=generator)
        elif kind == "embedding":
            inputs[name] = torch.randn((b, n, size), generator=generator)
        elif kind == "semantic_id":
            inputs[name] = torch.randint(0, 3, (b, n, size), generator=generator)
        elif kind == "category":
            inputs[name] = torch.randint(0, 4, (b, n), generator=generator)
        elif kind == "flag":
            flags = torch.rand((b, n), generator=generator) < 0.3
            inputs[name] = torch.zeros_like(flags) if name in filtered else flags
        else:
            inputs[name] = torch.randn((b, size), generator=generator)
    if spec.policy is not None:
        inputs[REQUEST_SEED_KEY] = request_seeds([f"r{seed}", f"s{seed}"])
    with torch.no_grad():
        out = module(mask, inputs)
    indices, scores = out["indices"], out["scores"]
    assert (indices >= 0).all(), f"short slate: {indices.tolist()}"
    assert torch.isfinite(scores).all(), f"non-finite scores: {scores.tolist()}"
    for key, value in out.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert not torch.isnan(value).any(), f"NaN in `{key}`"
    return True


def check_one(text: bytes, syntax: str, *, forward: bool = False, seed: int = 0) -> str:
    """Load, and if it loads, check the oracles and compile: any exception but SpecError on the
    mutant itself, or any failed oracle, is a bug."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return "undecodable"  # the file reader reports these (E002) before any parsing
    try:
        loaded = load_text(decoded, syntax)  # type: ignore[arg-type]
    except SpecError as error:
        assert error.diagnostics, "a SpecError must carry diagnostics"
        # A field missing from the whole spec has no token to point at; anything else does.
        assert all(d.span is not None for d in error.diagnostics if d.code != "E101"), (
            "every diagnostic of a spec text must be located"
        )
        return "refused"
    assert not non_finite_numbers(loaded.spec), non_finite_numbers(loaded.spec)
    check_round_trip(loaded)
    compile_graph(loaded)
    if forward and check_forward(loaded, seed):
        return "ran"
    return "validated"


def corpus() -> list[tuple[bytes, str]]:
    return [
        (path.read_bytes(), "yaml" if path.suffix == ".yaml" else "dsl")
        for path in sorted(SPECS.iterdir())
        if path.suffix in (".blend", ".yaml")
    ]


def run(
    cases: int,
    seed: int,
    forward_every: int = 10,
    outcomes: Counter[str] | None = None,
    seconds: float | None = None,
) -> list[tuple[str, bytes, str]]:
    """`cases` mutants, or as many as fit in `seconds`; every `forward_every`-th one that
    validates also runs forward. `outcomes` (if given) counts refused / validated / ran /
    undecodable / escaped cases."""
    rng = random.Random(seed)
    seeds = corpus()
    failures: list[tuple[str, bytes, str]] = []
    valid = 0
    deadline = None if seconds is None else time.monotonic() + seconds
    for case in range(cases):
        if deadline is not None and time.monotonic() > deadline:
            break
        data, syntax = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            data = mutate(data, rng)
        try:
            outcome = check_one(data, syntax, forward=valid % forward_every == 0, seed=case)
        except Exception:
            failures.append((syntax, data, traceback.format_exc(limit=6)))
            outcome = "escaped"
        valid += outcome in ("validated", "ran")
        if outcomes is not None:
            outcomes[outcome] += 1
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seconds", type=float, default=None, help="stop after this long (then report)"
    )
    parser.add_argument(
        "--forward-every", type=int, default=10, help="run forward on one in N validated cases"
    )
    args = parser.parse_args()
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    failures = run(args.cases, args.seed, args.forward_every, outcomes, args.seconds)
    elapsed = time.monotonic() - started
    for syntax, data, trace in failures[:5]:
        shown = data if len(data) < 4000 else data[:2000] + b" ... " + data[-2000:]
        print(f"--- {syntax} input:\n{shown!r}\n{trace}", file=sys.stderr)
    counts = ", ".join(f"{outcomes[k]} {k}" for k in ("refused", "validated", "ran", "undecodable"))
    total = sum(outcomes.values())
    print(f"{total} cases in {elapsed:.0f} s ({counts}), {len(failures)} escaped")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
