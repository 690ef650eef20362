"""What runs where, since when, and why: one status per app environment.

:func:`derive` is pure: it decides the state from what git holds, the environment's newest
change (from history), its hold, its open pull request, the registry's answer now and this
run's error. :func:`gather` asks git, the forge and the registry once each and calls it.

States, first match wins (a person's decision outranks everything the tools observe):

``held`` / ``rolled-back``  a hold in ``.image-updater/holds.yaml``; nothing is written
``awaiting-approval``       an open pull request (or its branch, without a forge) waits
``failing``                 the registry or git failed in this run (the error is shown)
``waiting``                 the followed tag does not exist yet: nothing promoted so far
``in-sync``                 git holds the digest the policy chooses now
``unverified``              the registry moved to a digest the environment's signature gate
                            (policy ``verify``) refuses; nothing is written until it is signed
``drifted``                 git was edited by hand to another digest, and no hold explains it
``pending``                 the registry moved; the next cycle writes it
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from image_updater.config.holds import HOLDS_FILE, Hold, Holds, parse_holds
from image_updater.engine.approval import Approvals, branch_name
from image_updater.engine.plan import plan_edit, read_current
from image_updater.engine.resolve import Resolution, Resolved, resolve
from image_updater.engine.verify import (
    SignatureCheckFn,
    VerifiedDigests,
    check_signatures,
    require_signed,
)
from image_updater.errors import ImageUpdaterError, UnverifiedError, ValuesError
from image_updater.gitops.history import HistoryEntry, newest_per_env, read_history
from image_updater.gitops.repo import DeployRepo
from image_updater.model import DEFAULT_FILE_BYTES, App, Environment, GitTarget
from image_updater.registry.base import Registry

State = Literal["in-sync", "pending", "awaiting-approval", "held", "rolled-back", "drifted",
                "waiting", "failing", "unverified"]


@dataclass(frozen=True, kw_only=True)
class EnvStatus:
    """One row of ``status``. Its fields are the ``status --format json`` schema."""

    app: str
    env: str
    state: State
    git_digest: str | None          # what the values file holds
    git_tag: str | None             # the tag (or version) it came from, where written
    commit: str | None = None       # the commit that put it there, and when, by whom, how
    since: str | None = None
    by: str | None = None
    how: str | None = None
    wanted_digest: str | None = None  # what the tag (or policy choice) resolves to now
    wanted_tag: str | None = None
    pull_request: str | None = None   # awaiting-approval: its URL (or branch)
    hold: Hold | None = None
    error: str | None = None          # failing: this run's error
    #: unverified: why the signature gate refuses the wanted digest, and what to do
    unverified: str | None = None

    def as_json(self) -> dict[str, object]:
        hold = None if self.hold is None else {
            "kind": self.hold.kind, "by": self.hold.by, "reason": self.hold.reason,
            "since": self.hold.since, "digest": self.hold.digest}
        return {"app": self.app, "env": self.env, "state": self.state,
                "git": {"digest": self.git_digest, "tag": self.git_tag, "commit": self.commit,
                        "since": self.since, "by": self.by, "how": self.how},
                "wanted": {"digest": self.wanted_digest, "tag": self.wanted_tag},
                "pull_request": self.pull_request, "hold": hold, "error": self.error,
                "unverified": self.unverified}


@dataclass(frozen=True, kw_only=True)
class Observed:
    """Everything :func:`derive` needs about one environment."""

    git_digest: str | None
    git_tag: str | None
    newest: HistoryEntry | None = None
    hold: Hold | None = None
    pull_request: str | None = None
    resolved: Resolved | None = None
    waiting_for: str | None = None   # the absent tag
    error: str | None = None
    unverified: str | None = None    # the signature gate's refusal of the wanted digest


def derive(app: str, env: str, seen: Observed) -> EnvStatus:
    """The state of one environment (pure)."""
    newest = seen.newest
    state = _state(seen)
    row = EnvStatus(
        app=app, env=env, state=state, git_digest=seen.git_digest, git_tag=seen.git_tag,
        commit=newest.commit if newest else None, since=newest.when if newest else None,
        by=newest.by if newest else None, how=newest.how if newest else None,
        wanted_digest=seen.resolved.digest if seen.resolved else None,
        wanted_tag=seen.resolved.tag if seen.resolved else seen.waiting_for,
        pull_request=seen.pull_request, hold=seen.hold, error=seen.error,
        unverified=seen.unverified if state == "unverified" else None)
    return row


def _state(seen: Observed) -> State:
    if seen.hold is not None:
        return "rolled-back" if seen.hold.kind == "rollback" else "held"
    if seen.pull_request is not None:
        return "awaiting-approval"
    if seen.error is not None:
        return "failing"
    if seen.waiting_for is not None or seen.resolved is None:
        return "waiting"
    if seen.resolved.digest == seen.git_digest:
        return "in-sync"
    if seen.unverified is not None:
        return "unverified"
    newest = seen.newest
    # a person changed the digest (not the first commit that created the file)
    hand_edited = (newest is not None and newest.action == "hand-edit"
                   and newest.old_digest is not None and newest.new_digest == seen.git_digest)
    return "drifted" if hand_edited else "pending"


# ---- gathering (I/O) -----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class StatusDeps:
    registry_for: Callable[[str], Registry]
    repo_for: Callable[[GitTarget], DeployRepo]
    approvals_for: Callable[[GitTarget, DeployRepo], Approvals | None]
    values_file_bytes: int = DEFAULT_FILE_BYTES
    signatures: SignatureCheckFn = check_signatures
    #: the daemon's signature verdicts: a digest it verified is not asked about again
    verified: VerifiedDigests | None = None


#: (app, env) -> the signature gate's refusal of the digest the policy chooses now
Refusals = dict[tuple[str, str], str]


async def gather(apps: Sequence[App], deps: StatusDeps) -> list[EnvStatus]:
    """The status of every environment of ``apps``, in policy order. Writes nothing."""
    resolution = await resolve(apps, deps.registry_for)
    refused = await _signature_refusals(apps, resolution, deps)
    rows: list[EnvStatus] = []
    for app in apps:
        rows += await asyncio.to_thread(_app_status, app, resolution, deps, refused)
    return rows


async def _signature_refusals(apps: Sequence[App], resolution: Resolution, deps: StatusDeps
                              ) -> Refusals:
    """Ask each gated environment's gate about the digest its policy chooses now (shown
    only when git does not hold it yet: ``unverified`` instead of ``pending``)."""
    refused: Refusals = {}
    for app in apps:
        for env in app.environments:
            resolved = resolution.resolved.get((app.name, env.name))
            if env.verify is None or resolved is None:
                continue
            try:
                await require_signed(app, env, resolved.digest, deps.registry_for,
                                     deps.signatures, deps.verified)
            except UnverifiedError as exc:
                refused[(app.name, env.name)] = str(exc)
            except ImageUpdaterError as exc:  # not a verdict: the signatures were not read
                refused[(app.name, env.name)] = f"the signatures could not be read: {exc}"
    return refused


def _app_status(app: App, resolution: Resolution, deps: StatusDeps, refused: Refusals
                ) -> list[EnvStatus]:
    repo = deps.repo_for(app.git)
    try:
        with repo.locked("the status read"):
            head = repo.sync()
            try:
                holds, broken = parse_holds(repo.read(HOLDS_FILE)), None
            except ImageUpdaterError as exc:  # the cycle writes nothing; still show what runs
                holds, broken = Holds.empty(), exc
            newest = newest_per_env(repo.path, head, app)
            return [_env_status(app, env, repo, holds, newest.get(env.name), resolution, deps,
                                broken, refused.get((app.name, env.name)))
                    for env in app.environments]
    except ImageUpdaterError as exc:  # git itself failed: every environment is failing
        return [EnvStatus(app=app.name, env=e.name, state="failing", git_digest=None,
                          git_tag=None, error=str(exc)) for e in app.environments]


def _env_status(app: App, env: Environment, repo: DeployRepo, holds: Holds,
                newest: HistoryEntry | None, resolution: Resolution, deps: StatusDeps,
                broken_holds: ImageUpdaterError | None = None,
                unverified: str | None = None) -> EnvStatus:
    key = (app.name, env.name)
    error: ImageUpdaterError | None = resolution.errors.get(key) or broken_holds
    tag = digest = None
    try:
        text = repo.read(env.file)
        if text is None:
            raise ValuesError(f"{env.file} does not exist in {repo.shown_url}; create it or "
                              f"fix the file of environment {env.name} in the policy.")
        current = read_current(env, text, max_bytes=deps.values_file_bytes)
        tag, digest = current.tag, current.digest
        resolved = resolution.resolved.get(key)
        if resolved is not None:  # what the cycle would do: a missing key fails it too
            plan_edit(app, env, resolved, text, max_bytes=deps.values_file_bytes)
        behind = resolved is not None and resolved.digest != digest
        pr = _open_pull_request(app, env, repo, deps, behind) if env.approval != "none" \
            else None
    except ImageUpdaterError as exc:
        error, pr = error or exc, None
    return derive(app.name, env.name, Observed(
        git_digest=digest, git_tag=tag, newest=newest, hold=holds.get(app.name, env.name),
        pull_request=pr, resolved=resolution.resolved.get(key),
        waiting_for=resolution.waiting.get(key), error=str(error) if error else None,
        unverified=unverified))


def _open_pull_request(app: App, env: Environment, repo: DeployRepo, deps: StatusDeps,
                       behind: bool) -> str | None:
    """The URL of the environment's open pull request. Without a forge: its branch, when it
    exists on the remote and git is ``behind`` the registry (a merged branch may stay)."""
    branch = branch_name(app, env)
    approvals = deps.approvals_for(app.git, repo)
    if approvals is None:
        exists = behind and repo.remote_branch_sha(branch) is not None
        return f"branch {branch}" if exists else None
    return next((p.url for p in approvals.forge.find(branch) if p.state == "open"), None)


def history_of(app: App, env: str | None, repo: DeployRepo, *, limit: int | None = None
               ) -> list[HistoryEntry]:
    """``image-updater history``: the app's changes on the deploy branch, newest first."""
    with repo.locked("the history read"):
        head = repo.sync()
        return read_history(repo.path, head, app, env, limit=limit, holds_file=HOLDS_FILE)


