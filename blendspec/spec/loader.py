"""Spec file → validated, checked `Spec`, or a `SpecError` carrying located diagnostics.

Stages, in order: read → parse (DSL or YAML; stops at the first syntax error) → pydantic model
(errors mapped back to spans through the document's span map) → semantic checks (collected).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import pydantic
from pydantic import BaseModel

from blendspec.spec.checks import run_checks
from blendspec.spec.diagnostics import Diagnostic, Source, SpecError, did_you_mean
from blendspec.spec.model import Spec
from blendspec.spec.syntax import (
    Document,
    PathKey,
    Syntax,
    parse_document,
    syntax_of,
    value_at,
)


@dataclass(frozen=True)
class LoadedSpec:
    """A spec that passed every check, with what it was built from and its warnings."""

    spec: Spec
    document: Document
    warnings: tuple[Diagnostic, ...]
    path: Path | None = None

    @property
    def base_dir(self) -> Path | None:
        return self.path.parent if self.path is not None else None


def read_source(path: Path) -> tuple[Source, Syntax]:
    syntax = syntax_of(path)
    if syntax is None:
        raise SpecError(
            Source(str(path), ""),
            [
                Diagnostic(
                    "E003",
                    f"cannot tell the syntax of `{path.name}`",
                    help="name DSL specs `*.blend` and YAML specs `*.yaml` or `*.yml`",
                )
            ],
        )
    try:
        return Source.read(path), syntax
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise SpecError(
            Source(str(path), ""), [Diagnostic("E002", f"cannot read the spec: {reason}")]
        ) from None


def load_spec(path: Path | str) -> LoadedSpec:
    path = Path(path)
    source, syntax = read_source(path)
    return load_source(source, syntax, base_dir=path.parent, path=path)


def load_text(text: str, syntax: Syntax, name: str = "<spec>") -> LoadedSpec:
    return load_source(Source(name, text), syntax, base_dir=None)


def load_source(
    source: Source, syntax: Syntax, *, base_dir: Path | None, path: Path | None = None
) -> LoadedSpec:
    document = parse_document(source, syntax)
    spec = build_model(document)
    diagnostics = run_checks(spec, document, base_dir)
    if "blend:" in document.source.text:  # an ignore comment, maybe: its module loads only then
        from blendspec.spec.comments import apply_ignores

        diagnostics = apply_ignores(document, diagnostics)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        raise SpecError(document.source, diagnostics)  # the text as parsed (without a BOM)
    return LoadedSpec(spec, document, tuple(diagnostics), path)


def build_model(document: Document) -> Spec:
    try:
        return Spec.model_validate(document.data)
    except pydantic.ValidationError as error:
        diagnostics = [_from_pydantic(document, e) for e in error.errors(include_url=False)]
        raise SpecError(document.source, _dedupe(diagnostics)) from None


def _dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[Any, ...]] = set()
    result = []
    for d in diagnostics:
        key = (d.code, d.message, d.span)
        if key not in seen:
            seen.add(key)
            result.append(d)
    return result


_CODE = re.compile(r"^[EW][0-9]{3}$")


def data_path(data: Any, loc: tuple[Any, ...]) -> PathKey:
    """Map a pydantic `loc` onto the data: union tags and validator names are not data keys."""
    path: list[Any] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and part in node.values():
            continue  # a discriminated-union tag such as 'ssd' or 'binop'
        elif isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue
        else:
            path.append(part)
            node = None
    return tuple(path)


def _from_pydantic(document: Document, error: Any) -> Diagnostic:
    loc = tuple(error["loc"])
    path = data_path(document.data, loc)
    kind = error["type"]
    context = error.get("ctx") or {}
    field = str(path[-1]) if path else "spec"
    span = document.span_of(path)
    if _CODE.match(kind):
        return Diagnostic(kind, error["msg"], span, context.get("help"))
    if kind == "missing":
        parent = ".".join(str(p) for p in path[:-1]) or "the spec"
        return Diagnostic("E101", f"`{field}` is missing from {_section(parent)}", span)
    if kind == "extra_forbidden":
        allowed = _allowed_fields(document.data, path[:-1])
        return Diagnostic(
            "E102",
            f"unknown field `{field}`",
            document.key_span(path),
            did_you_mean(field, allowed)
            or ("allowed here: " + ", ".join(f"`{a}`" for a in allowed) if allowed else None),
        )
    if kind == "union_tag_invalid":
        tag = context.get("tag", "")
        expected = [t.strip(" '") for t in str(context.get("expected_tags", "")).split(",")]
        tag_path = path + ((_tag_key(document.data, path),) if path else ())
        return Diagnostic(
            "E100",
            f"unknown {_tag_key(document.data, path)} `{tag}`; expected {', '.join(expected)}",
            document.span_of(tag_path),
            did_you_mean(str(tag), expected),
        )
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        value = error.get("input")
        return Diagnostic(
            "E100",
            f"`{field}` cannot be `{value}`; expected {', '.join(expected)}",
            span,
            did_you_mean(str(value), expected),
        )
    message = error["msg"]
    return Diagnostic("E100", f"`{field}`: {message[0].lower()}{message[1:]}", span)


def _section(dotted: str) -> str:
    return dotted if dotted == "the spec" else f"`{dotted}`"


def _tag_key(data: Any, path: PathKey) -> str:
    node = value_at(data, path)
    if isinstance(node, dict):
        for key in ("algorithm", "kind"):
            if key in node:
                return key
    return "kind"


def _allowed_fields(data: Any, path: PathKey) -> list[str]:
    """The field names valid at `path`, found by walking the model along the data."""
    model: Any = Spec
    node = data
    for part in path:
        model = _field_type(model, part, node)
        node = value_at(node, (part,))
        if model is None:
            return []
    model = _pick_union(model, node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _field_type(model: Any, part: Any, node: Any) -> Any:
    model = _pick_union(model, node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        return fields[part].annotation if part in fields else None
    origin = get_origin(model)
    if origin is dict:
        return get_args(model)[1]
    if origin is tuple:
        return get_args(model)[0]
    return None


def _pick_union(model: Any, node: Any) -> Any:
    """Strip Annotated/Optional and choose a union member by the data's tag."""
    for _ in range(8):
        args = get_args(model)
        if hasattr(model, "__metadata__"):
            model = args[0]
            continue
        if args and get_origin(model) not in (dict, tuple):
            members = [a for a in args if a is not type(None)]
            chosen = None
            for member in members:
                fields = getattr(member, "model_fields", {})
                for tag in ("algorithm", "kind"):
                    if tag in fields and isinstance(node, dict):
                        literal = get_args(fields[tag].annotation)
                        if node.get(tag) in literal:
                            chosen = member
            model = chosen or (members[0] if len(members) == 1 else None)
            if model is None:
                return None
            continue
        return model
    return model
