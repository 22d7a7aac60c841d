"""JSON Schema of the YAML form, generated from the spec model so the two never drift apart.

pydantic's schema is reworked in three ways, so that any JSON Schema tool (a YAML language
server, `check-jsonschema`, the `jsonschema` package) reads it the way blendspec does:

- **Tagged unions as `if`/`then`.** pydantic writes the diversifiers and the exploration kinds as
  `oneOf` plus OpenAPI's `discriminator` keyword, which JSON Schema validators ignore: they try
  every branch, and a wrong SSD parameter comes back as "not valid under any of the given
  schemas" at `diversity` (or as "`ssd` was expected" from the MMR branch). Here the tag is an
  `enum`, and one `if: {tag: const}` / `then: {$ref}` per variant applies exactly one branch, so
  the error names the parameter.
- **Optional values without `anyOf`.** `anyOf: [X, null]` is written as `X` that also admits
  null (`type: [..., "null"]`), for the same reason: a bad `policy.fallback` is blamed on
  `policy.fallback`, not on `policy`.
- **A description on every property**, read from docs/language.md (`blendspec.spec.reference`),
  the sentences `blend lsp` shows on hover.

:func:`property_index` exposes the result by place (``("diversity", "theta")`` and the
diversifier), which is how the language server knows each field's type, range and default.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

from blendspec.spec.model import Spec
from blendspec.spec.reference import describe

SCHEMA_ID = "urn:blendspec:spec:1"

Place = tuple[str, ...]
"""Keys of the YAML form down to a property, `*` for a declared name: ``("weights", "*", "sign")``."""


def spec_json_schema() -> dict[str, Any]:
    return copy.deepcopy(_schema())


@functools.cache
def _schema() -> dict[str, Any]:
    raw = copy.deepcopy(Spec.model_json_schema(mode="validation", by_alias=True))
    definitions: dict[str, Any] = raw.get("$defs", {})
    _rewrite(raw, definitions)
    for schema in definitions.values():
        _rewrite(schema, definitions)
    _policy_state(definitions)
    for place, variant, prop in _properties(raw, definitions):
        sentence = describe(place, variant)
        if sentence is None:
            continue
        existing = prop.get("description")
        if existing and existing != sentence:  # what pydantic knew: the value's own form
            sentence = f"{sentence}\n\n{existing}"
        prop["description"] = sentence
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **raw,
        "title": "blendspec spec (YAML form)",
    }


# ---------------------------------------------------------------- rewriting pydantic's schema


def _rewrite(node: Any, definitions: dict[str, Any]) -> None:
    """Tagged unions to if/then and optional values to nullable types, everywhere below `node`."""
    if isinstance(node, list):
        for item in node:
            _rewrite(item, definitions)
        return
    if not isinstance(node, dict):
        return
    if "discriminator" in node and "oneOf" in node:
        _tagged_union(node)
    if "anyOf" in node:
        _nullable(node, definitions)
    for key, value in list(node.items()):
        if key != "$defs":
            _rewrite(value, definitions)


def _tagged_union(node: dict[str, Any]) -> None:
    discriminator = node.pop("discriminator")
    order = [branch.get("$ref") for branch in node.pop("oneOf")]
    tag = discriminator["propertyName"]
    # The variants in the model's order (pydantic sorts the mapping by tag).
    mapping: dict[str, str] = dict(
        sorted(discriminator["mapping"].items(), key=lambda item: order.index(item[1]))
    )
    node["type"] = "object"
    node["required"] = [tag]
    node["properties"] = {tag: {"enum": list(mapping)}}
    node["allOf"] = [
        {"if": {"properties": {tag: {"const": value}}, "required": [tag]}, "then": {"$ref": ref}}
        for value, ref in mapping.items()
    ]


_PLAIN = ("string", "number", "integer", "boolean", "array")


def _nullable(node: dict[str, Any], definitions: dict[str, Any]) -> None:
    """`anyOf: [X, {type: null}]` -> X admitting null, when X is one plain type or a model."""
    branches = node["anyOf"]
    others = [b for b in branches if b != {"type": "null"}]
    if len(branches) != 2 or len(others) != 1:
        return
    (other,) = others
    if other.get("type") in _PLAIN and not set(other) & {"anyOf", "oneOf", "allOf", "$ref"}:
        node.pop("anyOf")
        node.update({**other, "type": [other["type"], "null"]})
    elif set(other) == {"$ref"}:
        definition = definitions[other["$ref"].rsplit("/", 1)[-1]]
        if definition.get("type") == "object":
            # `properties`, `required` and `additionalProperties` constrain objects only: with
            # null admitted by the type, null passes and anything else gets the model's errors.
            definition["type"] = ["object", "null"]
            node.pop("anyOf")
            node["$ref"] = other["$ref"]


def _policy_state(definitions: dict[str, Any]) -> None:
    """`state` takes one name or a list of at least one (the model reads a name as a list of
    one); pydantic states the list's minimum as a string's `minLength`, which validators ignore."""
    state = definitions["Policy"]["properties"]["state"]
    items = state.get("items", {"type": "string"})
    for key in ("items", "minLength", "type"):
        state.pop(key, None)
    state.update({"type": ["string", "array"], "items": items, "minItems": 1})


# ---------------------------------------------------------------- walking by place


Visit = tuple[Place, str | None, dict[str, Any]]


def _properties(root: dict[str, Any], definitions: dict[str, Any]) -> Iterator[Visit]:
    """Every property schema, with its place in the YAML form and the variant it belongs to."""
    yield from _walk(root, (), None, definitions.__getitem__, set())


def _walk(
    node: dict[str, Any],
    place: Place,
    variant: str | None,
    definition: Callable[[str], dict[str, Any]],
    seen: set[tuple[str, Place]],
) -> Iterator[Visit]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if (name, place) in seen:
            return
        seen.add((name, place))
        yield from _walk(definition(name), place, variant, definition, seen)
    for key, prop in node.get("properties", {}).items():
        if not isinstance(prop, dict):
            continue
        yield place + (key,), variant, prop
        yield from _walk(prop, place + (key,), None, definition, seen)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield place + ("*",), None, extra
        yield from _walk(extra, place + ("*",), None, definition, seen)
    for branch in node.get("allOf", ()):
        condition = branch.get("if", {}).get("properties", {})
        tag = next((v["const"] for v in condition.values() if "const" in v), None)
        if "then" in branch:
            yield from _walk(branch["then"], place, tag, definition, seen)


@functools.cache
def property_index() -> dict[tuple[Place, str | None], dict[str, Any]]:
    """Each property's schema by its place and variant (``(("diversity", "theta"), "ssd")``);
    the tag of a tagged union is listed under variant None. Read-only: shared between callers."""
    schema = _schema()
    index: dict[tuple[Place, str | None], dict[str, Any]] = {}
    for place, variant, prop in _properties(schema, schema["$defs"]):
        index.setdefault((place, variant), prop)
    return index


def fields_at(place: Place, variant: str | None = None) -> list[str]:
    """The field names a mapping at `place` accepts (for that variant), in the model's order."""
    names: list[str] = []
    for (where, kind), _prop in property_index().items():
        below = len(where) == len(place) + 1 and where[:-1] == place and where[-1] != "*"
        if below and kind in (None, variant) and where[-1] not in names:
            names.append(where[-1])
    return names


