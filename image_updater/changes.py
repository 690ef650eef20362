"""One structured result per cycle. It drives the commit message, PR body, logs and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeyChange:
    key: str          # dotted key path as written in the policy
    old: str | None
    new: str


@dataclass(frozen=True)
class Change:
    """One app environment moving from one image to another in one values file."""

    app: str
    env: str
    file: str
    image: str
    tag: str | None
    digest: str
    keys: tuple[KeyChange, ...]
    reason: str       # why the policy chose this image, e.g. "tag dev now points at sha256:…"


@dataclass(frozen=True)
class Failure:
    app: str
    env: str
    reason: str       # the error's ``reason`` label
    message: str
    temporary: bool


@dataclass
class CycleResult:
    changes: list[Change] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)  # (app, env) already current
    commits: list[str] = field(default_factory=list)                # shas pushed
    #: (app, env) -> URL of the pull request open for it after the cycle
    pull_requests: dict[tuple[str, str], str] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)               # dry run: diffs and messages
