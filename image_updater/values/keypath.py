"""Key paths: where in a values file a policy writes (``write: {tag: image.tag}``).

Grammar, one segment per dot::

    image.tag                       two mapping keys
    images.0.digest                 a bare number indexes a list
    annotations."example.com/x"     a double-quoted segment may contain dots;
                                    inside it, \\" and \\\\ stand for " and \\

A quoted number (``"0"``) is a mapping key, never an index.
"""

from __future__ import annotations

from typing import NoReturn

from image_updater.errors import ValuesError
from image_updater.model import KeyPath

__all__ = ["KeyPath", "format_key_path", "parse_key_path"]

MAX_KEY_PATH = 512
_FORM = (
    "write keys separated by dots, e.g. image.tag, images.0.digest (a number indexes a "
    'list) or annotations."example.com/x" for a key that contains dots'
)


def parse_key_path(text: str) -> KeyPath:
    """Parse ``text`` into a key path; raise ValuesError quoting it when malformed."""
    if not isinstance(text, str) or not text or len(text) > MAX_KEY_PATH:
        _fail(text, f"it must be 1-{MAX_KEY_PATH} characters")
    if any(not ch.isprintable() for ch in text):
        _fail(text, "it contains a control or non-printable character")
    segments: list[str | int] = []
    pos = 0
    while True:
        segment, pos = _segment(text, pos)
        segments.append(segment)
        if pos == len(text):
            return tuple(segments)
        pos += 1  # the dot; _segment guarantees one is here


def format_key_path(path: KeyPath) -> str:
    """The inverse of parse_key_path: ``("a", 0, "x.y")`` -> ``a.0."x.y"``."""
    return ".".join(_format_segment(s) for s in path)


def _segment(text: str, pos: int) -> tuple[str | int, int]:
    """Read one segment starting at ``pos``; return it and the index just after it."""
    if text.startswith('"', pos):
        return _quoted_segment(text, pos)
    end = text.find(".", pos)
    end = len(text) if end < 0 else end
    bare = text[pos:end]
    if not bare:
        _fail(text, f"segment {len(text[:pos].split('.'))} is empty")
    if '"' in bare:
        _fail(text, f"segment {bare!r} has a quote that does not start the segment")
    if bare != bare.strip():
        _fail(text, f"segment {bare!r} has leading or trailing spaces")
    return (int(bare) if bare.isascii() and bare.isdigit() else bare), end


def _quoted_segment(text: str, pos: int) -> tuple[str, int]:
    chars: list[str] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            chars.append(text[i + 1])
            i += 2
        elif ch == '"':
            if i + 1 < len(text) and text[i + 1] != ".":
                _fail(text, f"a quoted segment must be followed by a dot, not {text[i + 1]!r}")
            if not chars:
                _fail(text, "a quoted segment is empty")
            return "".join(chars), i + 1
        else:
            chars.append(ch)
            i += 1
    _fail(text, "a quoted segment is not closed")


def _format_segment(segment: str | int) -> str:
    if isinstance(segment, int):
        return str(segment)
    plain = (
        segment
        and not any(ch in segment for ch in '."\\')
        and segment == segment.strip()
        and not (segment.isascii() and segment.isdigit())
    )
    if plain:
        return segment
    return '"' + segment.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fail(text: object, why: str) -> NoReturn:
    shown = repr(text)[:120]
    raise ValuesError(f"Key path {shown} is not valid: {why}; {_FORM}.")
