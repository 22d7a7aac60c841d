"""What the language server knows about one spec text: diagnostics, declarations, and the
answers to hover, definition, references, completion, symbols and formatting.

Everything is computed by the spec layer `blend validate` and `blend fmt` use: the diagnostics
are :func:`blendspec.spec.loader.load_source`'s (the same codes, messages and spans), the
places in the text are the front ends' span map (`Document.spans`, one entry per data path,
in either syntax), the field types come from the JSON Schema (`blendspec.spec.schema`) and the
sentences from docs/language.md (`blendspec.spec.reference`). Positions here are 1-based lines
and code-point columns, as in `Span`; the server converts them to the protocol's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blendspec.spec import reference
from blendspec.spec.diagnostics import Diagnostic, Source, Span, SpecError
from blendspec.spec.syntax import KEY, Document, PathKey, Syntax, parse_document, value_at

DECLARING = {"inputs": "name", "objectives": "name", "weights": "name", "rewards": "reward"}
"""Sections that declare names, and the namespace each declares into. Inputs, objectives and
weights share one namespace (formulas name them bare); outcomes and rewards have their own."""

NAMED: tuple[PathKey, ...] = (
    ("inputs",),
    ("objectives",),
    ("weights",),
    ("spacing",),
    ("rewards",),
    ("rules", "caps"),
)
"""Mappings whose keys are names the user chose (the schema's `*`)."""

FORMULAS: tuple[PathKey, ...] = (("utility",), ("diversity", "similarity"))
"""Formula roots besides `objectives.*` and `rewards.*`."""

SECTION_KEYWORDS = {
    "spec": "name",
    "slate": "slate",
    "input": "inputs",
    "objective": "objectives",
    "weight": "weights",
    "utility": "utility",
    "diversity": "diversity",
    "spacing": "spacing",
    "semantic_id_penalty": "semantic_id_penalty",
    "filter": "rules",
    "cap": "rules",
    "truncate": "rules",
    "outcome": "outcomes",
    "reward": "rewards",
    "policy": "policy",
}
"""Each DSL statement keyword and the YAML section it writes."""


@dataclass(frozen=True)
class Declaration:
    """A declared name: an input, objective, weight, outcome or reward."""

    name: str
    namespace: str  # "name", "outcome" or "reward"
    section: str  # "inputs", "objectives", "weights", "outcomes", "rewards"
    span: Span  # of the name where it is declared
    detail: str  # the input type, the formula, the weight's default and bounds


@dataclass
class Analysis:
    text: str
    syntax: Syntax
    name: str
    path: Path | None
    diagnostics: tuple[Diagnostic, ...] = ()
    document: Document | None = None
    declarations: dict[tuple[str, str], Declaration] = field(default_factory=dict)
    bom: bool = False

    @property
    def is_spec(self) -> bool:
        """A YAML file is taken for a spec once it has a spec section (an editor's YAML
        association may be broad); a DSL file always is."""
        if self.syntax == "dsl":
            return True
        if self.document is not None:
            return bool(set(self.document.data) & set(reference.SECTION_OF))
        # It does not parse: a spec mid-edit if a line starts with a spec section's key.
        sections = "|".join(reference.SECTION_OF)
        return re.search(rf"^({sections})[ \t]*:", self.text, re.MULTILINE) is not None


def analyse(text: str, syntax: Syntax, path: Path | None = None, name: str = "<spec>") -> Analysis:
    """Diagnostics exactly as `blend validate` reports them, and the parsed document if the
    text parses (for navigation even when the spec has semantic errors)."""
    from blendspec.spec.loader import load_source

    # The spec layer drops a byte-order mark before it counts columns: so does the analysis
    # (the server shifts line 1 by one character when the editor's text keeps it).
    bom = text.startswith("\ufeff")
    text = text[1:] if bom else text
    result = Analysis(text, syntax, name, path, bom=bom)
    source = Source(str(path) if path else name, text)
    base_dir = path.parent if path is not None else None
    try:
        loaded = load_source(source, syntax, base_dir=base_dir, path=path)
    except SpecError as error:
        result.diagnostics = error.diagnostics
        try:  # the spec has errors: parse again for navigation, if it parses at all
            result.document = parse_document(source, syntax)
        except SpecError:
            return result
    else:
        result.diagnostics = loaded.warnings
        result.document = loaded.document
    result.declarations = declarations(result.document)
    return result


def format_text(text: str, syntax: Syntax, name: str = "<spec>") -> str | None:
    """What `blend fmt` writes for this text (the same function: `emit.format_document`), or
    None when it does not parse. Any spec that parses is formatted, valid or not: unknown names
    and values out of range are validate's to report, and formatting never changes what a spec
    says."""
    from blendspec.spec.emit import format_document

    try:
        document = parse_document(Source(name, text), syntax)
    except SpecError:
        return None
    return format_document(document)


# ---------------------------------------------------------------- declarations


def declarations(document: Document) -> dict[tuple[str, str], Declaration]:
    found: dict[tuple[str, str], Declaration] = {}
    data = document.data
    for section, namespace in DECLARING.items():
        entries = data.get(section)
        if not isinstance(entries, dict):
            continue
        for name, value in entries.items():
            span = document.spans.get((section, name, KEY))
            if span is None or not isinstance(name, str):
                continue
            detail = _detail(document, section, name, value)
            found.setdefault((namespace, name), Declaration(name, namespace, section, span, detail))
    outcomes = data.get("outcomes")
    if isinstance(outcomes, list):
        for index, name in enumerate(outcomes):
            span = document.spans.get(("outcomes", index))
            if isinstance(name, str) and span is not None:
                found.setdefault(
                    ("outcome", name), Declaration(name, "outcome", "outcomes", span, "outcome")
                )
    return found


def _detail(document: Document, section: str, name: str, value: Any) -> str:
    if section == "inputs":
        return str(value)
    if section == "weights" and isinstance(value, dict):
        bounds = value.get("bounds")
        text = f"{_number(value.get('default'))}"
        if isinstance(bounds, list) and len(bounds) == 2:
            text += f" in [{_number(bounds[0])}, {_number(bounds[1])}]"
        extras = [f"{k} = {value[k]}" for k in ("sign", "source") if k in value]
        if isinstance(value.get("grid"), list):
            extras.append("grid = [" + ", ".join(_number(v) for v in value["grid"]) + "]")
        return text + (" {" + ", ".join(extras) + "}" if extras else "")
    span = document.spans.get((section, name))
    return _slice(document.source.text, span) if span else ""


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _slice(text: str, span: Span) -> str:
    lines = text.split("\n")
    if span.line == span.end_line and 1 <= span.line <= len(lines):
        piece = lines[span.line - 1][span.column - 1 : span.end_column - 1]
    else:
        first = lines[span.line - 1][span.column - 1 :] if span.line <= len(lines) else ""
        piece = first + " …"
    return piece.strip().strip("'\"")


# ---------------------------------------------------------------- what is under the cursor

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def word_at(text: str, line: int, column: int) -> tuple[str, Span] | None:
    """The name at (or just before) a 1-based line and column."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return None
    row = lines[line - 1]
    for match in _WORD.finditer(row):
        if match.start() + 1 <= column <= match.end() + 1:
            return match.group(), Span(line, match.start() + 1, line, match.end() + 1)
    return None


def _contains(outer: Span, inner: Span) -> bool:
    return (outer.line, outer.column) <= (inner.line, inner.column) and (
        inner.end_line,
        inner.end_column,
    ) <= (outer.end_line, outer.end_column)


def path_at(document: Document, span: Span) -> tuple[PathKey, bool] | None:
    """The data path written at `span` (the narrowest one covering it) and whether it is the key
    of a mapping entry rather than its value."""
    best: tuple[tuple[int, int, int], PathKey, bool] | None = None
    for path, where in document.spans.items():
        if not _contains(where, span):
            continue
        is_key = bool(path) and path[-1] == KEY
        size = (where.end_line - where.line, where.end_column - where.column, 0 if is_key else 1)
        if best is None or size < best[0]:
            best = (size, path[:-1] if is_key else path, is_key)
    return (best[1], best[2]) if best else None


def formula_root(path: PathKey) -> PathKey | None:
    """The formula a path lies in (`objectives.click`, `utility`, …), if any."""
    if len(path) >= 2 and path[0] in ("objectives", "rewards"):
        return path[:2]
    for root in FORMULAS:
        if path[: len(root)] == root:
            return root
    return None


def reference_at(document: Document, path: PathKey, is_key: bool) -> tuple[str, str] | None:
    """(namespace, name) when the place names a declared thing: its declaration, or a use."""
    data = document.data
    if is_key:
        if len(path) == 2 and path[0] in DECLARING:
            return DECLARING[str(path[0])], str(path[1])
        if (len(path) == 2 and path[0] == "spacing") or (
            len(path) == 3 and path[:2] == ("rules", "caps")
        ):
            return "name", str(path[-1])
        return None
    value = value_at(data, path)
    root = formula_root(path)
    if root is not None:
        if isinstance(value, dict) and value.get("kind") == "ref":
            return ("outcome" if path[0] == "rewards" else "name"), str(value.get("name"))
        return None
    if not isinstance(value, str):
        return None
    if len(path) == 2 and path[0] == "outcomes":
        return "outcome", value
    if path[:2] == ("rules", "filters") or path == ("semantic_id_penalty", "input"):
        return "name", value
    if path[:2] == ("policy", "state"):
        return "name", value
    if path == ("policy", "reward"):
        return "reward", value
    return None


def place_of(document: Document, path: PathKey) -> tuple[tuple[str, ...], str | None]:
    """The schema place of a data path (declared names as `*`, list indices dropped) and the
    variant it lies in (the diversifier's algorithm, the exploration's kind)."""
    root = formula_root(path)
    if root is not None:
        path = root
    place: list[str] = []
    for index, part in enumerate(path):
        if isinstance(part, int):
            continue
        place.append("*" if path[:index] in NAMED else str(part))
    variant = None
    if path[:1] == ("diversity",):
        variant = value_at(document.data, ("diversity", "algorithm"))
    elif path[:2] == ("policy", "exploration"):
        variant = value_at(document.data, ("policy", "exploration", "kind"))
    return tuple(place), variant if isinstance(variant, str) else None


# ---------------------------------------------------------------- hover


@dataclass(frozen=True)
class Hover:
    markdown: str
    span: Span


def hover(analysis: Analysis, line: int, column: int) -> Hover | None:
    found = word_at(analysis.text, line, column)
    if found is None:
        return None
    word, span = found
    document = analysis.document
    at = path_at(document, span) if document is not None else None
    if document is not None and at is not None:
        path, is_key = at
        text = _hover_at(analysis, document, path, is_key, word)
        if text is not None:
            return Hover(text, span)
    if word in SECTION_KEYWORDS and _starts_statement(analysis, span):
        return Hover(_section_hover(SECTION_KEYWORDS[word], word), span)
    return None


def _starts_statement(analysis: Analysis, span: Span) -> bool:
    if analysis.syntax != "dsl":
        return False
    row = analysis.text.split("\n")[span.line - 1]
    return not row[: span.column - 1].strip()


def _hover_at(
    analysis: Analysis, document: Document, path: PathKey, is_key: bool, word: str
) -> str | None:
    named = reference_at(document, path, is_key)
    if named is not None:
        declared = analysis.declarations.get(named)
        if declared is not None and declared.name == word:
            return declaration_hover(analysis, declared)
        return None
    value = value_at(document.data, path)
    if path and path[-1] == "fn" and isinstance(value, str):
        return function_hover(value)
    if is_key and len(path) == 1:
        return _section_hover(str(path[0]), str(path[0]))
    place, variant = place_of(document, path)
    if formula_root(path) is not None:
        return _field_hover(place, variant) if is_key or path == formula_root(path) else None
    if path[:1] == ("inputs",) and len(path) == 2 and not is_key:
        return _input_type_hover(str(value))
    if path == ("diversity", "algorithm") and isinstance(value, str) and not is_key:
        return algorithm_hover(value)
    if path[:1] == ("slate",) or path[:2] == ("rules", "truncate"):
        return _field_hover(place, variant)
    if len(place) >= 2 and (is_key or isinstance(value, str)):
        return _field_hover(place, variant)
    return None


def declaration_hover(analysis: Analysis, declared: Declaration) -> str:
    kind = {"inputs": "input", "objectives": "objective", "weights": "weight"}.get(
        declared.section, declared.section.rstrip("s")
    )
    head = f"**{kind}** `{declared.name}`"
    lines: list[str] = []
    if declared.section == "inputs":
        head += f": `{declared.detail}`"
        sentence = reference.input_type_doc(declared.detail.split("[")[0])
        if sentence:
            lines.append(as_sentence(sentence))
    elif declared.section == "weights":
        head += f" = {declared.detail}"
        section = reference.section("weights")
        lines.append(section.text if section else "")
    elif declared.section in ("objectives", "rewards"):
        head += f" = `{declared.detail}`"
        section = reference.section(declared.section)
        if section is not None:
            lines.append(section.title[:1].upper() + section.title[1:] + ".")
    lines.append(f"Declared at line {declared.span.line}.")
    return "\n\n".join([head, *[line for line in lines if line]])


def function_hover(name: str) -> str | None:
    from blendspec.spec.expr import SIGNALS, TRANSFORMS

    if name in TRANSFORMS:
        usage = TRANSFORMS[name].usage
        kind = "transform"
    elif name in SIGNALS:
        usage = f"{name}({SIGNALS[name]} input)"
        kind = "similarity signal"
    else:
        return None
    sentence = reference.function_doc(name)
    return f"**{kind}** `{usage}`" + (f"\n\n{as_sentence(sentence)}" if sentence else "")


def algorithm_hover(name: str) -> str | None:
    from blendspec.diversity import DIVERSIFIERS

    plugin = DIVERSIFIERS.get(name)
    if plugin is None:
        return None
    summary = (plugin.__doc__ or "").strip().split("\n\n")[0]
    parameters = reference.algorithm_doc(name)
    text = f"**diversity** `{name}`: {' '.join(summary.split())}"
    return text + (f"\n\nParameters (default): {parameters}" if parameters else "")


def _input_type_hover(kind: str) -> str | None:
    sentence = reference.input_type_doc(kind.split("[")[0].strip())
    return f"**input type** `{kind}`" + (f"\n\n{as_sentence(sentence)}" if sentence else "")


def as_sentence(text: str) -> str:
    """A table cell as a sentence: capitalised when it opens with a word (not with a formula
    such as `log(1 + x)` or a variable such as `x limited to …`) and full-stopped."""
    text = text.strip()
    first = re.match(r"([a-z]+)\s", text)
    if first is not None and (len(first.group(1)) > 1 or first.group(1) == "a"):
        text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _section_hover(key: str, word: str) -> str:
    section = reference.section(key)
    return f"**{word}**" + (f"\n\n{section.text}" if section else "")


def _field_hover(place: tuple[str, ...], variant: str | None) -> str | None:
    from blendspec.spec.schema import describe_type, property_schema

    sentence = reference.describe(place, variant)
    tag = place in (("diversity", "algorithm"), ("policy", "exploration", "kind"))
    prop = property_schema(place, None if tag else variant)  # a tag: every value it can take
    if sentence is None and prop is None:
        return None
    name = place[-1] if place[-1] != "*" else place[-2]
    head = f"**{name}**"
    if variant is not None and place[0] == "diversity":
        head += f" ({variant})"
    if prop is not None:
        head += f": {describe_type(prop)}"
    return head + (f"\n\n{as_sentence(sentence)}" if sentence else "")


# ---------------------------------------------------------------- definition and references


def definition(analysis: Analysis, line: int, column: int) -> Span | None:
    named = _named_at(analysis, line, column)
    if named is None:
        return None
    declared = analysis.declarations.get(named)
    return declared.span if declared is not None else None


def _named_at(analysis: Analysis, line: int, column: int) -> tuple[str, str] | None:
    found = word_at(analysis.text, line, column)
    if found is None or analysis.document is None:
        return None
    word, span = found
    at = path_at(analysis.document, span)
    if at is None:
        return None
    named = reference_at(analysis.document, *at)
    return named if named is not None and named[1] == word else None


def references(
    analysis: Analysis, line: int, column: int, include_declaration: bool = True
) -> list[Span]:
    """Every place the name at the cursor is declared or used, each exactly the name's text."""
    named = _named_at(analysis, line, column)
    if named is None:
        return []
    found = occurrences(analysis, named)
    declared = analysis.declarations.get(named)
    if not include_declaration and declared is not None:
        found = [span for span in found if span != declared.span]
    return found


def occurrences(analysis: Analysis, named: tuple[str, str]) -> list[Span]:
    """The spans of a name's text wherever the spec declares or uses it. A span the front end
    could only give for a whole value (a formula in a multi-line YAML scalar) is searched for
    the name as a whole word that is not a call."""
    document = analysis.document
    if document is None:
        return []
    rows = document.source.text.split("\n")
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(named[1])}(?![A-Za-z0-9_])(?!\s*\()")
    found: set[Span] = set()
    for path, span in document.spans.items():
        is_key = bool(path) and path[-1] == KEY
        if reference_at(document, path[:-1] if is_key else path, is_key) != named:
            continue
        for number in range(span.line, span.end_line + 1):
            if not 1 <= number <= len(rows):
                continue
            row = rows[number - 1]
            low = span.column - 1 if number == span.line else 0
            high = span.end_column - 1 if number == span.end_line else len(row)
            for match in pattern.finditer(row, low, high):
                found.add(Span(number, match.start() + 1, number, match.end() + 1))
    return sorted(found)


class RenameError(Exception):
    """A rename refused, with the reason the user reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def rename_target(analysis: Analysis, line: int, column: int) -> tuple[tuple[str, str], Span]:
    """The declared name at the cursor and its span there, or RenameError saying why not."""
    named = _named_at(analysis, line, column)
    found = word_at(analysis.text, line, column)
    if named is None or found is None:
        raise RenameError("only declared names can be renamed: inputs, objectives, weights, …")
    if named not in analysis.declarations:
        raise RenameError(f"`{named[1]}` is not declared in this spec")
    return named, found[1]


def rename(analysis: Analysis, line: int, column: int, new_name: str) -> list[Span]:
    """The spans to replace with `new_name`: the declaration and every use, in either syntax.
    Refused (RenameError) for a name that is no valid name or is taken in the same namespace."""
    from blendspec.spec.base import NAME_PATTERN

    named, _span = rename_target(analysis, line, column)
    if not NAME_PATTERN.fullmatch(new_name):
        raise RenameError(
            f"`{new_name}` is not a valid name (letters, digits and _, not starting with a digit)"
        )
    taken = analysis.declarations.get((named[0], new_name))
    if taken is not None and new_name != named[1]:
        raise RenameError(f"`{new_name}` is already declared at line {taken.span.line}")
    return occurrences(analysis, named)


# ---------------------------------------------------------------- signature help


def signature(
    text: str, line: int, column: int
) -> tuple[str, list[tuple[int, int]], int, str] | None:
    """Inside the parentheses of a transform or signal call: its usage (`clip(x, lo, hi)`), the
    offsets of each parameter in it, the parameter the cursor is at, and the docs sentence."""
    from blendspec.spec.expr import SIGNALS, TRANSFORMS

    rows = text.split("\n")
    if not 1 <= line <= len(rows):
        return None
    before = _code(rows[line - 1][: column - 1])
    depth = 0
    for index in range(len(before) - 1, -1, -1):
        char = before[index]
        if char == ")":
            depth += 1
        elif char == "(":
            if depth == 0:
                call = re.search(r"([A-Za-z_]\w*)\s*$", before[:index])
                if call is None:
                    return None
                name = call.group(1)
                if name in TRANSFORMS:
                    params = ("x", *TRANSFORMS[name].params)
                elif name in SIGNALS:
                    params = (f"{SIGNALS[name]} input",)
                else:
                    return None
                label = f"{name}({', '.join(params)})"
                offsets = []
                start = len(name) + 1
                for param in params:
                    offsets.append((start, start + len(param)))
                    start += len(param) + 2
                inside = before[index + 1 :]
                active = _top_level_commas(inside)
                return label, offsets, active, as_sentence(reference.function_doc(name) or "")
            depth -= 1
    return None


def _top_level_commas(text: str) -> int:
    depth = count = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            count += 1
    return count


# ---------------------------------------------------------------- symbols


def symbols(analysis: Analysis) -> list[tuple[str, str, str, Span]]:
    """(name, kind, detail, span) for the outline: every declaration and singleton section."""
    found = [(d.name, d.section, d.detail, d.span) for d in analysis.declarations.values()]
    document = analysis.document
    if document is not None:
        for key in ("diversity", "semantic_id_penalty", "policy", "utility"):
            span = document.spans.get((key, KEY))
            if span is not None:
                detail = value_at(document.data, (key, "algorithm")) if key == "diversity" else ""
                found.append((key, key, str(detail or ""), span))
    return sorted(found, key=lambda item: (item[3].line, item[3].column))


# ---------------------------------------------------------------- completion


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # keyword, field, value, function, input, objective, weight, outcome, reward, type
    detail: str = ""
    documentation: str = ""
    insert: str | None = None


def keywords() -> list[str]:
    """The DSL's statement keywords, as the grammar declares them (never a list kept by hand)."""
    from blendspec.spec.syntax import _parser

    words = {
        str(t.pattern.value)
        for t in _parser().terminals
        if t.pattern.type == "str" and str(t.pattern.value).isidentifier()
    }
    return sorted(words)


def names_in_text(text: str, syntax: Syntax) -> dict[tuple[str, str], Declaration]:
    """Declarations found by a lenient scan, for text that does not parse (mid-edit)."""
    found: dict[tuple[str, str], Declaration] = {}
    if syntax != "dsl":
        return found
    for number, row in enumerate(text.split("\n"), start=1):
        match = re.match(r"\s*(input|objective|weight|reward|outcome)\s+(.*)", row)
        if match is None:
            continue
        keyword, rest = match.groups()
        column = match.start(2) + 1
        if keyword == "outcome":
            for name in re.finditer(r"[A-Za-z_]\w*", rest.split("#")[0]):
                span = Span(number, column + name.start(), number, column + name.end())
                found.setdefault(
                    ("outcome", name.group()),
                    Declaration(name.group(), "outcome", "outcomes", span, "outcome"),
                )
            continue
        name = re.match(r"[A-Za-z_]\w*", rest)
        if name is None:
            continue
        section = keyword + "s"
        detail = rest[name.end() :].split("#")[0].strip(" :=")
        span = Span(number, column, number, column + name.end())
        namespace = DECLARING[section]
        found.setdefault(
            (namespace, name.group()),
            Declaration(name.group(), namespace, section, span, detail),
        )
    return found


INPUT_TYPES = ("score", "embedding[D]", "semantic_id[L]", "category", "flag", "features[D]")


def completion(
    analysis: Analysis,
    line: int,
    column: int,
    known: dict[tuple[str, str], Declaration] | None = None,
) -> list[Completion]:
    """Completions at a 1-based line and column of the (possibly broken) text. `known`: names
    from the last version that parsed, merged with what a scan of this text finds."""
    declared = dict(known or {})
    declared.update(names_in_text(analysis.text, analysis.syntax))
    declared.update(analysis.declarations)
    lines = analysis.text.split("\n")
    row = lines[line - 1] if 1 <= line <= len(lines) else ""
    before = row[: column - 1]
    prefix = re.search(r"[A-Za-z_][A-Za-z0-9_]*$", before)
    head = before[: prefix.start()] if prefix else before
    context = _dsl_context(analysis.text, lines, line, head) if analysis.syntax == "dsl" else None
    if analysis.syntax == "yaml":
        context = _yaml_context(lines, line, head)
    return _complete(context or ("names",), declared)


Context = tuple[Any, ...]


def _complete(context: Context, declared: dict[tuple[str, str], Declaration]) -> list[Completion]:
    kind = context[0]
    if kind == "statement":
        return [
            Completion(word, "keyword", documentation=_section_text(SECTION_KEYWORDS.get(word)))
            for word in keywords()
            if word in SECTION_KEYWORDS
        ]
    if kind == "none":
        return []
    if kind == "sections":
        return [
            Completion(key, "field", documentation=reference.describe((key,)) or "", insert=key)
            for key in reference.SECTION_OF
        ]
    if kind == "fields":
        return _fields(context[1], context[2], context[3])
    if kind == "value":
        return _values(context[1], context[2], declared)
    if kind == "input_type":
        return [
            Completion(t, "type", documentation=reference.input_type_doc(t.split("[")[0]) or "")
            for t in INPUT_TYPES
        ]
    if kind == "algorithm":
        return _algorithms()
    if kind == "inputs_of":
        return _names(declared, {"inputs"}, kinds=context[1])
    if kind == "formula":
        return _names(declared, context[1], kinds=context[2]) + _functions(context[3])
    return _names(declared, {"inputs", "objectives", "weights"})


def _section_text(key: str | None) -> str:
    section = reference.section(key) if key else None
    return section.text if section else ""


def _fields(place: tuple[str, ...], variant: str | None, separator: str) -> list[Completion]:
    from blendspec.spec.schema import describe_type, fields_at, property_schema

    found = []
    for name in fields_at(place, variant):
        if place == ("diversity",) and name == "algorithm" and separator == " = ":
            continue  # `diversity ssd { … }` names it before the block
        prop = property_schema(place + (name,), variant)
        found.append(
            Completion(
                name,
                "field",
                describe_type(prop) if prop else "",
                reference.describe(place + (name,), variant) or "",
                name + separator,
            )
        )
    return found


def _values(
    place: tuple[str, ...], variant: str | None, declared: dict[tuple[str, str], Declaration]
) -> list[Completion]:
    from blendspec.spec.schema import property_schema

    field_name = place[-1]
    if place == ("diversity", "algorithm"):
        return _algorithms()
    if place == ("diversity", "similarity"):
        signals = ("embedding", "category", "semantic_id")
        return _names(declared, {"inputs"}, kinds=signals) + _functions(signals=True)
    if place == ("semantic_id_penalty", "input"):
        return _names(declared, {"inputs"}, kinds=("semantic_id",))
    if place[:2] == ("policy", "state"):
        return _names(declared, {"inputs"}, kinds=("features",))
    if place == ("policy", "reward"):
        return _names(declared, {"rewards"})
    if place == ("rules", "filters"):
        return _names(declared, {"inputs"}, kinds=("flag",))
    if place == ("inputs", "*"):
        return _complete(("input_type",), declared)
    if place in (("objectives", "*"), ("utility",), ("rewards", "*")):
        return _complete(_formula_context(place[0]), declared)
    prop = property_schema(place, variant) or {}
    values = prop.get("enum") or ([prop["const"]] if "const" in prop else [])
    return [
        Completion(str(v), "value", documentation=reference.describe(place, variant) or "")
        for v in values
        if field_name
    ]


def _formula_context(section: str) -> Context:
    if section == "rewards":
        return ("formula", {"outcomes"}, None, False)
    if section == "objectives":  # a weighted sum of score inputs under transforms
        return ("formula", {"inputs"}, ("score",), False)
    # The utility: weights times objectives or score inputs.
    return ("formula", {"inputs", "objectives", "weights"}, ("score",), False)


def _algorithms() -> list[Completion]:
    from blendspec.diversity import PLUGINS

    return [
        Completion(
            p.name(),
            "value",
            " ".join((p.__doc__ or "").strip().split("\n\n")[0].split()),
            reference.algorithm_doc(p.name()) or "",
        )
        for p in PLUGINS
    ]


def _names(
    declared: dict[tuple[str, str], Declaration],
    sections: set[str],
    kinds: tuple[str, ...] | None = None,
) -> list[Completion]:
    """Declared names of those sections; `kinds` narrows the inputs to those types."""
    found = []
    for (_namespace, name), item in declared.items():
        if item.section not in sections:
            continue
        input_kind = item.detail.split("[")[0].strip()
        if kinds is not None and item.section == "inputs" and input_kind not in kinds:
            continue
        kind = {"inputs": "input", "objectives": "objective", "weights": "weight"}.get(
            item.section, item.section.rstrip("s")
        )
        found.append(Completion(name, kind, item.detail, f"Declared at line {item.span.line}."))
    return found


def _functions(signals: bool) -> list[Completion]:
    from blendspec.spec.expr import SIGNALS, TRANSFORMS

    names = list(SIGNALS) if signals else list(TRANSFORMS)
    found = []
    for name in names:
        usage = TRANSFORMS[name].usage if name in TRANSFORMS else f"{name}({SIGNALS[name]} input)"
        found.append(
            Completion(name, "function", usage, reference.function_doc(name) or "", f"{name}(")
        )
    return found


# DSL contexts ------------------------------------------------------------


_BLOCK_OPENERS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"\bdiversity\s+([A-Za-z_]\w*)\s*$"), ("diversity",)),
    (re.compile(r"\bweight\s+[A-Za-z_]\w*\s*=[^{}=]*\]\s*$"), ("weights", "*")),
    (re.compile(r"\bspacing\s+[A-Za-z_]\w*\s*$"), ("spacing", "*")),
    (re.compile(r"\bsemantic_id_penalty\s*$"), ("semantic_id_penalty",)),
    (re.compile(r"\bcap\s+[A-Za-z_]\w*\s*$"), ("rules", "caps", "*")),
    (re.compile(r"\bpolicy\s*$"), ("policy",)),
    (re.compile(r"\bexploration\s*=\s*$"), ("policy", "exploration")),
)


