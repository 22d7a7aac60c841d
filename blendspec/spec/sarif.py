"""Diagnostics as a SARIF 2.1.0 log (`blend validate --format sarif`), for code-scanning tools
(GitHub code scanning, GitLab, IDE viewers) that read one file for a whole run.

Each code is a rule, described by the first paragraph of its section in docs/errors.md, read
from the page itself as `spec/reference.py` reads docs/language.md: the wheel ships it in the
package ``blendspec.docs``, and a bare checkout reads docs/ directly.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

from blendspec.spec.diagnostics import CODES, Diagnostic, Source, sort_key

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
DOCS_URI = "docs/errors.md"

DOC_FILE = "errors.md"
_SECTION = re.compile(r"^## ([EW][0-9]{3}) — .*$", re.MULTILINE)


def doc_text() -> str:
    """docs/errors.md: the wheel's copy (package ``blendspec.docs``) or the checkout's."""
    try:
        return importlib.resources.files("blendspec.docs").joinpath(DOC_FILE).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parents[2] / "docs" / DOC_FILE).read_text("utf-8")


@functools.cache
def explanations() -> dict[str, str]:
    """Each code's description: the first paragraph of its section of docs/errors.md, on one
    line (the code's title where the page cannot be read)."""
    try:
        text = doc_text()
    except OSError:
        text = ""
    found = {}
    matches = list(_SECTION.finditer(text))
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        body = text[match.end() : following.start() if following else len(text)]
        found[match.group(1)] = " ".join(body.strip().split("\n\n")[0].split())
    return {
        code: found.get(code) or f"{title[0].upper()}{title[1:]}." for code, title in CODES.items()
    }


def _rule_name(code: str) -> str:
    """A rule's identifier-like name: its title in kebab case (`unknown-name`)."""
    return "-".join(CODES[code].replace("/", " ").split())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("blendspec")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "0+unknown"


def _rule(code: str) -> dict[str, Any]:
    level = "error" if code.startswith("E") else "warning"
    return {
        "id": code,
        "name": _rule_name(code),
        "shortDescription": {"text": CODES[code]},
        "fullDescription": {"text": explanations()[code]},
        "help": {
            "text": explanations()[code],
            "markdown": f"**{code}: {CODES[code]}**\n\n"
            f"{explanations()[code]}\n\nSee `{DOCS_URI}` in blendspec's documentation.",
        },
        "defaultConfiguration": {"level": level},
    }


def _uri(name: str) -> str:
    """A file as a URI: `file:///…` for an absolute path, else a relative reference (forward
    slashes, anything else percent-encoded)."""
    path = PurePath(name)
    if path.is_absolute():
        return Path(name).as_uri()
    return quote(path.as_posix(), safe="/")


def _result(source: Source, diagnostic: Diagnostic, index: dict[str, int]) -> dict[str, Any]:
    text = diagnostic.message
    for note in diagnostic.notes:
        text += f"\nnote: {note}"
    if diagnostic.help:
        text += f"\nhelp: {diagnostic.help}"
    location: dict[str, Any] = {"artifactLocation": {"uri": _uri(source.name)}}
    span = diagnostic.span
    if span is not None:
        location["region"] = {
            "startLine": span.line,
            "startColumn": span.column,
            "endLine": span.end_line,
            "endColumn": span.end_column,
        }
    return {
        "ruleId": diagnostic.code,
        "ruleIndex": index[diagnostic.code],
        "level": "error" if diagnostic.is_error else "warning",
        "message": {"text": text},
        "locations": [{"physicalLocation": location}],
    }


def sarif_log(files: Sequence[tuple[Source, Sequence[Diagnostic]]]) -> dict[str, Any]:
    """One run of `blend validate` over `files` (each source with what was found in it)."""
    codes = sorted(CODES)
    index = {code: i for i, code in enumerate(codes)}
    results = [
        _result(source, diagnostic, index)
        for source, diagnostics in files
        for diagnostic in sorted(diagnostics, key=sort_key)
    ]
    driver = {
        "name": "blendspec",
        "fullName": "blendspec (blend validate)",
        "version": _version(),
        "informationUri": "https://pypi.org/project/blendspec/",
        "rules": [_rule(code) for code in codes],
    }
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {"tool": {"driver": driver}, "columnKind": "unicodeCodePoints", "results": results}
        ],
    }
