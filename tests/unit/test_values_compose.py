"""The libyaml fast path gives exactly what ruamel gives, or declines.

Generated values-like and policy-like documents are read both ways: nodes (tags, values,
styles, marks) for values/document.py, and round-trip maps and lists (values, types and
``lc`` positions) for config/policies.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from image_updater.values.compose import compose_fast, load_round_trip

ROOT = Path(__file__).resolve().parents[2]

#: scalars whose meaning differs between YAML 1.1 and 1.2, or between resolvers
TRICKY = ["yes", "no", "on", "off", "y", "0o17", "017", "0x1F", "0b11", "1_000", "1.5",
          ".inf", "-.inf", ".nan", "1e3", "~", "null", "Null", "true", "False", "TRUE", "0",
          "-0", "+1", "12", "-7", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "=", "<<",
          "v1.2.3", "nginx:1.25", "sha256:abc", "é", "日本語", "😀", "a b", "x#y", "a: b",
          "- x", "[x]", "{y}", "'q'", '"d"', "#c", "@at", "`b", "%p", "?", ":", "-", ""]

scalar_text = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
key_text = st.one_of(st.sampled_from(["app", "image", "tag", "yes", "on", "1", "é", "<<"]),
                     st.from_regex(r"[a-z][a-z0-9_.-]{0,8}", fullmatch=True))


def _scalar(draw: Any, text: str) -> str:
    style = draw(st.sampled_from(["plain", "plain", "single", "double"]))
    if style == "double":
        return json.dumps(text, ensure_ascii=False)
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    return text


@st.composite
def documents(draw: Any) -> str:
    """A block-style document with nested mappings/sequences and flow leaves."""
    indent = draw(st.sampled_from([2, 4]))

    def block(depth: int, pad: int) -> list[str]:
        lines: list[str] = []
        for _ in range(draw(st.integers(1, 4))):
            key = _scalar(draw, draw(key_text))
            kind = draw(st.sampled_from(["scalar", "scalar", "map", "seq", "flow"]
                                        if depth < 3 else ["scalar", "flow"]))
            if draw(st.booleans()) and not lines:
                lines.append(" " * pad + "# a comment")
            if kind == "scalar":
                comment = draw(st.sampled_from(["", "", " # note"]))
                lines.append(f"{' ' * pad}{key}: {_scalar(draw, draw(scalar_text))}{comment}")
            elif kind == "flow":
                items = [_scalar(draw, draw(scalar_text)) for _ in range(draw(st.integers(0, 3)))]
                flow = draw(st.booleans())
                body = ("{" + ", ".join(f"k{i}: {v}" for i, v in enumerate(items)) + "}"
                        if flow else "[" + ", ".join(items) + "]")
                lines.append(f"{' ' * pad}{key}: {body}")
            elif kind == "map":
                lines.append(f"{' ' * pad}{key}:")
                lines.extend(block(depth + 1, pad + indent))
            else:
                lines.append(f"{' ' * pad}{key}:")
                seq_pad = pad + draw(st.sampled_from([0, indent]))
                for _ in range(draw(st.integers(1, 3))):
                    if draw(st.booleans()):
                        lines.append(f"{' ' * seq_pad}- {_scalar(draw, draw(scalar_text))}")
                    else:
                        inner = block(depth + 1, seq_pad + 2)
                        lines.append(" " * seq_pad + "- " + inner[0].lstrip())
                        lines.extend(inner[1:])
        return lines

    docs = ["\n".join(block(0, 0)) for _ in range(draw(st.integers(1, 3)))]
    starts = draw(st.booleans()) or len(docs) > 1
    text = "\n".join(("---\n" if starts else "") + doc for doc in docs)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return text.replace("\n", newline) + draw(st.sampled_from(["", newline]))


def _node_sig(node: Node | None) -> Any:
    if node is None:
        return None
    marks = tuple((m.index, m.line, m.column) for m in (node.start_mark, node.end_mark))
    base = (type(node).__name__, node.tag, marks)
    if isinstance(node, ScalarNode):
        return (*base, node.value, node.style)
    if isinstance(node, SequenceNode):
        return (*base, node.flow_style, [_node_sig(n) for n in node.value])
    assert isinstance(node, MappingNode)
    return (*base, node.flow_style, [(_node_sig(k), _node_sig(v)) for k, v in node.value])


def _data_sig(data: Any) -> Any:
    """Value, exact type and every ``lc`` position ruamel's round-trip loader records."""
    if isinstance(data, CommentedMap):
        return ("map", data.lc.line, data.lc.col, dict(data.lc.data or {}), data.fa.flow_style(),
                [(_data_sig(k), _data_sig(v)) for k, v in data.items()])
    if isinstance(data, CommentedSeq):
        return ("seq", data.lc.line, data.lc.col, dict(data.lc.data or {}), data.fa.flow_style(),
                [_data_sig(v) for v in data])
    return (type(data).__name__, data)


def _ruamel_nodes(text: str) -> list[Any] | Exception:
    try:
        return [_node_sig(n) for n in YAML(typ="safe", pure=True).compose_all(text)]
    except Exception as exc:
        return exc


def _ruamel_data(text: str) -> list[Any] | Exception:
    try:
        return [_data_sig(d) for d in YAML(typ="rt").load_all(text)]
    except Exception as exc:
        return exc


