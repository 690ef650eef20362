"""Reading a values file as a graph of ruamel nodes that remember where they are.

Only ruamel's composer stage runs (nothing is constructed into Python objects): every
node carries its start and end marks (character index, line, column) and its scalar
style, which is what the editor needs to splice text into the original. The pure
"safe" composer is used rather than the round-trip one: both scan the same grammar
and give the same marks, but the round-trip scanner also gathers comments, which
costs about a third of the parse time and is of no use when the text is spliced.
Before either, libyaml composes the text (:mod:`image_updater.values.compose`, about 25
times faster) whenever it gives exactly ruamel's nodes; ruamel reads the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from image_updater.errors import ValuesError
from image_updater.model import DEFAULT_FILE_BYTES, KeyPath
from image_updater.values.compose import compose_fast
from image_updater.values.keypath import format_key_path
from image_updater.values.scalars import NULL_TAG

MERGE_KEY = "<<"
#: Guards against "billion laughs" files: aliases make a small file expand enormously.
MAX_EXPANDED_NODES = 200_000

Path = tuple[str | int, ...]
#: A scalar as ``(tag, text)``; a collection as ``("map" | "seq", tag)``.
Entry = tuple[str, str]
View = dict[Path, Entry]


def check_size(text: str, *, file: str, limit: int = DEFAULT_FILE_BYTES) -> str:
    """Return ``text`` if it is at most ``limit`` bytes of UTF-8; checked before parsing,
    as a pure-Python parser takes minutes over a multi-megabyte file."""
    # Each character is 1 to 4 bytes: most texts are judged without encoding them.
    if len(text) > limit or (4 * len(text) > limit and len(text.encode("utf-8", "surrogatepass"))
                             > limit):
        size = len(text.encode("utf-8", "surrogatepass"))
        raise ValuesError(
            f"{file} is {size} bytes, more than the {limit} bytes a values file may hold "
            "(settings limits.values_file_bytes); image-updater leaves it alone. Raise "
            "limits.values_file_bytes if the file really is that large."
        )
    return text


def decode(data: str | bytes, *, file: str, limit: int = DEFAULT_FILE_BYTES) -> str:
    """A values file's bytes as text: size-checked first, then decoded as UTF-8."""
    if isinstance(data, str):
        return data
    if len(data) > limit:
        raise ValuesError(
            f"{file} is {len(data)} bytes, more than the {limit} bytes a values file may hold "
            "(settings limits.values_file_bytes); image-updater leaves it alone. Raise "
            "limits.values_file_bytes if the file really is that large."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValuesError(
            f"{file} is not UTF-8 text: line {line} holds the byte 0x{data[exc.start]:02x}; "
            "values files must be UTF-8. image-updater leaves the file alone until then."
        ) from exc


_local = threading.local()


def _composer() -> YAML:
    """One ``YAML`` per thread: making one looks for plug-ins on disk (a glob), which cost
    as much as composing a small values file; reusing it in its own thread is safe, as
    ``compose_all`` resets its reader and scanner when it ends."""
    composer: YAML | None = getattr(_local, "yaml", None)
    if composer is None:
        composer = _local.yaml = YAML(typ="safe", pure=True)
    return composer


def _compose(text: str) -> list[Node | None]:
    fast = compose_fast(text)
    if fast is not None:
        return fast
    try:
        return list(_composer().compose_all(text))
    except BaseException:
        _local.yaml = None  # a failed parse may leave state behind (anchors): start afresh
        raise


def parse(text: str, *, file: str) -> list[Node | None]:
    """Compose every document of ``text``; one parse, nothing constructed."""
    try:
        return _compose(text)
    except MarkedYAMLError as exc:
        raise ValuesError(_syntax_message(exc, file)) from exc
    except ReaderError as exc:
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise ValuesError(
            f"{file} is not valid YAML: line {line} contains the non-printable character "
            f"#x{code:04x} (character {exc.position}); remove it. image-updater leaves the "
            "file alone until then."
        ) from exc
    except (YAMLError, RecursionError) as exc:
        raise ValuesError(
            f"{file} could not be read as YAML ({type(exc).__name__}); check that it is a "
            "values file. image-updater leaves the file alone until then."
        ) from exc


def pick(documents: list[Node | None], index: int, *, file: str) -> Node | None:
    """The root node of document ``index``; an empty file counts as one empty document."""
    if index == 0 and not documents:
        return None
    if not 0 <= index < len(documents):
        raise ValuesError(
            f"{file} has {len(documents)} YAML document(s), so there is no document "
            f"{index} (counting from 0); fix the document index or the file."
        )
    return documents[index]


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == NULL_TAG)


@dataclass(frozen=True)
class Found:
    """The scalar at the key path, and what the editor needs to rewrite it."""

    node: ScalarNode
    parent: MappingNode | SequenceNode
    key_node: ScalarNode | None  # the key in ``parent`` when it is a mapping
    concrete: Path  # the path as :func:`flatten` spells it (mapping keys are text)


@dataclass(frozen=True)
class Missing:
    """Segment ``depth`` of the key path is absent under ``parent``."""

    depth: int
    parent: Node | None  # a mapping, a sequence that is too short, or null / empty
    concrete: Path  # path of ``parent``


