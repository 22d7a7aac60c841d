"""`blend lsp` driven by a real LSP client over stdio: the server is spawned as `blend lsp
--stdio`, exactly as an editor starts it, and spoken to in JSON-RPC with Content-Length framing.

Also here: the position encodings, the formatter's edits, the editor files in editors/ (the
TextMate grammar's keywords against the Lark grammar's, the VS Code manifest, the shipped schema
copy) and that the server never imports torch.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from blendspec.lsp import analysis as an
from blendspec.lsp.protocol import Lines, apply_change, encode_message, read_message
from blendspec.spec import reference
from tests.conftest import REPO, SPECS

EDITORS = REPO / "editors" / "vscode"
TIMEOUT = 30


def _command() -> list[str]:
    executable = shutil.which("blend")
    return [executable] if executable else [sys.executable, "-m", "blendspec.cli"]


class Client:
    """A minimal LSP client: requests wait for their response, notifications are queued."""

    def __init__(self, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "BLENDSPEC_DEBUG"}
        self.process = subprocess.Popen(
            [*_command(), "lsp", "--stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.notifications: list[dict[str, Any]] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while True:
            message = read_message(self.process.stdout)
            self.inbox.put(message)
            if message is None:
                return

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(encode_message({"jsonrpc": "2.0", **message}))
        self.process.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: Any = None) -> dict[str, Any]:
        """The whole response message (result or error)."""
        self.next_id += 1
        request_id = self.next_id
        self.send({"id": request_id, "method": method, "params": params})
        while True:
            message = self._next()
            if message.get("id") == request_id and "method" not in message:
                return message
            self.notifications.append(message)

    def result(self, method: str, params: Any = None) -> Any:
        response = self.request(method, params)
        assert "error" not in response, response
        return response["result"]

    def diagnostics(self, uri: str, version: int) -> list[dict[str, Any]]:
        """The diagnostics published for that version of the document (waiting for them)."""
        while True:
            for message in self.notifications:
                params = message.get("params") or {}
                if (
                    message.get("method") == "textDocument/publishDiagnostics"
                    and params.get("uri") == uri
                    and params.get("version") == version
                ):
                    return params["diagnostics"]
            self.notifications.append(self._next())

    def _next(self) -> dict[str, Any]:
        message = self.inbox.get(timeout=TIMEOUT)
        assert message is not None, self._stderr()
        return message

    def _stderr(self) -> str:
        self.process.kill()
        assert self.process.stderr is not None
        return self.process.stderr.read().decode("utf-8", "replace")

    def close(self) -> int:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            return self.process.wait(timeout=TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def client(tmp_path: Path) -> Any:
    started = Client(tmp_path)
    yield started
    if started.process.poll() is None:
        started.process.kill()


def _initialize(client: Client, encodings: list[str] | None = None) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"textDocument": {"hover": {"contentFormat": ["markdown"]}}}
    if encodings is not None:
        capabilities["general"] = {"positionEncodings": encodings}
    result = client.result(
        "initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": capabilities}
    )
    client.notify("initialized", {})
    return result


def _validate_json(path: Path) -> list[dict[str, Any]]:
    """What `blend validate --format json` reports for one file."""
    done = subprocess.run(
        [*_command(), "validate", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(done.stdout)[0]["diagnostics"]


def _at(text: str, needle: str, nth: int = 0, offset: int = 0) -> dict[str, int]:
    """The LSP position (UTF-16) of the nth occurrence of `needle`, plus `offset` characters."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    return Lines(text).position_of(index + offset)


def _apply(text: str, edits: list[dict[str, Any]]) -> str:
    lines = Lines(text)
    spans = [(lines.offset(e["range"]["start"]), lines.offset(e["range"]["end"]), e) for e in edits]
    for start, end, edit in sorted(spans, key=lambda s: s[0], reverse=True):
        text = text[:start] + edit["newText"] + text[end:]
    return text


HOMEFEED = (SPECS / "homefeed.blend").read_text()
BROKEN = HOMEFEED.replace("objective click = p_click", "objective click = p_clik")