def recent_history(apps: Sequence[App], deps: StatusDeps, *, limit: int
                   ) -> dict[str, list[HistoryEntry]]:
    """Each app's newest ``limit`` changes (the status page), newest first: one fetch per deploy
    repository, then one bounded ``git log`` per app, each under the clone's lock on its own
    so that a cycle waits for one app's read at most. An app whose history cannot be read
    (its repository failed) is left out: its status rows already carry the error."""
    by_target: dict[GitTarget, list[App]] = {}
    for app in apps:
        by_target.setdefault(app.git, []).append(app)
    out: dict[str, list[HistoryEntry]] = {}
    for target, group in by_target.items():
        repo = deps.repo_for(target)
        try:
            head = repo.sync()
            for app in group:
                with repo.locked("the status page's history read"):
                    out[app.name] = read_history(repo.path, head, app, limit=limit,
                                                 holds_file=HOLDS_FILE)
        except ImageUpdaterError:
            continue
    return out


# ---- rendering: a table that fits a terminal (100 columns) ---------------------------------

def status_table(rows: Sequence[EnvStatus]) -> str:
    lines = [_cells(("APP/ENV", 24), ("STATE", 17), ("GIT", 8), ("SINCE", 16), ("HOW", 31))]
    for r in rows:
        lines.append(_cells((f"{r.app}/{r.env}", 24), (r.state, 17), (_hex(r.git_digest), 8),
                            (_when(r.since), 16), (r.how or "", 31)))
        lines += [f"  {detail}" for detail in _details(r)]
    return "\n".join(lines)


