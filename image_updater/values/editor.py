"""Read and change one scalar of a Helm values file, leaving every other byte alone.

Pure: text in, text out. ruamel's round-trip dump reflows some files (long lines,
comment spacing, indentation of sequences), which would make noisy commits, so the
file is never re-dumped. Instead ruamel only *locates* the scalar (its start and end
character index), the new scalar text is spliced into the original text, and the
result is parsed again to verify that the target now reads the new value and that
every other value of every document is unchanged. A failed check raises instead of
returning a damaged file.

Anchors and aliases: the scalar is edited where its text is. When that node is
reachable by more than one path (it carries an anchor used by an alias, or it sits
inside an aliased or ``<<``-merged mapping), editing it would silently change the
other paths too, for example a sidecar sharing the main image's tag, so the edit is
refused with the other paths named. Anchors nobody else uses, and aliases elsewhere
in the file, are fine. A final key that exists only in a ``<<`` merged mapping is
added to the local mapping as an override, leaving the shared one untouched.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from image_updater.errors import ValuesError
from image_updater.model import KeyPath
from image_updater.values.document import (
    MERGE_KEY,
    Flattener,
    Found,
    Missing,
    is_null,
    locate,
    parse,
    pick,
    views,
)
from image_updater.values.keypath import format_key_path, parse_key_path
from image_updater.values.scalars import STR_TAG, check_value, double_quoted, plain_ok, render

__all__ = ["read_present", "read_scalar", "read_scalars", "set_scalar", "values_diff"]


def read_scalar(text: str, path: KeyPath | str, *, file: str, document: int = 0) -> str | None:
    """The scalar at ``path`` in document ``document`` as written (``1.10`` stays "1.10").

    None when the path is absent or the value is YAML null (``tag:``, ``tag: ~``).
    Keys merged in with ``<<: *anchor`` are seen, as Helm sees them.
    """
    key_path = _as_path(path)
    return read_scalars(text, [key_path], file=file, document=document)[key_path]


def read_scalars(
    text: str, paths: Iterable[KeyPath | str], *, file: str, document: int = 0
) -> dict[KeyPath, str | None]:
    """Like :func:`read_scalar` for several paths (tag, digest, reference) with one parse."""
    key_paths = [_as_path(p) for p in paths]
    present = read_present(text, key_paths, file=file, document=document)
    return {p: present.get(p) for p in key_paths}


def read_present(
    text: str, paths: Iterable[KeyPath | str], *, file: str, document: int = 0
) -> dict[KeyPath, str | None]:
    """The paths that are present, with their scalar; None for a null value (``tag:``).

    A key written with a null value is present: image-updater may fill it in. A path
    that is absent is left out of the result.
    """
    root = pick(parse(text, file=file), document, file=file)
    values: dict[KeyPath, str | None] = {}
    for path in paths:
        key_path = _as_path(path)
        found = locate(root, key_path, file=file, follow_merges=True)
        if not isinstance(found, Missing):
            values[key_path] = None if is_null(found.node) else str(found.node.value)
    return values


def set_scalar(text: str, path: KeyPath | str, value: str, *, file: str, document: int = 0) -> str:
    """Return ``text`` with the scalar at ``path`` set to ``value``; nothing else changes.

    The quoting style is kept (quotes are added when ``value`` would not read back as a
    string unquoted). A missing final key under an existing mapping is added on a new
    line; a missing mapping on the way raises ValuesError. Setting the current value
    returns ``text`` itself.
    """
    key_path = _as_path(path)
    shown = format_key_path(key_path)
    check_value(value, file=file, key=shown)
    if MERGE_KEY in key_path:
        raise ValuesError(
            f"Cannot write {shown} in {file}: '{MERGE_KEY}' is YAML's merge key, which holds "
            "a mapping to merge rather than a value; fix `write:` in the policy."
        )
    documents = parse(text, file=file)
    root = pick(documents, document, file=file)
    found = locate(root, key_path, file=file)
    if isinstance(found, Found) and found.node.tag == STR_TAG and found.node.value == value:
        return text
    before = list(views(documents, file=file))
    if isinstance(found, Missing):
        mapping, concrete = _insertable(found, key_path, file)
        parent = format_key_path(key_path[:-1]) or "the top-level mapping"
        _refuse_shared(before[document], mapping, shown, file, f"the mapping {parent}")
        edited = _insert(text, mapping, str(key_path[-1]), value)
    else:
        concrete = found.concrete
        _refuse_shared(before[document], found.node, shown, file, "its value")
        edited = _replace(text, found, value, shown, file)
    _verify(edited, before, document, concrete, value, shown, file)
    return edited


def values_diff(old: str, new: str, file: str) -> str:
    """A unified diff of a values file for dry runs; empty when nothing changed."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{file}",
        tofile=f"b/{file}",
    )
    # Like git: mark a last line without a newline instead of gluing the next line to it.
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