def test_a_session_over_stdio(client: Client, tmp_path: Path) -> None:
    """initialize → didOpen a broken spec → its diagnostic where `blend validate` puts it →
    hover, completion, definition, references, symbols, formatting → didChange fixing it →
    no diagnostics → shutdown → exit 0."""
    capabilities = _initialize(client, ["utf-16"])["capabilities"]
    assert capabilities["positionEncoding"] == "utf-16"
    for provider in ("hover", "definition", "references", "documentFormatting", "completion"):
        assert capabilities[f"{provider}Provider"]

    path = tmp_path / "feed.blend"
    path.write_text(BROKEN)
    uri = path.as_uri()
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "blend", "version": 1, "text": BROKEN}},
    )
    published = client.diagnostics(uri, 1)
    expected = _validate_json(path)
    # The typo, and the input it leaves unused: both, as `blend validate` reports them.
    assert [d["code"] for d in published] == [d["code"] for d in expected] == ["E200", "W001"]
    for sent, printed in zip(published, expected, strict=True):
        start, end = sent["range"]["start"], sent["range"]["end"]
        assert (start["line"] + 1, start["character"] + 1) == (printed["line"], printed["column"])
        assert (end["line"] + 1, end["character"] + 1) == (
            printed["end_line"],
            printed["end_column"],
        )
    assert published[1]["severity"] == 2 and published[1]["tags"] == [1]  # faded: unused
    diagnostic, cli = published[0], expected[0]
    typo = _at(BROKEN, "p_clik")
    assert diagnostic["range"] == {
        "start": typo,
        "end": {"line": typo["line"], "character": typo["character"] + len("p_clik")},
    }
    assert (cli["line"], cli["column"]) == (typo["line"] + 1, typo["character"] + 1)
    assert (cli["end_line"], cli["end_column"]) == (typo["line"] + 1, typo["character"] + 7)
    assert diagnostic["severity"] == 1 and diagnostic["source"] == "blend"
    assert diagnostic["message"].startswith(cli["message"])
    assert "did you mean `p_click`?" in diagnostic["message"]

    def hover(needle: str, nth: int = 0, offset: int = 1) -> str:
        at = _at(BROKEN, needle, nth, offset)
        result = client.result("textDocument/hover", {"textDocument": {"uri": uri}, "position": at})
        assert result is not None, needle
        assert result["contents"]["kind"] == "markdown"
        return result["contents"]["value"]

    # An input (type, line, the docs sentence), a weight, an objective, operator parameters.
    visual = hover("visual", 1)
    assert "`visual`: `embedding[256]`" in visual and "line 11" in visual
    assert reference.input_type_doc("embedding")[1:20] in visual
    w_hide = hover("w_hide", 1)
    assert "= -4 in [-20, 0] {sign = negative}" in w_hide and "line 28" in w_hide
    save = hover("* save", 0, 3)  # in the utility
    assert "**objective** `save` = `log1p(p_save)`" in save and "line 21" in save
    theta = hover("theta")
    assert "**theta** (ssd): number in [0, 1], default 0.5" in theta
    assert reference.describe(("diversity", "theta"), "ssd")[1:30] in theta
    assert "coverage gain" not in theta  # cover's theta sentence is scoped away
    coefficient = hover("min_prefix")
    assert "integer in [1, 65536], default 1" in coefficient
    assert "log(1 + x)" in hover("log1p")

    # Completion of declared names (in the utility) and of a block's fields.
    line = BROKEN.split("\n").index(
        "utility = w_click * click + w_save * save + w_longclick * longclick + w_hide * hide"
    )
    items = client.result(
        "textDocument/completion",
        {"textDocument": {"uri": uri}, "position": {"line": line, "character": 10}},
    )["items"]
    labels = {item["label"] for item in items}
    assert {"w_click", "click", "p_save", "log1p"} <= labels
    assert "visual" not in labels  # an embedding is no utility operand
    items = client.result(
        "textDocument/completion",
        {"textDocument": {"uri": uri}, "position": _at(BROKEN, "  theta", 0, 2)},
    )["items"]
    assert [i["label"] for i in items][:3] == ["similarity", "theta", "gamma"]
    assert items[1]["insertText"] == "theta = "

    # Signature help inside a transform's parentheses: the parameter at the cursor.
    helped = client.result(
        "textDocument/signatureHelp",
        {"textDocument": {"uri": uri}, "position": _at(BROKEN, "clip(p_longclick, 0", 0, 19)},
    )
    (signature,) = helped["signatures"]
    assert signature["label"] == "clip(x, lo, hi)" and helped["activeParameter"] == 1
    start, end = signature["parameters"][1]["label"]
    assert signature["label"][start:end] == "lo"

    # Go to definition and find references.
    definition = client.result(
        "textDocument/definition",
        {"textDocument": {"uri": uri}, "position": _at(BROKEN, "quality_risk", 1, 2)},
    )
    declared = _at(BROKEN, "quality_risk")
    assert definition["uri"] == uri and definition["range"]["start"] == declared
    uses = client.result(
        "textDocument/references",
        {
            "textDocument": {"uri": uri},
            "position": declared,
            "context": {"includeDeclaration": True},
        },
    )
    assert len(uses) == 2  # `input quality_risk` and `spacing quality_risk`
    target = {"textDocument": {"uri": uri}, "position": _at(BROKEN, "quality_risk", 1, 2)}
    prepared = client.result("textDocument/prepareRename", target)
    assert prepared["placeholder"] == "quality_risk"
    renamed = client.result("textDocument/rename", {**target, "newName": "risky"})
    assert sorted(e["range"]["start"]["line"] for e in renamed["changes"][uri]) == sorted(
        u["range"]["start"]["line"] for u in uses
    )
    taken = client.request("textDocument/rename", {**target, "newName": "blocked"})
    assert taken["error"]["code"] == -32803 and "already declared" in taken["error"]["message"]
    symbols = client.result("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    assert {"p_click", "w_hide", "click", "diversity"} <= {s["name"] for s in symbols}

    # Formatting: a spec with semantic errors still formats, to what `blend fmt` writes.
    messy = BROKEN.replace("slate 50", "slate   50").replace("theta = 0.7", "theta=0.70")
    client.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": messy}]},
    )
    edits = client.result(
        "textDocument/formatting",
        {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}},
    )
    assert 0 < len(edits) < 4  # the two lines, not the whole document
    assert _apply(messy, edits) == BROKEN
    formatted = tmp_path / "formatted.blend"
    formatted.write_text(messy)
    subprocess.run([*_command(), "fmt", str(formatted)], check=True, capture_output=True)
    assert _apply(messy, edits) == formatted.read_text()

    # An incremental change that fixes the typo clears the diagnostics.
    client.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 3},
            "contentChanges": [
                {
                    "range": {
                        "start": _at(messy, "p_clik", 0, 5),
                        "end": _at(messy, "p_clik", 0, 5),
                    },
                    "text": "c",
                }
            ],
        },
    )
    assert client.diagnostics(uri, 3) == []

    # A value out of range (a model error, not only a semantic one) formats too; text that does
    # not parse is left alone (no edits).
    invalid = HOMEFEED.replace("theta = 0.7", "theta=2.50").replace("slate 50", "slate  50")
    other = tmp_path / "invalid.blend"
    other.write_text(invalid)
    for version, text in ((1, invalid), (2, invalid + "\nweight = \n")):
        change = {"textDocument": {"uri": other.as_uri(), "version": version}}
        if version == 1:
            client.notify(
                "textDocument/didOpen",
                {"textDocument": {**change["textDocument"], "languageId": "blend", "text": text}},
            )
        else:
            client.notify("textDocument/didChange", {**change, "contentChanges": [{"text": text}]})
        edits = client.result("textDocument/formatting", {"textDocument": {"uri": other.as_uri()}})
        if version == 1:
            subprocess.run([*_command(), "fmt", str(other)], capture_output=True, check=False)
            assert "theta = 2.5" in other.read_text()
            assert _apply(invalid, edits) == other.read_text()
        else:
            assert edits is None

    assert client.result("shutdown") is None
    client.notify("exit", None)
    assert client.close() == 0


