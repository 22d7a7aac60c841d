"""Diagnostics as a SARIF 2.1.0 log (`blend validate --format sarif`), for code-scanning tools
(GitHub code scanning, GitLab, IDE viewers) that read one file for a whole run.

Each code is a rule, described by the first paragraph of its section in docs/errors.md
(:data:`EXPLANATIONS` holds them, since an installed blendspec has no docs folder;
tests/test_validate_formats.py checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

from blendspec.spec.diagnostics import CODES, Diagnostic, Source, sort_key

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
DOCS_URI = "docs/errors.md"

EXPLANATIONS: dict[str, str] = {
    "E001": (
        "The spec does not parse. Parse errors stop at the first one; the help line lists "
        "what was expected when that is a short list."
    ),
    "E002": "The file cannot be read, or is not UTF-8 text.",
    "E003": "The file name does not say which syntax it is in.",
    "E004": (
        "Lists, blocks or YAML mappings nested more than 64 levels deep. Checked on the text "
        "before parsing, so that no stage can run out of stack; real specs nest three or four "
        "levels."
    ),
    "E100": (
        "A value is out of range or of the wrong type; also YAML tags, merge keys and "
        "over-deep formulas."
    ),
    "E101": "A required field is missing.",
    "E102": "A field the section does not have; usually a typo.",
    "E103": "A name is declared twice, or in two of inputs / objectives / weights.",
    "E104": "An input type that does not exist, or a size that is missing or not a whole number.",
    "E200": "A reference to a name that is not declared.",
    "E201": (
        "A name of the wrong kind: cosine over a score, prefix over an embedding, spacing on "
        "a category…"
    ),
    "E202": (
        "A formula that is not of the required shape: a product of two signals, a utility "
        "term that is not weight × objective, a similarity term that is not constant × "
        "signal."
    ),
    "E203": (
        "An unknown transform, the wrong number of arguments, or parameters that break "
        "monotonicity."
    ),
    "E300": "A weight's default lies outside its bounds.",
    "E301": "Bounds with lo > hi.",
    "E302": "Bounds that let a weight take the wrong sign.",
    "E303": "A policy grid value outside the weight's bounds.",
    "E304": "A policy but no reward to learn from.",
    "E305": "A policy weight without a policy, or a policy that sets no weight.",
    "E306": (
        "Sizes that do not fit together: `min_prefix` longer than the semantic ID, `truncate` "
        "below the slate length."
    ),
    "E307": (
        "A file the spec names (the policy) does not exist, relative to the spec, or cannot "
        "be opened: a symlink loop, a folder, a name with a NUL byte or longer than the file "
        "system allows (the message says which)."
    ),
    "E308": "Several rewards and the policy does not say which one it learns.",
    "W001": "An input declared but used nowhere (a dump must still provide it).",
    "W002": "A look-back window longer than the slate can reach: it never binds.",
    "W003": "An objective not in the utility, or a weight the utility does not use.",
    "W004": (
        "A Unicode bidi control (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C) in a "
        "comment or string: it can make a line display differently from what it means "
        '("Trojan Source", CVE-2021-42574). Diagnostics show such characters as `�`.'
    ),
    "W005": (
        "An ignore comment that names a code it cannot silence: an error's (errors cannot be "
        "ignored) or one blendspec does not know."
    ),
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
        "fullDescription": {"text": EXPLANATIONS[code]},
        "help": {
            "text": EXPLANATIONS[code],
            "markdown": f"**{code}: {CODES[code]}**\n\n"
            f"{EXPLANATIONS[code]}\n\nSee `{DOCS_URI}` in blendspec's documentation.",
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
