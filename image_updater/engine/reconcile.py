"""One reconcile cycle: resolve images, verify new digests, edit values files, commit or
propose, and record everything that happened in one :class:`CycleResult`.

Git is the only state. Each cycle reads the deploy repository's head, so a restart gives
the same result and a second pass changes nothing. All direct changes to one repository
and branch go into one commit; environments that need approval go through
:mod:`image_updater.engine.approval` instead. The engine bumps no counter and logs no
outcome: :func:`image_updater.observability.report.report` turns the result into both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from image_updater.changes import (
    Change,
    CycleResult,
    Deployed,
    Failure,
    HeldEnv,
    PushAttempt,
    Waiting,
)
from image_updater.config.holds import HOLDS_FILE, Hold, Holds, parse_holds
from image_updater.config.templates import NO_TEMPLATES, MessageTemplates
from image_updater.engine.approval import Approvals
from image_updater.engine.plan import moving, plan_edit, read_current
from image_updater.engine.resolve import Resolution, Resolved, group_by_repository, resolve
from image_updater.engine.verify import (
    SignatureCheckFn,
    VerifiedDigests,
    Verifier,
    check_signatures,
)
from image_updater.errors import (
    ConfigError,
    ImageUpdaterError,
    UnverifiedError,
    ValuesError,
    as_image_updater_error,
)
from image_updater.gitops.message import trailer_block
from image_updater.gitops.repo import DeployRepo, Plan, PlanFn
from image_updater.model import DEFAULT_FILE_BYTES, App, Environment, GitTarget
from image_updater.registry.base import Registry
from image_updater.values.editor import values_diff

log = logging.getLogger("image_updater.reconcile")

Target = tuple[App, Environment, Resolved]
#: what started a cycle: the schedule, or a registry's webhook
Source = Literal["poll", "webhook"]


def _no_forge(_target: GitTarget, _repo: DeployRepo) -> Approvals | None:
    return None


def _no_evidence(_change: Change) -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, kw_only=True)
class Deps:
    """What a cycle talks to. Each is a factory so tests and the daemon pass their own."""

    registry_for: Callable[[str], Registry]
    repo_for: Callable[[GitTarget], DeployRepo]
    #: builds the approval flow for a deploy repository, or None when no forge is configured
    approvals_for: Callable[[GitTarget, DeployRepo], Approvals | None] = _no_forge
    #: digests verified so far; the daemon keeps one for its life so none is fetched twice
    verified: VerifiedDigests = field(default_factory=VerifiedDigests)
    max_push_attempts: int = 5
    #: every (app, env) the loaded policies name, when the caller knows them all: a hold that
    #: names anything else is a typo and stops writes to its repository (None: not checked)
    known_envs: frozenset[tuple[str, str]] | None = None
    #: settings ``limits.values_file_bytes``: a larger values file is refused before parsing
    values_file_bytes: int = DEFAULT_FILE_BYTES
    #: what started the cycle, for the commits' ``Image-Updater-Source`` trailer
    source: Source = "poll"
    #: settings ``templates``: the commit subject and body (the trailers stay ours)
    templates: MessageTemplates = NO_TEMPLATES
    #: fetches and verifies a digest's cosign signatures, for environments with ``verify``
    signatures: SignatureCheckFn = check_signatures
    #: what a promotion's caller vouched with, for the change that lands its digest (the
    #: daemon's promotion API); recorded as ``Image-Updater-Evidence`` trailers
    evidence_for: Callable[[Change], Mapping[str, str]] = _no_evidence


@dataclass
class _RepoOutcome:
    result: CycleResult = field(default_factory=CycleResult)
    #: values file -> its text on the branch after this cycle, where the cycle already read it
    texts: dict[str, str] = field(default_factory=dict)


@dataclass
class _Attempt:
    """What one plan attempt (one push attempt) derived from the head it read."""

    changes: list[Change] = field(default_factory=list)
    failures: list[tuple[App, Environment, ImageUpdaterError]] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    held: list[HeldEnv] = field(default_factory=list)  # held at that head (a hold just landed)
    originals: dict[str, str] = field(default_factory=dict)  # file -> text at that head
    files: dict[str, str] = field(default_factory=dict)      # file -> text with the edits


async def reconcile(apps: Sequence[App], deps: Deps, *, dry_run: bool = False) -> CycleResult:
    """Run one cycle over ``apps``; failures are recorded per app environment, never raised."""
    for registry in _registries(apps, deps):
        registry.begin_cycle()
    resolution = await resolve(apps, deps.registry_for)
    result = CycleResult(dry_run=dry_run)
    _record_resolution_errors(apps, resolution, result)
    by_repo: dict[GitTarget, list[Target]] = {}
    for app in apps:
        for env in app.environments:
            res = resolution.resolved.get((app.name, env.name))
            if res is not None:
                by_repo.setdefault(app.git, []).append((app, env, res))
    verifier = Verifier(deps.registry_for, deps.verified, asyncio.get_running_loop(),
                        deps.signatures)
    async with asyncio.TaskGroup() as tasks:  # each repository confines its own faults
        running = [tasks.create_task(asyncio.to_thread(
            _apply_repo_guarded, target, items, deps, verifier, dry_run))
            for target, items in by_repo.items()]
    for task in running:
        _absorb(result, task.result().result)
    return result


def _absorb(into: CycleResult, part: CycleResult) -> None:
    into.changes += part.changes
    into.failures += part.failures
    into.unchanged += part.unchanged
    into.commits += part.commits
    into.pull_requests.update(part.pull_requests)
    into.previews += part.previews
    into.pushes += part.pushes
    into.pull_request_actions += part.pull_request_actions
    into.verifications += part.verifications
    into.signatures += part.signatures
    into.deployed += part.deployed
    into.held += part.held


def _registries(apps: Sequence[App], deps: Deps) -> list[Registry]:
    """The registries this cycle asks, once each."""
    seen: dict[str, Registry] = {}
    for group in group_by_repository(apps):
        if group.host in seen:
            continue
        try:
            seen[group.host] = deps.registry_for(group.host)
        except Exception:  # resolve reports it against the apps of that registry
            continue
    return list(seen.values())


def _record_resolution_errors(apps: Sequence[App], resolution: Resolution,
                              result: CycleResult) -> None:
    by_name = {a.name: a for a in apps}  # a registry outage fails every env: stay linear
    for (app_name, env_name), exc in resolution.errors.items():
        app = by_name[app_name]
        _fail(result, app, app.env(env_name), exc)
    for (app_name, env_name), tag in resolution.waiting.items():
        result.waiting.append(Waiting(app=app_name, env=env_name, tag=tag,
                                      image=by_name[app_name].image))


def _fail(result: CycleResult, app: App, env: Environment, exc: ImageUpdaterError) -> None:
    result.failures.append(Failure(
        app=app.name, env=env.name, reason=exc.reason, message=str(exc),
        temporary=exc.temporary, image=app.image,
        unverified=exc.verdict if isinstance(exc, UnverifiedError) else ""))


def _apply_repo_guarded(target: GitTarget, items: list[Target], deps: Deps, verifier: Verifier,
                        dry_run: bool) -> _RepoOutcome:
    """:func:`_apply_repo`, with an unforeseen fault confined to this deploy repository.

    The environments it did not finish are reported as failed; what it already pushed
    stays pushed (git is the state), and the next cycle picks up from there.
    """
    try:
        with deps.repo_for(target).locked():  # no other process moves the clone mid-cycle
            return _apply_repo(target, items, deps, verifier, dry_run)
    except Exception as exc:  # the other repositories' outcomes must survive
        if not isinstance(exc, ImageUpdaterError):
            log.error("unexpected fault in deploy repository %s; its apps are reported failed",
                      target.url, exc_info=True)
        error = as_image_updater_error(exc, f"deploy repository {target.url} ({target.branch})")
        outcome = _RepoOutcome()
        for app, env, _ in items:
            _fail(outcome.result, app, env, error)
        return outcome


def _apply_repo(target: GitTarget, items: list[Target], deps: Deps, verifier: Verifier,
                dry_run: bool) -> _RepoOutcome:
    """Everything for one deploy repository and branch; runs in a worker thread."""
    outcome = _RepoOutcome()
    try:
        repo = deps.repo_for(target)
        repo.sync()
    except ImageUpdaterError as exc:
        for app, env, _ in items:
            _fail(outcome.result, app, env, exc)
        return outcome
    try:
        holds = parse_holds(repo.read(HOLDS_FILE))
        _check_hold_names(holds, deps.known_envs, target)
    except ImageUpdaterError as exc:  # fail closed: which environments are held is unknown
        for app, env, _ in items:
            _fail(outcome.result, app, env, exc)
        return outcome
    free = [t for t in items if holds.get(t[0].name, t[1].name) is None]
    held = [t for t in items if holds.get(t[0].name, t[1].name) is not None]
    _leave_held(target, repo, held, holds, deps, dry_run, outcome)
    direct = [t for t in free if t[1].approval == "none"]
    gated = [t for t in free if t[1].approval != "none"]
    if direct:
        _commit_direct(target, repo, direct, deps, verifier, dry_run, outcome)
    if gated:
        _propose_gated(target, repo, gated, deps, verifier, dry_run, outcome)
    _record_deployed(repo, items, outcome, deps.values_file_bytes)
    return outcome


def _held(hold: Hold, res: Resolved, pull_request: str = "") -> HeldEnv:
    return HeldEnv(app=hold.app, env=hold.env, kind=hold.kind, by=hold.by, reason=hold.reason,
                   since=hold.since, wanted=res.digest, pull_request=pull_request)


def _check_hold_names(holds: Holds, known: frozenset[tuple[str, str]] | None,
                      target: GitTarget) -> None:
    """A hold naming no app environment is a typo that would silently release the one it
    meant: refuse to write to the repository until it is fixed."""
    if known is None:
        return
    unknown = [h for h in holds if (h.app, h.env) not in known]
    if unknown:
        names = ", ".join(f"{h.app}/{h.env}" for h in unknown[:5])
        raise ConfigError(
            f"{HOLDS_FILE} in {target.url} ({target.branch}) holds {names}, which no policy "
            "names: a misspelt app or environment would leave the one it meant unheld. Fix "
            "the entry (or remove it with image-updater release); until then nothing is "
            "written to this deploy repository.")


def _leave_held(target: GitTarget, repo: DeployRepo, items: list[Target], holds: Holds,
                deps: Deps, dry_run: bool, outcome: _RepoOutcome) -> None:
    """Held environments get nothing written and nothing proposed; an open pull request
    of one stays open and is told, once per hold, why it does not move."""
    approvals = None
    for app, env, res in items:
        hold = holds.get(app.name, env.name)
        assert hold is not None
        url = ""
        if env.approval != "none":
            try:
                approvals = approvals or deps.approvals_for(target, repo)
                if approvals is not None:
                    url = approvals.note_held(app, env, hold, dry_run=dry_run) or ""
            except ImageUpdaterError as exc:  # the hold itself stands; only the note failed
                _fail(outcome.result, app, env, exc)
        if url:
            outcome.result.pull_requests[(app.name, env.name)] = url
        outcome.result.held.append(_held(hold, res, url))


def _commit_direct(target: GitTarget, repo: DeployRepo, items: list[Target], deps: Deps,
                   verifier: Verifier, dry_run: bool, outcome: _RepoOutcome) -> None:
    attempts: list[_Attempt] = []
    verifications, signed = outcome.result.verifications, outcome.result.signatures

    def plan(read: Callable[[str], str | None]) -> Plan:
        # Re-run from scratch on every push attempt, against the new head: edits are
        # re-derived, so they are applied exactly once and never over someone else's change.
        attempt = _Attempt()
        attempts.append(attempt)
        holds = parse_holds(read(HOLDS_FILE))  # a hold placed since the sync wins
        verifier.prefetch([m for m in moving(items, read, max_bytes=deps.values_file_bytes)
                           if holds.get(m[0].name, m[1].name) is None])
        for app, env, res in items:
            if (hold := holds.get(app.name, env.name)) is not None:
                attempt.held.append(_held(hold, res))
                continue
            try:
                text = attempt.files.get(env.file)
                if text is None:
                    text = _read_values(read, app, env)
                    attempt.originals[env.file] = text
                new_text, change, why = plan_edit(app, env, res, text,
                                                  max_bytes=deps.values_file_bytes)
                if change is not None:  # a new digest: check it before it is written
                    verifier.check(app, env, change, verifications, signed)
            except ImageUpdaterError as exc:
                attempt.failures.append((app, env, exc))
                continue
            if change is None:
                attempt.unchanged.append((app.name, env.name))
                # debug: in steady state every env is unchanged, every cycle
                log.debug("%s", why, extra={"app": app.name, "env": env.name})
                continue
            attempt.files[env.file] = new_text
            attempt.changes.append(change)
        changed = {f: t for f, t in attempt.files.items() if t != attempt.originals.get(f)}
        return Plan(files=changed, message=_message(attempt.changes, deps)
                    if attempt.changes else "")

    result = outcome.result
    if dry_run:
        p = plan(repo.read)
        originals = attempts[-1].originals
        result.previews += [values_diff(originals[f], t, f) for f, t in p.files.items()]
        if p.files:
            result.previews.append("commit message:\n" + p.message)
    else:
        try:
            pushed = repo.commit_and_push(plan, max_attempts=deps.max_push_attempts)
        except ImageUpdaterError as exc:
            result.pushes.append(PushAttempt(repository=target.url, branch=target.branch,
                                             result="failed"))
            # an environment the last plan failed on its own (a refused signature) keeps
            # its own reason: the push would not have carried it anyway
            own = {(a.name, e.name): err for a, e, err in (attempts[-1].failures
                                                          if attempts else [])}
            for app, env, _ in items:
                _fail(result, app, env, own.get((app.name, env.name), exc))
            return
        if pushed.sha:
            result.commits.append(pushed.sha)
            result.pushes.append(PushAttempt(
                repository=target.url, branch=target.branch, sha=pushed.sha,
                result="rejected_retried" if pushed.rejected_count else "ok"))
    if attempts:
        _collect_attempt(attempts[-1], outcome, committed=bool(result.commits))


def _collect_attempt(attempt: _Attempt, outcome: _RepoOutcome, *, committed: bool) -> None:
    """The last plan attempt is what happened: the branch holds its edits if they landed.

    It read every file at the head it committed on, and the commit holds exactly
    ``files``; without a commit (nothing to do, dry run) the head is what it read.
    """
    outcome.texts.update(attempt.originals)
    if committed:
        outcome.texts.update(attempt.files)
    outcome.result.unchanged += attempt.unchanged
    outcome.result.held += attempt.held
    for app, env, exc in attempt.failures:
        _fail(outcome.result, app, env, exc)
    outcome.result.changes += attempt.changes


def _propose_gated(target: GitTarget, repo: DeployRepo, items: list[Target], deps: Deps,
                   verifier: Verifier, dry_run: bool, outcome: _RepoOutcome) -> None:
    approvals = deps.approvals_for(target, repo)
    result = outcome.result
    for app, env, res in items:
        try:
            text = _read_values(repo.read, app, env)
            new_text, change, why = plan_edit(app, env, res, text,
                                              max_bytes=deps.values_file_bytes)
            if approvals is None:
                raise _no_forge_error(app, env, target)
            outcome.texts[env.file] = text  # a pull request leaves the branch as it is
            if change is not None:  # about to be proposed: check it first
                verifier.check(app, env, change, result.verifications, result.signatures)
            replan = _replan(app, env, res, deps)
            trailers = None if change is None else _message([change], deps, block=True)
            proposal = approvals.sync(app, env, change, why, replan, dry_run=dry_run,
                                      trailers=trailers)
        except Exception as exc:  # one environment's proposal never costs the others theirs
            if not isinstance(exc, ImageUpdaterError):
                log.error("unexpected fault while proposing %s/%s", app.name, env.name,
                          exc_info=True)
            _fail(result, app, env, as_image_updater_error(
                exc, f"the pull request for {app.name}/{env.name}"))
            continue
        result.pull_request_actions += proposal.actions
        if proposal.url and proposal.action != "closed":
            result.pull_requests[(app.name, env.name)] = proposal.url
        if change is None or not proposal.changed:
            result.unchanged.append((app.name, env.name))
            continue
        result.changes.append(_proposed(change))
        if dry_run:
            result.previews.append(values_diff(text, new_text, env.file))


def _proposed(change: Change) -> Change:
    return replace(change, via="pull-request")


def _replan(app: App, env: Environment, res: Resolved, deps: Deps) -> PlanFn:
    """The pull request's commit, derived again from the base as it is at push time."""

    def plan(read: Callable[[str], str | None]) -> Plan:
        new_text, change, _ = plan_edit(app, env, res, _read_values(read, app, env),
                                        max_bytes=deps.values_file_bytes)
        if change is None:  # the base already holds it: the branch is the base itself
            return Plan(files={}, message="")
        return Plan(files={env.file: new_text}, message=_message([change], deps))

    return plan