def test_yaml_specs_and_utf16_positions(client: Client, tmp_path: Path) -> None:
    """A YAML spec: a wrong SSD parameter gets E100 at the parameter. A name after non-ASCII text
    on its line is placed in UTF-16 code units (the emoji counts two), where `blend validate`
    counts code points. The server picks UTF-32 when the client offers it."""
    assert _initialize(client, ["utf-16"])["capabilities"]["positionEncoding"] == "utf-16"
    yaml_text = (SPECS / "homefeed.yaml").read_text().replace("theta: 0.7", "theta: 1.5")
    path = tmp_path / "feed.yaml"
    path.write_text(yaml_text)
    uri = path.as_uri()
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "yaml", "version": 7, "text": yaml_text}},
    )
    (published,) = client.diagnostics(uri, 7)
    (expected,) = _validate_json(path)
    assert published["code"] == expected["code"] == "E100" and "theta" in published["message"]
    assert published["range"]["start"] == _at(yaml_text, "1.5")

    dsl = HOMEFEED + '\npolicy {file = "\u00e9\U0001f600.pt", state = [nope]}\n'
    path = tmp_path / "policy.blend"
    path.write_text(dsl)
    uri = path.as_uri()
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "blend", "version": 1, "text": dsl}},
    )
    published = client.diagnostics(uri, 1)
    expected = _validate_json(path)
    last = dsl.count("\n")  # the policy's line, 1-based
    (printed,) = [d for d in expected if d["line"] == last and "nope" in d["message"]]
    (sent,) = [d for d in published if d["code"] == printed["code"] and "nope" in d["message"]]
    row = dsl.split("\n")[last - 1]
    assert printed["column"] == row.index("nope") + 1  # code points
    assert sent["range"]["start"] == {"line": last - 1, "character": row.index("nope") + 1}
    assert client.result("shutdown") is None
    client.notify("exit", None)
    assert client.close() == 0

    other = Client(tmp_path)
    try:
        assert _initialize(other, ["utf-8", "utf-32"])["capabilities"]["positionEncoding"] == (
            "utf-32"
        )
        other.notify("exit", None)  # without shutdown: exit code 1, as the protocol says
        assert other.close() == 1
    finally:
        if other.process.poll() is None:
            other.process.kill()


