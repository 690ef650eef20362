"""The values editor: golden folders for edits, tables for key paths, reads and errors.

Golden cases live in ``values_testdata/<case>/`` as ``original.yaml``, ``expected.yaml``
and ``edit.json`` (``path``, ``value``, optional ``document`` and ``change: insert``).
The expected files were made by editing one line by hand, not by this editor.
Files are read and compared as bytes so that CRLF endings and a missing final newline
are part of what is checked.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_updater.errors import ValuesError
from image_updater.values import (
    format_key_path,
    parse_key_path,
    read_scalar,
    read_scalars,
    set_scalar,
    values_diff,
)

TESTDATA = Path(__file__).parent / "values_testdata"
CASES = sorted(p.name for p in TESTDATA.iterdir() if p.is_dir())


def _load(case: str) -> tuple[str, str, dict[str, object]]:
    folder = TESTDATA / case
    # bytes -> str without newline translation: CRLF stays CRLF
    original = (folder / "original.yaml").read_bytes().decode("utf-8")
    expected = (folder / "expected.yaml").read_bytes().decode("utf-8")
    edit = json.loads((folder / "edit.json").read_bytes())
    return original, expected, edit


def _changed_lines(old: str, new: str) -> list[tuple[str, int, int]]:
    """Non-equal diff operations as (kind, lines removed, lines added)."""
    matcher = difflib.SequenceMatcher(
        a=old.splitlines(keepends=True), b=new.splitlines(keepends=True), autojunk=False
    )
    return [(op, i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


def test_there_are_enough_large_golden_cases() -> None:
    assert len(CASES) >= 14
    for case in CASES:
        original, _, _ = _load(case)
        assert 100 <= len(original.splitlines()) <= 300, case


@pytest.mark.parametrize("case", CASES)
def test_golden_edit_is_byte_for_byte(case: str) -> None:
    original, expected, edit = _load(case)
    path, value = str(edit["path"]), str(edit["value"])
    document = int(edit.get("document", 0))  # type: ignore[call-overload]

    result = set_scalar(original, path, value, file=f"{case}/values.yaml", document=document)

    assert result.encode("utf-8") == expected.encode("utf-8")
    if edit.get("change") == "insert":
        assert _changed_lines(original, result) == [("insert", 0, 1)]
    else:
        assert _changed_lines(original, result) == [("replace", 1, 1)]
    assert read_scalar(original, path, file="v", document=document) != value
    assert read_scalar(result, path, file="v", document=document) == value


@pytest.mark.parametrize("case", CASES)
def test_golden_setting_the_current_value_returns_the_text_unchanged(case: str) -> None:
    _, expected, edit = _load(case)
    document = int(edit.get("document", 0))  # type: ignore[call-overload]
    again = set_scalar(expected, str(edit["path"]), str(edit["value"]), file="v", document=document)
    assert again is expected or again == expected


def test_crlf_case_really_has_crlf_endings() -> None:
    original, expected, _ = _load("05_crlf_grafana")
    assert original.count("\r\n") == original.count("\n") > 100
    assert expected.count("\r\n") == expected.count("\n")


# --- key paths ----------------------------------------------------------------------

KEY_PATHS = [
    ("image.tag", ("image", "tag")),
    ("images.0.digest", ("images", 0, "digest")),
    ('annotations."example.com/x"', ("annotations", "example.com/x")),
    ('a."say \\"hi\\"".b', ("a", 'say "hi"', "b")),
    ('a."0"', ("a", "0")),
    ("tag", ("tag",)),
    ("a.-1", ("a", "-1")),
]


@pytest.mark.parametrize(("text", "path"), KEY_PATHS)
def test_parse_key_path(text: str, path: tuple[str | int, ...]) -> None:
    assert parse_key_path(text) == path
    assert parse_key_path(format_key_path(path)) == path


BAD_KEY_PATHS = [
    ("", "1-512 characters"),
    ("image..tag", "empty"),
    (".tag", "empty"),
    ("image.", "empty"),
    ('a."b', "not closed"),
    ('a."b"c', "followed by a dot"),
    ('a.b"c', "quote"),
    ('a.""', "empty"),
    ("a. b", "spaces"),
    ("a.\nb", "control"),
]


@pytest.mark.parametrize(("text", "why"), BAD_KEY_PATHS)
def test_parse_key_path_rejects(text: str, why: str) -> None:
    with pytest.raises(ValuesError) as info:
        parse_key_path(text)
    message = str(info.value)
    assert repr(text)[:60] in message
    assert why in message
    assert "image.tag" in message  # the accepted form is shown


segments = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=12),
)


@given(st.lists(segments, min_size=1, max_size=6).map(tuple))
def test_format_then_parse_is_the_identity(path: tuple[str | int, ...]) -> None:
    assert parse_key_path(format_key_path(path)) == path


# --- reading ----------------------------------------------------------------------------

DOC = """\
image:
  repository: registry.example.com/app
  tag: 1.10
  quoted: "v2"
  empty: ""
  nothing:
  tilde: ~