def _code(text: str) -> str:
    """The text with comments and string contents blanked (same length, newlines kept)."""
    out: list[str] = []
    in_string = in_comment = escaped = False
    for char in text:
        if char == "\n":
            in_comment = in_string = False
            out.append(char)
        elif in_comment:
            out.append(" ")
        elif in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                out.append('"')
                continue
            out.append(" " if char != '"' else char)
        elif char == "#":
            in_comment = True
            out.append(" ")
        elif char == '"':
            in_string = True
            out.append(char)
        else:
            out.append(char)
    return "".join(out)


def _dsl_context(text: str, lines: list[str], line: int, head: str) -> Context | None:
    offset = sum(len(row) + 1 for row in lines[: line - 1]) + len(head)
    code = _code(text[:offset])
    opened: list[int] = []
    for index, char in enumerate(code):
        if char == "{":
            opened.append(index)
        elif char == "}" and opened:
            opened.pop()
    if opened:
        return _block_context(code, opened)
    current = code[code.rfind("\n") + 1 :]
    if not current.strip():
        return ("statement",)
    stripped = current.strip()
    if re.fullmatch(r"input\s+[A-Za-z_]\w*\s*:", stripped):
        return ("input_type",)
    if re.fullmatch(r"diversity", stripped):
        return ("algorithm",)
    if re.fullmatch(r"(spacing|filter(\s+\w+\s*,)*)", stripped):
        return ("inputs_of", ("flag",))
    if re.fullmatch(r"cap", stripped):
        return ("inputs_of", ("category",))
    formula = re.match(r"(objective\s+\w+|utility|reward\s+\w+)\s*=", stripped)
    if formula is not None:
        return _formula_context(SECTION_KEYWORDS[formula.group(1).split()[0]])
    if re.match(r"(spec|slate|truncate|outcome|weight)\b", stripped):
        return ("none",)
    return None


