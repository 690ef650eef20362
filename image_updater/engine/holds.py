"""A person's commands on one environment: hold, release, rollback.

Each is one commit to the deploy branch, made like the daemon's (``commit_and_push`` with a
plan derived from the head it commits on, so a push race re-plans and a hold placed or
released meanwhile is seen), and carries trailers saying who and why
(:func:`~image_updater.gitops.message.control_message`). A rollback writes the earlier
digest *and* a hold of kind ``rollback`` in the same commit, so no cycle can undo it
between the two; ``release`` ends it and the next cycle moves the environment forward.

Blocking (git) functions are plain; :func:`rollback` is async because it asks the
registry, and runs its git steps in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from image_updater.config.holds import HOLDS_FILE, Hold, Holds, parse_holds, render_holds
from image_updater.engine.approval import Approvals
from image_updater.engine.plan import Current, plan_edit, read_current
from image_updater.engine.promote import NONE, retag
from image_updater.engine.resolve import Resolved
from image_updater.errors import (
    ConfigError,
    DigestMismatchError,
    ImageUpdaterError,
    NotFoundError,
    ValuesError,
)
from image_updater.forge.base import PullRequestRequest
from image_updater.gitops.message import commit_message, control_message, short_digest
from image_updater.gitops.repo import DeployRepo, Plan, Reader
from image_updater.model import DEFAULT_FILE_BYTES, App, Environment
from image_updater.registry.base import Registry, check_digest
from image_updater.registry.reference import parse_reference

#: how many commits of a values file a rollback looks back through
HISTORY_DEPTH = 200
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Outcome:
    """What one hold, release or rollback did; ``line()`` is the command's output."""

    action: Literal["hold", "release", "rollback"]
    hold: Hold
    sha: str | None = None             # the commit pushed to the deploy branch
    digest: str | None = None          # rollback: the digest written (or proposed)
    previous: str | None = None        # rollback: the digest the environment ran
    pull_request: str = ""             # rollback to a new digest in a gated environment
    notes: tuple[str, ...] = ()

    def line(self) -> str:
        where = f"{self.hold.app}/{self.hold.env}"
        if self.action == "hold":
            text = (f"held {where} ({self.hold.reason}); commit {self.sha}. The daemon "
                    f"writes nothing there until: image-updater release {self.hold.app} "
                    f"{self.hold.env}")
        elif self.action == "release":
            text = (f"released {where} (it was {self.hold.describe()}); commit {self.sha}. "
                    "The next cycle moves it to what its policy selects.")
        elif self.pull_request:
            text = (f"proposed rolling back {where} to {self.digest} (from {self.previous}) "
                    f"in {self.pull_request}; merging it writes the digest and the hold")
        else:
            text = (f"rolled back {where} to {self.digest} (from {self.previous}) and held "
                    f"it; commit {self.sha}. image-updater release "
                    f"{self.hold.app} {self.hold.env} lets the daemon move it forward again")
        return "; ".join((text, *self.notes))




