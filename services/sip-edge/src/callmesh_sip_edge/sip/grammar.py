"""Lexical building blocks of the RFC 3261 grammar (section 25.1).

These helpers are shared by the URI, header and digest parsers. They work on
``str`` (the header block is decoded once as UTF-8 with ``surrogateescape``
so that no byte is lost) and raise :class:`SipParseError` only.
"""

from __future__ import annotations

import re
import string

from .errors import SipParseError

TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-.!%*_+`'~")
# ``word`` (Call-ID) allows these on top of token characters.
WORD_CHARS = TOKEN_CHARS | frozenset('()<>:\\"/[]?{}')
WHITESPACE = " \t"

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WORD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+")
# host = hostname / IPv4address / IPv6reference (kept permissive on label rules)
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)")

Params = dict[str, str | None]
# name[=value] with optional LWS, value a token or host (the common case).
_SIMPLE_PARAM_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*(?:=[ \t]*([A-Za-z0-9\-.!%*_+`'~:\[\]]+)[ \t]*)?"
)


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def is_word(text: str) -> bool:
    return _WORD_RE.fullmatch(text) is not None


def is_host(text: str) -> bool:
    return _HOST_RE.fullmatch(text) is not None


def unfold(text: str) -> str:
    """Replace every folded line break (CRLF followed by SP/HTAB) by one SP.

    Linear in the input (a regular expression with ``[ \t]*`` before the line
    break is quadratic on long runs of blanks, which an attacker controls).
    """
    lines: list[list[str]] = []
    for part in text.split("\r\n"):
        if lines and part and part[0] in WHITESPACE:
            pieces = lines[-1]
            pieces[-1] = pieces[-1].rstrip(WHITESPACE)
            pieces.append(" ")
            pieces.append(part.lstrip(WHITESPACE))
        else:
            lines.append([part])
    return "\r\n".join("".join(pieces) for pieces in lines)


def parse_quoted_string(text: str, start: int) -> tuple[str, int]:
    """Parse the quoted-string that opens at ``text[start] == '"'``.

    Returns the unescaped content and the index just after the closing quote.
    """
    close = text.find('"', start + 1)
    if close != -1 and "\\" not in text[start + 1 : close]:
        content = text[start + 1 : close]
        if "\r" in content or "\n" in content:
            raise SipParseError("Bad Request - Unterminated quoted string")
        return content, close + 1
    chars: list[str] = []
    i = start + 1
    end = len(text)
    while i < end:
        c = text[i]
        if c == '"':
            return "".join(chars), i + 1
        if c == "\\":
            i += 1
            if i >= end:
                break
            c = text[i]
            if c in "\r\n":
                raise SipParseError("Bad Request - Invalid escape in quoted string")
        elif c in "\r\n":
            break
        chars.append(c)
        i += 1
    raise SipParseError("Bad Request - Unterminated quoted string")


def quote_string(text: str) -> str:
    """Render ``text`` as a quoted-string, escaping ``"`` and ``\\``."""
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


def split_comma_list(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and ``<...>``.

    Elements are stripped; empty elements are kept (callers decide whether an
    empty element is an error) so that ``a,,b`` can be rejected precisely.
    """
    if "," not in value:
        return [value.strip(WHITESPACE)]
    if '"' not in value and "<" not in value:
        return [part.strip(WHITESPACE) for part in value.split(",")]
    parts: list[str] = []
    depth_angle = False
    in_quotes = False
    begin = 0
    i = 0
    end = len(value)
    while i < end:
        c = value[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == "<":
            depth_angle = True
        elif c == ">":
            depth_angle = False
        elif c == "," and not depth_angle:
            parts.append(value[begin:i].strip(WHITESPACE))
            begin = i + 1
        i += 1
    if in_quotes:
        raise SipParseError("Bad Request - Unterminated quoted string")
    parts.append(value[begin:].strip(WHITESPACE))
    return parts


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    parts: list[str] = []
    in_quotes = False
    begin = 0
    i = 0
    end = len(text)
    while i < end:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == ";":
            parts.append(text[begin:i])
            begin = i + 1
        i += 1
    if in_quotes:
        raise SipParseError("Bad Request - Unterminated quoted string")
    parts.append(text[begin:])
    return parts


def parse_params(text: str, what: str = "parameter") -> Params:
    """Parse ``;name[=value]`` generic parameters (``text`` starts after the first ';').

    Names are lower-cased (parameter names are case-insensitive); a quoted
    value is returned unescaped and without its quotes. LWS around ``=`` and
    ``;`` is allowed (RFC 3261 ``SEMI``/``EQUAL``).
    """
    params: Params = {}
    if '"' not in text:
        for raw in text.split(";"):
            match = _SIMPLE_PARAM_RE.fullmatch(raw)
            if match is None:
                break
            params[match.group(1).lower()] = match.group(2)
        else:
            return params
        params = {}
    for raw in _split_semicolons(text):
        name, eq, val = raw.partition("=")
        name = name.strip(WHITESPACE)
        if not name or not is_token(name):
            raise SipParseError(f"Bad Request - Invalid {what}")
        if eq:
            val = val.strip(WHITESPACE)
            if val.startswith('"'):
                unquoted, after = parse_quoted_string(val, 0)
                if after != len(val):
                    raise SipParseError(f"Bad Request - Invalid {what}")
                params[name.lower()] = unquoted
            elif val and _is_param_value(val):
                params[name.lower()] = val
            else:
                raise SipParseError(f"Bad Request - Invalid {what}")
        else:
            params[name.lower()] = None
    return params


def _is_param_value(value: str) -> bool:
    # gen-value = token / host / quoted-string; IPv6 references add "[]:".
    return is_token(value) or is_host(value)


def format_params(params: Params) -> str:
    out: list[str] = []
    for name, value in params.items():
        if value is None:
            out.append(";" + name)
        elif value == "" or not _is_param_value(value):
            out.append(";" + name + "=" + quote_string(value))
        else:
            out.append(";" + name + "=" + value)
    return "".join(out)
