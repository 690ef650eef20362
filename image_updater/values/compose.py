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

import functools
import re
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import StringMark
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

try:
    from yaml.cyaml import CParser
except ImportError:  # a PyYAML built without libyaml: every text is left to ruamel
    LIBYAML = False
    CParser = object
else:
    LIBYAML = True

SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"
STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"
NULL_TAG = "tag:yaml.org,2002:null"
BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
#: the integers ruamel's round-trip loader gives as a plain ``int`` (``0``, ``0x1``, ``1_0``
#: become ScalarInt and the like, so they are left to ruamel)
_PLAIN_INT = re.compile(r"-?[1-9][0-9]*")

# What may start a tag ("!") or an anchor ("&"): they follow a line start, a space or a
# flow indicator ("a&b" inside a scalar does not count; an alias is found from the nodes);
# a "%" directive at a line start; characters the two readers were not shown to agree on.
_DECLINE = re.compile(r"(?:^|[\s\[{,])[!&]|[\t\ufeff\x85\u2028\u2029]|^%|\r(?!\n)",
                      re.MULTILINE)
#: a block scalar's header as ruamel accepts it (libyaml also takes ``>#``, say)
_BLOCK_HEADER = re.compile(r"[|>](?:[1-9][-+]?|[-+][1-9]?)?(?:[ ]+(?:#[^\n]*)?)?\r?")
_RESOLVER = VersionedResolver(version=(1, 2))
#: the characters without which ``_DECLINE`` cannot match: most texts skip the regex
_DECLINE_CHARS = frozenset("!&%\t\r\ufeff\x85\u2028\u2029")
#: one ruamel Tag per tag: a Tag decodes its URI once, on first use, so nodes share them
_TAGS: dict[str, Tag] = {}


class Declined(Exception):
    """The text is not one this module reads exactly as ruamel does."""


class _Loader(CParser):  # CParser is Any: PyYAML ships no type stubs
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
                return _resolve_plain(value)
            return STR_TAG
        return SEQ_TAG if kind is yaml.SequenceNode else MAP_TAG


@functools.lru_cache(maxsize=4096)
def _resolve_plain(value: str) -> str:
    """ruamel's tag for a plain scalar; cached, as keys and values repeat across files."""
    if value[0] not in _FIRST_CHARS and None not in _RESOLVER.versioned_resolver:
        return STR_TAG  # ruamel looks resolvers up by first character: none apply
    return str(_RESOLVER.resolve(ScalarNode, value, (True, False)))


#: the first characters ruamel has implicit resolvers for (``app``, ``registry.io/x`` ...
#: are strings without trying a regex)
_FIRST_CHARS = frozenset(k for k in _RESOLVER.versioned_resolver if k is not None)


def compose_fast(text: str) -> list[Node | None] | None:
    """Every document of ``text`` as ruamel's composer gives it, or None to ask for ruamel."""
    documents = _compose(text)
    if documents is None:
        return None
    try:
        return [_Converter(text).node(node) for node in documents]
    except (Declined, RecursionError):
        return None


def load_round_trip(text: str) -> list[Any] | None:
    """What ``YAML(typ="rt").load_all(text)`` gives, with the same ``lc`` positions, for
    texts made of mappings, sequences, strings, booleans, plain integers and nulls; None
    for anything else (ruamel loads it, or reports its error)."""
    documents = _compose(text)
    if documents is None:
        return None
    try:
        return [_Builder().construct(node) for node in documents]
    except (Declined, RecursionError):
        return None


def _compose(text: str) -> list[Any] | None:
    """libyaml's nodes (PyYAML's classes) for every document, or None."""
    if not LIBYAML or (not _DECLINE_CHARS.isdisjoint(text) and _DECLINE.search(text)):
        return None
    try:
        loader = _Loader(text)  # encodes the text to UTF-8: lone surrogates fail here
    except UnicodeError:
        return None
    try:
        documents = []
        while loader.check_node():
            documents.append(loader.get_node())
        return documents
    except (Declined, yaml.YAMLError, UnicodeError, RecursionError, ValueError):
        return None
    finally:
        loader.dispose()


class _Builder:
    """libyaml nodes into what ruamel's RoundTripConstructor builds (positions included)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def construct(self, node: Any) -> Any:
        if id(node) in self.seen:
            raise Declined("an alias")
        self.seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        start = node.start_mark
        # positions go straight into ruamel's LineCol record: what _yaml_set_*_line_col do,
        # without looking the record up again for every key (a tenth of the load time)
        data: CommentedMap | CommentedSeq
        positions: dict[Any, list[int]] = {}
        if isinstance(node, yaml.SequenceNode):
            data = CommentedSeq()
            for index, child in enumerate(node.value):
                data.append(self.construct(child))
                positions[index] = [child.start_mark.line, child.start_mark.column]
        else:
            data = CommentedMap()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise Declined("a complex key")
                key = self.construct(key_node)
                if key in positions:
                    raise Declined("a duplicate key")  # ruamel refuses it, with its message
                data[key] = self.construct(value_node)
                positions[key] = [key_node.start_mark.line, key_node.start_mark.column,
                                  value_node.start_mark.line, value_node.start_mark.column]
        lc = data.lc
        lc.line, lc.col = start.line, start.column
        if positions:
            lc.data = positions
        _set_style(data, node)
        return data


def _set_style(data: CommentedMap | CommentedSeq, node: Any) -> None:
    flow_style = getattr(node, "flow_style", None)
    if not data:  # as ruamel: an empty collection keeps no style
        return
    if flow_style is True:
        data.fa.set_flow_style()
    elif flow_style is False:
        data.fa.set_block_style()


def _scalar(node: Any) -> Any:
    tag, value = node.tag, node.value
    if tag == STR_TAG and node.style not in ("|", ">"):  # block scalars are str subclasses
        return value
    if tag == NULL_TAG:
        return None
    if tag == BOOL_TAG:
        return value in ("true", "True", "TRUE")
    if tag == INT_TAG and _PLAIN_INT.fullmatch(value):
        return int(value)
    raise Declined(f"a {tag} scalar")


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

    def check_block_header(self, index: int) -> None:
        end = self.text.find("\n", index)
        header = self.text[index:end if end >= 0 else len(self.text)]
        if not _BLOCK_HEADER.fullmatch(header):
            raise Declined("a block scalar header ruamel may read otherwise")

    def node(self, node: Any) -> Node:
        if id(node) in self.seen:
            raise Declined("an alias")
        self.seen.add(id(node))
        start, end = self.mark(node.start_mark), self.mark(node.end_mark)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == MERGE_TAG:
                raise Declined("a merge key")
            if node.style in ("|", ">"):
                self.check_block_header(start.index)
            return ScalarNode(_tag(node.tag), node.value, start, end, style=node.style or None)
        if isinstance(node, yaml.SequenceNode):
            items = [self.node(item) for item in node.value]
            return SequenceNode(_tag(node.tag), items, start, end, flow_style=node.flow_style)
        pairs = [(self.node(key), self.node(value)) for key, value in node.value]
        return MappingNode(_tag(node.tag), pairs, start, end, flow_style=node.flow_style)


def _tag(name: str) -> Tag:
    tag = _TAGS.get(name)
    if tag is None:
        tag = _TAGS[name] = Tag(suffix=name)
    return tag
