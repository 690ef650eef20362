"""values.document.parse reuses one YAML per thread: no state may pass between parses."""

from __future__ import annotations

import pytest

from image_updater.errors import ValuesError
from image_updater.values.document import parse


def test_an_anchor_from_a_failed_parse_is_not_seen_by_the_next() -> None:
    with pytest.raises(ValuesError, match=r"first\.yaml"):
        parse("a: &x 1\nb: [unclosed\n", file="first.yaml")
    with pytest.raises(ValuesError, match=r"second\.yaml"):
        parse("c: *x\n", file="second.yaml")  # undefined alias, whatever came before


def test_documents_parse_alike_one_after_another() -> None:
    first = parse("a: &x 1\nb: *x\n---\nc: 2\n", file="v.yaml")
    again = parse("a: &x 1\nb: *x\n---\nc: 2\n", file="v.yaml")
    assert len(first) == len(again) == 2
    assert [n.tag for n in first if n] == [n.tag for n in again if n]
