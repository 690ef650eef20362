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
from image_updater.gitops.repo import DeployRepo
from image_updater.observability.metrics import Metrics

log = logging.getLogger("image_updater.approval")

DIGEST_TRAILER = "Image-Updater-Digest: "


def branch_name(app: App, env: Environment) -> str:
    return f"{env.pull_request.branch_prefix}{app.name}-{env.name}"


@dataclass
class Approvals:
    forge: Forge
    repo: DeployRepo
    base_branch: str
    metrics: Metrics

    def sync(self, app: App, env: Environment, old_text: str, new_text: str,
             change: Change | None, why: str, *, dry_run: bool = False) -> str | None:
        """Bring the forge in line with the wanted change; return the open PR's URL, if any."""
        branch = branch_name(app, env)
        prs = self.forge.find(branch)
        open_pr = next((p for p in prs if p.state == "open"), None)
        if change is None:
            if open_pr is not None and not dry_run:
                self._close_obsolete(open_pr, app, env, why)
            return None
        marker = DIGEST_TRAILER + change.digest
        if open_pr is not None and marker in open_pr.body:
            return open_pr.url  # already proposed; a person decides
        if open_pr is None and any(p.state == "closed" and marker in p.body for p in prs):
            log.info("a pull request for %s was closed without merging; not reopening it for "
                     "the same digest (a new digest opens a new one)", change.digest[:19],
                     extra={"app": app.name, "env": env.name})
            return None
        title, body = self._title(change), self._body(app, env, change)
        if dry_run:
            return f"(dry run) would {'update' if open_pr else 'open'} a pull request from {branch}"
        message = commit_message([change])
        self.repo.push_branch(branch, {env.file: new_text}, message)
        if open_pr is not None:
            pr = self.forge.update(open_pr, title=title, body=body)
            verb = "updated"
        else:
            pr = self.forge.create(PullRequestRequest(
                head=branch, base=self.base_branch, title=title, body=body,
                labels=env.pull_request.labels, reviewers=env.pull_request.reviewers,
                assignees=env.pull_request.assignees, draft=env.pull_request.draft))
            verb = "opened"
        self.metrics.updates.labels(app=app.name, env=env.name, mode="pr").inc()
        log.info("%s pull request %s: %s", verb, pr.url, change.reason,
                 extra={"app": app.name, "env": env.name, "image": app.image})
        return pr.url

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
