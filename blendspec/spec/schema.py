"""JSON Schema of the YAML form, generated from the spec model so the two never drift apart."""

from __future__ import annotations

from typing import Any

from blendspec.spec.model import Spec

SCHEMA_ID = "urn:blendspec:spec:1"


def spec_json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(mode="validation", by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "blendspec spec (YAML form)",
    }