def _block_context(code: str, opened: list[int]) -> Context:
    """Inside `{ … }`: which block (from what precedes each `{`), and whether the cursor is at a
    field's name or its value."""
    place: tuple[str, ...] = ()
    variant: str | None = None
    for depth, start in enumerate(opened):
        before = code[max(0, start - 300) : start]
        for pattern, where in _BLOCK_OPENERS:
            match = pattern.search(before)
            if match is None:
                continue
            if where == ("policy", "exploration") and place != ("policy",):
                continue
            place = where
            if where == ("diversity",):
                variant = match.group(1)
            break
        else:
            if depth == 0:
                place = ()
    inner = code[opened[-1] + 1 :]
    if place == ("policy", "exploration"):
        kind = re.search(r"\bkind\s*=\s*(\w+)", inner)
        variant = kind.group(1) if kind else None
    return _option_context(_segment(inner), place, variant, "=", " = ")


def _segment(text: str) -> str:
    """The text after the last separator of options (`,`, a newline, `{`) outside brackets and
    parentheses: the option being written (`state = [a, ` stays whole)."""
    depth = 0
    start = 0
    for index, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char in ",\n{" and depth == 0:
            start = index + 1
    return text[start:]


def _option_context(
    segment: str, place: tuple[str, ...], variant: str | None, assign: str, separator: str
) -> Context:
    """At an option's name (the block's fields), or at its value (what the field takes)."""
    if not place:
        return ("names",)
    assigned = re.fullmatch(rf"\s*([A-Za-z_]\w*)\s*{assign}(.*)", segment, re.DOTALL)
    if assigned is not None:
        name, rest = assigned.groups()
        if name == "similarity" or re.fullmatch(r"\s*(\[[^\]]*)?", rest):
            return ("value", place + (name,), variant)
        return ("none",)  # past a value (a number being typed)
    if not segment.strip():
        return ("fields", place, variant, separator)
    return ("names",)