def assert_same_or_declined(text: str) -> tuple[bool, bool]:
    """Both fast readers agree with ruamel; says which of them did not decline."""
    nodes = compose_fast(text)
    expected_nodes = _ruamel_nodes(text)
    if nodes is not None:
        assert not isinstance(expected_nodes, Exception), (text, expected_nodes)
        assert [_node_sig(n) for n in nodes] == expected_nodes, text
    data = load_round_trip(text)
    expected_data = _ruamel_data(text)
    if data is not None:
        assert not isinstance(expected_data, Exception), (text, expected_data)
        assert [_data_sig(d) for d in data] == expected_data, text
    return nodes is not None, data is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_generated_documents_read_as_ruamel_reads_them(text: str) -> None:
    assert_same_or_declined(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab: -#'\"\n[]{},&*!|>%?é\t\r")), max_size=40))
def test_arbitrary_text_reads_as_ruamel_reads_it_or_is_declined(text: str) -> None:
    assert_same_or_declined(text)


def test_typical_files_take_the_fast_path() -> None:
    """The repository's example policies and most values fixtures are not declined."""
    policies = sorted((ROOT / "policies").rglob("*.yaml"))
    values = sorted((ROOT / "tests/unit/values_testdata").rglob("original.yaml"))
    assert policies and values
    for policy in policies:
        assert assert_same_or_declined(policy.read_text(encoding="utf-8")) == (True, True)
    fast = [f for f in values if assert_same_or_declined(f.read_text(encoding="utf-8"))[0]]
    assert len(fast) >= len(values) * 2 // 3, [f.parent.name for f in values if f not in fast]


@pytest.mark.parametrize("text", [
    "a: é\nb: 日本語 # ü\nc: \"😀\"\nd: x\n",  # marks are character indices, not bytes
    "a: 1\r\nb:\r\n  - x\r\n  - y\r\n",  # CRLF counts as one line break
    "a: b\nc: d",  # no final line break: ruamel's end marks stop at the text's end
    "",  # no document at all
    "# only a comment\n",
    "---\na: 1\n---\nb: 2\n...\n---\n- c\n",  # several documents
    "a: {b: [1, 2], c: {d: e}}\n",  # flow collections
    "a: |\n  text\nb: >-\n  folded\n",  # block scalars (nodes only; data declines)
    "a: x&y!z\nb: 'R&D!'\n",  # "&" and "!" inside scalars are no anchors or tags
])
def test_fast_path_reads_these_exactly(text: str) -> None:
    assert compose_fast(text) is not None
    assert_same_or_declined(text)


@pytest.mark.parametrize(("case", "text"), [
    ("syntax error", "a: [b\n"),
    ("bad indentation", "a:\n  b: 1\n c: 2\n"),
    ("YAML directive", "%YAML 1.1\n---\na: yes\n"),
    ("explicit tag", "a: !!str 1\n"),
    ("local tag", "a: !thing x\n"),
    ("anchor and alias", "a: &x 1\nb: *x\n"),
    ("anchor alone", "a: &x 1\n"),
    ("anchor in a flow sequence", "a: [&x 1, 2]\n"),
    ("alias to a mapping", "a: {b: 1}\nc: *a\n"),
    ("merge key", "a: {x: 1}\nb:\n  <<: {y: 2}\n"),
    ("empty value", "a:\nb: 1\n"),
    ("empty document", "---\n"),
    ("tab", "a:\tb\n"),
    ("byte order mark", "\ufeffa: 1\n"),
    ("lone carriage return", "a: 1\rb: 2\n"),
    ("next line character", "a: x\x85y\n"),
    ("line separator", "a: x\u2028y\n"),
    ("non-printable character", "a: \x07\n"),
    ("lone surrogate", "a: \ud800\n"),
])
def test_declines_what_it_does_not_read_identically(case: str, text: str) -> None:
    assert compose_fast(text) is None, case
    assert load_round_trip(text) is None, case


@pytest.mark.parametrize(("case", "text"), [
    ("duplicate key", "a: 1\na: 2\n"),
    ("float", "a: 1.5\n"),
    ("octal integer", "a: 0o17\n"),
    ("zero", "a: 0\n"),
    ("timestamp", "a: 2001-12-14\n"),
    ("block scalar", "a: |\n  x\n"),
    ("complex key", "? [a]\n: 1\n"),
])
def test_round_trip_declines_what_ruamel_builds_differently(case: str, text: str) -> None:
    assert compose_fast(text) is not None, case  # the nodes are fine ...
    assert load_round_trip(text) is None, case  # ... ruamel's objects are left to ruamel
    assert_same_or_declined(text)


def test_yaml_1_2_core_schema_resolution() -> None:
    nodes = compose_fast("a: yes\nb: on\nc: 0o17\nd: 017\ne: ~\nf: TRUE\n")
    assert nodes is not None and isinstance(nodes[0], MappingNode)
    tags = {k.value: v.tag.rsplit(":", 1)[1] for k, v in nodes[0].value}
    assert tags == {"a": "str", "b": "str", "c": "int", "d": "int", "e": "null", "f": "bool"}


def test_without_libyaml_everything_goes_to_ruamel(monkeypatch: pytest.MonkeyPatch) -> None:
    from image_updater.config.policies import load_text
    from image_updater.values import compose
    from image_updater.values.editor import set_scalar

    monkeypatch.setattr(compose, "LIBYAML", False)
    assert compose_fast("a: 1\n") is None and load_round_trip("a: 1\n") is None
    assert set_scalar("image:\n  tag: v1\n", "image.tag", "v2", file="v.yaml") == \
        "image:\n  tag: v2\n"
    assert load_text("app: [x\n", "p.yaml")[1][0].line == 2  # ruamel's syntax error


def test_declined_text_keeps_ruamel_messages() -> None:
    """A syntax error declines the fast path; the values error is ruamel's, as before."""
    from image_updater.errors import ValuesError
    from image_updater.values.document import parse

    with pytest.raises(ValuesError, match=r"v\.yaml is not valid YAML: could not find expected ':' "
                       r"at line 4, column 1 \(while scanning a simple key\)"):
        parse("a:\n b: 1\nc\n", file="v.yaml")
