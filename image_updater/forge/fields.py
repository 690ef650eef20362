"""Reading fields of untrusted forge responses, and decorating an opened pull request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from image_updater.errors import ForgeError
from image_updater.forge.base import PullRequest, PullRequestState

log = logging.getLogger(__name__)


# ------------------------------------------------------------- reading forge JSON
# Forge responses are untrusted: adapters read fields through these, which raise
# MalformedError (caught and reported with the body quoted through truncate()).


class MalformedError(ValueError):
    pass


def field_at(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            raise MalformedError(f"missing field {'.'.join(path)}")
        obj = obj[key]
    return obj


def text_at(obj: Any, *path: str, nullable: bool = False) -> str:
    value = field_at(obj, *path)
    if value is None and nullable:
        return ""
    if not isinstance(value, str):
        raise MalformedError(f"field {'.'.join(path)} is not a string")
    return value


def number_at(obj: Any, *path: str) -> int:
    value = field_at(obj, *path)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MalformedError(f"field {'.'.join(path)} is not a positive integer")
    return value


def best_effort(what: str, number: int, step: Callable[[], object]) -> None:
    """Run a step that decorates an already-opened pull request.

    The pull request exists by now: failing the whole ``create`` would make the engine
    try to open it again, which the forge refuses as a duplicate. So a failed label,
    reviewer or assignee step is logged and the pull request is kept.
    """
    try:
        step()
    except ForgeError as exc:
        log.warning(
            "pull request #%d was opened but %s failed: %s The pull request is kept "
            "without it; check the policy's pull_request settings if this repeats.",
            number, what, exc,
        )


def github_shaped_pull_request(item: Any, *, merged: bool) -> PullRequest:
    """A pull request in the JSON shape GitHub uses and Gitea copies (``state`` open or
    closed, ``head.ref``, ``base.ref``, ``html_url``); ``merged`` is read by the caller,
    as the two forges say it differently. Raises MalformedError."""
    raw_state = text_at(item, "state")
    if raw_state not in ("open", "closed"):
        raise MalformedError(f"unknown state {raw_state[:20]!r}")
    state: PullRequestState = "merged" if merged else "open" if raw_state == "open" else "closed"
    return PullRequest(
        number=number_at(item, "number"),
        url=text_at(item, "html_url"),
        state=state,
        head_branch=text_at(item, "head", "ref"),
        base_branch=text_at(item, "base", "ref"),
        title=text_at(item, "title"),
        body=text_at(item, "body", nullable=True),
        updated_at=text_at(item, "updated_at"),
    )
