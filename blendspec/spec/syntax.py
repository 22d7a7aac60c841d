"""Front ends: DSL text (Lark) and YAML text, each to the same plain data plus a map of source spans.

Both syntaxes build the *YAML form* of a spec as plain Python data (formulas already parsed into
expression dicts) and a `SpanMap` from each data path to where the user wrote it. Everything
downstream — pydantic validation, semantic checks, diagnostics — works on that pair, which is why the
same mistake gets the same code and points at the same token in either syntax.
"""

from __future__ import annotations

import _sre
import functools
import hashlib
import importlib.resources
import io
import math
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lark
import yaml
from lark import Lark, Token, Tree
from lark.parsers.lalr_analysis import Reduce, Shift

from blendspec.spec.diagnostics import Diagnostic, Source, Span, SpecError

PathKey = tuple[str | int, ...]
SpanMap = dict[PathKey, Span]
KEY = "@key"
"""Path suffix under which a mapping key's own span is stored (the value's span is at the path)."""

FORMULA_PATHS: tuple[PathKey, ...] = (
    ("objectives", "*"),
    ("utility",),
    ("diversity", "similarity"),
    ("rewards", "*"),
)

Syntax = Literal["dsl", "yaml"]


@dataclass(frozen=True)
class Document:
    """A spec as written: its source, syntax, YAML-form data and spans."""

    source: Source
    syntax: Syntax
    data: dict[str, Any]
    spans: SpanMap

    def span_of(self, path: PathKey) -> Span | None:
        """The span of the deepest written part of `path` (a missing field points at its parent)."""
        path = tuple(path)
        if path in self.spans:
            return self.spans[path]
        for end in range(len(path) - 1, -1, -1):
            prefix = path[:end]
            if prefix + (KEY,) in self.spans:
                return self.spans[prefix + (KEY,)]
            if prefix in self.spans:
                return self.spans[prefix]
        return None

    def key_span(self, path: PathKey) -> Span | None:
        return self.spans.get(tuple(path) + (KEY,)) or self.span_of(path)


def value_at(data: Any, path: PathKey) -> Any:
    """The node of parsed spec data at `path`, or None where the path leads nowhere."""
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def syntax_of(path: Path) -> Syntax | None:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix in (".blend", ".bspec"):
        return "dsl"
    return None


_YAML_START = re.compile(r"(---|\{|[A-Za-z_][A-Za-z0-9_]*[ \t]*:|[\"'][^\"']*[\"'][ \t]*:)")


def guess_syntax(text: str) -> Syntax:
    """The syntax of a spec without a file name (read from standard input): YAML when its first
    line of content is a mapping key (`name: feed`), a document marker or a flow mapping, else
    the DSL, whose statements start with a keyword and a space (`spec feed`)."""
    for line in text.removeprefix(BOM).splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return "yaml" if _YAML_START.match(stripped) else "dsl"
    return "dsl"


def parse_document(source: Source, syntax: Syntax) -> Document:
    """Either front end, after the checks that must come before any recursive stage."""
    # A byte-order mark is an encoding artefact, not part of the spec: editors on Windows write
    # one, PyYAML skips it, and the DSL must not see it as a stray invisible character.
    if source.text.startswith(BOM):
        source = Source(source.name, source.text[len(BOM) :])
    if syntax == "dsl":
        _refuse_control_characters(source)
    check_nesting(source, syntax)
    return parse_dsl(source) if syntax == "dsl" else parse_yaml(source)


BOM = "\ufeff"

# ---------------------------------------------------------------- checks before parsing

MAX_NESTING = 64
"""Lists, blocks and mappings nest at most this deep. PyYAML's composer and the DSL builder recurse
once per level, so without a limit ~500 levels of YAML or ~600 nested DSL lists end in a
RecursionError; real specs nest three or four levels."""

_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]|\r(?!\n)"
)
"""Characters the DSL refuses anywhere, comments included: those YAML cannot hold (so `fmt --to
yaml` could not write them) and those YAML reads as line breaks (so a comment would spill into
code)."""


def char_name(char: str) -> str:
    """A character as a message can show it: itself when visible, else its code point."""
    if char.isprintable() and char not in BIDI_CONTROLS and char != BOM:
        return f"`{char}`"
    return f"U+{ord(char):04X}"


BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)
"""Unicode bidirectional controls: they reorder how text is displayed, so a comment or string can
hide code from a reviewer ("Trojan Source", CVE-2021-42574)."""


def _position(text: str, offset: int) -> Span:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Span.point(line, column)


def _refuse_control_characters(source: Source) -> None:
    match = _CONTROL.search(source.text)
    if match is None:
        return
    char = match.group()
    raise SpecError(
        source,
        [
            Diagnostic(
                "E001",
                f"control character {char_name(char)} is not allowed in a spec",
                _position(source.text, match.start()),
                help="remove it; inside a string write it as an escape such as `\\u0007`",
            )
        ],
    )