def iso(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def place_hold(repo: DeployRepo, app: App, env: Environment, *, by: str, reason: str,
               now: datetime, max_attempts: int = MAX_ATTEMPTS) -> Outcome:
    """Commit a hold on ``env``; ConfigError (nothing written) if it is already held."""
    if not reason.strip():
        raise ConfigError(f"A hold on {app.name}/{env.name} needs a reason (--reason TEXT), "
                          "so whoever finds it knows why. Nothing was written.")
    hold = Hold(app=app.name, env=env.name, kind="hold", by=by, reason=reason, since=iso(now))

    def plan(read: Reader) -> Plan:
        holds = _holds(read).place(hold)
        return Plan(files={HOLDS_FILE: render_holds(holds)}, message=control_message(
            "hold", app.name, env.name, by=by, reason=reason))

    pushed = repo.commit_and_push(plan, max_attempts=max_attempts)
    return Outcome(action="hold", hold=hold, sha=pushed.sha)


def release_hold(repo: DeployRepo, app: App, env: Environment, *, by: str, reason: str = "",
                 max_attempts: int = MAX_ATTEMPTS) -> Outcome:
    """Commit the removal of ``env``'s hold; ConfigError (nothing written) if not held."""
    released: list[Hold] = []

    def plan(read: Reader) -> Plan:
        holds, hold = _holds(read).release(app.name, env.name)
        released.append(hold)
        return Plan(files={HOLDS_FILE: render_holds(holds)}, message=control_message(
            "release", app.name, env.name, by=by, reason=reason,
            detail=f"Ends: {hold.describe()}"))

    pushed = repo.commit_and_push(plan, max_attempts=max_attempts)
    return Outcome(action="release", hold=released[-1], sha=pushed.sha)


def record_forced(repo: DeployRepo, app: App, env: Environment, *, by: str, what: str,
                  now: datetime, max_attempts: int = MAX_ATTEMPTS) -> str | None:
    """Note a promotion forced past ``env``'s hold on the hold itself, in one commit (the
    audit trail of ``promote --force``); return its sha. ConfigError if no longer held."""
    note = f"{iso(now)} {by}: {what}"

    def plan(read: Reader) -> Plan:
        holds = _holds(read).note_forced(app.name, env.name, note)
        return Plan(files={HOLDS_FILE: render_holds(holds)}, message=control_message(
            "promote", app.name, env.name, by=by, reason=f"forced past the hold: {what}"))

    return repo.commit_and_push(plan, max_attempts=max_attempts).sha


def _holds(read: Reader) -> Holds:
    return parse_holds(read(HOLDS_FILE))


# -- rollback ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RollbackRequest:
    """The validated arguments of ``image-updater rollback``."""

    to: str | None = None        # a digest; None: ``steps`` back in the file's history
    steps: int = 1
    reason: str = ""
    by: str
    retag: bool = False
    #: whether the person chose ``steps`` (``--steps``; ``to`` is always a choice): a default
    #: target on an environment already rolled back would undo that rollback, so is refused
    chosen: bool = False
    #: replace a person's hold on the environment in the rollback's commit (its owner agreed)
    replace_hold: bool = False

    def __post_init__(self) -> None:
        if self.to is not None:
            check_digest(self.to, what="--to")
        if self.steps < 1:
            raise ConfigError(f"--steps must be 1 or more, not {self.steps}. Nothing was "
                              "written.")


@dataclass(frozen=True, kw_only=True)
class RollbackDeps:
    repo: DeployRepo
    registry_for: Callable[[str], Registry]
    approvals: Approvals | None = None   # the forge, where the environment needs approval
    values_file_bytes: int = DEFAULT_FILE_BYTES
    max_attempts: int = MAX_ATTEMPTS


async def rollback(app: App, env: Environment, req: RollbackRequest, deps: RollbackDeps, *,
                   now: datetime) -> Outcome:
    """Write an earlier digest into ``env``'s values file and hold it, in one commit.

    A digest the environment ran before (per its values file's git history) is a
    known-good, already approved state: it is committed directly even where the
    environment needs pull requests. Any other digest follows the environment's approval
    rule. The digest must exist in the registry: its manifest is fetched and hashed; where
    the environment requires signatures (policy ``verify``), they are checked too.
    """
    ran = await asyncio.to_thread(ran_before, deps.repo, env, deps.values_file_bytes)
    current = ran[0] if ran else Current(tag=None, digest=None)
    target = _target(app, env, req, ran)
    await _verify(app, target.digest or "", deps.registry_for)
    await _signature_gate(app, env, target.digest or "", deps.registry_for)
    known = any(r.digest == target.digest for r in ran[1:])
    res = Resolved(tag=target.tag or "", digest=target.digest or "",
                   reason=f"rollback by {req.by}" + (f": {req.reason}" if req.reason else ""))
    hold = Hold(app=app.name, env=env.name, kind="rollback", by=req.by,
                reason=req.reason or f"rolled back to {short_digest(res.digest)}",
                since=iso(now), digest=res.digest)
    outcome = Outcome(action="rollback", hold=hold, digest=res.digest, previous=current.digest)
    replaced: list[Hold] = []
    plan = _rollback_plan(app, env, res, hold, req, deps.values_file_bytes, replaced)
    if known or env.approval == "none":
        pushed = await asyncio.to_thread(deps.repo.commit_and_push, plan,
                                         max_attempts=deps.max_attempts)
        outcome = replace(outcome, sha=pushed.sha, notes=tuple(
            f"it replaces the earlier hold: {h.describe()}" for h in replaced[-1:]))
        if req.retag:
            outcome = replace(outcome, notes=(*outcome.notes, await _retag(
                app, env, res.digest, deps.registry_for)))
        return outcome
    url = await asyncio.to_thread(_propose, app, env, res, plan, deps)
    notes = ("--retag: the tag was not moved; the rollback waits for its pull request",
             ) if req.retag else ()
    return replace(outcome, pull_request=url, notes=notes)


def ran_before(repo: DeployRepo, env: Environment, max_bytes: int = DEFAULT_FILE_BYTES
               ) -> list[Current]:
    """What ``env`` ran, newest first (the head's value first), from the values file's git
    history: each digest once per stretch it was deployed, commits that did not change it
    skipped. A version that is unreadable or holds no digest is skipped too."""
    with repo.locked("the rollback's history read"):
        repo.sync()
        versions = repo.file_versions(env.file, limit=HISTORY_DEPTH)
    out: list[Current] = []
    for _sha, text in versions:
        if text is None:
            continue
        try:
            current = read_current(env, text, max_bytes=max_bytes)
        except ValuesError:
            continue
        if current.digest and (not out or out[-1].digest != current.digest):
            out.append(current)
    return out


def _target(app: App, env: Environment, req: RollbackRequest, ran: list[Current]) -> Current:
    where = f"{app.name}/{env.name}"
    if not ran:
        raise ValuesError(f"{env.file} holds no image digest for {where} in its git history, "
                          "so there is nothing to roll back. Nothing was written.")
    if req.to is None:
        if req.steps >= len(ran):
            raise ConfigError(
                f"{where} ran {len(ran) - 1} earlier digest(s) in the last {HISTORY_DEPTH} "
                f"commits of {env.file}; --steps {req.steps} goes beyond that. Give a smaller "
                "--steps, or --to DIGEST. Nothing was written.")
        return ran[req.steps]
    if req.to == ran[0].digest:
        raise ConfigError(f"{where} already runs {req.to} according to {env.file}; nothing "
                          "to roll back. Nothing was written.")
    earlier = next((r for r in ran[1:] if r.digest == req.to), None)
    if earlier is not None:
        return earlier
    writes_version = env.write.tag is not None or env.write.reference is not None
    if writes_version and env.strategy.kind != "digest":
        raise ConfigError(
            f"{where} never ran {req.to} (per {env.file}), and its values name a version tag "
            "that cannot be known for a digest alone; roll back with --steps N to a digest it "
            "ran. Nothing was written.")
    return Current(tag=env.strategy.tag or ran[0].tag, digest=req.to)


async def _verify(app: App, digest: str, registry_for: Callable[[str], Registry]) -> None:
    """The digest exists in the app's repository, and its manifest hashes to it."""
    image = parse_reference(app.image)
    try:
        manifest = await registry_for(image.registry).get_manifest(image.repository, digest)
    except NotFoundError as exc:
        raise NotFoundError(
            f"Digest {digest} does not exist in {app.image}, so {app.name} cannot be rolled "
            f"back to it; check the digest ({exc}). Nothing was written.",
            registry=exc.registry, url=exc.url) from exc
    if manifest.digest != digest:
        raise DigestMismatchError(
            f"{app.image} served a manifest hashing to {manifest.digest} when asked for "
            f"{digest}; it is not trusted. Nothing was written.", registry=image.registry)


async def _signature_gate(app: App, env: Environment, digest: str,
                          registry_for: Callable[[str], Registry]) -> None:
    """An environment that requires signatures is rolled back only to a digest its keys
    signed, checked now (UnverifiedError otherwise): a digest it ran before may have been
    signed only by a key the policy has since removed."""
    from image_updater.engine.verify import require_signed

    await require_signed(app, env, digest, registry_for)


def _rollback_plan(app: App, env: Environment, res: Resolved, hold: Hold,
                   req: RollbackRequest, max_bytes: int, replaced: list[Hold]
                   ) -> Callable[[Reader], Plan]:
    """The values edit and the hold, one commit; a hold it replaces goes into ``replaced``."""
    # A rollback goes backwards on purpose: the semver "never backwards" rule of
    # plan_edit does not apply, so the edit is planned as for a digest-following policy.
    as_digest = replace(env, strategy=replace(env.strategy, kind="digest"))

    def plan(read: Reader) -> Plan:
        text = read(env.file)
        if text is None:
            raise ValuesError(f"values file {env.file} does not exist in {app.git.url} "
                              f"(branch {app.git.branch}); nothing was written.")
        new_text, change, _ = plan_edit(app, as_digest, res, text, max_bytes=max_bytes)
        if change is None:
            raise ConfigError(f"{app.name}/{env.name} already runs {res.digest} according to "
                              f"{env.file}; nothing to roll back. Nothing was written.")
        holds = _holds(read)
        current = holds.get(app.name, env.name)
        _refuse_over(current, req, f"{app.name} {env.name}")
        # a rollback replaces the environment's earlier rollback in the same commit: releasing
        # first would let a cycle move it forward in between
        if current is not None:
            holds, earlier = holds.release(app.name, env.name)
            replaced.append(earlier)
        files = {env.file: new_text, HOLDS_FILE: render_holds(holds.place(hold))}
        return Plan(files=files, message=commit_message(
            [change], action="rollback", source="person", by=req.by, reason=req.reason))

    return plan


def _refuse_over(current: Hold | None, req: RollbackRequest, where: str) -> None:
    """A person's hold is theirs to release; a second default rollback would go back to the
    very digest the first one rolled away from."""
    if current is None:
        return
    if current.kind == "hold" and not req.replace_hold:
        raise ConfigError(
            f"{current.describe()}. A rollback would replace that hold: if its owner agrees, "
            "pass --replace-hold (the commit names the hold it replaces; no cycle can run in "
            "between, as it could after a release). Nothing was written.")
    if req.to is None and not req.chosen:
        raise ConfigError(
            f"{current.describe()}. Rolling back again by default would return to the digest "
            "that rollback moved away from; give --to DIGEST or --steps N to say where to go, "
            f"or end the rollback with image-updater release {where}. Nothing was written.")


def _propose(app: App, env: Environment, res: Resolved, plan: Callable[[Reader], Plan],
             deps: RollbackDeps) -> str:
    """A rollback to a digest the environment never ran, where it needs approval."""
    approvals = deps.approvals
    if approvals is None:
        raise ConfigError(
            f"{app.name}/{env.name} needs approval by pull request for a digest it never ran, "
            f"but no forge is configured for {app.git.url}; add a 'forges' entry to the "
            "settings file, or roll back to a digest it ran (--steps N). Nothing was written.")
    branch = f"{env.pull_request.branch_prefix}rollback-{app.name}-{env.name}"
    with approvals.repo.locked("the rollback's pull request"):
        approvals.repo.push_branch(branch, plan)
    title = f"Roll back {app.name} in {env.name} to {res.digest[:19]}"
    body = (f"image-updater proposes to roll back **{app.name}** in **{env.name}** to "
            f"`{app.image}@{res.digest}`, a digest it has not run before, and to hold it "
            f"there.\n\nWhy: {res.reason}\n\nMerging this pull request is the approval; "
            f"`image-updater release {app.name} {env.name}` ends the hold afterwards.")
    open_pr = next((p for p in approvals.forge.find(branch) if p.state == "open"), None)
    if open_pr is not None:
        return approvals.forge.update(open_pr, title=title, body=body).url
    return approvals.forge.create(PullRequestRequest(
        head=branch, base=approvals.base_branch, title=title, body=body,
        labels=env.pull_request.labels, reviewers=env.pull_request.reviewers,
        assignees=env.pull_request.assignees, draft=env.pull_request.draft)).url


async def _retag(app: App, env: Environment, digest: str,
                 registry_for: Callable[[str], Registry]) -> str:
    """Move the environment's tag back too (compare-and-swap against what it is now)."""
    tag = env.strategy.tag
    if env.strategy.kind != "digest" or not tag:
        return (f"--retag: {env.name} follows a {env.strategy.kind} policy, not a tag, so no "
                "tag was moved")
    image = parse_reference(app.image)
    try:
        seen = await registry_for(image.registry).head_manifest(image.repository, tag)
        result = await retag(f"{app.image}@{digest}", f"{app.image}:{tag}", digest=digest,
                             expect_current=seen[0] if seen else NONE,
                             registry_for=registry_for)
    except ImageUpdaterError as exc:  # git is rolled back and held already: say so, go on
        return (f"--retag failed, the tag {tag} was not moved ({exc}); git holds the "
                "rollback either way, retry with image-updater retag")
    return f"retag: {result.line()}"
