"""Every change of an app's environments, read back from the deploy branch's git history.

Git is the only state, so the history is complete and unbounded: ONE ``git log`` process over
the app's values files (and the holds file), streamed line by line, never a walk over commit
objects in Python. Each commit comes with its trailers and a ``-U0`` diff; the trailers say
what image-updater did, the diff says what a person did::

    git log --first-parent --diff-merges=first-parent -U0 --format=<header> HEAD -- <files>

``--first-parent`` reads the branch as it moved: a merged pull request is one merge commit,
diffed against the branch before it, whose author is the person who merged it.

How a commit is classified, per environment:

- image-updater trailers for the environment → their ``Image-Updater-Action`` (``update``
  when absent: older commits have no Action), ``-Source`` and ``-Previous-Digest``;
- a merge whose message names the environment's pull-request branch → ``pull-request``,
  by its author (the merger);
- any other commit that changed a written key (tag, digest or reference) → ``hand-edit``.

The diff is read by key name (the last part of the written key path): ``-U0`` hunks carry no
parent keys. When several environments of one app share a values file, a commit without
trailers is attributed to each of them whose key it changed.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import git
from git.exc import GitCommandError

from image_updater.errors import ConfigError, GitError, truncate
from image_updater.gitops.stderr import output_of
from image_updater.model import App, Environment

TRAILER_PREFIX = "Image-Updater-"

Action = Literal["update", "promote", "rollback", "hold", "release", "pull-request",
                 "hand-edit"]
ACTIONS: tuple[str, ...] = ("update", "promote", "rollback", "hold", "release",
                            "pull-request", "hand-edit")

# A header line starts with RS (never the first byte of a diff line), the trailers follow one
# per line, and GS alone on a line ends the header: values files cannot forge either.
_START, _SEP, _END = "\x1e", "\x1f", "\x1d"
_FORMAT = (f"--format={_START}%H{_SEP}%P{_SEP}%aI{_SEP}%an{_SEP}%ae{_SEP}%s%n"
           f"%(trailers:only,unfold){_END}")
_KEY_LINE = re.compile(r"""^\s*(?:-\s+)*["']?([A-Za-z0-9_.\-/]+)["']?\s*:\s*(.*?)\s*$""")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """One change of one environment. Its fields are the ``history --format json`` schema."""

    commit: str
    when: str                   # author date, ISO 8601 as git prints it
    app: str
    env: str
    action: Action
    by: str                     # "Name <email>": the author (for a merge: the merger)
    source: str | None = None   # poll | webhook | promotion | person (newer commits only)
    old_digest: str | None = None
    new_digest: str | None = None
    old_tag: str | None = None
    new_tag: str | None = None
    subject: str = ""

    @property
    def how(self) -> str:
        """A few words for people: "update (poll)", "PR merged by Alice"."""
        if self.action == "pull-request":
            return f"PR merged by {self.by.split(' <')[0]}"
        if self.action == "hand-edit":
            return f"hand edit by {self.by.split(' <')[0]}"
        return f"{self.action} ({self.source})" if self.source else self.action

    def as_json(self) -> dict[str, str | None]:
        return {"commit": self.commit, "when": self.when, "app": self.app, "env": self.env,
                "action": self.action, "how": self.how, "by": self.by, "source": self.source,
                "old_digest": self.old_digest, "new_digest": self.new_digest,
                "old_tag": self.old_tag, "new_tag": self.new_tag, "subject": self.subject}


@dataclass
class _Commit:
    sha: str
    parents: int
    when: str
    by: str
    subject: str
    trailers: list[dict[str, str]] = field(default_factory=list)
    #: file -> key name -> [old value, new value] from the -U0 diff
    diffs: dict[str, dict[str, list[str | None]]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Watch:
    env: Environment
    keys: dict[str, str]        # key name in the file -> "tag" | "digest" | "reference"
    branch: str                 # the environment's pull-request branch


def read_history(path: Path | str, head: str, app: App, env: str | None = None, *,
                 limit: int | None = None, holds_file: str | None = None
                 ) -> list[HistoryEntry]:
    """The changes of ``app`` (only ``env`` when given) at ``head`` of the clone at ``path``,
    newest first; at most ``limit`` (None: all of them). Commits to ``holds_file`` are read
    too, for holds and releases (their trailers say which environment)."""
    watches = _watches(app, env)
    files = _files(watches, holds_file)
    entries: list[HistoryEntry] = []
    with _git_log(Path(path), head, files) as lines:
        for commit in _commits(lines):
            entries += _classify(commit, app, watches)
            if limit is not None and len(entries) >= limit:
                return entries[:limit]
    return entries


def newest_per_env(path: Path | str, head: str, app: App) -> dict[str, HistoryEntry]:
    """Each environment's newest change of its digest (how the digest it holds got there);
    the one git process stops as soon as every environment has one."""
    watches = _watches(app, None)
    files = _files(watches, None)
    newest: dict[str, HistoryEntry] = {}
    with _git_log(Path(path), head, files) as lines:
        for commit in _commits(lines):
            for entry in _classify(commit, app, watches):
                if entry.action not in ("hold", "release"):  # they move no digest
                    newest.setdefault(entry.env, entry)
            if len(newest) == len(watches):
                break
    return newest


def _files(watches: list[_Watch], holds_file: str | None) -> list[str]:
    return sorted({w.env.file for w in watches} | ({holds_file} if holds_file else set()))


def _watches(app: App, env: str | None) -> list[_Watch]:
    envs = list(app.environments)
    if env is not None:
        if env not in {e.name for e in envs}:
            raise ConfigError(
                f"App {app.name} has no environment {env!r}; its environments are "
                f"{', '.join(e.name for e in envs)} (see {app.source or 'its policy'}).")
        envs = [app.env(env)]
    watches = []
    for e in envs:
        keys = {}
        for kind in ("tag", "digest", "reference"):
            path = getattr(e.write, kind)
            if path and isinstance(path[-1], str):
                keys[path[-1]] = kind
        watches.append(_Watch(e, keys, f"{e.pull_request.branch_prefix}{app.name}-{e.name}"))
    return watches


@contextmanager
def _git_log(path: Path, head: str, files: Sequence[str]) -> Iterator[Iterator[str]]:
    """The one streamed ``git log`` process, as lines; killed if the reader stops early."""
    args = ["git", "-c", "core.quotePath=false", "-c", "log.showSignature=false", "log",
            "--first-parent", "--diff-merges=first-parent", "-U0", "--no-color",
            "--no-ext-diff", "--no-textconv", "--no-renames", "--src-prefix=a/",
            "--dst-prefix=b/", _FORMAT, head, "--", *files]
    try:
        handle = git.Git(str(path)).execute(args, as_process=True)
    except GitCommandError as exc:
        raise _error(path, head, output_of(exc)) from exc
    proc: subprocess.Popen[bytes] | None = handle.proc
    assert proc is not None and proc.stdout is not None
    stopped = False
    try:
        yield (raw.decode("utf-8", "replace").rstrip("\n") for raw in proc.stdout)
    finally:
        if proc.poll() is None:  # stopped early (a limit, or an error): git is not needed
            stopped = True
            proc.kill()
        stderr = proc.stderr.read() if proc.stderr else b""
        status = proc.wait()
    if status != 0 and not stopped:
        raise _error(path, head, stderr.decode("utf-8", "replace"))


def _error(path: Path, head: str, text: str) -> GitError:
    return GitError(f"Reading the history of {head[:12]} in {path} failed: {truncate(text)}; "
                    "sync the clone again (a broken one is cloned anew).")


def _commits(lines: Iterator[str]) -> Iterator[_Commit]:
    """Commits parsed from the stream, one at a time."""
    commit: _Commit | None = None
    in_header = in_trailers = False
    file = ""
    for line in lines:
        if line.startswith(_START):
            if commit is not None:
                yield commit
            sha, parents, when, name, email, subject = (line[1:].split(_SEP) + [""] * 6)[:6]
            commit = _Commit(sha, len(parents.split()), when, f"{name} <{email}>", subject)
            in_trailers = True
        elif commit is None:
            continue
        elif in_trailers:
            if line == _END:
                in_trailers = False
            else:
                _add_trailer(commit, line)
        elif line.startswith("diff --git "):
            in_header, file = True, ""
        elif in_header:
            if line.startswith("+++ b/") or (line.startswith("--- a/") and not file):
                file = line[6:]
            elif line.startswith("@@"):
                in_header = False
        elif line[:1] in ("-", "+"):
            _add_diff_line(commit, file, line)
    if commit is not None:
        yield commit


def _add_trailer(commit: _Commit, line: str) -> None:
    """Groups as :func:`~image_updater.gitops.message.parse_trailers` makes them."""
    name, sep, value = line.partition(":")
    if not sep or not name.lower().startswith(TRAILER_PREFIX.lower()):
        return
    key = name[len(TRAILER_PREFIX):].strip().lower()
    if key == "app" or not commit.trailers or key in commit.trailers[-1]:
        commit.trailers.append({})
    commit.trailers[-1][key] = value.strip()


def _add_diff_line(commit: _Commit, file: str, line: str) -> None:
    match = _KEY_LINE.match(line[1:])
    if match is None:
        return
    value = match.group(2).split(" #", 1)[0].strip().strip("\"'") or None
    pair = commit.diffs.setdefault(file, {}).setdefault(match.group(1), [None, None])
    pair[0 if line[0] == "-" else 1] = value


def _classify(commit: _Commit, app: App, watches: list[_Watch]) -> list[HistoryEntry]:
    by_env = {w.env.name: w for w in watches}
    ours = [t for t in commit.trailers if t.get("app") == app.name and t.get("env") in by_env]
    if ours:
        return [_from_trailers(commit, app, by_env[t["env"]], t) for t in ours]
    if commit.trailers:  # image-updater's commit for other apps or environments
        return []
    entries = []
    for watch in watches:
        old, new = _diff_values(commit, watch)
        if old == new:
            continue
        merged = commit.parents > 1 and watch.branch in commit.subject
        entries.append(_entry(commit, app, watch, "pull-request" if merged else "hand-edit",
                              old=old, new=new))
    return entries


def _from_trailers(commit: _Commit, app: App, watch: _Watch, t: dict[str, str]
                   ) -> HistoryEntry:
    action = t.get("action", "update").lower()
    old, new = _diff_values(commit, watch)
    digest = t.get("digest") or new[1]
    if action in ("hold", "release"):
        digest = t.get("digest")
    if action not in ACTIONS:
        action = "update"
    entry = _entry(commit, app, watch, action, old=old, new=(t.get("tag") or new[0], digest))
    previous = t.get("previous-digest")
    if previous:
        return _replace_old(entry, previous)
    return entry


def _replace_old(entry: HistoryEntry, digest: str) -> HistoryEntry:
    from dataclasses import replace

    return replace(entry, old_digest=digest)


def _entry(commit: _Commit, app: App, watch: _Watch, action: str, *,
           old: tuple[str | None, str | None], new: tuple[str | None, str | None]
           ) -> HistoryEntry:
    source = next((t.get("source") for t in commit.trailers
                   if t.get("app") == app.name and t.get("env") == watch.env.name), None)
    return HistoryEntry(commit=commit.sha, when=commit.when, app=app.name, env=watch.env.name,
                        action=action, by=commit.by, source=source,  # type: ignore[arg-type]
                        old_tag=old[0], old_digest=old[1], new_tag=new[0], new_digest=new[1],
                        subject=commit.subject)


def _diff_values(commit: _Commit, watch: _Watch
                 ) -> tuple[tuple[str | None, str | None], tuple[str | None, str | None]]:
    """(old tag, old digest), (new tag, new digest) the diff shows for ``watch``'s keys."""
    lines = commit.diffs.get(watch.env.file, {})
    sides: list[list[str | None]] = [[None, None], [None, None]]
    for key, kind in watch.keys.items():
        pair = lines.get(key)
        if pair is None:
            continue
        for side in (0, 1):
            value = pair[side]
            if value is None:
                continue
            if kind == "reference":
                tag, _, digest = value.partition("@")
                sides[side][0] = sides[side][0] or tag or None
                sides[side][1] = sides[side][1] or digest or None
            else:
                sides[side][0 if kind == "tag" else 1] = value
    old, new = (tuple(s) for s in sides)
    return old, new  # type: ignore[return-value]
