"""Checking a new value and choosing how to write it as a YAML scalar.

Values are tags, digests and references taken from registries and webhooks, so they
are untrusted: they are checked before they get anywhere near a file.
"""

from __future__ import annotations

import re
import unicodedata

from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

from image_updater.errors import ValuesError

MAX_VALUE = 1024
STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"

# Conservative: what image tags, digests and references are made of. Anything else is
# quoted, which YAML always allows.
_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./+@:-]*")
# In flow collections (``{tag: x}``) ':' ',' and brackets are indicators in YAML 1.1.
_FLOW_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./+@-]*")


def check_value(value: str, *, file: str, key: str) -> str:
    """Return ``value`` if it can be written as a one-line tag/digest/reference."""
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE:
        raise ValuesError(
            f"Cannot write {repr(value)[:90]} to {key} in {file}: the value must be a "
            f"non-empty string of at most {MAX_VALUE} characters; the file was not changed."
        )
    for ch in value:
        # C*: control/format/unassigned; Z*: spaces and line/paragraph separators. None
        # appears in a tag, digest or reference, and some would break the line.
        if unicodedata.category(ch)[0] in "CZ":
            raise ValuesError(
                f"Cannot write {ascii(value)[:90]} to {key} in {file}: it contains the "
                f"character {ch!a}, and tags, digests and references never contain "
                "spaces or control characters; the file was not changed."
            )
    return value


def render(value: str, *, style: str | None, flow: bool) -> str:
    """The source text for ``value`` keeping ``style`` (None = plain) where YAML allows."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style is None and plain_ok(value, flow=flow):
        return value
    return double_quoted(value)


def double_quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plain_ok(value: str, *, flow: bool) -> bool:
    """True when ``value`` written plain reads back as the same string.

    Helm reads values with a YAML 1.1 parser, where ``yes``, ``on`` and ``0777`` are
    not strings, so a value must be a string under both 1.1 and 1.2 rules.
    """
    pattern = _FLOW_PLAIN_SAFE if flow else _PLAIN_SAFE
    if not pattern.fullmatch(value) or value.endswith(":"):
        return False
    return all(_resolves_to_str(value, version) for version in ((1, 1), (1, 2)))


def _resolves_to_str(value: str, version: tuple[int, int]) -> bool:
    resolver = VersionedResolver(version=version)
    return bool(resolver.resolve(ScalarNode, value, (True, False)) == STR_TAG)