def property_schema(place: Place, variant: str | None = None) -> dict[str, Any] | None:
    index = property_index()
    return index.get((place, variant)) or index.get((place, None))


def describe_type(prop: dict[str, Any]) -> str:
    """A property's type as a person reads it: `number in [0, 1], default 0.5`."""
    schema = _resolved(prop)
    if "enum" in schema:
        text = " | ".join(f"`{v}`" for v in schema["enum"])
    elif "const" in schema:
        text = f"`{schema['const']}`"
    else:
        kinds = schema.get("type", "object")
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        shown = [k for k in kinds if k != "null"] or ["null"]
        text = " or ".join(
            "list" if k == "array" else "block" if k == "object" else k for k in shown
        )
        if "array" in kinds and isinstance(schema.get("items"), dict):
            item = schema["items"].get("type")
            if isinstance(item, str):
                text = text.replace("list", f"list of {item}s")
        interval = _interval(schema)
        if interval:
            text += f" in {interval}"
    if "default" in prop or "default" in schema:
        default = prop.get("default", schema.get("default"))
        if default is not None and default != [] and default != {}:
            text += f", default {_show(default)}"
    return text


def _resolved(prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        target = _schema()["$defs"][prop["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _interval(schema: dict[str, Any]) -> str | None:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is None and high is None:
        return None
    left = "(" if "exclusiveMinimum" in schema or low is None else "["
    right = ")" if "exclusiveMaximum" in schema or high is None else "]"
    return f"{left}{_show(low) if low is not None else '−∞'}, {_show(high) if high is not None else '∞'}{right}"


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return str(value)