def _as_path(path: KeyPath | str) -> KeyPath:
    return parse_key_path(path) if isinstance(path, str) else path


def _insertable(
    missing: Missing, path: KeyPath, file: str
) -> tuple[MappingNode, tuple[str | int, ...]]:
    """Accept a missing final key under a mapping (return it and the new key's path)."""
    if missing.depth == len(path) - 1 and isinstance(missing.parent, MappingNode):
        return missing.parent, (*missing.concrete, str(path[-1]))
    shown = format_key_path(path)
    absent = format_key_path(path[: missing.depth + 1])
    above = format_key_path(path[: missing.depth]) or "the document"
    if missing.parent is None or is_null(missing.parent):
        what = f"{above} is empty, so {absent} does not exist"
    elif isinstance(missing.parent, MappingNode):
        what = f"{absent} does not exist"
    else:
        what = f"{above} is a list with only {len(missing.parent.value)} item(s)"
    raise ValuesError(
        f"Cannot write {shown} in {file}: {what}. image-updater adds only a missing last "
        f"key to an existing mapping, never the parts above it: add {absent} to the values "
        "file or fix `write:` in the policy."
    )


def _refuse_shared(flat: Flattener, node: Node, shown: str, file: str, what: str) -> None:
    paths = flat.paths.get(id(node), [])
    if len(paths) <= 1:
        return
    others = ", ".join(format_key_path(p) or "(top level)" for p in paths[:4])
    raise ValuesError(
        f"Cannot write {shown} in {file}: {what} is shared through a YAML anchor and "
        f"alias (it is reachable as {others}), so changing it would change the others "
        f"too. Give {shown} its own value in the file (replace the alias by a copy or add "
        "an override next to a `<<` merge) or point `write:` at a key that is not shared."
    )


def _replace(text: str, found: Found, value: str, shown: str, file: str) -> str:
    node = found.node
    if node.style in ("|", ">"):
        raise ValuesError(
            f"Cannot write {shown} in {file}: it is a multi-line block scalar ({node.style}); "
            'write it as a one-line value (e.g. tag: "1.0") so it can be updated.'
        )
    flow = bool(found.parent.flow_style)
    new_text = render(value, style=node.style, flow=flow)
    if node.style is None and node.value == "":
        return _fill_empty(text, found, new_text, shown, file)
    start = _skip_properties(text, node.start_mark.index)
    return text[:start] + new_text + text[node.end_mark.index :]


def _fill_empty(text: str, found: Found, new_text: str, shown: str, file: str) -> str:
    """Write into an empty value (``tag:``, ``tag: &a``, ``tag: !!null``): a key with a null
    value is present. An anchor stays; an explicit tag goes, as it would keep the value null."""
    start, end = found.node.start_mark.index, found.node.end_mark.index
    if start < end:  # the node's span is its properties
        anchors = [p for p in text[start:end].split() if p.startswith("&")]
        return text[:start] + "".join(f"{a} " for a in anchors) + new_text + text[end:]
    at = _after_colon(text, found.key_node, shown, file)
    return text[:at] + " " + new_text + text[at:]


def _skip_properties(text: str, start: int) -> int:
    """Skip ``&anchor`` and ``!tag`` before a scalar: its node span starts at them."""
    while start < len(text) and text[start] in "&!":
        while start < len(text) and not text[start].isspace():
            start += 1
        while start < len(text) and text[start] in " \t":
            start += 1
    return start


def _after_colon(text: str, key: ScalarNode | None, shown: str, file: str) -> int:
    """Where an empty value (``tag:``) goes: right after the colon that follows the key."""
    if key is not None:
        at = key.end_mark.index
        while at < len(text) and text[at] in " \t":
            at += 1
        if text.startswith(":", at):
            return at + 1
    raise ValuesError(
        f"Cannot write {shown} in {file}: its empty value has no `key:` to attach to; "
        'give it an explicit value such as "" in the values file.'
    )


