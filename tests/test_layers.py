"""The package's shape: its import graph has no cycles, and the spec layer runs without torch.

The import graph is read from the source with `ast`, so a cycle is caught even on a path no other
test imports. Two graphs are checked:

* module-level imports (what runs when a module is imported, less ``if TYPE_CHECKING:`` blocks):
  must be acyclic, with no exception — a cycle here is an import-order bug waiting to happen;
* every import: module-level, function-level (lazy) and type-only (``if TYPE_CHECKING:``). Lazy
  imports are how the command line avoids torch until a command needs it, but a cycle through
  them, or through type hints, still means two modules that cannot be understood apart, so this
  graph must be acyclic too, except for the cycles listed in KNOWN_LAZY_CYCLES.

Then, in subprocesses, the spec commands run and report which modules they loaded: torch and
blendspec.ops must not be among them, nor, for a plain `blend validate`, typer and rich (it runs
without the typer app, and must answer as the typer command does). The parser cache is checked
too: optional, and loading the same parser as a fresh build.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blendspec._moved import MOVED
from tests.conftest import REPO, SPECS

PACKAGE = REPO / "blendspec"

# Cycles through lazy or type-only imports tolerated, each a sorted tuple of its modules: none
# (the last, ops._greedy ⇄ ops.constraints, ended when the cap bias moved to its one user).
KNOWN_LAZY_CYCLES: set[tuple[str, ...]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, *, lazy: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements run at import time; with `lazy`, also those inside functions and
    ``if TYPE_CHECKING:`` blocks."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            if lazy:  # never runs, but is still a dependency between the two modules
                stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            if lazy:
                stack.extend(ast.iter_child_nodes(node))
        else:
            stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, current: str, known: set[str]) -> set[str]:
    """The blendspec modules an import statement loads (`from pkg import mod` loads pkg.mod)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: resolve against the current package
            package = current.split(".")
            if not (PACKAGE / Path(*package[1:]) / "__init__.py").exists():
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([base] if base else [])])
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("blendspec") and name != current:
            found.add(name)
    return found


def import_graph(*, lazy: bool) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = set().union(*(_targets(n, name, known) for n in _imports(tree, lazy=lazy)))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_module_level_imports_are_acyclic() -> None:
    graph = import_graph(lazy=False)
    assert "blendspec.cli" in graph and "blendspec.spec.loader" in graph  # the reader found them
    assert cycles(graph) == []


def test_lazy_and_type_only_imports_add_no_cycle() -> None:
    found = set(cycles(import_graph(lazy=True)))
    assert found - KNOWN_LAZY_CYCLES == set()


def test_library_modules_import_no_command_line() -> None:
    """The command line calls the library, never the reverse (nor does the library use typer)."""
    for name, path in _modules().items():
        if name == "blendspec.__main__" or name.startswith("blendspec.cli"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _imports(tree, lazy=True):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for module in modules:
                assert not module.startswith("blendspec.cli"), f"{name} imports {module}"
                assert module.split(".")[0] != "typer", f"{name} imports typer"


# ---------------------------------------------------------------- the spec layer without torch

_PROBE = """
import json, sys
from blendspec.cli import main
sys.argv = ["blend", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "blendspec.ops")))
print(json.dumps({"code": code, "heavy": heavy}))
"""

SPEC = str(SPECS / "homefeed.blend")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate", SPEC, str(SPECS / "ads.yaml")],
        ["fmt", "--check", SPEC],
        ["fmt", "--to", "yaml", SPEC],
        ["schema"],
        ["graph", SPEC],
        ["graph", "--format", "json", SPEC],
        ["diff", SPEC, str(SPECS / "discovery.blend")],
        ["policy", "--help"],
    ],
    ids=lambda a: " ".join(Path(x).name for x in a),
)
def test_spec_commands_never_import_torch(args: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_env(), "BLENDSPEC_CACHE": str(tmp_path / "cache")},
        timeout=120,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, 1, None), done.stderr  # diff exits 1 on changes with none
    assert result["heavy"] == [], f"`blend {' '.join(args)}` imported {result['heavy'][:5]}"


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "BLENDSPEC_DEBUG"}


