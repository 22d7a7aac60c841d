"""`blend schema`: JSON Schema that a generic validator reads the way blendspec does — blaming
the field at fault — with a description on every property, from docs/language.md."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.exceptions import best_match

from blendspec.spec import reference
from blendspec.spec.schema import describe_type, fields_at, property_schema, spec_json_schema
from tests.conftest import REPO, SPECS

HOMEFEED = yaml.safe_load((SPECS / "homefeed.yaml").read_text())
ADS = yaml.safe_load((SPECS / "ads.yaml").read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = spec_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[tuple[list[Any], str]]:
    return [(list(e.absolute_path), e.message) for e in validator.iter_errors(data)]


def _with(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(data))
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


def test_the_examples_validate(validator: jsonschema.Draft202012Validator) -> None:
    for path in sorted(SPECS.glob("*.yaml")):
        assert _errors(validator, yaml.safe_load(path.read_text())) == [], path.name


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("diversity", "theta"), 2, "greater than the maximum"),
        (("diversity", "window"), 0, "less than the minimum"),
        (("diversity", "variant"), "fast", "is not one of"),
        (("diversity", "gamma"), 0, "less than or equal to the minimum"),
        (("diversity", "algorithm"), "sdd", "is not one of"),
    ],
)
def test_a_wrong_ssd_parameter_is_blamed_on_that_parameter(
    validator: jsonschema.Draft202012Validator, path: tuple[str, ...], value: Any, words: str
) -> None:
    """With pydantic's oneOf + OpenAPI `discriminator`, jsonschema said "is not valid under any
    of the given schemas" at `diversity` (or blamed `algorithm` from another branch)."""
    errors = _errors(validator, _with(HOMEFEED, path, value))
    assert errors, "accepted"
    assert all(where == list(path) for where, _ in errors), errors
    assert words in errors[0][1]
    assert list(best_match(validator.iter_errors(_with(HOMEFEED, path, value))).path) == list(path)


def test_other_variants_and_optional_sections_are_blamed_precisely(
    validator: jsonschema.Draft202012Validator,
) -> None:
    cases = [
        (ADS, ("policy", "exploration", "epsilon"), 1.5),
        (ADS, ("policy", "fallback"), "closest"),
        (ADS, ("policy", "file"), 3),
        (HOMEFEED, ("semantic_id_penalty", "window"), 0),
        (HOMEFEED, ("rules", "truncate"), 0),
        (HOMEFEED, ("weights", "w_hide", "sign"), "down"),
    ]
    for data, path, value in cases:
        errors = _errors(validator, _with(data, path, value))
        assert errors and all(where == list(path) for where, _ in errors), (path, errors)
    # A parameter of another diversifier is an unknown field of this one, at the block.
    unknown = _errors(validator, _with(HOMEFEED, ("diversity", "lambda"), 0.5))
    assert unknown == [
        (["diversity"], "Additional properties are not allowed ('lambda' was unexpected)")
    ]
    # The same parameter is fine under the diversifier that has it.
    mmr = _with(
        HOMEFEED,
        ("diversity",),
        {"algorithm": "mmr", "similarity": "cosine(visual)", "lambda": 0.5},
    )
    assert _errors(validator, mmr) == []
    # Optional sections may be null, as the model allows; a policy state may be one name.
    assert _errors(validator, _with(HOMEFEED, ("policy",), None)) == []
    assert _errors(validator, _with(ADS, ("policy", "state"), "user_state")) == []
    assert _errors(validator, _with(ADS, ("policy", "state"), [])) == [
        (["policy", "state"], "[] should be non-empty")
    ]  # fmt: skip


def test_no_openapi_discriminator_is_left() -> None:
    text = json.dumps(spec_json_schema())
    assert '"discriminator"' not in text and '"oneOf"' not in text


def _properties(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for key, prop in (node.get("properties") or {}).items():
            found.append((f"{where}/properties/{key}", prop))
        if isinstance(node.get("additionalProperties"), dict):
            found.append((f"{where}/additionalProperties", node["additionalProperties"]))
        for key, value in node.items():
            found += _properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _properties(value, f"{where}/{index}")
    return found


def test_every_property_has_a_description_from_the_docs() -> None:
    """Each property (and each declared-name value) carries the sentence docs/language.md
    gives it; none is written in the code."""
    schema = spec_json_schema()
    properties = [(w, p) for w, p in _properties(schema) if "/if/" not in w]
    assert len(properties) > 60
    missing = [where for where, prop in properties if not prop.get("description")]
    assert missing == []
    docs = " ".join((REPO / "docs" / "language.md").read_text().split()).lower()
    for where, prop in properties:
        first = prop["description"].split("\n\n")[0]
        for sentence in first.lower().split(". "):
            assert sentence.rstrip(".") in docs, (where, sentence)
    ssd = schema["$defs"]["Ssd"]["properties"]
    assert ssd["theta"]["description"] == reference.row("diversity", "theta", "ssd").meaning
    assert schema["$defs"]["Cover"]["properties"]["gamma"]["description"].startswith(
        "the exponent γ"
    )
    assert ssd["gamma"]["description"].startswith("the scale γ")


def test_the_reference_is_read_from_the_docs_page() -> None:
    """A row added to a table of language.md is a sentence for the schema and the hovers."""
    page = (
        "### `weight` — named weights\n\nIntro paragraph\nover two lines.\n\n"
        "| field | meaning |\n|---|---|\n| `sign` | which sign \\| none |\n\n"
        "### `diversity` — the diversifier\n\n"
        "| parameter | algorithms | meaning |\n|---|---|---|\n"
        "| `theta` | `ssd` | ssd's theta |\n| `theta` | all but `ssd` | others' theta |\n"
    )
    parsed = reference.parse(page)
    assert parsed["weight"].text == "Named weights. Intro paragraph over two lines."
    (row,) = parsed["weight"].rows
    assert row.names == ("sign",) and row.meaning.startswith("which sign")
    thetas = parsed["diversity"].rows
    assert [r.applies_to("ssd") for r in thetas] == [True, False]
    assert [r.applies_to("mmr") for r in thetas] == [False, True]


def test_field_types_for_the_editor() -> None:
    assert fields_at(("diversity",), "mmr") == ["algorithm", "similarity", "lambda", "relevance"]
    assert describe_type(property_schema(("diversity", "gamma"), "cover")) == (
        "number in (0, 1], default 0.5"
    )
    assert describe_type(property_schema(("weights", "*", "sign"))) == (
        "`positive` | `negative` | `any`, default positive"
    )
    assert describe_type(property_schema(("policy", "state"))) == "string or list of strings"