def test_protocol_errors_are_answers(client: Client) -> None:
    early = client.request("textDocument/hover", {})
    assert early["error"]["code"] == -32002  # not initialised yet
    _initialize(client)
    unknown = client.request("textDocument/semanticTokens/full", {"textDocument": {"uri": "x"}})
    assert unknown["error"]["code"] == -32601
    # A request about a document never opened, and one with broken parameters: answers, no crash.
    assert client.result(
        "textDocument/hover",
        {"textDocument": {"uri": "file:///nope.blend"}, "position": {"line": 0, "character": 0}},
    ) is None  # fmt: skip
    assert client.request("textDocument/hover", {"position": 3})["error"]["code"] == -32603
    client.send({"id": 99, "method": "shutdown"})
    client.notify("exit", None)
    assert client.close() == 0


# ---------------------------------------------------------------- in-process pieces


def test_positions_in_every_encoding() -> None:
    text = "a\U0001f600b\r\nz"
    for encoding, character in (("utf-16", 3), ("utf-32", 2), ("utf-8", 5)):
        lines = Lines(text, encoding)
        assert lines.position(0, 2) == {"line": 0, "character": character}
        assert lines.offset({"line": 0, "character": character}) == 2
        assert lines.offset({"line": 1, "character": 1}) == len(text)
    change = {"range": {"start": {"line": 0, "character": 3}, "end": {"line": 1, "character": 0}}}
    assert apply_change(text, {**change, "text": "-"}, "utf-16") == "a\U0001f600-z"
    assert Lines("one\ntwo\n").end() == {"line": 2, "character": 0}


def test_hover_and_definition_in_yaml() -> None:
    text = (SPECS / "ads.yaml").read_text()
    result = an.analyse(text, "yaml")
    assert result.diagnostics == ()
    lines = text.split("\n")
    for number, row in enumerate(lines, start=1):
        if row.strip().startswith("state:"):
            column = row.index("[") + 2
            found = an.hover(result, number, column)
            assert found is not None and "features" in found.markdown
            declared = an.definition(result, number, column)
            assert declared is not None and lines[declared.line - 1].strip().startswith(
                lines[number - 1][column - 1 : found.span.end_column - 1]
            )
            break
    else:
        pytest.fail("ads.yaml has no policy state")


def test_completion_in_broken_text() -> None:
    """Mid-edit text does not parse; names and contexts still complete."""
    text = HOMEFEED + "\nobjective fresh = \n"
    result = an.analyse(text, "dsl")
    assert result.document is None and result.diagnostics[0].code == "E001"
    line = text.count("\n")
    labels = [c.label for c in an.completion(result, line, len("objective fresh = ") + 1)]
    assert labels[:4] == ["p_click", "p_save", "p_longclick", "p_hide"] and "log1p" in labels
    assert "w_click" not in labels  # an objective reads score inputs only
    types = an.completion(an.analyse("input x: ", "dsl"), 1, 10)
    assert [c.label for c in types][:2] == ["score", "embedding[D]"]
    kinds = an.completion(an.analyse("policy {\n  exploration = {kind = ", "dsl"), 2, 25)
    assert [c.label for c in kinds] == ["none", "uniform", "epsilon", "softmax"]