def check_nesting(source: Source, syntax: Syntax) -> None:
    """Refuse (E004) text that nests lists, blocks or mappings deeper than MAX_NESTING.

    A cheap scan of the text, run before any stage that recurses per level: bracket depth outside
    strings and comments, plus, in YAML, the depth of block indentation and of `- - -` items.
    """
    text = source.text
    found = _dsl_too_deep(text) if syntax == "dsl" else _yaml_too_deep(text)
    if found is not None:
        raise SpecError(source, [_too_deep(found)])


def _too_deep(span: Span) -> Diagnostic:
    return Diagnostic(
        "E004",
        f"the spec nests more than {MAX_NESTING} levels deep",
        span,
        help="specs nest a few levels; flatten this value",
    )


def _dsl_too_deep(text: str) -> Span | None:
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return None  # the common case: not even enough brackets to go too deep
    depth = 0
    for number, line in enumerate(text.split("\n"), start=1):
        in_string = escaped = False
        for column, char in enumerate(line, start=1):
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "#":
                break
            elif char in "[{":
                depth += 1
                if depth > MAX_NESTING:
                    return Span.point(number, column)
            elif char in "]}":
                depth = max(depth - 1, 0)
    return None


def _yaml_too_deep(text: str) -> Span | None:
    """Block depth from indentation (a stack of indents, plus one per leading `- `), then flow
    depth from brackets on top of the block depth of the line where they open.

    An approximation of YAML's grammar that may over-count (a spec is rarely near the limit) and
    rarely under-counts; `parse_yaml` still turns a RecursionError of the composer into E004."""
    stack: list[int] = []
    flow = 0
    quote: str | None = None
    base = 0
    block_scalar: int | None = None  # inside `key: |` content: lines indented deeper than this
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if block_scalar is not None:
            if not stripped.strip() or indent > block_scalar:
                continue  # text of a literal or folded scalar, not structure
            block_scalar = None
        if flow == 0 and stripped and not stripped.startswith("#"):
            while stack and stack[-1] >= indent:
                stack.pop()
            stack.append(indent)
            dashes = 0
            rest = stripped
            while rest == "-" or rest.startswith(("- ", "-\t")):
                dashes += 1
                rest = rest[1:].lstrip(" \t")
            base = len(stack) + dashes
            if base > MAX_NESTING:
                return Span.point(number, indent + 1)
        significant = ""  # the last non-blank character outside quotes on this line
        escaped = False
        for column, char in enumerate(line, start=1):
            if quote is not None:
                if escaped:
                    escaped = False
                elif char == "\\" and quote == '"':
                    escaped = True
                elif char == quote:
                    quote = None
                    significant = char
                continue
            if char in " \t":
                continue
            if char == "#" and (column == 1 or line[column - 2] in " \t"):
                break
            if char in "'\"" and significant in ("", ":", "-", "[", "{", ",", "?"):
                quote = char  # a quoted scalar starts only where a scalar can start
            elif char in "|>" and flow == 0 and significant in ("", ":", "-"):
                block_scalar = indent
            elif char in "[{":
                flow += 1
                if base + flow > MAX_NESTING:
                    return Span.point(number, column)
            elif char in "]}":
                flow = max(flow - 1, 0)
            significant = char
    return None


# ---------------------------------------------------------------- the Lark parser


GRAMMAR_FILE = "blendspec.lark"


def grammar_text() -> str:
    """The grammar ships inside the wheel as `blendspec.grammar`; a bare checkout keeps it in grammar/."""
    try:
        return importlib.resources.files("blendspec.grammar").joinpath(GRAMMAR_FILE).read_text()
    except ModuleNotFoundError:
        return (Path(__file__).resolve().parents[2] / "grammar" / GRAMMAR_FILE).read_text()


_PARSER_OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "lexer": "contextual",
    "start": ["start", "expr"],
    "propagate_positions": True,
    "maybe_placeholders": True,
}


_CACHE_FORMAT = 2
"""What the parser cache holds. 1: lark's `Lark.save`, which `Lark.load` rebuilds object by object,
after which each of the contextual lexer's scanners compiles its regex on first use; 2: the
built parser pickled whole (:class:`_ParserPickler`), its scanners built and their regexes kept
as compiled code. Loading the parser and parsing a first spec take 40% of their time in format 1
(~11 ms less of `blend validate`, which parses one spec per process)."""


def parser_cache_path(grammar: str) -> Path:
    """Where the built parser is cached: keyed by the grammar, the options, the cache format and
    the versions of lark and Python (the build: compiled regexes are its internal code), so an
    edited grammar or an upgrade never loads a stale parser."""
    from blendspec.io.cache import cache_dir

    options = sorted(_PARSER_OPTIONS.items())
    key = repr([grammar, options, lark.__version__, sys.version, _CACHE_FORMAT])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return cache_dir() / "parser" / f"lark-{digest}.pickle"