def test_parser_cache_is_used_and_optional(tmp_path: Path) -> None:
    """The built parser is cached once per grammar; an unwritable cache folder only costs time."""
    probe = (
        "from blendspec.spec.syntax import _parser, grammar_text, parser_cache_path; "
        "_parser(); print(parser_cache_path(grammar_text()))"
    )
    cache = tmp_path / "cache"
    env = {**_env(), "BLENDSPEC_CACHE": str(cache)}
    first = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    path = Path(first.stdout.strip())
    assert first.returncode == 0, first.stderr
    assert path.is_file() and path.is_relative_to(cache)
    stamp = path.stat().st_mtime_ns
    again = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and path.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    path.write_bytes(b"not a parser")  # a corrupt cache file is rebuilt, never an error
    broken = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert broken.returncode == 0, broken.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a cache "folder" that is a file: nothing can be written below it
    env["BLENDSPEC_CACHE"] = str(blocked)
    cli = subprocess.run(
        [sys.executable, "-m", "blendspec", "validate", SPEC],
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert "ok" in cli.stderr and "error" not in cli.stderr


def test_a_cached_parser_parses_as_the_built_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache holds the built parser pickled whole, its scanners' regexes compiled: loaded, it
    gives the same documents and the same syntax errors, and compiles no regex while parsing."""
    import re

    from lark import Lark

    from blendspec.spec import syntax
    from blendspec.spec.diagnostics import Source, SpecError, render_text

    built = Lark(syntax.grammar_text(), **syntax._PARSER_OPTIONS)
    path = tmp_path / "parser.pickle"
    syntax._save_parser(built, path)
    with open(path, "rb") as cached:
        loaded = syntax._ParserUnpickler(cached).load()

    def document(parser: Lark, text: str) -> object:
        monkeypatch.setattr(syntax, "_parser", lambda: parser)
        try:
            parsed = syntax.parse_document(Source("x.blend", text), "dsl")
        except SpecError as error:
            return render_text(error.source, error.diagnostics)
        return parsed.data, parsed.spans

    texts = [p.read_text() for p in sorted(SPECS.glob("*.blend"))]
    texts += [t.replace("utility", "utility utility", 1) for t in texts]  # unexpected token
    texts += [t[: len(t) // 2] for t in texts] + [t.replace("=", "$", 1) for t in texts]
    expected = [document(built, text) for text in texts]
    compiled: list[object] = []
    compile_regex = re.compile
    monkeypatch.setattr(re, "compile", lambda *args: compiled.append(args) or compile_regex(*args))
    assert [document(loaded, text) for text in texts] == expected
    assert compiled == []


_MODULES_PROBE = """
import json, sys
from blendspec.cli import main
sys.argv = ["blend", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in ("typer", "click", "rich") if m in sys.modules)))
"""


@pytest.mark.parametrize(
    "args",
    [["validate", SPEC, str(SPECS / "ads.yaml")], ["validate", "--format", "json", SPEC]],
    ids=lambda a: " ".join(Path(x).name for x in a),
)
def test_plain_validate_imports_neither_typer_nor_rich(args: list[str], tmp_path: Path) -> None:
    """`blend validate SPEC…` on clean specs, stderr not a terminal, runs on the spec layer alone:
    typer's import and app, and rich's, are most of what start-up could save (issue 16)."""
    done = subprocess.run(
        [sys.executable, "-c", _MODULES_PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "path",
    ["specs/a.blend", "/x y/a.yaml (2 warnings)", "a[b]c.blend", "x:y:.blend", "é.blend",
     "tab\tname.blend", "long/" * 40 + "a.blend", "trailing ", "bell\a.blend"],
)  # fmt: skip
def test_print_marked_writes_what_rich_would(
    path: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`blend validate`'s "ok" line skips rich only where rich would write the text unchanged."""
    from blendspec.cli.common import print_marked
    from blendspec.io.console import stderr_console

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    print_marked("ok", "green", f" {path}")
    plain = capsys.readouterr().err
    stderr_console().print(f"[green]ok[/green] {path}")
    assert plain == capsys.readouterr().err


def test_plain_validate_answers_as_the_typer_command(tmp_path: Path) -> None:
    """A plain `blend validate` command line runs without typer (blendspec.cli.validating);
    BLENDSPEC_DEBUG turns that off, so with and without it the answers must be the same: exit
    code, stdout and stderr, in colour too."""
    errors = REPO / "tests" / "golden" / "errors"
    odd = tmp_path / "a[b]c:d.blend"  # rich markup and emoji syntax in a path
    odd.write_text((SPECS / "ads.blend").read_text())
    lines = [
        ["validate", SPEC],
        ["validate", SPEC, str(SPECS / "ads.yaml"), str(errors / "misspelled_input.blend")],
        ["validate", "--strict", str(errors / "warnings_only.blend")],
        ["validate", str(errors / "warnings_only.blend"), "--no-strict"],
        ["validate", "--format=json", str(errors / "many_errors.yaml"), SPEC],
        ["validate", str(errors / "warnings_only.blend"), "--format", "json", "--strict"],
        ["validate", "--format", "text", "missing.blend", "spec.txt", str(odd)],
    ]
    for env in ({}, {"FORCE_COLOR": "1"}):
        for line in lines:
            answers = []
            for debug in ({}, {"BLENDSPEC_DEBUG": "1"}):
                done = subprocess.run(
                    [sys.executable, "-m", "blendspec", *line],
                    capture_output=True,
                    cwd=tmp_path,
                    env={**_env(), **env, **debug},
                    timeout=120,
                )
                answers.append((done.returncode, done.stdout, done.stderr))
            assert answers[0] == answers[1], (env, line)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_flat_path_is_its_new_home(old: str) -> None:
    """Scripts written against the flat layout keep importing: the old path is the new module."""
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert not (REPO / (old.replace(".", "/") + ".py")).exists()


def test_the_documented_import_paths_still_work() -> None:
    """README and docs show these paths; they re-export the modules' new homes (the same objects)."""
    import blendspec.compile
    import blendspec.loader
    import blendspec.lower

    import blendspec.compiler.compile
    import blendspec.compiler.lower
    import blendspec.explain.breakdown
    import blendspec.policy.grid
    import blendspec.policy.rewards
    import blendspec.policy.runtime
    import blendspec.policy.train
    import blendspec.spec.loader
    from blendspec import explain, ops, policy

    assert blendspec.compile.compile_graph is blendspec.compiler.compile.compile_graph
    assert blendspec.loader.load_spec is blendspec.spec.loader.load_spec
    for name in ("BlendModule", "module_for", "request_seeds", "REQUEST_SEED_KEY"):
        assert getattr(blendspec.lower, name) is getattr(blendspec.compiler.lower, name)
    assert policy.train_policy is blendspec.policy.train.train_policy
    assert policy.load_policy is blendspec.policy.runtime.load_policy
    assert policy.spec_hash is blendspec.policy.grid.spec_hash
    assert policy.ActionGrid is blendspec.policy.grid.ActionGrid
    assert policy.log_data is blendspec.policy.rewards.log_data
    assert explain.trace_request is blendspec.explain.breakdown.trace_request
    for name in ("ssd", "dpp", "mmr", "feature_map", "SimilaritySignals", "normalize_relevance"):
        assert callable(getattr(ops, name))
    with pytest.raises(AttributeError):
        _ = policy.no_such_name