@pytest.mark.parametrize("name", ["ads.blend", "ads.yaml"])
def test_no_position_and_no_half_typed_text_breaks_the_analysis(name: str) -> None:
    """Every position of a spec, and the spec cut short every few characters (as it is while
    being typed): hover, definition, references and completion answer without raising."""
    text = (SPECS / name).read_text()
    syntax = "yaml" if name.endswith(".yaml") else "dsl"
    result = an.analyse(text, syntax)  # type: ignore[arg-type]
    answered = 0
    for number, row in enumerate(text.split("\n"), start=1):
        for column in range(1, len(row) + 2):
            answered += an.hover(result, number, column) is not None
            an.definition(result, number, column)
            if column % 3 == 0:
                an.references(result, number, column)
                an.completion(result, number, column)
    assert answered > 100
    for cut in range(0, len(text), 11):
        partial = an.analyse(text[:cut], syntax)  # type: ignore[arg-type]
        lines = text[:cut].split("\n")
        an.completion(partial, len(lines), len(lines[-1]) + 1)
        an.hover(partial, len(lines), max(len(lines[-1]), 1))


@pytest.mark.parametrize("name", ["homefeed.blend", "ads.yaml", "discovery.yaml"])
def test_renaming_any_declared_name_keeps_the_spec_valid(name: str) -> None:
    """Each declared name renamed at its declaration: the declaration and every use change
    (formulas, spacing and caps, filters, the penalty's input, the policy's state and reward),
    and the renamed spec checks exactly as before."""
    text = (SPECS / name).read_text()
    syntax = "yaml" if name.endswith(".yaml") else "dsl"
    before = an.analyse(text, syntax)  # type: ignore[arg-type]
    assert before.declarations
    for (_namespace, old), declared in before.declarations.items():
        spans = an.rename(before, declared.span.line, declared.span.column, f"{old}_2")
        rows = text.split("\n")
        for span in sorted(spans, reverse=True):
            row = rows[span.line - 1]
            assert row[span.column - 1 : span.end_column - 1] == old
            rows[span.line - 1] = row[: span.column - 1] + f"{old}_2" + row[span.end_column - 1 :]
        after = an.analyse("\n".join(rows), syntax)  # type: ignore[arg-type]
        assert [d.code for d in after.diagnostics] == [d.code for d in before.diagnostics], old
        uses = an.references(after, declared.span.line, declared.span.column)
        assert len(uses) == len(spans) >= 1, old
    first = next(iter(before.declarations.values())).span
    with pytest.raises(an.RenameError, match="not a valid name"):
        an.rename(before, first.line, first.column, "9x")


def test_a_yaml_file_that_is_no_spec_gets_no_diagnostics() -> None:
    assert list(an.iter_diagnostics(an.analyse("jobs:\n  build: {}\n", "yaml"))) == []
    assert list(an.iter_diagnostics(an.analyse("Resources: !Ref Bucket\n", "yaml"))) == []
    assert list(an.iter_diagnostics(an.analyse("inputs: {}\n", "yaml")))
    assert list(an.iter_diagnostics(an.analyse("inputs: {p: score\n", "yaml")))  # mid-edit


def test_the_server_never_imports_torch(tmp_path: Path) -> None:
    """A whole session in a fresh interpreter (hover, completion, formatting included) leaves
    torch and the operators unimported: the server starts in a fraction of a second."""
    messages = [
        {"id": 1, "method": "initialize", "params": {"capabilities": {}}},
        {
            "method": "textDocument/didOpen",
            "params": {
                "textDocument": {"uri": "file:///x.blend", "version": 1, "text": BROKEN}
            },
        },
        {
            "id": 2,
            "method": "textDocument/hover",
            "params": {
                "textDocument": {"uri": "file:///x.blend"},
                "position": _at(BROKEN, "ssd {"),
            },
        },
        {
            "id": 3,
            "method": "textDocument/completion",
            "params": {
                "textDocument": {"uri": "file:///x.blend"},
                "position": {"line": 0, "character": 0},
            },
        },
        {"id": 4, "method": "textDocument/formatting", "params": {"textDocument": {"uri": "file:///x.blend"}}},
        {"id": 5, "method": "shutdown"},
        {"method": "exit"},
    ]  # fmt: skip
    stream = b"".join(encode_message({"jsonrpc": "2.0", **m}) for m in messages)
    probe = (
        "import io, json, sys\n"
        "from blendspec.lsp.server import serve\n"
        "out = io.BytesIO()\n"
        "code = serve(io.BytesIO(sys.stdin.buffer.read()), out)\n"
        "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith('blendspec.ops'))\n"
        "sys.stderr.write(json.dumps({'code': code, 'heavy': heavy, 'bytes': len(out.getvalue())}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        input=stream,
        capture_output=True,
        timeout=120,
        env={**os.environ, "BLENDSPEC_CACHE": str(tmp_path / "cache")},
    )
    report = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert report["code"] == 0 and report["bytes"] > 1000
    assert report["heavy"] == []