@functools.cache
def _parser() -> Lark:
    """The LALR parser, built once per grammar and cached on disk.

    Building the tables takes most of a second — most of `blend validate`'s time, which an
    editor or a pre-commit hook pays on every save. The cache is only an optimisation: a missing,
    unreadable or corrupt file is rebuilt, and a cache folder that cannot be written is skipped
    (the parser is then built each time, as before).
    """
    grammar = grammar_text()
    path = parser_cache_path(grammar)
    try:
        with open(path, "rb") as cached:
            loaded = _ParserUnpickler(cached).load()
        return loaded if isinstance(loaded, Lark) else Lark.load(loaded)  # see _save_parser
    except Exception:  # absent, unreadable, truncated or from another lark: build it instead
        pass
    parser = Lark(grammar, **_PARSER_OPTIONS)
    _save_parser(parser, path)
    return parser


def _save_parser(parser: Lark, path: Path) -> None:
    """Write the built parser atomically (a concurrent reader never sees half a file): pickled
    whole (cache format 2), or, should some lark's parser not pickle so, in lark's own format
    (which `_parser` loads too)."""
    from blendspec.io.outputs import OutputError, atomic_path

    try:
        with atomic_path(path) as temporary, open(temporary, "wb") as out:
            try:
                whole = _pickle_whole(parser)
            except Exception:
                parser.save(out)
            else:
                out.write(whole)
    except (OSError, OutputError):
        pass  # a read-only or full cache folder: the parser works, it is just not cached


def _pickle_whole(parser: Lark) -> bytes:
    """The parser pickled whole, after building every scanner of its contextual lexer (one per
    set of terminals a parser state accepts, and one of them all for error messages), which lark
    builds on first use: so the cache holds them compiled, and no parse compiles a regex."""
    lexer = parser.parser.lexer
    for basic in {*lexer.lexers.values(), lexer.root_lexer}:
        _ = basic.scanner
    whole = io.BytesIO()
    _ParserPickler(whole, protocol=pickle.HIGHEST_PROTOCOL).dump(parser)
    return whole.getvalue()


class _ParserPickler(pickle.Pickler):
    """Pickles a built `Lark` whole, which `pickle.load` restores in one pass — not object by
    object as `Lark.load` does. Three things are written by name, not by value: the `re` module
    (the lexers hold it), the LALR actions `Shift` and `Reduce` (singletons the parser compares
    by identity), and compiled regexes (:func:`_pattern_id`)."""

    def persistent_id(self, obj: Any) -> Any:
        if obj is re:
            return ("module", "re")
        if obj is Shift or obj is Reduce:
            return ("action", "Shift" if obj is Shift else "Reduce")
        if isinstance(obj, re.Pattern):
            return _pattern_id(obj)
        return None


class _ParserUnpickler(pickle.Unpickler):
    """Loads what :class:`_ParserPickler` wrote (and plain pickles, such as lark's own format)."""

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0]
        if pid == ("module", "re"):
            return re
        if kind == "action":
            return {"Shift": Shift, "Reduce": Reduce}[pid[1]]
        if kind == "sre":
            return _sre.compile(*pid[1])
        if kind == "re":
            return re.compile(pid[1], pid[2])
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def _pattern_id(pattern: re.Pattern[str]) -> tuple[Any, ...]:
    """A compiled regex, as its source or, better, as the code CPython compiled it to.

    `re.compile` is Python code (a parser and a compiler) ending in a call of `_sre.compile` with
    the code it produced; the contextual lexer's few dozen large alternations take most of a first
    parse that way. The cache holds that call's arguments instead, computed as `re._compiler`
    computes them and kept only if they compile to a pattern equal (same source, flags and code)
    to `pattern`; the cache is keyed by the Python build, whose `_sre` checks the code anyway."""
    try:
        from re import _compiler, _parser  # the steps of re.compile, as CPython runs them

        parsed = _parser.parse(pattern.pattern, pattern.flags)
        code = [int(op) for op in _compiler._code(parsed, pattern.flags)]
        groupindex = dict(parsed.state.groupdict)
        indexgroup: list[str | None] = [None] * parsed.state.groups
        for name, index in groupindex.items():
            indexgroup[index] = name
        flags = pattern.flags | parsed.state.flags
        args = (
            pattern.pattern,
            flags,
            code,
            parsed.state.groups - 1,
            groupindex,
            tuple(indexgroup),
        )
        if _sre.compile(*args) == pattern:
            return ("sre", args)
    except Exception:  # another Python's internals: keep the source, compiled again on load
        pass
    return ("re", pattern.pattern, pattern.flags)


_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a string in "double quotes"',
    "$END": "the end of the spec",
}


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    try:
        pattern = _parser().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    if isinstance(pattern, lark.lexer.PatternStr):
        return f"`{pattern.value}`"
    return name.lower()


