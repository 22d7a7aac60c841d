"""Structured diagnostics, kept apart from their rendering (the sqlglot habit).

Every user-facing problem is a `Diagnostic` with a stable code, a message, an optional source span
and an optional help line. Front ends and passes only *produce* diagnostics; `render_text` and
`render_json` decide how they look, so the CLI, the tests' golden files and editors all see the same
data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Source:
    """A spec's text and the name it is shown under, so spans can be turned into lines and carets."""

    name: str
    text: str

    @classmethod
    def read(cls, path: Path) -> Source:
        return cls(name=str(path), text=path.read_text(encoding="utf-8"))

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 1 <= number <= len(lines) else ""


@dataclass(frozen=True, order=True)
class Span:
    """A 1-based line/column range in one source; `end_*` is exclusive on the end line."""

    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def point(cls, line: int, column: int, width: int = 1) -> Span:
        return cls(line, column, line, column + max(width, 1))


# Stable codes. A code never changes meaning once published; docs/errors.md documents each one.
CODES: dict[str, str] = {
    "E001": "syntax error",
    "E002": "unreadable spec file",
    "E003": "unknown file type",
    "E004": "nested too deeply",
    "E100": "invalid value",
    "E101": "missing field",
    "E102": "unknown field",
    "E103": "duplicate name",
    "E104": "invalid type declaration",
    "E200": "unknown name",
    "E201": "wrong kind of input",
    "E202": "not a weighted sum",
    "E203": "bad transform call",
    "E300": "default outside bounds",
    "E301": "empty or inverted bounds",
    "E302": "sign violation",
    "E303": "policy grid outside weight bounds",
    "E304": "policy without reward",
    "E305": "policy without weights",
    "E306": "dimension mismatch",
    "E307": "referenced file does not exist",
    "E308": "ambiguous reward",
    "W001": "unused input",
    "W002": "window can never matter",
    "W003": "unused objective or weight",
    "W004": "bidirectional control character",
    "W005": "ineffective ignore comment",
}

MAX_REPORTED = 20


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    help: str | None = None
    severity: Severity = Severity.ERROR
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unregistered diagnostic code {self.code}")

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


class SpecError(Exception):
    """Raised when a spec cannot be turned into a model; carries every diagnostic found so far."""

    def __init__(self, source: Source, diagnostics: Sequence[Diagnostic]) -> None:
        self.source = source
        self.diagnostics = tuple(diagnostics)
        super().__init__(render_text(source, self.diagnostics, color=False))


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The help line for a misspelt name, when one known name is close enough to be the intent."""
    import difflib  # only on an error: not every `blend validate` pays for it

    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def sort_key(diagnostic: Diagnostic) -> tuple[int, int, int, str]:
    if diagnostic.span is None:
        return (1, 0, 0, diagnostic.code)
    return (0, diagnostic.span.line, diagnostic.span.column, diagnostic.code)


def render_one(source: Source, diagnostic: Diagnostic, *, color: bool = False) -> str:
    """rustc/Elm style: header, `--> file:line:col`, the source line with carets, then help."""

    def paint(text: str, style: str) -> str:
        return f"[{style}]{text}[/{style}]" if color else text

    level_style = "bold red" if diagnostic.is_error else "bold yellow"
    header = paint(f"{diagnostic.severity}[{diagnostic.code}]", level_style)
    lines = [f"{header}: {_escape(_visible(diagnostic.message), color)}"]
    span = diagnostic.span
    if span is None:
        lines.append(f"  --> {_escape(source.name, color)}")
    else:
        lines.append(f"  --> {_escape(source.name, color)}:{span.line}:{span.column}")
        text = _visible(source.line(span.line))
        gutter = " " * len(str(span.line))
        end = span.end_column if span.end_line == span.line else len(text) + 1
        width = max(1, min(end, len(text) + 1) - span.column)
        lines.append(f"{gutter} |")
        lines.append(f"{span.line} | {_escape(text, color)}")
        caret = " " * (span.column - 1) + "^" * width
        lines.append(f"{gutter} | {paint(caret, level_style)}")
    for note in diagnostic.notes:
        lines.append(f"  = note: {_escape(_visible(note), color)}")
    if diagnostic.help:
        lines.append(f"  = help: {_escape(_visible(diagnostic.help), color)}")
    return "\n".join(lines)


def render_text(source: Source, diagnostics: Sequence[Diagnostic], *, color: bool = False) -> str:
    """All diagnostics of one source, capped at MAX_REPORTED with an "… and N more" line."""
    ordered = sorted(diagnostics, key=sort_key)
    shown = ordered[:MAX_REPORTED]
    blocks = [render_one(source, d, color=color) for d in shown]
    if len(ordered) > len(shown):
        blocks.append(f"… and {len(ordered) - len(shown)} more")
    return "\n\n".join(blocks)


def to_json(source: Source, diagnostic: Diagnostic) -> dict[str, object]:
    span = diagnostic.span
    return {
        "code": diagnostic.code,
        "severity": str(diagnostic.severity),
        "message": diagnostic.message,
        "file": source.name,
        "line": span.line if span else None,
        "column": span.column if span else None,
        "end_line": span.end_line if span else None,
        "end_column": span.end_column if span else None,
        "help": diagnostic.help,
        "notes": list(diagnostic.notes),
    }


def render_github(source: Source, diagnostics: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands, one line each (as `ruff check --output-format github`
    writes them): the runner turns them into annotations on the pull request's diff.

    ``::error file=F,line=L,col=C,endLine=L2,endColumn=C2,title=E200::message``, columns 1-based
    and the end exclusive, as in the other formats; help and notes follow the message on lines
    of their own. Empty when there is nothing to say."""
    lines = []
    for diagnostic in sorted(diagnostics, key=sort_key):
        properties = [("file", source.name)]
        span = diagnostic.span
        if span is not None:
            properties += [
                ("line", str(span.line)),
                ("col", str(span.column)),
                ("endLine", str(span.end_line)),
                ("endColumn", str(span.end_column)),
            ]
        properties.append(("title", diagnostic.code))
        message = "\n".join(
            [
                diagnostic.message,
                *(f"note: {note}" for note in diagnostic.notes),
                *([f"help: {diagnostic.help}"] if diagnostic.help else []),
            ]
        )
        head = ",".join(f"{key}={_github_property(value)}" for key, value in properties)
        lines.append(f"::{diagnostic.severity} {head}::{_github_data(message)}")
    return "".join(line + "\n" for line in lines)


def _github_data(text: str) -> str:
    """A workflow command's message: `%`, CR and LF escaped, as the runner unescapes them."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_property(text: str) -> str:
    """A workflow command's property value: also `:` and `,`, which would end it."""
    return _github_data(text).replace(":", "%3A").replace(",", "%2C")


def render_json(source: Source, diagnostics: Sequence[Diagnostic]) -> str:
    import json

    return json.dumps([to_json(source, d) for d in sorted(diagnostics, key=sort_key)], indent=2)


_BIDI = dict.fromkeys(
    map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\ufeff"),
    "\ufffd",
)


def _visible(line: str) -> str:
    """Text with bidi controls (and stray BOMs) shown as U+FFFD: printed raw they would reorder
    the very line a diagnostic shows (or a name quoted in its message). One character for one
    keeps the caret aligned."""
    return line.translate(_BIDI)


def _escape(text: str, color: bool) -> str:
    """Rich markup would eat `[...]` in user text; escape it only when markup is in play."""
    if not color:
        return text
    from rich.markup import escape

    return escape(text)
