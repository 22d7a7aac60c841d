"""Comments survive `blend fmt` and conversion between syntaxes: nothing a user wrote is lost.

A comment on its own line belongs to the next key or statement; a comment after code belongs to the
first key or statement on its line. The emitters print each comment beside the same spec path,
whichever syntax they write, and anything they could not place goes at the end of the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from blendspec.spec.diagnostics import CODES, Diagnostic, Severity, Span, did_you_mean
from blendspec.spec.syntax import KEY, Document, PathKey


@dataclass(frozen=True)
class Comment:
    line: int
    column: int
    text: str  # without the leading `#` and surrounding space


def scan_comments(text: str, syntax: str) -> list[Comment]:
    """`#` comments outside quoted strings (YAML also needs whitespace before the `#`)."""
    found: list[Comment] = []
    quotes = ('"', "'") if syntax == "yaml" else ('"',)
    for number, line in enumerate(text.splitlines(), start=1):
        quote: str | None = None
        escaped = False
        for column, char in enumerate(line):
            if quote is not None:
                if escaped:
                    escaped = False
                elif char == "\\" and quote == '"':
                    escaped = True
                elif char == quote:
                    quote = None
            elif char in quotes and (
                syntax != "yaml" or column == 0 or not line[column - 1].isalnum()
            ):
                quote = char
            elif char == "#" and (syntax != "yaml" or column == 0 or line[column - 1] in " \t"):
                found.append(Comment(number, column + 1, line[column + 1 :].strip()))
                break
    return found


@dataclass
class CommentBook:
    """Comments keyed by spec path, handed out as the emitter writes each path's line."""

    leading: dict[PathKey, list[str]] = field(default_factory=dict)
    trailing: dict[PathKey, list[str]] = field(default_factory=dict)
    end: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, document: Document | None) -> CommentBook:
        book = cls()
        if document is None:
            return book
        comments = scan_comments(document.source.text, document.syntax)
        if not comments:
            return book
        anchors = sorted(
            (span.line, span.column, path[:-1])
            for path, span in document.spans.items()
            if path and path[-1] == KEY
        )
        anchors += sorted(
            (span.line, span.column, path)
            for path, span in document.spans.items()
            if document.syntax == "dsl"
            and len(path) >= 2
            and isinstance(path[-1], int)
            and path[:-1] in (("rules", "filters"), ("outcomes",))
        )
        anchors.sort()
        for comment in comments:
            same_line = [a for a in anchors if a[0] == comment.line and a[1] < comment.column]
            if same_line:
                book.trailing.setdefault(same_line[0][2], []).append(comment.text)
                continue
            following = [a for a in anchors if a[0] > comment.line]
            if following:
                book.leading.setdefault(following[0][2], []).append(comment.text)
            else:
                book.end.append(comment.text)
        return book

    def line(
        self, text: str, path: PathKey, *, indent: str = "", collapsed: bool = False
    ) -> list[str]:
        """`text` for `path`, preceded by its comments; `collapsed` also takes its descendants'."""

        def owned(candidate: PathKey) -> bool:
            if candidate == path[: len(candidate)]:
                return True
            return collapsed and candidate[: len(path)] == path

        lines: list[str] = []
        for key in sorted((k for k in self.leading if owned(k)), key=len):
            lines += [f"{indent}# {c}".rstrip() for c in self.leading.pop(key)]
        tail: list[str] = []
        for key in [k for k in self.trailing if owned(k)]:
            tail += self.trailing.pop(key)
        lines.append(f"{text}  # {' · '.join(tail)}" if tail else text)
        return lines

    def finish(self) -> list[str]:
        """Whatever no emitted line claimed, so that no comment is ever dropped."""
        rest = [c for key in list(self.leading) for c in self.leading.pop(key)]
        rest += [c for key in list(self.trailing) for c in self.trailing.pop(key)]
        rest += self.end
        self.end = []
        return [f"# {c}".rstrip() for c in rest]


# ---------------------------------------------------------------- inline ignores

_IGNORE = re.compile(r"\bblend:[ \t]*ignore\b(?:\[([^\]]*)\])?")
_CODE_TOKEN = re.compile(r"[^\s,]+")

Ignores = dict[int, frozenset[str] | None]
"""Line → the warning codes ignored on it (None: every warning on the line)."""


def ignore_directives(text: str, syntax: str) -> tuple[Ignores, list[Diagnostic]]:
    """The `# blend: ignore[W001, W003]` comments of a spec, and a W005 for each code in them
    that cannot work: one blendspec does not know, or an error's (errors cannot be ignored: an
    ignored error would still stop `blend run`). A bare `# blend: ignore` ignores every warning
    on its line. Like ruff's `# noqa`, a comment applies to diagnostics that point at its line."""
    ignores: Ignores = {}
    problems: list[Diagnostic] = []
    lines = text.splitlines()
    for comment in scan_comments(text, syntax):
        line = lines[comment.line - 1]
        start = comment.column  # just after the `#`
        match = _IGNORE.search(line, start)
        if match is None:
            continue
        if match.group(1) is None:
            ignores[comment.line] = None
            continue
        codes: set[str] = set()
        for token in _CODE_TOKEN.finditer(match.group(1)):
            code = token.group()
            span = Span.point(comment.line, match.start(1) + token.start() + 1, len(code))
            if code not in CODES:
                problems.append(
                    _ineffective(
                        span,
                        f"unknown code `{code}` in an ignore comment",
                        did_you_mean(code, CODES) or "the codes are listed in docs/errors.md",
                    )
                )
            elif code.startswith("E"):
                problems.append(
                    _ineffective(
                        span,
                        f"`{code}` is an error, and errors cannot be ignored",
                        "only warnings (W001, W002, …) can be ignored; an error must be fixed",
                    )
                )
            else:
                codes.add(code)
        previous = ignores.get(comment.line, frozenset())
        if previous is not None:
            ignores[comment.line] = previous | codes
    return ignores, problems


def _ineffective(span: Span, message: str, help: str) -> Diagnostic:
    return Diagnostic("W005", message, span, help, Severity.WARNING)


def is_ignored(diagnostic: Diagnostic, ignores: Ignores) -> bool:
    """Whether an ignore comment on the line a warning points at names its code."""
    span = diagnostic.span
    if diagnostic.is_error or span is None or span.line not in ignores:
        return False
    codes = ignores[span.line]
    return codes is None or diagnostic.code in codes


def apply_ignores(document: Document, diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    """`diagnostics` less the warnings the spec's ignore comments silence, plus W005 for each
    ignore comment's code that cannot work."""
    text = document.source.text
    if "blend:" not in text:  # the common case: no directive, no scan
        return list(diagnostics)
    ignores, problems = ignore_directives(text, document.syntax)
    return [d for d in [*diagnostics, *problems] if not is_ignored(d, ignores)]
