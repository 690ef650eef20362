"""Environments that need a person's approval: the change becomes a pull request.

One branch and at most one open pull request per app environment
(``image-updater/<app>-<env>``). The forge is the only state: each cycle reads the pull
requests for that branch, so a restart loses nothing.

- newer digest before the merge → force-update the branch, update title and body (upsert),
  saying that earlier approvals were for the previous image;
- merged → the values file already holds the digest, nothing to do;
- closed without merging by a person → that digest is declined: never proposed again, and a
  proposal open for another digest while the policy selects it is withdrawn; a new digest
  opens a new one;
- the tag moves back to what is deployed → the obsolete pull request is withdrawn: its
  digest trailer renamed (so it does not count as declined) and closed with a comment.

The branch belongs to image-updater: each cycle checks it against a fresh plan and
force-pushes it when it proposes something else, or when the base changed the file it
edits (commits others push to it are replaced); unrelated base commits leave it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from image_updater.changes import Change, PullRequestAction, PullRequestVerb
from image_updater.config.holds import Hold
from image_updater.config.templates import NO_TEMPLATES, MessageTemplates, pull_request_context
from image_updater.engine.plan import read_current
from image_updater.errors import ImageUpdaterError
from image_updater.forge.base import Forge, PullRequest, PullRequestRequest
from image_updater.gitops.message import trailer_block
from image_updater.gitops.repo import DeployRepo, PlanFn
from image_updater.model import DEFAULT_FILE_BYTES, App, Environment

log = logging.getLogger("image_updater.approval")

DIGEST_TRAILER = "Image-Updater-Digest: "
#: in the body of a pull request told about a hold; one marker per hold (its ``since``)
HELD_MARKER = "<!-- image-updater-held: {since} -->"
#: replaces DIGEST_TRAILER in a pull request image-updater closed itself (not a decline)
WITHDRAWN_TRAILER = "Image-Updater-Withdrawn-Digest: "


def branch_name(app: App, env: Environment) -> str:
    return f"{env.pull_request.branch_prefix}{app.name}-{env.name}"


@dataclass(frozen=True)
class Proposal:
    """What :meth:`Approvals.sync` did for one app environment."""

    #: opened | updated | pending (already proposed) | declined (closed unmerged before)
    #: | closed (obsolete) | current (nothing to propose)
    action: str
    url: str | None = None
    #: what was done or decided, for the cycle's result (reported, never logged here)
    actions: tuple[PullRequestAction, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.action in ("opened", "updated")


@dataclass
class Approvals:
    forge: Forge
    repo: DeployRepo
    base_branch: str
    #: settings ``limits.values_file_bytes``, for the values files read as evidence
    values_file_bytes: int = DEFAULT_FILE_BYTES
    #: settings ``templates``: the pull request's title and body (the trailers stay ours)
    templates: MessageTemplates = NO_TEMPLATES

    def sync(self, app: App, env: Environment, change: Change | None, why: str,
             replan: PlanFn, *, dry_run: bool = False, trailers: str | None = None
             ) -> Proposal:
        """Bring the forge in line with the wanted change.

        ``replan`` derives the branch's commit from the base branch as it is when the branch
        is pushed, so an edit somebody made to the values file meanwhile is kept, not undone.
        The branch is pushed before the pull request's text changes, and pushed again (a
        no-op when it is right) while a proposal is pending, so a cycle that failed half
        way never leaves a branch that deploys something other than what the title says.

        ``trailers`` is the trailer block of the branch's commit (its source, a promotion's
        evidence), which ends the body too, so the approver reads what the commit will say.
        """
        branch = branch_name(app, env)
        prs = self.forge.find(branch)
        open_pr = next((p for p in prs if p.state == "open"), None)
        if change is None:
            if open_pr is not None and not dry_run:
                closed = self._withdraw(open_pr, app, env, f"{env.file} already holds what "
                                        f"the {env.name} policy selects ({why})")
                return Proposal("closed", open_pr.url, closed)
            return Proposal("current")
        marker = DIGEST_TRAILER + change.digest
        declined = next((p for p in prs if p.state == "closed" and marker in p.body), None)
        if declined is not None:
            # A digest somebody turned down is never proposed again, whichever way the tag
            # moved since; a proposal still open for another digest is obsolete too.
            actions: tuple[PullRequestAction, ...] = (PullRequestAction(
                app=app.name, env=env.name, image=app.image, action="declined",
                url=declined.url, why="closed without merging", digest=change.digest),)
            if open_pr is not None and not dry_run:
                actions += self._withdraw(open_pr, app, env, f"the {env.name} policy now "
                                          f"selects {change.digest}, which was declined in "
                                          f"{declined.url}")
            return Proposal("declined", actions=actions)
        if dry_run:
            if open_pr is not None and marker in open_pr.body:
                return Proposal("pending", open_pr.url)
            verb = "update" if open_pr else "open"
            return Proposal("updated" if open_pr else "opened",
                            f"(dry run) would {verb} a pull request from {branch}")
        pending = open_pr is not None and marker in open_pr.body
        before = None if open_pr is None or pending else self.repo.remote_branch_sha(branch)
        pushed = self.repo.push_branch(branch, replan)
        if pushed is None:
            return Proposal("current", open_pr.url if open_pr else None)  # base has it now
        if open_pr is not None and pending:
            return Proposal("pending", open_pr.url)  # already proposed; a person decides
        if open_pr is not None:
            previous = _proposed_digest(open_pr)


            def put_back() -> None:
                # The title names the previous image: so must the branch, so that merging
                # the pull request deploys what it says.
                if before is not None and before != pushed:
                    self.repo.restore_branch(branch, before)

            try:
                title, body = self._text(app, env, change, trailers, url=open_pr.url,
                                         supersedes=previous)
                pr = self.forge.update(open_pr, title=title, body=body)
            except ImageUpdaterError:
                put_back()  # until an update succeeds
                raise
            if pr.state != "open":
                # A person closed it while this cycle ran: that close declines what they saw.
                self.forge.update(pr, title=open_pr.title, body=open_pr.body)
                put_back()
                return Proposal("declined")
            self._note(pr, _superseded_note(previous, change), app, env)
            action: PullRequestVerb = "updated"
        else:
            title, body = self._text(app, env, change, trailers)
            pr = self.forge.create(PullRequestRequest(
                head=branch, base=self.base_branch, title=title,
                body=body, labels=env.pull_request.labels,
                reviewers=env.pull_request.reviewers, assignees=env.pull_request.assignees,
                draft=env.pull_request.draft))
            action = "opened"
        return Proposal(action, pr.url, (PullRequestAction(
            app=app.name, env=env.name, image=app.image, action=action, url=pr.url,
            why=change.why, digest=change.digest),))

    def note_held(self, app: App, env: Environment, hold: Hold, *, dry_run: bool = False
                  ) -> str | None:
        """Tell the open pull request of a held environment, once per hold, that it stays
        open but does not move; return its URL (None: no open pull request).

        The body keeps a hidden marker naming the hold, so later cycles do not comment again;
        a new hold (another ``since``) gets its own comment.
        """
        open_pr = next((p for p in self.forge.find(branch_name(app, env))
                        if p.state == "open"), None)
        if open_pr is None:
            return None
        marker = HELD_MARKER.format(since=hold.since)
        if dry_run or marker in open_pr.body:
            return open_pr.url
        pr = self.forge.update(open_pr, title=open_pr.title, body=f"{open_pr.body}\n{marker}")
        if pr.state == "open":
            self._note(pr, _held_note(hold), app, env)
        return pr.url

    def _withdraw(self, pr: PullRequest, app: App, env: Environment, why: str
                  ) -> tuple[PullRequestAction, ...]:
        """Close a proposal image-updater no longer stands behind.

        Its digest trailer is renamed first: only a pull request a *person* closed counts
        as declining its digest, so a withdrawn digest can be proposed again later.
        """
        body = pr.body.replace(DIGEST_TRAILER, WITHDRAWN_TRAILER)
        if body != pr.body:
            updated = self.forge.update(pr, title=pr.title, body=body)
            if updated.state != "open":  # a person closed it meanwhile: their decline stands
                self.forge.update(updated, title=pr.title, body=pr.body)
                return ()
            pr = updated
        self.forge.close(pr, comment=(
            f"Closing: {why}, so this proposal is obsolete. image-updater opens a new pull "
            "request when the image changes again."))
        return (PullRequestAction(app=app.name, env=env.name, image=app.image,
                                  action="closed", url=pr.url, why=why),)

    def _note(self, pr: PullRequest, text: str, app: App, env: Environment) -> None:
        """A comment that is useful but not essential: the body already says the same."""
        try:
            self.forge.comment(pr, text)
        except ImageUpdaterError as exc:
            log.warning("could not comment on %s (%s); its description says the same",
                        pr.url, exc, extra={"app": app.name, "env": env.name})

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

    def _text(self, app: App, env: Environment, change: Change, trailers: str | None, *,
              url: str | None = None,
              supersedes: str | None = None) -> tuple[str, str]:
        """Title and body: the settings' templates (or the built-in text), then the trailer
        block, which a template can neither drop nor forge (declines are read from it)."""
        found = evidence(app, env, change.digest, self.repo.read, self._since,
                         max_bytes=self.values_file_bytes)
        context = pull_request_context(
            change, evidence=found, base_branch=self.base_branch, url=url,
            supersedes=supersedes, default_title=self._title(change, env),
            default_body=self._body(change, found, supersedes=supersedes))
        return (self.templates.title(context), "\n".join(
            [self.templates.body(context), "", "---",
             (trailers or trailer_block([change])) + "\n"]))

    @staticmethod
    def _title(change: Change, env: Environment) -> str:
        short = change.digest[:19]  # sha256: and 12 hex digits, as registries show digests
        if env.strategy.kind == "digest" or not change.tag:
            # the tag is the environment's own (:prod) and says nothing: name the image
            return f"Promote {change.app} to {change.env}: {short}"
        return f"Promote {change.app} to {change.env}: {change.tag} ({short})"

    def _body(self, change: Change, found: list[str], *, supersedes: str | None = None) -> str:
        """The built-in body, before the trailer block."""
        lines = [f"image-updater proposes to update **{change.app}** in **{change.env}**.", ""]
        if supersedes is not None:
            lines += [f"> **Updated:** this pull request proposed `{supersedes or 'another image'}`"
                      " before. Approvals given before the update were for that image: review "
                      "again before merging.", ""]
        lines += ["| key | from | to |", "|---|---|---|"]
        lines += [f"| `{k.key}` in `{change.file}` | `{k.old or '(unset)'}` | `{k.new}` |"
                  for k in change.keys]
        lines += ["", f"Image: `{change.image}@{change.digest}`", f"Why: {change.why}", "",
                  "**Evidence** (other environments of this app at the head of "
                  f"`{self.base_branch}`):"]
        lines += found or ["- no other environment runs this digest yet"]
        lines += ["", "Merging this pull request is the approval; the environment deploys "
                  "when it reaches the branch."]
        return "\n".join(lines)


def _proposed_digest(pr: PullRequest) -> str:
    """The digest an open pull request of ours proposes; "" when its body (editable by
    anyone with access to the forge) holds no well-formed one."""
    from image_updater.registry.base import check_digest

    found = next((line[len(DIGEST_TRAILER):].strip() for line in pr.body.splitlines()
                  if line.startswith(DIGEST_TRAILER)), "")
    try:
        return check_digest(found)
    except ImageUpdaterError:
        return ""


def _held_note(hold: Hold) -> str:
    release = f"image-updater release {hold.app} {hold.env}"
    return (f"{hold.describe()}. image-updater leaves this pull request open and does not "
            f"update it while the hold lasts; after `{release}` the next cycle brings it up "
            "to date (or closes it if it became obsolete). Merging it now would deploy this "
            "image in spite of the hold.")


def _superseded_note(previous: str, change: Change) -> str:
    """Posted when an open proposal moves to a new digest: approvals were for the old one."""
    was = f"`{previous}`" if previous else "the previous digest"
    return (f"image-updater moved this pull request to `{change.digest}` (was {was}). "
            "Any approval given before this comment was for the previous image: review "
            "again before merging. (Enable the forge's dismissal of stale approvals to have "
            "this enforced.)")


def evidence(app: App, env: Environment, digest: str, read: Callable[[str], str | None],
             since: Callable[[str, str], str | None] = lambda _f, _d: None, *,
             max_bytes: int = DEFAULT_FILE_BYTES) -> list[str]:
    """Which other environments of ``app`` already run ``digest``, according to git, and
    since which commit (``since(file, digest)``)."""
    out = []
    others: Sequence[Environment] = [e for e in app.environments if e.name != env.name]
    for other in others:
        text = read(other.file)
        if text is None:
            continue
        try:
            current = read_current(other, text, max_bytes=max_bytes)
        except ImageUpdaterError:  # evidence is informative; a broken file is reported elsewhere
            continue
        if current.digest == digest:
            sha = since(other.file, digest)
            when = f", since commit {sha[:12]}" if sha else ""
            out.append(f"- `{other.name}` runs this digest (`{other.file}`{when})")
    return out
