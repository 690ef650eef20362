"""The pure status derivation: one case per state, and precedence between them."""

from __future__ import annotations

import pytest

from image_updater.config.holds import Hold
from image_updater.engine.resolve import Resolved
from image_updater.engine.status import EnvStatus, Observed, derive, status_table
from image_updater.gitops.history import HistoryEntry

A, B, C = ("sha256:" + c * 64 for c in "abc")
HOLD = Hold(app="x", env="prod", kind="hold", by="alice", reason="incident 1",
            since="2026-11-29T23:00:00Z")
ROLLBACK = Hold(app="x", env="prod", kind="rollback", by="bob", reason="500s",
                since="2026-11-29T23:10:00Z", digest=A)


def entry(action: str, old: str | None, new: str) -> HistoryEntry:
    return HistoryEntry(commit="f" * 40, when="2026-11-29T22:00:00+00:00", app="x", env="prod",
                        action=action, by="Someone <s@example.com>",  # type: ignore[arg-type]
                        old_digest=old, new_digest=new)


NOW_B = Resolved(tag="prod", digest=B, reason="tag prod points at …")

CASES = [
    ("in-sync", Observed(git_digest=B, git_tag="prod", resolved=NOW_B,
                         newest=entry("update", A, B))),
    ("pending", Observed(git_digest=A, git_tag="prod", resolved=NOW_B,
                         newest=entry("update", C, A))),
    ("drifted", Observed(git_digest=C, git_tag="prod", resolved=NOW_B,
                         newest=entry("hand-edit", B, C))),
    # the commit that created the file is no drift: nothing was ever written there
    ("pending", Observed(git_digest=C, git_tag="prod", resolved=NOW_B,
                         newest=entry("hand-edit", None, C))),
    ("waiting", Observed(git_digest=A, git_tag="prod", waiting_for="prod")),
    ("failing", Observed(git_digest=A, git_tag="prod", error="registry down")),
    ("awaiting-approval", Observed(git_digest=A, git_tag="prod", resolved=NOW_B,
                                   pull_request="https://forge/pr/1", error="registry down")),
    ("held", Observed(git_digest=C, git_tag="prod", resolved=NOW_B, hold=HOLD,
                      pull_request="https://forge/pr/1", newest=entry("hand-edit", B, C))),
    ("rolled-back", Observed(git_digest=A, git_tag="prod", resolved=NOW_B, hold=ROLLBACK)),
]


@pytest.mark.parametrize(("state", "seen"), CASES)
def test_state(state: str, seen: Observed) -> None:
    assert derive("x", "prod", seen).state == state


def test_row_carries_where_the_digest_came_from_and_what_the_tag_says_now() -> None:
    row = derive("x", "prod", CASES[2][1])
    assert (row.commit, row.since, row.how) == ("f" * 40, "2026-11-29T22:00:00+00:00",
                                                "hand edit by Someone")
    assert (row.git_digest, row.wanted_digest, row.wanted_tag) == (C, B, "prod")
    assert row.as_json()["git"] == {"digest": C, "tag": "prod", "commit": "f" * 40,
                                    "since": "2026-11-29T22:00:00+00:00",
                                    "by": "Someone <s@example.com>",
                                    "how": "hand edit by Someone"}


def test_table_fits_100_columns_and_shows_the_details() -> None:
    rows = [derive("application-with-a-very-long-name", f"environment-{i}", seen)
            for i, (_, seen) in enumerate(CASES)]
    rows.append(EnvStatus(app="x", env="dev", state="failing", git_digest=None, git_tag=None,
                          error="Repository x does not exist."))
    table = status_table(rows)
    header, *_ = table.splitlines()
    assert header.split() == ["APP/ENV", "STATE", "GIT", "SINCE", "HOW"]
    assert all(len(line) <= 100 for line in table.splitlines() if not line.startswith("  "))
    assert "  rollback by bob since 2026-11-29T23:10:00Z: 500s" in table
    assert "  pull request: https://forge/pr/1" in table
    assert "  tag prod now: sha256:bbbbbbbb" in table
    assert "  error: Repository x does not exist." in table
