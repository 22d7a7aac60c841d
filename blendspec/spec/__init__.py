"""The spec layer: spec text in, a checked, typed spec out — and back to canonical text.

``diagnostics`` (source spans, errors with help), ``syntax`` (the DSL via the Lark grammar and the
YAML front end, into one document with spans), ``model`` (the typed pydantic spec), ``forms``
(linear forms and expression helpers), ``checks`` (the semantic passes), ``loader`` (text →
``LoadedSpec``), ``emit`` and ``comments`` (canonical DSL/YAML with comments kept), ``schema``
(JSON Schema of the YAML form).

Nothing here imports torch or the operators (tests/test_layers.py): `blend validate`, `fmt`,
`schema` and `graph` run on this layer alone.
"""
