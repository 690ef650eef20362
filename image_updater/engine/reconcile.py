"""One reconcile cycle: resolve images, edit values files, commit or propose, report.

Git is the only state. Each cycle reads the deploy repository's head, so a restart gives
the same result and a second pass changes nothing. All direct changes to one repository
and branch go into one commit; environments that need approval go through
:mod:`image_updater.engine.approval` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from image_updater.changes import Change, CycleResult, Failure
from image_updater.engine.plan import plan_edit, read_current
from image_updater.engine.resolve import Resolution, Resolved, resolve
from image_updater.errors import ImageUpdaterError, as_image_updater_error
from image_updater.gitops.message import commit_message
from image_updater.gitops.repo import DeployRepo, Plan, PlanFn
from image_updater.model import App, Environment, GitTarget
from image_updater.observability.metrics import Metrics
from image_updater.registry.base import Registry
from image_updater.values.editor import values_diff

log = logging.getLogger("image_updater.reconcile")

Target = tuple[App, Environment, Resolved]


@dataclass(frozen=True, kw_only=True)
class Deps:
    """What a cycle talks to. Each is a factory so tests and the daemon pass their own."""

    registry_for: Callable[[str], Registry]
    repo_for: Callable[[GitTarget], DeployRepo]
    metrics: Metrics
    #: builds the approval flow for a deploy repository, or None when no forge is configured
    approvals_for: Callable[[GitTarget, DeployRepo], object | None] = lambda _t, _r: None
    max_push_attempts: int = 5
    retry_hint: str = "next cycle"


@dataclass
class _RepoOutcome:
    changes: list[Change] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)
    sha: str | None = None
    pull_requests: dict[tuple[str, str], str] = field(default_factory=dict)
    #: values file -> its text on the branch after this cycle, where the cycle already read it
    texts: dict[str, str] = field(default_factory=dict)


async def reconcile(apps: Sequence[App], deps: Deps, *, dry_run: bool = False) -> CycleResult:
    """Run one cycle over ``apps``; failures are recorded per app environment, never raised."""
    for registry in _begin_cycle_targets(apps, deps):
        registry.begin_cycle()
    resolution = await resolve(apps, deps.registry_for)
    result = CycleResult()
    _record_resolution_errors(apps, resolution, result, deps)
    by_repo: dict[GitTarget, list[Target]] = {}
    for app in apps:
        for env in app.environments:
            res = resolution.resolved.get((app.name, env.name))
            if res is not None:
                by_repo.setdefault(app.git, []).append((app, env, res))
    outcomes = await asyncio.gather(*(
        asyncio.to_thread(_apply_repo_guarded, target, items, deps, dry_run)
        for target, items in by_repo.items()))
    for outcome in outcomes:
        result.changes += outcome.changes
        result.failures += outcome.failures
        result.unchanged += outcome.unchanged
        result.previews += outcome.previews
        result.pull_requests.update(outcome.pull_requests)
        if outcome.sha:
            result.commits.append(outcome.sha)
    return result


def _begin_cycle_targets(apps: Sequence[App], deps: Deps) -> list[Any]:
    """Registries with a per-cycle cache (ECR's listing) start each cycle fresh."""
    from image_updater.engine.resolve import group_by_repository

    seen: dict[str, Any] = {}
    for group in group_by_repository(apps):
        try:
            reg = deps.registry_for(group.host)
        except Exception:  # resolve reports it against the apps of that registry
            continue
        if hasattr(reg, "begin_cycle"):
            seen[group.host] = reg
    return list(seen.values())


def _record_resolution_errors(apps: Sequence[App], resolution: Resolution, result: CycleResult,
                              deps: Deps) -> None:
    by_name = {a.name: a for a in apps}  # a registry outage fails every env: stay linear
    for (app_name, env_name), exc in resolution.errors.items():
        app = by_name[app_name]
        _fail(result.failures, app, app.env(env_name), exc, deps)


def _fail(failures: list[Failure], app: App, env: Environment, exc: ImageUpdaterError,
          deps: Deps) -> None:
    failures.append(Failure(app=app.name, env=env.name, reason=exc.reason, message=str(exc),
                            temporary=exc.temporary))
    deps.metrics.errors.labels(app=app.name, env=env.name, reason=exc.reason).inc()
    log.error("%s; will retry %s", str(exc).rstrip("."), deps.retry_hint,
              extra={"app": app.name, "env": env.name, "image": app.image})


def _apply_repo_guarded(target: GitTarget, items: list[Target], deps: Deps, dry_run: bool
                        ) -> _RepoOutcome:
    """:func:`_apply_repo`, with an unforeseen fault confined to this deploy repository.

    The environments it did not finish are reported as failed; what it already pushed
    stays pushed (git is the state), and the next cycle picks up from there.
    """
    try:
        with deps.repo_for(target).locked():  # no other process moves the clone mid-cycle
            return _apply_repo(target, items, deps, dry_run)
    except Exception as exc:  # the other repositories' outcomes must survive
        if not isinstance(exc, ImageUpdaterError):
            log.error("unexpected fault in deploy repository %s; its apps are reported failed",
                      target.url, exc_info=True)
        error = as_image_updater_error(exc, f"deploy repository {target.url} ({target.branch})")
        outcome = _RepoOutcome()
        for app, env, _ in items:
            _fail(outcome.failures, app, env, error, deps)
        return outcome


def _apply_repo(target: GitTarget, items: list[Target], deps: Deps, dry_run: bool
                ) -> _RepoOutcome:
    """Everything for one deploy repository and branch; runs in a worker thread."""
    outcome = _RepoOutcome()
    try:
        repo = deps.repo_for(target)
        repo.sync()
    except ImageUpdaterError as exc:
        for app, env, _ in items:
            _fail(outcome.failures, app, env, exc, deps)
        return outcome
    direct = [t for t in items if t[1].approval == "none"]
    gated = [t for t in items if t[1].approval != "none"]
    if direct:
        _commit_direct(repo, direct, deps, dry_run, outcome)
    if gated:
        _propose_gated(target, repo, gated, deps, dry_run, outcome)
    _publish_deployed(repo, items, deps, outcome.texts)
    return outcome


def _commit_direct(repo: DeployRepo, items: list[Target], deps: Deps, dry_run: bool,
                   outcome: _RepoOutcome) -> None:
    attempt: dict[str, object] = {}

    def plan(read: Callable[[str], str | None]) -> Plan:
        # Re-run from scratch on every push attempt, against the new head: edits are
        # re-derived, so they are applied exactly once and never over someone else's change.
        files: dict[str, str] = {}
        originals: dict[str, str] = {}
        changes: list[Change] = []
        failures: list[tuple[App, Environment, ImageUpdaterError]] = []
        unchanged: list[tuple[str, str]] = []
        for app, env, res in items:
            try:
                text = files.get(env.file)
                if text is None:
                    text = _read_values(read, app, env)
                    originals[env.file] = text
                new_text, change, why = plan_edit(app, env, res, text)
            except ImageUpdaterError as exc:
                failures.append((app, env, exc))
                continue
            if change is None:
                unchanged.append((app.name, env.name))
                # debug: in steady state every env is unchanged, every cycle
                log.debug("%s", why, extra={"app": app.name, "env": env.name})
                continue
            files[env.file] = new_text
            changes.append(change)
        attempt.update(changes=changes, failures=failures, unchanged=unchanged,
                       originals=originals, files=files)
        changed = {f: t for f, t in files.items() if t != originals.get(f)}
        return Plan(files=changed, message=commit_message(changes) if changes else "")

    if dry_run:
        p = plan(repo.read)
        originals = attempt["originals"]
        assert isinstance(originals, dict)
        outcome.previews += [values_diff(originals[f], t, f) for f, t in p.files.items()]
        if p.files:
            outcome.previews.append("commit message:\n" + p.message)
    else:
        try:
            pushed = repo.commit_and_push(plan, max_attempts=deps.max_push_attempts)
        except ImageUpdaterError as exc:
            deps.metrics.git_pushes.labels(result="failed").inc()
            for app, env, _ in items:
                _fail(outcome.failures, app, env, exc, deps)
            return
        if pushed.sha:
            outcome.sha = pushed.sha
            result = "rejected_retried" if pushed.rejected_count else "ok"
            deps.metrics.git_pushes.labels(result=result).inc()
    _remember_texts(attempt, outcome, committed=bool(outcome.sha))
    _collect_attempt(attempt, deps, outcome, dry_run)


def _remember_texts(attempt: dict[str, object], outcome: _RepoOutcome, *, committed: bool
                    ) -> None:
    """The branch after the last plan attempt: what it read, plus its edits if they landed.

    The last attempt read every file at the head it committed on, and the commit holds
    exactly ``files``; without a commit (nothing to do, dry run) the head is what it read.
    """
    originals = attempt.get("originals") or {}
    files = attempt.get("files") or {}
    assert isinstance(originals, dict) and isinstance(files, dict)
    outcome.texts.update(originals)
    if committed:
        outcome.texts.update(files)


def _collect_attempt(attempt: dict[str, object], deps: Deps, outcome: _RepoOutcome,
                     dry_run: bool) -> None:
    changes = attempt.get("changes") or []
    failures = attempt.get("failures") or []
    unchanged = attempt.get("unchanged") or []
    assert isinstance(changes, list) and isinstance(failures, list)
    assert isinstance(unchanged, list)
    outcome.unchanged += unchanged
    for app, env, exc in failures:
        _fail(outcome.failures, app, env, exc, deps)
    for change in changes:
        outcome.changes.append(change)
        if not dry_run:
            deps.metrics.updates.labels(app=change.app, env=change.env, mode="commit").inc()
            log.info("committed %s: %s", change.file, change.reason,
                     extra={"app": change.app, "env": change.env, "image": change.image})


def _propose_gated(target: GitTarget, repo: DeployRepo, items: list[Target], deps: Deps,
                   dry_run: bool, outcome: _RepoOutcome) -> None:
    approvals = deps.approvals_for(target, repo)
    for app, env, res in items:
        try:
            text = _read_values(repo.read, app, env)
            new_text, change, why = plan_edit(app, env, res, text)
            if approvals is None:
                raise _no_forge(app, env, target)
            from image_updater.engine.approval import Approvals

            assert isinstance(approvals, Approvals)
            outcome.texts[env.file] = text  # a pull request leaves the branch as it is
            proposal = approvals.sync(app, env, change, why, _replan(app, env, res),
                                      dry_run=dry_run)
        except Exception as exc:  # one environment's proposal never costs the others theirs
            if not isinstance(exc, ImageUpdaterError):
                log.error("unexpected fault while proposing %s/%s", app.name, env.name,
                          exc_info=True)
            _fail(outcome.failures, app, env, as_image_updater_error(
                exc, f"the pull request for {app.name}/{env.name}"), deps)
            continue
        if proposal.url and proposal.action != "closed":
            outcome.pull_requests[(app.name, env.name)] = proposal.url
        if change is None or not proposal.changed:
            outcome.unchanged.append((app.name, env.name))
            continue
        outcome.changes.append(change)
        if dry_run:
            outcome.previews.append(values_diff(text, new_text, env.file))


def _replan(app: App, env: Environment, res: Resolved) -> PlanFn:
    """The pull request's commit, derived again from the base as it is at push time."""

    def plan(read: Callable[[str], str | None]) -> Plan:
        new_text, change, _ = plan_edit(app, env, res, _read_values(read, app, env))
        if change is None:  # the base already holds it: the branch is the base itself
            return Plan(files={}, message="")
        return Plan(files={env.file: new_text}, message=commit_message([change]))

    return plan


def _no_forge(app: App, env: Environment, target: GitTarget) -> ImageUpdaterError:
    from image_updater.errors import ConfigError

    return ConfigError(
        f"environment {env.name} of app {app.name} needs approval by pull request, but no "
        f"forge is configured for {target.url}; add a 'forges' entry to the settings file.")


def _read_values(read: Callable[[str], str | None], app: App, env: Environment) -> str:
    from image_updater.errors import ValuesError

    text = read(env.file)
    if text is None:
        raise ValuesError(
            f"values file {env.file} does not exist in {app.git.url} (branch {app.git.branch}) "
            f"for app {app.name}, environment {env.name}; create it or fix 'file' in "
            f"{app.source or 'the policy'}. Nothing was written.")
    return text


def _publish_deployed(repo: DeployRepo, items: list[Target], deps: Deps,
                      texts: dict[str, str]) -> None:
    """The info metric says what each environment runs according to git, after this cycle.

    Files this cycle already read are not read again: ``repo.read`` walks the tree from
    the root on every call, which made this pass quadratic in the number of app folders.
    """
    for app, env, _ in items:
        try:
            text = texts[env.file] if env.file in texts else repo.read(env.file)
            current = read_current(env, text) if text is not None else None
        except ImageUpdaterError:
            continue
        if current is not None and current.digest:
            deps.metrics.set_deployed(app.name, env.name, current.tag or "", current.digest)