def _insert(text: str, mapping: MappingNode, key: str, value: str) -> str:
    """Add ``key: value`` to ``mapping``: a new last line in block style, or before ``}``."""
    flow = bool(mapping.flow_style)
    style = _sibling_style(mapping)
    pair = f"{_render_key(key, flow)}: {render(value, style=style, flow=flow)}"
    if flow:
        return _insert_flow(text, mapping, pair)
    newline = "\r\n" if "\r\n" in text else "\n"
    indent = " " * mapping.value[0][0].start_mark.column
    at = _end_of_line(text, _content_end(text, mapping))
    if at == len(text) and not text.endswith("\n"):
        return text + newline + indent + pair  # keep the file without a final newline
    return text[:at] + indent + pair + newline + text[at:]


def _insert_flow(text: str, mapping: MappingNode, pair: str) -> str:
    close = mapping.end_mark.index - 1
    at = close
    while at > 0 and text[at - 1] in " \t\r\n":
        at -= 1
    before = text[at - 1]
    glue = "" if before == "{" else " " if before == "," else ", "
    return text[:at] + glue + pair + text[at:]


def _sibling_style(mapping: MappingNode) -> str | None:
    """Quote a new value like the other values of its mapping (``"..."`` stays ``"..."``)."""
    for _, node in mapping.value:
        if isinstance(node, ScalarNode) and node.style in ("'", '"'):
            return str(node.style)
    return None


def _render_key(key: str, flow: bool) -> str:
    return key if plain_ok(key, flow=flow) and ":" not in key else double_quoted(key)


def _content_end(text: str, node: Node, after: int = 0) -> int:
    """Index just past the last character of ``node``'s own text.

    A block collection's end mark lies at the next token (past comments and blank
    lines), so the end of its last descendant is used instead. An alias has the marks
    of its anchor, earlier in the file; its own text starts after ``after``.
    """
    if node.start_mark.index < after:
        return _alias_end(text, after)
    if isinstance(node, ScalarNode) or getattr(node, "flow_style", False) or not node.value:
        return int(node.end_mark.index)
    last = node.value[-1]
    if isinstance(node, MappingNode):
        key, last = last
        return _content_end(text, last, int(key.end_mark.index))
    previous = node.value[-2] if len(node.value) > 1 else None
    after = _content_end(text, previous) if previous is not None else int(node.start_mark.index)
    return _content_end(text, last, after)


def _alias_end(text: str, at: int) -> int:
    """Skip indicators, spaces and comments up to ``*name`` and return its end."""
    while at < len(text) and text[at] != "*":
        if text[at] == "#":
            at = _end_of_line(text, at)
        else:
            at += 1
    while at < len(text) and not text[at].isspace() and text[at] not in ",]}":
        at += 1
    return at


def _end_of_line(text: str, at: int) -> int:
    """Index of the start of the next line (or the end of the text)."""
    if at > 0 and text[at - 1] == "\n":
        return at  # block scalars end after their line break
    newline = text.find("\n", at)
    return len(text) if newline < 0 else newline + 1


def _verify(
    edited: str,
    before: list[Flattener],
    document: int,
    concrete: tuple[str | int, ...],
    value: str,
    shown: str,
    file: str,
) -> None:
    """Re-parse the edited text: the target reads ``value``, everything else is as it was."""
    try:
        after = [flat.view for flat in views(parse(edited, file=file), file=file)]
    except ValuesError as exc:
        raise _internal(shown, file, "the result is not valid YAML") from exc
    expected = [flat.view for flat in before]
    expected[document] = {**expected[document], concrete: (STR_TAG, value)}
    if len(after) != len(expected):
        raise _internal(shown, file, "the number of documents changed")
    for index, (got, want) in enumerate(zip(after, expected, strict=True)):
        if got != want:
            changed = sorted(
                {format_key_path(p) for p in got.keys() ^ want.keys()}
                | {format_key_path(p) for p in got.keys() & want.keys() if got[p] != want[p]}
            )
            raise _internal(shown, file, f"document {index} would change at {changed[:3]}")


def _internal(shown: str, file: str, why: str) -> ValuesError:
    return ValuesError(
        f"Refusing to write {shown} in {file}: after the edit {why}, so the edit would not "
        "change exactly that value. The file was not changed; please report this with the "
        "values file, and update the value by hand meanwhile."
    )
