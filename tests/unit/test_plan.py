"""The pure edit step of a cycle: what is written, what is held back, what is refused."""

from __future__ import annotations

import pytest

from image_updater.engine.plan import plan_edit, read_current
from image_updater.engine.resolve import Resolved
from image_updater.errors import ValuesError
from image_updater.model import App, Environment, GitTarget, Strategy, TagFilter, WriteSpec

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
VALUES = f"""\
# prod values
image:
  repository: registry.example.com/team/app
  tag: "1.4.2"   # kept in sync by image-updater
  digest: {D1}
  ref: "1.4.2@{D1}"
"""


def env(kind: str = "semver", **write: tuple[str, ...]) -> Environment:
    spec = WriteSpec(**write) if write else WriteSpec(tag=("image", "tag"),
                                                      digest=("image", "digest"))
    return Environment(name="prod", file="app/values-prod.yaml",
                       strategy=Strategy(kind=kind, constraint="^1", tag="prod"), write=spec)


def app(e: Environment) -> App:
    return App(name="app", image="registry.example.com/team/app",
               git=GitTarget(url="file:///deploy.git"), environments=(e,))


@pytest.mark.parametrize(("chosen", "changed"), [
    ("1.4.3", True),    # forward: written
    ("1.4.2", False),   # same tag and digest: nothing to do
    ("1.3.9", False),   # lower than what runs: a semver policy never moves backwards
    ("1.4.2-rc.1", False),
])
def test_semver_moves_forward_only(chosen: str, changed: bool) -> None:
    e = env()
    res = Resolved(tag=chosen, digest=D2 if chosen != "1.4.2" else D1, reason="r")
    new_text, change, why = plan_edit(app(e), e, res, VALUES)
    assert (change is not None) == changed
    if not changed and chosen != "1.4.2":
        assert "never moves an environment backwards" in why
        assert new_text == VALUES


def test_tag_and_digest_go_to_their_keys_one_line_each() -> None:
    e = env()
    new_text, change, _ = plan_edit(app(e), e, Resolved("1.5.0", D2, "r"), VALUES)
    assert change is not None
    assert [(k.key, k.old, k.new) for k in change.keys] == [
        ("image.tag", "1.4.2", "1.5.0"), ("image.digest", D1, D2)]
    changed = [(a, b) for a, b in zip(VALUES.splitlines(), new_text.splitlines(), strict=True)
               if a != b]
    assert changed == [('  tag: "1.4.2"   # kept in sync by image-updater',
                        '  tag: "1.5.0"   # kept in sync by image-updater'),
                       (f"  digest: {D1}", f"  digest: {D2}")]


def test_reference_key_receives_tag_at_digest() -> None:
    e = env("digest", reference=("image", "ref"))
    new_text, change, _ = plan_edit(app(e), e, Resolved("prod", D2, "r"), VALUES)
    assert change is not None and f'  ref: "prod@{D2}"' in new_text
    assert read_current(e, new_text).digest == D2


def test_missing_key_is_refused_not_invented() -> None:
    e = env("digest", digest=("image", "sha"))
    with pytest.raises(ValuesError) as info:
        plan_edit(app(e), e, Resolved("prod", D2, "r"), VALUES)
    assert "has no key image.sha" in str(info.value)
    assert "app/values-prod.yaml" in str(info.value)


def test_never_backwards_reads_tags_through_extract() -> None:
    """The held tag is read like candidates: ``app-1.10.0`` is 1.10.0, higher than 1.9.0."""
    values = 'image:\n  tag: "app-1.10.0"\n  digest: ""\n'
    e = Environment(name="prod", file="app/values-prod.yaml", write=WriteSpec(
        tag=("image", "tag"), digest=("image", "digest")), strategy=Strategy(
        kind="semver", filter=TagFilter(extract=r"^app-(?P<value>.+)$")))
    new_text, change, why = plan_edit(app(e), e, Resolved("app-1.9.0", D2, "r"), values)
    assert change is None and new_text == values
    assert why.startswith("keeps app-1.10.0: it is higher than app-1.9.0")
    _, forward, _ = plan_edit(app(e), e, Resolved("app-1.11.0", D2, "r"), values)
    assert forward is not None and forward.tag == "app-1.11.0"


@pytest.mark.parametrize("written", ["digest: ~", "digest:", "digest: null", "digest: # later"])
def test_a_key_with_a_null_value_is_present_and_filled_in(written: str) -> None:
    values = f"image:\n  tag: prod\n  {written}\n"
    e = env("digest", digest=("image", "digest"))
    new_text, change, _ = plan_edit(app(e), e, Resolved("prod", D2, "r"), values)
    assert change is not None and [(k.key, k.old, k.new) for k in change.keys] == [
        ("image.digest", None, D2)]
    assert read_current(e, new_text).digest == D2
    assert len([a for a, b in zip(values.splitlines(), new_text.splitlines(), strict=True)
                if a != b]) == 1


def test_an_absent_key_under_a_null_parent_is_still_refused() -> None:
    e = env("digest", digest=("image", "digest"))
    with pytest.raises(ValuesError, match=r"has no key image\.digest"):
        plan_edit(app(e), e, Resolved("prod", D2, "r"), "image:\n  tag: prod\n")
    with pytest.raises(ValuesError, match=r"has no key image\.digest"):
        plan_edit(app(e), e, Resolved("prod", D2, "r"), "image: ~\n")


def test_a_values_file_over_the_cap_is_refused_before_parsing() -> None:
    e = env("digest", digest=("image", "digest"))
    huge = VALUES + "# " + "x" * 2048 + "\n"
    with pytest.raises(ValuesError) as info:
        plan_edit(app(e), e, Resolved("prod", D2, "r"), huge, max_bytes=1024)
    message = str(info.value)
    assert "app/values-prod.yaml" in message and f"{len(huge)} bytes" in message
    assert "limits.values_file_bytes" in message
    with pytest.raises(ValuesError, match=r"limits\.values_file_bytes"):
        read_current(e, "é" * 600, max_bytes=1024)  # 1200 bytes in 600 characters
    assert read_current(e, VALUES, max_bytes=1024).digest == D1


def test_a_nul_byte_in_a_values_file_is_a_clean_error_naming_the_line() -> None:
    e = env("digest", digest=("image", "digest"))
    with pytest.raises(ValuesError) as info:
        plan_edit(app(e), e, Resolved("prod", D2, "r"), VALUES.replace("# kept", "\x00 kept"))
    assert "app/values-prod.yaml" in str(info.value) and "line 4" in str(info.value)
    assert "#x0000" in str(info.value)