def _message(changes: Sequence[Change], deps: Deps, *, block: bool = False) -> str:
    """The commit message of ``changes``, with what promotions vouched for each (``block``:
    only its trailer block, which also ends the body of a pull request for them)."""
    evidence = [deps.evidence_for(c) for c in changes]
    if block:
        return trailer_block(changes, source=deps.source, evidence=evidence)
    return deps.templates.commit_message(changes, source=deps.source, evidence=evidence)


def _no_forge_error(app: App, env: Environment, target: GitTarget) -> ImageUpdaterError:
    return ConfigError(
        f"environment {env.name} of app {app.name} needs approval by pull request, but no "
        f"forge is configured for {target.url}; add a 'forges' entry to the settings file.")


def _read_values(read: Callable[[str], str | None], app: App, env: Environment) -> str:
    text = read(env.file)
    if text is None:
        raise ValuesError(
            f"values file {env.file} does not exist in {app.git.url} (branch {app.git.branch}) "
            f"for app {app.name}, environment {env.name}; create it or fix 'file' in "
            f"{app.source or 'the policy'}. Nothing was written.")
    return text


def _record_deployed(repo: DeployRepo, items: list[Target], outcome: _RepoOutcome,
                     max_bytes: int) -> None:
    """What each environment runs according to git, after this cycle (the info metric).

    Files this cycle already read are not read again: ``repo.read`` walks the tree from
    the root on every call, which made this pass quadratic in the number of app folders.
    """
    for app, env, _ in items:
        try:
            text = outcome.texts[env.file] if env.file in outcome.texts else repo.read(env.file)
            current = (read_current(env, text, max_bytes=max_bytes)
                       if text is not None else None)
        except ImageUpdaterError:
            continue
        if current is not None and current.digest:
            outcome.result.deployed.append(Deployed(app=app.name, env=env.name,
                                                    tag=current.tag or "",
                                                    digest=current.digest))
