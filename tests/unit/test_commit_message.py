"""Commit messages and their trailers: pure text, table-driven."""

from __future__ import annotations

import subprocess
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image_updater.changes import Change, KeyChange
from image_updater.errors import InvalidReferenceError
from image_updater.gitops.message import (
    SUBJECT_LIMIT,
    commit_message,
    control_message,
    parse_trailers,
)

D1 = "sha256:" + "abcd1234" * 8
D2 = "sha256:" + "0" * 64
D3 = "sha256:" + "f" * 64


def change(app: str = "application-x", env: str = "dev", digest: str = D1,
           tag: str | None = "dev", old: str | None = D2) -> Change:
    return Change(app=app, env=env, file=f"{app}/values-{env}.yaml",
                  image=f"registry.example.com/team/{app}", tag=tag, digest=digest,
                  keys=(KeyChange(key="image.digest", old=old, new=digest),),
                  why=f"tag {tag} now points at {digest}")


SUBJECTS = [
    ([change()], "image-updater: application-x dev → sha256:abcd1234…"),
    ([change(app="a"), change(app="b", env="prod")], "image-updater: 2 updates (a dev, b prod)"),
    ([change(), change(env="staging"), change(app="app-y", env="prod")],
     "image-updater: 3 updates (application-x dev, application-x staging, …)"),
    ([change(app=f"a-rather-long-application-name-{i}") for i in range(5)],
     "image-updater: 5 updates (a-rather-long-application-name-0 dev, …)"),
]


@pytest.mark.parametrize(("changes", "subject"), SUBJECTS)
def test_subject(changes: list[Change], subject: str) -> None:
    first = commit_message(changes).splitlines()[0]
    assert first == subject
    assert len(first) <= SUBJECT_LIMIT


BODIES = [
    (change(), ["application-x dev in application-x/values-dev.yaml:",
                f"  image: registry.example.com/team/application-x:dev@{D1}",
                f"  image.digest: {D2} → {D1}",
                f"  why: tag dev now points at {D1}"]),
    (change(tag=None, old=None), [f"  image: registry.example.com/team/application-x@{D1}",
                                  f"  image.digest: (unset) → {D1}"]),
]


@pytest.mark.parametrize(("one", "lines"), BODIES)
def test_body_lists_file_keys_and_reason(one: Change, lines: list[str]) -> None:
    body = commit_message([one]).splitlines()
    for line in lines:
        assert line in body


#: what every update by the daemon's poll carries after the image's own trailers
POLL = {"previous_digest": D2, "action": "update", "source": "poll"}

TRAILERS = [
    ([change()], [{"app": "application-x", "env": "dev",
                   "image": "registry.example.com/team/application-x", "tag": "dev",
                   "digest": D1, **POLL}]),
    ([change(tag=None)], [{"app": "application-x", "env": "dev",
                           "image": "registry.example.com/team/application-x", "digest": D1,
                           **POLL}]),
    ([change(), change(env="prod", digest=D3, tag="prod")],
     [{"app": "application-x", "env": "dev", "image": "registry.example.com/team/application-x",
       "tag": "dev", "digest": D1, **POLL},
      {"app": "application-x", "env": "prod", "image": "registry.example.com/team/application-x",
       "tag": "prod", "digest": D3, **POLL}]),
    ([change(old=None)], [{"app": "application-x", "env": "dev",  # nothing before: no previous
                           "image": "registry.example.com/team/application-x", "tag": "dev",
                           "digest": D1, "action": "update", "source": "poll"}]),
    ([change(old="not-a-digest\nImage-Updater-App: x")],  # a hand edit is not repeated
     [{"app": "application-x", "env": "dev", "image": "registry.example.com/team/application-x",
       "tag": "dev", "digest": D1, "action": "update", "source": "poll"}]),
]


@pytest.mark.parametrize(("changes", "expected"), TRAILERS)
def test_trailers_round_trip(changes: list[Change], expected: list[dict[str, str]]) -> None:
    message = commit_message(changes)
    assert parse_trailers(message) == expected
    last = message.rstrip("\n").split("\n\n")[-1]
    assert all(line.startswith("Image-Updater-") for line in last.splitlines())


def test_git_itself_reads_the_trailer_block() -> None:
    message = commit_message([change(), change(env="prod", digest=D3, tag="prod")])
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=message,
                            capture_output=True, text=True, check=True).stdout
    assert parsed.count("Image-Updater-App: application-x") == 2
    assert f"Image-Updater-Digest: {D3}" in parsed