# YAML contexts -----------------------------------------------------------


_YAML_KEY = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z_][\w]*)\s*:(.*)$")


def _yaml_context(lines: list[str], line: int, head: str) -> Context | None:
    """The mapping the cursor is in, from the indentation of the lines above (block style) and
    the braces before it on its line (flow style)."""
    indent = len(head) - len(head.lstrip(" -"))
    keys: list[str] = []
    limit = indent
    for row in reversed(lines[: line - 1]):
        match = _YAML_KEY.match(row)
        if match is None or row.lstrip().startswith("#"):
            continue
        depth = len(match.group(1))
        if depth < limit and not re.sub(r"(^|\s)#.*$", "", match.group(3)).strip():
            keys.insert(0, match.group(2))
            limit = depth
            if depth == 0:
                break
        elif depth < limit:
            break  # a parent with an inline value: not a mapping we can be inside
    entry = _YAML_KEY.match(head)
    if entry is not None:
        keys.append(entry.group(2))
        rest = entry.group(3)
        flow = rest.rfind("{")
        if flow >= 0 and "}" not in rest[flow:]:
            place, variant = _yaml_place(keys, lines, line)
            return _option_context(_segment(rest[flow + 1 :]), place, variant, ":", ": ")
        place, variant = _yaml_place(keys, lines, line)
        return ("value", place, variant)
    if head.strip() in ("", "-"):
        if not keys:
            return ("sections",)
        place, variant = _yaml_place(keys, lines, line)
        if head.strip() == "-":
            return ("value", place, variant)
        return ("fields", place, variant, ": ")
    return None


def _yaml_place(keys: list[str], lines: list[str], line: int) -> tuple[tuple[str, ...], str | None]:
    place: list[str] = []
    for index, key in enumerate(keys):
        place.append("*" if tuple(keys[:index]) in NAMED else key)
    variant = None
    if place[:1] == ["diversity"]:
        variant = _sibling_value(lines, "algorithm")
    elif place[:2] == ["policy", "exploration"]:
        variant = _sibling_value(lines, "kind")
    return tuple(place), variant


def _sibling_value(lines: list[str], key: str) -> str | None:
    for row in lines:
        match = re.search(rf"\b{key}\s*:\s*([A-Za-z_]\w*)", row)
        if match is not None:
            return match.group(1)
    return None


def iter_diagnostics(analysis: Analysis) -> Iterator[Diagnostic]:
    if analysis.is_spec:
        yield from analysis.diagnostics
