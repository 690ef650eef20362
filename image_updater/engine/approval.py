"""Environments that need a person's approval: the change becomes a pull request.

One branch and at most one open pull request per app environment
(``image-updater/<app>-<env>``). The forge is the only state: each cycle reads the pull
requests for that branch, so a restart loses nothing.

- newer digest before the merge → force-update the branch, update title and body (upsert);
- merged → the values file already holds the digest, nothing to do;
- closed without merging → not reopened for that digest; a new digest opens a new one;
- the tag moves back to what is deployed → the obsolete pull request is closed with a comment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from image_updater.changes import Change
from image_updater.config.model import App, Environment
from image_updater.engine.plan import read_current
from image_updater.errors import ImageUpdaterError
from image_updater.forge.base import Forge, PullRequest, PullRequestRequest
from image_updater.gitops.message import commit_message
from image_updater.gitops.repo import DeployRepo, PlanFn
from image_updater.observability.metrics import Metrics

log = logging.getLogger("image_updater.approval")

DIGEST_TRAILER = "Image-Updater-Digest: "


def branch_name(app: App, env: Environment) -> str:
    return f"{env.pull_request.branch_prefix}{app.name}-{env.name}"


@dataclass(frozen=True)
class Proposal:
    """What :meth:`Approvals.sync` did for one app environment."""

    #: opened | updated | pending (already proposed) | declined (closed unmerged before)
    #: | closed (obsolete) | current (nothing to propose)
    action: str
    url: str | None = None

    @property
    def changed(self) -> bool:
        return self.action in ("opened", "updated")


@dataclass
class Approvals:
    forge: Forge
    repo: DeployRepo
    base_branch: str
    metrics: Metrics

    def sync(self, app: App, env: Environment, change: Change | None, why: str,
             replan: PlanFn, *, dry_run: bool = False) -> Proposal:
        """Bring the forge in line with the wanted change.

        ``replan`` derives the branch's commit from the base branch as it is when the branch
        is pushed, so an edit somebody made to the values file meanwhile is kept, not undone.
        """
        branch = branch_name(app, env)
        prs = self.forge.find(branch)
        open_pr = next((p for p in prs if p.state == "open"), None)
        if change is None:
            if open_pr is not None and not dry_run:
                self._close_obsolete(open_pr, app, env, why)
                return Proposal("closed", open_pr.url)
            return Proposal("current")
        marker = DIGEST_TRAILER + change.digest
        if open_pr is not None and marker in open_pr.body:
            return Proposal("pending", open_pr.url)  # already proposed; a person decides
        if any(p.state == "closed" and marker in p.body for p in prs):
            # Checked even while another proposal is open: a digest somebody turned down is
            # never proposed again, whichever way the tag moved since.
            log.info("a pull request for %s was closed without merging; not proposing the same "
                     "digest again (a new digest opens a new pull request)", change.digest[:19],
                     extra={"app": app.name, "env": env.name})
            return Proposal("declined", open_pr.url if open_pr else None)
        title, body = self._title(change), self._body(app, env, change)
        if dry_run:
            verb = "update" if open_pr else "open"
            return Proposal("updated" if open_pr else "opened",
                            f"(dry run) would {verb} a pull request from {branch}")
        self.repo.push_branch(branch, replan)
        if open_pr is not None:
            pr = self.forge.update(open_pr, title=title, body=body)
            self.forge.comment(pr, _superseded_note(open_pr, change))
            action = "updated"
        else:
            pr = self.forge.create(PullRequestRequest(
                head=branch, base=self.base_branch, title=title, body=body,
                labels=env.pull_request.labels, reviewers=env.pull_request.reviewers,
                assignees=env.pull_request.assignees, draft=env.pull_request.draft))
            action = "opened"
        self.metrics.updates.labels(app=app.name, env=env.name, mode="pr").inc()
        log.info("%s pull request %s: %s", action, pr.url, change.reason,
                 extra={"app": app.name, "env": env.name, "image": app.image})
        return Proposal(action, pr.url)

    def _close_obsolete(self, pr: PullRequest, app: App, env: Environment, why: str) -> None:
        self.forge.close(pr, comment=(
            f"Closing: {env.file} already holds what the {env.name} policy selects ({why}), so "
            "this proposal is obsolete. image-updater will open a new pull request if the "
            "image changes again."))
        log.info("closed obsolete pull request %s", pr.url,
                 extra={"app": app.name, "env": env.name})

    def _since(self, file: str, digest: str) -> str | None:
        """The image-updater commit that wrote ``digest`` into ``file`` (None if unknown)."""
        try:
            records = self.repo.log_trailers(path=file, limit=20)
        except ImageUpdaterError:
            return None
        for record in records:
            if any(t.get("digest") == digest for t in record.trailers):
                return record.sha
        return None

    @staticmethod
    def _title(change: Change) -> str:
        what = change.tag or change.digest[:19]
        return f"Promote {change.app} to {change.env}: {what} ({change.digest[7:19]})"

    def _body(self, app: App, env: Environment, change: Change) -> str:
        lines = [f"image-updater proposes to update **{change.app}** in **{change.env}**.", "",
                 "| key | from | to |", "|---|---|---|"]
        lines += [f"| `{k.key}` in `{change.file}` | `{k.old or '(empty)'}` | `{k.new}` |"
                  for k in change.keys]
        lines += ["", f"Image: `{change.image}@{change.digest}`", f"Why: {change.reason}", "",
                  "**Evidence** (other environments of this app at the head of "
                  f"`{self.base_branch}`):"]
        lines += evidence(app, env, change.digest, self.repo.read, self._since) or [
            "- no other environment runs this digest yet"]
        lines += ["", "Merging this pull request is the approval; the environment deploys "
                  "when it reaches the branch.", "", "---",
                  commit_message([change]).split("\n\n")[-1]]
        return "\n".join(lines)


def _superseded_note(pr: PullRequest, change: Change) -> str:
    """Posted when an open proposal moves to a new digest: approvals were for the old one."""
    previous = next((line[len(DIGEST_TRAILER):].strip() for line in pr.body.splitlines()
                     if line.startswith(DIGEST_TRAILER)), "")
    was = f"`{previous}`" if previous else "the previous digest"
    return (f"image-updater moved this pull request to `{change.digest}` (was {was}). "
            "Any approval given before this comment was for the previous image: review "
            "again before merging. (Enable the forge's dismissal of stale approvals to have "
            "this enforced.)")


def evidence(app: App, env: Environment, digest: str, read: Callable[[str], str | None],
             since: Callable[[str, str], str | None] = lambda _f, _d: None) -> list[str]:
    """Which other environments of ``app`` already run ``digest``, according to git, and
    since which commit (``since(file, digest)``)."""
    out = []
    others: Sequence[Environment] = [e for e in app.environments if e.name != env.name]
    for other in others:
        text = read(other.file)
        if text is None:
            continue
        try:
            current = read_current(other, text)
        except ImageUpdaterError:  # evidence is informative; a broken file is reported elsewhere
            continue
        if current.digest == digest:
            sha = since(other.file, digest)
            when = f", since commit {sha[:12]}" if sha else ""
            out.append(f"- `{other.name}` runs this digest (`{other.file}`{when})")
    return out