def _expected_help(expected: set[str] | frozenset[str]) -> str | None:
    words = sorted({_describe_terminal(name) for name in expected})
    if not words or len(words) > 6:
        return None
    if len(words) == 1:
        return f"expected {words[0]}"
    return "expected " + ", ".join(words[:-1]) + f" or {words[-1]}"


def _end_span(text: str) -> Span:
    lines = text.split("\n")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    return Span.point(len(lines), len(lines[-1]) + 1)


_CLOSERS = {"{": "}", "[": "]", "(": ")"}
_OPENERS = {v: k for k, v in _CLOSERS.items()}
STATEMENT_KEYWORDS = frozenset(
    ("spec", "slate", "input", "objective", "weight", "utility", "diversity", "spacing",
     "semantic_id_penalty", "filter", "cap", "truncate", "outcome", "reward", "policy")
)  # fmt: skip
"""The words that start a DSL statement (grammar/blendspec.lark)."""
_LINE_START = re.compile(r"[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*(=?)")


def _open_delimiters(text: str, end: int) -> list[tuple[str, int]]:
    """The brackets still open at offset `end` (outermost first), as (bracket, offset); strings and
    comments skipped as the lexer skips them."""
    stack: list[tuple[str, int]] = []
    in_string = escaped = in_comment = False
    for offset in range(min(end, len(text))):
        char = text[offset]
        if in_comment:
            in_comment = char != "\n"
        elif in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char in '"\n':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "#":
            in_comment = True
        elif char in _CLOSERS:
            stack.append((char, offset))
        elif char in _OPENERS and stack and stack[-1][0] == _OPENERS[char]:
            stack.pop()
    return stack


def _error_offset(error: lark.exceptions.LarkError, text: str) -> int | None:
    """Where in the text the parser stopped (the end for an unexpected end)."""
    if isinstance(error, lark.exceptions.UnexpectedToken):
        if error.token.type == "$END":
            return len(text)
        return error.token.start_pos
    if isinstance(error, lark.exceptions.UnexpectedCharacters):
        return error.pos_in_stream
    if isinstance(error, lark.exceptions.UnexpectedEOF):
        return len(text)
    return None


def _unclosed(
    error: lark.exceptions.LarkError, text: str, locate: Locator, statements: bool
) -> Diagnostic | None:
    """A missing `}` (or `]`, `)`) reported where it matters: at the bracket left open, when the
    parser met the end of the spec — or, in the DSL, a line that starts a new statement — with a
    bracket still open. The parser itself only notices later, somewhere after it."""
    offset = _error_offset(error, text)
    if offset is None:
        return None
    stack = _open_delimiters(text, offset)
    if not stack:
        return None
    bracket, at = stack[-1]
    opened = _position(text, at)
    what = "spec" if statements else "formula"
    if offset >= len(text) or not text[offset:].strip():
        end = locate(_end_span(text))
        note = f"the {what} ends at line {end.line} with this `{bracket}` still open"
        help = f"close it with `{_CLOSERS[bracket]}`"
    else:
        if not statements:
            return None
        line_start = text.rfind("\n", 0, offset) + 1
        start = _LINE_START.match(text, line_start)
        if (
            start is None
            or start.group(1) not in STATEMENT_KEYWORDS
            or start.start(1) > offset
            or line_start <= at
            or (bracket == "{" and start.group(2) == "=")  # `name = …`: an option of the block
        ):
            return None
        line = text.count("\n", 0, offset) + 1
        note = f"line {line} starts a `{start.group(1)}` statement with this `{bracket}` still open"
        help = f"close it with `{_CLOSERS[bracket]}` before line {line}"
    return Diagnostic("E001", f"unclosed `{bracket}`", locate(opened), help, notes=(note,))


def _syntax_diagnostic(
    error: lark.exceptions.LarkError, text: str, locate: Locator, *, statements: bool = False
) -> Diagnostic:
    """E001 for a Lark error; `statements`: the text is a whole DSL spec, not one formula."""
    unclosed = _unclosed(error, text, locate, statements)
    if unclosed is not None:
        return unclosed
    if isinstance(error, lark.exceptions.UnexpectedToken):
        token = error.token
        if token.type == "$END":
            span = locate(_end_span(text))
            return Diagnostic(
                "E001", "spec ended unexpectedly", span, _expected_help(error.expected)
            )
        width = len(str(token.value)) or 1
        span = locate(Span.point(token.line or 1, token.column or 1, width))
        return Diagnostic(
            "E001", f"unexpected `{token.value}`", span, _expected_help(error.expected)
        )
    if isinstance(error, lark.exceptions.UnexpectedCharacters):
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
        span = locate(Span.point(error.line, error.column))
        if char == '"':
            return Diagnostic(
                "E001", "unterminated string", span, 'close it with `"` on the same line'
            )
        return Diagnostic(
            "E001",
            f"unexpected character {char_name(char)}",
            span,
            _expected_help(error.allowed or set()),
        )
    if isinstance(error, lark.exceptions.UnexpectedEOF):
        return Diagnostic(
            "E001",
            "spec ended unexpectedly",
            locate(_end_span(text)),
            _expected_help(error.expected),
        )
    return Diagnostic("E001", f"cannot parse: {error}", None)


