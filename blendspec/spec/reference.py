"""The language reference's sentences, read from docs/language.md itself, for editors.

`blend schema` puts them in the JSON Schema as property descriptions (what a YAML language server
shows on hover) and `blend lsp` shows them on hover in `.blend` and YAML specs. Both read the
same text the user reads in the docs, so the three never drift apart: the page ships inside the
wheel as ``blendspec/docs/language.md`` (pyproject.toml maps the package ``blendspec.docs`` onto
the checkout's docs/ folder and ships that one page), and a bare checkout reads docs/ directly.

What is read: each ``### `word` — title`` section (its title and first paragraph of prose), and
every table in it whose first column names things in backticks (``| `sign` | … | meaning |``).
A table whose second column is headed ``algorithms`` scopes each row to the diversifiers it
lists (``all``, ``all but `none```, or a list), so `theta` can mean one thing for SSD and
another for MMR. Nothing here is written by hand twice: tests/test_schema.py fails if a
property of the schema finds no sentence.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DOC_FILE = "language.md"

SECTION_OF: dict[str, str] = {
    "name": "spec",
    "slate": "slate",
    "inputs": "input",
    "objectives": "objective",
    "weights": "weight",
    "utility": "utility",
    "diversity": "diversity",
    "spacing": "spacing",
    "semantic_id_penalty": "semantic_id_penalty",
    "rules": "filter",
    "outcomes": "outcome",
    "rewards": "reward",
    "policy": "policy",
}
"""A top-level key of the YAML form -> the word its section of the language reference is headed
with (the DSL keyword; the rules share one section headed `filter`, `cap`, `truncate`)."""


@dataclass(frozen=True)
class Row:
    """One table row: the names it documents, its cells, and the algorithms it applies to."""

    names: tuple[str, ...]
    cells: dict[str, str]
    meaning: str
    scope: frozenset[str] | None = None  # None: every algorithm

    def applies_to(self, variant: str | None) -> bool:
        return self.scope is None or variant is None or variant in self.scope


@dataclass
class Section:
    words: tuple[str, ...]
    title: str
    paragraph: str = ""
    rows: list[Row] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The title as a sentence, then the section's first paragraph."""
        title = self.title
        if re.match(r"[a-z]{2}", title):  # a phrase, not a formula such as `u = Σ w · f + c`
            title = title[:1].upper() + title[1:]
        return f"{title}." + (f" {self.paragraph}" if self.paragraph else "")


def doc_text() -> str:
    """docs/language.md: the wheel's copy (package ``blendspec.docs``) or the checkout's."""
    try:
        return importlib.resources.files("blendspec.docs").joinpath(DOC_FILE).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parents[2] / "docs" / DOC_FILE).read_text("utf-8")


_HEADING = re.compile(r"^###\s+(.*)$")
_TICKED = re.compile(r"`([^`]+)`")
_NAME_IN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)")


@functools.cache
def sections() -> dict[str, Section]:
    """Every `###` section of the reference, by each word its heading names in backticks."""
    return parse(doc_text())


def parse(text: str) -> dict[str, Section]:
    found: dict[str, Section] = {}
    current: Section | None = None
    header: list[str] | None = None
    in_code = False
    paragraph: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = _HEADING.match(line)
        if heading is not None or line.startswith("## "):
            current = _section(heading.group(1)) if heading else None
            for word in current.words if current else ():
                found.setdefault(word, current)
            header = None
            paragraph = []
            continue
        if current is None:
            continue
        if line.startswith("|"):
            cells = _cells(line)
            if header is None:
                header = cells
            elif not all(set(c) <= set("-: ") for c in cells):
                row = _row(header, cells)
                if row is not None:
                    current.rows.append(row)
            continue
        header = None
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            if not current.paragraph:
                current.paragraph = _plain(" ".join(paragraph))
            paragraph = []
    return found


def _section(heading: str) -> Section:
    words = tuple(_TICKED.findall(heading))
    # `### `weight` — named, bounded utility weights`, or `### Rules: `filter`, `cap`, …`
    title = heading.split(" — ", 1)[1] if " — " in heading else heading.split(":", 1)[0]
    return Section(words, title.strip())


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table line; a `|` inside backticks or escaped (`\\|`) does not
    split."""
    cells: list[str] = []
    cell: list[str] = []
    ticked = False
    text = line.strip().removeprefix("|").removesuffix("|")
    for index, char in enumerate(text):
        if char == "`":
            ticked = not ticked
        if char == "\\" and text[index + 1 : index + 2] == "|":
            continue
        if char == "|" and not ticked and text[index - 1 : index] != "\\":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(char)
    cells.append("".join(cell).strip())
    return cells


def _row(header: list[str], cells: list[str]) -> Row | None:
    names = tuple(
        match.group(1) for tick in _TICKED.findall(cells[0]) if (match := _NAME_IN.match(tick))
    )
    if not names:
        return None
    scope: frozenset[str] | None = None
    if len(header) > 2 and header[1].strip().lower() == "algorithms":
        scope = _scope(cells[1])
    named = {h.strip().lower(): _plain(c) for h, c in zip(header, cells, strict=False)}
    return Row(names, named, _plain(cells[-1]), scope)


def _scope(cell: str) -> frozenset[str] | None:
    listed = frozenset(_TICKED.findall(cell))
    if cell.strip().startswith("all but"):
        from blendspec.diversity import DIVERSIFIERS

        return frozenset(DIVERSIFIERS) - listed
    if cell.strip() == "all":
        return None
    return listed


def _plain(text: str) -> str:
    """Markdown links as their text; everything else (backticks included) as written."""
    return re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text).strip()


# ---------------------------------------------------------------- look-ups


def section(key: str) -> Section | None:
    """The section documenting a top-level YAML key (`weights`) or a DSL keyword (`weight`)."""
    return sections().get(SECTION_OF.get(key, key))


def row(key: str, name: str, variant: str | None = None) -> Row | None:
    """The row documenting `name` in the section of `key`, for that algorithm if scoped."""
    found = section(key)
    if found is None:
        return None
    for candidate in found.rows:
        if name in candidate.names and candidate.applies_to(variant):
            return candidate
    return None


def describe(path: Sequence[str | int], variant: str | None = None) -> str | None:
    """The sentence for a place in the YAML form: `path` is its keys with `*` for declared names
    (``("weights", "*", "sign")``) and `variant` the diversifier or exploration kind it lies in.
    A section or a declared name gets its section's text; a field gets its table row."""
    if not path:
        return None
    key = str(path[0])
    fields = [str(p) for p in path[1:] if p != "*" and not isinstance(p, int)]
    if key == "slate" or not fields:
        found = section(key)
        return found.text if found else None
    for name in reversed(fields):  # `rules.caps.*.max`: `max`, else `caps`
        found_row = row(key, name, variant)
        if found_row is not None:
            return found_row.meaning
    return None


def function_doc(name: str) -> str | None:
    """A transform (`log1p`) or similarity signal (`cosine`): its row in the reference."""
    found = row("objectives", name) or row("diversity", name)
    return found.meaning if found else None


def input_type_doc(kind: str) -> str | None:
    found = row("inputs", kind)
    return found.meaning if found else None


def algorithm_doc(name: str) -> str | None:
    """The diversifier's parameters with their defaults, as the reference's table lists them."""
    found = row("diversity", name)
    return found.cells.get("parameters (default)") if found else None
