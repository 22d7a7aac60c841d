"""`blend lsp`: the language server loop over stdin/stdout.

Written against the protocol by hand (JSON-RPC framing in `protocol.py`) rather than on pygls:
the server needs a dozen methods, all answered from the spec layer `blend validate` already
loads, and this keeps the installed package at its dependencies (pygls would add pygls,
lsprotocol, cattrs and attrs, and their start-up) and free of a framework's API churn (pygls
1 → 2 renamed most of it).

One thread reads messages into a queue; the main thread answers them in order and, when the
queue is momentarily empty, publishes diagnostics for the documents that changed — so a burst
of keystrokes is checked once, for its last version. Nothing is written to stdout but protocol
messages: `sys.stdout` is pointed at stderr while the server runs.
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import unquote, urlparse

from blendspec.lsp import analysis as an
from blendspec.lsp.protocol import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REQUEST_FAILED,
    SERVER_NOT_INITIALIZED,
    Lines,
    ProtocolError,
    apply_change,
    choose_encoding,
    read_message,
    write_message,
)
from blendspec.spec.diagnostics import Diagnostic, Span
from blendspec.spec.syntax import Syntax, syntax_of

SOURCE = "blend"
UNNECESSARY = frozenset({"W001", "W003"})
"""Warnings about declarations nothing uses (an input, an objective or a weight)."""


@dataclass
class OpenDocument:
    uri: str
    text: str
    version: int | None
    syntax: Syntax
    path: Path | None


def uri_to_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = unquote(parsed.path)
    if sys.platform == "win32" and path.startswith("/") and path[2:3] == ":":
        path = path[1:]
    return Path(path)


def path_to_uri(path: Path) -> str:
    return path.resolve().as_uri()


def syntax_for(uri: str, language_id: str | None) -> Syntax:
    if language_id == "yaml":
        return "yaml"
    if language_id == "blend":
        return "dsl"
    path = uri_to_path(uri)
    return syntax_of(path if path is not None else Path(urlparse(uri).path)) or "dsl"


class Server:
    def __init__(self, output: BinaryIO) -> None:
        self.output = output
        self.documents: dict[str, OpenDocument] = {}
        self.analyses: dict[str, tuple[int | None, str, an.Analysis]] = {}
        self.last_parsed: dict[str, dict[tuple[str, str], an.Declaration]] = {}
        self.dirty: set[str] = set()
        self.encoding = "utf-16"
        self.initialized = False
        self.shutting_down = False
        self.lock = threading.Lock()

    # ------------------------------------------------------------ messages out

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            write_message(self.output, {"jsonrpc": "2.0", **message})

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def log(self, message: str, kind: int = 3) -> None:
        self.notify("window/logMessage", {"type": kind, "message": message})

    # ------------------------------------------------------------ dispatch

    def handle(self, message: dict[str, Any]) -> bool:
        """Answer one message; False once `exit` arrives."""
        if "_unparsable" in message:
            self.send({"id": None, "error": {"code": PARSE_ERROR, "message": "not JSON"}})
            return True
        method = message.get("method")
        has_id = "id" in message
        if method is None:
            return True  # a response to something we never ask
        if method == "exit":
            return False
        if has_id:
            self._request(message["id"], str(method), message.get("params") or {})
        else:
            self._notification(str(method), message.get("params") or {})
        return True

    def _request(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        if method == "initialize":
            self.send({"id": request_id, "result": self.initialize(params)})
            return
        if not self.initialized:
            self._error(request_id, SERVER_NOT_INITIALIZED, "initialize first")
            return
        if method == "shutdown":
            self.shutting_down = True
            self.send({"id": request_id, "result": None})
            return
        if self.shutting_down:
            self._error(request_id, INVALID_REQUEST, "the server is shutting down")
            return
        handler = self.REQUESTS.get(method)
        if handler is None:
            self._error(request_id, METHOD_NOT_FOUND, f"{method} is not supported")
            return
        try:
            result = handler(self, params)
        except an.RenameError as error:  # a refusal the user reads, not a failure
            self._error(request_id, REQUEST_FAILED, error.message)
            return
        except Exception as error:  # an answer, never a dead server
            self.log(f"{method} failed: {error}\n{traceback.format_exc()}", 1)
            self._error(request_id, INTERNAL_ERROR, f"{type(error).__name__}: {error}")
            return
        self.send({"id": request_id, "result": result})

    def _error(self, request_id: Any, code: int, message: str) -> None:
        self.send({"id": request_id, "error": {"code": code, "message": message}})

    def _notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "initialized":
            return
        handler = self.NOTIFICATIONS.get(method)
        if handler is None or not self.initialized:
            return  # $/cancelRequest, $/setTrace, …: nothing to do
        try:
            handler(self, params)
        except Exception as error:
            self.log(f"{method} failed: {error}\n{traceback.format_exc()}", 1)

    # ------------------------------------------------------------ lifecycle

    def initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        from blendspec import __version__

        self.encoding = choose_encoding(params.get("capabilities") or {})
        self.initialized = True
        return {
            "capabilities": {
                "positionEncoding": self.encoding,
                "textDocumentSync": {
                    "openClose": True,
                    "change": 2,  # incremental
                    "save": {"includeText": False},
                },
                "hoverProvider": True,
                "completionProvider": {
                    "triggerCharacters": ["(", "{", ",", "[", ":", "="],
                    "resolveProvider": False,
                },
                "definitionProvider": True,
                "referencesProvider": True,
                "documentFormattingProvider": True,
                "documentSymbolProvider": True,
                "renameProvider": {"prepareProvider": True},
                "signatureHelpProvider": {"triggerCharacters": ["(", ","]},
            },
            "serverInfo": {"name": "blend lsp", "version": __version__},
        }

    # ------------------------------------------------------------ documents

    def did_open(self, params: dict[str, Any]) -> None:
        item = params["textDocument"]
        uri = item["uri"]
        self.documents[uri] = OpenDocument(
            uri,
            item.get("text", ""),
            item.get("version"),
            syntax_for(uri, item.get("languageId")),
            uri_to_path(uri),
        )
        self.dirty.add(uri)

    def did_change(self, params: dict[str, Any]) -> None:
        item = params["textDocument"]
        document = self.documents.get(item["uri"])
        if document is None:
            return
        for change in params.get("contentChanges", []):
            document.text = apply_change(document.text, change, self.encoding)
        document.version = item.get("version", document.version)
        self.dirty.add(document.uri)

    def did_save(self, params: dict[str, Any]) -> None:
        uri = params["textDocument"]["uri"]
        if uri in self.documents:
            self.analyses.pop(uri, None)  # a referenced file (policy `file`) may now exist
            self.dirty.add(uri)

    def did_close(self, params: dict[str, Any]) -> None:
        uri = params["textDocument"]["uri"]
        self.documents.pop(uri, None)
        self.analyses.pop(uri, None)
        self.last_parsed.pop(uri, None)
        self.dirty.discard(uri)
        self.notify("textDocument/publishDiagnostics", {"uri": uri, "diagnostics": []})

    def analysis(self, uri: str) -> an.Analysis | None:
        document = self.documents.get(uri)
        if document is None:
            return None
        cached = self.analyses.get(uri)
        if cached is not None and cached[0] == document.version and cached[1] == document.text:
            return cached[2]
        result = an.analyse(document.text, document.syntax, document.path, name=uri)
        self.analyses[uri] = (document.version, document.text, result)
        if result.document is not None:
            self.last_parsed[uri] = result.declarations
        return result

    def publish(self, uri: str) -> None:
        result = self.analysis(uri)
        document = self.documents.get(uri)
        if result is None or document is None:
            return
        lines = Lines(document.text, self.encoding)
        diagnostics = [self._diagnostic(d, lines, result) for d in an.iter_diagnostics(result)]
        self.notify(
            "textDocument/publishDiagnostics",
            {"uri": uri, "version": document.version, "diagnostics": diagnostics},
        )

    def flush(self) -> None:
        for uri in sorted(self.dirty):
            self.publish(uri)
        self.dirty.clear()

    # ------------------------------------------------------------ positions

    def _range(self, span: Span, lines: Lines, result: an.Analysis) -> dict[str, Any]:
        shift = 1 if result.bom else 0
        start_column = span.column - 1 + (shift if span.line == 1 else 0)
        end_column = span.end_column - 1 + (shift if span.end_line == 1 else 0)
        return {
            "start": lines.position(span.line - 1, start_column),
            "end": lines.position(span.end_line - 1, end_column),
        }

    def _cursor(self, params: dict[str, Any]) -> tuple[an.Analysis, Lines, int, int] | None:
        uri = params["textDocument"]["uri"]
        result = self.analysis(uri)
        document = self.documents.get(uri)
        if result is None or document is None:
            return None
        lines = Lines(document.text, self.encoding)
        position = params["position"]
        line = int(position["line"])
        column = lines.column(lines.line(line), int(position["character"]))
        if result.bom and line == 0:
            column = max(column - 1, 0)
        return result, lines, line + 1, column + 1

    def _diagnostic(self, d: Diagnostic, lines: Lines, result: an.Analysis) -> dict[str, Any]:
        span = d.span or Span(1, 1, 1, 1)
        message = d.message
        for note in d.notes:
            message += f"\nnote: {note}"
        if d.help:
            message += f"\nhelp: {d.help}"
        found: dict[str, Any] = {
            "range": self._range(span, lines, result),
            "severity": 1 if d.is_error else 2,
            "code": d.code,
            "source": SOURCE,
            "message": message,
        }
        if d.code in UNNECESSARY:
            found["tags"] = [1]  # DiagnosticTag.Unnecessary: editors fade the unused declaration
        return found

    def _location(self, uri: str, span: Span, lines: Lines, result: an.Analysis) -> dict[str, Any]:
        return {"uri": uri, "range": self._range(span, lines, result)}

    # ------------------------------------------------------------ features

    def hover(self, params: dict[str, Any]) -> dict[str, Any] | None:
        cursor = self._cursor(params)
        if cursor is None:
            return None
        result, lines, line, column = cursor
        found = an.hover(result, line, column)
        if found is None:
            return None
        return {
            "contents": {"kind": "markdown", "value": found.markdown},
            "range": self._range(found.span, lines, result),
        }

    def definition(self, params: dict[str, Any]) -> dict[str, Any] | None:
        cursor = self._cursor(params)
        if cursor is None:
            return None
        result, lines, line, column = cursor
        span = an.definition(result, line, column)
        if span is None:
            return None
        return self._location(params["textDocument"]["uri"], span, lines, result)

    def references(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        cursor = self._cursor(params)
        if cursor is None:
            return []
        result, lines, line, column = cursor
        include = bool((params.get("context") or {}).get("includeDeclaration", True))
        uri = params["textDocument"]["uri"]
        return [
            self._location(uri, span, lines, result)
            for span in an.references(result, line, column, include)
        ]

    def prepare_rename(self, params: dict[str, Any]) -> dict[str, Any] | None:
        cursor = self._cursor(params)
        if cursor is None:
            return None
        result, lines, line, column = cursor
        named, span = an.rename_target(result, line, column)
        return {"range": self._range(span, lines, result), "placeholder": named[1]}

    def rename(self, params: dict[str, Any]) -> dict[str, Any] | None:
        cursor = self._cursor(params)
        if cursor is None:
            return None
        result, lines, line, column = cursor
        new_name = str(params.get("newName", ""))
        uri = params["textDocument"]["uri"]
        spans = an.rename(result, line, column, new_name)
        edits = [{"range": self._range(s, lines, result), "newText": new_name} for s in spans]
        return {"changes": {uri: edits}}

    def signature_help(self, params: dict[str, Any]) -> dict[str, Any] | None:
        cursor = self._cursor(params)
        if cursor is None:
            return None
        result, _lines, line, column = cursor
        found = an.signature(result.text, line, column)
        if found is None:
            return None
        label, parameters, active, doc = found
        return {
            "signatures": [
                {
                    "label": label,
                    "documentation": {"kind": "markdown", "value": doc},
                    "parameters": [{"label": [start, end]} for start, end in parameters],
                }
            ],
            "activeSignature": 0,
            "activeParameter": min(active, max(len(parameters) - 1, 0)),
        }

    _KINDS: ClassVar[dict[str, int]] = {  # CompletionItemKind
        "keyword": 14,
        "field": 5,
        "value": 20,
        "function": 3,
        "input": 6,
        "objective": 21,
        "weight": 21,
        "outcome": 6,
        "reward": 21,
        "type": 25,
    }

    def completion(self, params: dict[str, Any]) -> dict[str, Any]:
        cursor = self._cursor(params)
        if cursor is None:
            return {"isIncomplete": False, "items": []}
        result, _lines, line, column = cursor
        uri = params["textDocument"]["uri"]
        items = []
        for index, item in enumerate(
            an.completion(result, line, column, self.last_parsed.get(uri))
        ):
            entry: dict[str, Any] = {
                "label": item.label,
                "kind": self._KINDS.get(item.kind, 1),
                "sortText": f"{index:04d}",
            }
            if item.detail:
                entry["detail"] = item.detail
            if item.documentation:
                entry["documentation"] = {"kind": "markdown", "value": item.documentation}
            if item.insert is not None and item.insert != item.label:
                entry["insertText"] = item.insert
            items.append(entry)
        return {"isIncomplete": False, "items": items}

    def formatting(self, params: dict[str, Any]) -> list[dict[str, Any]] | None:
        uri = params["textDocument"]["uri"]
        document = self.documents.get(uri)
        if document is None:
            return None
        text = document.text[1:] if document.text.startswith("\ufeff") else document.text
        formatted = an.format_text(text, document.syntax, uri)
        if formatted is None:
            self.log(f"{uri}: not formatted: the spec does not parse (see its diagnostics)", 3)
            return None
        return text_edits(document.text, formatted, self.encoding)

    def document_symbols(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        uri = params["textDocument"]["uri"]
        result = self.analysis(uri)
        document = self.documents.get(uri)
        if result is None or document is None:
            return []
        lines = Lines(document.text, self.encoding)
        kinds = {"inputs": 8, "objectives": 12, "weights": 14, "outcomes": 8, "rewards": 12}
        found = []
        for name, section, detail, span in an.symbols(result):
            where = self._range(span, lines, result)
            found.append(
                {
                    "name": name,
                    "detail": detail,
                    "kind": kinds.get(section, 19),  # 19: Object (a section)
                    "range": where,
                    "selectionRange": where,
                }
            )
        return found

    REQUESTS: ClassVar[dict[str, Callable[[Server, dict[str, Any]], Any]]] = {
        "textDocument/hover": hover,
        "textDocument/definition": definition,
        "textDocument/references": references,
        "textDocument/completion": completion,
        "textDocument/formatting": formatting,
        "textDocument/documentSymbol": document_symbols,
        "textDocument/signatureHelp": signature_help,
        "textDocument/prepareRename": prepare_rename,
        "textDocument/rename": rename,
    }
    NOTIFICATIONS: ClassVar[dict[str, Callable[[Server, dict[str, Any]], None]]] = {
        "textDocument/didOpen": did_open,
        "textDocument/didChange": did_change,
        "textDocument/didSave": did_save,
        "textDocument/didClose": did_close,
    }


def text_edits(old: str, new: str, encoding: str) -> list[dict[str, Any]]:
    """The formatted text as edits of whole lines where the two differ (not one replacement of
    the document: the editor keeps the cursor and folds of the lines that did not change)."""
    import difflib

    if old == new:
        return []
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    starts = [0]
    for piece in old_lines:
        starts.append(starts[-1] + len(piece))
    lines = Lines(old, encoding)
    edits = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        edits.append(
            {
                "range": {
                    "start": lines.position_of(starts[i1]),
                    "end": lines.position_of(starts[i2]),
                },
                "newText": "".join(new_lines[j1:j2]),
            }
        )
    return edits


def serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Run until `exit`: 0 after a `shutdown`, 1 without one (as the protocol asks)."""
    server = Server(stdout)
    inbox: queue.Queue[dict[str, Any] | ProtocolError | None] = queue.Queue()

    def read() -> None:
        try:
            while True:
                message = read_message(stdin)
                inbox.put(message)
                if message is None:
                    return
        except ProtocolError as error:
            inbox.put(error)
        except Exception as error:
            inbox.put(ProtocolError(str(error)))

    threading.Thread(target=read, name="blend-lsp-reader", daemon=True).start()
    saved = sys.stdout
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol stream
    try:
        while True:
            message = inbox.get()
            while True:
                if message is None:
                    return 0 if server.shutting_down else 1
                if isinstance(message, ProtocolError):
                    print(f"blend lsp: {message}", file=sys.stderr)
                    return 1
                if not server.handle(message):
                    return 0 if server.shutting_down else 1
                try:
                    message = inbox.get_nowait()
                except queue.Empty:
                    break
            server.flush()
    finally:
        sys.stdout = saved