# ---------------------------------------------------------------- locating spans

Locator = Callable[[Span], Span]


def _identity(span: Span) -> Span:
    return span


def _meta_span(node: Tree | Token) -> Span:
    if isinstance(node, Token):
        return Span(node.line or 1, node.column or 1, node.end_line or 1, node.end_column or 1)
    meta = node.meta
    if getattr(meta, "empty", True):
        return Span.point(1, 1)
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _join(first: Span, last: Span) -> Span:
    return Span(first.line, first.column, last.end_line, last.end_column)


# ---------------------------------------------------------------- expressions


def _number(token: Token) -> int | float:
    """A whole number stays an int (counts and windows need one), so the range checks see it as
    written; past Python's 4300-digit limit on int() it is inf, which they report too."""
    text = str(token)
    if _WHOLE.fullmatch(text):
        return int(text) if len(text) <= 4000 else math.inf
    return float(text)


_WHOLE = re.compile(r"[0-9]+")


MAX_FORMULA_DEPTH = 160
"""Path length inside a formula (about two path parts per level); bounds every recursion after."""


class _Builder:
    """Turns a Lark tree into YAML-form data, recording a span for every path it writes."""

    def __init__(self, source: Source, locate: Locator = _identity) -> None:
        self.source = source
        self.locate = locate
        self.spans: SpanMap = {}
        self.errors: list[Diagnostic] = []

    def mark(self, path: PathKey, node: Tree | Token | Span) -> None:
        span = node if isinstance(node, Span) else _meta_span(node)
        self.spans[path] = self.locate(span)

    # expressions ------------------------------------------------------

    def expr(self, node: Tree | Token, path: PathKey) -> dict[str, Any]:
        self.mark(path, node)
        if len(path) > MAX_FORMULA_DEPTH:
            raise SpecError(
                self.source,
                [
                    Diagnostic(
                        "E100",
                        "formula is nested too deeply",
                        self.locate(_meta_span(node)),
                        help="split it into named objectives",
                    )
                ],
            )
        if isinstance(node, Token):  # pragma: no cover - the grammar wraps every atom in a rule
            raise TypeError(f"bare token {node!r}")
        kind = node.data
        if kind == "number":
            # float(text), not float(int(text)): a 400-digit integer is inf, not an OverflowError.
            return {"kind": "const", "value": float(str(node.children[0]))}
        if kind == "ref":
            return {"kind": "ref", "name": str(node.children[0])}
        if kind == "neg":
            operand = self.expr(node.children[0], path + ("operand",))
            if operand["kind"] == "const":
                # A negated literal is a literal: `-2` and `- 2` both mean the number -2.
                return {"kind": "const", "value": -operand["value"]}
            return {"kind": "neg", "operand": operand}
        if kind in ("add", "sub", "mul", "div"):
            op = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[kind]
            left = self.expr(node.children[0], path + ("left",))
            right = self.expr(node.children[1], path + ("right",))
            return {"kind": "binop", "op": op, "left": left, "right": right}
        if kind == "call":
            name, *args = node.children
            self.mark(path + ("fn",), name)
            built = [
                self.expr(arg, path + ("args", i))
                for i, arg in enumerate(a for a in args if a is not None)
            ]
            return {"kind": "call", "fn": str(name), "args": built}
        raise TypeError(f"unexpected expression node {kind}")  # pragma: no cover

    # generic values ---------------------------------------------------

    def value(self, node: Tree | Token, path: PathKey) -> Any:
        """Option values: literals become plain data, anything else stays a formula."""
        if isinstance(node, Tree):
            if node.data == "string":
                self.mark(path, node)
                import json  # a string in a spec is rare: not every parse imports json

                try:
                    return json.loads(str(node.children[0]))
                except json.JSONDecodeError as error:
                    self.errors.append(
                        Diagnostic(
                            "E001", f"bad string: {error.msg}", self.locate(_meta_span(node))
                        )
                    )
                    return str(node.children[0])[1:-1]
            if node.data == "list":
                self.mark(path, node)
                items = [c for c in node.children if c is not None]
                return [self.value(item, path + (i,)) for i, item in enumerate(items)]
            if node.data == "block":
                self.mark(path, node)
                return self.block(node, path)
        built = self.expr(node, path)
        if built["kind"] == "const":
            literal = _literal_number(node)
            return literal if literal is not None else built["value"]
        if built["kind"] == "ref":
            return built["name"]
        return built

    def block(
        self, node: Tree, path: PathKey, into: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = {} if into is None else into
        for option in node.children:
            key_token, value_node = option.children
            key = str(key_token)
            if key in result:
                self.duplicate(path + (key,), key_token, f"`{key}` is set twice")
                continue
            self.mark(path + (key, KEY), key_token)
            result[key] = self.value(value_node, path + (key,))
        return result

    def duplicate(self, path: PathKey, token: Token, message: str) -> None:
        first = self.spans.get(path + (KEY,)) or self.spans.get(path)
        note = (f"first written at line {first.line}",) if first else ()
        self.errors.append(Diagnostic("E103", message, self.locate(_meta_span(token)), notes=note))


def _literal_number(node: Tree | Token) -> int | float | None:
    """`10` stays an int and `-0.5` a float, so counts and windows keep their written type."""
    if isinstance(node, Tree) and node.data == "number":
        return _number(node.children[0])
    if isinstance(node, Tree) and node.data == "neg":
        inner = _literal_number(node.children[0])
        return None if inner is None else -inner
    return None


def parse_expression(text: str) -> dict[str, Any]:
    """Parse one formula (Python API and tests); raises SpecError with a located diagnostic."""
    source = Source("<formula>", text)
    builder = _Builder(source)
    return builder.expr(_parse_tree(source, "expr", _identity), ())


def _keyword_as_name(error: lark.exceptions.UnexpectedInput) -> bool:
    """A keyword where a name is expected *is* a name: `input = sid` inside a block, an input called
    `reward`. LALR state merging can make the lexer prefer the keyword there; re-feed it as NAME."""
    if not isinstance(error, lark.exceptions.UnexpectedToken) or "NAME" not in error.expected:
        return False
    token = error.token
    if token.type == "$END" or not str(token.value).isidentifier():
        return False
    try:
        error.interactive_parser.feed_token(Token.new_borrow_pos("NAME", token.value, token))
    except lark.exceptions.UnexpectedInput:
        return False
    return True


def _parse_tree(source: Source, start: str, locate: Locator) -> Tree:
    try:
        return _parser().parse(source.text, start=start, on_error=_keyword_as_name)
    except lark.exceptions.LarkError as error:
        diagnostic = _syntax_diagnostic(error, source.text, locate, statements=start == "start")
        raise SpecError(source, [diagnostic]) from None


# ---------------------------------------------------------------- the DSL

_SINGLETONS = {
    "spec_stmt": ("name",),
    "slate_stmt": ("slate", "length"),
    "utility_stmt": ("utility",),
    "diversity_stmt": ("diversity",),
    "penalty_stmt": ("semantic_id_penalty",),
    "truncate_stmt": ("rules", "truncate"),
    "policy_stmt": ("policy",),
}

_STATEMENT_WORD = {
    "spec_stmt": "spec",
    "slate_stmt": "slate",
    "utility_stmt": "utility",
    "diversity_stmt": "diversity",
    "penalty_stmt": "semantic_id_penalty",
    "truncate_stmt": "truncate",
    "policy_stmt": "policy",
}


def parse_dsl(source: Source) -> Document:
    tree = _parse_tree(source, "start", _identity)
    builder = _Builder(source)
    data: dict[str, Any] = {}
    for statement in tree.children:
        _dsl_statement(builder, data, statement)
    if builder.errors:
        raise SpecError(source, builder.errors)
    return Document(source, "dsl", data, builder.spans)


def _put(data: dict[str, Any], path: PathKey, value: Any) -> None:
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _exists(data: dict[str, Any], path: PathKey) -> bool:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _keyword_span(statement: Tree, word: str) -> Span:
    start = _meta_span(statement)
    return Span.point(start.line, start.column, len(word))


def _dsl_statement(b: _Builder, data: dict[str, Any], st: Tree) -> None:
    kind = st.data
    children = st.children
    if kind in _SINGLETONS:
        path = _SINGLETONS[kind]
        word = _STATEMENT_WORD[kind]
        if _exists(data, path):
            b.duplicate(
                path,
                Token(
                    "KW",
                    word,
                    line=st.meta.line,
                    column=st.meta.column,
                    end_line=st.meta.line,
                    end_column=st.meta.column + len(word),
                ),
                f"`{word}` is declared twice",
            )
            return
        b.mark(path + (KEY,), _keyword_span(st, word))
        if len(path) > 1 and path[:1] + (KEY,) not in b.spans and path[0] != "rules":
            b.mark(path[:1] + (KEY,), _keyword_span(st, word))
        if kind == "spec_stmt":
            b.mark(path, children[0])
            _put(data, path, str(children[0]))
        elif kind in ("slate_stmt", "truncate_stmt"):
            b.mark(path, children[0])
            _put(data, path, _number(children[0]))
        elif kind == "utility_stmt":
            _put(data, path, b.expr(children[0], path))
        elif kind == "diversity_stmt":
            algorithm, block = children
            b.mark(path, st)
            value: dict[str, Any] = {"algorithm": str(algorithm)}
            b.mark(path + ("algorithm",), algorithm)
            if block is not None:
                b.block(block, path, value)
            _put(data, path, value)
        else:  # penalty_stmt, policy_stmt
            b.mark(path, st)
            _put(data, path, b.block(children[0], path))
        return
    if kind in ("input_stmt", "objective_stmt", "spacing_stmt", "cap_stmt", "reward_stmt"):
        section = {
            "input_stmt": ("inputs",),
            "objective_stmt": ("objectives",),
            "spacing_stmt": ("spacing",),
            "cap_stmt": ("rules", "caps"),
            "reward_stmt": ("rewards",),
        }[kind]
        name_token, body = children
        name = str(name_token)
        path = section + (name,)
        if _exists(data, path):
            b.duplicate(path, name_token, f"`{name}` is declared twice")
            return
        b.mark(path + (KEY,), name_token)
        if kind == "input_stmt":
            b.mark(path, body)
            type_name, size = body.children
            value: Any = str(type_name) if size is None else f"{type_name}[{size}]"
        elif kind in ("objective_stmt", "reward_stmt"):
            value = b.expr(body, path)
        else:
            b.mark(path, st)
            value = b.block(body, path)
        _put(data, path, value)
        return
    if kind == "weight_stmt":
        name_token, default, low, high, block = children
        name = str(name_token)
        path = ("weights", name)
        if _exists(data, path):
            b.duplicate(path, name_token, f"`{name}` is declared twice")
            return
        b.mark(path + (KEY,), name_token)
        b.mark(path, st)
        b.mark(path + ("default",), default)
        b.mark(path + ("bounds",), _join(_meta_span(low), _meta_span(high)))
        b.mark(path + ("bounds", 0), low)
        b.mark(path + ("bounds", 1), high)
        value = {"default": _signed(default), "bounds": [_signed(low), _signed(high)]}
        if block is not None:
            # `default`/`bounds` are already set by the sugar; the block's own check flags repeats.
            b.block(block, path, value)
        _put(data, path, value)
        return
    if kind in ("filter_stmt", "outcome_stmt"):
        path = ("rules", "filters") if kind == "filter_stmt" else ("outcomes",)
        items = data.setdefault(path[0], {}) if kind == "filter_stmt" else data
        existing: list[str] = items.setdefault(path[-1], [])
        if path + (KEY,) not in b.spans:
            b.mark(
                path + (KEY,), _keyword_span(st, "filter" if kind == "filter_stmt" else "outcome")
            )
        for token in children:
            b.mark(path + (len(existing),), token)
            existing.append(str(token))
        return
    raise TypeError(f"unexpected statement {kind}")  # pragma: no cover


def _signed(node: Tree) -> int | float:
    number = _number(node.children[0])
    return -number if node.data == "negative" else number


# ---------------------------------------------------------------- YAML

MAX_YAML_NODES = 100_000
"""Alias expansion is bounded, so a 'billion laughs' spec is an error instead of a hang."""


def parse_yaml(source: Source) -> Document:
    try:
        root = _compose(source)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        span = Span.point(mark.line + 1, mark.column + 1) if mark else None
        problem = (error.problem or "malformed YAML").strip()
        raise SpecError(source, [Diagnostic("E001", f"YAML: {problem}", span)]) from None
    except yaml.reader.ReaderError as error:
        # Not a MarkedYAMLError: it carries an offset into the text instead of a mark.
        char = chr(error.character) if isinstance(error.character, int) else str(error.character)
        raise SpecError(
            source,
            [
                Diagnostic(
                    "E001",
                    f"YAML: control character {char_name(char)} is not allowed in a spec",
                    _position(source.text, error.position),
                    help="remove it; inside a double-quoted string write it as an escape",
                )
            ],
        ) from None
    except yaml.YAMLError as error:
        raise SpecError(source, [Diagnostic("E001", f"YAML: {error}", None)]) from None
    reader = _YamlReader(source)
    if root is None:
        data: Any = {}
    else:
        data = reader.node(root, ())
    if not isinstance(data, dict):
        span = reader.spans.get(())
        reader.errors.append(
            Diagnostic(
                "E100", "a spec must be a mapping of sections (name, slate, inputs, …)", span
            )
        )
    else:
        reader.formulas(data)
    if reader.errors:
        raise SpecError(source, reader.errors)
    return Document(source, "yaml", data, reader.spans)


def _compose(source: Source) -> yaml.Node | None:
    """`yaml.compose`, with the composer's recursion (one Python frame per level) reported as
    E004 where it stopped, should the text scan of `check_nesting` ever under-count."""
    loader = yaml.SafeLoader(source.text)
    try:
        return loader.get_single_node()
    except RecursionError:
        span = Span.point(loader.line + 1, loader.column + 1)
        raise SpecError(source, [_too_deep(span)]) from None
    finally:
        loader.dispose()


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _node_span(node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    return Span(start.line + 1, start.column + 1, end.line + 1, end.column + 1)


class _YamlReader:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.spans: SpanMap = {}
        self.errors: list[Diagnostic] = []
        self.nodes_seen = 0
        self.scalars: dict[PathKey, yaml.ScalarNode] = {}
        self.constructor = yaml.constructor.SafeConstructor()

    def node(self, node: yaml.Node, path: PathKey) -> Any:
        self.nodes_seen += 1
        if self.nodes_seen > MAX_YAML_NODES:
            raise SpecError(
                self.source,
                [
                    Diagnostic(
                        "E100",
                        "spec is too large (aliases expand past 100,000 nodes)",
                        _node_span(node),
                    )
                ],
            )
        if len(path) > 2 * MAX_NESTING:
            # Aliases can stack nodes that are each shallow in the text: `b: [*a]`, `c: [*b]`, …
            raise SpecError(self.source, [_too_deep(_node_span(node))])
        self.spans[path] = _node_span(node)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
            self.errors.append(
                Diagnostic(
                    "E100",
                    f"YAML tag `{node.tag}` is not allowed in a spec",
                    _node_span(node),
                    help="specs are data: only plain YAML scalars, lists and mappings are allowed",
                )
            )
            return None
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.errors.append(
                        Diagnostic(
                            "E100",
                            "YAML merge keys (`<<`) are not supported in specs",
                            _node_span(key_node),
                        )
                    )
                    continue
                key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str | int | float | bool) or key is None:
                    self.errors.append(
                        Diagnostic("E100", "mapping keys must be plain names", _node_span(key_node))
                    )
                    continue
                key_path = path + (key,)
                if key in result:
                    first = self.spans.get(key_path + (KEY,))
                    self.errors.append(
                        Diagnostic(
                            "E103",
                            f"`{key}` appears twice in this mapping",
                            _node_span(key_node),
                            notes=(f"first written at line {first.line}",) if first else (),
                        )
                    )
                    continue
                self.spans[key_path + (KEY,)] = _node_span(key_node)
                result[key] = self.node(value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.node(item, path + (i,)) for i, item in enumerate(node.value)]
        self.scalars[path] = node
        return self.scalar(node)

    def scalar(self, node: yaml.ScalarNode) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except ValueError:
            # int() refuses integers of more than 4300 digits; no range in a spec comes close.
            shown = node.value if len(node.value) <= 20 else node.value[:20] + "…"
            self.errors.append(
                Diagnostic("E100", f"`{shown}` is too large a number", _node_span(node))
            )
            return None
        except yaml.constructor.ConstructorError as error:
            self.errors.append(
                Diagnostic(
                    "E100",
                    f"YAML: {(error.problem or 'value cannot be read').strip()}",
                    _node_span(node),
                    help="specs are data: only plain YAML scalars, lists and mappings are allowed",
                )
            )
            return None

    def formulas(self, data: dict[str, Any]) -> None:
        for pattern in FORMULA_PATHS:
            for path in _expand(data, pattern):
                container = data
                for key in path[:-1]:
                    container = container[key]
                value = container[path[-1]]
                if isinstance(value, bool):
                    continue
                if isinstance(value, int | float):
                    container[path[-1]] = {"kind": "const", "value": _as_float(value)}
                elif isinstance(value, str):
                    container[path[-1]] = self.formula(value, path)

    def formula(self, text: str, path: PathKey) -> Any:
        node = self.scalars[path]
        locate = _scalar_locator(node)
        try:
            tree = _parser().parse(text, start="expr", on_error=_keyword_as_name)
        except lark.exceptions.LarkError as error:
            self.errors.append(_syntax_diagnostic(error, text, locate))
            return text
        builder = _Builder(self.source, locate)
        built = builder.expr(tree, path)
        self.spans.update(builder.spans)
        return built


def _as_float(value: int | float) -> float:
    """An integer past float range is inf, which the model reports, not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _expand(data: dict[str, Any], pattern: PathKey) -> list[PathKey]:
    paths: list[PathKey] = [()]
    for part in pattern:
        next_paths: list[PathKey] = []
        for path in paths:
            node: Any = data
            for key in path:
                node = node[key]
            if not isinstance(node, dict):
                continue
            if part == "*":
                next_paths.extend(path + (key,) for key in node)
            elif part in node:
                next_paths.append(path + (part,))
        paths = next_paths
    return paths


def _scalar_locator(node: yaml.ScalarNode) -> Locator:
    """Map a position inside a formula string to the YAML file, exactly for one-line scalars."""
    start = node.start_mark
    one_line = node.start_mark.line == node.end_mark.line and node.style in (None, "'", '"')
    base_column = start.column + 1 + (1 if node.style in ("'", '"') else 0)
    whole = _node_span(node)

    def locate(span: Span) -> Span:
        if not one_line or span.line != 1 or span.end_line != 1:
            return whole
        return Span(
            start.line + 1,
            base_column + span.column - 1,
            start.line + 1,
            base_column + span.end_column - 1,
        )

    return locate