def _details(r: EnvStatus) -> list[str]:
    out = []
    if r.hold is not None:
        out.append(f"{r.hold.kind} by {r.hold.by} since {r.hold.since}: {r.hold.reason}")
    if r.pull_request:
        out.append(f"pull request: {r.pull_request}")
    if r.state == "waiting":
        out.append(f"tag {r.wanted_tag or '?'} does not exist yet (nothing promoted here)")
    elif r.wanted_digest and r.wanted_digest != r.git_digest:
        out.append(f"tag {r.wanted_tag} now: {_short(r.wanted_digest)}")
    if r.error:
        out.append(f"error: {r.error}")
    if r.unverified:
        out.append(f"unverified: {r.unverified}")
    return out


def history_table(entries: Sequence[HistoryEntry]) -> str:
    lines = [_cells(("WHEN", 16), ("ENV", 10), ("CHANGE", 29), ("COMMIT", 8), ("HOW", 33))]
    for e in entries:
        change = f"{_hex(e.old_digest)} → {_hex(e.new_digest)}"
        if e.new_tag and e.new_tag != e.env:
            change += f" ({e.new_tag})"
        if e.action in ("hold", "release") and not e.new_digest:
            change = "-"
        lines.append(_cells((_when(e.when), 16), (e.env, 10), (change, 29), (e.commit[:8], 8),
                            (e.how, 33)))
    return "\n".join(lines)


def _cells(*cells: tuple[str, int]) -> str:
    return " ".join(text[:width - 1] + "…" if len(text) > width else text.ljust(width)
                    for text, width in cells).rstrip()


def _short(digest: str | None) -> str:
    return f"sha256:{_hex(digest)}" if digest else "-"


def _hex(digest: str | None) -> str:
    return digest.partition(":")[2][:8] if digest else "(none)"


def _when(iso: str | None) -> str:
    return iso.replace("T", " ")[:16] if iso else "-"