def test_repo_url_is_shown_without_credentials() -> None:
    message = commit_message([change()], repo_url="https://bot:hunter2@git.example.com/d.git")
    assert "Deploy repository: https://git.example.com/d.git" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(("bad", "what"), [
    ({"tag": "dev\nImage-Updater-Digest: sha256:evil"}, "tag"),
    ({"digest": "sha256:short"}, "digest"),
    ({"digest": D1 + "\nImage-Updater-App: evil"}, "digest"),
])
def test_untrusted_tags_and_digests_are_validated(bad: dict[str, str], what: str) -> None:
    args = {"tag": "dev", "digest": D1, **bad}
    with pytest.raises(InvalidReferenceError, match=what):
        commit_message([change(**args)])


def test_config_text_cannot_add_lines() -> None:
    sneaky = Change(app="x\nImage-Updater-App: forged", env="dev", file="f.yaml", image="img",
                    tag="dev", digest=D1, keys=(), why="r\n\nImage-Updater-Env: forged")
    assert parse_trailers(commit_message([sneaky])) == [
        {"app": "x Image-Updater-App: forged", "env": "dev", "image": "img", "tag": "dev",
         "digest": D1, "action": "update", "source": "poll"}]


def test_no_changes_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no change means no commit"):
        commit_message([])


PARSE = [
    ("subject only", []),
    ("", []),
    ("s\n\nImage-Updater-App: a\nSigned-off-by: X <x@x>\nImage-Updater-Env: e\n",
     [{"app": "a", "env": "e"}]),
    ("s\n\nImage-Updater-App: a\n\nplain last paragraph\n", []),  # git reads the last only
    ("s\n\nimage-updater-app: a\nIMAGE-UPDATER-DIGEST: d\n", [{"app": "a", "digest": "d"}]),
]


@pytest.mark.parametrize(("message", "expected"), PARSE)
def test_parse_trailers(message: str, expected: list[dict[str, str]]) -> None:
    assert parse_trailers(message) == expected


LOWER = "abcdefghijklmnopqrstuvwxyz"
names = st.builds(str.__add__, st.sampled_from(LOWER),
                  st.text(LOWER + "0123456789-", max_size=20))
tags = st.builds(str.__add__, st.sampled_from(LOWER.upper() + "0123456789_"),
                 st.text(LOWER + LOWER.upper() + "0123456789._-", max_size=30))
digests = st.builds("sha256:{}".format, st.text("0123456789abcdef", min_size=64, max_size=64))


# no deadline: the machine is shared, and speed belongs in bench/, not in tests
@settings(deadline=None)
@given(st.lists(st.tuples(names, names, st.none() | tags, digests), min_size=1, max_size=6))
def test_round_trip_for_any_valid_changes(rows: list[tuple[str, str, str | None, str]]) -> None:
    changes = [change(app=a, env=e, tag=t, digest=d) for a, e, t, d in rows]
    parsed = parse_trailers(commit_message(changes))
    assert [(p["app"], p["env"], p.get("tag"), p["digest"]) for p in parsed] == rows
    if len(rows) > 1 and len(rows[0][0]) + len(rows[0][1]) < 30:
        # several changes: the list is cut to fit; a single change is always named in full
        assert len(commit_message(changes).splitlines()[0]) <= SUBJECT_LIMIT


def test_a_person_s_rollback_says_who_why_and_what_ran_before() -> None:
    message = commit_message([change(digest=D3, old=D1)], action="rollback", source="person",
                             by="alice@example.com", reason="incident 4711\nforged: x")
    assert message.splitlines()[0] == "image-updater: rollback application-x dev → sha256:ffffffff…"
    assert parse_trailers(message) == [{
        "app": "application-x", "env": "dev", "image": "registry.example.com/team/application-x",
        "tag": "dev", "digest": D3, "previous_digest": D1, "action": "rollback",
        "source": "person", "by": "alice@example.com", "reason": "incident 4711 forged: x"}]


def test_reference_keys_give_their_digest_part_as_previous() -> None:
    ref = Change(app="a", env="dev", file="f.yaml", image="img", tag="v2", digest=D3,
                 keys=(KeyChange(key="image.ref", old=f"v1@{D1}", new=f"v2@{D3}"),), why="r")
    assert parse_trailers(commit_message([ref]))[0]["previous_digest"] == D1


@pytest.mark.parametrize("action", ["hold", "release"])
def test_hold_and_release_messages_carry_who_and_why(action: Literal["hold", "release"]) -> None:
    message = control_message(action, "application-x", "prod", by="bob", reason="freeze",
                              detail="was held by alice")
    assert message.startswith(f"image-updater: {action} application-x prod\n")
    assert parse_trailers(message) == [{"app": "application-x", "env": "prod",
                                        "action": action, "source": "person", "by": "bob",
                                        "reason": "freeze"}]
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=message,
                            capture_output=True, text=True, check=True).stdout
    assert f"Image-Updater-Action: {action}" in parsed