def locate(
    root: Node | None, path: KeyPath, *, file: str, follow_merges: bool = False
) -> Found | Missing:
    """Walk ``path`` from ``root``; raise ValuesError when it crosses a wrong kind of node.

    With ``follow_merges`` a key found only in a ``<<`` merged mapping counts as found
    (reading sees what Helm sees); without it, it is reported as missing so that the
    editor adds a local override instead of changing the shared mapping.
    """
    node: Node | None = root
    parent: MappingNode | SequenceNode | None = None
    key_node: ScalarNode | None = None
    concrete: Path = ()
    for depth, segment in enumerate(path):
        if is_null(node):
            return Missing(depth, node, concrete)
        if isinstance(node, MappingNode):
            local = _local_value(node, str(segment), path, file)
            merged = None if local else _merged_value(node, str(segment))
            if local is None and (merged is None or not follow_merges):
                return Missing(depth, node, concrete)
            parent, concrete = node, (*concrete, str(segment))
            key_node, node = local if local else (None, merged)
        elif isinstance(node, SequenceNode):
            if not isinstance(segment, int):
                raise _wrong_kind(path, depth, "a list", file, "use a number to pick an item")
            if segment >= len(node.value):
                return Missing(depth, node, concrete)
            parent, key_node, node = node, None, node.value[segment]
            concrete = (*concrete, segment)
        else:
            raise _wrong_kind(path, depth, "a single value", file, "fix the key path")
    if not isinstance(node, ScalarNode) or parent is None:
        kind = "a list" if isinstance(node, SequenceNode) else "a mapping"
        raise _wrong_kind(path, len(path), kind, file, "point it at a key inside")
    return Found(node, parent, key_node, concrete)


def lookup_effective(mapping: MappingNode, key: str) -> Node | None:
    """The value of ``key`` as Helm sees it: local keys win over ``<<`` merges."""
    pairs = [v for k, v in mapping.value if isinstance(k, ScalarNode) and k.value == key]
    return pairs[0] if pairs else _merged_value(mapping, key)


def _local_value(
    mapping: MappingNode, key: str, path: KeyPath, file: str
) -> tuple[ScalarNode, Node] | None:
    pairs = [
        (k, v)
        for k, v in mapping.value
        if isinstance(k, ScalarNode) and k.value == key and key != MERGE_KEY
    ]
    if len(pairs) > 1:
        lines = ", ".join(str(k.start_mark.line + 1) for k, _ in pairs)
        raise ValuesError(
            f"{file} defines the key {key!r} of {format_key_path(path)} more than once "
            f"(lines {lines}); remove the duplicates so that it is clear which one to use."
        )
    return pairs[0] if pairs else None


def _merged_value(mapping: MappingNode, key: str) -> Node | None:
    """Look ``key`` up in the mappings merged in with ``<<: *anchor`` (earliest wins)."""
    for k, v in mapping.value:
        if not (isinstance(k, ScalarNode) and k.value == MERGE_KEY):
            continue
        sources = v.value if isinstance(v, SequenceNode) else [v]
        for source in sources:
            if isinstance(source, MappingNode):
                found = lookup_effective(source, key)
                if found is not None:
                    return found
    return None


def _wrong_kind(path: KeyPath, depth: int, kind: str, file: str, fix: str) -> ValuesError:
    where = format_key_path(path[:depth]) or "the top level"
    return ValuesError(
        f"Key path {format_key_path(path)} cannot be used in {file}: {where} is {kind}, "
        f"so it cannot hold {format_key_path(path[depth:]) or 'a single value'}; {fix} in "
        "`write:` of the policy, or fix the values file."
    )


def _syntax_message(exc: MarkedYAMLError, file: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = f" ({exc.context})" if exc.context else ""
    return (
        f"{file} is not valid YAML: {exc.problem}{where}{context}; fix the syntax there. "
        "image-updater leaves the file alone until then."
    )


class Flattener:
    """Every node of a document by path, following aliases, and each node's paths.

    The view lets the editor check that an edit changed exactly one value, and the
    node-to-paths index tells which nodes are shared through anchors and aliases.
    """

    def __init__(self, *, file: str) -> None:
        self.file = file
        self.view: View = {}
        self.paths: dict[int, list[Path]] = {}
        self._budget = MAX_EXPANDED_NODES

    def add(self, node: Node | None, path: Path = ()) -> None:
        self._walk(node, path, ())

    def _walk(self, node: Node | None, path: Path, stack: tuple[int, ...]) -> None:
        self._spend()
        if node is None:
            self.view[path] = (NULL_TAG, "")
            return
        self.paths.setdefault(id(node), []).append(path)
        if id(node) in stack:  # a recursive alias: its contents are already recorded
            self.view[path] = ("recursive", str(node.tag))
            return
        inner = (*stack, id(node))
        if isinstance(node, ScalarNode):
            self.view[path] = (str(node.tag), str(node.value))
        elif isinstance(node, SequenceNode):
            self.view[path] = ("seq", str(node.tag))
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index), inner)
        elif isinstance(node, MappingNode):
            self.view[path] = ("map", str(node.tag))
            for position, (key, value) in enumerate(node.value):
                self._walk(value, (*path, _key_text(key, position)), inner)

    def _spend(self) -> None:
        self._budget -= 1
        if self._budget < 0:
            raise ValuesError(
                f"{self.file} expands to more than {MAX_EXPANDED_NODES} values through YAML "
                "aliases; image-updater refuses to edit it. Replace the aliases by copies."
            )


def views(documents: list[Node | None], *, file: str) -> Iterator[Flattener]:
    for root in documents:
        flat = Flattener(file=file)
        flat.add(root)
        yield flat


def _key_text(key: Node, position: int) -> str:
    if isinstance(key, ScalarNode):
        return str(key.value)
    return f"<complex key #{position}>"
