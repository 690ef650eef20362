"""Composing YAML with libyaml (C) into ruamel nodes, for texts where that changes nothing.

ruamel's pure-Python scanner costs 3-5 ms for a small values or policy file; libyaml
(through PyYAML's ``CParser``) reads the same text in about 0.1 ms. Its events carry the
same marks (character index, line, column) and styles, and plain scalars are resolved here
by ruamel's own YAML 1.2 resolver, so the nodes are those ruamel composes, as ruamel's
classes, for every text this module accepts.

It accepts only texts where that has been checked (tests/unit/test_values_compose.py
compares both on generated documents) and answers None for anything else, so that the
caller runs ruamel, which gives the same result or the error message it always gave:
syntax errors, directives (``%YAML 1.1`` changes how scalars resolve), tags, anchors and
aliases, merge keys, empty plain scalars (libyaml marks them where the ``:`` ends, ruamel
where the next token starts), tabs, a byte order mark, lone carriage returns and Unicode
line breaks.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.cyaml import CParser
from ruamel.yaml.error import StringMark
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver

SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"
STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"

# "!" (tags), "&" (anchors), "*" only as an alias is found from the nodes; a "%" directive
# at a line start; characters where the two readers were not shown to agree.
_DECLINE = re.compile(r"[!&\t\ufeff\x85\u2028\u2029]|^%|\r(?!\n)", re.MULTILINE)
_RESOLVER = VersionedResolver(version=(1, 2))


class Declined(Exception):
    """The text is not one this module reads exactly as ruamel does."""


class _Loader(CParser):  # type: ignore[misc]  # PyYAML's C extension is untyped
    """libyaml's parser with YAML 1.2 core resolution of plain scalars (ruamel's rules)."""

    def descend_resolver(self, parent: Any, index: Any) -> None:
        """No path resolvers: the composer calls this around every collection."""

    def ascend_resolver(self) -> None:
        """No path resolvers (see :meth:`descend_resolver`)."""

    def resolve(self, kind: Any, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                if value == "":
                    raise Declined("an empty plain scalar")
                return str(_RESOLVER.resolve(ScalarNode, value, (True, False)))
            return STR_TAG
        return SEQ_TAG if kind is yaml.SequenceNode else MAP_TAG


def compose_fast(text: str) -> list[Node | None] | None:
    """Every document of ``text`` as ruamel's composer gives it, or None to ask for ruamel."""
    if _DECLINE.search(text):
        return None
    loader = _Loader(text)
    try:
        documents = []
        while loader.check_node():
            documents.append(_Converter(text).node(loader.get_node()))
        return documents
    except (Declined, yaml.YAMLError, UnicodeError, RecursionError, ValueError):
        return None
    finally:
        loader.dispose()


class _Converter:
    """PyYAML nodes into ruamel nodes with ruamel marks; refuses shared nodes (aliases)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.seen: set[int] = set()

    def mark(self, mark: Any) -> StringMark:
        index, line, column = mark.index, mark.line, mark.column
        if index >= len(self.text):
            # libyaml reads a missing final line break as there; ruamel stops at the end
            index = len(self.text)
            line = self.text.count("\n")
            column = index - (self.text.rfind("\n") + 1)
        return StringMark(None, index, line, column, self.text, index)

    def node(self, node: Any) -> Node:
        if id(node) in self.seen:
            raise Declined("an alias")
        self.seen.add(id(node))
        start, end = self.mark(node.start_mark), self.mark(node.end_mark)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == MERGE_TAG:
                raise Declined("a merge key")
            return ScalarNode(node.tag, node.value, start, end, style=node.style or None)
        if isinstance(node, yaml.SequenceNode):
            items = [self.node(item) for item in node.value]
            return SequenceNode(node.tag, items, start, end, flow_style=node.flow_style)
        pairs = [(self.node(key), self.node(value)) for key, value in node.value]
        return MappingNode(node.tag, pairs, start, end, flow_style=node.flow_style)
