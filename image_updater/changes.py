"""One structured result per cycle. It is the only source of reports: the commit message,
the PR body, the logs and the metrics are all derived from it (see
:func:`image_updater.observability.report.report`).

Shaped like Flux image-automation's ``update.Result``: what changed (app environment →
values file → keys, old → new), plus everything else the cycle did (pushes, pull-request
actions, digest verifications) and what failed, so no counter is bumped inside the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
    why: str          # prose: why the policy chose this image, "tag dev points at sha256:…"
    #: how it reaches the branch: a commit, or a pull request a person merges
    via: Literal["commit", "pull-request"] = "commit"


@dataclass(frozen=True)
class Failure:
    app: str
    env: str
    reason: str       # the error's ``reason``: the label of image_updater_errors_total
    message: str
    temporary: bool
    image: str = ""   # the app's image, for the log line's context
    #: the signature gate refused the digest: why (unsigned, wrong-key, …), else ""
    unverified: str = ""


@dataclass(frozen=True)
class Waiting:
    """An environment whose followed tag does not exist yet: nothing was promoted there so
    far. The normal state of a new app's staging and prod; reported, never counted as an
    error."""

    app: str
    env: str
    tag: str
    image: str = ""


PushOutcome = Literal["ok", "rejected_retried", "failed"]


@dataclass(frozen=True)
class PushAttempt:
    """One commit-and-push to a deploy branch (the retries after a race are inside it)."""

    repository: str   # the deploy repository's URL
    branch: str
    result: PushOutcome
    sha: str | None = None


#: opened | updated | closed (withdrawn, obsolete) | declined (a person closed it before)
PullRequestVerb = Literal["opened", "updated", "closed", "declined"]


@dataclass(frozen=True)
class PullRequestAction:
    """Something done to (or decided about) the pull request of one app environment."""

    app: str
    env: str
    image: str
    action: PullRequestVerb
    url: str
    why: str          # the change's reason (opened/updated) or why it was closed/declined
    digest: str = ""  # declined: the digest that is not proposed again


VerificationOutcome = Literal["ok", "mismatch", "failed"]


@dataclass(frozen=True)
class Verification:
    """A digest about to be written (or proposed) was fetched and hashed once more."""

    registry: str
    repository: str
    digest: str
    result: VerificationOutcome  # failed: the manifest could not be fetched


@dataclass(frozen=True)
class SignatureCheck:
    """A digest bound for an environment that requires signatures had them fetched and
    verified (once per digest, key set and identity per process)."""

    app: str
    env: str
    digest: str
    ok: bool
    key: str | None       # the key that made the valid signature
    reason: str | None    # why not (unsigned, wrong-key, …)
    requests: int         # registry requests the fetch cost


@dataclass(frozen=True)
class Deployed:
    """What an environment runs according to git at the end of the cycle."""

    app: str
    env: str
    tag: str
    digest: str


@dataclass(frozen=True)
class HeldEnv:
    """An environment a person stopped (``image-updater hold`` or ``rollback``): the cycle
    wrote nothing to it and proposed nothing for it. Information, not a failure."""

    app: str
    env: str
    kind: Literal["hold", "rollback"]
    by: str
    reason: str
    since: str        # ISO 8601 UTC, as the holds file says
    #: the digest the policy would write now ("" when it did not get that far)
    wanted: str = ""
    #: an open pull request of this environment, left open and told about the hold
    pull_request: str = ""


@dataclass
class CycleResult:
    #: changes committed or proposed (or, in a dry run, that would be)
    changes: list[Change] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)           # tag not there yet
    unchanged: list[tuple[str, str]] = field(default_factory=list)  # (app, env) already current
    commits: list[str] = field(default_factory=list)                # shas pushed
    #: (app, env) -> URL of the pull request open for it after the cycle
    pull_requests: dict[tuple[str, str], str] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)               # dry run: diffs and messages
    pushes: list[PushAttempt] = field(default_factory=list)
    pull_request_actions: list[PullRequestAction] = field(default_factory=list)
    verifications: list[Verification] = field(default_factory=list)
    #: signature gates run this cycle (cached verdicts are not repeated here)
    signatures: list[SignatureCheck] = field(default_factory=list)
    deployed: list[Deployed] = field(default_factory=list)
    #: environments left alone because they are held (see :class:`HeldEnv`)
    held: list[HeldEnv] = field(default_factory=list)
    dry_run: bool = False
