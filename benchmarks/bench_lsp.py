"""`blend lsp` latency, next to `blend validate` on the same spec in the same run.

    python benchmarks/bench_lsp.py                       # homefeed.blend, 5 starts, 40 edits
    python benchmarks/bench_lsp.py --spec specs/ads.yaml --starts 10 --edits 100

Figures:

- **first diagnostics**: from spawning `blend lsp` to the `publishDiagnostics` of a just-opened
  spec (start-up, initialize, parse and check) — next to the wall time of `blend validate SPEC`
  (a fresh process doing the same check), best of N, run alternately.
- **per edit**: a `didChange` (the whole text, alternately with and without a typo) until its
  diagnostics arrive, in a running server — next to `load_source` on the same texts in this
  process (the check alone). Median of M. The ratio is the server's overhead per keystroke
  (framing, the second parse for navigation, JSON).
- **hover** and **completion**: request to response in a running server, median of M.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from blendspec.lsp.protocol import encode_message, read_message
from blendspec.spec.diagnostics import Source, SpecError
from blendspec.spec.loader import load_source
from blendspec.spec.syntax import syntax_of

REPO = Path(__file__).resolve().parent.parent


def blend() -> list[str]:
    return [sys.executable, "-m", "blendspec.cli"]


class Session:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "BLENDSPEC_DEBUG"}
        self.process = subprocess.Popen(
            [*blend(), "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.ids = 0

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(encode_message({"jsonrpc": "2.0", **message}))
        self.process.stdin.flush()

    def until(self, match: Any) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            message = read_message(self.process.stdout)
            if message is None:
                raise SystemExit("blend lsp stopped")
            if match(message):
                return message

    def request(self, method: str, params: Any) -> dict[str, Any]:
        self.ids += 1
        number = self.ids
        self.send({"id": number, "method": method, "params": params})
        return self.until(lambda m: m.get("id") == number and "method" not in m)

    def diagnostics(self, version: int) -> dict[str, Any]:
        return self.until(
            lambda m: (
                m.get("method") == "textDocument/publishDiagnostics"
                and m["params"].get("version") == version
            )
        )

    def close(self) -> None:
        self.request("shutdown", None)
        self.send({"method": "exit"})
        self.process.wait(timeout=30)


def first_diagnostics(uri: str, text: str, language: str) -> float:
    start = time.perf_counter()
    session = Session()
    session.request("initialize", {"capabilities": {}})
    session.send({"method": "initialized", "params": {}})
    session.send(
        {
            "method": "textDocument/didOpen",
            "params": {
                "textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}
            },
        }
    )
    session.diagnostics(1)
    seconds = time.perf_counter() - start
    session.close()
    return seconds


def validate_wall(spec: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*blend(), "validate", str(spec)], capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=REPO / "specs" / "homefeed.blend")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--edits", type=int, default=40)
    args = parser.parse_args()
    spec: Path = args.spec.resolve()
    text = spec.read_text()
    syntax = syntax_of(spec) or "dsl"
    language = "yaml" if syntax == "yaml" else "blend"
    uri = spec.as_uri()

    validate_wall(spec), first_diagnostics(uri, text, language)  # warm-up: caches, bytecode
    starts, validates = [], []
    for _ in range(args.starts):
        starts.append(first_diagnostics(uri, text, language))
        validates.append(validate_wall(spec))
    print(f"spec: {spec.name} ({len(text.splitlines())} lines)")
    print(
        f"first diagnostics  {min(starts) * 1e3:7.1f} ms   blend validate {min(validates) * 1e3:7.1f} ms"
        f"   ratio {min(starts) / min(validates):.2f}   (best of {args.starts})"
    )

    # A line every spec has, changed into a typo and back.
    first_line = next(line for line in text.splitlines() if line.strip() and line[0] != "#")
    broken = text.replace(first_line, first_line + " }", 1)
    texts = [broken if i % 2 else text for i in range(args.edits)]
    session = Session()
    session.request("initialize", {"capabilities": {}})
    session.send(
        {
            "method": "textDocument/didOpen",
            "params": {
                "textDocument": {"uri": uri, "languageId": language, "version": 0, "text": text}
            },
        }
    )
    session.diagnostics(0)
    edits = []
    for version, body in enumerate(texts, start=1):
        start = time.perf_counter()
        session.send(
            {
                "method": "textDocument/didChange",
                "params": {
                    "textDocument": {"uri": uri, "version": version},
                    "contentChanges": [{"text": body}],
                },
            }
        )
        session.diagnostics(version)
        edits.append(time.perf_counter() - start)
    checks = []
    for body in texts:
        start = time.perf_counter()
        with contextlib.suppress(SpecError):  # the broken texts: their diagnostics
            load_source(Source(str(spec), body), syntax, base_dir=spec.parent, path=spec)
        checks.append(time.perf_counter() - start)
    edit, check = statistics.median(edits), statistics.median(checks)
    print(
        f"per edit           {edit * 1e3:7.2f} ms   load_source    {check * 1e3:7.2f} ms"
        f"   ratio {edit / check:.2f}   (median of {args.edits})"
    )
    lines = text.split("\n")
    row = next(i for i, line in enumerate(lines) if line.strip() and line[0] != "#")
    position = {"line": row, "character": 1}
    hovers, completions = [], []
    for _ in range(args.edits):
        start = time.perf_counter()
        session.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": position})
        hovers.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.request(
            "textDocument/completion", {"textDocument": {"uri": uri}, "position": position}
        )
        completions.append(time.perf_counter() - start)
    print(
        f"hover              {statistics.median(hovers) * 1e3:7.2f} ms   "
        f"completion {statistics.median(completions) * 1e3:7.2f} ms   (median of {args.edits})"
    )
    session.close()


if __name__ == "__main__":
    main()