images:
  - name: a
    tag: a1
  - {name: b, tag: b1}
base: &base
  pullPolicy: IfNotPresent
  tag: from-base
job:
  <<: *base
  name: job
scalar: just-text
"""

READS = [
    ("image.tag", "1.10"),  # as written, not the float 1.1
    ("image.quoted", "v2"),
    ("image.empty", ""),
    ("image.nothing", None),
    ("image.tilde", None),
    ("image.digest", None),
    ("missing.tag", None),
    ("images.0.tag", "a1"),
    ("images.1.tag", "b1"),
    ("images.7.tag", None),
    ("job.tag", "from-base"),  # through the << merge, as Helm reads it
    ("job.name", "job"),
]


@pytest.mark.parametrize(("path", "value"), READS)
def test_read_scalar(path: str, value: str | None) -> None:
    assert read_scalar(DOC, path, file="values.yaml") == value


def test_read_scalar_takes_a_parsed_path_and_a_document_index() -> None:
    text = "a: {tag: one}\n---\na: {tag: two}\n"
    assert read_scalar(text, ("a", "tag"), file="v.yaml") == "one"
    assert read_scalar(text, "a.tag", file="v.yaml", document=1) == "two"
    assert read_scalar("", "a.tag", file="v.yaml") is None


READ_ERRORS = [
    (DOC, "scalar.tag", ["values.yaml", "scalar.tag", "scalar is a single value"]),
    (DOC, "image", ["values.yaml", "image is a mapping"]),
    (DOC, "images", ["values.yaml", "images is a list"]),
    (DOC, "images.name", ["values.yaml", "images is a list", "number"]),
    ("a: [1, 2\nb: 3\n", "a", ["values.yaml", "not valid YAML", "line 2, column 2"]),
    ("a:\n\tb: 1\n", "a.b", ["values.yaml", "not valid YAML", "line 2, column 1"]),
    ("a: *nowhere\n", "a", ["values.yaml", "undefined alias", "line 1"]),
    ("a: 1\n", "a", []),  # control: no error
    ("a: 1\n---\nb: 2\n", "b", []),
]


@pytest.mark.parametrize(("text", "path", "words"), READ_ERRORS)
def test_read_scalar_errors(text: str, path: str, words: list[str]) -> None:
    if not words:
        read_scalar(text, path, file="values.yaml")
        return
    with pytest.raises(ValuesError) as info:
        read_scalar(text, path, file="values.yaml")
    for word in words:
        assert word in str(info.value)


def test_read_scalars_reads_several_keys() -> None:
    values = read_scalars(DOC, ["image.tag", ("image", "quoted"), "image.digest"], file="v")
    assert values == {
        ("image", "tag"): "1.10",
        ("image", "quoted"): "v2",
        ("image", "digest"): None,
    }


def test_read_scalar_reports_a_missing_document() -> None:
    with pytest.raises(ValuesError, match=r"values.yaml has 1 YAML document.*no document 3"):
        read_scalar("a: 1\n", "a", file="values.yaml", document=3)


# --- setting: styles ------------------------------------------------------------------

STYLES = [
    # (line before, value, line after)
    ("tag: v1", "v2", "tag: v2"),
    ("tag: v1", "1.10", 'tag: "1.10"'),  # would read back as a float
    ("tag: v1", "yes", 'tag: "yes"'),  # a bool for Helm's YAML 1.1 parser
    ("tag: v1", "on", 'tag: "on"'),
    ("tag: v1", "null", 'tag: "null"'),
    ("tag: v1", "2024-01-01", 'tag: "2024-01-01"'),  # a timestamp
    ("tag: v1", "0777", 'tag: "0777"'),  # octal in YAML 1.1
    ("tag: v1", "1e3", 'tag: "1e3"'),
    ("tag: v1", "-rc1", 'tag: "-rc1"'),  # would start a sequence
    ("tag: v1", "#1", 'tag: "#1"'),  # would start a comment
    ("digest: sha256:aa", "sha256:bb", "digest: sha256:bb"),  # ':' without space is fine
    ("tag: 'v1'", "v2", "tag: 'v2'"),
    ("tag: 'v1'", "it's", "tag: 'it''s'"),
    ('tag: "v1"', "v2", 'tag: "v2"'),
    ('tag: "v1"', 'a"b\\c', 'tag: "a\\"b\\\\c"'),
    ('tag: ""', "new", 'tag: "new"'),
    ("tag: ''", "new", "tag: 'new'"),
    ("tag:", "v2", "tag: v2"),
    ("tag: ~", "v2", "tag: v2"),
    ("tag: null", "v2", "tag: v2"),
    ("tag: &t", "v2", "tag: &t v2"),  # a null value is present, anchored or not
    ("tag: !!null", "v2", "tag: v2"),  # the explicit null tag goes, or it would stay null
    ("tag: &t !!null # c", "v2", "tag: &t v2 # c"),
    ("tag: # fill me", "v2", "tag: v2 # fill me"),
    ("tag: &t v1 # anchored", "v2", "tag: &t v2 # anchored"),
    ("tag: !!str 1.0", "2.0", 'tag: !!str "2.0"'),  # quoting is harmless here
    ("tag: v1   ", "v2", "tag: v2   "),
    ("image: {repository: x, tag: v1}", "v2", "image: {repository: x, tag: v2}"),
    ("image: {repository: x, tag: v1}", "sha256:ab", 'image: {repository: x, tag: "sha256:ab"}'),
    ("image: {repository: x}", "v2", "image: {repository: x, tag: v2}"),
    ("image: {}", "v2", "image: {tag: v2}"),
    ("image: [a, b]", "v2", None),  # error: a list
]


@pytest.mark.parametrize(("before", "value", "after"), STYLES)
def test_set_scalar_styles(before: str, value: str, after: str | None) -> None:
    key = before.split(":")[0]
    path = "x.image.tag" if key == "image" else f"x.{key}"
    text = f"# head\nx:\n  {before}\n  other: 1\n"
    if after is None:
        with pytest.raises(ValuesError, match="a list"):
            set_scalar(text, path, value, file="values.yaml")
        return
    result = set_scalar(text, path, value, file="values.yaml")
    assert result == f"# head\nx:\n  {after}\n  other: 1\n"
    assert read_scalar(result, path, file="values.yaml") == value


def test_set_scalar_rewrites_a_number_that_only_looks_equal() -> None:
    # plain 1.10 is the float 1.1 to Helm, so "1.10" is not already there
    assert set_scalar("tag: 1.10\n", "tag", "1.10", file="v") == 'tag: "1.10"\n'


def test_set_scalar_same_value_returns_identical_text() -> None:
    text = "image:\n  tag: 'v1'   # keep\n"
    assert set_scalar(text, "image.tag", "v1", file="v") is text


# --- setting: layout --------------------------------------------------------------------


def test_insertion_keeps_crlf_and_indentation() -> None:
    text = "image:\r\n    repository: r   # c\r\n    tag: v1\r\n\r\n# next\r\nother: 1\r\n"
    result = set_scalar(text, "image.digest", "sha256:ab", file="v")
    assert result == (
        "image:\r\n    repository: r   # c\r\n    tag: v1\r\n    digest: sha256:ab\r\n"
        "\r\n# next\r\nother: 1\r\n"
    )


def test_insertion_at_the_end_of_a_file_without_final_newline() -> None:
    result = set_scalar("a: 1\nimage:\n  tag: v1", "image.digest", "sha256:ab", file="v")
    assert result == "a: 1\nimage:\n  tag: v1\n  digest: sha256:ab"


def test_insertion_after_a_nested_block_and_an_alias() -> None:
    text = (
        "x: &x 1\nimage:\n  tag: v1\n  pull:\n    - a\n    - *x\n  block: |\n    text\n\n"
        "# about y\ny: 2\n"
    )
    result = set_scalar(text, "image.digest", "d1", file="v")
    assert result == text.replace("    text\n\n", "    text\n\n  digest: d1\n")
    alias_last = "x: &x 1\nimage:\n  tag: v1\n  pull:\n    - a\n    - *x   # c\n\ny: 2\n"
    result = set_scalar(alias_last, "image.digest", "d1", file="v")
    assert result == alias_last.replace("*x   # c\n", "*x   # c\n  digest: d1\n")


def test_insertion_in_a_sequence_item_mapping() -> None:
    text = (
        "containers:\n- name: a\n  image: {repository: r}\n- name: b\n  image:\n    repository: s\n"
    )
    result = set_scalar(text, "containers.1.image.tag", "v9", file="v")
    assert result == text + "    tag: v9\n"


def test_multi_document_edit_touches_only_its_document() -> None:
    text = "---\na:\n  tag: v1\n---\na:\n  tag: v1\n...\n"
    assert set_scalar(text, "a.tag", "v2", file="v", document=1) == (
        "---\na:\n  tag: v1\n---\na:\n  tag: v2\n...\n"
    )
    assert (
        set_scalar(text, "a.tag", "v2", file="v") == "---\na:\n  tag: v2\n---\na:\n  tag: v1\n...\n"
    )


def test_byte_order_mark_is_kept() -> None:
    assert set_scalar("\ufeffa:\n  tag: v1\n", "a.tag", "v2", file="v") == "\ufeffa:\n  tag: v2\n"


def test_a_key_only_merged_in_gets_a_local_override() -> None:
    text = "base: &b\n  tag: v1\n  pull: Always\njob:\n  <<: *b\n  name: j\n"
    result = set_scalar(text, "job.tag", "v2", file="v")
    assert result == text + "  tag: v2\n"
    assert read_scalar(result, "base.tag", file="v") == "v1"
    assert read_scalar(result, "job.tag", file="v") == "v2"


# --- setting: errors --------------------------------------------------------------------

SET_ERRORS = [
    # (text, path, value, words that must be in the message)
    (
        "image:\n  tag: v1\n",
        "sidecar.image.tag",
        "v2",
        ["values.yaml", "sidecar.image.tag", "sidecar does not exist", "write:"],
    ),
    ("image:\n", "image.tag", "v2", ["values.yaml", "image.tag", "image is empty", "write:"]),
    ("image:\n  tag: v1\n", "image.tag.x", "v2", ["values.yaml", "image.tag.x", "single value"]),
    ("image:\n  tag: v1\n", "image", "v2", ["values.yaml", "image is a mapping"]),
    (
        "images:\n  - tag: v1\n",
        "images.3.tag",
        "v2",
        ["values.yaml", "images.3.tag", "only 1 item", "write:"],
    ),
    ("images:\n  - a\n", "images.1", "v2", ["values.yaml", "images.1", "list"]),
    ("image: [\n", "image.tag", "v2", ["values.yaml", "not valid YAML", "line 2, column 1"]),
    (
        "image:\n  tag: v1\n  tag: v2\n",
        "image.tag",
        "v3",
        ["values.yaml", "image.tag", "more than once", "lines 2, 3"],
    ),
    ("image:\n  tag: |\n    v1\n", "image.tag", "v2", ["values.yaml", "image.tag", "block scalar"]),
    ("image:\n  tag: v1\n", "image.tag", "v2\nevil: 1", ["values.yaml", "image.tag", "\\n"]),
    ("image:\n  tag: v1\n", "image.tag", "v2\x1b[31m", ["values.yaml", "\\x1b"]),
    ("image:\n  tag: v1\n", "image.tag", "v 2", ["values.yaml", "spaces"]),
    ("image:\n  tag: v1\n", "image.tag", "", ["values.yaml", "non-empty"]),
    ("image:\n  tag: v1\n", "image.tag", "v" * 2000, ["values.yaml", "at most 1024"]),
    ("image:\n  tag: v1\n", "image..tag", "v2", ["image..tag", "empty"]),
    # shared through anchors: changing one place would change another image too
    (
        "main:\n  tag: &t v1\nsidecar:\n  tag: *t\n",
        "main.tag",
        "v2",
        ["values.yaml", "main.tag", "sidecar.tag", "anchor"],
    ),
    (
        "main:\n  tag: &t v1\nsidecar:\n  tag: *t\n",
        "sidecar.tag",
        "v2",
        ["values.yaml", "sidecar.tag", "main.tag"],
    ),
    (
        "base: &b\n  tag: v1\napp: *b\n",
        "app.digest",
        "sha256:ab",
        ["values.yaml", "app.digest", "base", "shared"],
    ),
]


@pytest.mark.parametrize(("text", "path", "value", "words"), SET_ERRORS)
def test_set_scalar_errors(text: str, path: str, value: str, words: list[str]) -> None:
    with pytest.raises(ValuesError) as info:
        set_scalar(text, path, value, file="values.yaml")
    for word in words:
        assert word in str(info.value)


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    text = "\n".join(lines) + "\nimage:\n  tag: v1\n"
    with pytest.raises(ValuesError, match="aliases"):
        set_scalar(text, "image.tag", "v2", file="values.yaml")


tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,40}", fullmatch=True)


@given(tags, st.sampled_from(["tag: old", "tag: 'old'", 'tag: "old"', "tag:", "tag: {a: 1}"]))
def test_any_valid_tag_reads_back_and_changes_one_line(tag: str, line: str) -> None:
    text = f"# c\nimage:\n  repository: r  # r\n  {line}\n  pull: Always\n"
    if "{" in line:
        with pytest.raises(ValuesError):
            set_scalar(text, "image.tag", tag, file="v")
        return
    result = set_scalar(text, "image.tag", tag, file="v")
    assert read_scalar(result, "image.tag", file="v") == tag
    assert _changed_lines(text, result) in ([], [("replace", 1, 1)])


# --- diff -------------------------------------------------------------------------------


def test_values_diff() -> None:
    old = "image:\n  tag: v1\n"
    new = set_scalar(old, "image.tag", "v2", file="env/values.yaml")
    diff = values_diff(old, new, "env/values.yaml")
    assert diff.startswith("--- a/env/values.yaml\n+++ b/env/values.yaml\n")
    assert "-  tag: v1\n+  tag: v2\n" in diff
    assert values_diff(old, old, "env/values.yaml") == ""


def test_values_diff_marks_a_missing_final_newline() -> None:
    diff = values_diff("tag: v1", "tag: v2", "v.yaml")
    assert diff.endswith(
        "-tag: v1\n\\ No newline at end of file\n+tag: v2\n\\ No newline at end of file\n"
    )