# ---------------------------------------------------------------- editor files


def _grammar() -> dict[str, Any]:
    return json.loads((EDITORS / "syntaxes" / "blend.tmLanguage.json").read_text())


def _words(pattern: str) -> set[str]:
    """The identifiers of every `(a|b|c)` alternation of a regex."""
    words: set[str] = set()
    for group in re.findall(r"\(((?:[a-z_0-9]+\|)*[a-z_0-9]+)\)", pattern):
        words.update(group.split("|"))
    return words


def test_the_textmate_keywords_are_the_grammars() -> None:
    """The highlighter's keyword list is the Lark grammar's: a keyword added to
    grammar/blendspec.lark fails here until editors/vscode learns it."""
    lark_keywords = set(an.keywords())
    repository = _grammar()["repository"]
    highlighted = set()
    for rule in repository["keywords"]["patterns"]:
        highlighted |= _words(rule["match"])
    assert highlighted == lark_keywords
    for rule in repository["declaration"]["patterns"]:  # the keywords it names exist
        keyword = _words(rule["match"].split(r"\s+")[0])
        assert keyword <= lark_keywords, keyword


def test_the_textmate_grammar_reads_a_spec() -> None:
    """Its regexes (the Oniguruma subset Python's `re` reads) find what they mean to: a statement
    keyword, not a keyword used as a name; the transforms and signals the spec layer knows."""
    from blendspec.spec.expr import SIGNALS, TRANSFORMS

    repository = _grammar()["repository"]
    statement, word_in = (re.compile(r["match"]) for r in repository["keywords"]["patterns"])
    assert statement.search("utility = w * p") and statement.search("input p: score")
    assert not statement.search("input reward: score".replace("input ", ""))
    assert word_in.search("weight w = 1 in [0, 5]") and not word_in.search("input in: score")
    functions = next(
        r for r in repository["expression"]["patterns"] if "support.function" in json.dumps(r)
    )
    assert _words(functions["match"]) == set(SIGNALS) | set(TRANSFORMS)
    declaration = re.compile(repository["declaration"]["patterns"][0]["match"])
    match = declaration.search("input visual: embedding[256]")
    assert match is not None and match.group(2) == "visual" and match.group(4) == "embedding"
    for rule in _all_rules(_grammar()):
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])


def _all_rules(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if any(k in node for k in ("match", "begin")):
            found.append(node)
        for value in node.values():
            found += _all_rules(value)
    elif isinstance(node, list):
        for value in node:
            found += _all_rules(value)
    return found


def test_the_vscode_manifest() -> None:
    manifest = json.loads((EDITORS / "package.json").read_text())
    (language,) = manifest["contributes"]["languages"]
    assert language["id"] == "blend" and ".blend" in language["extensions"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert grammar["scopeName"] == _grammar()["scopeName"]
    assert (EDITORS / grammar["path"]).is_file()
    assert (EDITORS / language["configuration"]).is_file()
    assert manifest["contributes"]["configuration"]["properties"]["blendspec.server.command"][
        "default"
    ] == ["blend", "lsp"]
    assert "vscode-languageclient" in manifest["dependencies"]
    extension = (EDITORS / manifest["main"]).read_text()
    assert "LanguageClient" in extension and "TransportKind.stdio" in extension
    (validation,) = manifest["contributes"]["yamlValidation"]
    assert (EDITORS / validation["url"]).is_file()


def test_the_shipped_schema_copy_is_current() -> None:
    """editors/vscode/schemas/ holds `blend schema`'s output for the YAML extension; regenerate
    with `blend schema > editors/vscode/schemas/blendspec.schema.json`."""
    from blendspec.spec.schema import spec_json_schema

    copy = json.loads((EDITORS / "schemas" / "blendspec.schema.json").read_text())
    assert copy == spec_json_schema()
