"""The Language Server Protocol's wire format, and its positions.

JSON-RPC 2.0 messages framed by a `Content-Length` header, over a byte stream (stdin/stdout).
Positions are a line and a character offset counted in the code units of the encoding agreed at
`initialize`: UTF-16 unless the client offers `utf-32` (code points, what Python strings and the
spec's spans count) or `utf-8`. A spec with `é` or an emoji in a comment or string must still
get its carets in the right place, so every position crosses :class:`Lines`.
"""

from __future__ import annotations

import bisect
import functools
import json
from dataclasses import dataclass
from typing import Any, BinaryIO

# JSON-RPC and LSP error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_NOT_INITIALIZED = -32002
REQUEST_FAILED = -32803


class ProtocolError(Exception):
    """The stream is not LSP framing: nothing sensible can follow, so the server stops."""


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream. A body that is not JSON comes back as
    ``{"_unparsable": text}`` (answered with a parse error); broken framing raises."""
    length: int | None = None
    while True:
        line = stream.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("ascii", "replace").partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise ProtocolError(f"bad Content-Length header: {line!r}") from None
    if length is None or length < 0:
        raise ProtocolError("a message without a Content-Length header")
    body = stream.read(length)
    if len(body) < length:
        return None
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"_unparsable": body[:200].decode("utf-8", "replace")}
    return message if isinstance(message, dict) else {"_unparsable": str(message)[:200]}


def encode_message(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def write_message(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(encode_message(message))
    stream.flush()


ENCODINGS = ("utf-32", "utf-8", "utf-16")
"""What the server can count in, in its order of preference (code points need no conversion)."""


def choose_encoding(capabilities: dict[str, Any]) -> str:
    offered = (capabilities.get("general") or {}).get("positionEncodings") or ["utf-16"]
    for encoding in ENCODINGS:
        if encoding in offered:
            return encoding
    return "utf-16"  # the protocol's default, which every client supports


def _units(text: str, encoding: str) -> int:
    if encoding == "utf-32":
        return len(text)
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@dataclass(frozen=True)
class Lines:
    """A document's text split the way LSP counts lines (`\\n`, `\\r\\n` or `\\r` ends one)."""

    text: str
    encoding: str = "utf-16"

    @functools.cached_property
    def starts(self) -> list[int]:
        return _line_starts(self.text)

    def line(self, index: int) -> str:
        starts = self.starts
        if not 0 <= index < len(starts):
            return ""
        end = starts[index + 1] if index + 1 < len(starts) else len(self.text)
        return self.text[starts[index] : end].rstrip("\r\n")

    def offset(self, position: dict[str, Any]) -> int:
        """The string index of an LSP position (clamped to the line and the document)."""
        starts = self.starts
        line = int(position.get("line", 0))
        if line >= len(starts):
            return len(self.text)
        line = max(line, 0)
        text = self.line(line)
        return starts[line] + self.column(text, int(position.get("character", 0)))

    def column(self, line_text: str, units: int) -> int:
        """The code-point column of `units` code units into `line_text`."""
        if self.encoding == "utf-32":
            return max(0, min(units, len(line_text)))
        count = 0
        for index, char in enumerate(line_text):
            if count >= units:
                return index
            count += _units(char, self.encoding)
        return len(line_text)

    def position(self, line: int, column: int) -> dict[str, int]:
        """The LSP position of a 0-based line and code-point column."""
        text = self.line(line)
        return {"line": line, "character": _units(text[: max(column, 0)], self.encoding)}

    def position_of(self, offset: int) -> dict[str, int]:
        starts = self.starts
        line = max(0, bisect.bisect_right(starts, offset) - 1)
        return self.position(line, offset - starts[line])

    def end(self) -> dict[str, int]:
        return self.position_of(len(self.text))


def _line_starts(text: str) -> list[int]:
    starts = [0]
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\r":
            if index + 1 < length and text[index + 1] == "\n":
                index += 1
            starts.append(index + 1)
        elif char == "\n":
            starts.append(index + 1)
        index += 1
    return starts


def apply_change(text: str, change: dict[str, Any], encoding: str) -> str:
    """`textDocument/didChange`: a whole new text, or a range replaced."""
    if "range" not in change or change["range"] is None:
        return str(change.get("text", ""))
    lines = Lines(text, encoding)
    start = lines.offset(change["range"]["start"])
    end = lines.offset(change["range"]["end"])
    return text[:start] + str(change.get("text", "")) + text[max(start, end) :]
