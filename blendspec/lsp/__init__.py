"""`blend lsp`: a language server for `.blend` and spec YAML files (docs/editors.md).

``protocol`` (JSON-RPC framing over stdio, position encodings), ``analysis`` (diagnostics,
hover, definition, references, completion, symbols and formatting for one spec text, all from
the spec layer) and ``server`` (the message loop). Like the spec commands, nothing here imports
torch or the operators.
"""
