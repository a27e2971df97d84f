"""The examples of ``docs/protocol.md``, read as data so a test can replay them.

Conventions of the page (its "How to read the examples" section says the same to vendors):

- A fenced block may be preceded by one HTML comment that says what it is:
  ``<!-- replay: name -->`` an HTTP exchange to run against the coordinator, in page order;
  ``<!-- shape: Model -->`` / ``<!-- shape: event lock.acquired -->`` JSON messages to validate
  against the pydantic models; ``<!-- not-json -->`` a ```json block that is not JSON on purpose.
- A replay block is a request (``METHOD /path``, header lines, a blank line, an optional JSON body)
  followed by the answer (``HTTP/1.1 <status> ...``, header lines, a blank line, the expected JSON).
  ``GET /api/v1/ws`` answered ``HTTP/1.1 101`` opens a websocket kept under the replay's name; the
  JSON values after it are its first messages. ``<!-- receive: name -->`` before a ```json block:
  the next messages of that socket. After ``hello``, events of other names than the one expected
  next are passed over (a ``terminal.status`` arriving in between is not the example's point), and
  so is any event before an expected ``result``. ``<!-- send: name -->`` before a ```json block: the
  client sends its messages (variables filled) on that socket, one frame each.
- ``$NAME`` is a variable: bound by the test (``$STORE``, ``$CASH``…) or, the first time a
  response string is exactly ``"$NAME"``, captured from the actual answer for later blocks.
- ``…`` outside a string is any value; as an object member (``{"a": 1, …}``) it only tells the
  reader that more keys follow (expected objects match by subset anyway). Inside a string it
  matches any text. A list ending in ``…`` matches any longer list with that prefix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

ELLIPSIS = "…"
_MARK = re.compile(r"^<!--\s*(replay|receive|send|shape|not-json)\s*(?::\s*(.*?))?\s*-->\s*$")
_FENCE = re.compile(r"^(`{3,})\s*([\w-]*)\s*$")
_VAR = re.compile(r"\$([A-Z][A-Z0-9_]*)")
_STATUS = re.compile(r"^HTTP/1\.1 (\d{3})\b")
_REQUEST = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) (\S+)(?: HTTP/1\.1)?$")


@dataclass
class Block:
    """A fenced block of the page and the marker comment before it, if any."""

    lang: str
    text: str
    line: int                       # 1-based line of the opening fence
    mark: str | None = None         # "replay" | "receive" | "send" | "shape" | "not-json"
    arg: str = ""                   # the replay name or the shape


@dataclass
class Exchange:
    """One replayable HTTP exchange."""

    name: str
    line: int
    method: str
    path: str
    headers: dict[str, str]
    body: str
    status: int
    response_headers: dict[str, str]
    expected: str


@dataclass
class Bindings:
    """The variables of a replay: bound up front or captured from earlier answers."""

    values: dict[str, str] = field(default_factory=dict)

    def fill(self, text: str, where: str) -> str:
        """``text`` with every ``$NAME`` replaced; an unbound one is an error in the page."""
        def one(match: re.Match[str]) -> str:
            if match.group(1) not in self.values:
                raise AssertionError(f"{where}: ${match.group(1)} is used before it is bound")
            return self.values[match.group(1)]
        return _VAR.sub(one, text)


def blocks(markdown: str) -> list[Block]:
    """Every fenced block of ``markdown`` with its marker (the comment on the last non-blank line before it)."""
    out: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != opening.group(1):
            end += 1
        block = Block(opening.group(2), "\n".join(lines[i + 1:end]), i + 1)
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = _MARK.match(before)
        if mark:
            block.mark, block.arg = mark.group(1), mark.group(2) or ""
        out.append(block)
        i = end + 1
    return out


def _split_head(lines: list[str]) -> tuple[dict[str, str], str]:
    """Header lines up to the first blank line, then the rest as the body."""
    headers: dict[str, str] = {}
    for n, line in enumerate(lines):
        if not line.strip():
            return headers, "\n".join(lines[n + 1:]).strip()
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers, ""


def exchange(block: Block) -> Exchange:
    """The request and expected answer of a replay block."""
    lines = block.text.splitlines()
    cut = next((n for n, line in enumerate(lines) if _STATUS.match(line)), None)
    request = _REQUEST.match(lines[0].strip()) if lines else None
    if cut is None or request is None:
        raise AssertionError(f"line {block.line}: a replay block is 'METHOD /path' ... 'HTTP/1.1 <status>' ...")
    headers, body = _split_head(lines[1:cut])
    response_headers, expected = _split_head(lines[cut + 1:])
    status = int(_STATUS.match(lines[cut]).group(1))  # type: ignore[union-attr]
    return Exchange(block.arg, block.line, request.group(1), request.group(2), headers, body, status,
                    response_headers, expected)


def _ellipsis_to_json(text: str) -> str:
    """JSON text from the page's JSON: bare ``…`` becomes the string "…", member ``…`` is dropped."""
    out, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            out.append(char)
        elif char == ELLIPSIS:
            out.append(f'"{ELLIPSIS}"')
        else:
            in_string = char == '"'
            out.append(char)
    joined = "".join(out)
    joined = re.sub(r'\{\s*"…"\s*\}', "{}", joined)
    joined = re.sub(r',\s*"…"\s*(?=\})', "", joined)
    return re.sub(r'\{\s*"…"\s*,', "{", joined)


def json_values(text: str) -> list[Any]:
    """Every JSON value in ``text`` (one or several, one after another), ``…`` as above."""
    source, decoder, values, at = _ellipsis_to_json(text), json.JSONDecoder(), [], 0
    while True:
        while at < len(source) and source[at].isspace():
            at += 1
        if at >= len(source):
            return values
        value, at = decoder.raw_decode(source, at)
        values.append(value)


def match(expected: Any, actual: Any, bindings: Bindings, where: str = "$") -> list[str]:
    """Where ``actual`` differs from ``expected`` (empty: it matches); captures ``"$NAME"`` strings."""
    if expected == ELLIPSIS:
        return []
    if isinstance(expected, str) and (whole := re.fullmatch(r"\$([A-Z][A-Z0-9_]*)", expected)):
        name = whole.group(1)
        if name not in bindings.values:
            bindings.values[name] = actual if isinstance(actual, str) else json.dumps(actual)
            return []
        expected = bindings.values[name]
        if not isinstance(actual, str):
            expected = json.loads(expected)
        return [] if expected == actual else [f"{where}: expected {expected!r} (${name}), got {actual!r}"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = [f"{where}.{key}: missing" for key in expected if key not in actual]
        for key in expected:
            if key in actual:
                problems += match(expected[key], actual[key], bindings, f"{where}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {actual!r}"]
        open_end = bool(expected) and expected[-1] == ELLIPSIS
        head = expected[:-1] if open_end else expected
        if len(actual) < len(head) or (not open_end and len(actual) != len(head)):
            return [f"{where}: expected {len(head)}{'+' if open_end else ''} items, got {len(actual)}"]
        return [p for n, item in enumerate(head) for p in match(item, actual[n], bindings, f"{where}[{n}]")]
    if isinstance(expected, str) and isinstance(actual, str) and ("…" in expected or "$" in expected):
        pattern = ".*".join(re.escape(part) for part in bindings.fill(expected, where).split(ELLIPSIS))
        return [] if re.fullmatch(pattern, actual, re.S) else [f"{where}: expected {expected!r}, got {actual!r}"]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []
