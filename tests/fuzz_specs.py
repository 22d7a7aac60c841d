"""Mutation fuzzing of the example specs: nothing but blendspec's own diagnostics may escape.

CI runs a few thousand cases through tests/test_fuzz.py; for a long run:

    python -m tests.fuzz_specs --cases 200000 --seed 7
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import traceback
from pathlib import Path

from blendspec.compile import compile_graph
from blendspec.diagnostics import SpecError
from blendspec.emit import to_dsl, to_yaml
from blendspec.loader import load_text

SPECS = Path(__file__).resolve().parent.parent / "specs"
_TOKENS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|\S")
_INTERESTING = [b"{", b"}", b"[", b"]", b"(", b")", b"=", b",", b":", b"-", b"*", b'"', b"#",
                b"\n", b"  ", b"\t", b"&a", b"*a", b"!!", b"<<", b"\x00", b"\xff", b"1e999",
                b"nan", b"-0", b"99999999999999999999", b"policy", b"input", b"\\u"]  # fmt: skip


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation: a byte flip, a truncation, a token swap, a deletion or an insertion."""
    choice = rng.randrange(6)
    if not data:
        return rng.choice(_INTERESTING)
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


def check_one(text: bytes, syntax: str) -> None:
    """Load, and if it loads, format and compile: any exception but SpecError is a bug."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return  # the file reader reports undecodable files (E002) before any parsing
    try:
        loaded = load_text(decoded, syntax)  # type: ignore[arg-type]
    except SpecError as error:
        assert error.diagnostics, "a SpecError must carry diagnostics"
        return
    to_dsl(loaded.spec, loaded.document)
    to_yaml(loaded.spec, loaded.document)
    compile_graph(loaded)


def corpus() -> list[tuple[bytes, str]]:
    return [
        (path.read_bytes(), "yaml" if path.suffix == ".yaml" else "dsl")
        for path in sorted(SPECS.iterdir())
        if path.suffix in (".blend", ".yaml")
    ]


def run(cases: int, seed: int) -> list[tuple[str, bytes, str]]:
    rng = random.Random(seed)
    seeds = corpus()
    failures: list[tuple[str, bytes, str]] = []
    for _ in range(cases):
        data, syntax = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            data = mutate(data, rng)
        try:
            check_one(data, syntax)
        except Exception:
            failures.append((syntax, data, traceback.format_exc(limit=4)))
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    failures = run(args.cases, args.seed)
    for syntax, data, trace in failures[:5]:
        print(f"--- {syntax} input:\n{data!r}\n{trace}", file=sys.stderr)
    print(f"{args.cases} cases, {len(failures)} escaped")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
